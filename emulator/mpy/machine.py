"""`machine` for the emulated board, in the common subset of MicroPython and CPython.

The same file serves both runtimes so the firmware meets one implementation of the
peripheral API: under the real MicroPython interpreter `_emu_hw` is the bridge client
(`_emu_hw.py`, a pipe to the emulator process); in-process under CPython the runtime
supplies `_emu_hw` as a module wired straight to the board model. Every call becomes
one `_emu_hw` call, so pin edges, SPI bytes and interpreter overhead reach the board
model in program order and virtual time advances only there.
"""

import _emu_hw

# Reset causes (rp2 values).
PWRON_RESET = 1
WDT_RESET = 3


def _pin_id(pin):
    """Accept a Pin, a GPIO number or the rp2 name "LED" (GPIO 25 on the board)."""
    if isinstance(pin, Pin):
        return pin._id
    if pin == "LED":
        return 25
    if isinstance(pin, str) and pin.startswith("GP"):
        return int(pin[2:])
    if not isinstance(pin, int):
        raise ValueError("invalid pin")
    return pin


class Pin:
    """GPIO. Output values are remembered locally (an RP2040 reads back the pad it
    drives); inputs are read from the board on every `value()`."""

    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, *, value=None, alt=-1):
        self._id = _pin_id(id)
        self._mode = self.IN
        self._v = 0
        _emu_hw.pin_init(self._id)
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, alt=-1):
        if mode != -1:
            self._mode = mode
        if value is not None:
            self.value(value)

    def value(self, x=None):
        if x is None:
            if self._mode == self.OUT:
                return self._v
            return _emu_hw.pin_read(self._id)
        self._v = 1 if x else 0
        _emu_hw.pin_write(self._id, self._v)
        return None

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)

    def toggle(self):
        self.value(1 - self._v)

    def irq(self, handler=None, trigger=12, hard=False):
        raise OSError("pin IRQs are not emulated")

    def __repr__(self):
        return f"Pin(GPIO{self._id})"


class SPI:
    """SPI master. `baudrate` travels with every transfer so the board times the bits."""

    MSB = 0
    LSB = 1

    def __init__(
        self,
        id,
        baudrate=1000000,
        *,
        polarity=0,
        phase=0,
        bits=8,
        firstbit=0,
        sck=None,
        mosi=None,
        miso=None,
    ):
        self._id = id
        self._baud = baudrate
        self.init(
            baudrate=baudrate,
            polarity=polarity,
            phase=phase,
            bits=bits,
            firstbit=firstbit,
            sck=sck,
            mosi=mosi,
            miso=miso,
        )

    def init(
        self,
        baudrate=None,
        *,
        polarity=0,
        phase=0,
        bits=8,
        firstbit=0,
        sck=None,
        mosi=None,
        miso=None,
    ):
        if baudrate is not None:
            self._baud = baudrate
        if bits != 8 or firstbit != self.MSB:
            raise ValueError("only 8-bit MSB-first SPI is wired on this board")
        pins = [-1 if p is None else _pin_id(p) for p in (sck, mosi, miso)]
        _emu_hw.spi_init(self._id, self._baud, polarity, phase, pins[0], pins[1], pins[2])

    def deinit(self):
        pass

    def write(self, buf):
        _emu_hw.spi(self._id, self._baud, buf)

    def read(self, nbytes, write=0):
        return _emu_hw.spi(self._id, self._baud, bytes([write]) * nbytes)

    def readinto(self, buf, write=0):
        rx = _emu_hw.spi(self._id, self._baud, bytes([write]) * len(buf))
        buf[:] = rx

    def write_readinto(self, write_buf, read_buf):
        if len(write_buf) != len(read_buf):
            raise ValueError("buffers must be the same length")
        read_buf[:] = _emu_hw.spi(self._id, self._baud, write_buf)


class WDT:
    """Watchdog on the virtual clock: starved past `timeout` ms, the board resets."""

    def __init__(self, id=0, timeout=5000):
        _emu_hw.wdt_start(timeout)

    def feed(self):
        _emu_hw.wdt_feed()


def freq(hz=None):
    if hz is None:
        return _emu_hw.freq()
    raise ValueError("the emulated board runs at a fixed clock")


def reset():
    _emu_hw.reset()


def soft_reset():
    raise SystemExit


def reset_cause():
    return _emu_hw.reset_cause()


def unique_id():
    return _emu_hw.unique_id()


def idle():
    pass


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def bootloader(value=None):
    raise OSError("no bootloader on the emulated board")
