"""The board's REPL on the host link: friendly, raw and raw-paste, as MicroPython's
`shared/runtime/pyexec.c` speaks them on a real port.

MicroPython only. The unix port's own REPL is a terminal REPL without the raw modes
that `mpremote` and flashers use, so the emulated board runs this one instead, on the
same stdin/stdout the firmware uses. Code sent to it is compiled and run by the real
interpreter. A soft reset (Ctrl-D) ends this interpreter with an exit status that tells
the emulator which REPL to come back in; the emulator starts a fresh one, so the heap
and all module state really are reset.
"""

import sys

import _emu_hw
from _emu_wire import BOARD, HELP

SOFT_RESET = 10  # exit status: soft reset, come back in the friendly REPL (runs main.py)
SOFT_RESET_RAW = 11  # exit status: soft reset from the raw REPL (main.py is skipped)

_in = sys.stdin.buffer
_out = sys.stdout.buffer
_globals = {"__name__": "__main__"}
BANNER = "MicroPython v{}.{}.{}; {}\r\n{}\r\n".format(
    *sys.implementation.version[:3], BOARD, HELP
).encode()
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PASTE_WINDOW = 128  # half of MICROPY_REPL_STDIN_BUFFER_MAX, as pyexec.c


class _Reset(Exception):
    def __init__(self, status):
        self.status = status


def _w(data):
    _out.write(data)


def _getc():
    c = _in.read(1)
    if not c:  # the emulator closed the link: power off
        sys.exit(0)
    return c[0]


def execute(code, raw):
    """Run code with Ctrl-C enabled; in raw mode frame the output with EOF markers."""
    _emu_hw.kbd_intr(3)
    try:
        exec(code, _globals)
    except SystemExit:
        if raw:
            _w(b"\x04\x04")
        raise _Reset(SOFT_RESET_RAW if raw else SOFT_RESET) from None
    except BaseException as exc:
        _emu_hw.kbd_intr(-1)
        if raw:
            _w(b"\x04")
        sys.print_exception(exc, sys.stdout)
        if raw:
            _w(b"\x04")
        return
    finally:
        _emu_hw.kbd_intr(-1)
    if raw:
        _w(b"\x04\x04")


def _raw_paste():
    """Raw-paste: stream the code under flow control, then run it."""
    _w(b"R\x01")
    _w(bytes([PASTE_WINDOW & 0xFF, PASTE_WINDOW >> 8, 0x01]))
    remain = PASTE_WINDOW
    buf = bytearray()
    interrupted = False
    while True:
        c = _getc()
        if c == 0x04 or c == 0x03:
            _w(b"\x04")
            interrupted = c == 0x03
            break
        buf.append(c)
        remain -= 1
        if remain == 0:
            _w(b"\x01")
            remain = PASTE_WINDOW
    if interrupted:
        _w(b"\x04")
        sys.print_exception(KeyboardInterrupt(), sys.stdout)
        _w(b"\x04")
        return
    try:
        code = compile(bytes(buf), "<stdin>", "exec")
    except BaseException as exc:
        _w(b"\x04")
        sys.print_exception(exc, sys.stdout)
        _w(b"\x04")
        return
    execute(code, True)


def raw_repl():
    """Raw REPL; returns when the host asks for the friendly REPL (Ctrl-B)."""
    _w(RAW_BANNER)
    while True:
        _w(b">")
        line = bytearray()
        while True:
            c = _getc()
            if c == 0x01:  # Ctrl-A: reset the raw REPL, or raw-paste after Ctrl-E A
                if len(line) == 2 and line[0] == 0x05:
                    if line[1] == 0x41:
                        _raw_paste()
                    else:
                        _w(b"R\x00")
                    line = None
                    break
                _w(RAW_BANNER)
                line = bytearray()
                _w(b">")
            elif c == 0x02:  # Ctrl-B: friendly REPL
                _w(b"\r\n")
                return
            elif c == 0x03:
                line = bytearray()
            elif c == 0x04:
                break
            elif c < 128:
                line.append(c)
        if line is None:
            continue
        _w(b"OK")
        if not line:
            _w(b"\r\n")
            raise _Reset(SOFT_RESET_RAW)
        try:
            code = compile(bytes(line), "<stdin>", "exec")
        except BaseException as exc:
            _w(b"\x04")
            sys.print_exception(exc, sys.stdout)
            _w(b"\x04")
            continue
        execute(code, True)


def _needs_more(text):
    """Whether the friendly REPL should prompt '... ' for another line."""
    last = text.rstrip("\n").split("\n")[-1]
    if "\n" in text.rstrip("\n"):
        return last.strip() != ""
    return last.rstrip().endswith(":") or last.rstrip().endswith("\\")


def _read_line(prompt):
    """One edited line (echo, backspace); returns the text or a control byte."""
    _w(prompt)
    line = bytearray()
    while True:
        c = _getc()
        if c in (0x01, 0x02, 0x03, 0x04, 0x05):
            if c == 0x04 and line:
                continue
            return c
        if c in (0x0D, 0x0A):
            _w(b"\r\n")
            return _text(line)
        if c in (0x08, 0x7F):
            if line:
                line.pop()
                _w(b"\x08 \x08")
        elif c == 0x1B:  # terminal escape (arrow keys): not supported, swallow it
            _getc()
            _getc()
        elif c >= 0x20:
            line.append(c)
            _w(bytes([c]))


def _paste_mode():
    _w(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    buf = bytearray()
    while True:
        c = _getc()
        if c == 0x03:
            _w(b"\r\n")
            return
        if c == 0x04:
            _w(b"\r\n")
            break
        buf.append(c)
        _w(b"\r\n=== " if c == 0x0D else bytes([c]) if c != 0x0A else b"")
    _run_friendly(_text(buf), "exec")


def _text(data):
    """Typed bytes as source; bytes that are not UTF-8 get the error a port prints, and an
    empty line, instead of ending the REPL (and rebooting the board)."""
    try:
        return bytes(data).decode()
    except UnicodeError as exc:
        sys.print_exception(exc, sys.stdout)
        return ""


def _run_friendly(text, mode):
    try:
        code = compile(text, "<stdin>", mode)
    except BaseException as exc:
        sys.print_exception(exc, sys.stdout)
        return
    execute(code, False)


def friendly_repl(banner=True):
    """Friendly REPL; returns when the host asks for the raw REPL (Ctrl-A)."""
    if banner:
        _w(BANNER)
    while True:
        got = _read_line(b">>> ")
        if got == 0x01:
            _w(b"\r\n")
            return
        if got == 0x02:
            _w(b"\r\n" + BANNER)
            continue
        if got == 0x03:
            _w(b"\r\n")
            continue
        if got == 0x04:
            _w(b"\r\n")
            raise _Reset(SOFT_RESET)
        if got == 0x05:
            _paste_mode()
            continue
        text = got
        while _needs_more(text):
            more = _read_line(b"... ")
            if more == 0x03:
                text = None
                _w(b"\r\n")
                break
            if not isinstance(more, str):
                continue
            text += "\n" + more
        if text is None or not text.strip():
            continue
        _run_friendly(text + "\n", "single" if "\n" not in text.strip() else "exec")


def repl(raw=False):
    """Alternate between the two REPLs until a soft reset; returns its exit status."""
    banner = True
    _emu_hw.kbd_intr(-1)  # at the prompt Ctrl-C is a character, not an interrupt
    while True:
        try:
            if raw:
                raw_repl()
                raw = False
                banner = True
            else:
                friendly_repl(banner)
                raw = True
        except _Reset as exc:
            return exc.status
        except KeyboardInterrupt:  # a late Ctrl-C from code that just finished
            _w(b"\r\nKeyboardInterrupt\r\n")
            banner = False
