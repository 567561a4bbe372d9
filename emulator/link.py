"""The board's host link: a pseudo-terminal any serial client can open.

A real board enumerates as a USB-CDC serial device; the emulated one offers the slave
side of a pty, so pyserial, mpremote or `screen` open it exactly like `/dev/ttyACM0`.
Both sides are put in raw mode (no echo, no line discipline, no CR/LF translation):
the frame protocol is binary and the REPL does its own echo, as on the board.

The emulator keeps its own handle on the slave open for the pty's whole life, so a
client closing and reopening the port does not turn the master into end-of-file (on
Linux the master reads EIO once the last slave handle closes).

`LinkStream` is the in-process board's end of it: the firmware's stdin/stdout, fed by a
pump thread so that Ctrl-C reaches firmware that is busy computing.

Line faults (`LinkFaults`, off unless asked for): every byte between host and board
crosses `Pty.read` (host -> board) or `Pty.write` (board -> host), for both runtimes,
and there bits flip at a bit error rate, bytes are dropped and the line stalls, each
direction from its own seeded generator, so a run with the same bytes is reproducible.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass
from typing import Any

from xbar.emulator.hardware import BoardHalted, Hardware


class PtyClosedError(OSError):
    """The link was closed by the emulator (board stopped)."""


FAULT_DIRECTIONS = ("both", "to_board", "to_host")


@dataclass(frozen=True)
class FaultSpec:
    """What goes wrong on the line: `ber` each bit flips with this probability, `drop`
    each byte is lost with this probability, `stall` each byte holds the line for
    `stall_ms` first with this probability; `direction` `both`, `to_board` (host ->
    board only) or `to_host`; `seed` makes the faults reproducible."""

    ber: float = 0.0
    drop: float = 0.0
    stall: float = 0.0
    stall_ms: float = 100.0
    seed: int = 0
    direction: str = "both"

    @property
    def active(self) -> bool:
        return self.ber > 0 or self.drop > 0 or (self.stall > 0 and self.stall_ms > 0)

    def problems(self) -> list[str]:
        """What is wrong with these numbers, in words (empty: nothing)."""
        out = []
        for name in ("ber", "drop", "stall"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0 or math.isnan(value):
                out.append(f"{name} {value} is not a probability in [0, 1)")
        if not 0.0 <= self.stall_ms <= 60_000 or math.isnan(self.stall_ms):
            out.append(f"stall_ms {self.stall_ms} is not 0..60000")
        if self.direction not in FAULT_DIRECTIONS:
            out.append(
                f"fault direction {self.direction!r} is not one of {', '.join(FAULT_DIRECTIONS)}"
            )
        return out


class FaultChannel:
    """The faults of one direction. Events are placed by position in the byte stream
    (geometric gaps), so where they fall does not depend on how the bytes are chunked."""

    def __init__(self, spec: FaultSpec, name: str) -> None:
        self.spec = spec
        # One generator per kind of fault, so each falls where it would on its own.
        self._rng = {
            kind: random.Random(f"xbar-link:{spec.seed}:{name}:{kind}")
            for kind in ("flip", "drop", "stall")
        }
        self.bytes = 0  # bytes seen
        self.flipped = 0  # bits flipped
        self.dropped = 0  # bytes dropped
        self.stalls = 0  # stalls
        self._next_flip = self._gap(spec.ber, "flip")  # bit position
        self._next_drop = self._gap(spec.drop, "drop")  # byte positions
        self._next_stall = self._gap(spec.stall if spec.stall_ms > 0 else 0.0, "stall")

    def _gap(self, p: float, kind: str) -> float:
        if p <= 0:
            return math.inf
        u = self._rng[kind].random()
        return math.floor(math.log1p(-u) / math.log1p(-p))

    def apply(self, data: bytes) -> tuple[bytes, float]:
        """The bytes as they arrive and the seconds the line stalls before they do."""
        start, end = self.bytes, self.bytes + len(data)
        self.bytes = end
        out = bytearray(data)
        while self._next_flip < end * 8:
            bit = int(self._next_flip)
            out[bit // 8 - start] ^= 1 << (bit % 8)
            self.flipped += 1
            self._next_flip += 1 + self._gap(self.spec.ber, "flip")
        stall = 0.0
        while self._next_stall < end:
            stall += self.spec.stall_ms / 1000
            self.stalls += 1
            self._next_stall += 1 + self._gap(self.spec.stall, "stall")
        keep = bytearray()
        pos = start
        while self._next_drop < end:
            cut = int(self._next_drop)
            keep += out[pos - start : cut - start]
            pos = cut + 1
            self.dropped += 1
            self._next_drop += 1 + self._gap(self.spec.drop, "drop")
        if pos > start:
            keep += out[pos - start :]
            out = keep
        return bytes(out), stall


class LinkFaults:
    """Both directions of a faulty line: `to_board` (host -> board), `to_host`."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.to_board = FaultChannel(spec, "to_board") if spec.direction != "to_host" else None
        self.to_host = FaultChannel(spec, "to_host") if spec.direction != "to_board" else None

    def counts(self) -> dict[str, int]:
        """Faults injected so far, per direction: bits flipped, bytes dropped, stalls."""
        out: dict[str, int] = {}
        for name in ("to_board", "to_host"):
            ch = getattr(self, name)
            if ch is not None:
                out |= {
                    f"{name}_bytes": ch.bytes,
                    f"{name}_flipped": ch.flipped,
                    f"{name}_dropped": ch.dropped,
                    f"{name}_stalls": ch.stalls,
                }
        return out


class Pty:
    """One pty pair: `path` for the host, `read`/`write` for the board side; `faults`
    (a `LinkFaults`, set before the board starts) corrupts what crosses it."""

    faults: LinkFaults | None = None

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        for fd in (self.master, self._slave):
            tty.setraw(fd)
        self.path = os.ttyname(self._slave)
        self._stop_r, self._stop_w = os.pipe()
        self._write_lock = threading.Lock()
        self.closed = False

    def read(self, max_bytes: int = 4096, timeout: float | None = None) -> bytes:
        """Bytes the host sent (at least one), b"" on timeout; PtyClosedError once
        `close()` was called, so a board thread blocked here unwinds."""
        if self.closed:
            raise PtyClosedError("link closed")
        try:
            ready, _, _ = select.select([self.master, self._stop_r], [], [], timeout)
        except (OSError, ValueError) as exc:  # fds closed under us by close()
            raise PtyClosedError("link closed") from exc
        if self._stop_r in ready or self.closed:
            raise PtyClosedError("link closed")
        if not ready:
            return b""
        try:
            data = os.read(self.master, max_bytes)
        except OSError as exc:  # EIO: transient on some kernels between client opens
            if self.closed:
                raise PtyClosedError("link closed") from exc
            return b""
        channel = self.faults.to_board if self.faults is not None else None
        if channel is not None and data:
            data, stall = channel.apply(data)
            self._stall(stall)
        return data

    def _stall(self, seconds: float) -> None:
        """The line is quiet for `seconds` (cut short by `close()`)."""
        if seconds <= 0:
            return
        end = time.monotonic() + seconds
        while not self.closed and (left := end - time.monotonic()) > 0:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._stop_r], [], [], left)
        if self.closed:
            raise PtyClosedError("link closed")

    def write(self, data: bytes) -> None:
        """Send to the host; blocks while the host's input buffer is full, as USB-CDC
        does when the host stops reading."""
        data = bytes(data)
        with self._write_lock:
            channel = self.faults.to_host if self.faults is not None else None
            if channel is not None and data:
                data, stall = channel.apply(data)
                self._stall(stall)
            view = memoryview(data)
            while view:
                if self.closed:
                    raise PtyClosedError("link closed")
                _, ready, _ = select.select([], [self.master], [], 0.2)
                if ready:
                    view = view[os.write(self.master, view) :]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        os.write(self._stop_w, b"x")
        with self._write_lock:
            for fd in (self.master, self._slave, self._stop_r, self._stop_w):
                with contextlib.suppress(OSError):
                    os.close(fd)


class LinkStream:
    """`sys.stdin.buffer`/`sys.stdout.buffer` of the in-process board, on the pty.

    A pump thread moves host bytes into a buffer so that Ctrl-C is seen while the
    firmware computes: with the interrupt character enabled it is taken out of the
    stream and raised in the firmware at its next machine call (or read), as on a board.
    """

    def __init__(self, pty: Pty, hw: Hardware) -> None:
        self.pty = pty
        self.hw = hw
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.waiting = threading.Event()  # the firmware is blocked reading the host
        self._closed = False
        # Line timing (hw.line_baud): (position of a chunk's first byte, its first cycle).
        self._chunks: list[tuple[int, int]] = []
        self._received = 0
        self._taken = 0
        self._pump = threading.Thread(target=self._run, name="emu-link-pump", daemon=True)
        self._pump.start()

    BUFFER_LIMIT = 1 << 16
    """Host bytes held for the firmware; beyond this the pump stops reading and the
    pty's own buffer pushes back on the host, as USB-CDC flow control does."""

    def _run(self) -> None:
        while True:
            with self._cond:
                while len(self._buf) >= self.BUFFER_LIMIT and not self.hw.halted:
                    self._cond.wait(0.2)
            try:
                data = self.pty.read()
            except PtyClosedError:
                break
            if not data:
                continue
            data, interrupted = self.hw.strip_interrupt(data)
            if interrupted:
                self.hw.interrupt()
                with self._cond:
                    self._cond.notify_all()
            with self._cond:
                if self.hw.line_baud > 0 and data:
                    self._chunks.append((self._received, self.hw.line_stamp(len(data))))
                self._received += len(data)
                self._buf += data
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Let a blocked read re-check for reset, interrupt or stop."""
        with self._cond:
            self._cond.notify_all()

    # Deliberately no `any()`: `app.run` reads in chunks of what is ready from readers
    # that have one, and how the host's bytes happen to be split would then change the
    # firmware's work and the bytecodes charged. Without it `app.run` reads one byte a
    # call, as from the board's main.py stdin, and board time is reproducible.
    def available(self) -> int:
        with self._cond:
            return len(self._buf)

    def _take(self, n: int, exact: bool) -> bytes:
        with self._cond:
            while len(self._buf) < (n if exact else 1):
                if not self.waiting.is_set():
                    # Blocked on the host: the board's clock is complete up to here.
                    with self.hw.lock:
                        self.hw.flush_compute()
                    self.waiting.set()
                self.hw.ready.set()
                if self.hw.halted or self._closed:
                    raise BoardHalted
                self.hw.take_reset()
                if self.hw._interrupt:
                    self.hw._interrupt = False
                    raise KeyboardInterrupt
                self._cond.wait(0.5)
            self.waiting.clear()
            out = bytes(self._buf[:n])
            del self._buf[:n]
            if len(self._buf) + len(out) >= self.BUFFER_LIMIT:  # the pump may be waiting
                self._cond.notify_all()
            arrival = self._arrival(len(out))
        if arrival:
            self.hw.wait_line(arrival)
        self.hw.link_bytes(out)
        return out

    def _arrival(self, n: int) -> int:
        """With line timing: the cycle the last of the next n bytes is fully received."""
        self._taken += n
        if not self._chunks:
            return 0
        last = self._taken - 1
        while len(self._chunks) > 1 and self._chunks[1][0] <= last:
            self._chunks.pop(0)
        first, cycle = self._chunks[0]
        return cycle + (last - first + 1) * self.hw.byte_cycles()

    def read(self, n: int = -1) -> bytes:
        """Blocks for exactly n bytes, like MicroPython's `sys.stdin.buffer.read(n)`."""
        return self._take(n, exact=True) if n >= 0 else self._take(1 << 16, exact=False)

    def read1(self, n: int = 1 << 16) -> bytes:
        return self._take(n, exact=False)

    def readinto(self, buf: Any, n: int | None = None) -> int:
        """What is there, at least one byte (blocking): `app.run`'s reader contract."""
        data = self._take(len(buf) if n is None else n, exact=False)
        buf[: len(data)] = data
        return len(data)

    def readline(self) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            line += self._take(1, exact=True)
        return bytes(line)

    def write(self, data: Any) -> int:
        if isinstance(data, str):
            data = data.encode()
        with self.hw.lock:  # the host sees the board's clock as of this write
            self.hw.flush_compute()
        self.hw.link_bytes(bytes(data))
        self.pty.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass
