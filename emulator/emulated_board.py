"""The emulated board both runtimes run: where its code comes from, its model, its
pty and its virtual time; `InProcessBoard` and `MicroPythonBoard` add the firmware."""

from __future__ import annotations

import importlib.util
import time
import types
from importlib import resources
from pathlib import Path

from xbar.emulator.hardware import Hardware, ModelLike
from xbar.emulator.link import Pty

MPY_DIR = Path(str(resources.files(__package__) / "mpy"))
"""Modules that run inside the firmware's interpreter (both runtimes)."""

FIRMWARE_DIR = Path(str(resources.files("xbar.firmware")))
"""The firmware source tree, flat modules as on the board's flash."""


def load_mpy_module(name: str) -> types.ModuleType:
    """A module of `emulator/mpy/` written in the common subset, loaded into CPython."""
    path = MPY_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"xbar.emulator.{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WIRE = load_mpy_module("_emu_wire")
"""The bridge wire format and the REPL banner, shared with the MicroPython side."""


def make_model(profile: str, seed: int) -> ModelLike:
    """The board model for a profile (imported late: it is the heavy numpy part)."""
    from xbar.emulator.board_model import BoardModel

    return BoardModel(profile=profile, seed=seed)


class EmulatedBoard:
    """What both runtimes share: the model, the machine API, the pty and timing."""

    def __init__(
        self, profile: str = "xbar-10x10", seed: int = 0, model: ModelLike | None = None
    ) -> None:
        self.profile = profile
        self.seed = seed
        self.model = model if model is not None else make_model(profile, seed)
        self.hw = Hardware(self.model, seed)
        self.pty = Pty()
        self.port = self.pty.path
        self._wall0 = time.perf_counter()
        self._cycles0 = int(self.model.clock.cycles)
        self._stopped = False

    # -- timing -------------------------------------------------------------------
    def board_seconds(self) -> float:
        return int(self.model.clock.cycles) / self.hw.hz()

    def mark(self) -> tuple[float, int]:
        """A point to measure the real-time factor from (see `realtime_factor`): wall
        time and board cycles, once the firmware waits for the host where the runtime
        can tell (in-process), so the work a response's tail still does is counted on
        the same side of the mark in every run."""
        self.settle()
        with self.hw.lock:
            return time.perf_counter(), int(self.model.clock.cycles)

    def realtime_factor(self, since: tuple[float, int] | None = None) -> float:
        """Virtual board seconds ÷ wall seconds since `since` (default: board start).

        Above 1 the emulation runs faster than the board would; idle time (the board
        waiting for the host) counts as wall time but advances no board time, so mark
        around busy work to measure the emulator's speed.
        """
        wall0, cycles0 = since if since is not None else (self._wall0, self._cycles0)
        wall, cycles = self.mark()
        return (cycles - cycles0) / self.hw.hz() / max(wall - wall0, 1e-9)

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the firmware has finished with what the host sent (if the runtime
        can see it); a no-op where it cannot."""

    # -- life cycle ---------------------------------------------------------------
    BOOT_TIMEOUT_S = 60.0

    def start(self, wait: bool = True) -> EmulatedBoard:
        """Power on and (with `wait`) return once the board listens, as a board plugged
        in long before the host connects: its firmware turned Ctrl-C off for binary
        frames, read the link, or reached the REPL. A host frame sent earlier could
        carry a 0x03 byte into a still-booting firmware and interrupt it."""
        self._power_on()
        if wait:
            self.hw.ready.wait(self.BOOT_TIMEOUT_S)
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the board to listen again (after a reset)."""
        return self.hw.ready.wait(self.BOOT_TIMEOUT_S if timeout is None else timeout)

    def _power_on(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Hard reset (the board's RUN pin)."""
        raise NotImplementedError

    def __enter__(self) -> EmulatedBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
