"""One training harness for every method, so every comparison is like for like.

ERM, the fixed-noise baselines and BayesMulti all train the same network family
(:mod:`~xbar.training.networks`) on the same split with the same optimiser and schedule;
they differ only in the :class:`NetworkSpec` (noise and weight clipping) that
:func:`method_spec` builds:

- ``erm``: plain training, no noise.
- ``gaussian``: fixed Gaussian multiplicative weight-noise injection w·(1 + σ·n) with σ the
  target device's σ (the hardware-aware-training recipe of IBM aihwkit).
- ``multinomial``: fixed multinomial activation noise p1 = p2 = 0.1 on every hidden layer.
- ``bayesmulti``: the searched specification α (per-layer p1, p2), training weight-noise
  scale and kind, clipping, width and the mapping onto conductance pairs (window share,
  full scale), trained under the target's noise model
  (:class:`~xbar.training.noise_model.NoiseModel`, see :mod:`~xbar.training.bayesmulti`).
  α with noise scale 0 and p1 = p2 = 0 is ERM; with the Gaussian injection at scale 1 it
  is the ``gaussian`` baseline; with p1 = p2 = 0.1 and scale 0 the ``multinomial`` one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .networks import NetworkSpec, NoisyCNN, NoisyMLP, build_network
from .noise import MultinomialConfig, NoiseConfigError, WeightNoise, WeightNoiseConfig, clip_weights
from .noise_model import WINDOW, Mapping, NoiseModel, scaled
from .tasks import Task

METHODS = ("erm", "gaussian", "multinomial", "bayesmulti")
FIXED_MULTINOMIAL = MultinomialConfig(0.1, 0.1)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule, shared by every method."""

    epochs: int = 60
    lr: float = 3e-3
    batch: int = 64
    seed: int = 0

    def validate(self) -> TrainConfig:
        if self.epochs < 1 or self.batch < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise NoiseConfigError(f"training config: {self} needs epochs, batch >= 1, lr > 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


INJECTIONS = ("board", "gaussian")


@dataclass(frozen=True)
class Alpha:
    """What BayesMulti searches: per-layer (p1, p2), the training weight-noise scale (a
    multiple of the target's σ's) and kind (``board``: the target's own noise model;
    ``gaussian``: w·(1 + σ·n)), the clipping bound, the hidden width, and the mapping onto
    conductance pairs (``window``: share of the device window; ``full_scale``: the share of
    max|w| mapped to its top)."""

    multinomial: tuple[MultinomialConfig, ...]
    noise_scale: float
    clip: float | None
    width: int
    injection: str = "board"
    window: float = WINDOW
    full_scale: float = 1.0

    @property
    def mapping(self) -> Mapping:
        return Mapping(self.window, self.full_scale).validate("alpha mapping")

    def to_dict(self) -> dict[str, Any]:
        return {
            "multinomial": [m.to_dict() for m in self.multinomial],
            "noise_scale": self.noise_scale,
            "clip": self.clip,
            "width": self.width,
            "injection": self.injection,
            "window": self.window,
            "full_scale": self.full_scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alpha:
        try:
            sites = tuple(
                MultinomialConfig.from_dict(m, f"alpha: layer {i + 1}")
                for i, m in enumerate(data["multinomial"])
            )
            clip = None if data["clip"] is None else float(data["clip"])
            alpha = cls(
                sites,
                float(data["noise_scale"]),
                clip,
                int(data["width"]),
                str(data.get("injection", "board")),
                float(data.get("window", WINDOW)),
                float(data.get("full_scale", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NoiseConfigError(f"alpha: missing or bad field ({exc})") from None
        if alpha.injection not in INJECTIONS:
            raise NoiseConfigError(
                f"alpha: injection {alpha.injection!r} is not one of {', '.join(INJECTIONS)}"
            )
        if not (math.isfinite(alpha.noise_scale) and alpha.noise_scale >= 0):
            raise NoiseConfigError(f"alpha: noise_scale = {alpha.noise_scale} must be >= 0")
        alpha.mapping  # noqa: B018  (validates window and full_scale)
        return alpha


def method_spec(
    method: str,
    task: Task,
    arch: str,
    hidden: Sequence[int],
    sigma: float,
    alpha: Alpha | None = None,
    noise: NoiseModel | None = None,
) -> NetworkSpec:
    """The network spec of ``method`` for ``task`` with the given hidden sizes, trained for
    a device of noise ``sigma``. ``bayesmulti`` needs ``alpha`` (its width wins) and trains
    under ``noise`` (the target's noise model, α's mapping and scale applied; None: the
    paper's w·exp(ε) at ``sigma``)."""
    channels = (8, 16)
    sites = len(hidden) + (len(channels) if arch == "cnn" else 0)
    base: dict[str, Any] = {
        "arch": arch,
        "n_in": task.n_features,
        "n_out": task.n_classes,
        "hidden": tuple(hidden),
        "image_side": task.image_side or 8,
        "channels": channels,
    }
    if method == "erm":
        return NetworkSpec(**base).validate()
    if method == "gaussian":
        return NetworkSpec(**base, train_noise=WeightNoiseConfig("gaussian-mult", sigma)).validate()
    if method == "multinomial":
        return NetworkSpec(**base, multinomial=(FIXED_MULTINOMIAL,) * sites).validate()
    if method == "bayesmulti":
        if alpha is None:
            raise NoiseConfigError("bayesmulti needs a searched alpha")
        base["hidden"] = (alpha.width,) * len(hidden)
        return NetworkSpec(
            **base,
            multinomial=alpha.multinomial if any(m.active for m in alpha.multinomial) else (),
            train_noise=training_noise(alpha, sigma, noise),
            clip=alpha.clip,
        ).validate()
    raise NoiseConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def training_noise(alpha: Alpha, sigma: float, noise: NoiseModel | None) -> WeightNoise | None:
    """The weight noise α trains under: none at scale 0; Gaussian w·(1 + s·σ·n); else the
    target's noise model with α's mapping and its σ's scaled by s (the paper's w·exp(ε)
    at s·σ when there is no noise model)."""
    if alpha.noise_scale == 0:
        return None
    if alpha.injection == "gaussian":
        return WeightNoiseConfig("gaussian-mult", alpha.noise_scale * sigma)
    if noise is None:
        return WeightNoiseConfig("lognormal", alpha.noise_scale * sigma)
    return scaled(noise.with_mapping(alpha.mapping), alpha.noise_scale)


def train_network(spec: NetworkSpec, task: Task, config: TrainConfig) -> NoisyMLP | NoisyCNN:
    """Adam on cross-entropy, cosine-annealed, with weights clipped after every step.

    Seeded: the same spec, task and config give the same network."""
    config.validate()
    torch.manual_seed(config.seed)
    model = build_network(spec)
    x = torch.as_tensor(task.x_train)
    y = torch.as_tensor(task.y_train)
    steps_per_epoch = -(-len(x) // config.batch)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, config.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    clip_weights(model)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), config.batch):
            idx = order[start : start + config.batch]
            loss = loss_fn(model(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            clip_weights(model)
    model.eval()
    return model
