"""Bridge client: the firmware's machine calls, sent to the emulator process.

MicroPython only. The emulator passes two pipe descriptors in XBAR_BRIDGE ("r,w");
each call is one small binary message (see _emu_wire.py). Errors come back as the
exception the real port would raise (ValueError for a bad pin, KeyboardInterrupt for
Ctrl-C seen while the firmware computes).
"""

import os
import struct

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
)

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


def _call(op, payload):
    _w.write(_pack("<BH", op, len(payload)) + payload)
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
    _w.write(_pack("<BH", op, len(payload)) + payload)


def pin_init(pin):
    _call(PIN_INIT, _pack("<B", pin & 0xFF) if 0 <= pin < 256 else b"\xff")


def pin_write(pin, value):
    _post(PIN_WRITE, _pack("<BB", pin, value))


def pin_read(pin):
    return _call(PIN_READ, _pack("<B", pin))[0]


def spi_init(bus, baudrate, polarity, phase, sck, mosi, miso):
    _call(SPI_INIT, _pack("<BIBBbbb", bus, baudrate, polarity, phase, sck, mosi, miso))


def spi(bus, baudrate, tx):
    return _call(SPI, _pack("<BI", bus, baudrate) + bytes(tx))


def sleep_us(us):
    _post(SLEEP_US, _pack("<I", us))


def ticks_us():
    return _unpack("<Q", _call(TICKS_US, b""))[0]


def ticks_cpu():
    return _unpack("<Q", _call(TICKS_CPU, b""))[0]


def wdt_start(timeout_ms):
    _call(WDT_START, _pack("<I", timeout_ms))


def wdt_feed():
    _post(WDT_FEED, b"")


def freq():
    return _unpack("<I", _call(FREQ, b""))[0]


def reset():
    _post(RESET, b"")
    while True:  # the emulator ends this interpreter and boots a fresh one
        _r.read(1)


def reset_cause():
    return _call(RESET_CAUSE, b"")[0]


def unique_id():
    return _call(UNIQUE_ID, b"")


def kbd_intr(char):
    _call(KBD_INTR, _pack("<b", char if -1 <= char < 128 else -1))


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
