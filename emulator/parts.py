"""The board's SPI parts, decoding the real bytes the firmware sends.

Each class models one chip select's daisy chain of identical parts as a shift register
of ``bits_per_part × n`` bits: bits enter at the chip nearest the MCU (position 0) and are
pushed toward the far end, so after a full frame the *first* word on the wire sits in the
*last* chip. Frames are decoded when the datasheet says the parts act (SYNC/CS edges).
Nothing here raises for anything the firmware could send: malformed frames are ignored or
latched exactly as the part would, and counted in the ``diag`` dict the board passes in.

Datasheet references: AD5676R (Analog Devices, AD5672R/AD5676R Rev. D; the AD5676's
command set) Table 8 "Command definitions", Figure 2 / "Serial interface", "LDAC
function" and "Power-down operation"; ADG1414 (Rev. B; the ADG714's 8-bit daisy-chained
shift register, Rev. C "Serial interface" and "Daisy-chaining"); ADS8688 (TI SBAS582)
§7.5 "Serial interface", Table 6 "Command register map" (STDBY, PWR_DN), Table 11
"Program register map", §7.4.3 "Daisy-chain topology". Power figures and ratings:
``emulator.energy.PowerFigures``.

Board design figures (DAC step and mid-scale, TIA gains, switch modes, SPI clocks) are the
firmware's (``xbar.firmware.profiles``); the chips' command codes stay written from the
datasheets here, so a wrong code in the firmware shows up as a part that does not act.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from xbar.firmware import profiles as fw

if TYPE_CHECKING:
    from .board_profile import BoardProfile

# -- AD5676: 8-channel 16-bit DAC, 24-bit words [23:20] command, [19:16] address, [15:0] data
DAC_WORD_BITS = 24
DAC_SETTLE_S = 5e-6  # AD5676 t_settle (1/4 to 3/4 scale to ±2 LSB), "AC characteristics"
DAC_MAX_SCLK = 50_000_000  # AD5676 t1 = 20 ns SCLK period
DAC_RESET_KEY = 0x1234  # command 0x6 data that performs the software reset


def line_volts(code: np.ndarray | int) -> np.ndarray:
    """Line voltage of a DAC code: ``V = 4 · (5 V · code / 65536) − 10 V`` (architecture.md)."""
    return np.asarray(code, dtype=float) * fw.DAC_LSB - 10.0


class AD5676Chain:
    """AD5676 chips sharing one SYNC; position 0's DIN is the MCU's MOSI.

    A chip forwards bits to the next only when its daisy-chain enable (command 0x8, DCEN,
    off at power-up) is set; a write reaches chip ``p`` only through enabled chips
    ``0 … p−1``. On SYNC's rising edge each reached chip that received a full fresh word
    (``24 · (p+1)`` bits this frame) executes the 24 bits in its shift register; a chip the
    frame did not fill is left alone (counted as ``dac_partial_frames``), which is what the
    datasheet's "SYNC brought high before the 24th falling edge aborts the write" becomes
    in a chain.
    """

    def __init__(self, n: int, diag: dict[str, int]) -> None:
        self.n = n
        self.diag = diag
        self.reset()
        self._bits = 0

    def reset(self) -> None:
        """Power-on / software reset: every register zero scale, DCEN and masks off."""
        self.input = np.zeros((self.n, 8), dtype=np.int64)
        self.output = np.zeros((self.n, 8), dtype=np.int64)
        self.ldac_mask = np.zeros(self.n, dtype=np.int64)
        self.dcen = np.zeros(self.n, dtype=bool)
        self.powered_down = np.zeros((self.n, 8), dtype=bool)
        self.power_changed = True  # the board re-reads the chips' power states
        self._sr = 0

    def begin(self) -> None:
        self._bits = 0

    def shift(self, data: bytes) -> bytes:
        """Clock bytes in; AD5676 SDO is not wired to MISO, so MISO reads zeros."""
        nbits = 8 * len(data)
        width = DAC_WORD_BITS * self._reach()
        self._sr = ((self._sr << nbits) | int.from_bytes(data, "big")) & ((1 << width) - 1)
        self._bits += nbits
        return bytes(len(data))

    def _reach(self) -> int:
        reach = 1
        while reach < self.n and self.dcen[reach - 1]:
            reach += 1
        return reach

    def end(self, ldac_low: bool) -> list[tuple[int, int]]:
        """SYNC rising edge: execute; returns the (chip, channel) DAC registers loaded."""
        reach = self._reach()
        if self._bits == 0:
            return []
        if self._bits % DAC_WORD_BITS or self._bits < DAC_WORD_BITS * reach:
            self.diag["dac_partial_frames"] += 1
        changed: list[tuple[int, int]] = []
        for p in range(reach):
            if self._bits < DAC_WORD_BITS * (p + 1):
                continue
            word = (self._sr >> (DAC_WORD_BITS * p)) & 0xFFFFFF
            changed += self._execute(p, word >> 20, (word >> 16) & 0xF, word & 0xFFFF, ldac_low)
        self._bits = 0
        return changed

    def _update(self, chip: int, channels: list[int]) -> list[tuple[int, int]]:
        for ch in channels:
            self.output[chip, ch] = self.input[chip, ch]
        return [(chip, ch) for ch in channels]

    def _execute(
        self, chip: int, cmd: int, addr: int, data: int, ldac_low: bool
    ) -> list[tuple[int, int]]:
        self.diag["dac_words"] += 1
        if cmd in (0x1, 0x2, 0x3) and addr > 7:
            self.diag["dac_bad_address"] += 1
            return []
        if cmd == 0x0:  # no operation (also the filler word for other chips in a chain)
            return []
        if cmd == 0x1:  # write input register n; DAC updates now if LDAC is held low
            self.input[chip, addr] = data
            masked = (self.ldac_mask[chip] >> addr) & 1
            return self._update(chip, [addr]) if ldac_low and not masked else []
        if cmd == 0x2:  # update DAC register n from input register n
            return self._update(chip, [addr])
        if cmd == 0x3:  # write and update DAC channel n
            self.input[chip, addr] = data
            return self._update(chip, [addr])
        if cmd == 0x4:  # power down/up: 2 bits per channel, 00 = normal
            for ch in range(8):
                self.powered_down[chip, ch] = bool((data >> (2 * ch)) & 0x3)
            self.power_changed = True
            return [(chip, ch) for ch in range(8)]
        if cmd == 0x5:  # hardware LDAC mask register
            self.ldac_mask[chip] = data & 0xFF
            return []
        if cmd == 0x6:  # software reset (power-on reset), only with the documented key
            if data != DAC_RESET_KEY:
                self.diag["dac_reset_bad_key"] += 1
                return []
            self.input[chip] = 0
            self.output[chip] = 0
            self.ldac_mask[chip] = 0
            self.dcen[chip] = False
            self.powered_down[chip] = False
            self.power_changed = True
            return [(chip, ch) for ch in range(8)]
        if cmd == 0x7:  # internal reference setup (the board keeps the 2.5 V reference)
            return []
        if cmd == 0x8:  # daisy-chain enable
            self.dcen[chip] = bool(data & 1)
            return []
        if cmd == 0x9:  # readback: SDO is not wired to MISO on this board
            self.diag["dac_readback_unwired"] += 1
            return []
        if cmd == 0xA:  # write all input registers
            self.input[chip, :] = data
            free = [ch for ch in range(8) if not (self.ldac_mask[chip] >> ch) & 1]
            return self._update(chip, free) if ldac_low else []
        if cmd == 0xB:  # write all input and DAC registers
            self.input[chip, :] = data
            return self._update(chip, list(range(8)))
        self.diag["dac_bad_command"] += 1
        return []

    def ldac_fall(self) -> np.ndarray:
        """LDAC falling edge: unmasked DAC registers load from their input registers.

        Returns the (chips, 8) mask of the registers loaded.
        """
        bits = (self.ldac_mask[:, None] >> np.arange(8)[None, :]) & 1
        loaded = bits == 0
        self.output[loaded] = self.input[loaded]
        return loaded


# -- ADG714: octal SPST switch, 8-bit shift register, latched on SYNC rising edge ----------
SW_MAX_SCLK = 30_000_000  # ADG714 t1 = 33 ns


class ADG714Chain:
    """ADG714 chips in one daisy chain (DOUT → DIN), one SYNC.

    On SYNC's rising edge every chip latches its 8-bit shift register (bit b = switch b,
    1 = closed). A frame that is not a whole number of bytes is ignored (counted as
    ``switch_bad_frames``); a frame shorter than the chain latches the stale bits left in
    the far chips, as the parts would (counted as ``switch_short_frames``).
    """

    def __init__(self, n: int, diag: dict[str, int]) -> None:
        self.n = n
        self.diag = diag
        self._sr = 0
        self._bits = 0
        self.state = np.zeros(8 * n, dtype=bool)  # power-on: all switches open

    def begin(self) -> None:
        self._bits = 0

    def shift(self, data: bytes) -> bytes:
        nbits = 8 * len(data)
        self._sr = ((self._sr << nbits) | int.from_bytes(data, "big")) & ((1 << (8 * self.n)) - 1)
        self._bits += nbits
        return bytes(len(data))

    def end(self) -> np.ndarray | None:
        """SYNC rising edge: the requested switch state (None if the frame is ignored)."""
        if self._bits == 0:
            return None
        bits = self._bits
        self._bits = 0
        if bits % 8:
            self.diag["switch_bad_frames"] += 1
            return None
        if bits < 8 * self.n:
            self.diag["switch_short_frames"] += 1
        raw = self._sr.to_bytes(self.n, "little")
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little").astype(bool)


# -- ADS8688: 8-channel 16-bit SAR ADC, 500 kSPS, 32-bit frames, pipelined results -----------
ADC_MAX_SCLK = 17_000_000  # ADS8688 f_SCLK max
ADC_CYCLE_S = 2e-6  # 500 kSPS: t_CYC min
# Range register codes (Table 11, "Channel n input range"): (low, high) volts at 4.096 V ref.
ADC_RANGES: dict[int, tuple[float, float]] = {
    0x00: (-10.24, 10.24),  # ±2.5 × VREF (reset default)
    0x01: (-5.12, 5.12),  # ±1.25 × VREF
    0x02: (-2.56, 2.56),  # ±0.625 × VREF
    0x05: (0.0, 10.24),  # 0 … 2.5 × VREF
    0x06: (0.0, 5.12),  # 0 … 1.25 × VREF
}
ADC_NO_OP, ADC_STDBY, ADC_PWR_DN, ADC_RST, ADC_AUTO_RST = 0x0000, 0x8200, 0x8300, 0x8500, 0xA000
ADC_MAN_AUX = 0xE000
ADC_WAKE_US: int = fw.ADC_WAKE_US  # the firmware's wait after leaving STDBY
REG_AUTO_SEQ_EN, REG_RANGE0 = 0x01, 0x05


def adc_codes(
    volts: np.ndarray,
    low: np.ndarray | float,
    high: np.ndarray | float,
    in_place: bool = False,
    out: np.ndarray | None = None,
    clamp: bool = True,
) -> np.ndarray:
    """Straight-binary codes of input voltages: round to the nearest code, clamp 0…65535.

    For ±10.24 V this is ``V = (code − 32768) · 20.48 / 65536`` (architecture.md).
    ``in_place``: ``volts`` (a float64 array the caller no longer needs) is worked on
    instead of a copy. ``out``: an int64 array of ``volts``' shape to write the codes into.
    ``clamp=False``: the caller knows every code is within 0…65535 already.
    """
    lsb = (high - low) / 65536.0
    codes = volts if in_place else np.array(volts, dtype=np.float64)
    codes -= low
    codes /= lsb
    codes += 0.5
    if clamp:
        np.clip(codes, 0, 65535, out=codes)
    # Clamped to 0…65535 before the floor: the same codes (the bounds are integers), and
    # the floor of a non-negative number is its truncation, the cast to integers. Codes
    # known to lie within 0…65535 already (so not NaN) go through int32, two casts that
    # are faster than the one to int64.
    if out is None:
        out = np.empty(codes.shape, dtype=np.int64)
    np.copyto(out, codes if clamp else codes.astype(np.int32), casting="unsafe")
    return out


class ADS8688Chain:
    """ADS8688 chips sharing CS, SCLK and SDI (every chip sees the same command).

    A frame is a 16-bit command followed by data: chip ``p`` drives its 16 result bits on
    SCLK ``17 + 16p … 32 + 16p`` (bytes ``2 + 2p``, ``3 + 2p``) — its own data first, then
    what arrives on DAISY from the chip behind it. The channel selected in frame n is
    sampled on frame n+1's CS falling edge (``sample`` callback) and shifted out in that
    frame: the pipeline of the datasheet's Figure "Data acquisition example". A program
    register frame (bit 15 = 0) outputs the register's 8 bits instead (byte ``2 + 2p``).
    """

    def __init__(
        self, n: int, first_chip: int, sample: Callable[[int, int], int], diag: dict[str, int]
    ) -> None:
        self.n = n
        self.first_chip = first_chip
        self.sample = sample
        self.diag = diag
        self.powered = True
        self.standby = False  # STDBY or PWR_DN command in force (exits on MAN_Ch / AUTO_RST)
        self.power_changed = True  # the board re-reads the power state
        self.wake_s = 0.0  # datasheet time from leaving standby to a valid sample
        self.woke_at_s = -1.0
        self._now_s = 0.0
        self._rx = b""
        self._tx = bytearray()
        self._results: list[int] = []
        self.last_sample_s = -1.0
        self.reset()

    def reset(self) -> None:
        """RST command or RST/PD pin: program registers to defaults, no channel pending."""
        self.regs = np.zeros((self.n, 0x40), dtype=np.int64)
        self.regs[:, REG_AUTO_SEQ_EN] = 0xFF
        self.pending: int | None = None
        self.mode = "man"
        if getattr(self, "standby", False):
            self.standby = False
            self.power_changed = True

    def range_of(self, chip: int, channel: int) -> tuple[float, float]:
        return ADC_RANGES[int(self.regs[chip, REG_RANGE0 + channel])]

    def begin(self, now_s: float) -> None:
        """CS falling edge: sample the pending channel on every chip of the chain."""
        self._tx = bytearray()
        self._results = [0] * self.n
        self._now_s = now_s
        if not self.powered:
            self.diag["adc_frames_powered_down"] += 1
            return
        if self.pending is not None:
            if self.last_sample_s >= 0 and now_s - self.last_sample_s < ADC_CYCLE_S - 1e-12:
                self.diag["adc_rate_violations"] += 1
            self.last_sample_s = now_s
            if self.woke_at_s >= 0 and now_s - self.woke_at_s < self.wake_s - 1e-12:
                self.diag["adc_wake_violations"] += 1
            self._results = [self.sample(self.first_chip + p, self.pending) for p in range(self.n)]

    def shift(self, data: bytes) -> bytes:
        start = len(self._tx)
        self._tx += data
        if start < 2 <= len(self._tx):
            self._decode_output()
        frame = self._frame_out()
        return bytes(frame[start : start + len(data)])

    def _decode_output(self) -> None:
        """After 16 SCLKs the command is known: program-register frames output registers."""
        cmd = int.from_bytes(self._tx[:2], "big")
        if self.powered and not cmd & 0x8000 and cmd != ADC_NO_OP:
            addr = cmd >> 9
            self._results = [int(self.regs[p, addr]) << 8 for p in range(self.n)]

    def _frame_out(self) -> bytearray:
        out = bytearray(2)
        for value in self._results:
            out += int(value).to_bytes(2, "big")
        if len(self._tx) > len(out):
            out += bytes(len(self._tx) - len(out))
        return out

    def end(self) -> None:
        """CS rising edge: act on the command (frames under 16 bits are ignored)."""
        if len(self._tx) < 2:
            if self._tx:
                self.diag["adc_truncated_frames"] += 1
            return
        if not self.powered:
            return
        if len(self._tx) < 2 + 2 * self.n:
            self.diag["adc_short_frames"] += 1
        cmd = int.from_bytes(self._tx[:2], "big")
        if not cmd & 0x8000:
            if cmd != ADC_NO_OP:
                self._program(cmd)
            else:
                self._continue()
            return
        if (cmd & 0xE3FF) == 0xC000 or cmd in (ADC_MAN_AUX, ADC_AUTO_RST):
            self._wake()
        if (cmd & 0xE3FF) == 0xC000:  # MAN_Ch_n: 0xC000 + (n << 10), n = 0…7
            self.mode, self.pending = "man", (cmd >> 10) & 0x7
        elif cmd == ADC_MAN_AUX:
            self.mode, self.pending = "man", None  # AUX input is not wired on this board
        elif cmd == ADC_AUTO_RST:
            self.mode = "auto"
            self.pending = self._next_auto(-1)
        elif cmd in (ADC_STDBY, ADC_PWR_DN):
            self.pending = None
            if not self.standby:
                self.standby = True
                self.power_changed = True
        elif cmd == ADC_RST:
            self.reset()
        else:
            self.diag["adc_bad_command"] += 1  # treated as NO_OP, as the part does
            self._continue()

    def _wake(self) -> None:
        """A MAN_Ch_n / AUTO_RST command ends STDBY; samples are valid ``wake_s`` later."""
        if self.standby:
            self.standby = False
            self.power_changed = True
            self.woke_at_s = self._now_s

    def _continue(self) -> None:
        if self.mode == "auto" and self.pending is not None:
            self.pending = self._next_auto(self.pending)

    def _next_auto(self, current: int) -> int | None:
        enabled = [ch for ch in range(8) if (int(self.regs[0, REG_AUTO_SEQ_EN]) >> ch) & 1]
        if not enabled:
            return None
        later = [ch for ch in enabled if ch > current]
        return later[0] if later else enabled[0]

    def _program(self, cmd: int) -> None:
        addr, write, data = cmd >> 9, (cmd >> 8) & 1, cmd & 0xFF
        if not write:
            return
        if REG_RANGE0 <= addr < REG_RANGE0 + 8 and data not in ADC_RANGES:
            self.diag["adc_bad_range"] += 1
            return
        self.regs[:, addr] = data

    def power(self, on: bool) -> None:
        """RST/PD pin: low powers the chain down; the rising edge resets it."""
        if on and not self.powered:
            self.reset()
        if on != self.powered:
            self.power_changed = True
        self.powered = on


# -- TIA: column transimpedance amplifiers -------------------------------------------------
TIA_RF: tuple[float, ...] = fw.TIA_RF  # by GAIN1·2 + GAIN0
TIA_SAT_V: float = fw.TIA_SAT_V


def tia_volts(current: np.ndarray, rf: float) -> np.ndarray:
    """``Vout = −I · Rf`` clipped at the ±10 V rails (current into the TIA is positive)."""
    return np.clip(np.asarray(current) * -rf, -TIA_SAT_V, TIA_SAT_V)


# -- frame builders (the byte formats above, as the firmware sends them) ------------------
DAC_BAUD: int = fw.SPI0_BAUD
ADC_BAUD: int = fw.SPI1_BAUD
DAC_MID: int = fw.DAC_MID
SW_DAC: int = fw.SW_DAC
SW_TIA: int = fw.SW_TIA
SW_GND: int = fw.SW_GND


def dac_word(cmd: int, channel: int, data: int) -> int:
    """AD5676 24-bit word: [23:20] command, [19:16] channel, [15:0] data."""
    return ((cmd & 0xF) << 20) | ((channel & 0xF) << 16) | (data & 0xFFFF)


def dac_frame(chain_len: int, words: dict[int, int]) -> bytes:
    """One frame for a DAC chain: ``words[position]``; NO-OP (0) for other positions.

    The first word on the wire ends in the last chip, so positions go out n−1 … 0.
    """
    return b"".join(words.get(p, 0).to_bytes(3, "big") for p in reversed(range(chain_len)))


def switch_frame(n_chips: int, closed: np.ndarray) -> bytes:
    """ADG714 chain frame: byte k carries switches 8·(n−1−k) … +7, bit b switch 8·(n−1−k)+b."""
    bits = np.zeros(8 * n_chips, dtype=bool)
    bits[: len(closed)] = closed
    per_chip = np.packbits(bits.reshape(n_chips, 8), axis=1, bitorder="little")[:, 0]
    return bytes(per_chip[::-1].tolist())


def adc_command_frame(chain_len: int, command: int) -> bytes:
    """ADS8688 frame: 16-bit command then 16 clocks of data per chip in the chain."""
    return command.to_bytes(2, "big") + bytes(2 * chain_len)


def adc_results(rx: bytes, chain_len: int) -> list[int]:
    """Each chain position's 16-bit result from a received frame (bytes 2+2p, 3+2p)."""
    return [int.from_bytes(rx[2 + 2 * p : 4 + 2 * p], "big") for p in range(chain_len)]


def man_ch(channel: int) -> int:
    return 0xC000 + (channel << 10)


def program_write(addr: int, data: int) -> int:
    return (addr << 9) | 0x100 | (data & 0xFF)


def mvm_switches(profile: BoardProfile, arrays: list[int]) -> np.ndarray:
    """Switch state for reading: the arrays' rows to their DACs, columns to their TIAs."""
    closed = np.zeros(3 * profile.lines, dtype=bool)
    for a in arrays:
        for r in range(profile.rows):
            closed[3 * profile.row_line(a, r) + SW_DAC] = True
        for c in range(profile.cols):
            closed[3 * profile.col_line(a, c) + SW_TIA] = True
    return closed
