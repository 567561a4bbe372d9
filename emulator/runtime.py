"""Run the board's firmware against the board model: the machine API, firmware loading
in isolation, and the in-process runtime.

`Hardware` is the one place where a MicroPython `machine`/`time` call meets the
`BoardModel`: it validates the call, charges the interpreter's overhead for it from the
board's cost table (`BoardModel.charge`), and forwards it. Both runtimes use it: the
in-process one calls it directly from the shims in `emulator/mpy/` (loaded as CPython
modules), the MicroPython one through the bridge (`mpy_bridge.py`). So virtual time
advances only through the board (SPI bits, sleeps, charged costs) in either mode.

`InProcessBoard` runs the real firmware source (`firmware/*.py`) in a thread. Each board
loads its own copies of the firmware modules and the shims (`FirmwareNamespace`), with a
private `__import__`, so several boards in one process share no module state and
CPython's own `time`/`sys` are never replaced.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import importlib.util
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol

from xbar.emulator.link import Pty, PtyClosedError

MPY_DIR = Path(str(resources.files(__package__) / "mpy"))
"""Modules that run inside the firmware's interpreter (both runtimes)."""

FIRMWARE_DIR = Path(str(resources.files("xbar.firmware")))
"""The firmware source tree, flat modules as on the board's flash."""

CPU_HZ = 125_000_000
"""RP2040 system clock of the reference board, used if the model's clock omits it."""

HEAP_BYTES = 192 * 1024
"""The board's MicroPython heap (RP2040: 264 KB SRAM, ~190 KB heap)."""

N_PINS = 30
"""RP2040 GPIO 0..29."""

SPI_PINS = {0: (2, 3, 4), 1: (10, 11, 12)}
"""SPI bus -> (SCK, MOSI, MISO) as wired on xbar-10x10 rev A (docs/architecture.md)."""

SPI_MODE = (0, 1)
"""(polarity, phase) every part on the board expects: mode 1."""


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

BANNER = f"CPython {sys.version.split()[0]} (in-process firmware); {WIRE.BOARD}\r\n{WIRE.HELP}\r\n"
"""What the in-process board prints at its prompt."""


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


def make_model(profile: str, seed: int) -> ModelLike:
    """The board model for a profile (imported late: it is the heavy numpy part)."""
    from xbar.emulator.board_model import BoardModel

    return BoardModel(profile=profile, seed=seed)


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
        self.bytecodes = 0  # firmware bytecodes charged so far (in-process runtime)
        self.pending_bytecodes = 0  # counted by the tracer, charged at the next call
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
        """Charge the bytecodes the firmware ran since the last call."""
        n, self.pending_bytecodes = self.pending_bytecodes, 0
        if n:
            self.bytecodes += n
            self.model.charge("bytecode", n)

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
            self.pending_bytecodes = 0
            self._pins.clear()

    # -- the calls ---------------------------------------------------------------------
    def _enter(self, kind: str) -> None:
        """Bookkeeping every call shares: stop, reset, Ctrl-C, watchdog, overhead."""
        if self.halted:
            raise BoardHalted
        self.take_reset()
        self.calls += 1
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
        return hashlib.sha256(f"xbar-board-{self.seed}".encode()).digest()[:8]

    def kbd_intr(self, char: int) -> None:
        if self.before_kbd_change is not None and char != self.kbd_char:
            self.before_kbd_change()
        self.kbd_char = char
        if char < 0:
            self.ready.set()  # the firmware listens for binary frames, or the REPL waits


# -- firmware loading -----------------------------------------------------------------
def _gc_module() -> types.ModuleType:
    """`gc` as the firmware sees it in-process: CPython's heap is not the board's, so
    mem_free reports the board's heap size (what a freshly booted board has)."""
    mod = types.ModuleType("gc")
    mod.__dict__.update(
        collect=lambda: None,
        enable=lambda: None,
        disable=lambda: None,
        isenabled=lambda: True,
        mem_free=lambda: HEAP_BYTES,
        mem_alloc=lambda: 0,
        threshold=lambda *a: -1,
    )
    return mod


def _identity(x: Any) -> Any:
    return x


def print_exception_mpy(exc: BaseException, file: Any) -> None:
    """A traceback as MicroPython prints it (file, line, function; no source lines)."""
    lines = ["Traceback (most recent call last):"]
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).is_absolute():  # the emulator's frames, not the board's
            continue
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
    message = str(exc)
    lines.append(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
    text = "\r\n".join(lines) + "\r\n"
    target = getattr(file, "buffer", file)
    target.write(text.encode() if target is not file or isinstance(file, LinkStream) else text)


class FirmwareNamespace:
    """One board's private module table: firmware files and shims, loaded from source.

    Each module is a fresh `types.ModuleType` whose `__builtins__` carries a private
    `__import__`: names found here (the shims, the firmware's flat modules) resolve to
    this board's copies; anything else (`struct`, `binascii`, ...) to CPython's.
    """

    def __init__(
        self,
        hw: Hardware,
        stdin: Any,
        stdout: Any,
        firmware_dir: Path = FIRMWARE_DIR,
        profile: str | None = None,
    ) -> None:
        self.hw = hw
        self.firmware_dir = Path(firmware_dir)
        self.modules: dict[str, types.ModuleType] = {}
        self._builtins = dict(builtins.__dict__)
        self._builtins["__import__"] = self._import
        self._builtins["print"] = self._print
        self._stdout = stdout
        self._lock = threading.RLock()
        hw_mod = types.ModuleType("_emu_hw")
        for name in (
            "pin_init",
            "pin_write",
            "pin_read",
            "spi_init",
            "spi",
            "sleep_us",
            "ticks_us",
            "ticks_cpu",
            "wdt_start",
            "wdt_feed",
            "freq",
            "reset",
            "reset_cause",
            "unique_id",
        ):
            setattr(hw_mod, name, getattr(hw, name))
        self.modules["_emu_hw"] = hw_mod
        self.modules["gc"] = _gc_module()
        self.modules["micropython"] = self._micropython_module()
        self.modules["sys"] = self._sys_module(stdin, stdout)
        if profile is not None:  # what `install_firmware` writes on a board's flash
            config = types.ModuleType("xbar_profile")
            config.PROFILE = profile  # type: ignore[attr-defined]
            self.modules["xbar_profile"] = config

    def _print(self, *args: Any, sep: str = " ", end: str = "\n", file: Any = None) -> None:
        """The firmware's print() goes to the link, with the board's cooked line ends."""
        text = sep.join(str(a) for a in args) + end
        if file is not None and file is not self._stdout:
            file.write(text)
            return
        self._stdout.write(text.replace("\n", "\r\n"))

    def _micropython_module(self) -> types.ModuleType:
        mod = types.ModuleType("micropython")
        mod.__dict__.update(
            const=_identity,
            native=_identity,
            viper=_identity,
            kbd_intr=self.hw.kbd_intr,
            mem_info=lambda *a: None,
            qstr_info=lambda *a: None,
            opt_level=lambda *a: 0,
            heap_lock=lambda: 0,
            heap_unlock=lambda: 0,
            alloc_emergency_exception_buf=lambda n: None,
            schedule=lambda f, arg: f(arg),
        )
        return mod

    def _sys_module(self, stdin: Any, stdout: Any) -> types.ModuleType:
        mod = types.ModuleType("sys")
        mod.__dict__.update(
            stdin=stdin,
            stdout=stdout,
            stderr=stdout,
            modules=self.modules,
            path=[""],
            byteorder="little",
            maxsize=sys.maxsize,
            platform="rp2",
            implementation=sys.implementation,
            version=sys.version,
            version_info=sys.version_info,
            exit=sys.exit,
            argv=[],
            print_exception=lambda exc, file=stdout: print_exception_mpy(exc, file),
        )
        return mod

    def _import(
        self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> types.ModuleType:
        if level == 0:
            mod = self.load(name)
            if mod is not None:
                return mod
        return builtins.__import__(name, globals, locals, fromlist, level)

    def _source(self, name: str) -> Path | None:
        if "." in name:
            return None
        for folder in (self.firmware_dir, MPY_DIR):
            path = folder / f"{name}.py"
            if path.is_file() and not (folder is MPY_DIR and name.startswith("_emu_")):
                return path
        return None

    def load(self, name: str) -> types.ModuleType | None:
        """This board's module `name`, executed from source on first use; None when it
        is neither a shim nor a firmware module."""
        with self._lock:
            if name in self.modules:
                return self.modules[name]
            path = self._source(name)
            if path is None:
                return None
            mod = types.ModuleType(name)
            mod.__file__ = path.name
            mod.__dict__["__builtins__"] = self._builtins
            self.modules[name] = mod
            try:
                code = compile(path.read_text(), path.name, "exec")
                exec(code, mod.__dict__)
            except BaseException:
                del self.modules[name]
                raise
            return mod


# -- the link streams the firmware reads and writes ------------------------------------
class LinkStream:
    """`sys.stdin.buffer`/`sys.stdout.buffer` of the in-process board, on the pty.

    A pump thread moves host bytes into a buffer so that Ctrl-C is seen while the
    firmware computes: with the interrupt character enabled it is taken out of the
    stream and raised in the firmware at its next machine call (or read), as on a board.
    """

    def __init__(self, pty: Pty, hw: Hardware) -> None:
        self.pty = pty
        self.hw = hw
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.waiting = threading.Event()  # the firmware is blocked reading the host
        self._closed = False
        # Line timing (hw.line_baud): (position of a chunk's first byte, its first cycle).
        self._chunks: list[tuple[int, int]] = []
        self._received = 0
        self._taken = 0
        self._pump = threading.Thread(target=self._run, name="emu-link-pump", daemon=True)
        self._pump.start()

    BUFFER_LIMIT = 1 << 16
    """Host bytes held for the firmware; beyond this the pump stops reading and the
    pty's own buffer pushes back on the host, as USB-CDC flow control does."""

    def _run(self) -> None:
        while True:
            with self._cond:
                while len(self._buf) >= self.BUFFER_LIMIT and not self.hw.halted:
                    self._cond.wait(0.2)
            try:
                data = self.pty.read()
            except PtyClosedError:
                break
            if not data:
                continue
            data, interrupted = self.hw.strip_interrupt(data)
            if interrupted:
                self.hw.interrupt()
                with self._cond:
                    self._cond.notify_all()
            with self._cond:
                if self.hw.line_baud > 0 and data:
                    self._chunks.append((self._received, self.hw.line_stamp(len(data))))
                self._received += len(data)
                self._buf += data
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Let a blocked read re-check for reset, interrupt or stop."""
        with self._cond:
            self._cond.notify_all()

    # Deliberately no `any()`: `app.run` reads in chunks of what is ready from readers
    # that have one, and how the host's bytes happen to be split would then change the
    # firmware's work and the bytecodes charged. Without it `app.run` reads one byte a
    # call, as from the board's main.py stdin, and board time is reproducible.
    def available(self) -> int:
        with self._cond:
            return len(self._buf)

    def _take(self, n: int, exact: bool) -> bytes:
        with self._cond:
            while len(self._buf) < (n if exact else 1):
                if not self.waiting.is_set():
                    # Blocked on the host: the board's clock is complete up to here.
                    with self.hw.lock:
                        self.hw.flush_compute()
                    self.waiting.set()
                self.hw.ready.set()
                if self.hw.halted or self._closed:
                    raise BoardHalted
                self.hw.take_reset()
                if self.hw._interrupt:
                    self.hw._interrupt = False
                    raise KeyboardInterrupt
                self._cond.wait(0.5)
            self.waiting.clear()
            out = bytes(self._buf[:n])
            del self._buf[:n]
            if len(self._buf) + len(out) >= self.BUFFER_LIMIT:  # the pump may be waiting
                self._cond.notify_all()
            arrival = self._arrival(len(out))
        if arrival:
            self.hw.wait_line(arrival)
        self.hw.link_bytes(out)
        return out

    def _arrival(self, n: int) -> int:
        """With line timing: the cycle the last of the next n bytes is fully received."""
        self._taken += n
        if not self._chunks:
            return 0
        last = self._taken - 1
        while len(self._chunks) > 1 and self._chunks[1][0] <= last:
            self._chunks.pop(0)
        first, cycle = self._chunks[0]
        return cycle + (last - first + 1) * self.hw.byte_cycles()

    def read(self, n: int = -1) -> bytes:
        """Blocks for exactly n bytes, like MicroPython's `sys.stdin.buffer.read(n)`."""
        return self._take(n, exact=True) if n >= 0 else self._take(1 << 16, exact=False)

    def read1(self, n: int = 1 << 16) -> bytes:
        return self._take(n, exact=False)

    def readinto(self, buf: Any, n: int | None = None) -> int:
        """What is there, at least one byte (blocking): `app.run`'s reader contract."""
        data = self._take(len(buf) if n is None else n, exact=False)
        buf[: len(data)] = data
        return len(data)

    def readline(self) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            line += self._take(1, exact=True)
        return bytes(line)

    def write(self, data: Any) -> int:
        if isinstance(data, str):
            data = data.encode()
        with self.hw.lock:  # the host sees the board's clock as of this write
            self.hw.flush_compute()
        self.hw.link_bytes(bytes(data))
        self.pty.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


# -- boards ------------------------------------------------------------------------------
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


Entry = Callable[[FirmwareNamespace, LinkStream, LinkStream], None]


def firmware_entry(ns: FirmwareNamespace, reader: LinkStream, writer: LinkStream) -> None:
    """What the board's `main.py` does: `app.run(reader, writer)`."""
    app = ns.load("app")
    if app is None:
        raise ImportError("no module named 'app' in the firmware folder")
    app.run(reader, writer)


class InProcessBoard(EmulatedBoard):
    """The firmware under CPython, in a thread of this process.

    Boot = a fresh `FirmwareNamespace` and `entry` (default `app.run(reader, writer)`).
    A firmware exception is printed on the link as a MicroPython traceback; when the
    entry returns or fails the board sits at a REPL prompt, where Ctrl-D reboots it
    (this runtime has no Python REPL; the MicroPython runtime has the real one).
    """

    def __init__(
        self,
        profile: str = "xbar-10x10",
        seed: int = 0,
        model: ModelLike | None = None,
        entry: Entry = firmware_entry,
        firmware_dir: Path = FIRMWARE_DIR,
        count_bytecodes: bool = True,
        baud: int = 0,
    ) -> None:
        super().__init__(profile, seed, model)
        self.hw.line_baud = int(baud)  # > 0: host bytes arrive at this UART rate
        self.entry = entry
        self.firmware_dir = Path(firmware_dir)
        self.count_bytecodes = count_bytecodes
        self._traced = {p.name for p in self.firmware_dir.glob("*.py")}
        self.stream = LinkStream(self.pty, self.hw)
        self.namespace: FirmwareNamespace | None = None
        self.boots = 0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="emu-firmware", daemon=True)

    def start(self, wait: bool = True) -> InProcessBoard:
        super().start(wait)
        return self

    def _power_on(self) -> None:
        self._thread.start()

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the firmware blocks on the link with nothing left to read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread.is_alive():
            if self.stream.waiting.wait(0.05) and not self.stream.available():
                return

    def _boot_once(self) -> None:
        self.boots += 1
        self.namespace = FirmwareNamespace(
            self.hw, self._sys_stdio(), self._sys_stdio(), self.firmware_dir, self.profile
        )
        self.hw.kbd_char = 3  # as while a board runs main.py
        if self.count_bytecodes:
            sys.settrace(self._trace_call)
        try:
            self.entry(self.namespace, self.stream, self.stream)
        finally:
            sys.settrace(None)
            with self.hw.lock:
                self.hw.flush_compute()

    # The firmware's own computation is charged per bytecode it executes (the cost
    # table's "bytecode"), counted with CPython's opcode tracing in firmware frames only:
    # deterministic, and close to MicroPython's bytecode count for the same source.
    def _trace_call(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename in self._traced:
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            return self._trace_opcode
        return None

    def _trace_opcode(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            hw = self.hw
            hw.pending_bytecodes += 1
            if hw.halted:  # stop() reaches firmware that computes without machine calls
                raise BoardHalted
            if hw._interrupt and hw.kbd_char >= 0:  # and so does Ctrl-C, between bytecodes
                hw._interrupt = False
                raise KeyboardInterrupt
        return self._trace_opcode

    def _sys_stdio(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            buffer=self.stream, write=self.stream.write, read=self.stream.read
        )

    def _main(self) -> None:
        cause = PWRON_RESET
        while not self.hw.halted:
            self.hw.power_on(cause)
            cause = PWRON_RESET
            try:
                self._boot_once()
            except BoardReset as exc:
                cause = exc.cause
                continue
            except (BoardHalted, PtyClosedError):
                break
            except BaseException as exc:  # the board survives whatever the firmware does
                self.last_error = exc
                with contextlib.suppress(PtyClosedError):
                    print_exception_mpy(exc, self.stream)
            if not self._prompt():
                break

    def _prompt(self) -> bool:
        """The REPL prompt after the firmware ended: True to reboot (Ctrl-D)."""
        try:
            self.hw.kbd_intr(-1)
            self.stream.write(BANNER.encode() + b">>> ")
            while True:
                try:
                    char = self.stream.read(1)
                except BoardReset as exc:
                    self.hw.reset_cause_code = exc.cause
                    return True
                if char == b"\x04":
                    self.stream.write(b"MPY: soft reboot\r\n")
                    return True
                if char in (b"\r", b"\n", b"\x03"):
                    self.stream.write(b"\r\n>>> ")
        except (BoardHalted, PtyClosedError):
            return False

    def reset(self, cause: int = PWRON_RESET) -> None:
        """Hard reset: the firmware unwinds at its next machine call or link read."""
        self.hw.request_reset(cause)
        self.stream.wake()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.hw.halt()
        self.stream.wake()
        self.pty.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
