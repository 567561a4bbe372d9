"""Bridge wire format between the firmware's interpreter and the emulator process.

Common subset of MicroPython and CPython: the bridge client (`_emu_hw.py`, inside
MicroPython) and the server (`emulator/mpy_bridge.py`, CPython) both read this file,
so the format has one definition.

Request:  u8 op, u16 LE payload length, payload.
Response: u8 status, u16 LE payload length, payload (only for ops listed as SYNC).
Asynchronous ops (pin writes, sleeps, watchdog feeds) get no response: the pipe keeps
them in order, and the next synchronous call waits until the emulator has applied
them all. That halves the round trips of a chip-select / transfer / release sequence.
"""

BOARD = "xbar-10x10 rev A (emulated) with RP2040"
"""The machine line of the REPL banner, after the interpreter's own version (both
runtimes print it; they differ in the interpreter)."""
HELP = 'Type "help()" for more information.'

HEADER = "<BH"
HEADER_SIZE = 3

# op: (request struct after the header, trailing raw bytes?, response struct or None)
PIN_INIT = 0x49  # I
PIN_WRITE = 0x57  # W
PIN_READ = 0x52  # R
SPI_INIT = 0x4E  # N
SPI = 0x53  # S
SLEEP_US = 0x5A  # Z
TICKS_US = 0x54  # T
TICKS_CPU = 0x43  # C
WDT_START = 0x44  # D
WDT_FEED = 0x46  # F
FREQ = 0x51  # Q
RESET = 0x58  # X
RESET_CAUSE = 0x59  # Y
UNIQUE_ID = 0x55  # U
KBD_INTR = 0x4B  # K
CALIBRATE = 0x4C  # L: compute-meter calibration step (see mpy_bridge.ComputeMeter)
NOP = 0x6C  # l: posted no-op (calibrates the cost of a posted call)
WORK = 0x77  # w: opcodes the counted firmware ran since the last call (work_count.py)

OPS = {
    PIN_INIT: ("pin_init", "<B", None),
    PIN_WRITE: ("pin_write", "<BB", None),
    PIN_READ: ("pin_read", "<B", "<B"),
    SPI_INIT: ("spi_init", "<BIBBbbb", None),
    SPI: ("spi", "<BI", "raw"),
    SLEEP_US: ("sleep_us", "<I", None),
    TICKS_US: ("ticks_us", "", "<Q"),
    TICKS_CPU: ("ticks_cpu", "", "<Q"),
    WDT_START: ("wdt_start", "<I", None),
    WDT_FEED: ("wdt_feed", "", None),
    FREQ: ("freq", "", "<I"),
    RESET: ("reset", "", None),
    RESET_CAUSE: ("reset_cause", "", "<B"),
    UNIQUE_ID: ("unique_id", "", "raw"),
    KBD_INTR: ("kbd_intr", "<b", None),
    CALIBRATE: ("calibrate", "<i", None),
    NOP: ("nop", "", None),
    WORK: ("work", "<III", None),
}

# Ops whose caller waits for a response (the others are posted and not answered).
SYNC = (
    PIN_INIT,
    PIN_READ,
    SPI_INIT,
    SPI,
    TICKS_US,
    TICKS_CPU,
    WDT_START,
    FREQ,
    RESET_CAUSE,
    UNIQUE_ID,
    KBD_INTR,
    CALIBRATE,
)

OK = 0
E_VALUE = 1  # ValueError(message)
E_OS = 2  # OSError(message)
E_INTERRUPT = 3  # KeyboardInterrupt (Ctrl-C from the host)
