"""Campaign report as PNG plots: how the best device improved with each experiment, how
each parameter relates to the objective, and what each batch's suggestions measured. Each
plot names the campaign and how many experiments it shows, and the objective by its own
name, unit and direction."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from .campaign import CampaignError, scores
from .spec import Spec
from .store import CampaignStore, Experiment

Scored = list[tuple[Experiment, float]]  # measured experiments with their score


def write_report(store: CampaignStore, out_dir: str | Path) -> list[Path]:
    """Write best-so-far, per-parameter effects and suggested-versus-measured PNGs."""
    spec = store.spec
    experiments = store.experiments()
    scored = scores(spec, experiments)
    if not scored:
        raise CampaignError(f"{store.path}: nothing measured yet; ingest results first")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label = spec.score_label
    failed = sum(e.state == "failed" for e in experiments)
    counted = f"N = {len(scored)} measured" + (f", {failed} failed" if failed else "")
    minimise = spec.better(0.0, 1.0)
    paths = [
        _best_so_far(
            scored, label, f"{spec.name}: best against experiments ({counted})", minimise,
            out_dir / f"{spec.name}-best.png",
        ),
        _effects(
            spec, scored, label, f"{spec.name}: per-parameter effects on {label} ({counted})",
            out_dir / f"{spec.name}-effects.png",
        ),
        _by_batch(
            scored, label, f"{spec.name}: what each batch measured ({counted})",
            out_dir / f"{spec.name}-batches.png",
        ),
    ]  # fmt: skip
    return paths


def _best_so_far(scored: Scored, label: str, title: str, minimise: bool, path: Path) -> Path:
    values = np.array([s for _, s in scored])
    fig, ax = plt.subplots(figsize=(6, 4))
    n = np.arange(1, len(values) + 1)
    external = np.array([e.origin == "external" for e, _ in scored])
    ax.scatter(n[external], values[external], s=14, c="0.6", label="external (past) experiment")
    ax.scatter(n[~external], values[~external], s=14, c="C0", label="suggested experiment")
    best = np.minimum.accumulate(values) if minimise else np.maximum.accumulate(values)
    ax.step(n, best, where="post", c="C3", label="best so far")
    ax.set(xlabel="experiments measured", ylabel=label)
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _effects(spec: Spec, scored: Scored, label: str, title: str, path: Path) -> Path:
    parameters = spec.parameters
    cols = 4
    rows = -(-len(parameters) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    values = np.array([s for _, s in scored])
    for ax, p in zip(axes.flat, parameters, strict=False):
        x = [e.params[p.name] for e, _ in scored]
        if p.kind in ("ordinal", "categorical"):
            positions = {c: i for i, c in enumerate(p.choices)}
            xs = np.array([positions[v] for v in x], float)
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(xs))
            ax.scatter(xs + jitter, values, s=10)
            means = [
                values[xs == i].mean() if np.any(xs == i) else np.nan for i in range(len(p.choices))
            ]
            ax.plot(range(len(p.choices)), means, "_", c="C3", ms=18, mew=2)
            ax.set_xticks(
                range(len(p.choices)), [str(c) for c in p.choices], fontsize=7, rotation=30
            )
        else:
            ax.scatter(x, values, s=10)
            if p.kind == "log":
                ax.set_xscale("log")
                # A range inside one decade has no major tick: label 1-2-5 ticks instead.
                assert p.low is not None and p.high is not None
                subs = (1.0, 2.0, 5.0) if np.log10(p.high / p.low) <= 2.5 else (1.0,)
                ax.xaxis.set_major_locator(LogLocator(subs=subs, numticks=12))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(plt.NullFormatter())  # no crowded minor labels
                ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{p.name}{f' ({p.unit})' if p.unit else ''}", fontsize=9)
    for row in axes:
        row[0].set_ylabel(label, fontsize=8)
    for ax in list(axes.flat)[len(parameters) :]:
        ax.axis("off")
    fig.suptitle(f"{title}\nred bars: mean per level", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by_batch(scored: Scored, label: str, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    external = [s for e, s in scored if e.batch is None]
    if external:
        ax.scatter(np.zeros(len(external)), external, c="0.6", s=14, label="external")
    batches = sorted({e.batch for e, _ in scored if e.batch is not None})
    for i, b in enumerate(batches):
        ys = [s for e, s in scored if e.batch == b]
        ax.scatter(
            np.full(len(ys), b), ys, c="C0", s=14, label="suggested experiment" if not i else None
        )
        ax.plot(
            [b - 0.3, b + 0.3], [np.mean(ys)] * 2, c="C3", label="batch mean" if not i else None
        )
    ax.set(xlabel="batch (0: external experiments)", ylabel=f"measured {label}")
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
