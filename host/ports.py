"""Finding boards: which serial ports hold an xbar board, a MicroPython REPL or neither
(`xbar ports`, `--port auto`), and handing a running board back to its REPL (`xbar repl`)
so MicroPython's own tools (mpremote, Thonny) can use it.

Probing is one HELLO frame and a short wait, on a port opened exclusively (a port another
program holds is reported busy and left alone). A MicroPython REPL must not run or lose
anything because of it: every HELLO frame starts with 0x03, 0x04 or 0x05 (COBS: the
header's length field is zero), and the probe's starts with 0x05, which puts a friendly
REPL in paste mode; the rest of the frame holds none of the bytes paste mode acts on
(Ctrl-B to Ctrl-D), so it is only buffered, and the probe then
cancels the paste (Ctrl-C, the one thing it does in paste mode) and asks for the banner
(Ctrl-B) to read the MicroPython version. A REPL left in raw mode gets Ctrl-B, back to
the friendly prompt. xbar firmware answers HELLO as at the start of every xbar
command: the session restarts (a LOADed model must be loaded again), the cells keep
their conductances. By default only ports whose USB id is an RP2040's or MicroPython's
are opened: opening a port resets many other boards (an Arduino's DTR reset), so those
are probed only when named or with `all_ports`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from serial.tools import list_ports
from xbar.firmware import protocol as P
from xbar.host.board import MCU_USB_VIDS, Hello, PortBusyError, PortError, _open
from xbar.host.protocol_client import intact_frames
from xbar.training.errors import XbarError

PROBE_TIMEOUT_S = 1.5
"""How long a probe waits for an answer: xbar firmware answers HELLO in milliseconds,
the emulated MicroPython board within a few hundred."""

# Bytes MicroPython's paste mode and raw REPL act on (pyexec.c): Ctrl-B (raw: back to the
# friendly REPL), Ctrl-C (cancel), Ctrl-D (paste: run; raw: run or soft reset).
_PASTE_ACTIVE = frozenset({0x02, 0x03, 0x04})
RAW_BANNER = b"raw REPL; CTRL-B to exit"
PASTE_BANNER = b"paste mode; Ctrl-C to cancel"

XBAR, OTHER_VERSION, MICROPYTHON, SILENT, BUSY, UNREADABLE, SKIPPED = (
    "xbar",
    "xbar-other-version",
    "micropython",
    "silent",
    "busy",
    "unreadable",
    "not-probed",
)


@dataclass(frozen=True)
class PortReport:
    """One port and what answered on it."""

    device: str
    description: str
    usb: str | None  # "VID:PID", hex
    state: str  # one of XBAR, OTHER_VERSION, MICROPYTHON, SILENT, BUSY, UNREADABLE, SKIPPED
    detail: str  # one line for people
    hello: Hello | None = None

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        if self.hello is not None:
            d["hello"] = {
                "protocol": self.hello.protocol,
                "firmware": ".".join(map(str, self.hello.firmware)),
                "max_payload": self.hello.max_payload,
                "profile": self.hello.profile,
            }
        return d


def probe_frame() -> tuple[int, bytes]:
    """A HELLO request (sequence number, wire bytes with a leading 0x00) that a friendly
    REPL only buffers in paste mode (module docstring)."""
    for seq in range(0x0101, 0x10000):
        wire = P.encode(P.HELLO, seq)
        if wire[0] == 0x05 and not _PASTE_ACTIVE.intersection(wire[1:]):
            return seq, b"\x00" + wire
    raise AssertionError("no HELLO sequence number avoids the REPL's control bytes")


def probe(device: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[str, str, Hello | None]:
    """(state, detail, hello) for one port; see the module docstring for what is sent."""
    try:
        port = _open(device)
    except PortBusyError:
        return BUSY, "busy: another program has it open (left alone)", None
    except PortError as exc:
        return UNREADABLE, str(exc), None
    try:
        seq, wire = probe_frame()
        port.write(wire)
        heard = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            heard += port.read(max(1, getattr(port, "in_waiting", 0) or 1))
            found = _answer(bytes(heard), seq)
            if found is not None:
                return found
            if (PASTE_BANNER in heard or RAW_BANNER in heard) and heard.endswith(wire[-3:]):
                break  # a REPL that buffered the whole frame: it will not answer
        if PASTE_BANNER in heard or RAW_BANNER in heard:
            # Paste mode: Ctrl-C cancels it (nothing runs); raw REPL: Ctrl-B leaves it,
            # the line cleared. Then Ctrl-B at the friendly prompt prints the banner.
            port.write(b"\x03\x02" if PASTE_BANNER in heard else b"\x02")
            banner = _read_for(port, 1.0)
            version = _micropython_version(bytes(heard) + banner)
            return (
                MICROPYTHON,
                f"MicroPython REPL{f' ({version})' if version else ''}, no xbar firmware "
                "running: `xbar flash` installs it (flashed already? a soft reset, Ctrl-D "
                "at the >>> prompt, starts it)",
                None,
            )
        if heard:
            return SILENT, f"sends {len(heard)} bytes that are neither xbar nor a REPL", None
        return SILENT, f"no answer within {timeout:g} s", None
    finally:
        close = getattr(port, "close", None)
        if close is not None:
            close()


def _read_for(port: object, seconds: float) -> bytes:
    out = bytearray()
    end = time.monotonic() + seconds
    read = port.read  # type: ignore[attr-defined]
    while time.monotonic() < end:
        out += read(max(1, getattr(port, "in_waiting", 0) or 1))
        if b"MicroPython v" in out and out.endswith(b">>> "):
            break
    return bytes(out)


def _answer(heard: bytes, seq: int) -> tuple[str, str, Hello | None] | None:
    """An xbar answer among the frames heard, if there is one."""
    for raw in intact_frames(heard):
        version, code, rseq, plen = struct.unpack_from(P.HEADER, raw, 0)
        if not code & P.RESPONSE:
            continue  # our own request echoed (a REPL or a loopback)
        if version != P.VERSION:
            return (
                OTHER_VERSION,
                f"xbar firmware speaking protocol {version} (this xbar speaks {P.VERSION}): "
                "`xbar flash` installs the matching firmware",
                None,
            )
        if code == (P.HELLO | P.RESPONSE) and rseq == seq:
            payload = raw[P.HEADER_SIZE : P.HEADER_SIZE + plen]
            n = struct.calcsize(P.HELLO_RESP)
            ver, a, b, c, maxp = struct.unpack_from(P.HELLO_RESP, payload, 0)
            hello = Hello(ver, (a, b, c), maxp, bytes(payload[n:]).decode())
            return (
                XBAR,
                f"xbar firmware {a}.{b}.{c}, protocol {ver}, profile {hello.profile}",
                hello,
            )
    return None


def _micropython_version(text: bytes) -> str | None:
    for line in text.decode(errors="replace").splitlines():
        if line.startswith("MicroPython v"):
            return line.split(";")[0].strip()
    return None


def _usb(info: object) -> str | None:
    vid, pid = getattr(info, "vid", None), getattr(info, "pid", None)
    return f"{vid:04x}:{pid:04x}" if vid is not None and pid is not None else None


def scan(
    extra: Sequence[str] = (), *, all_ports: bool = False, timeout: float = PROBE_TIMEOUT_S
) -> list[PortReport]:
    """Every serial port the system lists, plus `extra` (ptys, emu:// URLs), each probed
    unless it is neither named, nor an MCU's own USB port, nor `all_ports` asked."""
    reports = []
    seen = set()
    for info in sorted(list_ports.comports(), key=lambda i: i.device):
        seen.add(info.device)
        usb = _usb(info)
        desc = info.description if info.description and info.description != "n/a" else ""
        if all_ports or info.device in extra or getattr(info, "vid", None) in MCU_USB_VIDS:
            state, detail, hello = probe(info.device, timeout)
        else:
            state, detail, hello = (
                SKIPPED,
                "not probed: not an RP2040 or MicroPython USB id (name it, or --all)",
                None,
            )
        reports.append(PortReport(info.device, desc, usb, state, detail, hello))
    for device in extra:
        if device not in seen:
            state, detail, hello = probe(device, timeout)
            reports.append(PortReport(device, "", None, state, detail, hello))
    return reports


def pick(want: str = XBAR, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The one port answering as `want` (XBAR; MICROPYTHON also takes xbar boards, for
    flashing); an XbarError naming every port seen when there is none or several."""
    reports = scan(timeout=timeout)
    accept = {XBAR} if want == XBAR else {XBAR, OTHER_VERSION, MICROPYTHON}
    found = [r for r in reports if r.state in accept]
    if len(found) == 1:
        return found[0].device
    what = "xbar board" if want == XBAR else "MicroPython board"
    seen = "; ".join(f"{r.device}: {r.detail}" for r in reports) or "no serial ports"
    if not found:
        raise XbarError(f"--port auto: no {what} found (seen: {seen})")
    names = ", ".join(r.device for r in found)
    raise XbarError(f"--port auto: {len(found)} {what}s ({names}): name one with --port")


def to_repl(device: str, timeout: float = 10.0) -> str:
    """Stop the xbar firmware on `device` (EXIT: lines grounded, the firmware returns) so
    the board is at its MicroPython REPL; says what it did. A board already at its REPL
    is only probed (no HELLO retries typed into it)."""
    from xbar.host.board import Board, NotXbarError

    state, detail, _ = probe(device)
    if state == MICROPYTHON:
        return "already at the MicroPython REPL"
    if state in (BUSY, UNREADABLE):
        raise XbarError(f"{device}: {detail}")
    if state != XBAR:
        raise NotXbarError(f"{device}: {detail}")
    with Board(device, timeout=timeout) as board:
        board.exit()
    return "the firmware stopped; the board is at its MicroPython REPL"
