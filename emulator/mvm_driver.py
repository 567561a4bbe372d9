"""The reference byte-level MVM sequence, frame by frame through the board model.

``MvmDriver`` sends exactly the documented byte formats (DAC, ADC and switch frames over
their chains) to set a board up for reading and to run one MVM on an array. It is the
reference the batch path (``emulator.batch``) reproduces, and what probes an MVM's timing
(``emulator.mvm_schedule``).
"""

from __future__ import annotations

import numpy as np

from .board_model import BoardModel
from .parts import (
    ADC_BAUD,
    ADC_RST,
    ADC_STDBY,
    ADC_WAKE_US,
    DAC_BAUD,
    DAC_MID,
    DAC_RESET_KEY,
    REG_RANGE0,
    adc_command_frame,
    adc_results,
    dac_frame,
    dac_word,
    man_ch,
    mvm_switches,
    program_write,
    switch_frame,
)


class MvmDriver:
    """The reference byte-level MVM sequence on one board."""

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
        rx = self._frame(
            self.p.pin_cs_adc[s], self.p.bus_adc, adc_command_frame(n, command), ADC_BAUD
        )
        return adc_results(rx, n)

    def switches(self, closed: np.ndarray) -> None:
        self._frame(
            self.p.pin_cs_sw, self.p.bus_dac, switch_frame(self.p.sw_chips, closed), DAC_BAUD
        )

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
            self.adc(s, ADC_STDBY)  # every MVM wakes the ADCs and leaves them in standby
        b.pin_write(p.pin_gain[0], self.gain & 1)
        b.pin_write(p.pin_gain[1], (self.gain >> 1) & 1)

    def load_lines(self, codes: dict[int, int]) -> None:
        """Write DAC codes to lines ({global line: code}), one frame per chip select and
        channel, then load them together on an LDAC edge."""
        p, b = self.p, self.board
        groups: dict[tuple[int, int], dict[int, int]] = {}
        for line, code in codes.items():
            chip, ch = divmod(line, 8)
            s, pos = divmod(chip, p.dac_chain)
            groups.setdefault((s, ch), {})[pos] = dac_word(0x1, ch, int(code))
        for (s, _ch), words in sorted(groups.items()):
            self.dac(s, words)
        b.charge("pin")
        b.pin_write(p.pin_ldac, 0)
        b.charge("pin")
        b.pin_write(p.pin_ldac, 1)

    # -- one MVM -----------------------------------------------------------------
    def mvm(self, array: int, codes: np.ndarray) -> np.ndarray:
        """Apply DAC ``codes`` (rows,) to the array's rows; the columns' ADC codes."""
        p, b = self.p, self.board
        codes = np.asarray(codes, dtype=np.int64)
        self.load_lines({p.row_line(array, r): int(codes[r]) for r in range(p.rows)})
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
                if j == 0:  # the first MAN_Ch left STDBY: wait before its sample
                    b.sleep_us(ADC_WAKE_US)
                if j:
                    for pos, c in wanted[s][channels[j - 1]]:
                        out[c] = results[pos]
        return out
