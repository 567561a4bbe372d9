"""`micropython` for the emulated board: the interpreter's own module, except that
`kbd_intr` must reach the emulator, which watches the link for the interrupt character
(on the unix port the host link is a pipe, not a terminal that raises SIGINT)."""

import _emu_hw
from micropython import *  # noqa: F403


def kbd_intr(chr):
    _emu_hw.kbd_intr(chr)
