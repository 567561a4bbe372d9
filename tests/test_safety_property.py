"""Safety as a property: random host command sequences, through the real firmware in-process
on an emulated board (1T1R and passive), checked against what the board's lines and cells
actually saw (``BoardModel(record_events=True)``, ``emulator.events``).

Per command: no line beyond the line limit in force (nor SAFE_HARD), no row beyond the read
limit while a column is on its TIA (READ, INFER, the reads inside PULSE/PROGRAM), no write
(lines energised with no TIA) longer than the width limit plus the pulse tail the board
measured at boot, the pulsed cell's current within the compliance limit (what the firmware
promises: G read just before × V applied), every line grounded afterwards, never
E_HARDWARE. Per sequence: no damage event, HELLO still answered.

CI budget: ``max_examples`` below; HYPOTHESIS_PROFILE=thorough (tests/conftest.py) runs
the profile's larger budget instead.
"""

from __future__ import annotations

import math
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_firmware_limits import TOY_G_UNIT, blob
from xbar.emulator.board_model import BoardModel
from xbar.emulator.crossbar import TIA
from xbar.emulator.events import LineEvent, holds
from xbar.emulator.hardware import Hardware
from xbar.emulator.runtime import FirmwareNamespace
from xbar.firmware import profiles
from xbar.firmware import protocol as P

LSB = profiles.DAC_LSB
HARD = profiles.SAFE_HARD
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
EXAMPLES = (
    settings.default.max_examples if THOROUGH else 150
)  # per board profile; the suite stays under ~30 s
# The cell's conductance is read (noisy, quantised, IR drop) just before the pulse; the
# current the pulse then drives may exceed the prediction by that read's error.
COMPLIANCE_READ_TOL = 1.10

# Numbers seen over the session, reported by test_report (and printed with -s).
FOUND: dict[str, float] = {"max_line_v": 0.0, "max_cell_v": 0.0, "max_tail_us": -math.inf}
FOUND.update(max_cell_i=0.0, max_i_over_limit=0.0)
OUTCOMES: Counter[str] = Counter()  # command -> answer, for the coverage report


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: Any) -> int:
        self.buf += bytes(data)
        return len(data)


class Rig:
    """The firmware's App on a recording board model; commands go to `dispatch`."""

    def __init__(self, profile: str, seed: int = 0) -> None:
        self.model = BoardModel(profile, seed=seed, record_events=True)
        self.hw = Hardware(self.model, seed)
        self.out = _Writer()
        ns = FirmwareNamespace(self.hw, None, self.out, profile=profile)
        self.app = ns.load("app").App(self.out, profile, watchdog=False)
        self.app_mod_loaded = ns.load("inference").LOADED
        self.hal = self.app.hal
        self.seq = 0

    def ask(self, code: int, payload: bytes) -> tuple[int, bytes]:
        self.seq = (self.seq + 1) & 0xFF
        self.out.buf.clear()
        self.app.dispatch(code, self.seq, bytes(payload))
        frames = P.Decoder().feed(bytes(self.out.buf))
        # A long PROGRAM says it is alive with BUSY frames before its answer.
        busy = [f for f in frames[:-1] if f[0] == P.BUSY | P.RESPONSE]
        assert all(code == P.PROGRAM for code, *_ in (f[2] for f in busy)), busy
        frames = frames[len(busy) :]
        assert len(frames) == 1, frames
        rcode, rseq, body = frames[0]
        assert rseq == self.seq
        return rcode, body


# ---- commands ---------------------------------------------------------------------------
@dataclass
class Cmd:
    name: str
    code: int
    payload: bytes
    args: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{self.name}({self.args})"


_volts = st.one_of(
    st.floats(-1.0, 12.0, allow_nan=False),
    st.sampled_from(
        [0.0, -0.0, math.nan, math.inf, LSB, 0.99 * LSB, 0.1, 0.3, 0.5, 0.51, 4.0, 4.01, 8.0]
    ),
)
_width = st.one_of(
    st.integers(16, 5000),
    st.integers(0, 1_200_000),
    st.sampled_from([0, 1, 15, 16, 17, 100_000, 1_000_000, 1_000_001]),
)
_idx = st.one_of(st.integers(0, 9), st.integers(0, 9), st.sampled_from([0, 9, 10, 65535]))
_read_v = st.one_of(st.floats(-0.5, 0.5), _volts)


def _safety() -> st.SearchStrategy[Cmd]:
    def make(op: int, v_read: float, v_line: float, width: int, i_comp: float) -> Cmd:
        body = struct.pack(P.SAFETY_REQ, op, v_read, v_line, width, i_comp)
        a = {"op": op, "v_read": v_read, "v_line": v_line, "width": width, "i_comp": i_comp}
        return Cmd("SAFETY", P.SAFETY, body, a)

    return st.builds(
        make,
        st.sampled_from([0, 1, 1, 1, 2]),
        _volts,
        _volts,
        _width,
        st.one_of(
            st.floats(0, 2e-3, allow_nan=False),
            st.floats(1e-7, 2e-5),
            st.sampled_from([0.0, math.nan, 1e-9, 1e-6, 5e-6, 1e-3, 1]),
        ),
    )


def _pulse() -> st.SearchStrategy[Cmd]:
    def make(pol: int, row: int, col: int, amp: float, width: int) -> Cmd:
        body = struct.pack(P.PULSE_REQ, 0, pol, row, col, amp, width)
        a = {"pol": pol, "cell": (row, col), "amp": amp, "width": width}
        return Cmd("PULSE", P.PULSE, body, a)

    amp = st.one_of(st.floats(0.0, 10.0, allow_nan=False), st.sampled_from([8.0, 8.001, 1.0]))
    return st.builds(make, st.sampled_from([0, 0, 1, 1, 2]), _idx, _idx, amp, _width)


def _program() -> st.SearchStrategy[Cmd]:
    def make(
        cells: list[tuple[int, int, float]],
        max_p: int,
        v_read: float,
        v_set: float,
        v_reset: float,
        v_step: float,
        w0: int,
        w_max: int,
    ) -> Cmd:
        tol = 0.05e-6
        head = struct.pack(
            P.PROGRAM_REQ, 0, 0, len(cells), max_p, tol, v_read, v_set, v_reset, v_step, w0, w_max
        )
        body = head + b"".join(struct.pack(P.PROGRAM_CELL, *c) for c in cells)
        a = {"cells": cells, "max_p": max_p, "v_read": v_read, "v": (v_set, v_reset, v_step)}
        a["w"] = (w0, w_max)
        return Cmd("PROGRAM", P.PROGRAM, body, a)

    cell = st.tuples(st.integers(0, 9), st.integers(0, 9), st.floats(0.2e-6, 3e-6))
    return st.builds(
        make,
        st.lists(cell, min_size=1, max_size=2),
        st.integers(1, 12),
        st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.5]),
        st.floats(0.5, 9.0),
        st.floats(0.5, 9.0),
        st.sampled_from([0.0, 0.1, 0.5, 1.0]),
        st.sampled_from([10, 16, 100, 1000, 50_000]),
        st.sampled_from([100, 10_000, 100_000, 1_000_000]),
    )


def _read() -> st.SearchStrategy[Cmd]:
    def make(mode: int, row: int, col: int, volts: float) -> Cmd:
        body = struct.pack(P.READ_REQ, 0, mode, row, col, volts)
        return Cmd("READ", P.READ, body, {"mode": mode, "cell": (row, col), "v": volts})

    return st.builds(make, st.sampled_from([0, 1, 2, 3]), _idx, _idx, _read_v)


def _load() -> st.SearchStrategy[Cmd]:
    @st.composite
    def make(draw: st.DrawFn) -> Cmd:
        n_in = draw(st.integers(1, 10))
        n_out = draw(st.integers(1, 5))
        valid = draw(st.booleans())
        if valid:
            row0 = draw(st.integers(0, 10 - n_in))
            col0 = draw(st.integers(0, 10 - 2 * n_out))
            k, m, sh, g_unit = 3, 40000, 24, TOY_G_UNIT
        else:
            row0, col0 = draw(st.integers(0, 12)), draw(st.integers(0, 12))
            k = draw(st.integers(0, 255))
            m = draw(st.sampled_from([0, 1, 40000, 65536]))
            sh = draw(st.integers(0, 60))
            g_unit = draw(st.sampled_from([1e-20, 1e-9, TOY_G_UNIT, 1.0, math.nan]))
        data = blob(g_unit, k, m, sh, n_in=n_in, n_out=n_out, row0=row0, col0=col0)
        if not valid and draw(st.booleans()):
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
        return Cmd("LOAD", -1, data, {"valid": valid, "n_in": n_in, "n_out": n_out})

    return make()


def _infer() -> st.SearchStrategy[Cmd]:
    def make(x: bytes, fit: bool) -> Cmd:
        return Cmd("INFER", P.INFER, x, {"n": len(x), "fit": fit})

    return st.builds(make, st.binary(min_size=1, max_size=10), st.booleans())


COMMANDS = st.one_of(
    _safety(),
    _pulse(),
    _program(),
    _read(),
    _load(),
    _infer(),
    st.just(Cmd("RESET", P.RESET, b"")),
)


# ---- checks -----------------------------------------------------------------------------
def _has_tia(ev: LineEvent) -> bool:
    return bool((ev.modes == TIA).any())


def _write(ev: LineEvent) -> bool:
    """Lines energised with no column on a TIA: a pulse, not a read."""
    return ev.energised() and not _has_tia(ev)


def run_command(rig: Rig, cmd: Cmd) -> list[tuple[int, bytes]]:
    if cmd.name == "INFER":  # fit: as many inputs as the loaded model takes
        x = cmd.payload
        m = rig.app.model
        if cmd.args["fit"] and m.state == rig.app_mod_loaded:
            x = (x * 10)[: m.n_in()]
        return [rig.ask(P.INFER, struct.pack(P.INFER_REQ, 0, len(x)) + x)]
    if cmd.name != "LOAD":
        return [rig.ask(cmd.code, cmd.payload)]
    data = cmd.payload
    return [
        rig.ask(P.LOAD_BEGIN, struct.pack(P.LOAD_BEGIN_REQ, len(data), P.crc32(data))),
        rig.ask(P.LOAD_CHUNK, struct.pack(P.LOAD_CHUNK_REQ, 0) + data),
        rig.ask(P.LOAD_END, b""),
    ]


def check_command(rig: Rig, cmd: Cmd, history: list[Cmd]) -> None:
    rec = rig.model.events
    assert rec is not None
    v_read, v_line, width_limit, i_comp = rig.hal.limits
    mark = rec.mark()
    answers = run_command(rig, cmd)
    now = rig.model.clock.cycles
    where = f"after {[*history, cmd]!r}"
    for rcode, body in answers:
        if rcode == P.ERROR:
            err, _, reason = P.parse_error(body)
            assert err != P.E_HARDWARE, f"E_HARDWARE {reason!r} {where}"
    last = answers[-1]
    OUTCOMES[
        f"{cmd.name} " + (f"E{P.parse_error(last[1])[0]}" if last[0] == P.ERROR else "ok")
    ] += 1
    evs = rec.since(mark)
    # Limits in force while this command ran (SAFETY and RESET energise nothing).
    if cmd.name in ("SAFETY", "RESET"):
        assert not any(e.energised() for e in evs), where
    tail_s = (rig.hal.min_width - 1) * 1e-6  # the pulse tail timed at boot (>= 15 us)
    for ev in evs:
        line_v = ev.max_line_v
        FOUND["max_line_v"] = max(FOUND["max_line_v"], line_v)
        FOUND["max_cell_v"] = max(FOUND["max_cell_v"], ev.v_cell)
        assert line_v <= v_line + 1e-9, f"line at {line_v} V > limit {v_line} V {where}"
        assert line_v <= HARD[1] + 1e-9, where
        if _has_tia(ev):  # a read: READ, INFER, or the reads inside PULSE/PROGRAM
            rows = ev.volts[: rig.model.profile.rows]
            assert abs(rows).max() <= v_read + 1e-9, f"row {rows} beyond {v_read} V {where}"
        assert ev.damaged == 0, f"{ev.damaged} cells broke down at {ev} {where}"
    # Writes: each run of energised events without a TIA is one pulse.
    pulses = list(holds(evs, _write, now))
    for first, seconds in pulses:
        assert seconds <= width_limit * 1e-6 + tail_s, (
            f"write of {seconds * 1e6:.1f} us > {width_limit} us + tail {where}"
        )
        if cmd.name == "PULSE":
            tail_us = seconds * 1e6 - cmd.args["width"]
            FOUND["max_tail_us"] = max(FOUND["max_tail_us"], tail_us)
            assert tail_us <= tail_s * 1e6, f"pulse tail {tail_us:.2f} us {where}"
        FOUND["max_cell_i"] = max(FOUND["max_cell_i"], first.i_at_v_cell)
        FOUND["max_i_over_limit"] = max(FOUND["max_i_over_limit"], first.i_at_v_cell / i_comp)
        # Compliance: the selected cell (largest row - column voltage) at the pulse's start.
        assert first.i_at_v_cell <= i_comp * COMPLIANCE_READ_TOL, (
            f"pulse drove {first.i_at_v_cell:.3g} A through {first.v_cell_at} "
            f"(limit {i_comp:.3g} A) {where}"
        )
    if cmd.name == "PULSE" and answers[0][0] == P.PULSE | P.RESPONSE:
        assert len(pulses) == 1, where
    assert rig.model.lines_grounded(), f"lines not grounded {where}"


def drive(profile: str, cmds: list[Cmd]) -> Rig:
    rig = Rig(profile)
    history: list[Cmd] = []
    for cmd in cmds:
        check_command(rig, cmd, history)
        history.append(cmd)
    rcode, body = rig.ask(P.HELLO, b"")
    assert rcode == P.HELLO | P.RESPONSE, (rcode, body, history)
    assert rig.model.diagnostics["damage_events"] == 0, history
    assert rig.model.diagnostics["rating_errors"] == 0, history  # every part within rating
    assert rig.model.lines_grounded()
    return rig


@pytest.mark.parametrize("profile", ["xbar-10x10", "xbar-10x10-passive"])
@settings(max_examples=EXAMPLES)
@given(cmds=st.lists(COMMANDS, min_size=1, max_size=6))
def test_command_sequences_stay_safe(profile: str, cmds: list[Cmd]) -> None:
    drive(profile, cmds)


@pytest.mark.parametrize("profile", ["xbar-10x10", "xbar-10x10-passive"])
def test_full_amplitude_pulses_at_the_limits(profile: str) -> None:
    """Deterministic corners: hard limits, the longest and shortest pulses, full amplitude."""
    rig_min = Rig(profile).hal.min_width
    set_hard = struct.pack(P.SAFETY_REQ, 1, HARD[0], HARD[1], HARD[2], HARD[3])
    cmds = [Cmd("SAFETY", P.SAFETY, set_hard)]
    for pol, w in ((0, rig_min), (1, rig_min), (0, HARD[2]), (1, 1000)):
        body = struct.pack(P.PULSE_REQ, 0, pol, 2, 3, 2 * HARD[1], w)
        cmds.append(Cmd("PULSE", P.PULSE, body, {"width": w, "amp": 2 * HARD[1]}))
    cmds.append(Cmd("READ", P.READ, struct.pack(P.READ_REQ, 0, 2, 0, 0, HARD[0]), {}))
    rig = drive(profile, cmds)
    assert rig.model.events is not None
    s = rig.model.events.summary(HARD[0])
    assert s.max_line_v.value == pytest.approx(HARD[1], abs=LSB)
    assert s.max_cell_v.value == pytest.approx(2 * HARD[1], abs=2 * LSB)
    assert s.longest_hold_s.value >= HARD[2] * 1e-6


def test_report() -> None:
    """The extremes this session's sequences reached (run with -s to see them)."""
    print(f"\nsafety property extremes: {FOUND}\nanswers: {sorted(OUTCOMES.items())}")
