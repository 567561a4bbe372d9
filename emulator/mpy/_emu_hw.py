"""Bridge client: the firmware's machine calls, sent to the emulator process.

MicroPython only. The emulator passes two pipe descriptors in XBAR_BRIDGE ("r,w");
each call is one small binary message (see _emu_wire.py). Errors come back as the
exception the real port would raise (ValueError for a bad pin, KeyboardInterrupt for
Ctrl-C seen while the firmware computes).
"""

import os
import struct

import micropython
from _emu_wire import (
    CALIBRATE,
    E_INTERRUPT,
    E_VALUE,
    FREQ,
    KBD_INTR,
    NOP,
    PIN_INIT,
    PIN_READ,
    PIN_WRITE,
    RESET,
    RESET_CAUSE,
    SLEEP_US,
    SPI,
    SPI_INIT,
    TICKS_CPU,
    TICKS_US,
    UNIQUE_ID,
    WDT_FEED,
    WDT_START,
    WORK,
)
from _emu_work import W as _work

_fds = os.getenv("XBAR_BRIDGE").split(",")
_r = open("/dev/fd/" + _fds[0], "rb")  # noqa: SIM115 - open for the interpreter's life
_w = open("/dev/fd/" + _fds[1], "wb")  # noqa: SIM115
_pack = struct.pack
_unpack = struct.unpack


def _exact(n):
    data = _r.read(n)
    while len(data) < n:
        more = _r.read(n - len(data))
        if not more:
            raise OSError("emulator bridge closed")
        data += more
    return data


def _unlock():
    """A machine call stands in for C code, which allocates nothing: the bridge's own
    allocations must not meet the firmware's micropython.heap_lock(). Returns the lock
    depth to restore (_relock)."""
    micropython.heap_lock()
    depth = 0
    while micropython.heap_unlock():
        depth += 1
    return depth


def _relock(depth):
    for _ in range(depth):
        micropython.heap_lock()


def _send(op, payload):
    """Write one request, preceded by the counted firmware's work since the last one."""
    w = _work
    if w[0] or w[1] or w[2]:
        _w.write(_pack("<BHIII", WORK, 12, w[0], w[1], w[2]))
        w[0] = w[1] = w[2] = 0
    _w.write(_pack("<BH", op, len(payload)) + payload)


def _call(op, payload):
    _send(op, payload)
    head = _exact(3)
    n = head[1] | (head[2] << 8)
    data = _exact(n) if n else b""
    status = head[0]
    if status:
        if status == E_INTERRUPT:
            raise KeyboardInterrupt
        message = data.decode()
        if status == E_VALUE:
            raise ValueError(message)
        raise OSError(message)
    return data


def _post(op, payload):
    _send(op, payload)


def pin_init(pin):
    d = _unlock()
    try:
        _call(PIN_INIT, _pack("<B", pin & 0xFF) if 0 <= pin < 256 else b"\xff")
    finally:
        _relock(d)


def pin_write(pin, value):
    d = _unlock()
    try:
        _post(PIN_WRITE, _pack("<BB", pin, value))
    finally:
        _relock(d)


def pin_read(pin):
    d = _unlock()
    try:
        return _call(PIN_READ, _pack("<B", pin))[0]
    finally:
        _relock(d)


def spi_init(bus, baudrate, polarity, phase, sck, mosi, miso):
    d = _unlock()
    try:
        _call(SPI_INIT, _pack("<BIBBbbb", bus, baudrate, polarity, phase, sck, mosi, miso))
    finally:
        _relock(d)


def spi(bus, baudrate, tx):
    d = _unlock()
    try:
        return _call(SPI, _pack("<BI", bus, baudrate) + bytes(tx))
    finally:
        _relock(d)


def sleep_us(us):
    d = _unlock()
    try:
        _post(SLEEP_US, _pack("<I", us))
    finally:
        _relock(d)


def ticks_us():
    d = _unlock()
    try:
        return _unpack("<Q", _call(TICKS_US, b""))[0]
    finally:
        _relock(d)


def ticks_cpu():
    d = _unlock()
    try:
        return _unpack("<Q", _call(TICKS_CPU, b""))[0]
    finally:
        _relock(d)


def wdt_start(timeout_ms):
    d = _unlock()
    try:
        _call(WDT_START, _pack("<I", timeout_ms))
    finally:
        _relock(d)


def wdt_feed():
    d = _unlock()
    try:
        _post(WDT_FEED, b"")
    finally:
        _relock(d)


def freq():
    d = _unlock()
    try:
        return _unpack("<I", _call(FREQ, b""))[0]
    finally:
        _relock(d)


def reset():
    _post(RESET, b"")
    while True:  # the emulator ends this interpreter and boots a fresh one
        _r.read(1)


def reset_cause():
    d = _unlock()
    try:
        return _call(RESET_CAUSE, b"")[0]
    finally:
        _relock(d)


def unique_id():
    d = _unlock()
    try:
        return _call(UNIQUE_ID, b"")
    finally:
        _relock(d)


def kbd_intr(char):
    d = _unlock()
    try:
        _call(KBD_INTR, _pack("<b", char if -1 <= char < 128 else -1))
    finally:
        _relock(d)


def calibrate(step):
    _call(CALIBRATE, _pack("<i", step))


def nop():
    _post(NOP, b"")


def _loop(n):
    x = 0
    for i in range(n):
        x = x + i
    return x


def calibrate_compute():
    """Let the emulator time this interpreter on the host: a loop of known size (7
    bytecodes per step as CPython counts them, the unit the in-process runtime
    charges), then bare synchronous and posted calls, whose cost is bridge overhead
    and must not be charged to the firmware. See mpy_bridge.ComputeMeter."""
    n = 20000
    calibrate(0)
    _loop(n)
    calibrate(7 * n)
    for _ in range(64):
        calibrate(-1)
    for _ in range(64):
        nop()
    calibrate(-2)
    calibrate(-3)
