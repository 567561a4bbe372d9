"""Byte formats of the board's SPI parts, and the reference MVM driver built on them.

The builders here produce exactly the frames docs/architecture.md specifies (and the
firmware sends); the emulator's tests and the batch path's probe drive the board with
them through ``BoardModel.spi_transfer`` / ``pin_write``. :class:`MvmDriver` is the
reference byte-level MVM sequence the batch path reproduces:

1. DAC: for each chip select and channel holding one of the array's rows, one frame
   writing the input registers (command 0x1) of those rows, NO-OP words for the other
   chips of the chain;
2. LDAC low then high: every row changes together;

(each pin write and SPI call is charged its MicroPython cost, as the firmware would be)
3. wait the DAC settling time (5 µs);
4. ADC: for each ADC chip select holding the array's columns, ``MAN_Ch_n`` for each
   needed channel, then ``STDBY``; frame j+1 returns the result of channel j (pipeline),
   and STDBY leaves no conversion pending, so every MVM starts from the same state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .parts import ADC_RST, ADC_STDBY, DAC_RESET_KEY, REG_RANGE0

if TYPE_CHECKING:
    from .board import BoardModel
    from .profiles import BoardProfile

DAC_BAUD = 30_000_000
ADC_BAUD = 17_000_000
DAC_MID = 32768
SW_DAC, SW_TIA, SW_GND = 0, 1, 2


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


class MvmDriver:
    """The reference byte-level MVM sequence (module docstring) on one board."""

    def __init__(self, board: BoardModel, gain: int = 3) -> None:
        self.board = board
        self.p = board.profile
        self.gain = gain

    # -- primitives --------------------------------------------------------------
    def _frame(self, cs: int, bus: int, data: bytes, baud: int) -> bytes:
        b = self.board
        b.charge("pin")
        b.pin_write(cs, 0)
        b.charge("spi_call")
        rx = b.spi_transfer(bus, data, baud)
        b.charge("pin")
        b.pin_write(cs, 1)
        return rx

    def _chain_len(self, kind: str, s: int) -> int:
        p = self.p
        if kind == "dac":
            return min(p.dac_chain, p.dac_chips - s * p.dac_chain)
        return min(p.adc_chain, p.adc_chips - s * p.adc_chain)

    def dac(self, s: int, words: dict[int, int]) -> None:
        frame = dac_frame(self._chain_len("dac", s), words)
        self._frame(self.p.pin_cs_dac[s], self.p.bus_dac, frame, DAC_BAUD)

    def adc(self, s: int, command: int) -> list[int]:
        n = self._chain_len("adc", s)
        rx = self._frame(self.p.pin_cs_adc[s], self.p.bus_adc, adc_command_frame(n, command),
                         ADC_BAUD)  # fmt: skip
        return adc_results(rx, n)

    def switches(self, closed: np.ndarray) -> None:
        self._frame(self.p.pin_cs_sw, self.p.bus_dac, switch_frame(self.p.sw_chips, closed),
                    DAC_BAUD)  # fmt: skip

    # -- set-up ------------------------------------------------------------------
    def setup(self, arrays: list[int] | None = None) -> None:
        """Reset and chain the DACs, park every line at 0 V, switch the arrays in for
        reading, reset the ADCs to ±10.24 V, select the TIA gain."""
        p, b = self.p, self.board
        arrays = list(range(p.arrays)) if arrays is None else arrays
        for s in range(p.dac_selects):
            n = self._chain_len("dac", s)
            self.dac(s, {0: dac_word(0x6, 0, DAC_RESET_KEY)})  # reaches chip 0 (standalone)
            for k in range(n - 1):  # enable forwarding one chip at a time
                self.dac(s, {k: dac_word(0x8, 0, 1)})
            self.dac(s, {q: dac_word(0xB, 0, DAC_MID) for q in range(n)})  # all to 0 V
        self.switches(mvm_switches(p, arrays))
        for s in range(p.adc_selects):
            self.adc(s, ADC_RST)
            for ch in range(8):
                self.adc(s, program_write(REG_RANGE0 + ch, 0x00))
        b.pin_write(p.pin_gain[0], self.gain & 1)
        b.pin_write(p.pin_gain[1], (self.gain >> 1) & 1)

    # -- one MVM -----------------------------------------------------------------
    def mvm(self, array: int, codes: np.ndarray) -> np.ndarray:
        """Apply DAC ``codes`` (rows,) to the array's rows; the columns' ADC codes."""
        p, b = self.p, self.board
        codes = np.asarray(codes, dtype=np.int64)
        groups: dict[tuple[int, int], dict[int, int]] = {}
        for r in range(p.rows):
            line = p.row_line(array, r)
            chip, ch = divmod(line, 8)
            s, pos = divmod(chip, p.dac_chain)
            groups.setdefault((s, ch), {})[pos] = dac_word(0x1, ch, int(codes[r]))
        for (s, _ch), words in sorted(groups.items()):
            self.dac(s, words)
        b.charge("pin")
        b.pin_write(p.pin_ldac, 0)
        b.charge("pin")
        b.pin_write(p.pin_ldac, 1)
        b.sleep_us(5)
        out = np.zeros(p.cols, dtype=np.int64)
        wanted: dict[int, dict[int, list[tuple[int, int]]]] = {}
        for c in range(p.cols):
            chip, ch = divmod(array * p.cols + c, 8)
            s, pos = divmod(chip, p.adc_chain)
            wanted.setdefault(s, {}).setdefault(ch, []).append((pos, c))
        for s in sorted(wanted):
            channels = sorted(wanted[s])
            for j, command in enumerate([*map(man_ch, channels), ADC_STDBY]):
                results = self.adc(s, command)
                if j:
                    for pos, c in wanted[s][channels[j - 1]]:
                        out[c] = results[pos]
        return out
