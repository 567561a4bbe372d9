"""Cell physics and crossbar electrics of the emulated board."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.cells import STUCK_HIGH, STUCK_LOW
from xbar.emulator.crossbar import DRIVEN, FLOAT, TIA, ArrayNetwork
from xbar.emulator.parts import DAC_BAUD, dac_word, switch_frame

CS_DAC, CS_SW = (5, 6, 7), 9
QUIET = NoiseConfig.off()


@pytest.fixture(scope="module")
def device():
    from xbar.training.devices.device_model import DeviceModel

    return DeviceModel.preset("pvk-median")


def set_lines(board: BoardModel, volts: dict[int, float], ground: frozenset[int] = frozenset()):
    """Drive lines (DAC value first, then switches), as the firmware must."""
    for line, v in volts.items():
        code = round((v + 10.0) * 65536 / 20.0)
        chip, ch = divmod(line, 8)
        board.pin_write(CS_DAC[chip], 0)
        board.spi_transfer(0, dac_word(0x3, ch, code).to_bytes(3, "big"), DAC_BAUD)
        board.pin_write(CS_DAC[chip], 1)
    closed = np.zeros(64, dtype=bool)
    for line in volts:
        closed[3 * line] = True
    for line in ground:
        closed[3 * line + 2] = True
    board.pin_write(CS_SW, 0)
    board.spi_transfer(0, switch_frame(8, closed), DAC_BAUD)
    board.pin_write(CS_SW, 1)


def release(board: BoardModel) -> None:
    set_lines(board, {})


def pulse(board, row, col, volts, width_us, half=True):
    """A V/2-scheme pulse on cell (row, col): others at V/2 (or floating)."""
    lines = {row: volts}
    if half:
        lines.update({r: volts / 2 for r in range(10) if r != row})
        lines.update({10 + c: volts / 2 for c in range(10) if c != col})
    set_lines(board, lines, ground=frozenset({10 + col}))
    board.sleep_us(width_us)
    release(board)


def test_set_moves_up_toward_level_and_saturates(device):
    board = BoardModel("xbar-10x10-passive", seed=0, device=device, noise=QUIET)
    g0 = board.conductances(0)[2, 3]
    history = []
    for _ in range(12):
        pulse(board, 2, 3, 5.0, 50)
        history.append(board.conductances(0)[2, 3])
    assert history[0] > g0
    assert np.all(np.diff(history) >= 0)
    target = np.interp(5.0, device.level_voltages, device.level_conductances)
    assert history[-1] == pytest.approx(target, rel=0.02)  # saturates at level(5 V)
    higher = BoardModel("xbar-10x10-passive", seed=0, device=device, noise=QUIET)
    pulse(higher, 2, 3, 5.8, 50)
    assert higher.conductances(0)[2, 3] > history[0]  # amplitude-dependent


def test_reset_moves_down_and_is_slower(device):
    board = BoardModel("xbar-10x10-passive", seed=0, device=device, noise=QUIET)
    g = np.full((10, 10), device.g_max)
    board.set_conductances(0, g)
    pulse(board, 1, 1, -5.0, 20)
    down = device.g_max - board.conductances(0)[1, 1]
    fresh = BoardModel("xbar-10x10-passive", seed=0, device=device, noise=QUIET)
    pulse(fresh, 1, 1, 5.0, 20)
    up = fresh.conductances(0)[1, 1] - device.g_min
    assert down > 0 and up > 0
    window = device.g_max - device.g_min
    assert down / window < up / (
        np.interp(5.0, device.level_voltages, device.level_conductances) - device.g_min
    )


def test_half_select_disturb_switchable(device):
    for half_select in (True, False):
        noise = NoiseConfig(**{**QUIET.__dict__, "half_select": half_select})
        board = BoardModel("xbar-10x10-passive", seed=0, device=device, noise=noise)
        board.set_conductances(0, np.full((10, 10), device.g_max))
        for _ in range(5):
            pulse(board, 4, 4, -6.0, 100)
        g = board.conductances(0)
        assert g[4, 4] < 0.8 * device.g_max
        neighbours = np.array([g[4, 0], g[0, 4]])  # V/2 on the selected row and column
        far = g[0, 0]  # 0 V
        assert far == device.g_max
        if half_select:
            assert (neighbours < device.g_max).all()
        else:
            assert (neighbours == device.g_max).all()


def test_reads_never_disturb(device):
    board = BoardModel("xbar-10x10-passive", seed=0, device=device, noise=NoiseConfig())
    before = board.conductances(0)
    set_lines(board, {r: 0.3 for r in range(10)}, ground=frozenset(range(10, 20)))
    board.sleep_us(10_000)
    release(board)
    assert np.array_equal(board.conductances(0), before)


def test_c2c_spread_matches_device_sigma(device):
    logs = []
    for seed in range(150):
        board = BoardModel(
            "xbar-10x10",
            seed=seed,
            device=device,
            noise=NoiseConfig(**{**QUIET.__dict__, "c2c": True}),
        )
        pulse(board, 0, 0, 6.5, 200, half=False)  # f ≈ 1: full σ
        logs.append(np.log(board.conductances(0)[0, 0]))
    spread = np.std(logs)
    # Clipping at the window edges narrows it; the device σ bounds it from above.
    assert 0.4 * device.sigma_c2c < spread <= 1.1 * device.sigma_c2c


def test_stuck_faults_and_d2d(device):
    noise = NoiseConfig(**{**QUIET.__dict__, "stuck_rate": 0.2, "d2d": True})
    board = BoardModel("xbar-4x64", seed=5, device=device, noise=noise)
    stuck = board.cells.stuck
    rate = np.mean(stuck != 0)
    assert 0.18 < rate < 0.22
    assert np.mean(stuck == STUCK_LOW) == pytest.approx(np.mean(stuck == STUCK_HIGH), abs=0.02)
    assert np.std(np.log(board.cells.g_min)) > 0.05
    assert np.all(board.cells.g_prog[stuck == STUCK_HIGH] == board.cells.g_max[stuck == STUCK_HIGH])
    board.set_conductances(0, np.full((64, 64), device.g_max))
    assert np.all(
        board.cells.g_prog[0][stuck[0] == STUCK_LOW] == board.cells.g_min[0][stuck[0] == STUCK_LOW]
    )


def test_drift_relaxes_toward_g_min(device):
    noise = NoiseConfig(**{**QUIET.__dict__, "drift_nu": 0.05})
    board = BoardModel("xbar-10x10", seed=0, device=device, noise=noise)
    board.set_conductances(0, np.full((10, 10), device.g_max))
    g0 = board.conductances(0)[0, 0]
    board.sleep_us(10_000_000)  # 10 s of virtual time
    g1 = board.conductances(0)[0, 0]
    assert device.g_min < g1 < g0
    expect = device.g_min + (g0 - device.g_min) * (1 + 10.0) ** -0.05
    assert g1 == pytest.approx(expect, rel=1e-3)


def test_wear_shrinks_the_window(device):
    noise = NoiseConfig(**{**QUIET.__dict__, "wear": True})
    board = BoardModel("xbar-10x10", seed=0, device=device, noise=noise)
    board.cells.pulses[0, 0, 0] = int(board.physics.endurance)
    hi = board.cells.window_max()[0]
    assert hi[0, 0] == pytest.approx(device.g_min + (device.g_max - device.g_min) / 2)
    assert hi[1, 1] == device.g_max


# -- electrics -----------------------------------------------------------------------------


def reference_currents(g, modes, v):
    """Independent ideal-wire solve: KCL on the floating lines only."""
    rows, cols = g.shape
    n = rows + cols
    lap = np.zeros((n, n))
    for r in range(rows):
        for c in range(cols):
            a, b = r, rows + c
            lap[a, a] += g[r, c]
            lap[b, b] += g[r, c]
            lap[a, b] -= g[r, c]
            lap[b, a] -= g[r, c]
    fixed = modes != FLOAT
    x = np.where(fixed, v, 0.0)
    free = ~fixed
    if free.any():
        a = lap[np.ix_(free, free)] + 1e-12 * np.eye(free.sum())
        x[free] = np.linalg.solve(a, -lap[np.ix_(free, fixed)] @ x[fixed])
    return -(lap @ x), x  # current each line sinks (into its TIA or source), potentials


@given(
    st.integers(0, 10**6), st.lists(st.sampled_from([FLOAT, DRIVEN, TIA]), min_size=12, max_size=12)
)
def test_passive_network_matches_kcl_reference(seed, mode_list):
    rng = np.random.default_rng(seed)
    g = rng.uniform(1e-7, 1e-5, (5, 7))
    modes = np.array(mode_list, dtype=np.int8)
    modes[:5][modes[:5] == TIA] = DRIVEN  # rows have no TIA
    v = np.where(modes == DRIVEN, rng.uniform(-1, 1, 12), 0.0)
    net = ArrayNetwork(5, 7, passive=True, r_wire=0, r_switch=0, r_access=0, g_leak=1e-12)
    op = net.operator(g, modes)
    sunk, x = reference_currents(g, modes, v)
    tia = op.tia @ v
    for line in np.flatnonzero(modes == TIA):
        assert tia[line] == pytest.approx(sunk[line], rel=1e-9, abs=1e-15)
    cell_v = (op.cell_v @ v).reshape(5, 7)
    assert np.allclose(cell_v, x[:5, None] - x[None, 5:], atol=1e-9)


def test_sneak_paths_passive_but_not_1t1r(device):
    g = np.random.default_rng(0).uniform(device.g_min, device.g_max, (10, 10))
    modes = np.full(20, FLOAT, dtype=np.int8)
    modes[0] = DRIVEN
    modes[10] = TIA
    modes[11] = DRIVEN  # another column driven at 0 V... and one at -0.2 V
    modes[12] = DRIVEN
    v = np.zeros(20)
    v[0], v[12] = 0.2, -0.2
    out = {}
    for passive in (True, False):
        net = ArrayNetwork(10, 10, passive, 0, 0, 0, 1e-12)
        out[passive] = (net.operator(g, modes).tia @ v)[10]
    assert out[False] == pytest.approx(0.2 * g[0, 0], rel=1e-9)  # 1T1R: only the cell
    assert out[True] != pytest.approx(0.2 * g[0, 0], rel=1e-3)  # passive: sneak currents


def test_ir_drop_lowers_column_currents_and_operator_is_cached():
    g = np.full((64, 64), 1e-4)
    modes = np.array([DRIVEN] * 64 + [TIA] * 64, dtype=np.int8)
    v = np.r_[np.full(64, 0.2), np.zeros(64)]
    ideal = ArrayNetwork(64, 64, True, 0, 0, 0, 1e-12).operator(g, modes).tia @ v
    net = ArrayNetwork(64, 64, True, 2.0, 2.5, 0, 1e-12)
    op = net.operator(g, modes, key=("a", 0))
    drop = op.tia @ v
    assert ideal[64] == pytest.approx(64 * 0.2 * 1e-4)
    assert (drop[64:] < ideal[64:]).all() and (drop[64:] > 0.5 * ideal[64:]).all()
    # Far columns lose more than near ones.
    assert drop[64] > drop[127]
    # Conservation: sources deliver what the TIAs sink (leakage aside).
    src = op.src @ v
    assert src[:64].sum() == pytest.approx(drop[64:].sum(), rel=1e-6)
    assert net.operator(g, modes, key=("a", 0)) is op
    assert net.solves == 1
