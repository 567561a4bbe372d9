"""Part drivers speaking the real SPI byte formats (docs/architecture.md, reference board).

AD5676 DAC (24-bit words), ADG714 switch chain (one bit per switch), ADS8688 ADC
(32-bit frames, result pipelined into the next frame) and the shared TIA gain pins.
Every buffer is allocated once here; the transfer methods only fill and send them.
Chips beyond one per chip select are daisy-chained: a frame then carries one word per
chip, and the first word on the wire ends in the last chip of the chain.
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

from array import array

import board
from micropython import const

_NOP = const(0)


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
        self.limit = 0  # set by the HAL from the safety limits
        self.staged = array("H", [board.DAC_MID] * (geom.dac_chips * board.DAC_CHANNELS))

    def _send(self, line, cmd, data):
        chip = line // board.DAC_CHANNELS
        sel = chip // self.chain
        k = 3 * (self.chain - 1 - chip % self.chain)
        buf = self.buf
        for i in range(len(buf)):
            buf[i] = _NOP
        buf[k] = (cmd << 4) | (line % board.DAC_CHANNELS)
        buf[k + 1] = data >> 8
        buf[k + 2] = data & 0xFF
        cs = self.cs[sel]
        cs.off()
        try:
            self.spi.write(buf)
        finally:
            cs.on()

    def write(self, line, code, update):
        """Write `code` to line's channel; update=False stages it for the next LDAC edge.

        Refuses (SafetyError) any code beyond the line-voltage limit, whoever asks.
        """
        d = code - board.DAC_MID
        if d > self.limit or -d > self.limit or line < 0 or line >= self.lines:
            raise SafetyError("DAC code %d on line %d beyond limit" % (code, line))
        self._send(line, board.DAC_CMD_WRITE_UPDATE if update else board.DAC_CMD_WRITE, code)
        self.staged[line] = code

    def load(self):
        """Falling LDAC edge: every staged input register becomes the output at once."""
        self.ldac.off()
        self.ldac.on()

    def reset(self):
        """Software reset (outputs to zero scale), then every channel to 0 V (mid code)."""
        self.ldac.on()
        buf = self.buf
        for sel in range(len(self.cs)):
            for k in range(0, len(buf), 3):
                buf[k] = board.DAC_CMD_RESET << 4
                buf[k + 1] = board.DAC_RESET_DATA >> 8
                buf[k + 2] = board.DAC_RESET_DATA & 0xFF
            cs = self.cs[sel]
            cs.off()
            try:
                self.spi.write(buf)
            finally:
                cs.on()
        for line in range(len(self.staged)):
            self._send(line, board.DAC_CMD_WRITE_UPDATE, board.DAC_MID)
            self.staged[line] = board.DAC_MID


class Switches:
    """ADG714 chain: three switches per line (DAC, TIA, ground); one-hot per line.

    `state` holds the switch bits in switch order (byte j: switches 8j..8j+7); the frame
    on the wire is that image reversed, so byte k carries switches 8(n-1-k)..8(n-1-k)+7.
    One-hot modes make a DAC-to-ground short impossible by construction.
    """

    FLOAT = -1

    def __init__(self, spi, cs, geom):
        self.spi = spi
        self.cs = cs
        n = geom.sw_chips
        self.lines = geom.lines
        self.state = bytearray(n)
        self.wire = bytearray(n)

    def set(self, line, mode):
        """Put line in mode board.SW_DAC / SW_TIA / SW_GND or Switches.FLOAT (staged)."""
        st = self.state
        for k in range(3):
            s = 3 * line + k
            st[s >> 3] &= ~(1 << (s & 7)) & 0xFF
        if mode >= 0:
            s = 3 * line + mode
            st[s >> 3] |= 1 << (s & 7)

    def mode(self, line):
        """Current staged mode of a line (FLOAT when no switch is closed)."""
        for k in range(3):
            s = 3 * line + k
            if self.state[s >> 3] & (1 << (s & 7)):
                return k
        return self.FLOAT

    def all(self, mode):
        """Stage every line to one mode (used for the safe state)."""
        for j in range(len(self.state)):
            self.state[j] = 0
        if mode >= 0:
            for line in range(self.lines):
                self.set(line, mode)

    def commit(self):
        """Send the frame; the switches latch on the rising edge of CS_SW."""
        n = len(self.state)
        for k in range(n):
            self.wire[k] = self.state[n - 1 - k]
        self.cs.off()
        try:
            self.spi.write(self.wire)
        finally:
            self.cs.on()


class Adc:
    """ADS8688 ADCs: manual channel select, results one frame later (pipeline)."""

    def __init__(self, spi, cs, rst, geom):
        self.spi = spi
        self.cs = cs
        self.rst = rst
        self.chain = geom.adc_chain
        self.chips = geom.adc_chips
        self.columns = geom.columns
        self.tx = bytearray(4 * self.chain)
        self.rx = bytearray(4 * self.chain)
        self.pending = array("h", [-1] * self.chain)  # column whose result comes next
        self.conversions = 0

    def _frame(self, sel):
        cs = self.cs[sel]
        cs.off()
        try:
            self.spi.write_readinto(self.tx, self.rx)
        finally:
            cs.on()

    def _put(self, pos, cmd):
        k = 4 * (self.chain - 1 - pos)
        self.tx[k] = cmd >> 8
        self.tx[k + 1] = cmd & 0xFF
        self.tx[k + 2] = 0
        self.tx[k + 3] = 0

    def _fill(self, cmd):
        for pos in range(self.chain):
            self._put(pos, cmd)

    def init(self):
        """Release reset, reset every chip, set every channel's range to +-10.24 V."""
        self.rst.on()
        for sel in range(len(self.cs)):
            self._fill(board.ADC_CMD_RESET)
            self._frame(sel)
            for ch in range(board.ADC_CHANNELS):
                self._fill(((board.ADC_REG_RANGE + ch) << 9) | 0x100 | board.ADC_RANGE_10V24)
                self._frame(sel)

    def convert(self, want, codes):
        """Convert every column c with want[c] != 0; codes[c] = result - 32768.

        Per chip select, one frame per channel number asks every chip of the chain for
        that channel; each result arrives in the next frame, hence one flush frame.
        """
        chain = self.chain
        nsel = (self.chips + chain - 1) // chain
        pend = self.pending
        for sel in range(nsel):
            base = sel * chain * board.ADC_CHANNELS
            for p in range(chain):
                pend[p] = -1
            for ch in range(board.ADC_CHANNELS + 1):
                any_cmd = False
                for p in range(chain):
                    col = base + p * board.ADC_CHANNELS + ch
                    if ch < board.ADC_CHANNELS and col < self.columns and want[col]:
                        self._put(p, board.ADC_CMD_MAN + (ch << 10))
                        any_cmd = True
                    else:
                        self._put(p, board.ADC_CMD_NOOP)
                busy = any_cmd
                for p in range(chain):
                    if pend[p] >= 0:
                        busy = True
                if not busy:
                    continue
                self._frame(sel)
                for p in range(chain):
                    col = pend[p]
                    if col >= 0:
                        k = 4 * (chain - 1 - p)
                        codes[col] = ((self.rx[k + 2] << 8) | self.rx[k + 3]) - board.ADC_MID
                        self.conversions += 1
                    nxt = base + p * board.ADC_CHANNELS + ch
                    if ch < board.ADC_CHANNELS and nxt < self.columns and want[nxt]:
                        pend[p] = nxt
                    else:
                        pend[p] = -1


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
