"""Bridge client: the firmware's machine calls, sent to the emulator process.

MicroPython only. The emulator passes two pipe descriptors in XBAR_BRIDGE ("r,w");
each call is one small binary message (see _emu_wire.py). Errors come back as the
exception the real port would raise (ValueError for a bad pin, KeyboardInterrupt for
Ctrl-C seen while the firmware computes).
"""

import os
import struct

import _emu_wire as W

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
        if status == W.E_INTERRUPT:
            raise KeyboardInterrupt
        message = data.decode()
        if status == W.E_VALUE:
            raise ValueError(message)
        raise OSError(message)
    return data


def _post(op, payload):
    _w.write(_pack("<BH", op, len(payload)) + payload)


def pin_init(pin):
    _call(W.PIN_INIT, _pack("<B", pin & 0xFF) if 0 <= pin < 256 else b"\xff")


def pin_write(pin, value):
    _post(W.PIN_WRITE, _pack("<BB", pin, value))


def pin_read(pin):
    return _call(W.PIN_READ, _pack("<B", pin))[0]


def spi_init(bus, baudrate, polarity, phase, sck, mosi, miso):
    _call(W.SPI_INIT, _pack("<BIBBbbb", bus, baudrate, polarity, phase, sck, mosi, miso))


def spi(bus, baudrate, tx):
    return _call(W.SPI, _pack("<BI", bus, baudrate) + bytes(tx))


def sleep_us(us):
    _post(W.SLEEP_US, _pack("<I", us))


def ticks_us():
    return _unpack("<Q", _call(W.TICKS_US, b""))[0]


def ticks_cpu():
    return _unpack("<Q", _call(W.TICKS_CPU, b""))[0]


def wdt_start(timeout_ms):
    _call(W.WDT_START, _pack("<I", timeout_ms))


def wdt_feed():
    _post(W.WDT_FEED, b"")


def freq():
    return _unpack("<I", _call(W.FREQ, b""))[0]


def reset():
    _post(W.RESET, b"")
    while True:  # the emulator ends this interpreter and boots a fresh one
        _r.read(1)


def reset_cause():
    return _call(W.RESET_CAUSE, b"")[0]


def unique_id():
    return _call(W.UNIQUE_ID, b"")


def kbd_intr(char):
    _call(W.KBD_INTR, _pack("<b", char if -1 <= char < 128 else -1))


def calibrate(step):
    _call(W.CALIBRATE, _pack("<i", step))


def nop():
    _post(W.NOP, b"")


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
