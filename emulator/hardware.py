"""The machine API on a board model, shared by both firmware runtimes.

`Hardware` is the one place where a MicroPython `machine`/`time` call meets the
`BoardModel`: it validates the call, charges the interpreter's overhead for it from the
board's cost table (`BoardModel.charge`), and forwards it. The in-process runtime calls
it from the shims in `emulator/mpy/`, the MicroPython one through the bridge
(`mpy_bridge.py`), so virtual time advances only through the board in either mode.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

CPU_HZ = 125_000_000
"""RP2040 system clock of the reference board, used if the model's clock omits it."""

N_PINS = 30
"""RP2040 GPIO 0..29."""

SPI_PINS = {0: (2, 3, 4), 1: (10, 11, 12)}
"""SPI bus -> (SCK, MOSI, MISO) as wired on xbar-10x10 rev A (docs/architecture.md)."""

SPI_MODE = (0, 1)
"""(polarity, phase) every part on the board expects: mode 1."""


class ModelLike(Protocol):
    """The part of `BoardModel` the runtimes drive."""

    clock: Any
    diagnostics: dict[str, int]

    def pin_write(self, pin: int, value: int) -> None: ...
    def pin_read(self, pin: int) -> int: ...
    def spi_transfer(self, bus: int, tx: bytes, baudrate: int) -> bytes: ...
    def charge(self, op: str, count: int = 1) -> None: ...
    def sleep_us(self, us: int) -> None: ...


class BoardReset(BaseException):
    """Unwinds the firmware for a hard reset (machine.reset(), watchdog)."""

    def __init__(self, cause: int) -> None:
        super().__init__(cause)
        self.cause = cause


class BoardHalted(BaseException):
    """Unwinds the firmware when the emulator stops the board."""


PWRON_RESET = 1
WDT_RESET = 3


class Hardware:
    """The machine API on a board model, shared by both runtimes.

    Thread-safe (one lock): the firmware thread or the bridge thread calls it while the
    host side reads the clock and ledger. `interrupt()` (Ctrl-C from the host while the
    firmware allows it) is delivered as KeyboardInterrupt at the firmware's next machine
    call, which is where a real board would notice it too between bytecodes.
    """

    # Cost-table operation charged per machine-API call (interpreter overhead of the
    # call itself; the bits, settling and sleeps are timed by the board model).
    COST_OP: ClassVar[dict[str, str]] = {
        "pin_write": "pin",
        "pin_read": "pin",
        "spi": "spi_call",
        "sleep_us": "call",
        "ticks": "call",
        "other": "call",
    }

    def __init__(self, model: ModelLike, seed: int = 0) -> None:
        self.model = model
        self.seed = seed
        self._token = secrets.token_hex(8)  # this board's own, for unique_id
        self.lock = threading.RLock()
        self.reset_cause_code = PWRON_RESET
        self.kbd_char = 3
        self.halted = False
        self._interrupt = False
        self._pins: set[int] = set()
        self._wdt_timeout_cycles = 0
        self._wdt_deadline = 0
        self._reset_request: int | None = None
        self.calls = 0
        self.calls_by_kind: dict[str, int] = {}  # the same, per kind (COST_OP's keys)
        self.bytecodes = 0  # firmware bytecodes charged so far (in-process runtime)
        self.pending_bytecodes = 0  # counted by the tracer, charged at the next call
        self.pending_viper = 0  # opcodes of @micropython.viper code, idem
        self.pending_native = 0  # opcodes of @micropython.native code, idem
        self.charge_link_work = False  # see link_bytes
        self._link_work = 0  # bytes and frame delimiters not yet charged (link_bytes)
        self._link_frames = 0
        self.line_baud = 0  # > 0: host bytes reach the firmware at this UART rate (board time)
        self._line_free = 0  # cycle at which the host->board line is next idle
        self.ready = threading.Event()  # booted: the firmware or REPL waits for the host
        # Called before the interrupt character changes (the MicroPython runtime drains
        # the interpreter's output first: its line-end cooking follows that character).
        self.before_kbd_change: Callable[[], None] | None = None

    # -- control from the host side ----------------------------------------------------
    def hz(self) -> int:
        clock = self.model.clock
        return int(getattr(clock, "mcu_hz", CPU_HZ))

    def interrupt(self) -> None:
        self._interrupt = True

    def strip_interrupt(self, data: bytes) -> tuple[bytes, bool]:
        """Host bytes without the keyboard-interrupt character, and whether it was there
        (the caller raises the interrupt its own way)."""
        char = self.kbd_char
        if 0 <= char < 256 and char in data:
            return data.replace(bytes([char]), b""), True
        return data, False

    def halt(self) -> None:
        self.halted = True

    def request_reset(self, cause: int = PWRON_RESET) -> None:
        """Hard reset at the firmware's next machine call or link read."""
        self._reset_request = cause

    def take_reset(self) -> None:
        """Raise the requested reset, if any (firmware side)."""
        cause, self._reset_request = self._reset_request, None
        if cause is not None:
            raise BoardReset(cause)

    def flush_compute(self) -> None:
        """Charge the bytecodes the firmware ran since the last call (interpreted, and in
        viper and native functions at their own costs: emulator/clock.py)."""
        n, self.pending_bytecodes = self.pending_bytecodes, 0
        if n:
            self.bytecodes += n
            self.model.charge("bytecode", n)
        v, self.pending_viper = self.pending_viper, 0
        if v:
            self.model.charge("viper_op", v)
        w, self.pending_native = self.pending_native, 0
        if w:
            self.model.charge("native_op", w)

    def link_bytes(self, data: bytes) -> None:
        """Host-link traffic (either direction): its energy, and, where the firmware's
        bytecodes are not counted (`charge_link_work`, the MicroPython runtime, whose
        interpreter has no counter), the firmware's frame work from the cost table: COBS
        and CRC per byte, and parse-and-dispatch per frame delimiter.

        That work is charged at the firmware's next watchdog feed (its command loop feeds
        after every read), not when the bytes pass the relay threads: a charge landing at
        a wall-clock moment could fall inside a write pulse or a timing calibration and
        change the physics, so runs with the same seed would differ."""
        if not data:
            return
        with self.lock:
            link = getattr(self.model, "link", None)
            if link is not None:
                link(len(data))
            if self.charge_link_work:
                self._link_work += len(data)
                self._link_frames += data.count(0)

    def _charge_link_work(self) -> None:
        """Charge the deferred frame work (see `link_bytes`); under the lock."""
        nbytes, frames = self._link_work, self._link_frames
        self._link_work = self._link_frames = 0
        if nbytes:
            self.model.charge("cobs_byte", nbytes)
            self.model.charge("crc_byte", nbytes)
        if frames:
            self.model.charge("frame", frames)

    def line_stamp(self, nbytes: int) -> int:
        """Board cycle at which the first of `nbytes` host bytes, sent now, starts to
        arrive: after the bytes still on the line (`line_baud`, 10 bits per byte)."""
        with self.lock:
            start = max(self._line_free, int(self.model.clock.cycles))
            self._line_free = start + nbytes * self.byte_cycles()
            return start

    def byte_cycles(self) -> int:
        return -(-10 * self.hz() // self.line_baud) if self.line_baud > 0 else 0

    def wait_line(self, cycle: int) -> None:
        """The firmware read a byte that is on the wire until `cycle`: the MCU idles until
        then (idle power), as a UART read would block."""
        with self.lock:
            wait = int(cycle) - int(self.model.clock.cycles)
            if wait <= 0:
                return
            ledger = getattr(self.model, "ledger", None)
            power = getattr(self.model, "power", None)
            if ledger is not None and power is not None:
                ledger.set_power("mcu", power.mcu_idle_w)
            self.model.clock.advance(wait, idle=True)
            self.model.diagnostics["line_wait_cycles"] += wait  # starved by the line
            if ledger is not None and power is not None:
                ledger.set_power("mcu", power.mcu_active_w)

    def power_on(self, cause: int) -> None:
        """State the MCU loses on reset (the board's parts keep theirs)."""
        with self.lock:
            self.reset_cause_code = cause
            self._wdt_timeout_cycles = 0
            self._interrupt = False
            self._reset_request = None
            self.ready.clear()
            self.kbd_char = -1  # the port's own boot is not interruptible; main.py is
            self.pending_bytecodes = self.pending_viper = self.pending_native = 0
            self._pins.clear()

    # -- the calls ---------------------------------------------------------------------
    def _enter(self, kind: str) -> None:
        """Bookkeeping every call shares: stop, reset, Ctrl-C, watchdog, overhead."""
        if self.halted:
            raise BoardHalted
        self.take_reset()
        self.calls += 1
        self.calls_by_kind[kind] = self.calls_by_kind.get(kind, 0) + 1
        self.flush_compute()
        self.model.charge(self.COST_OP[kind])
        if self._wdt_timeout_cycles and self.model.clock.cycles > self._wdt_deadline:
            self.model.diagnostics["wdt_resets"] = self.model.diagnostics.get("wdt_resets", 0) + 1
            raise BoardReset(WDT_RESET)
        if self._interrupt:
            self._interrupt = False
            raise KeyboardInterrupt

    def _pin(self, pin: int) -> int:
        if not 0 <= pin < N_PINS:
            raise ValueError(f"invalid pin {pin}")
        return pin

    def pin_init(self, pin: int) -> None:
        with self.lock:
            self._enter("other")
            self._pins.add(self._pin(pin))

    def pin_write(self, pin: int, value: int) -> None:
        with self.lock:
            self._enter("pin_write")
            self.model.pin_write(self._pin(pin), 1 if value else 0)

    def pin_read(self, pin: int) -> int:
        with self.lock:
            self._enter("pin_read")
            return int(self.model.pin_read(self._pin(pin)))

    def spi_init(
        self, bus: int, baudrate: int, polarity: int, phase: int, sck: int, mosi: int, miso: int
    ) -> None:
        with self.lock:
            self._enter("other")
            if bus not in SPI_PINS:
                raise ValueError(f"SPI({bus}) doesn't exist")
            wired = SPI_PINS[bus]
            for given, want, name in zip(
                (sck, mosi, miso), wired, ("sck", "mosi", "miso"), strict=True
            ):
                if given not in (-1, want):
                    raise ValueError(f"SPI({bus}) {name} is GPIO{want} on this board, not {given}")
            if baudrate <= 0:
                raise ValueError("baudrate must be positive")
            if (polarity, phase) != SPI_MODE:
                # The parts sample on the wrong edge: count it where tests can see it.
                d = self.model.diagnostics
                d["spi_mode_errors"] = d.get("spi_mode_errors", 0) + 1

    def spi(self, bus: int, baudrate: int, tx: bytes) -> bytes:
        with self.lock:
            self._enter("spi")
            if bus not in SPI_PINS:
                raise ValueError(f"SPI({bus}) doesn't exist")
            return bytes(self.model.spi_transfer(bus, bytes(tx), int(baudrate)))

    def sleep_us(self, us: int) -> None:
        with self.lock:
            self._enter("sleep_us")
            self.model.sleep_us(int(us))

    def ticks_us(self) -> int:
        with self.lock:
            self._enter("ticks")
            return int(self.model.clock.cycles) * 1_000_000 // self.hz()

    def ticks_cpu(self) -> int:
        with self.lock:
            self._enter("ticks")
            return int(self.model.clock.cycles)

    def wdt_start(self, timeout_ms: int) -> None:
        with self.lock:
            self._enter("other")
            if not 1 <= timeout_ms <= 8388:  # RP2040 watchdog maximum
                raise ValueError("WDT timeout must be 1..8388 ms")
            self._wdt_timeout_cycles = timeout_ms * self.hz() // 1000
            self._charge_link_work()
            self._wdt_deadline = self.model.clock.cycles + self._wdt_timeout_cycles

    def wdt_feed(self) -> None:
        with self.lock:
            self._enter("other")
            self._charge_link_work()
            if self._wdt_timeout_cycles:
                self._wdt_deadline = self.model.clock.cycles + self._wdt_timeout_cycles

    def freq(self) -> int:
        with self.lock:
            self._enter("other")
            return self.hz()

    def reset(self) -> None:
        raise BoardReset(PWRON_RESET)

    def reset_cause(self) -> int:
        return self.reset_cause_code

    def unique_id(self) -> bytes:
        """8 bytes, as the RP2040's flash id: from the seed and this object's own token,
        since an emulated board is a new board (fresh cells) each time it is made."""
        return hashlib.sha256(f"xbar-board-{self.seed}-{self._token}".encode()).digest()[:8]

    def kbd_intr(self, char: int) -> None:
        if self.before_kbd_change is not None and char != self.kbd_char:
            self.before_kbd_change()
        self.kbd_char = char
        if char < 0:
            self.ready.set()  # the firmware listens for binary frames, or the REPL waits
