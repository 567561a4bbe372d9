"""Protocol fuzz of one emulated board (either runtime), for `bench_reliability`.

Cases, all generated from `firmware/protocol.py` (its command table and request layouts):

* ``random-bytes``: 1..300 random bytes (zeros included, so frames split anywhere), then a
  delimiter;
* ``random-frame``: a valid-CRC frame with a random code (the 14 commands weighted up)
  and a random payload, of the layout's exact size half the time;
* ``boundary``: every command's request layout, one field at a time swept over its
  type's boundary and out-of-range values from a valid base, payloads one byte short,
  one byte long, empty and MAX_PAYLOAD long, then random combinations of the boundary
  values (trailing data of INFER, INFER_STREAM, LOAD_CHUNK and PROGRAM sized to the
  counts the fields give, or not).

Each case goes on the wire followed by a HELLO with its own sequence number; cases are
sent in batches (one write, a reader thread drains the answers), and after each case the
HELLO must be answered. After each batch: the firmware thread (in-process) or the
interpreter (MicroPython) still runs on its first boot, no traceback on the link, no
E_HARDWARE answer, the model's damage counter and the line-voltage monitor unchanged.
A batch whose HELLOs do not all come back within its time limit counts a hang for the
first unanswered case. EXIT (which ends the firmware on purpose) is its own case: the
board must answer it, then reboot on Ctrl-D and answer HELLO; those reboots are asked for
and counted apart.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from xbar.firmware import profiles
from xbar.firmware import protocol as P
from xbar.training.plan import layer_record

HARD_V_LINE = profiles.SAFE_HARD[1]
LINE_TOLERANCE_V = 20.0 / 65536.0  # one DAC step

# ---- request layouts from the protocol module --------------------------------------------
REQUEST_LAYOUT = {
    P.HELLO: "",
    P.IDENT: "",
    P.INFO: "",
    P.READ: P.READ_REQ,
    P.PULSE: P.PULSE_REQ,
    P.PROGRAM: P.PROGRAM_REQ,
    P.LOAD_BEGIN: P.LOAD_BEGIN_REQ,
    P.LOAD_CHUNK: P.LOAD_CHUNK_REQ,
    P.LOAD_END: "",
    P.INFER: P.INFER_REQ,
    P.INFER_STREAM: P.STREAM_REQ,
    P.STATS: P.STATS_REQ,
    P.RESET: "",
    P.SAFETY: P.SAFETY_REQ,
    P.EXIT: "",
}
assert set(REQUEST_LAYOUT) == set(P.COMMAND_NAMES)

BOUNDARY = {
    "B": [0, 1, 2, 3, 9, 10, 11, 127, 128, 254, 255],
    "H": [0, 1, 2, 9, 10, 11, 64, 145, 146, 147, 255, 256, 32767, 32768, 65535],
    "h": [-32768, -32767, -129, -128, -1, 0, 1, 127, 128, 32767],
    "I": [0, 1, 2, 5, 39, 40, 41, 200, 1024, 100_000, 100_001, 2**31 - 1, 2**31, 2**32 - 1],
    "i": [-(2**31), -(2**31) + 1, -1, 0, 1, 65535, 65536, 2**29, 2**31 - 1],
    "f": [
        0.0,
        -0.0,
        1.4e-45,
        1e-30,
        1e-5,
        1e-4,
        0.1,
        0.3,
        0.5,
        0.5001,
        1.0,
        2.0,
        4.0,
        4.0001,
        8.0,
        8.0001,
        9.6,
        20.0,
        40.0,
        -1.0,
        -8.0,
        3.4e38,
        math.inf,
        -math.inf,
        math.nan,
    ],
}

# A valid request per command (fields in layout order) for the one-field sweeps.
VALID_BASE: dict[int, tuple[Any, ...]] = {
    P.READ: (0, P.READ_CELL, 1, 1, 0.1),
    P.PULSE: (0, P.SET, 1, 1, 2.0, 200),
    P.PROGRAM: (0, 0, 1, 2, 1e-7, 0.1, 1.0, 1.0, 0.1, 100, 400),
    P.LOAD_BEGIN: (100, 0),
    P.LOAD_CHUNK: (0,),
    P.INFER: (0, 10),
    P.INFER_STREAM: (1, 0, 2),
    P.STATS: (0,),
    P.SAFETY: (0, 0.3, 4.0, 100_000, 1e-4),
}
MAX_PROGRAM_PULSES = 16
"""PROGRAM's max-pulses field is kept to 0..16 in the fuzz (with up to 146 cells): a
legal 65535-pulse write-verify is a long operation, not a fault, and would pass any
per-case time limit fit for a fuzz."""

TOY_G_UNIT = (2e-6 - 1e-8) / 127


def toy_model() -> bytes:
    """A one-layer 10 -> 5 model blob for xbar-10x10 (as tests/test_firmware_limits)."""
    out = struct.pack(P.MODEL_HEADER, P.MODEL_MAGIC, 1, 0, 0)
    out += layer_record(10, 5, False, 3, 1, TOY_G_UNIT, 40000, 24, -128, 127)
    out += struct.pack(P.MODEL_TILE, 0, 0, 0, 0, 0, 10, 0, 5)
    return out + struct.pack("<5i", *([0] * 5))


def _fields(fmt: str) -> list[str]:
    return [c for c in fmt.lstrip("<") if c.isalpha()]


def _trailing(code: int, values: tuple[Any, ...], rng: np.random.Generator) -> bytes:
    """Data after the fixed header, sized to what the fields ask for (mostly)."""
    exact = rng.random() < 0.8
    if code == P.PROGRAM:
        n = values[2] if exact else int(rng.integers(0, 4))
        n = min(n, 147)
        cells = b""
        for _ in range(n):
            row = int(rng.choice(BOUNDARY["H"])) if rng.random() < 0.3 else int(rng.integers(10))
            col = int(rng.choice(BOUNDARY["H"])) if rng.random() < 0.3 else int(rng.integers(10))
            tgt = float(rng.choice(BOUNDARY["f"])) if rng.random() < 0.3 else 1e-6
            cells += struct.pack(P.PROGRAM_CELL, row, col, tgt)
        return cells
    if code == P.INFER:
        n = values[1] if exact else int(rng.integers(0, 12))
        return rng.integers(0, 256, min(n, 1100), dtype=np.uint8).tobytes()
    if code == P.INFER_STREAM:
        n = 10 * values[2] if exact else int(rng.integers(0, 40))
        return rng.integers(0, 256, min(n, 1100), dtype=np.uint8).tobytes()
    if code == P.LOAD_CHUNK:
        return rng.integers(
            0, 256, int(rng.choice([0, 1, 16, 100, 1020])), dtype=np.uint8
        ).tobytes()
    return b""


def _pack(code: int, values: tuple[Any, ...], rng: np.random.Generator) -> bytes:
    fmt = REQUEST_LAYOUT[code]
    if code == P.PROGRAM:
        values = (*values[:3], min(int(values[3]), MAX_PROGRAM_PULSES), *values[4:])
    body = struct.pack(fmt, *values) if fmt else b""
    return (body + _trailing(code, values, rng))[: P.MAX_PAYLOAD]


def boundary_sweep(rng: np.random.Generator) -> list[tuple[int, bytes]]:
    """Every command: one field at a time over its boundary values, and length variants."""
    cases: list[tuple[int, bytes]] = []
    for code, fmt in REQUEST_LAYOUT.items():
        size = struct.calcsize(fmt) if fmt else 0
        if code in VALID_BASE:
            base = VALID_BASE[code]
            cases.append((code, _pack(code, base, rng)))
            for i, kind in enumerate(_fields(fmt)):
                for v in BOUNDARY[kind]:
                    values = (*base[:i], v, *base[i + 1 :])
                    cases.append((code, _pack(code, values, rng)))
        lengths = {0, max(size - 1, 0), size + 1, P.MAX_PAYLOAD}
        for n in sorted(lengths):
            if code == P.EXIT and n == 0:
                continue  # EXIT itself: its own case
            cases.append((code, rng.integers(0, 256, n, dtype=np.uint8).tobytes()))
    return cases


def boundary_random(rng: np.random.Generator) -> tuple[int, bytes]:
    """A random combination of boundary values for a random command's fields."""
    code = int(rng.choice([c for c in REQUEST_LAYOUT if c != P.EXIT and REQUEST_LAYOUT[c]]))
    values = tuple(
        (int if k != "f" else float)(rng.choice(BOUNDARY[k])) for k in _fields(REQUEST_LAYOUT[code])
    )
    if code in VALID_BASE and rng.random() < 0.5:  # near-valid: half the fields from the base
        base = VALID_BASE[code]
        values = tuple(v if rng.random() < 0.5 else b for v, b in zip(values, base, strict=True))
    return code, _pack(code, values, rng)


def random_frame(rng: np.random.Generator) -> tuple[int, bytes]:
    codes = list(REQUEST_LAYOUT)
    code = int(rng.choice(codes)) if rng.random() < 0.7 else int(rng.integers(0, 256))
    fmt = REQUEST_LAYOUT.get(code, "")
    if rng.random() < 0.5 and fmt:
        n = struct.calcsize(fmt)
    else:
        n = int(
            rng.choice([0, 1, 2, 5, 10, 20, 40, 64, 200, 1024])
            if rng.random() < 0.5
            else rng.integers(0, 64)
        )
    payload = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if code == P.PROGRAM and len(payload) >= 6:  # keep max pulses small (see above)
        payload = (
            payload[:4] + struct.pack("<H", payload[4] % (MAX_PROGRAM_PULSES + 1)) + payload[6:]
        )
    if code == P.EXIT and not payload:
        payload = b"\x00"
    return code, payload


def random_bytes(rng: np.random.Generator) -> bytes:
    """Garbage ending in a delimiter. CR, Ctrl-C at a frame boundary (the terminal
    interrupt mpremote sends) leaves binary mode on purpose, as EXIT does, so that one
    sequence is broken up wherever the draw made it (every case starts at a boundary)."""
    n = int(rng.integers(1, 300))
    data = rng.integers(0, 256, n, dtype=np.uint8)
    if rng.random() < 0.5:  # mostly non-zero: long garbage frames, not just short pieces
        data[data == 0] = 1
    raw = data.tobytes()
    if raw.startswith(b"\r\x03"):
        raw = b"\r\x04" + raw[2:]
    return raw.replace(b"\x00\r\x03", b"\x00\r\x04") + b"\x00"


# ---- the board under test -----------------------------------------------------------------
class LineMonitor:
    """Wraps the board model's array events: counts events where a switched-in line is
    beyond the hard line limit (plus one DAC step), and the peak line voltage seen."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.events = 0
        self.violations = 0
        self.peak_v = 0.0
        inner = model._array_event

        def event(a: int) -> None:
            v = float(np.abs(model.line_voltages(a)).max())
            self.events += 1
            self.peak_v = max(self.peak_v, v)
            if v > HARD_V_LINE + LINE_TOLERANCE_V:
                self.violations += 1
            inner(a)

        model._array_event = event


class Link:
    """The host side: one serial port, a reader thread decoding answers as they come."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self.dec = P.Decoder()
        self.answers: list[tuple[int, int, bytes]] = []
        self.raw_tail = bytearray()
        self.text_hits = 0
        self.cond = threading.Condition()
        self.stop = False
        self._resync = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop:
            try:
                data = self.port.read(max(1, self.port.in_waiting))
            except (OSError, serial.SerialException, TypeError):
                return
            if self._resync:  # text (a REPL banner) came before: start a fresh frame
                self._resync = False
                self.dec.push(0)
            if not data:
                continue
            frames = self.dec.feed(data)
            tail = self.raw_tail + data
            if b"Traceback" in tail or b"interpreter exited" in tail:
                self.text_hits += 1
            self.raw_tail = tail[-32:]
            if frames:
                with self.cond:
                    self.answers.extend(frames)
                    self.cond.notify_all()

    def resync(self) -> None:
        self._resync = True
        time.sleep(0.1)

    def take(self) -> list[tuple[int, int, bytes]]:
        with self.cond:
            out, self.answers = self.answers, []
        return out

    def wait_for(self, pred: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.answers):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        self.stop = True
        self.thread.join(timeout=2)


@dataclass
class FuzzStats:
    runtime: str
    frames: int = 0
    cases: dict[str, int] = field(default_factory=dict)
    hello_failures: int = 0
    hangs: int = 0
    crashes: int = 0
    reboots: int = 0
    requested_reboots: int = 0
    e_hardware: int = 0
    damage_events: int = 0
    rating_errors: int = 0  # a part driven outside its datasheet rating (emulator check)
    line_violations: int = 0
    line_events: int = 0
    peak_line_v: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["frames_per_s"] = self.frames / self.wall_s if self.wall_s else 0.0
        return d


class FuzzBoard:
    """One emulated board kept open across cases (reset only when it stops answering)."""

    def __init__(self, runtime: str, seed: int = 0) -> None:
        self.runtime = runtime
        mpy = "&micropython=1" if runtime == "micropython" else ""
        self.port = serial.serial_for_url(f"emu://xbar-10x10?seed={seed}{mpy}", timeout=0.05)
        self.board: Any = self.port.board  # type: ignore[attr-defined]
        self.model = self.board.model
        self.monitor = LineMonitor(self.model)
        self.link = Link(self.port)
        self.seq = 0
        self.boots0 = self.board.boots

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0x7FFF  # fuzzed frames use 0x8000..0xFFFF
        return self.seq

    def request(
        self, code: int, payload: bytes = b"", timeout: float = 10.0
    ) -> tuple[int, bytes] | None:
        seq = self.next_seq()
        self.link.take()
        self.port.write(P.encode(code, seq, payload))
        ok = self.link.wait_for(lambda a: any(s == seq for _c, s, _b in a), timeout)
        if not ok:
            return None
        for c, s, body in self.link.take():
            if s == seq:
                return c, body
        return None

    def load_toy(self) -> None:
        data = toy_model()
        self.request(P.RESET)
        self.request(P.LOAD_BEGIN, struct.pack(P.LOAD_BEGIN_REQ, len(data), P.crc32(data)))
        self.request(P.LOAD_CHUNK, struct.pack(P.LOAD_CHUNK_REQ, 0) + data)
        self.request(P.LOAD_END)

    def alive(self) -> bool:
        if self.runtime == "in-process":
            return self.board._thread.is_alive() and self.board.last_error is None
        proc = self.board.proc
        return proc is not None and proc.poll() is None

    def close(self) -> None:
        self.link.close()
        self.port.close()


def run_batch(
    fb: FuzzBoard, cases: list[tuple[str, bytes]], stats: FuzzStats, per_case_s: float
) -> None:
    """Send the cases, each followed by a HELLO; check the board after the batch."""
    damage0 = fb.model.diagnostics["damage_events"]
    rating0 = fb.model.diagnostics["rating_errors"]
    viol0 = fb.monitor.violations
    hits0 = fb.link.text_hits
    hello_seqs = []
    wire = bytearray()
    for _kind, data in cases:
        wire += data
        s = fb.next_seq()
        hello_seqs.append(s)
        wire += P.encode(P.HELLO, s)
    fb.link.take()
    fb.port.write(bytes(wire))
    want = set(hello_seqs)
    got: set[int] = set()
    answers: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + 5.0 + per_case_s * len(cases)
    while got != want and time.monotonic() < deadline:
        fb.link.wait_for(lambda a: len(a) > 0, max(0.0, deadline - time.monotonic()))
        for c, s, body in fb.link.take():
            answers.append((c, s, body))
            if c == P.HELLO | P.RESPONSE and s in want:
                got.add(s)
    for c, _s, body in answers:
        name = (
            "ERROR " + P.ERROR_NAMES.get(body[0], "?")
            if c == P.ERROR and body
            else P.COMMAND_NAMES.get(c & 0x7F, "BUSY" if c == P.BUSY | P.RESPONSE else hex(c))
        )
        stats.answers[name] = stats.answers.get(name, 0) + 1
        if c == P.ERROR and body and body[0] == P.E_HARDWARE:
            stats.e_hardware += 1
            if len(stats.examples) < 10:
                stats.examples.append(f"E_HARDWARE: {P.parse_error(body)[2]}")
    for kind, _ in cases:
        stats.cases[kind] = stats.cases.get(kind, 0) + 1
    stats.frames += len(cases)
    missing = [i for i, s in enumerate(hello_seqs) if s not in got]
    if missing:
        stats.hello_failures += len(missing)
        stats.hangs += 1
        first = cases[missing[0]]
        if len(stats.examples) < 10:
            stats.examples.append(f"no HELLO after {first[0]} case {first[1][:40].hex()}")
    crashed = not fb.alive() or fb.link.text_hits != hits0
    if crashed:
        stats.crashes += 1
        if len(stats.examples) < 10:
            stats.examples.append(f"crash in batch: {getattr(fb.board, 'last_error', None)!r}")
    stats.damage_events += fb.model.diagnostics["damage_events"] - damage0
    stats.rating_errors += fb.model.diagnostics["rating_errors"] - rating0
    stats.line_violations += fb.monitor.violations - viol0
    if missing or crashed:
        recover(fb)


def recover(fb: FuzzBoard) -> None:
    """Bring a board that stopped answering back: Ctrl-D, then a hard reset."""
    fb.port.write(b"\x00")
    fb.link.resync()
    if fb.request(P.HELLO, timeout=3.0) is not None:
        return
    fb.port.write(b"\x04")
    fb.board.wait_ready(10)
    fb.link.resync()
    if fb.request(P.HELLO, timeout=5.0) is not None:
        return
    fb.board.reset()
    fb.board.wait_ready(30)
    fb.link.resync()
    fb.request(P.HELLO, timeout=10.0)


def exit_case(fb: FuzzBoard, stats: FuzzStats) -> None:
    """EXIT ends the firmware on purpose: it must answer, reboot on Ctrl-D, answer HELLO."""
    r = fb.request(P.EXIT, timeout=5.0)
    stats.frames += 1
    stats.cases["exit"] = stats.cases.get("exit", 0) + 1
    boots0 = fb.board.boots
    time.sleep(0.2)
    fb.port.write(b"\x04")
    deadline = time.monotonic() + 30
    while fb.board.boots == boots0 and time.monotonic() < deadline:
        time.sleep(0.02)
    fb.board.wait_ready(30)
    fb.link.resync()
    stats.requested_reboots += fb.board.boots - boots0
    h = fb.request(P.HELLO, timeout=10.0)
    if r is None or r[0] != P.EXIT | P.RESPONSE or h is None:
        stats.hello_failures += 1
        if len(stats.examples) < 10:
            stats.examples.append(f"EXIT case: answer {r!r}, HELLO after reboot {h is not None}")


def fuzz_runtime(
    runtime: str,
    frames: int,
    seed: int = 0,
    batch: int = 40,
    per_case_s: float = 2.0,
    log: Any = None,
) -> FuzzStats:
    """`frames` fuzz cases on one board of `runtime` ("in-process" or "micropython")."""
    rng = np.random.default_rng(seed)
    stats = FuzzStats(runtime)
    t0 = time.perf_counter()
    fb = FuzzBoard(runtime, seed)
    try:
        fb.load_toy()
        sweep = [("boundary", P.encode(c, 0x8000, p)) for c, p in boundary_sweep(rng)]
        exit_case(fb, stats)
        fb.load_toy()
        done = 1
        next_log = time.perf_counter() + 30
        while done < frames:
            cases: list[tuple[str, bytes]] = []
            while len(cases) < batch and done + len(cases) < frames:
                if sweep:
                    cases.append(sweep.pop())
                    continue
                u = rng.random()
                if u < 0.3:
                    cases.append(("random-bytes", random_bytes(rng)))
                elif u < 0.65:
                    c, p = random_frame(rng)
                    cases.append(
                        ("random-frame", P.encode(c, int(rng.integers(0x8000, 0x10000)), p))
                    )
                else:
                    c, p = boundary_random(rng)
                    cases.append(("boundary", P.encode(c, int(rng.integers(0x8000, 0x10000)), p)))
            run_batch(fb, cases, stats, per_case_s)
            done += len(cases)
            if rng.random() < 0.2:
                fb.load_toy()  # INFER/INFER_STREAM need a model; the fuzz unloads it
            if log is not None and time.perf_counter() > next_log:
                next_log += 30
                rate = done / (time.perf_counter() - t0)
                log(f"  {runtime}: {done}/{frames} frames, {rate:.0f}/s")
        stats.line_events = fb.monitor.events
        stats.peak_line_v = fb.monitor.peak_v
        stats.reboots = fb.board.boots - fb.boots0 - stats.requested_reboots
    finally:
        fb.close()
    stats.wall_s = time.perf_counter() - t0
    return stats
