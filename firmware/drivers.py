"""Part drivers speaking the real SPI byte formats (docs/architecture.md, reference board).

AD5676 DAC (24-bit words), ADG714 switch chain (one bit per switch), ADS8688 ADC
(32-bit frames, result pipelined into the next frame) and the shared TIA gain pins.
Every buffer is allocated once here; the transfer methods only fill and send them.
Chips beyond one per chip select are daisy-chained: a frame then carries one word per
chip, and the first word on the wire ends in the last chip of the chain.
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

import time
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
        n = geom.dac_chips * profiles.DAC_CHANNELS
        self.staged = array("H", bytes(2 * n))  # zeroed without a list as long (heap)
        kernels.reset16(self.staged, 0, n, profiles.DAC_MID)
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
        self.send = spi.write  # bound once: a method fetched per call allocates

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
        outputs 1 kOhm to ground (AD5676R command 0x4); registers keep their codes."""
        self.command(chip_lo, chip_hi, profiles.DAC_CMD_POWER, 0 if on else profiles.DAC_PD_1K)

    def command(self, chip_lo, chip_hi, cmd, data):
        """(cmd, data) to chips chip_lo .. chip_hi: one frame per chip select, no-ops for
        the chips outside the range."""
        chain = self.chain
        buf = self.buf
        for sel in range(chip_lo // chain, chip_hi // chain + 1):
            buf[:] = self.nops
            kernels.words(
                buf,
                chain,
                max(chip_lo - sel * chain, 0),
                min(chip_hi - sel * chain, chain - 1),
                cmd << 4,
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
        # scan(): one conversion pass, planned into this buffer by a kernel and sent from
        # views made here (at most nine frames per chip select: eight channels, STDBY);
        # each frame's answer overwrites its command (write_readinto, one buffer).
        flen = len(self.tx)
        nf = 9 * len(cs)
        self.frames = bytearray(flen * nf)
        mv = memoryview(self.frames)
        self.views = [mv[f * flen : (f + 1) * flen] for f in range(nf)]
        self.fsel = bytearray(nf)
        self.fprev = bytearray(nf)
        self.chans = bytearray(nf)
        self.xfer = spi.write_readinto  # bound once: a method fetched per call allocates
        self.count = array("i", [0])  # conversions taken, wrapping at 2^30 (STATS)
        # kernels.adc_pass's context: its kernels, bound calls, buffers and constants.
        k = [flen, self.chain, self.columns, profiles.ADC_CMD_MAN, profiles.ADC_CMD_STDBY]
        k += [profiles.ADC_WAKE_US, profiles.ADC_MID, profiles.ADC_SAT]
        self.ctx = (
            kernels.adc_plan,
            kernels.adc_results,
            [c.off for c in cs],
            [c.on for c in cs],
            self.views,
            self.xfer,
            time.sleep_us,
            self.frames,
            self.fsel,
            self.fprev,
            self.chans,
            self.count,
            array("i", k),
        )

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

    def scan(self, want, s_lo, s_hi, codes, gains, gi):
        """Convert every wanted column (want[c] != 0) on chip selects s_lo .. s_hi, which
        are in standby, at gain gi, and leave them in standby: codes[c] = result - 32768,
        gains[c] = gi, and want[c] cleared unless the column is near the rail with a lower
        gain left. Returns nonzero while any column stays wanted.

        One frame per select selects its first needed channel, which also wakes the
        chain; after ADC_WAKE_US (which also covers the rows' settling) each select gets
        one frame per other needed channel and a STDBY frame, each returning the results
        of the channel before it (kernels.adc_pass)."""
        return kernels.adc_pass(self.ctx, want, s_lo, s_hi, codes, gains, gi)


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
