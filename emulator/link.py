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
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from typing import Any

from xbar.emulator.hardware import BoardHalted, Hardware


class PtyClosedError(OSError):
    """The link was closed by the emulator (board stopped)."""


class Pty:
    """One pty pair: `path` for the host, `read`/`write` for the board side."""

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
            return os.read(self.master, max_bytes)
        except OSError as exc:  # EIO: transient on some kernels between client opens
            if self.closed:
                raise PtyClosedError("link closed") from exc
            return b""

    def write(self, data: bytes) -> None:
        """Send to the host; blocks while the host's input buffer is full, as USB-CDC
        does when the host stops reading."""
        view = memoryview(bytes(data))
        with self._write_lock:
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
