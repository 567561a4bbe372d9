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
    fig, (ax_iv, ax_run, ax_hist) = plt.subplots(1, 3, figsize=(15, 4.5))
    for k in range(curves.cycles):
        ax_iv.plot(curves.voltage, np.abs(curves.current[:, k]), lw=0.7, alpha=0.6)
    ax_iv.set_yscale("log")
    ax_iv.set(xlabel="voltage (V)", ylabel="|current| (A)", title=f"I–V, {curves.cycles} cycles")

    rows = np.arange(len(result.mean_conductance))
    ax_run.semilogy(rows, result.mean_conductance, "o-", ms=3, color="0.6", label="ḡ (all rows)")
    run = slice(result.start, result.end + 1)
    ax_run.semilogy(
        rows[run],
        result.mean_conductance[run],
        "o-",
        ms=4,
        color="C3",
        label=f"monotonic run [{result.start}, {result.end}]",
    )
    ax_run.set(
        xlabel="rising-sweep step",
        ylabel="mean conductance ḡ (S)",
        title=f"monotonicity {result.monotonicity:.2f}",
    )
    ax_run.legend(fontsize=8)

    x = result.log_ratios
    if x.size:
        ax_hist.hist(x, bins=40, density=True, color="C0", alpha=0.7, label="ln(G/ḡ)")
        grid = np.linspace(x.min(), x.max(), 200)
        sigma, mu = max(result.sigma, 1e-12), float(x.mean())
        ax_hist.plot(
            grid,
            np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)),
            color="C3",
            label=f"normal, σ = {result.sigma:.3f}",
        )
        ax_hist.legend(fontsize=8)
    ax_hist.set(xlabel="ln(G/ḡ)", ylabel="density", title=f"usability {result.usability:.3f}")
    fig.suptitle(f"{model.name} ({model.material or 'unknown material'})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_population(
    names: Sequence[str],
    sigmas: Sequence[float],
    usabilities: Sequence[float],
    materials: Sequence[str],
    path: str | Path,
) -> Path:
    """Usability against σ for a set of devices, coloured by material."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 5))
    for material in sorted(set(materials)):
        pick = [i for i, m in enumerate(materials) if m == material]
        ax.scatter([sigmas[i] for i in pick], [usabilities[i] for i in pick], label=material)
    best = int(np.nanargmax(usabilities))
    ax.annotate(
        names[best][:28],
        (sigmas[best], usabilities[best]),
        fontsize=7,
        xytext=(5, 5),
        textcoords="offset points",
    )
    ax.set(xlabel="cycle-to-cycle σ", ylabel="usability", title=f"{len(names)} devices")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
