"""Part drivers speaking the real SPI byte formats (docs/architecture.md, reference board).

AD5676 DAC (24-bit words), ADG714 switch chain (one bit per switch), ADS8688 ADC
(32-bit frames, result pipelined into the next frame) and the shared TIA gain pins.
Every buffer is allocated once here; the transfer methods only fill and send them.
Chips beyond one per chip select are daisy-chained: a frame then carries one word per
chip, and the first word on the wire ends in the last chip of the chain.
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

from array import array

import kernels
import profiles
from micropython import const

_MID = const(32768)
_COUNT_MASK = const(0x3FFFFFFF)  # counters wrap at 2^30: small ints on a 32-bit port


class SafetyError(Exception):
    """A command would drive a line beyond a safety limit; nothing was energised."""


class Dac:
    """AD5676 octal DACs. `limit` caps |code - 32768| of every word sent (line voltage)."""

    def __init__(self, spi, cs, ldac, geom):
        self.spi = spi
        self.cs = cs
        self.ldac = ldac
        self.chain = geom.dac_chain
        self.lines = geom.lines
        self.buf = bytearray(3 * self.chain)
        self.nops = bytes(3 * self.chain)
        self.limit = 0  # set by the HAL from the safety limits
        self.staged = array("H", [profiles.DAC_MID] * (geom.dac_chips * profiles.DAC_CHANNELS))
        self.dirty = 0  # lines whose last written code is not 0 V
        # stage(): every frame of a block of lines built at once (one per channel and chip
        # select), sent from views made here, so staging allocates nothing.
        flen = 3 * self.chain
        nf = profiles.DAC_CHANNELS * len(cs)
        self.frames = bytearray(flen * nf)
        mv = memoryview(self.frames)
        self.views = [mv[f * flen : (f + 1) * flen] for f in range(nf)]
        self.fsel = bytearray(nf)
        self.delta = array("i", [0])

    def _out(self, sel):
        cs = self.cs[sel]
        cs.off()
        try:
            self.spi.write(self.buf)
        finally:
            cs.on()

    def _put(self, line, cmd, code):
        """Place line's word in the frame buffer and track what its register holds."""
        chip = line >> 3
        k = 3 * (self.chain - 1 - chip % self.chain)
        buf = self.buf
        buf[k] = cmd | (line & 7)
        buf[k + 1] = code >> 8
        buf[k + 2] = code & 0xFF
        old = self.staged[line]
        if old != code:
            if old == profiles.DAC_MID:
                self.dirty += 1
            elif code == profiles.DAC_MID:
                self.dirty -= 1
            self.staged[line] = code

    def _check(self, line, code):
        d = code - profiles.DAC_MID
        if d > self.limit or -d > self.limit or line < 0 or line >= self.lines:
            raise SafetyError("DAC code %d on line %d beyond limit" % (code, line))

    def write(self, line, code, update):
        """Write `code` to line's channel; update=False stages it for the next LDAC edge.

        Refuses (SafetyError) any code beyond the line-voltage limit, whoever asks.
        """
        self._check(line, code)
        self.buf[:] = self.nops
        cmd = profiles.DAC_CMD_WRITE_UPDATE if update else profiles.DAC_CMD_WRITE
        self._put(line, cmd << 4, code)
        self._out(line // profiles.DAC_CHANNELS // self.chain)

    def stage(self, line0, codes, i0, n, update):
        """Write codes[i0 : i0+n] to lines line0 .. line0+n-1, every code checked before
        any is sent.

        One frame per channel number and chip select carries that channel for every chip
        of the chain at once, so a block of lines costs ~8 frames, not one per line.
        """
        lim = self.limit
        if line0 < 0 or line0 + n > self.lines:
            raise SafetyError("DAC lines %d+%d out of range" % (line0, n))
        i = kernels.out_of_range(codes, i0, n, lim)
        if i >= 0:
            raise SafetyError("DAC code %d on line %d beyond limit" % (codes[i], line0 + i - i0))
        cmd = (profiles.DAC_CMD_WRITE_UPDATE if update else profiles.DAC_CMD_WRITE) << 4
        nf = kernels.dac_frames(
            self.frames, self.fsel, self.staged, codes, i0, line0, n, cmd, self.chain, _MID,
            self.delta,
        )  # fmt: skip
        self.dirty += self.delta[0]
        spi = self.spi
        css = self.cs
        views = self.views
        fsel = self.fsel
        for f in range(nf):
            cs = css[fsel[f]]
            cs.off()
            try:
                spi.write(views[f])
            finally:
                cs.on()

    def load(self):
        """Falling LDAC edge: every staged input register becomes the output at once."""
        self.ldac.off()
        self.ldac.on()

    def _frame(self, sel, words, cmd, data):
        """A frame of `words` words whose first (farthest-travelling) word is
        (cmd, data) and the rest no-ops: it reaches chip `words - 1` of the chain."""
        buf = self.buf
        buf[:] = self.nops
        buf[0] = cmd << 4
        buf[1] = data >> 8
        buf[2] = data & 0xFF
        cs = self.cs[sel]
        cs.off()
        try:
            self.spi.write(memoryview(buf)[: 3 * words])
        finally:
            cs.on()

    def power(self, chip_lo, chip_hi, on):
        """Power chips chip_lo .. chip_hi (all eight channels) up, or down with their
        outputs 1 kOhm to ground (AD5676R command 0x4); registers keep their codes.
        One frame per chip select, no-ops for the chips outside the range."""
        data = 0 if on else profiles.DAC_PD_1K
        chain = self.chain
        buf = self.buf
        for sel in range(chip_lo // chain, chip_hi // chain + 1):
            buf[:] = self.nops
            kernels.words(
                buf,
                chain,
                max(chip_lo - sel * chain, 0),
                min(chip_hi - sel * chain, chain - 1),
                profiles.DAC_CMD_POWER << 4,
                data >> 8,
                data & 0xFF,
            )
            self._out(sel)

    def reset(self):
        """Software reset (outputs to zero scale), then every channel to 0 V (mid code).

        In a chain a chip passes bits on only once its daisy-chain enable (DCEN) is set,
        and reset clears it; so chips are reset and enabled one by one from the MCU end.
        """
        self.ldac.on()
        for sel in range(len(self.cs)):
            for p in range(self.chain):
                self._frame(sel, p + 1, profiles.DAC_CMD_RESET, profiles.DAC_RESET_DATA)
                if p < self.chain - 1:
                    self._frame(sel, p + 1, profiles.DAC_CMD_DCEN, 1)
        # Every chip of a chain takes one word per frame: channel ch of all chips at once.
        buf = self.buf
        for ch in range(profiles.DAC_CHANNELS):
            for k in range(0, len(buf), 3):
                buf[k] = (profiles.DAC_CMD_WRITE_UPDATE << 4) | ch
                buf[k + 1] = profiles.DAC_MID >> 8
                buf[k + 2] = profiles.DAC_MID & 0xFF
            for sel in range(len(self.cs)):
                cs = self.cs[sel]
                cs.off()
                try:
                    self.spi.write(buf)
                finally:
                    cs.on()
        for line in range(len(self.staged)):
            self.staged[line] = profiles.DAC_MID
        self.dirty = 0


class Switches:
    """ADG714 chain: three switches per line (DAC, TIA, ground); one-hot per line.

    `wire` is the frame exactly as sent: byte k carries switches 8(n-1-k) .. 8(n-1-k)+7,
    bit b switch 8(n-1-k)+b. Modes are staged into it and latch when `send` (or
    `commit`) raises CS_SW. One-hot modes make a DAC-to-ground short impossible.
    """

    FLOAT = -1

    def __init__(self, spi, cs, geom):
        self.spi = spi
        self.cs = cs
        self.lines = geom.lines
        self.n = geom.sw_chips
        self.wire = bytearray(self.n)
        for line in range(self.lines):
            self.set(line, profiles.SW_GND)
        self.grounded = bytes(self.wire)
        self.floating = bytes(self.n)

    def set(self, line, mode):
        """Stage line in mode profiles.SW_DAC / SW_TIA / SW_GND or Switches.FLOAT."""
        w = self.wire
        last = self.n - 1
        s = 3 * line
        for k in range(3):
            w[last - ((s + k) >> 3)] &= ~(1 << ((s + k) & 7)) & 0xFF
        if mode >= 0:
            s += mode
            w[last - (s >> 3)] |= 1 << (s & 7)

    def from_ground(self, line, mode):
        """Stage a line known to be grounded into mode (two bit operations)."""
        w = self.wire
        s = 3 * line + profiles.SW_GND
        w[self.n - 1 - (s >> 3)] &= ~(1 << (s & 7)) & 0xFF
        if mode >= 0:
            s = 3 * line + mode
            w[self.n - 1 - (s >> 3)] |= 1 << (s & 7)

    def route(self, line0, n, codes, c0, mode):
        """Stage lines line0 .. line0+n-1, known to be grounded, into `mode` (DAC or TIA);
        with c0 >= 0 only those whose codes[c0 + i] is not 0 V (a row at 0 V stays on its
        ground switch). from_ground for a block of lines, in one kernel call."""
        kernels.route(
            self.wire, self.n - 1, line0, n, codes, c0 if c0 >= 0 else -1, profiles.SW_GND, mode
        )

    def mode(self, line):
        """Staged mode of a line (FLOAT when no switch is closed)."""
        for k in range(3):
            s = 3 * line + k
            if self.wire[self.n - 1 - (s >> 3)] & (1 << (s & 7)):
                return k
        return self.FLOAT

    def all(self, mode):
        """Stage every line to ground or floating (the safe and power-up states)."""
        self.wire[:] = self.grounded if mode == profiles.SW_GND else self.floating

    def commit(self):
        """Send the staged frame; the switches latch on the rising edge of CS_SW."""
        self.send()

    def send(self):
        """A few machine calls, so a pulse can end on it."""
        self.cs.off()
        try:
            self.spi.write(self.wire)
        finally:
            self.cs.on()


class Adc:
    """ADS8688 ADCs: manual channel select, results one frame later (pipeline).

    The chips of one chip select share SDI, so every chip of a chain receives the same
    16-bit command; the frame then carries 16 result bits per chip, position p in bytes
    2 + 2p, 3 + 2p (for a single chip: the last two bytes of the 32-bit frame).
    """

    def __init__(self, spi, cs, rst, geom):
        self.spi = spi
        self.cs = cs
        self.rst = rst
        self.chain = geom.adc_chain
        self.chips = geom.adc_chips
        self.columns = geom.columns
        self.tx = bytearray(2 + 2 * self.chain)
        self.rx = bytearray(2 + 2 * self.chain)
        self.conversions = 0

    def _frame(self, sel, cmd):
        self.tx[0] = cmd >> 8
        self.tx[1] = cmd & 0xFF
        cs = self.cs[sel]
        cs.off()
        try:
            self.spi.write_readinto(self.tx, self.rx)
        finally:
            cs.on()

    def init(self):
        """Release reset, reset every chip, set every channel's range to +-10.24 V."""
        self.rst.on()
        for sel in range(len(self.cs)):
            self._frame(sel, profiles.ADC_CMD_RESET)
            for ch in range(profiles.ADC_CHANNELS):
                self._frame(
                    sel, ((profiles.ADC_REG_RANGE + ch) << 9) | 0x100 | profiles.ADC_RANGE_10V24
                )

    def standby(self, sel):
        """STDBY on every chip of chip select `sel`; the next MAN_Ch_n wakes them."""
        self._frame(sel, profiles.ADC_CMD_STDBY)

    def wake(self, sel):
        """Leave STDBY with a MAN_AUX frame: the AUX input (not wired) is selected, so no
        channel's sample is pending (the next frame converts nothing of ours)."""
        self._frame(sel, profiles.ADC_CMD_MAN_AUX)

    def convert(self, want, codes, lo, hi):
        """Convert every column c in lo .. hi-1 with want[c] != 0; codes[c] = result -
        32768.

        Per chip select, one frame per channel number that any chip of the chain needs;
        each frame returns the previous selection's results, hence one flush frame. Only
        the chain positions holding columns lo .. hi-1 are scanned.
        """
        chain = self.chain
        n8 = profiles.ADC_CHANNELS
        chip_lo = lo // n8
        chip_hi = (hi - 1) // n8
        rx = self.rx
        for sel in range(chip_lo // chain, chip_hi // chain + 1):
            p_lo = max(chip_lo - sel * chain, 0)
            npos = min(chip_hi - sel * chain, chain - 1) - p_lo + 1
            base = (sel * chain + p_lo) * n8  # column of channel 0 at position p_lo
            prev = -1
            for ch in range(n8 + 1):
                need = ch < n8 and kernels.adc_need(want, base + ch, npos, lo, hi)
                if not need and prev < 0:
                    continue
                self._frame(
                    sel, profiles.ADC_CMD_MAN + (ch << 10) if need else profiles.ADC_CMD_NOOP
                )
                if prev >= 0:
                    taken = kernels.adc_take(
                        rx, codes, want, base + prev, p_lo, npos, lo, hi, profiles.ADC_MID
                    )
                    self.conversions = (self.conversions + taken) & _COUNT_MASK
                prev = ch if need else -1


class Gain:
    """Shared TIA feedback select: Rf = TIA_RF[GAIN1 * 2 + GAIN0]."""

    def __init__(self, g0, g1):
        self.g0 = g0
        self.g1 = g1
        self.index = -1

    def set(self, index):
        if index != self.index:
            self.g0.value(index & 1)
            self.g1.value((index >> 1) & 1)
            self.index = index
