"""Theorem 1's radius on hand-worked cases, its domain, and the empirical check."""

from __future__ import annotations

import math

import pytest
import torch
from xbar.training.certificate import certify, theorem1_radius, zeros_allowed
from xbar.training.harness import TrainConfig, train_network
from xbar.training.networks import NetworkSpec
from xbar.training.noise import MultinomialConfig, NoiseConfigError
from xbar.training.tasks import load_task

torch.set_num_threads(1)  # tiny networks: one thread, no fight over the two cores


def test_hand_worked_radii() -> None:
    # p2 = 0: r = ln(1.5 − f) / ln p1, independent of Θ.
    assert theorem1_radius(1.0, 0.5, 0.0, 1) == pytest.approx(1.0)  # ln 0.5 / ln 0.5
    assert theorem1_radius(1.0, 0.5, 0.0, 10_000) == pytest.approx(1.0)
    assert theorem1_radius(0.9, 0.1, 0.0, 5) == pytest.approx(math.log(0.6) / math.log(0.1))
    # f = 0.9, p1 = p2 = 0.1, Θ = 2: [ln 0.6 − 2 ln 0.9] / [ln 0.1 − ln 0.9]
    #   = (−0.510826 + 0.210721) / (−2.302585 + 0.105361) = 0.136584
    assert theorem1_radius(0.9, 0.1, 0.1, 2) == pytest.approx(0.136584, abs=1e-6)
    # f = 0.5 gives ln(1.0) = 0: r = −Θ ln(1 − p2) / (ln p1 − ln(1 − p2)) < 0 for p2 > 0.
    assert theorem1_radius(0.5, 0.2, 0.1, 3) == pytest.approx(
        -3 * math.log(0.9) / (math.log(0.2) - math.log(0.9))
    )
    # p1 = 0: the limit r = 0.
    assert theorem1_radius(0.95, 0.0, 0.3, 7) == 0.0


def test_radius_shrinks_with_theta_and_grows_with_confidence() -> None:
    assert theorem1_radius(0.9, 0.3, 0.05, 10) > theorem1_radius(0.9, 0.3, 0.05, 100)
    assert theorem1_radius(0.99, 0.3, 0.0, 10) > theorem1_radius(0.6, 0.3, 0.0, 10)


def test_zeros_allowed() -> None:
    assert zeros_allowed(1.7) == 1 and zeros_allowed(0.2) == 0 and zeros_allowed(-0.1) == -1


@pytest.mark.parametrize(
    ("args", "what"),
    [
        ((1.2, 0.2, 0.1, 3), "f"),
        ((0.9, 0.6, 0.5, 3), r"p1 \+ p2"),
        ((0.9, 0.2, 0.1, 0), "Θ"),
        ((0.9, 0.2, 0.8, 3), "P\\(η = 1\\)"),
        ((math.nan, 0.2, 0.1, 3), "f"),
    ],
)
def test_bad_arguments_are_named(args: tuple, what: str) -> None:
    with pytest.raises(NoiseConfigError, match=what):
        theorem1_radius(*args)


def test_disturbances_inside_the_set_keep_predictions() -> None:
    """A network trained with p1 = 0.6 (p2 = 0) has r = ln(1.5 − f)/ln 0.6 ≥ 1 where it is
    confident: zeroing one hidden unit (and nothing else) must not change its prediction."""
    task = load_task("iris")
    spec = NetworkSpec(
        "mlp", task.n_features, task.n_classes, (32,), (MultinomialConfig(0.6, 0.0),)
    )
    model = train_network(spec, task, TrainConfig(epochs=300, batch=16))
    cert = certify(model, task.x_test, draws=32, checks=8)
    (layer,) = cert.layers
    assert layer.theta == 32 and layer.p1 == 0.6
    assert layer.certified_fraction > 0.5  # most inputs allow one zero
    assert layer.checked > 0
    assert layer.kept == layer.checked
    assert cert.to_dict()["radius"] == layer.radius_median
