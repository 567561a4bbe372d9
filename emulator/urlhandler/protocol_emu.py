"""`emu://` for pyserial: start an emulated board and open its pty.

    serial.serial_for_url("emu://xbar-10x10?seed=3")                 # in-process firmware
    serial.serial_for_url("emu://xbar-10x10?seed=3&micropython=1")   # real interpreter

Query parameters: `seed` (int, default 0), `device` (a device preset such as `pvk-best`,
default the board's), `noise` (`default` or `off`), `micropython` (0/1), and with micropython=1
`flash` (the board's flash folder, default a temporary one), `firmware` (0/1,
default 1: copy `firmware/*.py` into the flash before booting, as if flashed) and
`compute` (`calls`, default, or `measured`: see `MicroPythonBoard`); in-process only,
`baud` (host bytes reach the firmware at this UART rate in board time, 10 bits per byte;
default 0: no line timing). Line faults, either runtime (see `xbar.emulator.link`):
`ber` (bit error rate), `drop` (probability a byte is lost), `stall` (probability a
byte first stalls the line) and `stall_ms` (default 100), `fault_seed` (int, default
0) and `fault_dir` (`both`, default, `to_board` or `to_host`), e.g.
`emu://xbar-10x10?ber=1e-4&drop=1e-5&fault_seed=3`. These are `BoardOptions` (firmware=0 is `blank`,
compute=measured `measure_compute`), built as `xbar emulate` builds them. The
board lives as long as the port is open: `close()` stops it. The open port's `board`
attribute is the emulated board (its model, clock, energy ledger, real-time factor).

It is a real serial port underneath: the class is pyserial's POSIX `Serial` opened on
the board's pty, so timeouts, `in_waiting` and termios behave as with hardware.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import serial
from serial.serialposix import Serial as PosixSerial
from xbar.emulator.build import DEFAULT_PROFILE, BoardOptions, BoardOptionsError, build_board
from xbar.emulator.emulated_board import EmulatedBoard

_FLAGS = {"0": False, "1": True, "false": False, "true": True, "no": False, "yes": True}

_PARAMETERS = (
    "seed",
    "device",
    "noise",
    "micropython",
    "flash",
    "firmware",
    "compute",
    "baud",
    "ber",
    "drop",
    "stall",
    "stall_ms",
    "fault_seed",
    "fault_dir",
)


def options_from_url(url: str) -> BoardOptions:
    """The board options an `emu://` URL spells; BoardOptionsError names what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "emu":
        raise BoardOptionsError("not an emu:// URL")
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(_PARAMETERS))
    if unknown:
        raise BoardOptionsError(
            f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(_PARAMETERS))})"
        )

    def flag(name: str, default: bool) -> bool:
        value = query.get(name)
        if value is None:
            return default
        if value.lower() not in _FLAGS:
            raise BoardOptionsError(f"{name}={value!r} is not 0 or 1")
        return _FLAGS[value.lower()]

    def integer(name: str) -> int:
        try:
            return int(query.get(name, "0"))
        except ValueError:
            raise BoardOptionsError(f"{name}={query[name]!r} is not an integer") from None

    def real(name: str, default: float) -> float:
        try:
            return float(query.get(name, default))
        except ValueError:
            raise BoardOptionsError(f"{name}={query[name]!r} is not a number") from None

    compute = query.get("compute", "calls")
    if compute not in ("calls", "measured"):
        raise BoardOptionsError(f"compute={compute!r} is not 'calls' or 'measured'")
    return BoardOptions(
        profile=parts.netloc or parts.path.strip("/") or DEFAULT_PROFILE,
        seed=integer("seed"),
        device=query.get("device"),
        noise=query.get("noise"),
        micropython=flag("micropython", False),
        flash=query.get("flash") or None,
        blank=not flag("firmware", True),
        measure_compute=compute == "measured",
        baud=integer("baud"),
        ber=real("ber", 0.0),
        drop=real("drop", 0.0),
        stall=real("stall", 0.0),
        stall_ms=real("stall_ms", 100.0),
        fault_seed=integer("fault_seed"),
        fault_dir=query.get("fault_dir", "both"),
    )


def board_from_url(url: str) -> EmulatedBoard:
    """The (not yet started) board an `emu://` URL names; BoardOptionsError says what is wrong."""
    try:
        return build_board(options_from_url(url))
    except BoardOptionsError as exc:
        raise BoardOptionsError(f"{url!r}: {exc}") from None


class Serial(PosixSerial):
    """A pyserial port whose device is an emulated board started on `open()`."""

    board: EmulatedBoard | None = None

    def open(self) -> None:
        url = self.port
        if url is None:
            raise serial.SerialException("Port must be configured before it can be used.")
        try:
            board = board_from_url(url)
        except (ValueError, KeyError) as exc:
            raise serial.SerialException(str(exc)) from exc
        board.start()
        self.board = board
        # pyserial's POSIX open() uses `portstr`; point it at the pty for the open only.
        self._port = self.portstr = board.port
        try:
            super().open()
        except BaseException:
            board.stop()
            self.board = None
            raise
        finally:
            self._port = self.portstr = url

    def close(self) -> None:
        try:
            super().close()
        finally:
            board, self.board = self.board, None
            if board is not None:
                board.stop()

    def from_url(self, url: str) -> str:  # pyserial's hook name for URL ports
        return url


def serial_class_for_url(url: str) -> tuple[str, Any]:
    return url, Serial
