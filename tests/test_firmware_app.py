"""The firmware's command loop and safety on the in-test board stand-in (`FirmwareSim`):
error responses, parser robustness, safety limits on every path, LOAD/INFER against the
integer reference, write-verify."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_firmware_sim import FirmwareSim, SimTransport
from xbar.firmware import protocol as P
from xbar.host.board import Board, CrossbarModel, FirmwareError, TileLayer, plan_tiles

HARD_V_LINE = 4.0
HARD_V_READ = 0.5
ADC_LSB = 20.48 / 65536.0


def ask(sim: FirmwareSim, code: int, payload: bytes = b"", seq: int = 1) -> tuple[int, bytes]:
    """One request straight into the firmware; returns (response code, payload). A long
    command's BUSY frames (at most one per BUSY_MS of board time) come before its answer."""
    frames = P.Decoder().feed(sim.feed(P.encode(code, seq, payload)))
    frames = [f for f in frames if f[0] != P.BUSY | P.RESPONSE]
    assert len(frames) == 1, frames
    rcode, rseq, body = frames[0]
    assert rseq == seq
    return rcode, body


def expect_error(sim: FirmwareSim, code: int, payload: bytes, err: int) -> str:
    rcode, body = ask(sim, code, payload)
    assert rcode == P.ERROR, f"expected error {err}, got response 0x{rcode:02x}"
    e, cmd, reason = P.parse_error(body)
    assert (e, cmd) == (err, code), reason
    assert sim.board.idle_safe()
    return reason


@pytest.fixture
def sim() -> FirmwareSim:
    return FirmwareSim()


def test_hello_names_profile(sim: FirmwareSim) -> None:
    code, body = ask(sim, P.HELLO)
    assert code == P.HELLO | P.RESPONSE
    ver, *_fw, maxp = struct.unpack_from(P.HELLO_RESP, body)
    assert (ver, maxp) == (P.VERSION, P.MAX_PAYLOAD)
    assert body[struct.calcsize(P.HELLO_RESP) :] == b"xbar-10x10"


def test_boot_disables_ctrl_c_only_in_run_and_feeds_watchdog(sim: FirmwareSim) -> None:
    assert sim.wdt_timeout == 8000
    fed = sim.board.wdt_fed
    ask(sim, P.READ, struct.pack(P.READ_REQ, 0, P.READ_ARRAY, 0, 0, 0.1))
    assert sim.board.wdt_fed > fed  # fed per row while reading


def test_bad_crc_answered_with_error(sim: FirmwareSim) -> None:
    raw = bytearray(P.cobs_decode(P.encode(P.HELLO, 9)[:-1]))
    raw[-2] ^= 0xFF
    out = bytearray(len(raw) + 8)
    n = P.cobs_encode(raw, len(raw), out)
    frames = P.Decoder().feed(sim.feed(bytes(out[:n]) + b"\x00"))
    assert frames[0][0] == P.ERROR and frames[0][1] == 9
    assert P.parse_error(frames[0][2])[0] == P.E_CRC
    assert sim.app.dec.dropped == 1


@pytest.mark.parametrize(
    "code, payload, err",
    [
        (0x7E, b"", P.E_UNKNOWN),
        (P.HELLO, b"x", P.E_LENGTH),
        (P.READ, struct.pack(P.READ_REQ, 0, P.READ_CELL, 10, 0, 0.1), P.E_RANGE),
        (P.READ, struct.pack(P.READ_REQ, 1, P.READ_CELL, 0, 0, 0.1), P.E_RANGE),
        (P.READ, struct.pack(P.READ_REQ, 0, 7, 0, 0, 0.1), P.E_RANGE),
        (P.READ, struct.pack(P.READ_REQ, 0, P.READ_CELL, 0, 0, 0.0), P.E_RANGE),
        (P.READ, struct.pack(P.READ_REQ, 0, P.READ_ROW, 0, 0, 0.45), P.E_SAFETY),
        (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 0, 0, 9.0, 100), P.E_SAFETY),
        (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 0, 0, 2.0, 10_000_000), P.E_SAFETY),
        (P.PULSE, struct.pack(P.PULSE_REQ, 0, 3, 0, 0, 2.0, 100), P.E_RANGE),
        (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 0, 0, -1.0, 100), P.E_RANGE),
        (P.INFER, struct.pack(P.INFER_REQ, 0, 2) + b"\x01\x02", P.E_STATE),
        (P.INFER_STREAM, struct.pack(P.STREAM_REQ, 1, 0, 1) + b"\x01", P.E_STATE),
        (P.LOAD_CHUNK, struct.pack(P.LOAD_CHUNK_REQ, 0) + b"abc", P.E_STATE),
        (P.LOAD_END, b"", P.E_STATE),
        (P.LOAD_BEGIN, struct.pack(P.LOAD_BEGIN_REQ, 1 << 20, 0), P.E_MODEL),
        (P.SAFETY, struct.pack(P.SAFETY_REQ, 5, 0, 0, 0, 0), P.E_RANGE),
    ],
)
def test_refusals(sim: FirmwareSim, code: int, payload: bytes, err: int) -> None:
    reason = expect_error(sim, code, payload, err)
    assert reason  # every refusal says why
    assert ask(sim, P.HELLO, seq=2)[0] == P.HELLO | P.RESPONSE


def test_compliance_refuses_pulse(sim: FirmwareSim) -> None:
    sim.board.g[0, 1, 1] = 2e-6
    ask(sim, P.SAFETY, struct.pack(P.SAFETY_REQ, 1, 0.3, 4.0, 100_000, 1e-6))
    reason = expect_error(
        sim, P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, 100), P.E_COMPLIANCE
    )
    assert "(1, 1)" in reason
    assert sim.app.hal.pulses == 0


def test_safety_set_clamps_to_hard_maxima(sim: FirmwareSim) -> None:
    _, body = ask(sim, P.SAFETY, struct.pack(P.SAFETY_REQ, 1, 9.0, 99.0, 10**8, 1.0))
    lim = struct.unpack_from(P.SAFETY_LIMITS, body, 0)
    hard = struct.unpack_from(P.SAFETY_LIMITS, body, struct.calcsize(P.SAFETY_LIMITS))
    assert lim == pytest.approx(hard)
    assert lim[0] == pytest.approx(HARD_V_READ) and lim[1] == pytest.approx(HARD_V_LINE)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_leave_parser_alive(garbage: bytes) -> None:
    # CR, Ctrl-C at a frame boundary is not garbage but the terminal interrupt (the board
    # returns to its REPL, tests/test_ports.py).
    assume(not garbage.startswith(b"\r\x03") and b"\x00\r\x03" not in garbage)
    sim = FirmwareSim()
    sim.feed(garbage)
    assert sim.board.max_line_v <= 4.0 + 1e-9
    frames = P.Decoder().feed(sim.feed(b"\x00" + P.encode(P.HELLO, 4242)))
    assert frames[-1][:2] == (P.HELLO | P.RESPONSE, 4242)
    assert sim.board.idle_safe() and sim.board.shorts == 0


# Any request a host could send, with arguments across and beyond every limit.
_volts = st.one_of(st.floats(-12.0, 12.0), st.sampled_from([float("nan"), float("inf"), 0.0]))
_requests = st.one_of(
    st.builds(
        lambda a, m, r, c, v: (P.READ, struct.pack(P.READ_REQ, a, m, r, c, v)),
        st.integers(0, 2),
        st.integers(0, 3),
        st.integers(0, 12),
        st.integers(0, 12),
        _volts,
    ),
    st.builds(
        lambda pol, r, c, v, w: (P.PULSE, struct.pack(P.PULSE_REQ, 0, pol, r, c, v, w)),
        st.integers(0, 2),
        st.integers(0, 11),
        st.integers(0, 11),
        _volts,
        st.integers(0, 2_000_000),
    ),
    st.builds(
        lambda vr, vl, w, i: (P.SAFETY, struct.pack(P.SAFETY_REQ, 1, vr, vl, w, i)),
        _volts,
        _volts,
        st.integers(0, 5_000_000),
        st.floats(-1, 1),
    ),
    st.builds(
        lambda vs, vr, step, vread: (
            P.PROGRAM,
            struct.pack(P.PROGRAM_REQ, 0, 0, 1, 5, 1e-8, vread, vs, vr, step, 50, 400)
            + struct.pack(P.PROGRAM_CELL, 1, 2, 1.5e-6),
        ),
        _volts,
        _volts,
        st.floats(0, 3),
        _volts,
    ),
    st.just((P.RESET, b"")),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_requests, min_size=1, max_size=6))
def test_no_command_sequence_exceeds_safety_limits(reqs: list[tuple[int, bytes]]) -> None:
    """Whatever the host sends, no DAC code beyond the hard line limit reaches a line,
    no row beyond the hard read limit while TIAs listen, no DAC-ground short, and every
    command ends with all lines grounded and all DACs at 0 V."""
    sim = FirmwareSim()
    for code, payload in reqs:
        ask(sim, code, payload)
        assert sim.board.idle_safe()
    b = sim.board
    assert b.max_line_v <= HARD_V_LINE + 1e-9
    assert b.max_read_v <= HARD_V_READ + 1e-9
    assert b.shorts == 0


def test_read_limit_holds_during_reads() -> None:
    sim = FirmwareSim()
    ask(sim, P.READ, struct.pack(P.READ_REQ, 0, P.READ_ARRAY, 0, 0, 0.29))
    assert 0.28 < sim.board.max_read_v <= 0.3


def _host(sim: FirmwareSim) -> Board:
    return Board(SimTransport(sim))


def test_read_matches_conductances() -> None:
    sim = FirmwareSim(seed=3)
    g = _host(sim).read(v_read=0.2)
    np.testing.assert_allclose(g, sim.board.g[0], rtol=0.01)


def test_gain_ranging_covers_six_decades() -> None:
    g = np.geomspace(1e-9, 9e-4, 100).reshape(10, 10)
    sim = FirmwareSim(g=g)
    host = _host(sim)
    got = np.stack([host.read(r, v_read=0.1) for r in range(10)])
    # Within 2 % or half a code at the highest gain (1.6 nS at 0.1 V).
    np.testing.assert_allclose(got, g, rtol=0.02, atol=1.6e-9)
    assert set(np.unique(sim.app.hal.gains)) <= {0, 1, 2, 3}


def test_pulse_moves_cell_and_reports_width() -> None:
    sim = FirmwareSim(seed=1)
    host = _host(sim)
    before = sim.board.g[0, 4, 5]
    r = host.pulse(4, 5, 3.0, 200)
    assert r.width_us >= 200 and abs(r.amplitude - 3.0) < 1e-3
    assert sim.board.g[0, 4, 5] > before  # SET raised it
    assert sim.board.g[0, 4, 6] == pytest.approx(sim.board.g[0, 4, 6])
    r = host.pulse(4, 5, 3.0, 200, polarity="reset")
    assert sim.board.g[0, 4, 5] < before + 1e-6
    # Half-selected cells saw only V/2 (< threshold): untouched.
    ref = FirmwareSim(seed=1).board.g[0]
    mask = np.ones((10, 10), bool)
    mask[4, 5] = False
    np.testing.assert_array_equal(sim.board.g[0][mask], ref[mask])


def test_program_full_array_to_pattern() -> None:
    sim = FirmwareSim(seed=2)
    host = _host(sim)
    rng = np.random.default_rng(0)
    target = rng.uniform(1e-7, 1.8e-6, size=(10, 10))
    tol = 2e-8
    r = host.program(target, tolerance=tol, max_pulses=200)
    assert r.converged.all(), np.bincount(r.status)
    assert np.abs(r.error).max() <= tol
    # The board really holds what PROGRAM reported (ADC resolution aside).
    np.testing.assert_allclose(sim.board.g[0], target, atol=tol * 1.5)


def test_program_gives_up_on_stuck_cell() -> None:
    sim = FirmwareSim(seed=2)
    sim.board.RATE = 0.0  # nothing moves: every cell is stuck
    r = _host(sim).program({(0, 0): 1.9e-6}, tolerance=1e-8, max_pulses=500, v_step=1.0)
    assert r.status[0] == P.ST_STUCK and r.pulses[0] < 500


def test_program_reports_compliance_without_pulsing() -> None:
    sim = FirmwareSim(seed=2)
    sim.board.g[0, 1, 1] = 2e-6  # RESET from here at >= 0.5 x 2 V would draw > 1 uA
    host = _host(sim)
    host.safety(i_compliance=1e-6)
    r = host.program({(1, 1): 1e-6}, tolerance=1e-8)
    assert r.status[0] == P.ST_COMPLIANCE and r.pulses[0] == 0
    assert sim.app.hal.pulses == 0


# ---- write-verify on the emulator's memristor physics -------------------------------------
class _PhysicsRig:
    """The firmware's PROGRAM over the emulator's cell physics (`CellArray`, pvk-best, the
    1T1R compliance of xbar-4x10x10): reads and pulses go straight to the cells, past the
    HAL and the parts, so a whole model's cells write-verify in about a second. Reads are
    quantised to one ADC code at the ranged TIA gain, with the noise config's read noise."""

    RF = (1e3, 1e4, 1e5, 1e6)

    def __init__(self, noise: Any, seed: int = 0) -> None:
        from xbar.emulator.cells import CellArray, CellPhysics
        from xbar.training.devices.device_model import DeviceModel

        self.device = DeviceModel.preset("pvk-best")
        self.noise = noise
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
        self.cells = CellArray(
            (3, 10, 10), self.device, noise, CellPhysics(), streams[0], streams[1]
        )
        self.rng = streams[2]
        self.t = 0.0
        self.app = FirmwareSim("xbar-4x10x10").app
        self.app.read_cell = self.read_cell
        self.app.pulse_cell = self.pulse

    def read_cell(self, arr: int, row: int, col: int, code: int) -> float:
        volts = (code - 32768) * 20.0 / 65536.0
        n = self.noise
        i = self.cells.conductance(arr)[row, col] * volts
        i *= 1 + n.read_sigma * self.rng.standard_normal()
        i += n.tia_noise * self.rng.standard_normal()
        for gi in (3, 2, 1, 0):
            adc = round(i * self.RF[gi] / ADC_LSB + n.adc_noise_lsb * self.rng.standard_normal())
            if abs(adc) <= 29500 or gi == 0:
                return adc * ADC_LSB / self.RF[gi] / volts
        raise AssertionError

    def pulse(self, arr: int, row: int, col: int, volts: float, width: int, g_pre: float) -> int:
        assert abs(g_pre * volts) <= self.app.hal.limits[3] * 1.0001  # compliance held
        assert abs(volts) <= 2 * self.app.hal.limits[1] + 1e-9 and 1 <= width <= 10_000
        cell_v = np.zeros((10, 10))
        cell_v[row, col] = volts
        self.t += width * 1e-6 + 1e-3
        self.cells.apply_pulse(arr, cell_v, width * 1e-6, self.t, self.device.compliance_current)
        return width

    def program(
        self, arr: int, targets: dict[tuple[int, int], float], tol: float, max_pulses: int = 100
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One PROGRAM frame as `Board.program` sends it (its default amplitudes and widths,
        the verify read at 0.3 V like `xbar program`); returns achieved, pulses, status."""
        body = bytearray(
            struct.pack(
                P.PROGRAM_REQ,
                arr,
                0,
                len(targets),
                max_pulses,
                tol,
                0.3,
                2.5,
                2.5,
                0.25,
                100,
                10_000,
            )
        )
        for (r, c), g in targets.items():
            body += struct.pack(P.PROGRAM_CELL, r, c, g)
        self.app.program(bytes(body))
        rsz = struct.calcsize(P.PROGRAM_RESULT)
        res = np.array(
            [
                struct.unpack_from(P.PROGRAM_RESULT, self.app.enc.payload, 2 + i * rsz)
                for i in range(len(targets))
            ]
        )
        return res[:, 0], res[:, 1].astype(int), res[:, 2].astype(int)


def _weight_targets(rng: np.random.Generator, g_min: float, g_unit: float) -> dict[int, dict]:
    """Three 10x10 arrays of differential pairs G± = g_min + max(±w, 0)·g_unit with int8
    weights spread like a trained layer's (most small, a few at full scale)."""
    out: dict[int, dict] = {}
    for a in range(3):
        w = np.clip(np.round(rng.laplace(0, 30, size=(10, 5))), -127, 127).astype(int)
        out[a] = {
            (r, 2 * j + k): g_min + max(w[r, j] * (1 - 2 * k), 0) * g_unit
            for r in range(10)
            for j in range(5)
            for k in (0, 1)
        }
    return out


def _program_model(
    rig: _PhysicsRig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """PROGRAM each array's targets in one pass: achieved, pulses, status, target, the
    (array, row, col) of each cell, and the tolerance."""
    dev = rig.device
    g_unit = (dev.g_max - dev.g_min) / 127
    tol = 0.5 * g_unit  # `xbar program`'s default: half a weight step
    targets = _weight_targets(np.random.default_rng(0), dev.g_min, g_unit)
    got, pulses, status, want, arrs = [], [], [], [], []
    for a, cells in targets.items():
        g, n, st = rig.program(a, cells, tol)
        got.append(g)
        pulses.append(n)
        status.append(st)
        want.append(np.array(list(cells.values())))
        arrs += [(a, r, c) for r, c in cells]
    return (
        np.concatenate(got),
        np.concatenate(pulses),
        np.concatenate(status),
        np.concatenate(want),
        np.array(arrs),
        tol,
    )


def test_program_converges_on_ideal_device_physics() -> None:
    """Every cell of a model-like pattern (300 cells of pvk-best, xbar-4x10x10, noise off)
    converges in one PROGRAM pass. The old step control (amplitude +v_step only while a
    pulse moved G < tol/4, one step back on an overshoot) left cells at max pulses: a
    learned SET amplitude overshot a low target by ~50 tolerances and RESET then crept
    back at ~0.5 tol per pulse."""
    from xbar.emulator.board_profile import NoiseConfig

    got, pulses, status, want, _cells, tol = _program_model(_PhysicsRig(NoiseConfig.off()))
    moved = want > want.min()
    print(
        f"\nideal pvk-best: {np.sum(status == P.ST_OK)}/{len(status)} ok; pulses per cell "
        f"mean {pulses.mean():.2f} (moved cells {pulses[moved].mean():.2f}), max "
        f"{pulses.max()}; histogram {np.bincount(pulses).tolist()}"
    )
    assert (status == P.ST_OK).all(), np.bincount(status, minlength=4)
    assert np.abs(got - want).max() <= tol
    assert pulses.max() <= 40 and pulses[moved].mean() <= 10


def test_program_on_noisy_device_physics_gives_up_only_on_unreachable_cells() -> None:
    """The realistic board (c2c, d2d, read noise, stuck cells; drift off), four seeds:
    the reachable cells converge, and a cell that cannot reach its target (a stuck-at
    fault, or a window that device-to-device spread puts short of it) is reported stuck
    after a few futile pulses at full strength, not left at max pulses."""
    from xbar.emulator.board_profile import NoiseConfig
    from xbar.emulator.cells import STUCK_LOW, STUCK_NONE

    ok = reachable = 0
    all_pulses = []
    for seed in range(4):
        rig = _PhysicsRig(NoiseConfig(drift_nu=0.0), seed=seed)
        got, pulses, status, want, cells, tol = _program_model(rig)
        for (a, r, c), target, code in zip(cells, want, status, strict=True):
            lo, hi = rig.cells.g_min[a, r, c], rig.cells.g_max[a, r, c]
            fault = rig.cells.stuck[a, r, c]
            held = lo if fault == STUCK_LOW else hi
            if (fault != STUCK_NONE and abs(target - held) > tol) or not (
                lo - tol <= target <= hi + tol
            ):
                assert code == P.ST_STUCK, (seed, a, r, c, code)
            else:
                reachable += 1
                ok += code == P.ST_OK
        assert np.abs(got - want)[status == P.ST_OK].max() <= tol
        all_pulses.append(pulses)
    n = np.concatenate(all_pulses)
    print(
        f"\nnoisy pvk-best: {ok}/{reachable} reachable cells ok; pulses per cell mean "
        f"{n.mean():.2f} max {n.max()}"
    )
    assert ok >= 0.99 * reachable
    assert n.mean() <= 8


def _toy_model(
    rng: np.random.Generator, shapes: list[tuple[int, int]], arrays: int, rows: int, cols: int
) -> CrossbarModel:
    maps = plan_tiles(shapes, arrays, rows, cols)
    layers = []
    for li, ((n_out, n_in), tiles) in enumerate(zip(shapes, maps, strict=True)):
        last = li == len(shapes) - 1
        layers.append(
            TileLayer(
                weights=rng.integers(-127, 128, size=(n_out, n_in)),
                bias=rng.integers(-3000, 3000, size=n_out),
                multiplier=40000,
                shift=24,
                relu=not last,
                out_min=-128 if last else 0,
                out_max=127 if last else 255,
                g_unit=(2e-6 - 1e-8) / 127,
                k=3,
                tiles=tiles,
            )
        )
    return CrossbarModel(layers, g_min=1e-8)


def _ideal_sim(model: CrossbarModel, profile: str = "xbar-10x10") -> FirmwareSim:
    """A board whose cells already hold the model's conductances exactly."""
    sim = FirmwareSim(profile)
    sim.board.g[:] = 1e-8
    for array, cells in model.targets().items():
        for (r, c), g in cells.items():
            sim.board.g[array, r, c] = g
    return sim


def test_load_and_infer_match_integer_reference() -> None:
    rng = np.random.default_rng(5)
    model = _toy_model(rng, [(5, 10)], 1, 10, 10)
    host = _host(_ideal_sim(model))
    res = host.load(model, program=False)
    assert (res.layers, res.tiles, res.n_in, res.n_out) == (1, 1, 10, 5)
    for _ in range(20):
        x = rng.integers(0, 256, size=10)
        want, acc_ref = model.reference(x)
        got, acc = host.infer(x, accumulators=True)
        assert np.abs(got - np.array(want)).max() <= 1
        assert np.abs(acc - np.array(acc_ref)).max() <= 400  # ADC quantisation


def test_multi_tile_multi_array_chunked_load_and_stream() -> None:
    rng = np.random.default_rng(6)
    shapes = [(40, 70), (20, 40), (10, 20)]
    model = _toy_model(rng, shapes, 4, 64, 64)
    for layer in model.layers:
        layer.multiplier, layer.shift = 30000, 26
    blob = model.to_blob()
    sim = _ideal_sim(model, "xbar-4x64")
    host = _host(sim)
    assert len(blob) > 0
    res = host.load(model, program=False)
    assert res.tiles == sum(len(layer.tiles) for layer in model.layers) and res.tiles > 3
    xs = rng.integers(0, 256, size=(9, 70))
    ys = host.infer_stream(xs, per_frame=2, window=3)
    ref = np.array([model.reference(x)[0] for x in xs])
    assert ys.shape == (9, 10)
    assert np.abs(ys - ref).max() <= 1


def test_corrupt_model_rejected_and_nothing_loaded() -> None:
    rng = np.random.default_rng(7)
    model = _toy_model(rng, [(5, 10)], 1, 10, 10)
    sim = _ideal_sim(model)
    host = _host(sim)
    blob = bytearray(model.to_blob())
    blob[4] = 9  # 9 layers > MAX_LAYERS, with a CRC that matches
    host.request(P.LOAD_BEGIN, struct.pack(P.LOAD_BEGIN_REQ, len(blob), P.crc32(bytes(blob))))
    host.request(P.LOAD_CHUNK, struct.pack(P.LOAD_CHUNK_REQ, 0) + bytes(blob))
    with pytest.raises(FirmwareError) as e:
        host.request(P.LOAD_END)
    assert e.value.code == P.E_MODEL
    with pytest.raises(FirmwareError, match="no model loaded"):
        host.infer(range(10))
    # A tile that overruns the array is named.
    model.layers[0].tiles[0] = model.layers[0].tiles[0].__class__(0, 5, 0, 0, 10, 0, 5)
    with pytest.raises(FirmwareError, match="tile 0"):
        host.load(model, program=False)


def test_stats_count_and_clear() -> None:
    sim = FirmwareSim()
    host = _host(sim)
    host.read(0, 0)
    host.pulse(0, 0, 2.0, 50)
    s = host.stats(clear=True)
    assert s["pulses"] == 1 and s["conversions"] >= 2 and s["frames_ok"] >= 3
    assert host.stats()["pulses"] == 0


def test_reset_unloads_and_restores_limits() -> None:
    rng = np.random.default_rng(8)
    model = _toy_model(rng, [(5, 10)], 1, 10, 10)
    host = _host(_ideal_sim(model))
    host.load(model, program=False)
    host.safety(v_line_max=1.0)
    host.reset()
    assert host.safety().v_line_max == pytest.approx(4.0)
    with pytest.raises(FirmwareError, match="LOAD first"):
        host.infer(range(10))


def test_exit_ends_the_loop() -> None:
    sim = FirmwareSim()
    host = _host(sim)
    host.exit()
    assert sim.app.exit and sim.board.idle_safe()
