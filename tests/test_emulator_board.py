"""Board model: ideal MVMs, energy accounting, virtual time, determinism, profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import (
    PROFILES,
    BoardProfile,
    NoiseConfig,
    ProfileError,
    get_profile,
)
from xbar.emulator.clock import CYCLE_COSTS, Clock, load_cycle_costs
from xbar.emulator.mvm_driver import MvmDriver
from xbar.emulator.parts import TIA_RF, adc_codes, line_volts

ADC_LSB = 20.48 / 65536


@pytest.fixture(scope="module")
def device():
    from xbar.training.devices.device_model import DeviceModel

    return DeviceModel.preset("pvk-median")


def ready(device, profile="xbar-10x10", noise=None, seed=0, gain=3):
    board = BoardModel(
        profile, seed=seed, device=device, noise=NoiseConfig.off() if noise is None else noise
    )
    driver = MvmDriver(board, gain=gain)
    driver.setup()
    return board, driver


def ideal_codes(g: np.ndarray, codes: np.ndarray, rf: float) -> np.ndarray:
    current = line_volts(codes) @ g
    return adc_codes(-current * rf, -10.24, 10.24)


@given(
    st.sampled_from(["xbar-10x10", "xbar-10x10-passive"]),
    st.integers(0, 2**31 - 1),
    st.lists(st.integers(0, 255), min_size=10, max_size=10),
)
def test_noise_off_mvm_is_the_ideal_product(device, profile, seed, x):
    board, driver = ready(device, profile)
    rng = np.random.default_rng(seed)
    g = rng.uniform(device.g_min, device.g_max, (10, 10))
    board.set_conductances(0, g)
    codes = 32768 + 4 * np.asarray(x)
    out = driver.mvm(0, codes)
    expect = ideal_codes(board.conductances(0), codes, TIA_RF[3])
    assert np.array_equal(out, expect)
    # Within quantisation of the true product.
    recovered = -(out - 32768) * ADC_LSB / TIA_RF[3]
    assert np.abs(recovered - line_volts(codes) @ g).max() <= ADC_LSB / TIA_RF[3] / 2 + 1e-18


def test_mvm_on_large_profiles(device):
    for name in ("xbar-1x32", "xbar-4x64"):
        board, driver = ready(device, name)
        p = board.profile
        rng = np.random.default_rng(1)
        a = p.arrays - 1
        g = rng.uniform(device.g_min, device.g_max / 4, (p.rows, p.cols))
        board.set_conductances(a, g)
        codes = 32768 + rng.integers(0, 64, p.rows)
        assert np.array_equal(driver.mvm(a, codes), ideal_codes(g, codes, TIA_RF[3]))


def test_array_energy_is_sum_v2_g_t(device):
    board, driver = ready(device)
    rng = np.random.default_rng(3)
    g = rng.uniform(device.g_min, device.g_max, (10, 10))
    board.set_conductances(0, g)
    codes = 32768 + 4 * rng.integers(0, 256, 10)
    driver.mvm(0, codes)  # rows now held at the input voltages
    mark = board.ledger.mark()
    hold_us = 250
    board.sleep_us(hold_us)
    spent = board.ledger.since(mark)
    v = line_volts(codes)
    analytic = float(np.sum(v[:, None] ** 2 * g) * hold_us * 1e-6)
    assert spent["array"] == pytest.approx(analytic, rel=1e-12)
    assert spent["array_wiring"] == 0.0


def test_ledger_parts_sum_to_total_and_are_additive(device):
    board, driver = ready(device, noise=NoiseConfig())
    board.set_conductances(0, np.full((10, 10), device.g_max / 2))
    m0 = board.ledger.mark()
    driver.mvm(0, np.full(10, 33000))
    m1 = board.ledger.mark()
    driver.mvm(0, np.full(10, 33100))
    board.link(100)
    board.charge("mac", 1000)
    first, second = board.ledger.since(m0), board.ledger.since(m1)
    breakdown = board.ledger.breakdown()
    assert sum(breakdown.values()) == pytest.approx(board.ledger.total(), rel=1e-15)
    assert all(v >= 0 for v in breakdown.values())
    assert all(v >= 0 for v in second.values())
    for k in first:
        assert first[k] == pytest.approx(
            (m1.get(k, 0) - m0.get(k, 0)) + second[k], rel=1e-12, abs=1e-30
        )
    assert second["link"] == pytest.approx(100 * board.power.link_byte_j)


def test_mcu_idle_and_active_power(device):
    board = BoardModel(device=device, noise=NoiseConfig.off())
    m = board.ledger.mark()
    board.sleep_us(1000)
    idle = board.ledger.since(m)["mcu"]
    m = board.ledger.mark()
    board.charge("bytecode", 125_000 // CYCLE_COSTS["bytecode"])
    active = board.ledger.since(m)["mcu"]
    assert idle == pytest.approx(board.power.mcu_idle_w * 1e-3)
    assert active == pytest.approx(board.power.mcu_active_w * 1e-3, rel=1e-3)
    assert board.clock.idle_cycles == 125_000


def test_deterministic_per_seed(device):
    def run(seed):
        board, driver = ready(device, "xbar-10x10-passive", noise=NoiseConfig(), seed=seed)
        rng = np.random.default_rng(0)
        out = [driver.mvm(0, 32768 + 4 * rng.integers(0, 256, 10)) for _ in range(5)]
        return np.array(out), board.clock.cycles, board.ledger.breakdown(), board.conductances(0)

    a, b, c = run(7), run(7), run(8)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert np.array_equal(a[3], b[3])
    assert not np.array_equal(a[3], c[3])


def test_clock_and_cycle_costs(tmp_path):
    clock = Clock(125_000_000)
    clock.advance_seconds(5e-6)
    assert clock.cycles == 625 and clock.seconds == pytest.approx(5e-6)
    with pytest.raises(ValueError):
        clock.advance(-1)
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"mac": 3, "custom": 10}))
    costs = load_cycle_costs(path)
    assert costs["mac"] == 3 and costs["custom"] == 10 and costs["relu"] == CYCLE_COSTS["relu"]
    path.write_text(json.dumps({"mac": -1}))
    with pytest.raises(ValueError, match="mac"):
        load_cycle_costs(path)
    board = BoardModel(cycle_costs=costs, noise=NoiseConfig.off())
    board.charge("custom", 4)
    assert board.clock.cycles == 40
    with pytest.raises(ValueError, match="unknown cycle-cost op"):
        board.charge("nope")


def test_profiles():
    ref = get_profile("xbar-10x10")
    assert (ref.lines, ref.dac_chips, ref.sw_chips, ref.adc_chips) == (20, 3, 8, 2)
    assert get_profile("xbar-10x10-passive").cell == "0T1R"
    big = get_profile("xbar-4x64")
    assert big.dac_selects <= 3 and big.adc_selects <= 5 and big.lines == 512
    tiled = get_profile("xbar-64x10x10")
    assert tiled.arrays == 64 and tiled.dac_selects == 3
    generic = get_profile("xbar-200x10x10")
    assert generic.arrays == 200 and generic.adc_selects <= 5
    for p in PROFILES.values():
        p.validate()
    with pytest.raises(ProfileError, match="unknown board profile"):
        get_profile("xbar-nope")
    with pytest.raises(ProfileError, match="chip selects"):
        BoardProfile("bad", 4, 64, 64, dac_chain=1)


def test_noise_config_round_trip():
    cfg = NoiseConfig(read_sigma=0.02, drift_nu=0.0)
    assert NoiseConfig.from_json(cfg.to_json()) == cfg
    off = NoiseConfig.preset("off")
    assert not off.read_noise_on and not off.c2c and not off.ir_drop
    with pytest.raises(ProfileError, match="unknown field"):
        NoiseConfig.from_json('{"bogus": 1}')
    with pytest.raises(ProfileError, match="stuck_rate"):
        NoiseConfig(stuck_rate=2.0)
