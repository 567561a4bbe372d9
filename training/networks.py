"""The network families every method trains: a ReLU MLP and a small CNN, built from a spec.

Every weight layer is a noisy layer (weight noise injected in training, drawn for
evaluation) and every hidden layer is followed by its own multinomial activation noise,
so ERM, the fixed-noise baselines and BayesMulti differ only in their configuration. The
output is multiplied by a learned scalar gain (applied digitally, after the array): with
clipped weights the logits would otherwise be too small for the loss to be learnt; a
positive gain never changes a prediction and folds into the last layer on export.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .noise import (
    MultinomialConfig,
    MultinomialNoise,
    NoiseConfigError,
    NoisyConv2d,
    NoisyLinear,
    WeightNoise,
)

ARCHS = ("mlp", "cnn")


@dataclass(frozen=True)
class NetworkSpec:
    """Architecture and noise of one network. ``multinomial`` has one entry per noise
    site (each hidden layer); ``train_noise`` is injected into every weight in training."""

    arch: str
    n_in: int
    n_out: int
    hidden: tuple[int, ...]
    multinomial: tuple[MultinomialConfig, ...] = ()
    train_noise: WeightNoise | None = None
    clip: float | None = None
    image_side: int = 8  # cnn: inputs are side × side images
    channels: tuple[int, ...] = field(default=(8, 16))  # cnn: conv channels

    @property
    def noise_sites(self) -> int:
        """Hidden layers, each followed by one multinomial noise module."""
        return len(self.hidden) + (len(self.channels) if self.arch == "cnn" else 0)

    def validate(self) -> NetworkSpec:
        if self.arch not in ARCHS:
            raise NoiseConfigError(f"network: arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        if self.n_in < 1 or self.n_out < 2 or any(h < 1 for h in self.hidden):
            raise NoiseConfigError(f"network: sizes {self.n_in}, {self.hidden}, {self.n_out}")
        if self.multinomial and len(self.multinomial) != self.noise_sites:
            raise NoiseConfigError(
                f"network: {len(self.multinomial)} multinomial configs for "
                f"{self.noise_sites} hidden layers"
            )
        for i, m in enumerate(self.multinomial):
            m.validate(f"multinomial noise of hidden layer {i + 1}")
        if self.train_noise is not None:
            self.train_noise.validate("training weight noise")
        if self.clip is not None and not self.clip > 0:
            raise NoiseConfigError(f"network: clip = {self.clip} must be > 0 or None")
        return self

    def site_config(self, i: int) -> MultinomialConfig:
        return self.multinomial[i] if self.multinomial else MultinomialConfig()

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "hidden": list(self.hidden),
            "multinomial": [m.to_dict() for m in self.multinomial],
            "train_noise": self.train_noise.to_dict() if self.train_noise else None,
            "clip": self.clip,
            "image_side": self.image_side,
            "channels": list(self.channels),
        }


class NoisyMLP(nn.Module):
    """Linear → ReLU → multinomial noise, …, Linear → gain."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec.validate()
        sizes = [spec.n_in, *spec.hidden, spec.n_out]
        blocks: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            blocks.append(NoisyLinear(a, b, spec.train_noise, spec.clip))
            if i < len(spec.hidden):
                blocks += [nn.ReLU(), MultinomialNoise(spec.site_config(i))]
        self.body = nn.Sequential(*blocks)
        self.log_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.log_gain.exp()

    def linear_layers(self) -> list[NoisyLinear]:
        return [m for m in self.body if isinstance(m, NoisyLinear)]

    def export_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight (in, out), bias) per layer, sklearn's layout, with the gain folded into
        the last layer."""
        layers = self.linear_layers()
        gain = float(self.log_gain.detach().exp())
        out = []
        for i, layer in enumerate(layers):
            k = gain if i == len(layers) - 1 else 1.0
            out.append((layer.weight.detach().numpy().T * k, layer.bias.detach().numpy() * k))
        return out


class NoisyCNN(nn.Module):
    """Two 3×3 conv blocks (ReLU, noise, 2×2 max-pool), then the MLP head."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec.validate()
        blocks: list[nn.Module] = []
        c_in, side = 1, spec.image_side
        for i, c_out in enumerate(spec.channels):
            blocks += [
                NoisyConv2d(c_in, c_out, 3, spec.train_noise, spec.clip),
                nn.ReLU(),
                MultinomialNoise(spec.site_config(i)),
                nn.MaxPool2d(2),
            ]
            c_in, side = c_out, side // 2
        self.features = nn.Sequential(*blocks)
        head_sites = spec.multinomial[len(spec.channels) :] if spec.multinomial else ()
        head = NetworkSpec(
            "mlp",
            c_in * side * side,
            spec.n_out,
            spec.hidden,
            head_sites,
            spec.train_noise,
            spec.clip,
        )
        self.head = NoisyMLP(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.spec.image_side
        return self.head(self.features(x.view(-1, 1, side, side)).flatten(1))


def build_network(spec: NetworkSpec) -> NoisyMLP | NoisyCNN:
    return NoisyMLP(spec) if spec.arch == "mlp" else NoisyCNN(spec)
