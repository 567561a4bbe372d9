"""Inputs that used to break the firmware or a device are refused with a protocol error
code, never E_HARDWARE: LOAD fields whose fixed-point factors do not fit the board's
arithmetic, SAFETY limits below the board's resolution, pulse widths the board cannot
make, pulses beyond the line limit; and an in-process fuzz of LOAD, SAFETY, PULSE and
PROGRAM arguments. The MicroPython cases run the same refusals under the real
interpreter."""

from __future__ import annotations

import struct

import pytest
import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_firmware_app import ask, expect_error
from test_firmware_sim import FirmwareSim
from xbar.firmware import profiles
from xbar.firmware import protocol as P
from xbar.training.plan import gain_factors, layer_record

HARD_V_LINE = profiles.SAFE_HARD[1]
TOY_G_UNIT = (2e-6 - 1e-8) / 127


def blob(
    g_unit: float = TOY_G_UNIT,
    k: int = 3,
    m: int = 40000,
    sh: int = 24,
    lo: int = -128,
    hi: int = 127,
    bias: int = 0,
    n_in: int = 10,
    n_out: int = 5,
    row0: int = 0,
    col0: int = 0,
    factors: list[tuple[int, int]] | None = None,
) -> bytes:
    """A one-layer, one-tile model blob with the given layer fields. Its conversion
    factors are the host's (`gain_factors`); where none exists (g_unit 0, NaN, so small
    that a code is worth 2^100 units), the largest the format holds, which LOAD refuses."""
    if factors is None:
        try:
            factors = gain_factors(g_unit, k)
        except ValueError:
            factors = [((1 << 15) - 1, -30)] * profiles.N_GAINS
    out = struct.pack(P.MODEL_HEADER, P.MODEL_MAGIC, 1, 0, 0)
    out += layer_record(n_in, n_out, False, k, 1, g_unit, m, sh, lo, hi, factors)
    out += struct.pack(P.MODEL_TILE, 0, 0, row0, col0, 0, n_in, 0, n_out)
    return out + struct.pack(f"<{n_out}i", *([bias] * n_out))


def load(sim: FirmwareSim, data: bytes) -> tuple[int, bytes]:
    ask(sim, P.LOAD_BEGIN, struct.pack(P.LOAD_BEGIN_REQ, len(data), P.crc32(data)))
    ask(sim, P.LOAD_CHUNK, struct.pack(P.LOAD_CHUNK_REQ, 0) + data)
    return ask(sim, P.LOAD_END)


def alive(sim: FirmwareSim) -> None:
    assert ask(sim, P.HELLO, seq=77)[0] == P.HELLO | P.RESPONSE
    assert sim.board.idle_safe() and sim.board.shorts == 0
    assert sim.board.max_line_v <= HARD_V_LINE + 1e-9


def error_of(rcode: int, body: bytes) -> int | None:
    return P.parse_error(body)[0] if rcode == P.ERROR else None


# ---- LOAD ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, words",
    [
        ({"g_unit": 1e-20}, "g_unit"),  # the red team's case: OverflowError at INFER
        ({"g_unit": 1.4e-45}, "g_unit"),  # f32 subnormal: k*DAC_LSB*g_unit underflows
        ({"g_unit": 1e-12}, "g_unit"),
        ({"g_unit": 1.0}, "rounds every reading to 0"),
        ({"g_unit": float("inf")}, "g_unit"),
        ({"g_unit": float("nan")}, "g_unit"),
        ({"k": 0}, "k=0"),
        ({"k": 200}, "k=200"),
        ({"m": 0}, "multiplier"),
        ({"m": 1 << 16}, "multiplier"),
        ({"sh": 48}, "shift"),
        ({"lo": 5, "hi": 4}, "out_min"),
        ({"bias": 1 << 29}, "bias"),
    ],
)
def test_load_refuses_fields_beyond_the_arithmetic(fields: dict, words: str) -> None:
    sim = FirmwareSim()
    rcode, body = load(sim, blob(**fields))
    assert rcode == P.ERROR
    err, cmd, reason = P.parse_error(body)
    assert (err, cmd) == (P.E_MODEL, P.LOAD_END), reason
    assert "layer 0" in reason and words in reason, reason
    assert error_of(*ask(sim, P.INFER, struct.pack(P.INFER_REQ, 0, 10) + bytes(10))) == P.E_STATE
    alive(sim)


def test_smallest_accepted_g_unit_infers_without_overflow() -> None:
    """Just above the LOAD bound, on a board whose cells are far off the model (1 mS),
    INFER answers or refuses with E_RANGE: the accumulator guard, not an exception."""
    scale = profiles.DAC_LSB * profiles.TIA_RF[-1] * 32768 / profiles.ADC_LSB
    g_unit = 1.01 / scale  # k = 1
    sim = FirmwareSim()
    assert load(sim, blob(g_unit=g_unit, k=1))[0] == P.LOAD_END | P.RESPONSE
    assert load(sim, blob(g_unit=0.99 / scale, k=1))[0] == P.ERROR
    assert load(sim, blob(g_unit=g_unit, k=1))[0] == P.LOAD_END | P.RESPONSE
    sim.board.g[:, :, 0::2] = 1e-9  # G+ columns
    sim.board.g[:, :, 1::2] = 9e-4  # G- columns
    rcode, body = ask(sim, P.INFER, struct.pack(P.INFER_REQ, 1, 10) + bytes([255] * 10))
    assert rcode == P.ERROR and P.parse_error(body)[0] == P.E_RANGE, body
    assert "accumulator" in P.parse_error(body)[2]
    alive(sim)


def test_load_takes_the_conversion_factors_from_the_blob() -> None:
    """The board converts ADC codes with the blob's factors (the host's, in double
    precision), not factors of its own from g_unit; it refuses factors quant.fixed cannot
    produce."""
    sim = FirmwareSim()
    x = struct.pack(P.INFER_REQ, 1, 10) + bytes([200] * 10)
    outs = []
    for scale in (1, 2):
        factors = [(m, s + scale - 1) for m, s in gain_factors(TOY_G_UNIT, 3)]
        assert load(sim, blob(factors=factors))[0] == P.LOAD_END | P.RESPONSE
        rcode, body = ask(sim, P.INFER, x)
        assert rcode == P.INFER | P.RESPONSE, body
        (n,) = struct.unpack_from(P.INFER_RESP, body, 0)
        outs.append(struct.unpack_from(f"<{n}i", body, 2 + 2 * n))  # the accumulators
    # Half the units per code: every accumulator about halves (rounding apart).
    assert all(abs(2 * b - a) <= 2 for a, b in zip(outs[0], outs[1], strict=True)), outs
    assert any(a != 0 for a in outs[0])
    for bad in [(1 << 15, 20), ((1 << 14) - 1, 20), (20000, -31)]:
        factors = [bad, *gain_factors(TOY_G_UNIT, 3)[1:]]
        rcode, body = load(sim, blob(factors=factors))
        assert rcode == P.ERROR and "gain 0" in P.parse_error(body)[2], body
    alive(sim)


_g_units = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(1.401298464324817e-45, 1.0, width=32),
    st.sampled_from([1e-20, 3.1e-11, 3.2e-11, 1e-9, TOY_G_UNIT, 0.05, 0.07, 1.0]),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    g_unit=_g_units,
    k=st.integers(0, 255),
    m=st.sampled_from([-1, 0, 1, 40000, 65535, 65536, 2**31 - 1]),
    sh=st.integers(0, 255),
    lo=st.integers(-(2**15), 2**15 - 1),
    hi=st.integers(-(2**15), 2**15 - 1),
    bias=st.sampled_from([0, -3000, (1 << 29) - 1, -(1 << 29) + 1, 1 << 29, -(2**31)]),
    g_cells=st.sampled_from([1e-9, 1e-6, 9e-4]),
    x=st.integers(0, 255),
)
def test_load_and_infer_fuzz_never_hardware_error(
    g_unit: float, k: int, m: int, sh: int, lo: int, hi: int, bias: int, g_cells: float, x: int
) -> None:
    sim = FirmwareSim()
    sim.board.g[:, :, 1::2] = g_cells  # G- columns; G+ stay as seeded
    rcode, body = load(sim, blob(g_unit, k, m, sh, lo, hi, bias))
    assert error_of(rcode, body) in (None, P.E_MODEL), P.parse_error(body)
    if rcode != P.ERROR:
        rcode, body = ask(sim, P.INFER, struct.pack(P.INFER_REQ, 1, 10) + bytes([x] * 10))
        assert error_of(rcode, body) in (None, P.E_RANGE), P.parse_error(body)
    alive(sim)


# ---- SAFETY ------------------------------------------------------------------------------
def _limits(sim: FirmwareSim) -> tuple:
    _, body = ask(sim, P.SAFETY, struct.pack(P.SAFETY_REQ, 0, 0, 0, 0, 0))
    return struct.unpack_from(P.SAFETY_LIMITS, body, 0)


@pytest.mark.parametrize(
    "v_read, v_line, width, words",
    [
        (1e-4, 4.0, 100_000, "read limit"),  # below one DAC step: PULSE divided by zero
        (0.3, 2e-4, 100_000, "line limit"),
        (0.3, 4.0, 5, "shortest pulse"),  # a 1 us PULSE lasted 40 us under a 5 us limit
        (0.3, 4.0, 1, "shortest pulse"),
    ],
)
def test_safety_refuses_limits_below_the_boards_resolution(
    v_read: float, v_line: float, width: int, words: str
) -> None:
    sim = FirmwareSim()
    before = _limits(sim)
    reason = expect_error(
        sim, P.SAFETY, struct.pack(P.SAFETY_REQ, 1, v_read, v_line, width, 100e-6), P.E_RANGE
    )
    assert words in reason, reason
    assert _limits(sim) == before  # nothing changed
    code, body = ask(sim, P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, 200))
    assert code == P.PULSE | P.RESPONSE, P.parse_error(body)
    alive(sim)


def test_safety_cannot_raise_the_pulse_voltage_past_the_hard_limit() -> None:
    """The red team's case: the line limit raised to 5 V let a 10 V PULSE through (the
    reference devices break down at 9.6 V). The hard line limit is 4 V: no pulse > 8 V."""
    sim = FirmwareSim()
    _, body = ask(sim, P.SAFETY, struct.pack(P.SAFETY_REQ, 1, 0.3, 5.0, 100_000, 1e-3))
    assert struct.unpack_from(P.SAFETY_LIMITS, body, 0)[1] == pytest.approx(HARD_V_LINE)
    for amp in (10.0, 8.01, 9.6):
        reason = expect_error(
            sim, P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, amp, 200), P.E_SAFETY
        )
        assert "line limit" in reason
    assert sim.app.hal.pulses == 0
    # At the limit the last half step rounds down: 8.0 V applies <= 8 V.
    code, body = ask(sim, P.PULSE, struct.pack(P.PULSE_REQ, 0, 1, 1, 1, 8.0, 200))
    assert code == P.PULSE | P.RESPONSE
    applied = struct.unpack_from(P.PULSE_RESP, body)[0]
    assert 8.0 - 2 * profiles.DAC_LSB < applied <= 8.0
    alive(sim)


# ---- PULSE / PROGRAM ------------------------------------------------------------------------
def _program(w0: int = 100, w_max: int = 400, v_set: float = 2.0, v_reset: float = 2.0) -> bytes:
    return struct.pack(
        P.PROGRAM_REQ, 0, 0, 1, 5, 1e-8, 0.1, v_set, v_reset, 0.1, w0, w_max
    ) + struct.pack(P.PROGRAM_CELL, 1, 2, 1.5e-6)


@pytest.mark.parametrize(
    "code, payload, err, words",
    [
        (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, 1), P.E_RANGE, "shortest"),
        (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, 0), P.E_RANGE, "shortest"),
        (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 1e-5, 200), P.E_RANGE, "rounds to 0"),
        (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, 100_001), P.E_SAFETY, "limit"),
        (P.PROGRAM, _program(v_set=1e-5), P.E_RANGE, "rounds to 0"),
        (P.PROGRAM, _program(v_reset=8.5), P.E_SAFETY, "line limit"),
        (P.PROGRAM, _program(w0=200_000), P.E_SAFETY, "limit"),
    ],
)
def test_pulse_and_program_refuse_what_the_board_cannot_make(
    code: int, payload: bytes, err: int, words: str
) -> None:
    sim = FirmwareSim()
    reason = expect_error(sim, code, payload, err)
    assert words in reason, reason
    assert sim.app.hal.pulses == 0
    alive(sim)


def test_program_starts_at_the_shortest_pulse_the_board_makes() -> None:
    """A start width below the board's shortest pulse (a long switch chain) is raised to
    it: write-verify runs, and no pulse is shorter than the board makes."""
    sim = FirmwareSim()
    rcode, _ = ask(sim, P.PROGRAM, _program(w0=1))
    assert rcode == P.PROGRAM | P.RESPONSE
    assert sim.app.hal.pulses > 0
    alive(sim)


def test_shortest_pulse_is_made_within_its_width() -> None:
    sim = FirmwareSim()
    w = sim.app.hal.min_width
    assert w >= profiles.PULSE_MIN_US
    ask(sim, P.SAFETY, struct.pack(P.SAFETY_REQ, 1, 0.3, 4.0, w, 100e-6))
    code, body = ask(sim, P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, w))
    assert code == P.PULSE | P.RESPONSE, P.parse_error(body)
    assert struct.unpack_from(P.PULSE_RESP, body)[1] <= w + 2


_volts = st.one_of(
    st.floats(-12.0, 12.0),
    st.floats(0, 1e-3),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, 8.0, 8.0001, 3.4e38]),
)
_widths = st.one_of(st.integers(0, 40), st.sampled_from([0, 1, 2**32 - 1, 100_000, 1_000_001]))
_requests = st.one_of(
    st.builds(
        lambda vr, vl, w, i: (P.SAFETY, struct.pack(P.SAFETY_REQ, 1, vr, vl, w, i)),
        _volts,
        _volts,
        _widths,
        st.one_of(st.floats(-1, 1), st.sampled_from([1e-30, float("nan"), 0.0])),
    ),
    st.builds(
        lambda a, pol, r, c, v, w: (P.PULSE, struct.pack(P.PULSE_REQ, a, pol, r, c, v, w)),
        st.integers(0, 255),
        st.integers(0, 2),
        st.integers(0, 65535),
        st.integers(0, 11),
        _volts,
        st.one_of(_widths, st.integers(0, 300)),
    ),
    st.builds(
        lambda tol, vread, vs, vr, step, w0, wm, tgt, mp: (
            P.PROGRAM,
            struct.pack(P.PROGRAM_REQ, 0, 0, 1, mp, tol, vread, vs, vr, step, w0, wm)
            + struct.pack(P.PROGRAM_CELL, 1, 2, tgt),
        ),
        st.sampled_from([1e-8, 0.0, -1.0, float("nan"), float("inf"), 1e-30]),
        _volts,
        _volts,
        _volts,
        st.one_of(st.floats(0, 3), st.sampled_from([float("nan"), 1e-30])),
        _widths,
        _widths,
        st.sampled_from([1.5e-6, 0.0, float("inf"), float("nan"), 1e-30, 1e30]),
        st.integers(0, 12),
    ),
    st.just((P.RESET, b"")),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_requests, min_size=1, max_size=5))
def test_safety_pulse_program_fuzz_never_hardware_error(reqs: list[tuple[int, bytes]]) -> None:
    sim = FirmwareSim()
    for code, payload in reqs:
        rcode, body = ask(sim, code, payload)
        assert error_of(rcode, body) != P.E_HARDWARE, P.parse_error(body)
        assert sim.board.idle_safe()
    alive(sim)
    # Whatever the limits now are, a plain pulse within them still works.
    ask(sim, P.RESET)
    code, body = ask(sim, P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, 200))
    assert code == P.PULSE | P.RESPONSE, P.parse_error(body)


# ---- under the real MicroPython interpreter -----------------------------------------------
def test_refusals_under_micropython() -> None:
    from xbar.emulator.runtime_mpy import micropython_binary
    from xbar.host.board import Board, FirmwareError

    try:
        micropython_binary()
    except FileNotFoundError:  # pragma: no cover - the dev install always has it
        pytest.skip("no MicroPython interpreter")
    port = serial.serial_for_url("emu://xbar-10x10?seed=2&micropython=1", timeout=30)
    try:
        with Board(port) as b:
            data = blob(g_unit=1e-20)
            b.request(P.LOAD_BEGIN, struct.pack(P.LOAD_BEGIN_REQ, len(data), P.crc32(data)))
            b.request(P.LOAD_CHUNK, struct.pack(P.LOAD_CHUNK_REQ, 0) + data)
            cases = [
                (P.LOAD_END, b"", P.E_MODEL),
                (P.SAFETY, struct.pack(P.SAFETY_REQ, 1, 1e-4, 4.0, 100_000, 1e-4), P.E_RANGE),
                (P.SAFETY, struct.pack(P.SAFETY_REQ, 1, 0.3, 4.0, 5, 1e-4), P.E_RANGE),
                (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 2.0, 1), P.E_RANGE),
                (P.PULSE, struct.pack(P.PULSE_REQ, 0, 0, 1, 1, 10.0, 200), P.E_SAFETY),
            ]
            for code, payload, err in cases:
                with pytest.raises(FirmwareError) as e:
                    b.request(code, payload)
                assert e.value.code == err, e.value
            b.safety(v_line_max=5.0)
            assert b.safety().v_line_max == pytest.approx(HARD_V_LINE)
            with pytest.raises(FirmwareError) as e:
                b.pulse(1, 1, 10.0, 200)
            assert e.value.code == P.E_SAFETY
            r = b.pulse(1, 1, 2.0, 200)
            assert abs(r.amplitude - 2.0) < 1e-3 and r.width_us >= 200
            assert b.hello().profile == "xbar-10x10"
    finally:
        port.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    exponent=st.floats(min_value=-14.0, max_value=0.5, allow_nan=False),
    k=st.integers(min_value=1, max_value=3),
)
def test_host_plan_check_agrees_with_load_on_the_conversion(exponent: float, k: int) -> None:
    """The host refuses a plan before writing any cell exactly when LOAD would."""
    from xbar.training.plan import conversion_problem

    g_unit = 10.0**exponent
    rcode, body = load(FirmwareSim("xbar-10x10"), blob(g_unit=g_unit, k=k))
    firmware_refuses = error_of(rcode, body) == P.E_MODEL
    assert (conversion_problem(g_unit, k) is not None) == firmware_refuses, (g_unit, k, body)


def test_hard_limits_and_line_range_lie_within_the_rev_b_part_ratings() -> None:
    """The firmware's hard maxima are inside what every part on the line is rated for
    (emulator.energy.PowerFigures, each figure cited there): the line drivers' output
    swing and the switches' signal range; and so is the whole range a DAC code can set
    (line = 4·V_DAC − 10 V, DAC_LSB = 20 V / 2^16), and the TIA's saturation voltage at
    the ADC input."""
    from xbar.emulator.energy import PowerFigures

    rev_b = PowerFigures()
    full_scale = profiles.DAC_LSB * profiles.DAC_MID  # |line| at code 0 or 65535
    for lo, hi in (rev_b.driver_out_v, rev_b.sw_signal_v):
        for v in (HARD_V_LINE, profiles.SAFE_HARD[0], full_scale):
            assert lo <= -v and v <= hi, (v, lo, hi)
    assert rev_b.adc_in_v[0] <= -profiles.TIA_SAT_V and rev_b.adc_in_v[1] >= profiles.TIA_SAT_V
