"""Accuracy under device noise, by Monte Carlo, and the accuracy-versus-σ plot.

Evaluation draws the programmed weights from a noise model: the board's
(:class:`~xbar.training.noise_model.NoiseModel`: differential pairs, open-loop or
write-verify programming) or the paper's w·exp(ε), ε ~ N(0, σ²); a fresh draw per Monte
Carlo sample (one draw = one programming of the whole network); biases are exact. Every
result carries its 95 % interval over the draws and a one-sided lower bound on the
expected accuracy over draws × inputs (:mod:`~xbar.training.stats`).

Draws come from a seeded generator, so a figure is reproducible and two
models evaluated with the same seed see the same ε.

**Mean-gain calibration** (``calibrate=True``, off by default): E[exp(ε)] = exp(σ²/2), so
under the noise every weighted sum grows by that factor on average while the digital
biases do not. :func:`gain_calibration` gives, per layer, the factor that scales the bias
back into step with its inputs (compounded through the ReLU layers, relative to the mean
gain the layer was trained under); :func:`calibrated` applies it for one evaluation. It is
a deployment setting for a device of known σ, applied alike to every method.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .networks import NoisyMLP
from .noise import NOISY_LAYERS, WeightNoise, WeightNoiseConfig, set_eval_noise
from .noise_model import NoiseModel
from .quantize import QuantizedModel
from .stats import Interval, lower_bound, mean_interval

MIN_DRAWS = 1
_CHUNK_ELEMENTS = 8_000_000  # hidden activations held at once by the batched MLP path


@dataclass(frozen=True)
class NoisyAccuracy:
    """Accuracy over ``draws`` noise draws: mean, standard deviation, every draw's, the
    95 % interval of the mean over draws, and the one-sided 95 % lower bound on the
    expected accuracy over draws × inputs (two-way bootstrap)."""

    sigma: float
    mean: float
    std: float
    per_draw: tuple[float, ...]
    lower: float = float("nan")

    @property
    def interval(self) -> Interval:
        return mean_interval(self.per_draw, "draws")


def _mean_gain(noise: WeightNoise | None) -> float:
    """E[m] of a weight's multiplicative noise factor (1 without noise, for additive noise
    and for the board's noise models, whose programming targets the weight itself)."""
    if isinstance(noise, NoiseModel):
        noise = noise._paper() if noise.scheme == "paper" else None
    return noise.moments()[0] if noise is not None and noise.kind != "gaussian-add" else 1.0


def gain_calibration(model: nn.Module, noise: WeightNoise) -> list[float]:
    """Bias factors, one per weight layer in forward order, for deployment under ``noise``.

    Layer l's inputs carry the mean gains of layers 1…l (ReLU and max-pool commute with a
    positive scale), so its bias is scaled by Π_{k<=l} g_k with g_k = E[m] of ``noise`` over
    E[m] of the noise layer k was trained under (its biases already absorbed that one): for
    a model trained without log-normal noise, layer l's bias times exp(l·σ²/2). All 1 at
    σ = 0 for such a model; for one trained under log-normal noise, below 1 there.
    """
    deployed = _mean_gain(noise.validate("calibration noise"))
    factors, total = [], 1.0
    for layer in model.modules():
        if isinstance(layer, NOISY_LAYERS):
            total *= deployed / _mean_gain(layer.train_noise)
            factors.append(total)
    return factors


@contextmanager
def calibrated(model: nn.Module, noise: WeightNoise | None) -> Iterator[list[float]]:
    """``model`` with its biases scaled by :func:`gain_calibration` for ``noise`` inside the
    block, restored exactly after; None: unchanged (yields no factors)."""
    if noise is None:
        yield []
        return
    layers = [m for m in model.modules() if isinstance(m, NOISY_LAYERS)]
    factors = gain_calibration(model, noise)
    biases = [
        (layer.bias, f) for layer, f in zip(layers, factors, strict=True) if layer.bias is not None
    ]
    saved = [bias.detach().clone() for bias, _ in biases]
    with torch.no_grad():
        for bias, factor in biases:
            bias.mul_(factor)
    try:
        yield factors
    finally:
        with torch.no_grad():
            for (bias, _), value in zip(biases, saved, strict=True):
                bias.copy_(value)


def _mlp_logits(
    model: NoisyMLP,
    x: torch.Tensor,
    noise: WeightNoise,
    draws: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(draws, n, classes) logits, all draws at once: weights get a leading draw axis."""
    layers = model.linear_layers()
    widest = max(layer.weight.shape[0] for layer in layers)
    chunk = max(1, _CHUNK_ELEMENTS // (x.shape[0] * widest))
    out = []
    for start in range(0, draws, chunk):
        k = min(chunk, draws - start)
        h = x.expand(k, *x.shape)
        for i, layer in enumerate(layers):
            w = noise.perturb(layer.weight.T.expand(k, *layer.weight.T.shape), generator)
            h = torch.baddbmm(layer.bias, h, w)
            if i < len(layers) - 1:
                h = torch.relu(h)
        out.append(h * model.log_gain.exp())
    return torch.cat(out)


def noisy_logits(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    noise: WeightNoise,
    draws: int,
    seed: int = 0,
    calibrate: bool = False,
) -> torch.Tensor:
    """Logits of ``draws`` independent noisy copies of ``model`` on ``x``: (draws, n, classes);
    ``calibrate``: with the mean-gain calibration for ``noise`` (:func:`calibrated`)."""
    if draws < MIN_DRAWS:
        raise ValueError(f"noise evaluation: draws = {draws} must be >= {MIN_DRAWS}")
    noise.validate("evaluation noise")
    xt = torch.as_tensor(x, dtype=torch.float32)
    model.eval()
    with torch.no_grad(), calibrated(model, noise if calibrate else None):
        if isinstance(model, NoisyMLP):
            return _mlp_logits(model, xt, noise, draws, torch.Generator().manual_seed(seed))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            set_eval_noise(model, noise)
            try:
                return torch.stack([model(xt) for _ in range(draws)])
            finally:
                set_eval_noise(model, None)


def accuracy_under_noise(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    noise: WeightNoise,
    draws: int = 30,
    seed: int = 0,
    calibrate: bool = False,
) -> NoisyAccuracy:
    """Accuracy of ``model`` on (x, y) under ``noise``, over ``draws`` Monte Carlo draws
    (``calibrate``: with the mean-gain calibration)."""
    correct = correct_matrix(model, x, y, noise, draws, seed, calibrate)
    per_draw = correct.mean(axis=1)
    return NoisyAccuracy(
        noise.sigma,
        float(per_draw.mean()),
        float(per_draw.std()),
        tuple(float(a) for a in per_draw),
        lower_bound(correct, seed=seed),
    )


def correct_matrix(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    noise: WeightNoise,
    draws: int = 30,
    seed: int = 0,
    calibrate: bool = False,
) -> np.ndarray:
    """(draws, inputs) 0/1: whether each noisy copy classifies each input correctly."""
    logits = noisy_logits(model, x, noise, draws, seed, calibrate)
    return (logits.argmax(-1) == torch.as_tensor(y)).numpy().astype(np.int8)


def clean_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.as_tensor(x, dtype=torch.float32)).argmax(-1).numpy()
    return float(np.mean(pred == y))


def accuracy_vs_sigma(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    sigmas: Sequence[float],
    draws: int = 30,
    seed: int = 0,
    calibrate: bool = False,
) -> list[NoisyAccuracy]:
    """Device-noise accuracy at each σ (log-normal), same seed for every σ; ``calibrate``:
    each σ with its own mean-gain calibration."""
    return [
        accuracy_under_noise(model, x, y, WeightNoiseConfig("lognormal", s), draws, seed, calibrate)
        for s in sigmas
    ]


def plot_accuracy_vs_sigma(
    curves: dict[str, list[NoisyAccuracy]],
    path: str | Path,
    title: str = "",
    marks: Sequence[float] = (),
) -> None:
    """PNG: mean accuracy with its 95 % interval over the draws (shaded band, named in the
    legend) against σ, one line per model; ``marks`` are the σ values the model was trained
    for (the target device), drawn as dashed lines across the plot and named in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in curves.items():
        s = np.array([p.sigma for p in points])
        order = np.argsort(s)
        m = np.array([p.mean for p in points])[order]
        low = np.array([p.interval.low for p in points])[order]
        high = np.array([p.interval.high for p in points])[order]
        ax.plot(s[order], m, marker="o", ms=3, label=name)
        ax.fill_between(s[order], low, high, alpha=0.2)
    for sigma in marks:
        ax.axvline(sigma, color="k", lw=1.0, ls="--", label=f"target device σ = {sigma:.3g}")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(
        Patch(facecolor="0.5", alpha=0.2, label="shaded: 95 % interval of the mean over draws")
    )
    ax.set_xlabel("σ of ln(G/ḡ) (device noise, w·exp(ε))")
    ax.set_ylabel("accuracy (mean over noise draws)")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def quantized_correct_matrix(
    qmodel: QuantizedModel,
    x_q: np.ndarray,
    y: np.ndarray,
    noise: WeightNoise,
    draws: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """(draws, inputs) 0/1 for an artifact's integer model programmed under ``noise``: each
    layer's int8 weights (weight 127 = the top of the mapped window) drawn as the board
    holds them, the accumulators rounded and requantised exactly as the firmware does. The
    prediction that a board-in-the-loop measurement is compared with."""
    from .requant import requant

    gen = torch.Generator().manual_seed(seed)
    x_q = np.atleast_2d(np.asarray(x_q, dtype=np.int64))
    out = np.empty((draws, len(x_q)), dtype=np.int8)
    for d in range(draws):
        h = x_q
        for layer in qmodel.layers:
            w = torch.as_tensor(layer.weights, dtype=torch.float64)
            drawn = noise.perturb(w, gen).numpy()
            acc = np.round(h.astype(np.float64) @ drawn.T) + layer.bias
            h = requant(
                acc.astype(np.int64),
                layer.multiplier,
                layer.shift,
                layer.out_min,
                layer.out_max,
                layer.relu,
            )
        out[d] = np.argmax(h, axis=1) == np.asarray(y)
    return out
