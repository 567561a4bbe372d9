"""The one noise model: its JSON round trip and validation, and that training's injection,
the evaluation draws and the emulator's cells all follow the same statistics."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.cells import CellArray, CellPhysics
from xbar.training.devices.device_model import DeviceModel
from xbar.training.noise import NoisyLinear, WeightNoiseConfig
from xbar.training.noise_model import (
    D2D_DEFAULT,
    DRIFT_NU,
    DRIFT_T0,
    READ_SIGMA,
    STUCK_RATE,
    DeviceNoise,
    Mapping,
    NoiseModel,
    NoiseModelError,
    Programming,
    parse_scheme,
    verify_programming,
)
from xbar.training.plan import level_steps

torch.set_num_threads(1)
DEVICE = DeviceModel.preset("pvk-median")
SCHEMES = ("paper", "paper:1.3", "open-loop", "verify", "verify:2")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_round_trip(scheme: str) -> None:
    model = NoiseModel.for_device(DEVICE, scheme)
    assert NoiseModel.from_json(model.to_json()) == model
    assert NoiseModel.from_dict(json.loads(model.to_json())).to_dict() == model.to_dict()
    assert model.programming.name == {"verify": "verify:0.5"}.get(scheme, scheme)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"device": {"sigma_c2c": -1}}, "noise model.device.sigma_c2c"),
        ({"device": {"g_max": 1e-9}}, "noise model.device.g_max"),
        ({"device": {"stuck_rate": 2}}, "noise model.device.stuck_rate"),
        ({"device": {"levels": 0}}, "noise model.device.levels"),
        ({"mapping": {"window": 0}}, "noise model.mapping.window"),
        ({"mapping": {"clip": float("nan")}}, "noise model.mapping.clip"),
        ({"programming": {"scheme": "magic"}}, "noise model.programming.scheme"),
        ({"programming": {"miss_rate": 1.5}}, "noise model.programming.miss_rate"),
        ({"programming": {"tolerance": -0.1}}, "noise model.programming.tolerance"),
        ({"age_s": -1}, "noise model.age_s"),
        ({"device": {"colour": "red"}}, "unknown field"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_bad_values_name_the_field(edit: dict, field: str) -> None:
    data = NoiseModel.for_device(DEVICE, "open-loop").to_dict()
    for key, value in edit.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    with pytest.raises(NoiseModelError, match=field):
        NoiseModel.from_dict(data)


@pytest.mark.parametrize("text", ["open-loop:1", "verify:x", "verify:-1", "closed", "paper:inf"])
def test_bad_scheme_names_are_refused(text: str) -> None:
    with pytest.raises(NoiseModelError, match="program scheme"):
        parse_scheme(text)


def test_verify_is_measured_or_says_it_is_a_placeholder() -> None:
    p = verify_programming("no-such-device", 1.0)
    assert p.source.startswith("placeholder") and p.residual_sigma == pytest.approx(
        1 / math.sqrt(3)
    )
    assert "placeholder" in NoiseModel(programming=p).label
    measured = verify_programming(DEVICE.name, 0.5)
    assert measured.source.startswith(("measured", "placeholder"))


def test_the_board_defaults_are_the_emulators() -> None:
    board, physics = NoiseConfig(), CellPhysics()
    assert (board.read_sigma, board.stuck_rate, board.drift_nu) == (
        READ_SIGMA,
        STUCK_RATE,
        DRIFT_NU,
    )
    assert (physics.d2d_default, physics.drift_t0) == (D2D_DEFAULT, DRIFT_T0)


def test_the_paper_scheme_is_the_papers_model() -> None:
    w = torch.randn(200, 200)
    model = NoiseModel.paper(0.8)
    a = model.perturb(w, torch.Generator().manual_seed(3))
    b = WeightNoiseConfig("lognormal", 0.8).perturb(w, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_the_mapping_quantises_to_the_plans_level_steps() -> None:
    model = NoiseModel.for_device(DEVICE, "verify")
    window = model.mapping.window
    g_top = DEVICE.g_min + window * (DEVICE.g_max - DEVICE.g_min)
    want = level_steps(DEVICE.level_conductances, DEVICE.g_min, g_top)
    assert model.mapping.steps(model.device).int().tolist() == want.tolist()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_injection_and_evaluation_draw_the_same_statistics(scheme: str) -> None:
    """Training's closed-form moments (what the moment-matched injection uses) against the
    mean and variance of the weights evaluation draws, and a noisy layer's outputs in
    training (moment matched) against its outputs with drawn weights."""
    torch.manual_seed(0)
    model = replace(NoiseModel.for_device(DEVICE, scheme), age_s=10.0)
    w = torch.randn(8, 32) * 0.1
    mean, var = model.weight_moments(w)
    gen = torch.Generator().manual_seed(1)
    agree(model.perturb(w.expand(20_000, 8, 32), gen), mean, var)
    # One layer: training outputs (moment matched) and outputs of drawn weights, both
    # against the output moments the weight moments give.
    layer = NoisyLinear(32, 8, train_noise=model)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.zero_()
    x = torch.rand(1, 32)
    out_mean, out_var = x @ mean.T, (x * x) @ var.T
    layer.train()
    with torch.no_grad():
        agree(layer(x.expand(20_000, 32)), out_mean, out_var)
        drawn = model.perturb(w.expand(20_000, 8, 32), gen)
        agree(torch.einsum("ni,noi->no", x.expand(20_000, 32), drawn), out_mean, out_var)


def agree(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Sample mean and variance within 5 standard errors of the expected ones (the
    variance's relative error is √((κ − 1)/n), κ the sample kurtosis: heavy tails count)."""
    n = samples.shape[0]
    assert torch.all((samples.mean(0) - mean).abs() <= 5 * (var / n).sqrt() + 1e-7)
    centred = samples - samples.mean(0)
    kurtosis = (centred**4).mean(0) / samples.var(0) ** 2
    assert torch.all((samples.var(0) / var - 1).abs() < 5 * ((kurtosis - 1) / n).sqrt() + 0.01)


def test_open_loop_draws_what_one_pulse_does_to_the_emulators_cells() -> None:
    """The emulator's cells, one long SET pulse each to a level of the device (no stuck
    cells, no read noise): the conductances reached have the distribution the noise model
    draws for open-loop programming to that level (two-sample KS test), including the cell
    windows' spread (d2d) and the clip at the window's edges."""
    shape = (1, 60, 60)
    noise = NoiseConfig(stuck_rate=0.0, drift_nu=0.0, wear=False, half_select=False)
    cells = CellArray(
        shape,
        DEVICE,
        noise,
        CellPhysics(),
        np.random.default_rng(1),
        np.random.default_rng(2),
    )
    for frac in (0.3, 0.8):
        cells.set_conductance(0, cells.g_min[0])
        volts = float(np.interp(frac, cells._level_frac, cells._level_v))
        cells.apply_pulse(0, np.full(shape[1:], volts), 1e3, 0.0, None)
        g_emulator = cells.g_prog[0].ravel()
        spec = NoiseModel(
            DeviceNoise.from_device(DEVICE, read_sigma=0.0, stuck_rate=0.0),
            Mapping(window=1.0, quantize=False),
            Programming("open-loop"),
        )
        o = spec.mapping.offset(spec.device)
        full = DEVICE.g_max - DEVICE.g_min
        a = torch.full((g_emulator.size,), o + frac, dtype=torch.float64)
        g_spec = spec._cell(a, o, o + 1.0, torch.Generator().manual_seed(3)).numpy() * full
        assert stats.ks_2samp(g_emulator, g_spec).pvalue > 0.01, frac
    # Sanity: the spread is the device's, not nothing.
    assert np.std(np.log(g_emulator)) > 0.3
