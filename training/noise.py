"""Noise library: what a perovskite crossbar does to a network, as torch modules.

Two families, each a typed, validated configuration with named presets:

- **Multinomial activation noise** (BayesMulti's training noise, see the design guide):
  every activation is multiplied by η ∈ {0, 0.5, 1} with P(0) = p1, P(0.5) = p2,
  P(1) = 1 − p1 − p2 and rescaled by 1/E[η], so E[output] = input; off at inference.
- **Weight noise**: the board's noise model (:mod:`~xbar.training.noise_model`: device,
  mapping onto differential pairs, programming scheme), or per weight the paper's
  log-normal ``w·exp(ε)``,
  ε ~ N(0, σ²) with σ from a :class:`~xbar.training.devices.device_model.DeviceModel`, and Gaussian
  multiplicative ``w·(1 + σ·n)`` and additive ``w + σ·max|w|·n`` noise, for training
  (injection) and for evaluation (Monte Carlo draws).

Plus the two ways programming a device departs from the float weight: quantisation to the
device's conductance levels on differential pairs, and stuck-at faults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from xbar.training.errors import XbarError

from .devices.device_model import DeviceModel
from .noise_model import NoiseModel

WEIGHT_NOISE_KINDS = ("lognormal", "gaussian-mult", "gaussian-add")


class NoiseConfigError(XbarError, ValueError):
    """A noise configuration out of range; the message names the field and the value."""


def _number(name: str, value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise NoiseConfigError(f"{where}: {name} = {value!r} is not a finite number")
    return float(value)


# -- multinomial activation noise ----------------------------------------------------
@dataclass(frozen=True)
class MultinomialConfig:
    """P(η = 0) = p1 and P(η = 0.5) = p2 of one layer's activation noise."""

    p1: float = 0.0
    p2: float = 0.0

    def validate(self, where: str = "multinomial noise") -> MultinomialConfig:
        p1, p2 = _number("p1", self.p1, where), _number("p2", self.p2, where)
        if not 0 <= p1 < 1:
            raise NoiseConfigError(f"{where}: p1 = {p1} must be in [0, 1)")
        if not 0 <= p2 <= 1:
            raise NoiseConfigError(f"{where}: p2 = {p2} must be in [0, 1]")
        if p1 + p2 > 1 + 1e-12:
            raise NoiseConfigError(f"{where}: p1 + p2 = {p1 + p2:.6g} must be <= 1")
        return self

    @property
    def mean(self) -> float:
        """E[η] = 0.5·p2 + (1 − p1 − p2): the rescaling that keeps E[output] = input."""
        return 0.5 * self.p2 + (1.0 - self.p1 - self.p2)

    @property
    def active(self) -> bool:
        return self.p1 > 0 or self.p2 > 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "multinomial noise") -> MultinomialConfig:
        if not isinstance(data, dict) or set(data) - {"p1", "p2"}:
            raise NoiseConfigError(f"{where}: expected an object with p1 and p2, got {data!r}")
        return cls(data.get("p1", 0.0), data.get("p2", 0.0)).validate(where)


def sample_eta(
    shape: torch.Size | tuple[int, ...],
    config: MultinomialConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """η ∈ {0, 0.5, 1} with the configured probabilities (not rescaled)."""
    u = torch.rand(shape, generator=generator)
    half = torch.full_like(u, 0.5)
    return torch.where(
        u < config.p1,
        torch.zeros_like(u),
        torch.where(u < config.p1 + config.p2, half, torch.ones_like(u)),
    )


class MultinomialNoise(nn.Module):
    """η·x / E[η] in training, the identity at inference (``model.eval()``)."""

    def __init__(self, config: MultinomialConfig) -> None:
        super().__init__()
        self.config = config.validate()
        # A fixed disturbance δ (the certificate's check), applied in every mode when set.
        self.fixed_eta: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_eta is not None:
            return x * self.fixed_eta.to(x.dtype) / self.config.mean
        if not self.training or not self.config.active:
            return x
        eta = sample_eta(x.shape, self.config).to(x.dtype)
        return x * eta / self.config.mean

    def extra_repr(self) -> str:
        return f"p1={self.config.p1:.3f}, p2={self.config.p2:.3f}"


# -- weight noise --------------------------------------------------------------------
@dataclass(frozen=True)
class WeightNoiseConfig:
    """Noise on every weight: ``kind`` (lognormal, gaussian-mult, gaussian-add) and σ.

    lognormal: w·exp(ε), ε ~ N(0, σ²) (the device's cycle-to-cycle noise);
    gaussian-mult: w·(1 + σ·n); gaussian-add: w + σ·max|w|·n, with n ~ N(0, 1).
    """

    kind: str = "lognormal"
    sigma: float = 0.0

    def validate(self, where: str = "weight noise") -> WeightNoiseConfig:
        if self.kind not in WEIGHT_NOISE_KINDS:
            raise NoiseConfigError(
                f"{where}: kind {self.kind!r} is not one of {', '.join(WEIGHT_NOISE_KINDS)}"
            )
        if _number("sigma", self.sigma, where) < 0:
            raise NoiseConfigError(f"{where}: sigma = {self.sigma} must be >= 0")
        return self

    @classmethod
    def from_device(cls, device: DeviceModel, scale: float = 1.0) -> WeightNoiseConfig:
        """The device's own noise (σ = scale × sigma_c2c, log-normal)."""
        return cls("lognormal", scale * device.sigma_c2c).validate(f"device {device.name}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "weight noise") -> WeightNoiseConfig:
        if not isinstance(data, dict) or set(data) - {"kind", "sigma"}:
            raise NoiseConfigError(f"{where}: expected an object with kind and sigma, got {data!r}")
        return cls(data.get("kind", "lognormal"), data.get("sigma", 0.0)).validate(where)

    def perturb(self, w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of the noisy weights (differentiable in ``w``). A leading batch
        dimension in ``w`` gives independent draws per entry of the batch."""
        if self.sigma == 0:
            return w
        n = torch.randn(w.shape, generator=generator, dtype=w.dtype)
        if self.kind == "lognormal":
            return w * torch.exp(self.sigma * n)
        if self.kind == "gaussian-mult":
            return w * (1.0 + self.sigma * n)
        return w + self.sigma * w.detach().abs().max() * n

    def weight_moments(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, Var) of each noisy weight (differentiable in ``w``)."""
        if self.kind == "gaussian-add":
            spread = self.sigma * w.detach().abs().max()
            return w, torch.full_like(w, 1.0) * spread**2
        m_mean, m_var = self.moments()
        return w * m_mean, w * w * m_var

    def moments(self) -> tuple[float, float]:
        """(E[m], Var[m]) of the multiplicative factor m of a weight: for lognormal
        m = exp(ε), for gaussian-mult m = 1 + σn (gaussian-add is not multiplicative)."""
        s2 = self.sigma**2
        if self.kind == "lognormal":
            return math.exp(s2 / 2), math.exp(s2) * (math.exp(s2) - 1)
        return 1.0, s2


NOISE_PRESETS: dict[str, WeightNoiseConfig] = {
    "off": WeightNoiseConfig("lognormal", 0.0),
    # The median published device (σ ≈ 0.59) and the paper's hardest evaluation points.
    "lognormal-0.59": WeightNoiseConfig("lognormal", 0.59),
    "lognormal-1.0": WeightNoiseConfig("lognormal", 1.0),
    "lognormal-1.3": WeightNoiseConfig("lognormal", 1.3),
    # A hardware-aware-training style multiplicative Gaussian (aihwkit's default modifier).
    "gaussian-mult-0.1": WeightNoiseConfig("gaussian-mult", 0.1),
    "gaussian-add-0.05": WeightNoiseConfig("gaussian-add", 0.05),
}


WeightNoise = WeightNoiseConfig | NoiseModel
"""What a noisy layer takes: a per-weight kind and σ, or the board's whole noise model."""


def weight_noise_preset(name: str) -> WeightNoiseConfig:
    if name not in NOISE_PRESETS:
        raise NoiseConfigError(f"no weight-noise preset {name!r}; have {', '.join(NOISE_PRESETS)}")
    return NOISE_PRESETS[name]


class NoisyLinear(nn.Linear):
    """A linear layer under weight noise: ``train_noise`` in training, ``eval_noise`` (when
    set) at inference; biases stay exact.

    In training the noise enters by moment matching (the local reparameterisation of
    Kingma et al., 2015): each output is drawn from a normal with the mean and variance
    the noisy weights give it (``weight_moments``, closed form from the same spec that
    draws them for evaluation), independently per example. That is one draw per example at
    the cost of two matrix products, where a shared weight draw per batch would give
    gradients that follow that one draw. Evaluation always draws the weights themselves.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        train_noise: WeightNoise | None = None,
        clip: float | None = None,
    ) -> None:
        super().__init__(n_in, n_out)
        self.train_noise = train_noise.validate() if train_noise else None
        self.eval_noise: WeightNoise | None = None
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            w = self.eval_noise.perturb(self.weight) if self.eval_noise else self.weight
            return nn.functional.linear(x, w, self.bias)
        noise = self.train_noise
        if noise is None or (isinstance(noise, WeightNoiseConfig) and noise.sigma == 0):
            return nn.functional.linear(x, self.weight, self.bias)
        w_mean, w_var = noise.weight_moments(self.weight)
        mean = nn.functional.linear(x, w_mean)
        var = nn.functional.linear(x * x, w_var)
        out = mean + var.clamp_min(1e-12).sqrt() * torch.randn_like(mean)
        return out + self.bias


class NoisyConv2d(nn.Conv2d):
    """A 2-D convolution with the same weight-noise behaviour as :class:`NoisyLinear`."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        train_noise: WeightNoise | None = None,
        clip: float | None = None,
        padding: int = 1,
    ) -> None:
        super().__init__(c_in, c_out, kernel, padding=padding)
        self.train_noise = train_noise.validate() if train_noise else None
        self.eval_noise: WeightNoise | None = None
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.train_noise if self.training else self.eval_noise
        w = noise.perturb(self.weight) if noise else self.weight
        return self._conv_forward(x, w, self.bias)


NOISY_LAYERS = (NoisyLinear, NoisyConv2d)


def set_eval_noise(model: nn.Module, noise: WeightNoise | None) -> None:
    """Evaluate ``model`` under ``noise`` (a fresh draw per forward); None: exact weights."""
    for layer in model.modules():
        if isinstance(layer, NOISY_LAYERS):
            layer.eval_noise = noise


def clip_weights(model: nn.Module) -> None:
    """Clamp each noisy layer's weights to ±clip × its He-init scale √(2/fan_in): bounded
    weights spread a unit's input over many cells, so independent per-cell noise averages."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, NOISY_LAYERS) and layer.clip:
                fan_in = layer.weight[0].numel()
                bound = layer.clip * math.sqrt(2.0 / fan_in)
                layer.weight.clamp_(-bound, bound)


# -- programming a device: levels and faults ------------------------------------------
def differential_pair(w: np.ndarray, device: DeviceModel) -> tuple[np.ndarray, np.ndarray, float]:
    """Conductances (G+, G−) of each weight on a differential pair, each snapped to the
    nearest of the device's levels, and the scale (S per weight unit): w ≈ (G+ − G−)/scale.

    The larger |w| maps to the device's full window g_max − g_min; the idle side of each
    pair sits at the lowest level.
    """
    levels = np.sort(np.asarray(device.level_conductances, dtype=float))
    w = np.asarray(w, dtype=float)
    peak = float(np.abs(w).max())
    scale = (levels[-1] - levels[0]) / peak if peak > 0 else 1.0
    target_pos = levels[0] + np.maximum(w, 0) * scale
    target_neg = levels[0] + np.maximum(-w, 0) * scale

    def snap(g: np.ndarray) -> np.ndarray:
        idx = np.clip(np.searchsorted(levels, g), 1, len(levels) - 1) if len(levels) > 1 else 0
        if len(levels) == 1:
            return np.full_like(g, levels[0])
        lo, hi = levels[idx - 1], levels[idx]
        return np.where(g - lo <= hi - g, lo, hi)

    return snap(target_pos), snap(target_neg), scale


def quantize_to_levels(w: np.ndarray, device: DeviceModel) -> np.ndarray:
    """The weights a device can hold: each w through its differential pair of levels."""
    g_pos, g_neg, scale = differential_pair(w, device)
    return (g_pos - g_neg) / scale


@dataclass(frozen=True)
class StuckAtConfig:
    """Fraction of cells stuck at the lowest (``p_off``) or highest (``p_on``) level."""

    p_off: float = 0.0
    p_on: float = 0.0

    def validate(self, where: str = "stuck-at faults") -> StuckAtConfig:
        for name in ("p_off", "p_on"):
            value = _number(name, getattr(self, name), where)
            if not 0 <= value <= 1:
                raise NoiseConfigError(f"{where}: {name} = {value} must be in [0, 1]")
        if self.p_off + self.p_on > 1:
            raise NoiseConfigError(f"{where}: p_off + p_on = {self.p_off + self.p_on} exceeds 1")
        return self


def stuck_at_faults(
    w: np.ndarray, device: DeviceModel, faults: StuckAtConfig, rng: np.random.Generator
) -> np.ndarray:
    """The weights after programming onto differential pairs where each cell (G+ and G−
    independently) is stuck off or on with the configured probabilities."""
    faults.validate()
    g_pos, g_neg, scale = differential_pair(w, device)
    lo, hi = min(device.level_conductances), max(device.level_conductances)
    for g in (g_pos, g_neg):
        u = rng.random(g.shape)
        g[u < faults.p_off] = lo
        g[(u >= faults.p_off) & (u < faults.p_off + faults.p_on)] = hi
    return (g_pos - g_neg) / scale
