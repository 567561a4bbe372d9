"""The batch path reproduces the byte-level path: codes, cycles, energy, diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xbar.emulator.batch import BatchSession, batch_mvm
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.cells import CellPhysics
from xbar.emulator.mvm_driver import MvmDriver
from xbar.emulator.mvm_schedule import ChargeStep, MvmStep, run_bytes


@pytest.fixture(scope="module")
def device():
    from xbar.training.devices.device_model import DeviceModel

    return DeviceModel.preset("pvk-median")


def programmed(device, profile, noise, seed=11, physics=None):
    board = BoardModel(profile, seed=seed, device=device, noise=noise, physics=physics)
    MvmDriver(board).setup()
    rng = np.random.default_rng(seed)
    p = board.profile
    for a in range(p.arrays):
        board.set_conductances(a, rng.uniform(device.g_min, device.g_max, (p.rows, p.cols)))
    return board


def assert_same_board(a: BoardModel, b: BoardModel) -> None:
    assert a.clock.cycles == b.clock.cycles
    assert a.clock.idle_cycles == b.clock.idle_cycles
    ea, eb = a.ledger.breakdown(), b.ledger.breakdown()
    assert ea.keys() == eb.keys()
    for k in ea:
        assert eb[k] == pytest.approx(ea[k], rel=1e-9, abs=1e-30), k
    da = {k: v for k, v in a.diagnostics.items() if k != "operator_solves"}
    db = {k: v for k, v in b.diagnostics.items() if k != "operator_solves"}
    assert da == db
    assert np.array_equal(a.adc_samples, b.adc_samples)


NOISES = {"off": NoiseConfig.off(), "default": NoiseConfig(drift_nu=0.0), "drift": NoiseConfig()}


@settings(max_examples=40)
@given(
    st.sampled_from(["xbar-10x10", "xbar-10x10-passive"]),
    st.sampled_from(sorted(NOISES)),
    st.integers(1, 12),
    st.integers(0, 2**32 - 1),
)
def test_batch_equals_byte_level(device, profile, noise_name, n, seed):
    noise = NOISES[noise_name]
    # A short drift step so a batch crosses several drift epochs.
    physics = CellPhysics(drift_quantum=2e-4)
    byte_board = programmed(device, profile, noise, physics=physics)
    batch_board = programmed(device, profile, noise, physics=physics)
    codes = 32768 + 4 * np.random.default_rng(seed).integers(0, 256, (n, 10))
    expect = run_bytes(byte_board, [MvmStep(0)], [codes])[0]
    got = batch_mvm(batch_board, 0, codes, exact=True)
    assert np.array_equal(got, expect)
    assert_same_board(byte_board, batch_board)
    # The boards stay in step afterwards, whichever path runs next.
    more = codes[::-1]
    assert np.array_equal(
        run_bytes(byte_board, [MvmStep(0)], [more])[0],
        run_bytes(batch_board, [MvmStep(0)], [more])[0],
    )
    assert_same_board(byte_board, batch_board)


def test_schedule_with_several_arrays_and_computation(device):
    noise = NoiseConfig(drift_nu=0.0)
    steps = [MvmStep(3), ChargeStep("mac", 100), MvmStep(0), ChargeStep("relu", 10), MvmStep(3)]
    byte_board = programmed(device, "xbar-4x10x10", noise)
    batch_board = programmed(device, "xbar-4x10x10", noise)
    rng = np.random.default_rng(2)
    n = 6
    first = 32768 + 4 * rng.integers(0, 256, (n, 10))
    expect = run_bytes(byte_board, steps, [first, first[:, ::-1], first // 2 + 16384])
    session = BatchSession(batch_board, steps, n, exact=True)
    out0 = session.mvm(first)
    out1 = session.mvm(first[:, ::-1])
    out2 = session.mvm(first // 2 + 16384)
    session.finish()
    for got, want in zip((out0, out1, out2), expect, strict=True):
        assert np.array_equal(got, want)
    assert_same_board(byte_board, batch_board)


def test_layer_inputs_may_depend_on_earlier_outputs(device):
    board = programmed(device, "xbar-2x10x10", NoiseConfig.off())
    session = BatchSession(board, [MvmStep(0), MvmStep(1)], 4)
    hidden = session.mvm(32768 + 4 * np.arange(40).reshape(4, 10))
    session.mvm(32768 + np.clip(32768 - hidden, 0, 255))
    session.finish()
    with pytest.raises(RuntimeError, match="no MVM step left"):
        session.mvm(hidden)


def test_fast_mode_agrees_with_exact(device):
    a = programmed(device, "xbar-10x10-passive", NoiseConfig())
    b = programmed(device, "xbar-10x10-passive", NoiseConfig())
    codes = 32768 + 4 * np.random.default_rng(0).integers(0, 256, (500, 10))
    fast = batch_mvm(a, 0, codes)
    exact = batch_mvm(b, 0, codes, exact=True)
    assert np.abs(fast - exact).max() <= 1
    assert np.mean(fast == exact) > 0.999


def test_batch_refuses_what_it_cannot_reproduce(device):
    board = programmed(device, "xbar-10x10", NoiseConfig.off())
    with pytest.raises(ValueError, match="disturb floor"):
        batch_mvm(board, 0, np.full((2, 10), 65000))
    with pytest.raises(ValueError, match="codes must be"):
        batch_mvm(board, 0, np.full((2, 9), 32768))
    bare = BoardModel("xbar-10x10", device=device, noise=NoiseConfig.off())
    with pytest.raises(RuntimeError, match="not switched for reading"):
        batch_mvm(bare, 0, np.full((2, 10), 32768))


def test_grouped_steps_sharing_an_input(device):
    noise = NoiseConfig(drift_nu=0.0)
    steps = [MvmStep(0), MvmStep(1), ChargeStep("add", 10), MvmStep(2), MvmStep(3)]
    byte_board = programmed(device, "xbar-4x10x10-passive", noise)
    batch_board = programmed(device, "xbar-4x10x10-passive", noise)
    n = 50
    rng = np.random.default_rng(4)
    shared = 32768 + 4 * rng.integers(0, 256, (n, 10))
    other = 32768 + 4 * rng.integers(0, 256, (n, 10))
    inputs = [shared, shared, other, shared]
    expect = run_bytes(byte_board, steps, inputs)
    session = BatchSession(batch_board, steps, n)
    got = session.mvms(inputs)
    session.finish()
    for g, e in zip(got, expect, strict=True):
        assert np.abs(g - e).max() <= 1 and np.mean(g == e) > 0.99
    assert_same_board(byte_board, batch_board)


def test_counter_based_noise_is_pure_and_normal():
    from xbar.emulator.board_model import sample_normals

    chips = np.arange(12)
    counts = np.arange(12 * 4000).reshape(4000, 12)
    z = sample_normals(99, chips, counts)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z > 1.96) - 0.025) < 0.003
    rng = np.random.default_rng(0)
    for i, k in zip(rng.integers(0, 4000, 200), rng.integers(0, 12, 200), strict=True):
        assert sample_normals(99, int(k), int(counts[i, k]))[0] == z[i, k]
    assert not np.array_equal(sample_normals(98, chips, counts[:1]), z[:1])


def grouped_run(device, inputs, block=None, monkeypatch=None):
    """Steps 0, 1 on a shared input and 2 on another (grouped path), and the board."""
    if block is not None:
        import xbar.emulator.batch as batch_module

        monkeypatch.setattr(batch_module, "BLOCK", block)
    board = programmed(device, "xbar-4x10x10-passive", NoiseConfig(drift_nu=0.0))
    session = BatchSession(board, STEPS_GROUPED, len(inputs[0]))
    got = session.mvms(inputs)
    session.finish()
    return got, board


STEPS_GROUPED = [MvmStep(0), MvmStep(1), ChargeStep("add", 10), MvmStep(2)]


def saturating_inputs(n):
    """Inputs driving some conversions past the TIA's rails (12 codes per unit)."""
    rng = np.random.default_rng(5)
    loud = 32768 + 12 * rng.integers(0, 256, (n, 10))
    quiet = 32768 + 4 * rng.integers(0, 256, (n, 10))
    return [loud, loud, quiet]


def test_grouped_saturations_match_byte_level(device):
    inputs = saturating_inputs(12)
    byte_board = programmed(device, "xbar-4x10x10-passive", NoiseConfig(drift_nu=0.0))
    expect = run_bytes(byte_board, STEPS_GROUPED, inputs)
    got, batch_board = grouped_run(device, inputs)
    assert byte_board.diagnostics["tia_saturations"] > 0
    for g, e in zip(got, expect, strict=True):
        assert np.abs(g - e).max() <= 1 and np.mean(g == e) > 0.99
    assert_same_board(byte_board, batch_board)


def test_block_size_does_not_change_results(device, monkeypatch):
    """The grouped path's blocks of rows are a matter of speed only: codes, saturation
    counts and board state are the same whatever the block size."""
    inputs = saturating_inputs(300)
    whole, board = grouped_run(device, inputs)
    blocked, blocked_board = grouped_run(device, inputs, block=64, monkeypatch=monkeypatch)
    assert board.diagnostics["tia_saturations"] > 0
    for a, b in zip(whole, blocked, strict=True):
        assert a.shape == (300, 10) and np.array_equal(a, b)
    assert_same_board(board, blocked_board)


def test_last_changes_against_a_full_scan():
    from xbar.emulator.batch_ledger import _last_changes

    rng = np.random.default_rng(3)
    for n in (1, 5, 64, 65, 200):
        # Few distinct values, some columns constant: changes anywhere or nowhere.
        codes = rng.integers(0, 2, (n, 6)) * (rng.random((n, 6)) < 0.05)
        codes[:, 0] = 7
        before = rng.integers(0, 2, 6)
        history = np.vstack([before, codes])
        changed = history[1:] != history[:-1]
        want = [
            int(np.flatnonzero(changed[:, r])[-1]) if changed[:, r].any() else -1 for r in range(6)
        ]
        assert _last_changes(before, codes).tolist() == want
