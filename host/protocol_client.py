"""Request/response link over any serial-like byte stream, using the firmware's own
wire-format module (`xbar.firmware.protocol`, the same file the board runs).

One request in flight by default (`request`); `send`/`receive` let streaming keep a
window of requests outstanding (answers to other outstanding requests are kept until
asked for). Every response is matched by sequence number and code; error frames become
`FirmwareError` carrying the firmware's error code and reason.

Reliability: a request the board answered with E_CRC (its copy was corrupted, so it did
nothing) is sent again at once; one whose answer never came (lost or corrupted on the
way back) is sent again only if repeating it is harmless (`REPEATABLE`); both after a
short exponential backoff, at most `retries` times. With `adaptive` on (a faulty line),
quick commands (`QUICK`) wait for their answer only a retransmission timeout learned from
the answers so far (`rto`, doubled after each timeout, never past `timeout`) and are
tried at least `ADAPTIVE_RETRIES` times; `poll` takes whichever outstanding request is
answered next, for streams that detect losses themselves. A request that may take long
is probed with a HELLO behind it (`PROBE_AFTER_S`), so a board reset mid-command is
found in seconds, not at the end of its timeout. Only frames that pass their
CRC and answer an outstanding sequence number are ever returned; the BUSY frames a board
sends while a long command runs are taken apart (`busy`). `sync` negotiates: a board
busy with a command an earlier client left is waited for as long as its BUSY frames
keep coming, and one that answers in another protocol version, with a MicroPython REPL,
or not at all gets an error that says which and what to do.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from xbar.firmware import protocol as P
from xbar.training.errors import XbarError


class SerialLike(Protocol):
    """What the link needs from a port: pyserial's `Serial` satisfies it."""

    timeout: float | None

    def write(self, data: bytes, /) -> int | None: ...
    def read(self, size: int = 1, /) -> bytes: ...


class BoardError(XbarError):
    """Base of every error the board client raises."""


class LinkError(BoardError):
    """The link failed: timeout, malformed or unexpected frame."""


class LostError(LinkError):
    """No answer within the timeout (lost, corrupted on the way back, or the board stopped)."""


class VersionError(LinkError):
    """The board speaks another protocol version than this host."""


class NotXbarError(LinkError):
    """Something answers on the port, but not xbar firmware (e.g. a MicroPython REPL)."""


class FirmwareError(BoardError):
    """The firmware refused a request: `code` (protocol E_*), `command`, `reason`."""

    def __init__(self, code: int, command: int, reason: str) -> None:
        self.code = code
        self.command = command
        self.reason = reason
        name = P.ERROR_NAMES.get(code, f"error {code}")
        cmd = P.COMMAND_NAMES.get(command, f"0x{command:02x}")
        super().__init__(f"{cmd}: {name}: {reason}")


REPEATABLE = frozenset(
    {
        P.HELLO,
        P.INFO,
        P.READ,
        P.PROGRAM,
        P.LOAD_BEGIN,
        P.INFER,
        P.INFER_STREAM,
        P.SAFETY,
        P.RESET,
    }
)
"""Commands that may be sent again when their answer is lost: repeating them leaves the
board as one run would (PROGRAM write-verifies to the same targets again; LOAD_BEGIN
restarts the load). PULSE, LOAD_CHUNK, STATS (it may clear) and EXIT are not."""

BACKOFF_S = 0.02
"""First retry delay; doubled for each further retry."""

QUICK = frozenset(
    {P.HELLO, P.INFO, P.LOAD_BEGIN, P.LOAD_CHUNK, P.LOAD_END, P.STATS, P.SAFETY, P.RESET}
)
"""Commands the board answers without long work: on a faulty line (`Link.adaptive`)
their lost answers are given up on after `Link.rto`, not the whole timeout."""

RTO_MIN_S = 0.25
"""Shortest retransmission timeout."""

ADAPTIVE_RETRIES = 10
"""Tries of a request, at least, with `Link.adaptive` on."""

PROBE_AFTER_S = 2.0
"""How long an answer is awaited before the board is asked, by a HELLO sent behind the
request, whether it took the request at all. The firmware answers frames in order, so a
HELLO answered first means the request was never taken (the board was reset, or the
frame was lost): that is known within seconds instead of at the end of a long command's
timeout. Later probes follow at doubling intervals up to `PROBE_MAX_S`."""

PROBE_MAX_S = 8.0

BUSY_PATIENCE = 4.0
"""`sync` waits for a busy board while its last BUSY frame is younger than this many times
the longest gap seen between two of them (and never less than its own timeout): the
board's BUSY period is in board time, and an emulated board runs slower than a real one."""


class Link:
    """Frames out, frames in, sequence numbers, timeouts and retries on a port."""

    def __init__(self, port: SerialLike, timeout: float = 5.0, retries: int = 3) -> None:
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.decoder = P.Decoder()
        self.seq = 0
        self.retried = 0  # requests sent again (CRC errors, lost answers)
        self.bytes_out = 0  # every byte written, framing included
        self.bytes_in = 0  # every byte read
        self.drained = 0  # answers still owed that drain() took and dropped
        self.probe_losses = 0  # requests found lost because a later probe was answered first
        self._ready: list[tuple[int, int, bytes]] = []
        self._outstanding: set[int] = set()
        self._kept: dict[int, tuple[int, bytes]] = {}
        self._sniff: bytearray | None = None  # raw bytes, kept while sync() diagnoses
        self.adaptive = False  # faulty line: quick commands time out after `rto`
        self.busy: tuple[str, int, int] | None = None  # last BUSY: command, done, total
        self.busy_at = 0.0  # when it was heard (time.monotonic)
        self.busy_gap = 0.0  # longest wall time seen between two BUSY frames
        # Called once per sync with a line saying what it waits for (a busy board).
        self.on_busy: Callable[[str], None] | None = None
        self.lost = 0  # answers given up on (never came or came corrupted)
        self.crc_errors = 0  # requests the board answered with E_CRC
        self._srtt: float | None = None  # smoothed round trip, s
        self._rttvar = 0.0
        self._backoff = 1

    def observe(self, rtt: float) -> None:
        """One answered request's round trip (request written -> answer decoded)."""
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._backoff = 1

    def timed_out(self) -> None:
        """An answer did not come within `rto`: wait longer next time (up to `timeout`)."""
        self._backoff = min(self._backoff * 2, 64)

    @property
    def rto(self) -> float:
        """How long to wait for a quick answer before sending again (RFC 6298's rule)."""
        base = 1.0 if self._srtt is None else self._srtt + 4 * self._rttvar
        return min(self.timeout, max(RTO_MIN_S, base) * self._backoff)

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq

    @property
    def outstanding(self) -> int:
        """Requests sent whose answer has not been taken yet."""
        return len(self._outstanding)

    def send(self, code: int, payload: bytes = b"") -> int:
        """Send one request; returns its sequence number.

        A leading 0x00 ends whatever torn frame line noise may have left in the board's
        decoder (an empty frame is ignored), so one bad frame never costs the next.
        """
        seq = self.next_seq()
        wire = b"\x00" + P.encode(code, seq, payload)
        try:
            self.port.write(wire)
        except OSError as exc:  # pyserial's SerialException too: unplugged, closed
            raise LinkError(
                f"the port stopped working ({_first_line(exc)}): is the board still connected?"
            ) from None
        self.bytes_out += len(wire)
        self._outstanding.add(seq)
        return seq

    def forget(self, seq: int) -> None:
        """Stop waiting for the answer to `seq` (it will be discarded if it comes)."""
        self._outstanding.discard(seq)
        self._kept.pop(seq, None)

    def _frames(self, deadline: float, timeout: float) -> None:
        while not self._ready:
            if time.monotonic() > deadline:
                raise LostError(f"no response within {timeout:g} s")
            try:
                data = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            except OSError as exc:  # pyserial's SerialException too: unplugged, closed
                raise LinkError(
                    f"the port stopped working ({_first_line(exc)}): is the board still connected?"
                ) from None
            if data:
                self.bytes_in += len(data)
                if self._sniff is not None and len(self._sniff) < 4096:
                    self._sniff += data
                for frame in self.decoder.feed(data):
                    if frame[0] == P.BUSY | P.RESPONSE:
                        self._heard_busy(frame[2])
                    else:
                        self._ready.append(frame)

    def _heard_busy(self, payload: bytes) -> None:
        """A BUSY frame: the board is alive and running a long command."""
        try:
            cmd, done, total = struct.unpack(P.BUSY_MSG, payload)
        except struct.error:
            return  # a BUSY of another layout says no more than that the board is alive
        now = time.monotonic()
        if self.busy is not None:
            self.busy_gap = max(self.busy_gap, now - self.busy_at)
        self.busy = (P.COMMAND_NAMES.get(cmd, f"0x{cmd:02x}"), done, total)
        self.busy_at = now

    def receive(self, code: int, seq: int, timeout: float | None = None) -> bytes:
        """The payload of the response to request (code, seq); raises FirmwareError for
        an error frame answering it. Answers to other outstanding requests are kept for
        their own `receive`; anything else is discarded. `code` -1 takes any code."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            if seq in self._kept:
                rcode, payload = self._kept.pop(seq)
            else:
                self._frames(deadline, wait)
                rcode, rseq, payload = self._ready.pop(0)
                if rseq != seq:
                    if rseq in self._outstanding:
                        self._kept[rseq] = (rcode, payload)
                    continue  # a late answer to an abandoned request, or an echo of garbage
            self._outstanding.discard(seq)
            if rcode == P.ERROR:
                err, cmd, reason = P.parse_error(payload)
                raise FirmwareError(err, cmd, reason)
            if code >= 0 and rcode != (code | P.RESPONSE):
                raise LinkError(f"response code 0x{rcode:02x} to request 0x{code:02x}")
            return payload

    def poll(self, timeout: float) -> tuple[int, int, bytes] | None:
        """The next answer to any outstanding request, (seq, code, payload), or None if
        none came within `timeout`. Frames answering nothing outstanding are dropped."""
        if self._kept:
            seq = next(iter(self._kept))
            code, payload = self._kept.pop(seq)
            self._outstanding.discard(seq)
            return seq, code, payload
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                self._frames(deadline, timeout)
            except LostError:
                return None
            code, seq, payload = self._ready.pop(0)
            if seq in self._outstanding:
                self._outstanding.discard(seq)
                return seq, code, payload

    def request(self, code: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """Send and wait for the answer, retrying as the module docstring says."""
        attempt = 0
        quick = self.adaptive and code in QUICK and timeout is None
        retries = max(self.retries, ADAPTIVE_RETRIES) if self.adaptive else self.retries
        while True:
            seq = self.send(code, payload)
            t0 = time.monotonic()
            try:
                wait = self.rto if quick else (self.timeout if timeout is None else timeout)
                if not quick and wait > PROBE_AFTER_S and code != P.HELLO:
                    answer = self._await_probed(code, seq, wait)
                else:
                    answer = self.receive(code, seq, wait)
                if quick:
                    self.observe(time.monotonic() - t0)
                return answer
            except FirmwareError as exc:
                if exc.code != P.E_CRC:
                    raise
                self.crc_errors += 1
                if attempt >= retries:
                    raise
            except LostError:
                self.forget(seq)
                self.lost += 1
                if quick:
                    self.timed_out()
                if code not in REPEATABLE or attempt >= retries:
                    raise
            attempt += 1
            self.retried += 1
            time.sleep(min(BACKOFF_S * (1 << (attempt - 1)), 0.32))

    def _await_probed(self, code: int, seq: int, wait: float) -> bytes:
        """`receive` for a request that may take long, probing as `PROBE_AFTER_S` says."""
        deadline = time.monotonic() + wait
        probes: list[int] = []
        gap = PROBE_AFTER_S
        try:
            while True:
                try:
                    return self.receive(code, seq, min(gap, max(0.0, deadline - time.monotonic())))
                except LostError:
                    if time.monotonic() >= deadline:
                        raise
                if any(p in self._kept for p in probes):
                    self.probe_losses += 1
                    name = P.COMMAND_NAMES.get(code, f"0x{code:02x}")
                    raise LostError(
                        f"no answer to {name}: the board answered a later request first "
                        "(it was reset, or the request was lost on the way)"
                    )
                probes.append(self.send(P.HELLO))
                gap = min(2 * gap, PROBE_MAX_S)
        finally:
            for p in probes:
                self.forget(p)

    def sync(self, timeout: float) -> bytes:
        """Wait until the board answers HELLO; returns its payload.

        Until the firmware is in binary mode the board's stdin still treats 0x03 as
        Ctrl-C, so the HELLO frames sent here use sequence numbers whose wire bytes hold
        no 0x03 (nor 0x04, soft reboot), and are repeated while the board boots. A board
        that sends BUSY frames is running a command an earlier client left (killed
        mid-PROGRAM): it reads nothing until that ends, so no more HELLOs are sent and
        the wait lasts while BUSY frames keep coming (`BUSY_PATIENCE`); its answers to
        the HELLOs already sent then end the wait. If no answer comes, `diagnose` says
        why (other protocol version, REPL, silence).
        """
        deadline = time.monotonic() + timeout
        last: BoardError | None = None
        sent: list[int] = []
        told = False
        self.busy = None
        self.busy_gap = 0.0
        self._sniff = bytearray()
        try:
            while True:
                now = time.monotonic()
                busy = self.busy is not None and now - self.busy_at < max(
                    timeout, BUSY_PATIENCE * self.busy_gap
                )
                if now >= deadline and not busy:
                    break
                if busy and not told and self.on_busy is not None:
                    name, done, total = self.busy or ("?", 0, 0)
                    self.on_busy(
                        f"the board is busy finishing {name} ({done} of {total}) left by an "
                        "earlier client; waiting for it"
                    )
                    told = True
                if not busy or not sent:
                    seq = self.next_seq()
                    wire = P.encode(P.HELLO, seq)
                    if 3 in wire or 4 in wire:
                        continue
                    self.port.write(b"\x00" + wire)
                    self._outstanding.add(seq)
                    sent.append(seq)
                try:
                    answer = self.poll(min(0.5, self.timeout))
                except LinkError as exc:
                    last = exc
                    continue
                if answer is None:
                    continue
                _seq, code, payload = answer
                if code != P.HELLO | P.RESPONSE:
                    continue  # an error frame for a HELLO torn while the board booted
                proto = payload[0] if payload else -1
                if proto != P.VERSION:
                    raise VersionError(version_message(proto))
                return payload
            raise self.diagnose(timeout) from last
        finally:
            for seq in sent:
                self.forget(seq)
            self._sniff = None

    def diagnose(self, timeout: float) -> LinkError:
        """Why HELLO got no answer: frames of another protocol version (probing the
        neighbouring versions with HELLO), a MicroPython REPL, or silence."""
        heard = bytes(self._sniff or b"")
        other = frame_versions(heard)
        if not other:
            heard += self._probe()
            other = frame_versions(heard)
        if other:
            return VersionError(version_message(other[0]))
        repl = b">>>" in heard or b"raw REPL" in heard or b"MicroPython" in heard
        if repl or echoes_requests(heard):
            return NotXbarError(
                "the board answers like a MicroPython REPL (it echoes what it is sent), "
                "not like xbar firmware: flash it with `xbar flash --port PORT`"
            )
        if heard:
            return NotXbarError(
                f"the board did not answer HELLO within {timeout:g} s and sends bytes that "
                "are not xbar frames: is it running xbar firmware? (`xbar flash --port PORT`)"
            )
        return LinkError(
            f"board did not answer HELLO within {timeout:g} s: check the port and the "
            "board's power, and that xbar firmware is flashed (`xbar flash --port PORT`)"
        )

    def _probe(self, versions: tuple[int, ...] = (2, 3, 4, 5, 0)) -> bytes:
        """HELLO in other header versions; the raw bytes heard back."""
        heard = bytearray()
        for version in versions:
            seq = 0x0101
            raw = bytearray(struct.pack(P.HEADER, version, P.HELLO, seq, 0))
            raw += struct.pack("<I", P.crc32(raw))
            wire = bytearray(len(raw) + len(raw) // 254 + 2)
            n = P.cobs_encode(raw, len(raw), wire)
            if 3 in wire[:n] or 4 in wire[:n]:
                continue
            self.port.write(b"\x00" + bytes(wire[:n]) + b"\x00")
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                data = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
                heard += data
                if frame_versions(bytes(heard)):
                    return bytes(heard)
        return bytes(heard)

    def flush(self) -> None:
        """Terminate any partial frame on the board's side and drop pending input."""
        self.port.write(b"\x00")
        self._ready.clear()
        self._kept.clear()
        self._outstanding.clear()
        reset = getattr(self.port, "reset_input_buffer", None)
        if reset is not None:
            reset()

    def drain(self, timeout: float = 2.0) -> None:
        """Take (and drop) the answers still owed, so the board is idle and not blocked
        writing to a host that stopped reading."""
        deadline = time.monotonic() + timeout
        while self._outstanding and time.monotonic() < deadline:
            seq = min(self._outstanding)
            try:
                self.receive(-1, seq, timeout=max(0.01, deadline - time.monotonic()))
                self.drained += 1
            except BoardError:
                self.forget(seq)

    def close(self) -> None:
        close: Any = getattr(self.port, "close", None)
        if close is not None:
            close()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def intact_frames(data: bytes) -> list[bytes]:
    """The decoded frames (valid COBS and CRC, any version) in raw wire bytes."""
    found = []
    for chunk in bytes(data).split(b"\x00"):
        if len(chunk) < P.HEADER_SIZE + P.CRC_SIZE:
            continue
        try:
            raw = P.cobs_decode(chunk)
        except P.ProtocolError:
            continue
        if len(raw) < P.HEADER_SIZE + P.CRC_SIZE:
            continue
        (want,) = struct.unpack_from("<I", raw, len(raw) - P.CRC_SIZE)
        if P.crc32(raw[: -P.CRC_SIZE]) == want:
            found.append(raw)
    return found


def frame_versions(data: bytes) -> list[int]:
    """Protocol versions other than ours of the response frames (code with bit 7 set) in
    raw wire bytes; requests are skipped, so an echo of the probe is not a board."""
    return [raw[0] for raw in intact_frames(data) if raw[0] != P.VERSION and raw[1] & 0x80]


def echoes_requests(data: bytes) -> bool:
    """Whether the bytes hold our own request frames coming back (a REPL's echo)."""
    return any(not raw[1] & 0x80 for raw in intact_frames(data))


def version_message(board_version: int) -> str:
    return (
        f"the board speaks protocol version {board_version}, this xbar speaks version "
        f"{P.VERSION}: flash this xbar's firmware (`xbar flash --port PORT`) or use the "
        "xbar release that matches the board's firmware"
    )
