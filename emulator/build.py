"""One emulated board from options: what `xbar emulate` and `emu://` URLs both build.

Each caller parses its own syntax (command-line flags, a URL's query) into `BoardOptions`
and calls `build_board`, so both paths have the same defaults and reject the same
combinations with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xbar.training.errors import XbarError

if TYPE_CHECKING:
    from xbar.emulator.emulated_board import EmulatedBoard
    from xbar.emulator.link import FaultSpec


class BoardOptionsError(XbarError, ValueError):
    """Options that describe no emulated board: says which and why."""


DEFAULT_PROFILE = "xbar-10x10"
"""The reference board, emulated when no profile is named."""


@dataclass(frozen=True)
class BoardOptions:
    """An emulated board as a user describes it."""

    profile: str = DEFAULT_PROFILE
    seed: int = 0
    """Seed of the board's devices and noise."""
    device: str | None = None
    """Device preset of the cells (None: the board model's default)."""
    noise: str | None = None
    """Noise preset, `default` or `off` (None: the board model's default)."""
    micropython: bool = False
    """Run the firmware under the real MicroPython interpreter, not in-process."""
    flash: str | None = None
    """MicroPython: the board's flash folder (None: a temporary one)."""
    blank: bool = False
    """MicroPython: boot the flash as it is instead of installing the firmware."""
    measure_compute: bool = False
    """MicroPython: also charge the interpreter's host CPU time (not reproducible)."""
    baud: int = 0
    """In-process: host bytes reach the firmware at this UART rate (0: no line timing)."""
    ber: float = 0.0
    """Line fault: each bit crossing the link flips with this probability."""
    drop: float = 0.0
    """Line fault: each byte crossing the link is lost with this probability."""
    stall: float = 0.0
    """Line fault: before each byte the link stalls `stall_ms` with this probability."""
    stall_ms: float = 100.0
    """Length of one stall, ms."""
    fault_seed: int = 0
    """Seed of the line faults (each direction draws from its own generator)."""
    fault_dir: str = "both"
    """Which way the faults hit: `both`, `to_board` (host -> board) or `to_host`."""

    @property
    def faults(self) -> FaultSpec:
        """The line faults these options ask for (`FaultSpec.active` False: none)."""
        from xbar.emulator.link import FaultSpec

        return FaultSpec(
            self.ber, self.drop, self.stall, self.stall_ms, self.fault_seed, self.fault_dir
        )


def build_board(options: BoardOptions) -> EmulatedBoard:
    """The board the options describe, not yet started; BoardOptionsError says what is wrong."""
    o = options
    if o.micropython and o.baud:
        raise BoardOptionsError("line timing (baud) needs the in-process runtime")
    if not o.micropython and (o.flash or o.blank or o.measure_compute):
        raise BoardOptionsError(
            "flash, blank and measure_compute need the MicroPython runtime (the "
            "in-process board runs the firmware source tree)"
        )
    if o.baud < 0:
        raise BoardOptionsError(f"baud {o.baud} is negative (0: no line timing)")
    problems = o.faults.problems()
    if problems:
        raise BoardOptionsError("; ".join(problems))
    board = _runtime(o)
    if o.faults.active:
        from xbar.emulator.link import LinkFaults

        board.pty.faults = LinkFaults(o.faults)
    return board


def _runtime(o: BoardOptions) -> EmulatedBoard:
    model = board_model(o.profile, o.seed, o.device, o.noise)
    if o.micropython:
        from xbar.emulator.runtime_mpy import MicroPythonBoard

        return MicroPythonBoard(
            o.profile,
            o.seed,
            model,
            flash_dir=o.flash,
            firmware=not o.blank,
            measure_compute=o.measure_compute,
        )
    from xbar.emulator.runtime import InProcessBoard

    return InProcessBoard(o.profile, o.seed, model, baud=o.baud)


def board_model(profile: str, seed: int, device: str | None, noise: str | None) -> Any:
    """The board model for a device preset and a noise preset; None if both are left to
    the runtime's default. BoardOptionsError names an unknown preset."""
    if device is None and noise is None:
        return None
    from xbar.emulator.board_model import BoardModel
    from xbar.emulator.board_profile import NoiseConfig, ProfileError
    from xbar.training.devices.device_model import DeviceModel, DeviceModelError

    try:
        return BoardModel(
            profile,
            seed=seed,
            device=DeviceModel.preset(device) if device else None,
            noise=NoiseConfig.preset(noise) if noise else None,
        )
    except (DeviceModelError, ProfileError) as exc:
        raise BoardOptionsError(str(exc)) from None
