"""The in-process runtime: the board's firmware source under CPython, in a thread.

`InProcessBoard` runs `firmware/*.py` against the board model. Each board loads its own
copies of the firmware modules and the shims (`FirmwareNamespace`), with a private
`__import__`, so several boards in one process share no module state and CPython's own
`time`/`sys` are never replaced.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xbar.emulator import work_count
from xbar.emulator.emulated_board import FIRMWARE_DIR, MPY_DIR, WIRE, EmulatedBoard
from xbar.emulator.hardware import PWRON_RESET, BoardHalted, BoardReset, Hardware, ModelLike
from xbar.emulator.link import LinkStream, PtyClosedError

HEAP_BYTES = 192 * 1024
"""The board's MicroPython heap (RP2040: 264 KB SRAM, ~190 KB heap)."""

BANNER = f"CPython {sys.version.split()[0]} (in-process firmware); {WIRE.BOARD}\r\n{WIRE.HELP}\r\n"
"""What the in-process board prints at its prompt."""


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


VIPER_BUILTINS = {"ptr8": _identity, "ptr16": _identity, "ptr32": _identity, "uint": int}
"""Viper's pointer casts and type names under CPython: the firmware's viper functions
index the typed buffers (`array`, `bytearray`) they are given, so a cast is the buffer."""


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
        self._builtins.update(VIPER_BUILTINS)
        self._builtins["__import__"] = self._import
        # Code objects of the firmware's @micropython.viper / @micropython.native
        # functions -> the cost-table op their opcodes are charged as (emulator/clock.py).
        self.emitted: dict[types.CodeType, str] = {}
        # ... and, for viper code, the offsets of its object operations (charged as
        # interpreted opcodes: emulator/work_count.py, viper_object_offsets).
        self.object_ops: dict[types.CodeType, frozenset[int]] = {}
        self._trees: dict[str, ast.Module] = {}
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
            native=lambda f: self._emit(f, "native_op"),
            viper=lambda f: self._emit(f, "viper_op"),
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

    def _emit(self, func: Any, op: str) -> Any:
        """`@micropython.viper` / `native`: run as Python, charged at the op's cost."""
        code = func.__code__
        self.emitted[code] = op
        if op == "viper_op":
            self.object_ops[code] = work_count.viper_object_offsets(code, self._def_of(code))
        return func

    def _def_of(self, code: types.CodeType) -> ast.FunctionDef:
        """The firmware source's definition of a decorated function's code."""
        tree = self._trees.get(code.co_filename)
        if tree is None:
            tree = ast.parse((self.firmware_dir / code.co_filename).read_text())
            self._trees[code.co_filename] = tree
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.FunctionDef)
                and node.name == code.co_name
                and node.decorator_list
                and node.decorator_list[0].lineno == code.co_firstlineno
            ):
                return node
        raise LookupError(f"{code.co_filename}: no definition of {code.co_name}")

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
    # Opcodes of viper and native functions are counted apart and charged at their cost.
    def _trace_call(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename in self._traced:
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            ns = self.namespace
            op = ns.emitted.get(frame.f_code) if ns is not None else None
            if op == "viper_op" and ns is not None:
                return self._viper_tracer(ns.object_ops.get(frame.f_code, frozenset()))
            if op == "native_op":
                return self._trace_native
            return self._trace_opcode
        return None

    def _viper_tracer(self, objects: frozenset[int]) -> Callable[..., Any]:
        """A viper frame's tracer: its object operations count as interpreted opcodes."""
        hw = self.hw

        def trace(frame: types.FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                if frame.f_lasti in objects:
                    hw.pending_bytecodes += 1
                else:
                    hw.pending_viper += 1
            return trace

        return trace

    def _trace_native(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            self.hw.pending_native += 1
        return self._trace_native

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
