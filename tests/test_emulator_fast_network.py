"""The fast network path (one sparse LU per state, solves for the applied voltages only)
agrees with the full operator, and keeps the byte-level and batch paths bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
from xbar.emulator.batch import batch_mvm
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.crossbar import DRIVEN, FLOAT, TIA, ArrayNetwork, FullState, SparseState
from xbar.emulator.mvm_driver import MvmDriver
from xbar.emulator.mvm_schedule import MvmStep, run_bytes

N = 32  # 2·32·32 ladder nodes: solved by sparse LU (above DENSE_LIMIT)


def network(passive: bool, fast: bool) -> ArrayNetwork:
    net = ArrayNetwork(
        N, N, passive, r_wire=2.0, r_switch=2.5, r_access=0.0 if passive else 1000.0, g_leak=1e-12
    )
    net.fast = fast
    return net


def cases(passive: bool, rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, modes, v): a read (two rows driven, columns on TIAs, the rest grounded)
    and the firmware's write-pulse scheme for one cell."""
    read = np.full(2 * N, DRIVEN, dtype=np.int8)
    read[N:] = TIA
    v_read = np.zeros(2 * N)
    v_read[[3, 17]] = rng.uniform(0.05, 0.2, 2)
    pulse = np.full(2 * N, DRIVEN, dtype=np.int8)
    v_pulse = np.zeros(2 * N)
    if passive:  # row +V/2, column -V/2, every other line grounded
        v_pulse[5], v_pulse[N + 9] = 1.5, -1.5
    else:  # other rows float, the other columns follow the row
        pulse[:N] = FLOAT
        pulse[5] = DRIVEN
        v_pulse[5] = 1.5
        v_pulse[N:] = 1.5
        v_pulse[N + 9] = -1.5
    return [("read", read, v_read), ("pulse", pulse, v_pulse)]


@pytest.mark.parametrize("passive", [True, False], ids=["0T1R", "1T1R"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_state_matches_full_operator(passive: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = rng.uniform(1e-8, 2e-6, (N, N))
    for name, modes, v in cases(passive, rng):
        ref = network(passive, fast=False).operator(g, modes)
        net = network(passive, fast=True)
        state = net.state(g, modes, key=("a", 0))
        assert isinstance(state, SparseState), name
        vcell, p_cells, p_source = state.apply(v)
        want = ref.cell_v @ v
        assert np.abs(vcell - want).max() <= 1e-12 * np.abs(want).max(), name
        assert p_cells == pytest.approx(ref.cell_power(v), rel=1e-12), name
        # Source currents are differences of nearly equal potentials across the source
        # resistance: ~1e-11 relative either way (the reference included).
        assert p_source == pytest.approx(ref.source_power(v), rel=1e-8), name
        assert net.solves == 1 and net.rhs_solves == 1
        for line in np.flatnonzero(modes == TIA):
            row = state.tia_row(int(line), v)
            current = (row * v).sum()
            assert current == pytest.approx((ref.tia[line] * v).sum(), rel=1e-11), (name, line)
        # The full operator of the same state reads the very numbers the samples read.
        op = net.operator(g, modes, key=("a", 0))
        assert net.solves == 1
        assert np.abs(op.cell_v - ref.cell_v).max() <= 1e-12 * np.abs(ref.cell_v).max()
        assert np.abs(op.tia - ref.tia).max() <= 1e-11 * np.abs(ref.tia).max(initial=1e-30)
        driven = np.flatnonzero(v)
        for line in np.flatnonzero(modes == TIA):
            assert np.array_equal(state.tia_row(int(line), v)[driven], op.tia[line, driven])
        assert net.state(g, modes, key=("a", 0)) is state  # cached per key
        # Solved afresh, uncached (as emulator.infer_batch does): the same bits again.
        assert np.array_equal(net.operator(g, modes).tia, op.tia)


def test_small_networks_keep_the_full_operator() -> None:
    g = np.full((10, 10), 1e-6)
    modes = np.array([DRIVEN] * 10 + [TIA] * 10, dtype=np.int8)
    net = ArrayNetwork(10, 10, False, 2.0, 2.5, 1000.0, 1e-12)
    state = net.state(g, modes, key=("a", 0))
    assert isinstance(state, FullState)
    assert state.op is net.operator(g, modes, key=("a", 0)) and net.solves == 1


def programmed(profile: str, noise: NoiseConfig, fast: bool = True) -> BoardModel:
    board = BoardModel(profile, seed=3, device="pvk-median", noise=noise)
    board.network.fast = fast
    MvmDriver(board).setup()
    rng = np.random.default_rng(3)
    p = board.profile
    for a in range(p.arrays):
        board.set_conductances(
            a, rng.uniform(board.device.g_min, board.device.g_max, (p.rows, p.cols))
        )
    return board


@pytest.mark.parametrize("profile", ["xbar-1x32", "xbar-1x32x32"])
def test_byte_level_equals_batch_on_a_sparse_network(profile: str) -> None:
    noise = NoiseConfig(drift_nu=0.0)
    byte_board, batch_board = programmed(profile, noise), programmed(profile, noise)
    codes = 32768 + 4 * np.random.default_rng(5).integers(0, 256, (3, 32))
    expect = run_bytes(byte_board, [MvmStep(0)], [codes])[0]
    assert np.array_equal(batch_mvm(batch_board, 0, codes, exact=True), expect)
    assert byte_board.network.rhs_solves < batch_board.network.rhs_solves  # used the fast path


@pytest.mark.parametrize("profile", ["xbar-1x32", "xbar-1x32x32"])
def test_board_fast_path_matches_reference(profile: str) -> None:
    """Byte-level MVMs on the same board with the fast path and with the full operator:
    the same codes and energy (within rounding), fewer right-hand sides solved."""
    noise = NoiseConfig(drift_nu=0.0)
    fast, ref = programmed(profile, noise), programmed(profile, noise, fast=False)
    codes = 32768 + 4 * np.random.default_rng(6).integers(0, 256, (3, 32))
    assert np.array_equal(
        run_bytes(fast, [MvmStep(0)], [codes])[0], run_bytes(ref, [MvmStep(0)], [codes])[0]
    )
    ea, eb = fast.ledger.breakdown(), ref.ledger.breakdown()
    assert ea.keys() == eb.keys()
    for k in ea:
        assert ea[k] == pytest.approx(eb[k], rel=1e-6, abs=1e-30), k
    np.testing.assert_allclose(fast._vcell, ref._vcell, rtol=0, atol=1e-12)
    assert fast.network.rhs_solves < ref.network.rhs_solves
