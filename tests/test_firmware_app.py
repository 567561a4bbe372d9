"""The firmware's command loop and safety on the in-test board stand-in (`FirmwareSim`):
error responses, parser robustness, safety limits on every path, LOAD/INFER against the
integer reference, write-verify."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_firmware_sim import FirmwareSim, SimTransport

from xbar.firmware import protocol as P
from xbar.host.board import Board, CrossbarModel, FirmwareError, TileLayer, plan_tiles

HARD_V_LINE = 5.0
HARD_V_READ = 0.5


def ask(sim: FirmwareSim, code: int, payload: bytes = b"", seq: int = 1) -> tuple[int, bytes]:
    """One request straight into the firmware; returns (response code, payload)."""
    frames = P.Decoder().feed(sim.feed(P.encode(code, seq, payload)))
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
    assert body[struct.calcsize(P.HELLO_RESP):] == b"xbar-10x10"


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
    reason = expect_error(sim, P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, 100),
                          P.E_COMPLIANCE)  # fmt: skip
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
    sim = FirmwareSim()
    sim.feed(garbage)
    assert sim.board.max_line_v <= 4.0 + 1e-9
    frames = P.Decoder().feed(sim.feed(b"\x00" + P.encode(P.HELLO, 4242)))
    assert frames[-1][:2] == (P.HELLO | P.RESPONSE, 4242)
    assert sim.board.idle_safe() and sim.board.shorts == 0


# Any request a host could send, with arguments across and beyond every limit.
_volts = st.one_of(st.floats(-12.0, 12.0), st.sampled_from([float("nan"), float("inf"), 0.0]))
_requests = st.one_of(
    st.builds(lambda a, m, r, c, v: (P.READ, struct.pack(P.READ_REQ, a, m, r, c, v)),
              st.integers(0, 2), st.integers(0, 3), st.integers(0, 12), st.integers(0, 12),
              _volts),
    st.builds(lambda pol, r, c, v, w: (P.PULSE, struct.pack(P.PULSE_REQ, 0, pol, r, c, v, w)),
              st.integers(0, 2), st.integers(0, 11), st.integers(0, 11), _volts,
              st.integers(0, 2_000_000)),
    st.builds(lambda vr, vl, w, i: (P.SAFETY, struct.pack(P.SAFETY_REQ, 1, vr, vl, w, i)),
              _volts, _volts, st.integers(0, 5_000_000), st.floats(-1, 1)),
    st.builds(lambda vs, vr, step, vread: (P.PROGRAM, struct.pack(
        P.PROGRAM_REQ, 0, 0, 1, 5, 1e-8, vread, vs, vr, step, 50, 400)
        + struct.pack(P.PROGRAM_CELL, 1, 2, 1.5e-6)),
        _volts, _volts, st.floats(0, 3), _volts),
    st.just((P.RESET, b"")),
)  # fmt: skip


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


def _toy_model(rng: np.random.Generator, shapes: list[tuple[int, int]],
               arrays: int, rows: int, cols: int) -> CrossbarModel:  # fmt: skip
    maps = plan_tiles(shapes, arrays, rows, cols)
    layers = []
    for li, ((n_out, n_in), tiles) in enumerate(zip(shapes, maps, strict=True)):
        last = li == len(shapes) - 1
        layers.append(TileLayer(
            weights=rng.integers(-127, 128, size=(n_out, n_in)),
            bias=rng.integers(-3000, 3000, size=n_out), multiplier=40000, shift=24,
            relu=not last, out_min=-128 if last else 0, out_max=127 if last else 255,
            g_unit=(2e-6 - 1e-8) / 127, k=3, tiles=tiles,
        ))  # fmt: skip
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
