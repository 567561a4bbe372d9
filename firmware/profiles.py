"""Reference board data: pin map, part constants, profile table and safety limits.

Pure data so the geometry is chosen by a profile name; the drivers derive every chip
index, chip select and switch bit from these numbers (docs/architecture.md, reference
board). No hardware access here, so the host, training and the emulator read this same
table: CPython imports it as `xbar.firmware.profiles`, where `const` is the identity.
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

try:
    from micropython import const
except ImportError:  # CPython
    const = lambda x: x  # noqa: E731

FW_VERSION = (0, 1, 0)
DEFAULT_PROFILE = "xbar-10x10"

# ---- pins (RP2040 GPIO numbers) --------------------------------------------------------
SPI0_ID = const(0)
SPI0_SCK = const(2)
SPI0_MOSI = const(3)
SPI0_MISO = const(4)
SPI0_BAUD = const(30_000_000)
PIN_CS_DAC = (5, 6, 7)
PIN_LDAC = const(8)
PIN_CS_SW = const(9)
SPI1_ID = const(1)
SPI1_SCK = const(10)
SPI1_MOSI = const(11)
SPI1_MISO = const(12)
SPI1_BAUD = const(17_000_000)
# One ADC chip select per array of a 5-array board (rev B): a frame wakes and converts only
# the chips of the array being read (ADS8688 chips on one select all convert every frame).
PIN_CS_ADC = (13, 14, 23, 24, 29)
PIN_ADC_RST = const(15)
PIN_GAIN0 = const(16)
PIN_GAIN1 = const(17)
PIN_LED = const(25)
# Rev B power gates: pin g high shuts down the line drivers and TIAs of gate group g
# (their OPA2990 SHDN inputs, pulled low: on at reset until the firmware boots). A board
# with more arrays than gates groups them: array a is on gate a * gates // arrays.
PIN_SHDN = (18, 19, 20, 21, 22, 26, 27, 28)

# ---- parts (reference board rev B, docs/architecture.md; emulator/energy.py cites the
# datasheets of every figure) ----------------------------------------------------------
# AD5676R (2.5 V internal reference, gain 2: 0..5 V) into one line driver per line (OPA2990
# difference stage on +-12 V: gain 4, offset -10 V), so line V = 4 * (5 V * code / 65536)
# - 10 V and one code is 20/65536 V.
DAC_CHANNELS = const(8)
DAC_MID = const(32768)
DAC_LSB = 20.0 / 65536.0
DAC_SETTLE_US = const(5)  # AD5676 datasheet t_settle
DAC_CMD_WRITE = const(0x1)  # write input register, applied on LDAC falling edge
DAC_CMD_WRITE_UPDATE = const(0x3)
DAC_CMD_WRITE_ALL_UPDATE = const(0xB)  # every channel's input and DAC register
DAC_CMD_RESET = const(0x6)
DAC_RESET_DATA = const(0x1234)  # AD5676 software reset key
DAC_CMD_DCEN = const(0x8)  # daisy-chain enable (data bit 0)
DAC_CMD_POWER = const(0x4)  # power down/up: 2 bits per channel, 00 normal
DAC_PD_1K = const(0x5555)  # every channel powered down, output 1 kOhm to GND
# Wake-up waits after the power-up of a domain, before its outputs are used (us):
# AD5676R exit from power-down, OPA2990 enable from shutdown, ADS8688 exit from STDBY
# (figures and their sources in emulator/energy.py, PowerFigures).
DAC_WAKE_US = const(5)
AFE_WAKE_US = const(20)
ADC_WAKE_US = const(20)
# ADG1414 (ADG714 byte format, +-15 V-class signals): 8 switches per chip; three per
# line (to the line driver, to the TIA, to ground).
SW_PER_CHIP = const(8)
SW_DAC = const(0)
SW_TIA = const(1)
SW_GND = const(2)
# ADS8688: 8 channels, +-10.24 V range (range register 0x00), straight binary.
ADC_CHANNELS = const(8)
ADC_MID = const(32768)
ADC_LSB = 20.48 / 65536.0
ADC_CMD_MAN = const(0xC000)  # + (channel << 10)
ADC_CMD_RESET = const(0x8500)
ADC_CMD_NOOP = const(0x0000)
ADC_CMD_STDBY = const(0x8200)  # standby until the next MAN_Ch_n / MAN_AUX / AUTO_RST
ADC_CMD_MAN_AUX = const(0xE000)  # select the AUX input (not wired): leaves standby
ADC_REG_RANGE = const(0x05)  # + channel
ADC_RANGE_10V24 = const(0x00)
# TIA feedback resistors by GAIN1*2 + GAIN0; outputs saturate at +-10 V.
TIA_RF = (1_000.0, 10_000.0, 100_000.0, 1_000_000.0)
N_GAINS = const(4)
TIA_SAT_V = 10.0
# Gain ranging thresholds in ADC codes from mid-scale: above SAT the reading is not
# trusted (TIA near its rail), below UP a 10x higher gain would still fit under SAT.
ADC_SAT = const(29500)  # 9.22 V
ADC_UP = const(2800)  # x10 = 28000 < ADC_SAT

# ---- profiles ------------------------------------------------------------------------
# name: (arrays, rows, cols, DAC chips per chip select, ADC chips per chip select, cell).
# Chips beyond one per chip select form a daisy chain on that select. Besides these,
# "xbar-{n}x{rows}x{cols}[-passive]" names build chains just long enough for the three
# DAC and five ADC selects. The emulator's profile table is built from this one.
PROFILES = {
    "xbar-10x10": (1, 10, 10, 1, 1, "1T1R"),
    "xbar-10x10-passive": (1, 10, 10, 1, 1, "0T1R"),
    "xbar-1x32": (1, 32, 32, 3, 2, "0T1R"),
    "xbar-4x64": (4, 64, 64, 22, 16, "0T1R"),
    "xbar-64x10x10": (64, 10, 10, 54, 40, "1T1R"),
}


def _generic(name):
    """(arrays, rows, cols, dac_chain, adc_chain, cell) for xbar-NxRxC[-passive] or None."""
    if not name.startswith("xbar-"):
        return None
    body = name[5:]
    cell = "1T1R"
    if body.endswith("-passive"):
        body = body[:-8]
        cell = "0T1R"
    parts = body.split("x")
    if len(parts) != 3:
        return None
    for p in parts:
        if not p or not p.isdigit():
            return None
    n, rows, cols = int(parts[0]), int(parts[1]), int(parts[2])
    if n < 1 or rows < 1 or cols < 1:
        return None
    lines = n * (rows + cols)
    dac_chips = (lines + 7) // 8
    adc_chips = (n * cols + 7) // 8
    return (
        n,
        rows,
        cols,
        (dac_chips + len(PIN_CS_DAC) - 1) // len(PIN_CS_DAC),
        (adc_chips + len(PIN_CS_ADC) - 1) // len(PIN_CS_ADC),
        cell,
    )


# ---- safety ----------------------------------------------------------------------------
# Defaults in force at boot and hard maxima that SAFETY can never exceed:
# read voltage (V, any line during READ/INFER), line voltage (V, any DAC line that is
# switched in), pulse width (us), compliance current (A, predicted cell current).
# A pulse puts +-V/2 on two lines, so the cell sees up to 2 x the line limit: the hard
# 4 V keeps every pulse <= 8 V, below the hard breakdown of the reference devices
# (pvk-best, pvk-median: 1.6 x 6.0 V = 9.6 V, emulator/cells.py breakdown_factor).
SAFE_DEFAULT = (0.3, 4.0, 100_000, 100e-6)
SAFE_HARD = (0.5, 4.0, 1_000_000, 1e-3)
# Shortest pulse the board makes (us). A pulse is timed from the LDAC edge to the
# switch frame that grounds the lines (hal.Hal.pulse): that tail (LDAC rising, ticks_us,
# one ADG714 frame on CS_SW) is the floor. Measured on the emulated RP2040 under
# MicroPython for xbar-10x10: 12 us; rounded up. Hal.boot times the tail on the board at
# hand (longer switch chains, slower interpreters) and uses the larger (Hal.min_width).
PULSE_MIN_US = const(16)
WDT_MS = const(8000)
BUSY_MS = const(250)  # a long command's BUSY frames, at most one per this (protocol.BUSY)
# Write-verify stops when a cell's reading is within (1 - VERIFY_GUARD) x the tolerance,
# so that its true conductance, not only its reading, ends within the tolerance: the
# board's reads of programmed cells differ from their true conductance (DAC and ADC
# quantisation, TIA and line resistance) by up to 0.096 x tol (70 cells of the iris plan
# on xbar-10x10, pvk-best, noise off, tol 0.5 g_unit; `python -m
# benchmarks.bench_power_loss` prints the read error of its clean run). Host re-reads use
# the same band (host/program.py reverify).
VERIFY_GUARD = 0.15

MAX_LAYERS = const(8)
MAX_TILES = const(64)
MAX_WIDTH = const(512)
STREAM_WINDOW = const(4)


class Geometry:
    """Line numbering and chip addressing of one profile.

    Array a owns lines a*(rows+cols) ... : its rows first, then its columns. Line L is DAC
    chip L // 8, channel L % 8; DAC chip d sits on chip select d // dac_chain at position
    d % dac_chain of that chain. Column c of array a is global column a*cols + c, read by
    ADC chip (a*cols + c) // 8, channel % 8, on chip select chip // adc_chain. Switch
    3L + k (k: 0 DAC, 1 TIA, 2 ground) sits in one ADG714 chain of ceil(3*lines/8) chips.
    """

    def __init__(self, name):
        p = PROFILES.get(name) or _generic(name)
        if p is None:
            raise ValueError("unknown board profile %r" % name)
        self.name = name
        self.arrays = p[0]
        self.rows = p[1]
        self.cols = p[2]
        self.dac_chain = p[3]
        self.adc_chain = p[4]
        self.cell = p[5]
        self.lines_per_array = self.rows + self.cols
        self.lines = self.arrays * self.lines_per_array
        self.dac_chips = (self.lines + DAC_CHANNELS - 1) // DAC_CHANNELS
        self.sw_chips = (3 * self.lines + SW_PER_CHIP - 1) // SW_PER_CHIP
        self.columns = self.arrays * self.cols
        self.adc_chips = (self.columns + ADC_CHANNELS - 1) // ADC_CHANNELS
        self.dac_selects = (self.dac_chips + self.dac_chain - 1) // self.dac_chain
        self.adc_selects = (self.adc_chips + self.adc_chain - 1) // self.adc_chain
        if self.dac_selects > len(PIN_CS_DAC) or self.adc_selects > len(PIN_CS_ADC):
            raise ValueError("profile %r needs more chip selects than the board has" % name)
        # Power gates (PIN_SHDN): array a is on gate a * gates // arrays.
        self.gates = min(self.arrays, len(PIN_SHDN))
        # Model blob budget: grows with the cells available, within the heap.
        self.model_bytes = min(4096 + 2 * self.arrays * self.rows * self.cols, 24576)

    def row_line(self, array, row):
        return array * self.lines_per_array + row

    def col_line(self, array, col):
        return array * self.lines_per_array + self.rows + col

    def gate(self, array):
        """The power gate (index into PIN_SHDN) of array's line drivers and TIAs."""
        return array * self.gates // self.arrays
