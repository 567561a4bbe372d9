"""Virtual time of the emulated board, counted in MCU clock cycles.

Everything on the board happens in virtual time: SPI bytes take ``bits · mcu_hz / rate``
cycles at the rate the RP2040's SPI divider really produces (:func:`spi_rate`), firmware
computation is charged from :data:`CYCLE_COSTS`, and waits (DAC settling, pulse widths)
advance the clock without any wall-clock sleep. Counting integer cycles rather than float
seconds keeps runs bit-for-bit reproducible and lets the vectorised batch path reproduce
the byte-level path's timing exactly.

Calibration (one anchor for both runtimes): MicroPython v1.23.0 on an RP2040 at 125 MHz
runs the integer-addition benchmark below, 1,000,000 steps, in 7984 ms (public benchmark
table of the repository shaoziyang/micropython_benchmarks, README, RP2040 column).
Interpreted firmware work is counted in CPython opcodes (the in-process runtime traces
them, the MicroPython runtime counts them with `emulator.work_count`), so one opcode costs
7984 ms · 125 MHz / 1e6 / (opcodes per benchmark step): :data:`BYTECODE_CYCLES`.

The clock also tells the energy ledger whether the MCU is busy or idle over each span,
because the RP2040 draws very different currents in the two states.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

RP2040_HZ = 125_000_000
"""System clock (= clk_peri, the SPI's clock) of the reference board's RP2040."""

LOOP_STEPS = 1_000_000
LOOP_MS = 7984
"""The calibration anchor: ``add_test([1_000_000, 12345678, 56781234])`` took 7984 ms on
an RP2040 at 125 MHz under MicroPython v1.23.0 (shaoziyang/micropython_benchmarks, README,
"Integer addition 1000,000 times", RP2040 column)."""

LOOP_CYCLES_PER_STEP = LOOP_MS * (RP2040_HZ // 1000) / LOOP_STEPS
"""RP2040 cycles per benchmark step (998)."""


def add_test(p: Any) -> None:
    """The benchmark's loop, exactly as published (benchmark.py, ``add_test``)."""
    for _i in range(p[0]):
        C = p[1] + p[2]  # noqa: F841 - the benchmark's statement


def count_opcodes(func: Any, *args: Any) -> int:
    """CPython opcodes executed by ``func(*args)`` (its own frame and those it calls that
    are defined in the same file), counted with the tracer the in-process runtime uses."""
    name = func.__code__.co_filename
    count = 0

    def trace_op(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "opcode":
            count += 1
        return trace_op

    def trace_call(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == name:
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            return trace_op
        return None

    previous = sys.gettrace()
    sys.settrace(trace_call)
    try:
        func(*args)
    finally:
        sys.settrace(previous)
    return count


def opcodes_per_step(steps: int = 1000) -> float:
    """CPython opcodes per step of :func:`add_test` (11 on CPython 3.11), the
    difference of two loop lengths so call and exit overhead cancel."""
    a = count_opcodes(add_test, [steps, 12345678, 56781234])
    b = count_opcodes(add_test, [2 * steps, 12345678, 56781234])
    return (b - a) / steps


BYTECODE_CYCLES = round(LOOP_CYCLES_PER_STEP / opcodes_per_step())
"""RP2040 cycles per interpreted opcode (91 on CPython 3.11: 998 / 11)."""

NATIVE_SPEEDUP = {"viper": 32.0, "native": 1.5}
"""How much faster a ``@micropython.viper`` / ``@micropython.native`` function runs than
the same source interpreted. Calibrated on the unix port (x64), not on an RP2040: an
accumulate-and-round kernel over 256 int32/uint16 elements (``acc[i] = acc[i] +
((codes[i]*mul + r) >> s)``, 19 CPython opcodes per element) took 91.5–123 ns/element
interpreted, 2.83–3.0 viper and 61–62 native: viper 31.0–33.0×, native 1.48–1.49×
faster (best of 7 runs each, three runs, MicroPython 1.29.0-preview unix, ``time.time_ns``;
`python -m benchmarks.bench_board_time` reruns it and reports the ratio it measures
beside these). No published RP2040 viper figure is at hand, so that ratio is assumed to
carry over (Thumb-1 code is less dense than x64: treat viper figures as optimistic)."""

# Cycles of RP2040 (Cortex-M0+, 125 MHz) MicroPython work the firmware charges with
# ``BoardModel.charge(op, count)``. "bytecode", "viper_op" and "native_op" are
# calibrated (above); the machine-call overheads and the per-byte link work are
# estimates (a C call through the machine module, on top of the caller's opcodes, which
# are charged as bytecodes). Recalibrate by measuring on a board and loading the result
# with :func:`load_cycle_costs` (a JSON object of op -> cycles).
CYCLE_COSTS: dict[str, int] = {
    "bytecode": BYTECODE_CYCLES,  # one interpreted CPython opcode (calibrated)
    "viper_op": max(1, round(BYTECODE_CYCLES / NATIVE_SPEEDUP["viper"])),  # opcode in viper
    "native_op": max(1, round(BYTECODE_CYCLES / NATIVE_SPEEDUP["native"])),  # in native
    "call": 250,  # machine-module call overhead (estimate)
    "pin": 120,  # Pin.value() / on() / off() through the machine module (estimate)
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


def spi_rate(requested: int, clk_peri: int = RP2040_HZ) -> int:
    """The SCK rate the RP2040's SPI divider produces for a requested baud rate:
    clk_peri / (prescale · postdiv), prescale even 2..254 (SSPCPSR), postdiv 1..256
    (SCR + 1), chosen as the pico-sdk's ``spi_set_baudrate`` (which MicroPython's rp2 port
    calls) chooses them: the smallest prescale whose range reaches the request, then the
    largest rate not above it (below ~clk_peri/512 the sdk may land slightly above).
    RP2040 datasheet §4.4 (PrimeCell SSP, SSPCPSR and SSPCR0.SCR).
    """
    requested = int(requested)
    if requested <= 0:
        raise ValueError(f"SPI baud rate {requested} must be > 0")
    prescale = 2
    while prescale < 254 and clk_peri >= (prescale + 2) * 256 * requested:
        prescale += 2
    postdiv = 256
    while postdiv > 1 and clk_peri // (prescale * (postdiv - 1)) <= requested:
        postdiv -= 1
    return clk_peri // (prescale * postdiv)


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
        """Wire time of an SPI transfer asked for at ``baudrate``: ``ceil(bits · mcu_hz /
        rate)`` cycles at the rate the divider produces from clk_peri = mcu_hz
        (:func:`spi_rate`; 30 MHz asked gives 20.83 MHz at 125 MHz)."""
        rate = spi_rate(min(max(1, int(baudrate)), self.mcu_hz), self.mcu_hz)
        return -(-(8 * nbytes * self.mcu_hz) // rate)
