"""`time` for the emulated board: the virtual clock of the board model.

Common subset of MicroPython and CPython (see machine.py for why). Ticks wrap like
MicroPython's (period 2**30), so firmware that mishandles wrap-around fails here too.
Wall-clock time never enters: idle host time does not advance the board.
"""

import _emu_hw

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1


def ticks_us():
    return _emu_hw.ticks_us() & _MASK


def ticks_ms():
    return (_emu_hw.ticks_us() // 1000) & _MASK


def ticks_cpu():
    return _emu_hw.ticks_cpu() & _MASK


def ticks_diff(end, start):
    return ((end - start + _HALF) & _MASK) - _HALF


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def sleep_us(us):
    if us > 0:
        _emu_hw.sleep_us(int(us))


def sleep_ms(ms):
    if ms > 0:
        _emu_hw.sleep_us(int(ms) * 1000)


def sleep(seconds):
    if seconds > 0:
        _emu_hw.sleep_us(int(seconds * 1000000))


def time():
    return _emu_hw.ticks_us() // 1000000


def time_ns():
    return _emu_hw.ticks_us() * 1000
