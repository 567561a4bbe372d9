"""Request/response link over any serial-like byte stream, using the firmware's own
wire-format module (`xbar.firmware.protocol`, the same file the board runs).

One request in flight by default (`request`); `send`/`receive` let streaming keep a
window of requests outstanding. Every response is matched by sequence number and code;
error frames become `FirmwareError` carrying the firmware's error code and reason.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from xbar.firmware import protocol as P


class SerialLike(Protocol):
    """What the link needs from a port: pyserial's `Serial` satisfies it."""

    timeout: float | None

    def write(self, data: bytes, /) -> int | None: ...
    def read(self, size: int = 1, /) -> bytes: ...


class BoardError(Exception):
    """Base of every error the board client raises."""


class LinkError(BoardError):
    """The link failed: timeout, malformed or unexpected frame."""


class FirmwareError(BoardError):
    """The firmware refused a request: `code` (protocol E_*), `command`, `reason`."""

    def __init__(self, code: int, command: int, reason: str) -> None:
        self.code = code
        self.command = command
        self.reason = reason
        name = P.ERROR_NAMES.get(code, f"error {code}")
        cmd = P.COMMAND_NAMES.get(command, f"0x{command:02x}")
        super().__init__(f"{cmd}: {name}: {reason}")


class Link:
    """Frames out, frames in, sequence numbers and timeouts on a `SerialLike` port."""

    def __init__(self, port: SerialLike, timeout: float = 5.0) -> None:
        self.port = port
        self.timeout = timeout
        self.decoder = P.Decoder()
        self.seq = 0
        self._ready: list[tuple[int, int, bytes]] = []

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq

    def send(self, code: int, payload: bytes = b"") -> int:
        """Send one request; returns its sequence number.

        A leading 0x00 ends whatever torn frame line noise may have left in the board's
        decoder (an empty frame is ignored), so one bad frame never costs the next.
        """
        seq = self.next_seq()
        self.port.write(b"\x00" + P.encode(code, seq, payload))
        return seq

    def _frames(self, deadline: float, timeout: float) -> None:
        while not self._ready:
            if time.monotonic() > deadline:
                raise LinkError(f"no response within {timeout:g} s")
            data = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            if data:
                self._ready.extend(self.decoder.feed(data))

    def receive(self, code: int, seq: int, timeout: float | None = None) -> bytes:
        """The payload of the response to request (code, seq); raises FirmwareError for
        an error frame answering it. Frames answering other requests are discarded."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            self._frames(deadline, wait)
            rcode, rseq, payload = self._ready.pop(0)
            if rseq != seq:
                continue  # a late answer to an abandoned request, or an echo of garbage
            if rcode == P.ERROR:
                err, cmd, reason = P.parse_error(payload)
                raise FirmwareError(err, cmd, reason)
            if rcode != (code | P.RESPONSE):
                raise LinkError(f"response code 0x{rcode:02x} to request 0x{code:02x}")
            return payload

    def request(self, code: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        return self.receive(code, self.send(code, payload), timeout)

    def sync(self, timeout: float) -> bytes:
        """Wait until the board answers HELLO; returns its payload.

        Until the firmware is in binary mode the board's stdin still treats 0x03 as
        Ctrl-C, so the HELLO frames sent here use sequence numbers whose wire bytes hold
        no 0x03 (nor 0x04, soft reboot), and are repeated while the board boots.
        """
        deadline = time.monotonic() + timeout
        last: BoardError | None = None
        while time.monotonic() < deadline:
            seq = self.next_seq()
            wire = P.encode(P.HELLO, seq)
            if 3 in wire or 4 in wire:
                continue
            self.port.write(b"\x00" + wire)
            try:
                return self.receive(P.HELLO, seq, timeout=min(0.5, self.timeout))
            except LinkError as exc:
                last = exc
        raise LinkError(f"board did not answer HELLO within {timeout:g} s") from last

    def flush(self) -> None:
        """Terminate any partial frame on the board's side and drop pending input."""
        self.port.write(b"\x00")
        self._ready.clear()
        reset = getattr(self.port, "reset_input_buffer", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        close: Any = getattr(self.port, "close", None)
        if close is not None:
            close()
