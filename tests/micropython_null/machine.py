"""A do-nothing `machine` for running the firmware alone under the real MicroPython
interpreter: pins remember their values, SPI reads mid-scale, and nothing allocates, so
every heap byte measured is the firmware's. Put this folder first on `sys.path`."""


class Pin:
    OUT = 1
    IN = 0

    def __init__(self, pin, mode=-1, value=None):
        self.v = value or 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v

    def on(self):
        self.v = 1

    def off(self):
        self.v = 0


class SPI:
    def __init__(self, bus, baudrate=0, polarity=0, phase=0, sck=None, mosi=None, miso=None):
        pass

    def write(self, buf):
        pass

    def write_readinto(self, tx, rx):
        for i in range(len(rx)):
            rx[i] = 0x80 if i % 2 == 0 and i >= 2 else 0


class WDT:
    def __init__(self, timeout=5000):
        pass

    def feed(self):
        pass


def freq(hz=None):
    return 125_000_000
