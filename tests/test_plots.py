"""Plots for a lab notebook: each plot type, rendered on small data, has a title naming
what it shows, a label with units on every axis, and legends that say what the marks are."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from xbar.host.board import ProgramResult
from xbar.host.demo import _plot_programming
from xbar.host.energy_report import Baseline, EnergyReport, plot
from xbar.training.devices.device_model import DeviceModel
from xbar.training.devices.plots import plot_device, plot_population
from xbar.training.devices.published import find_published
from xbar.training.devices.usability import analyse


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure as it is saved (the plot functions close theirs afterwards)."""
    figures: list[Figure] = []
    original = Figure.savefig

    def savefig(self: Figure, *args: Any, **kwargs: Any) -> None:
        figures.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def _check(fig: Figure, title_words: list[str]) -> None:
    suptitle = getattr(fig, "_suptitle", None)
    title = suptitle.get_text() if suptitle is not None else ""
    titles = " ".join([title, *(ax.get_title() for ax in fig.axes)])
    for word in title_words:
        assert word in titles, (word, titles)
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert ax.get_ylabel(), "colour bar without a unit"
            continue
        assert ax.get_xlabel() or ax.get_xticklabels(), ax
        assert ax.get_ylabel(), f"no y label on {ax.get_title()!r}"
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            unit = "(" in label or re.search(r"\b[mµn]?[JVAS]\b", label)
            assert unit or label == "", f"no unit in {label!r}"
        legend = ax.get_legend()
        if legend is not None:
            assert all(t.get_text() for t in legend.get_texts())


def test_device_analysis_plot(tmp_path: Path, saved: list[Figure]) -> None:
    model = DeviceModel.preset("pvk-best")
    curves = find_published("pvk-30").curves
    plot_device(curves, analyse(curves), model, tmp_path / "d.png")
    _check(saved[-1], ["pvk-best", "cycles", "usability"])


def test_population_plot_labels_every_preset_inside_the_axes(
    tmp_path: Path, saved: list[Figure]
) -> None:
    sigmas, usability = [0.1, 0.5, 2.0, 1.0], [0.35, 0.1, 0.01, 0.05]
    plot_population(
        ["a", "b", "c", "d"],
        sigmas,
        usability,
        ["MAPbI3", "FAPbI3", "MAPbI3", "CsPbI3"],
        tmp_path / "p.png",
        marked={"pvk-best (pvk-30)": 0, "pvk-median (pvk-43)": 1},
    )
    fig = saved[-1]
    _check(fig, ["4 published"])
    ax = fig.axes[0]
    fig.canvas.draw()
    inside = ax.get_window_extent()
    for text in ax.texts:
        box = text.get_window_extent()
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, text.get_text()
    assert {t.get_text() for t in ax.texts} == {"pvk-best (pvk-30)", "pvk-median (pvk-43)"}


def test_write_verify_plot(tmp_path: Path, saved: list[Figure]) -> None:
    target = np.full((3, 3), 1e-6)
    cells = [(r, c) for r in range(3) for c in range(3)]
    result = ProgramResult(
        cells, target.ravel(), target.ravel() * 1.01, np.ones(9), np.zeros(9, dtype=int)
    )
    _plot_programming(target, result, tmp_path / "w.png", "Write-verify of 9 cells on xbar-3x3")
    _check(saved[-1], ["Write-verify of 9 cells", "xbar-3x3"])


def test_energy_plot_has_a_title_with_board_and_count(tmp_path: Path, saved: list[Figure]) -> None:
    report = EnergyReport(
        n=7,
        per_inference={"dac": 1e-3, "adc": 2e-3, "mcu": 5e-4},
        measured=True,
        board_seconds=1e-3,
        baseline=Baseline(100, 1000, 1e-5, 1e-6),
        link_bytes=40,
        note="",
        board_name="xbar-10x10, rev B",
    )
    plot(report, tmp_path / "e.png", "iris.xbar on xbar-10x10, rev B")
    fig = saved[-1]
    _check(fig, ["iris.xbar", "xbar-10x10", "7 inferences"])
    fig.canvas.draw()
    for ax in fig.axes:  # legends sit outside the bars
        legend = ax.get_legend()
        if legend is not None:
            assert legend.get_window_extent().y1 <= ax.get_window_extent().y0 + 1


def test_accuracy_vs_sigma_names_its_bands_and_the_target(
    tmp_path: Path, saved: list[Figure]
) -> None:
    from xbar.training.robustness import NoisyAccuracy, plot_accuracy_vs_sigma

    rng = np.random.default_rng(0)

    def curve(top: float) -> list[NoisyAccuracy]:
        points = []
        for sigma in (0.0, 0.5, 1.0, 1.5):
            draws = tuple(
                float(v) for v in np.clip(top - 0.3 * sigma + rng.normal(0, 0.02, 8), 0, 1)
            )
            points.append(NoisyAccuracy(sigma, float(np.mean(draws)), float(np.std(draws)), draws))
        return points

    curves = {"bayesmulti": curve(0.98), "erm": curve(0.95)}
    plot_accuracy_vs_sigma(
        curves, tmp_path / "a.png", "digits 64-512-10, target pvk-median", [0.587]
    )
    fig = saved[-1]
    _check(fig, ["digits", "pvk-median"])
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"bayesmulti", "erm"} <= set(texts)
    assert any("95 % interval" in t for t in texts) and any("σ = 0.587" in t for t in texts)
