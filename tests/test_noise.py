"""Noise library: statistics of the noise layers, levels, faults, and noisy evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from xbar.training.devices.device_model import DeviceModel
from xbar.training.networks import NetworkSpec, NoisyMLP
from xbar.training.noise import (
    MultinomialConfig,
    MultinomialNoise,
    NoiseConfigError,
    NoisyLinear,
    StuckAtConfig,
    WeightNoiseConfig,
    differential_pair,
    quantize_to_levels,
    stuck_at_faults,
    weight_noise_preset,
)
from xbar.training.robustness import (
    accuracy_under_noise,
    calibrated,
    clean_accuracy,
    gain_calibration,
    noisy_logits,
)

N = 100_000  # samples per statistical check: 5σ bands stay around 1 %

torch.set_num_threads(1)  # tiny networks: one thread, no fight over the two cores


@st.composite
def probabilities(draw: st.DrawFn) -> MultinomialConfig:
    p1 = draw(st.floats(0.0, 0.9))
    p2 = draw(st.floats(0.0, 1.0 - p1))
    return MultinomialConfig(p1, p2)


@settings(max_examples=20)
@given(config=probabilities(), value=st.floats(0.1, 10.0), seed=st.integers(0, 2**31))
def test_multinomial_noise_keeps_the_mean_and_draws_eta_as_configured(
    config: MultinomialConfig, value: float, seed: int
) -> None:
    torch.manual_seed(seed)
    layer = MultinomialNoise(config).train()
    out = layer(torch.full((N,), value, dtype=torch.float64))
    eta = out * config.mean / value  # the η of each sample
    for level, p in ((0.0, config.p1), (0.5, config.p2), (1.0, 1 - config.p1 - config.p2)):
        freq = float(torch.isclose(eta, torch.tensor(level, dtype=torch.float64)).double().mean())
        assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / N) + 1e-9
    # E[η / E[η]] = 1; its spread is √Var(η)/E[η].
    var = 0.25 * config.p2 + (1 - config.p1 - config.p2) - config.mean**2
    band = 5 * value * math.sqrt(max(var, 0.0) / N) / config.mean
    assert abs(float(out.mean()) - value) <= band + 1e-9


def test_multinomial_noise_is_off_at_inference() -> None:
    layer = MultinomialNoise(MultinomialConfig(0.4, 0.3)).eval()
    x = torch.rand(1000)
    assert torch.equal(layer(x), x)


@pytest.mark.parametrize(
    ("p1", "p2", "what"),
    [
        (0.6, 0.5, "p1 + p2"),
        (-0.1, 0.2, "p1"),
        (0.2, 1.5, "p2"),
        (1.0, 0.0, "p1"),
        (math.nan, 0.1, "p1"),
    ],
)
def test_bad_multinomial_config_names_the_field(p1: float, p2: float, what: str) -> None:
    with pytest.raises(NoiseConfigError, match=what.replace("+", r"\+")):
        MultinomialConfig(p1, p2).validate()


def test_multinomial_config_json_round_trip_and_rejects_unknown_fields() -> None:
    config = MultinomialConfig(0.2, 0.1)
    assert MultinomialConfig.from_dict(config.to_dict()) == config
    with pytest.raises(NoiseConfigError, match="expected an object"):
        MultinomialConfig.from_dict({"p1": 0.1, "p3": 0.2})
    with pytest.raises(NoiseConfigError, match=r"p1 \+ p2"):
        MultinomialConfig.from_dict({"p1": 0.7, "p2": 0.7})


@settings(max_examples=20)
@given(sigma=st.floats(0.05, 1.5), seed=st.integers(0, 2**31))
def test_lognormal_weight_noise_has_the_device_statistics(sigma: float, seed: int) -> None:
    w = torch.full((N,), -0.7, dtype=torch.float64)
    noisy = WeightNoiseConfig("lognormal", sigma).perturb(w, torch.Generator().manual_seed(seed))
    eps = torch.log(noisy / w)  # the sign is kept: log-normal noise is multiplicative
    assert abs(float(eps.mean())) <= 5 * sigma / math.sqrt(N)
    assert float(eps.std()) == pytest.approx(sigma, rel=0.02)


@pytest.mark.parametrize("kind", ["gaussian-mult", "gaussian-add"])
def test_gaussian_weight_noise_is_unbiased(kind: str) -> None:
    w = torch.linspace(-1, 1, 101, dtype=torch.float64).repeat(2000)
    noisy = WeightNoiseConfig(kind, 0.3).perturb(w, torch.Generator().manual_seed(0))
    assert float((noisy - w).mean()) == pytest.approx(0.0, abs=5 * 0.3 / math.sqrt(w.numel()))


def test_moment_matched_training_noise_matches_drawn_weights() -> None:
    """The per-example normal that training draws has the mean and variance of the output
    under drawn weights (the local reparameterisation)."""
    torch.manual_seed(0)
    noise = WeightNoiseConfig("lognormal", 0.8)
    layer = NoisyLinear(16, 3, noise)
    x = torch.rand(1, 16)
    layer.train()
    trained = torch.cat([layer(x.expand(20_000, 16)) for _ in range(5)])
    with torch.no_grad():
        w = noise.perturb(layer.weight.expand(100_000, 3, 16))
        drawn = (w @ x[0]) + layer.bias
    assert torch.allclose(trained.mean(0), drawn.mean(0), rtol=0.03, atol=0.01)
    assert torch.allclose(trained.std(0), drawn.std(0), rtol=0.05, atol=0.01)


def test_device_preset_and_presets() -> None:
    device = DeviceModel.preset("pvk-median")
    assert WeightNoiseConfig.from_device(device).sigma == device.sigma_c2c
    assert weight_noise_preset("lognormal-1.3").sigma == 1.3
    with pytest.raises(NoiseConfigError, match="no weight-noise preset"):
        weight_noise_preset("nope")
    with pytest.raises(NoiseConfigError, match="kind"):
        WeightNoiseConfig("uniform", 0.1).validate()
    with pytest.raises(NoiseConfigError, match="sigma"):
        WeightNoiseConfig("lognormal", -0.1).validate()


def test_levels_on_differential_pairs() -> None:
    device = DeviceModel.preset("pvk-best")
    levels = np.array(device.level_conductances)
    w = np.linspace(-2, 2, 41)
    g_pos, g_neg, scale = differential_pair(w, device)
    assert np.all(np.isin(g_pos, levels)) and np.all(np.isin(g_neg, levels))
    q = quantize_to_levels(w, device)
    assert np.all(np.sign(q) * np.sign(w) >= 0)  # never the wrong sign
    assert q[-1] == pytest.approx(2.0) and q[0] == pytest.approx(-2.0)  # the extremes exact
    step = np.max(np.diff(np.sort(levels))) / scale
    assert np.max(np.abs(q - w)) <= step / 2 + 1e-12


def test_stuck_at_faults() -> None:
    device = DeviceModel.preset("pvk-best")
    w = np.random.default_rng(0).normal(size=(20, 30))
    rng = np.random.default_rng(1)
    assert np.allclose(
        stuck_at_faults(w, device, StuckAtConfig(), rng), quantize_to_levels(w, device)
    )
    for faults in (StuckAtConfig(p_off=1.0), StuckAtConfig(p_on=1.0)):  # both cells equal
        assert np.allclose(stuck_at_faults(w, device, faults, rng), 0.0)
    some = stuck_at_faults(w, device, StuckAtConfig(p_off=0.1, p_on=0.05), rng)
    assert 0 < np.mean(~np.isclose(some, quantize_to_levels(w, device))) < 0.5
    with pytest.raises(NoiseConfigError, match="p_off"):
        StuckAtConfig(p_off=1.5).validate()


def test_noisy_evaluation_is_seeded_and_exact_at_sigma_zero() -> None:
    torch.manual_seed(0)
    model = NoisyMLP(NetworkSpec("mlp", 8, 3, (16,)))
    x = np.random.default_rng(0).random((50, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 50)
    off = accuracy_under_noise(model, x, y, WeightNoiseConfig("lognormal", 0.0), draws=3)
    assert off.mean == pytest.approx(clean_accuracy(model, x, y)) and off.std == 0
    noise = WeightNoiseConfig("lognormal", 1.0)
    a, b = noisy_logits(model, x, noise, 25, seed=7), noisy_logits(model, x, noise, 25, seed=7)
    assert torch.equal(a, b) and a.shape == (25, 50, 3)
    assert not torch.equal(a[0], a[1])  # a fresh draw per sample
    with pytest.raises(ValueError, match="draws"):
        noisy_logits(model, x, noise, 0)


def test_gain_calibration_compounds_per_layer_relative_to_the_training_gain() -> None:
    plain = NoisyMLP(NetworkSpec("mlp", 8, 3, (16, 16)))
    g = math.exp(0.8**2 / 2)  # E[exp(ε)] at σ = 0.8
    factors = gain_calibration(plain, WeightNoiseConfig("lognormal", 0.8))
    assert factors == pytest.approx([g, g**2, g**3])
    assert gain_calibration(plain, WeightNoiseConfig("lognormal", 0.0)) == [1.0, 1.0, 1.0]
    # Trained under log-normal noise of σ = 1: its biases already match that gain.
    trained = NoisyMLP(NetworkSpec("mlp", 8, 3, (16,), train_noise=WeightNoiseConfig(sigma=1.0)))
    assert gain_calibration(trained, WeightNoiseConfig("lognormal", 1.0)) == pytest.approx([1, 1])
    shrink = math.exp(-0.5)
    assert gain_calibration(trained, WeightNoiseConfig("lognormal", 0.0)) == pytest.approx(
        [shrink, shrink**2]
    )


def test_calibrated_biases_keep_the_mean_logit_in_step_and_are_restored() -> None:
    """One linear layer: E[noisy logit] = g·w·x + b, so only the calibrated bias (g·b) gives
    g × the clean logit; outside the block the biases are bit-for-bit what they were."""
    torch.manual_seed(0)
    model = NoisyMLP(NetworkSpec("mlp", 8, 3, (), train_noise=None))
    layer = model.linear_layers()[0]
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([2.0, -1.5, 1.0]))
    before = layer.bias.detach().clone()
    x = np.random.default_rng(0).random((4, 8)).astype(np.float32)
    noise = WeightNoiseConfig("lognormal", 0.5)
    g = math.exp(0.5**2 / 2)
    clean = model(torch.as_tensor(x)).detach()
    on = noisy_logits(model, x, noise, 20_000, seed=3, calibrate=True).mean(0)
    off = noisy_logits(model, x, noise, 20_000, seed=3).mean(0)
    assert torch.allclose(on, g * clean, atol=0.02)
    assert not torch.allclose(off, g * clean, atol=0.2)  # the exact bias lags the gain
    assert torch.equal(layer.bias.detach(), before)
    with calibrated(model, noise) as factors:
        assert factors == pytest.approx([g])
        assert torch.allclose(layer.bias.detach(), g * before)
    assert torch.equal(layer.bias.detach(), before)
