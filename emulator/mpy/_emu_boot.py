"""Boot of the emulated board's MicroPython (what a port's main() does before the REPL).

MicroPython only; the emulator starts `micropython -X heapsize=192K _emu_boot.py` with
this folder as MICROPYPATH and the board's flash folder as working directory. Order:
load the machine/time/micropython shims and the bridge while this folder is still on
the path, then mount the flash folder as the root filesystem (so "/main.py" and
"/lib" are the board's, as on a real port), run boot.py, then main.py unless the
reset came from the raw REPL, then the REPL. The exit status tells the emulator how
the next boot was asked for.
"""

import os
import sys
import time  # noqa: F401 - idem

import _emu_hw
import _emu_micropython
import _emu_os
import _emu_repl
import machine  # noqa: F401 - the shim: this folder precedes the built-in module

sys.modules["micropython"] = _emu_micropython
sys.modules["os"] = _emu_os
del sys.modules["_emu_wire"]  # its op table is the emulator's; the names are copied

_reason = os.getenv("XBAR_BOOT") or "power"
_flash = os.getcwd()
os.umount("/")
os.mount(os.VfsPosix(_flash), "/")
os.chdir("/")
sys.path.clear()
sys.path.extend(["", ".frozen", "/lib"])


def _exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False


def _run_file(name):
    """Run a file from flash like pyexec_file: a traceback on error, then carry on."""
    if not _exists(name):
        return None
    _emu_hw.kbd_intr(3)
    try:
        with open(name) as f:
            source = f.read()
        exec(compile(source, name, "exec"), _emu_repl._globals)
    except SystemExit:
        return None
    except BaseException as exc:
        sys.print_exception(exc, sys.stdout)
    finally:
        _emu_hw.kbd_intr(-1)
    return None


if os.getenv("XBAR_METER"):
    _emu_hw.calibrate_compute()
if _reason != "power":
    _emu_repl._w(b"MPY: soft reboot\r\n")
_run_file("boot.py")
if _reason != "softraw":
    _run_file("main.py")
_status = _emu_repl.repl(raw=_reason == "softraw")
sys.exit(_status)
