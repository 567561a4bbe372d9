"""`os` for the emulated board: the interpreter's own, except that `ilistdir` yields
what a board's littlefs/FAT driver yields, (name, type, inode, size), where the unix
port's VfsPosix leaves the size out (mpremote `ls` shows it)."""

import os as _os
from os import *  # noqa: F403


def ilistdir(path="."):
    for entry in _os.ilistdir(path):
        if len(entry) == 4:
            yield entry
            continue
        name, kind, inode = entry
        size = 0
        if kind == 0x8000:
            full = name if path in ("", ".") else path.rstrip("/") + "/" + name
            try:  # noqa: SIM105 - MicroPython has no contextlib
                size = _os.stat(full)[6]
            except OSError:
                pass
        yield (name, kind, inode, size)
