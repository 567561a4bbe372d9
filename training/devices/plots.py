"""PNG figures of a device's analysis: what a physicist checks before trusting a model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from .device_model import DeviceModel
from .ivdata import IVCurves
from .usability import UsabilityResult


def plot_device(
    curves: IVCurves, result: UsabilityResult, model: DeviceModel, path: str | Path
) -> Path:
    """Three panels: the I–V cycles, ḡ on the rising sweep with the monotonic run marked,
    and the distribution of ln(G/ḡ) with the fitted normal."""
    path = Path(path)
    fig, (ax_iv, ax_run, ax_hist) = plt.subplots(1, 3, figsize=(15, 4.8))
    for k in range(curves.cycles):
        ax_iv.plot(curves.voltage, np.abs(curves.current[:, k]), lw=0.7, alpha=0.6)
    ax_iv.set_yscale("log")
    ax_iv.set(
        xlabel="voltage (V)",
        ylabel="|current| (A)",
        title=f"I–V sweeps: {curves.cycles} cycles, one line each",
    )

    rows = np.arange(len(result.mean_conductance))
    ax_run.semilogy(rows, result.mean_conductance, "o-", ms=3, color="0.6", label="ḡ, every step")
    run = slice(result.start, result.end + 1)
    ax_run.semilogy(
        rows[run],
        result.mean_conductance[run],
        "o-",
        ms=4,
        color="C3",
        label=f"longest monotonic run, steps {result.start}–{result.end}",
    )
    ax_run.set(
        xlabel="rising-sweep step (index)",
        ylabel="mean conductance ḡ over cycles (S)",
        title=f"monotonicity {result.monotonicity:.2f} = run length / 100",
    )
    low, high = np.nanmin(result.mean_conductance), np.nanmax(result.mean_conductance)
    ax_run.set_ylim(low / 1.5, high * (high / low) ** 0.35)  # headroom: the legend over no data
    ax_run.legend(fontsize=8, loc="upper left")

    x = result.log_ratios
    if x.size:
        counts, _, _ = ax_hist.hist(
            x, bins=40, density=True, color="C0", alpha=0.7, label=f"ln(G/ḡ), {x.size} values"
        )
        ax_hist.set_ylim(0, 1.45 * float(np.max(counts)))  # headroom: the legend over no data
        grid = np.linspace(x.min(), x.max(), 200)
        sigma, mu = max(result.sigma, 1e-12), float(x.mean())
        ax_hist.plot(
            grid,
            np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)),
            color="C3",
            label=f"normal fit, σ = {result.sigma:.3f}",
        )
        ax_hist.legend(fontsize=8, loc="upper left")
    ax_hist.set(
        xlabel="ln(G/ḡ) (natural log of a ratio, no unit)",
        ylabel="probability density (per unit of ln)",
        title=f"cycle-to-cycle variation; usability {result.usability:.3f}",
    )
    fig.suptitle(
        f"Device analysis: {_short(model.name)} ({model.material or 'unknown material'}), "
        f"{curves.cycles} I–V cycles",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_population(
    names: Sequence[str],
    sigmas: Sequence[float],
    usabilities: Sequence[float],
    materials: Sequence[str],
    path: str | Path,
    marked: dict[str, int] | None = None,
) -> Path:
    """Usability against σ for a set of devices, coloured by material; `marked` maps a
    label (a preset name) to the index of the device it stands for (ringed, labelled
    inside the axes so no label is cut)."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for material in sorted(set(materials)):
        pick = [i for i, m in enumerate(materials) if m == material]
        ax.scatter([sigmas[i] for i in pick], [usabilities[i] for i in pick], label=material, s=28)
    if marked is None:
        marked = {"best": int(np.nanargmax(usabilities))}
    x_mid = float(np.nanmean([min(sigmas), max(sigmas)]))
    for label, i in marked.items():
        ax.scatter([sigmas[i]], [usabilities[i]], s=140, facecolors="none", edgecolors="k")
        right = sigmas[i] < x_mid  # write toward the middle of the plot, never off its edge
        ax.annotate(
            label,
            (sigmas[i], usabilities[i]),
            fontsize=8,
            xytext=(10 if right else -10, 6),
            textcoords="offset points",
            ha="left" if right else "right",
            arrowprops={"arrowstyle": "-", "lw": 0.6},
        )
    ax.scatter([], [], s=140, facecolors="none", edgecolors="k", label="preset (ringed)")
    ax.set(
        xlabel="cycle-to-cycle σ of ln(G/ḡ) (no unit)",
        ylabel="usability = monotonicity · exp(−σ) (no unit)",
        title=f"Usability vs variation: {len(names)} published perovskite memristors",
    )
    ax.margins(x=0.08, y=0.1)
    ax.legend(title="material", fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
