"""The board's host link: a pseudo-terminal any serial client can open.

A real board enumerates as a USB-CDC serial device; the emulated one offers the slave
side of a pty, so pyserial, mpremote or `screen` open it exactly like `/dev/ttyACM0`.
Both sides are put in raw mode (no echo, no line discipline, no CR/LF translation):
the frame protocol is binary and the REPL does its own echo, as on the board.

The emulator keeps its own handle on the slave open for the pty's whole life, so a
client closing and reopening the port does not turn the master into end-of-file (on
Linux the master reads EIO once the last slave handle closes).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty


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
