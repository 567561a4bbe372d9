"""Theorem 1's robustness set for multinomial-noise training, and its empirical check.

With θ0 trained under multinomial noise (P(η=0) = p1, P(η=0.5) = p2) and
f = E_η[f(θ0 ∗ η)] the expected score of the predicted class, a multiplicative
disturbance δ ∈ {0, 0.5, 1}^Θ keeps the prediction while
‖δ − 1‖₀ + ‖δ − 0.5‖₀ − Θ ≤ r. For δ ∈ {0, 0.5, 1}^Θ every entry counts once in one norm
and a zero counts in both, so the left side is simply **the number of zeroed entries**:
halvings are free, and the set allows ⌊r⌋ zeros (none if r < 0).

The bound on r, reconstructed from the only legible copy of the paper's equation, is

    r = [ln(1.5 − f) − Θ·ln(1 − p2)] / [ln p1 − ln(1 − p2)]

(:func:`theorem1_radius`). Here Θ is the number of entries η multiplies, i.e. a noise
site's activations; a network with per-layer (p1, p2) gets one radius per hidden layer.
Because −Θ·ln(1 − p2) grows with Θ while the denominator is negative, r turns negative
(the set is empty) once Θ·p2 exceeds about ln(1/(1.5 − f)); the function reports that
as it is. :func:`certify` estimates f by Monte Carlo and checks empirically that random
disturbances inside the set keep the prediction.

Because the radius is vacuous on every wide layer, a model also gets a **statistical
certificate** a user can use (:func:`accuracy_certificate`): a one-sided 95 % lower
confidence bound on its accuracy under a named noise model, from a two-way bootstrap over
Monte Carlo noise draws × test inputs (:func:`~xbar.training.stats.lower_bound`). It says:
programmed by this scheme on this device, the model's expected accuracy on inputs like the
test set is at least this, with 95 % confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .noise import MultinomialConfig, MultinomialNoise, NoiseConfigError, WeightNoise
from .robustness import correct_matrix
from .stats import BOOTSTRAP, LEVEL, lower_bound

BOUND_METHOD = "two-way bootstrap over noise draws x test inputs, percentile, one-sided"
VACUOUS = (
    "Theorem 1's radius is negative (the robustness set is empty) once Θ·p2 exceeds about "
    "ln(1/(1.5 - f)): every hidden layer of a few hundred units with p2 > 0.01 is there. "
    "It is kept for comparison with the paper; the statistical certificate is the one to use."
)


def theorem1_radius(f: float, p1: float, p2: float, theta: int) -> float:
    """Theorem 1's r for expected score ``f`` ∈ [0, 1], noise (p1, p2) and Θ entries.

    p1 = 0 gives r = 0 (the limit: no zero is ever trained for, none is allowed).
    Raises NoiseConfigError when P(η = 1) = 1 − p1 − p2 is 0 (the denominator vanishes).
    """
    for name, value in (("f", f), ("p1", p1), ("p2", p2)):
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise NoiseConfigError(f"certificate: {name} = {value!r} must be in [0, 1]")
    MultinomialConfig(p1, p2).validate("certificate")
    if isinstance(theta, bool) or not isinstance(theta, int) or theta < 1:
        raise NoiseConfigError(f"certificate: Θ = {theta!r} must be an integer >= 1")
    if 1.0 - p1 - p2 < 1e-12:
        raise NoiseConfigError(f"certificate: p1 + p2 = {p1 + p2} leaves P(η = 1) = 0")
    if p1 == 0:
        return 0.0
    denominator = math.log(p1) - math.log1p(-p2)
    if denominator == 0:
        raise NoiseConfigError(f"certificate: p1 + p2 = {p1 + p2} leaves P(η = 1) = 0")
    return (math.log(1.5 - f) - theta * math.log1p(-p2)) / denominator


def zeros_allowed(radius: float) -> int:
    """How many entries δ may zero inside the set (−1: the set is empty)."""
    return math.floor(radius) if radius >= 0 else -1


@dataclass(frozen=True)
class LayerCertificate:
    layer: int
    p1: float
    p2: float
    theta: int
    radius_median: float  # over the inputs
    certified_fraction: float  # inputs whose set allows at least one zero
    checked: int  # disturbances tried inside the set
    kept: int  # of them, predictions unchanged


@dataclass(frozen=True)
class Certificate:
    f_median: float
    layers: tuple[LayerCertificate, ...]

    @property
    def radius(self) -> float:
        """The model's radius: the smallest layer's median r."""
        return min(layer.radius_median for layer in self.layers)

    def to_dict(self) -> dict[str, object]:
        return {
            "f_median": self.f_median,
            "radius": self.radius,
            "formula": "r = [ln(1.5 - f) - Θ ln(1 - p2)] / [ln p1 - ln(1 - p2)]",
            "vacuous": self.radius < 0,
            **({"why_vacuous": VACUOUS} if self.radius < 0 else {}),
            "layers": [vars(layer) for layer in self.layers],
        }


def _sites(model: nn.Module) -> list[MultinomialNoise]:
    return [m for m in model.modules() if isinstance(m, MultinomialNoise)]


def expected_score(
    model: nn.Module, x: torch.Tensor, draws: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction without noise, f = E_η[softmax score of that class]) per input."""
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(-1)
        for site in _sites(model):
            site.train()  # multinomial noise on, weights exact
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            scores = torch.stack([torch.softmax(model(x), -1) for _ in range(draws)]).mean(0)
        model.eval()
    return pred, scores.gather(1, pred[:, None])[:, 0]


def certify(
    model: nn.Module, x: np.ndarray, draws: int = 64, checks: int = 8, seed: int = 0
) -> Certificate:
    """Theorem 1 per hidden layer, with ``checks`` random disturbances inside the set per
    input and layer: δ zeroes ⌊r⌋ random entries and halves each other one with
    probability p2; the prediction must not change."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    pred, f = expected_score(model, xt, draws, seed)
    sites = _sites(model)
    if not sites:
        raise NoiseConfigError("certificate: the model has no multinomial noise sites")
    # Each site's width, from one clean forward pass.
    shapes: list[tuple[int, ...]] = []
    hooks = [
        s.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for s in sites
    ]
    with torch.no_grad():
        model(xt[:1])
    for h in hooks:
        h.remove()
    rng = torch.Generator().manual_seed(seed)
    layers = []
    for i, (site, shape) in enumerate(zip(sites, shapes, strict=True)):
        cfg, theta = site.config, math.prod(shape)
        radii = np.array([theorem1_radius(float(fi), cfg.p1, cfg.p2, theta) for fi in f])
        checked = kept = 0
        with torch.no_grad():
            for n in range(len(xt)):
                zeros = zeros_allowed(float(radii[n]))
                if zeros < 0:
                    continue
                for _ in range(checks):
                    delta = torch.where(
                        torch.rand(theta, generator=rng) < cfg.p2,
                        torch.tensor(0.5),
                        torch.tensor(1.0),
                    )
                    if zeros:
                        delta[torch.randperm(theta, generator=rng)[:zeros]] = 0.0
                    site.fixed_eta = delta.view(shape)
                    try:
                        out = model(xt[n : n + 1])
                    finally:
                        site.fixed_eta = None
                    checked += 1
                    kept += int(out.argmax(-1).item() == pred[n].item())
        layers.append(
            LayerCertificate(
                i + 1,
                cfg.p1,
                cfg.p2,
                theta,
                float(np.median(radii)),
                float(np.mean(radii >= 1)),
                checked,
                kept,
            )
        )
    return Certificate(float(f.median()), tuple(layers))


def accuracy_certificate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    noise: WeightNoise,
    draws: int = 200,
    seed: int = 7,
    level: float = LEVEL,
) -> dict[str, object]:
    """The statistical certificate: a one-sided ``level`` lower bound on the accuracy of
    ``model`` under ``noise`` over ``draws`` programmings × the inputs (x, y)."""
    correct = correct_matrix(model, x, y, noise, draws, seed)
    label = getattr(noise, "label", f"{getattr(noise, 'kind', 'noise')} σ {noise.sigma:g}")
    return {
        "lower_bound": lower_bound(correct, level, seed=seed),
        "mean": float(correct.mean()),
        "level": level,
        "method": BOUND_METHOD,
        "resamples": BOOTSTRAP,
        "draws": draws,
        "inputs": int(correct.shape[1]),
        "noise_model": label,
        "eval_seed": seed,
    }
