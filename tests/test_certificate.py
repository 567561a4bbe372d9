"""Theorem 1's radius on hand-worked cases, its domain, and the empirical check; the
statistical certificate's bound and its coverage where the true accuracy is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from xbar.training.certificate import certify, theorem1_radius, zeros_allowed
from xbar.training.harness import TrainConfig, train_network
from xbar.training.networks import NetworkSpec, NoisyMLP
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


def test_the_accuracy_bound_covers_the_true_accuracy() -> None:
    """A synthetic model whose accuracy is known exactly: input i is classified correctly
    under draw d when z_i + e_d + n_di > 0, z ~ N(μ, 1), e ~ N(0, 0.5²), n ~ N(0, 0.7²), so
    the expected accuracy is Φ(μ / √(1 + 0.25 + 0.49)). Over 300 repetitions (30 draws ×
    100 inputs each), the one-sided 95 % bound lies below the truth at least 95 % of the time
    (less a margin for the 300-repetition estimate), and is informative (not far below)."""
    from scipy.stats import norm
    from xbar.training.stats import lower_bound

    mu = 1.2
    truth = float(norm.cdf(mu / np.sqrt(1 + 0.25 + 0.49)))
    rng = np.random.default_rng(0)
    bounds = []
    for rep in range(300):
        z = rng.normal(mu, 1.0, 100)
        e = rng.normal(0.0, 0.5, 30)
        n = rng.normal(0.0, 0.7, (30, 100))
        correct = (z[None, :] + e[:, None] + n > 0).astype(np.int8)
        bounds.append(lower_bound(correct, resamples=500, seed=rep))
    bounds_a = np.array(bounds)
    coverage = float(np.mean(bounds_a <= truth))
    assert coverage >= 0.95 - 2 * np.sqrt(0.05 * 0.95 / 300)
    assert truth - bounds_a.mean() < 0.1


def test_intervals_print_to_the_precision_they_allow() -> None:
    from xbar.training.stats import Interval, decimals, format_interval, mean_interval

    assert decimals(0.012) == 3 and decimals(0.03) == 2 and decimals(0.3) == 1
    assert format_interval(Interval(0.8941, 0.882, 0.906, 30)) == "0.894 ± 0.012"
    assert format_interval(Interval(0.8941, 0.864, 0.924, 30)) == "0.89 ± 0.03"
    iv = mean_interval([0.8, 0.9, 1.0])
    assert iv.low < 0.9 < iv.high and iv.n == 3
    assert "no interval" in format_interval(mean_interval([0.5]))


def test_the_statistical_certificate_of_a_model() -> None:
    from xbar.training.certificate import accuracy_certificate
    from xbar.training.noise_model import NoiseModel

    torch.manual_seed(0)
    model = NoisyMLP(NetworkSpec("mlp", 4, 3, (8,)))
    x = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    y = model(torch.as_tensor(x)).argmax(-1).numpy()  # the clean model is always right
    cert = accuracy_certificate(model, x, y, NoiseModel.paper(0.5), draws=40)
    assert cert["lower_bound"] <= cert["mean"] <= 1
    assert cert["draws"] == 40 and cert["inputs"] == 50 and "bootstrap" in cert["method"]
