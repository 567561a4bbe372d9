"""`emu://` for pyserial: start an emulated board and open its pty.

    serial.serial_for_url("emu://xbar-10x10?seed=3")                 # in-process firmware
    serial.serial_for_url("emu://xbar-10x10?seed=3&micropython=1")   # real interpreter

Query parameters: `seed` (int, default 0), `device` (a device preset such as `pvk-best`,
default the board's), `noise` (`default` or `off`), `micropython` (0/1), and with micropython=1
`flash` (the board's flash folder, default a temporary one), `firmware` (0/1,
default 1: copy `firmware/*.py` into the flash before booting, as if flashed) and
`compute` (`calls`, default, or `measured`: see `MicroPythonBoard`); in-process only,
`baud` (host bytes reach the firmware at this UART rate in board time, 10 bits per byte;
default 0: no line timing). The
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
from xbar.emulator.runtime import EmulatedBoard

_FLAGS = {"0": False, "1": True, "false": False, "true": True, "no": False, "yes": True}


def board_from_url(url: str) -> EmulatedBoard:
    """The (not yet started) board an `emu://` URL names; ValueError naming what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "emu":
        raise ValueError(f"{url!r}: not an emu:// URL")
    profile = parts.netloc or parts.path.strip("/") or "xbar-10x10"
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    known = {"seed", "device", "noise", "micropython", "flash", "firmware", "compute", "baud"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ValueError(
            f"{url!r}: unknown parameter(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )

    def flag(name: str, default: bool) -> bool:
        value = query.get(name)
        if value is None:
            return default
        if value.lower() not in _FLAGS:
            raise ValueError(f"{url!r}: {name}={value!r} is not 0 or 1")
        return _FLAGS[value.lower()]

    try:
        seed = int(query.get("seed", "0"))
    except ValueError:
        raise ValueError(f"{url!r}: seed={query['seed']!r} is not an integer") from None
    try:
        model = board_model(profile, seed, query.get("device"), query.get("noise"))
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    if flag("micropython", False):
        if "baud" in query:
            raise ValueError(f"{url!r}: baud (line timing) needs the in-process runtime")
        from xbar.emulator.runtime_mpy import MicroPythonBoard

        compute = query.get("compute", "calls")
        if compute not in ("calls", "measured"):
            raise ValueError(f"{url!r}: compute={compute!r} is not 'calls' or 'measured'")
        return MicroPythonBoard(
            profile,
            seed,
            model,
            flash_dir=query.get("flash") or None,
            firmware=flag("firmware", True),
            measure_compute=compute == "measured",
        )
    if "flash" in query or "firmware" in query or "compute" in query:
        raise ValueError(f"{url!r}: flash/firmware/compute need micropython=1")
    from xbar.emulator.runtime import InProcessBoard

    try:
        baud = int(query.get("baud", "0"))
    except ValueError:
        baud = -1
    if baud < 0:
        raise ValueError(f"{url!r}: baud={query['baud']!r} is not a positive integer")
    return InProcessBoard(profile, seed, model, baud=baud)


def board_model(profile: str, seed: int, device: str | None, noise: str | None) -> Any:
    """The board model for a device preset and a noise preset; None if both are left to
    the runtime's default. ValueError names an unknown preset."""
    if device is None and noise is None:
        return None
    from xbar.emulator.board_model import BoardModel
    from xbar.emulator.board_profile import NoiseConfig, ProfileError
    from xbar.training.devices.model import DeviceModel, DeviceModelError

    try:
        return BoardModel(
            profile,
            seed=seed,
            device=DeviceModel.preset(device) if device else None,
            noise=NoiseConfig.preset(noise) if noise else None,
        )
    except (DeviceModelError, ProfileError) as exc:
        raise ValueError(str(exc)) from None


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
