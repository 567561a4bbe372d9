"""Virtual time of the emulated board, counted in MCU clock cycles.

Everything on the board happens in virtual time: SPI bytes take ``bits · mcu_hz / baud``
cycles, firmware computation is charged from :data:`CYCLE_COSTS`, and waits (DAC settling,
pulse widths) advance the clock without any wall-clock sleep. Counting integer cycles
rather than float seconds keeps runs bit-for-bit reproducible and lets the vectorised
batch path reproduce the byte-level path's timing exactly.

The clock also tells the energy ledger whether the MCU is busy or idle over each span,
because the RP2040 draws very different currents in the two states.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# Cycles of RP2040 (Cortex-M0+, 125 MHz) MicroPython work the firmware charges with
# ``BoardModel.charge(op, count)``. Bytecode figures: MicroPython runs roughly 1–3 M
# simple bytecodes/s on an RP2040, i.e. 40–120 cycles per op; viper/native inner loops
# cost a few cycles per element. Recalibrate by measuring on a board and loading the
# result with :func:`load_cycle_costs` (a JSON object of op -> cycles).
CYCLE_COSTS: dict[str, int] = {
    "bytecode": 60,  # one interpreted bytecode (loop step, attribute access, compare)
    "call": 250,  # Python-level function/method call
    "pin": 120,  # Pin.value() / on() / off() through the machine module
    "spi_call": 400,  # SPI.write / write_readinto call overhead, excluding the wire time
    "mac": 12,  # one int8 multiply-accumulate in a viper loop
    "add": 4,  # one int32 add in a viper loop
    "requant": 40,  # requantise one accumulator (multiply, shift, round, clamp)
    "relu": 6,  # clamp one activation at zero
    "byte": 3,  # copy/pack one byte in a native loop
    "crc_byte": 8,  # binascii.crc32 per byte
    "cobs_byte": 20,  # COBS encode/decode per byte (interpreted)
    "frame": 4_000,  # parse and dispatch one protocol frame
}


def load_cycle_costs(path: str | Path) -> dict[str, int]:
    """Read an op -> cycles JSON object and merge it over :data:`CYCLE_COSTS`.

    Raises ValueError naming the offending entry; nothing is changed on error.
    """
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: cycle costs must be a JSON object of op -> cycles")
    for op, cycles in data.items():
        if not (isinstance(cycles, int) and not isinstance(cycles, bool) and cycles >= 0):
            raise ValueError(f"{path}: cycle cost of {op!r} = {cycles!r} must be an int >= 0")
    return {**CYCLE_COSTS, **data}


class Clock:
    """MCU cycle counter; ``seconds`` is derived, never accumulated as a float."""

    def __init__(self, mcu_hz: int = 125_000_000) -> None:
        if mcu_hz <= 0:
            raise ValueError(f"mcu_hz = {mcu_hz} must be > 0")
        self.mcu_hz = int(mcu_hz)
        self.cycles = 0
        self.idle_cycles = 0  # of which the MCU was idle (sleep_us)

    @property
    def seconds(self) -> float:
        return self.cycles / self.mcu_hz

    def advance(self, cycles: int, idle: bool = False) -> None:
        cycles = int(cycles)
        if cycles < 0:
            raise ValueError(f"cannot advance the clock by {cycles} cycles")
        self.cycles += cycles
        if idle:
            self.idle_cycles += cycles

    def cycles_for(self, seconds: float) -> int:
        """Whole cycles covering ``seconds`` (rounded up: a wait is never short)."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"cannot wait {seconds!r} s")
        return math.ceil(seconds * self.mcu_hz - 1e-9)

    def advance_seconds(self, seconds: float, idle: bool = False) -> None:
        self.advance(self.cycles_for(seconds), idle=idle)

    def spi_cycles(self, nbytes: int, baudrate: int) -> int:
        """Wire time of an SPI transfer: ``ceil(bits · mcu_hz / baudrate)`` cycles."""
        return -(-(8 * nbytes * self.mcu_hz) // max(1, int(baudrate)))
