"""SPI parts of the emulated board decode the documented byte formats (architecture.md and
the AD5676 / ADG714 / ADS8688 datasheets), and nothing the firmware sends makes them raise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.clock import spi_rate
from xbar.emulator.crossbar import DRIVEN, FLOAT, TIA
from xbar.emulator.parts import (
    ADC_BAUD,
    DAC_BAUD,
    adc_codes,
    dac_frame,
    dac_word,
    line_volts,
    man_ch,
    program_write,
    switch_frame,
)

CS_DAC0, CS_DAC1, LDAC, CS_SW = 5, 6, 8, 9
CS_ADC0, CS_ADC1, ADC_RST, GAIN0, GAIN1 = 13, 14, 15, 16, 17


@pytest.fixture(scope="module")
def device():
    from xbar.training.devices.device_model import DeviceModel

    return DeviceModel.preset("pvk-median")


@pytest.fixture
def board(device):
    return BoardModel("xbar-10x10", seed=1, device=device, noise=NoiseConfig.off())


def frame(board: BoardModel, cs: int, bus: int, data: bytes, baud: int) -> bytes:
    board.pin_write(cs, 0)
    rx = board.spi_transfer(bus, data, baud)
    board.pin_write(cs, 1)
    return rx


def dac(board: BoardModel, cs: int, word: int) -> None:
    frame(board, cs, 0, word.to_bytes(3, "big"), DAC_BAUD)


def adc(board: BoardModel, command: int, cs: int = CS_ADC0) -> bytes:
    return frame(board, cs, 1, command.to_bytes(2, "big") + bytes(2), ADC_BAUD)


# -- AD5676 ---------------------------------------------------------------------------


def test_dac_transfer_function():
    assert line_volts(32768) == 0.0
    assert line_volts(0) == -10.0
    assert line_volts(32769) == pytest.approx(305.18e-6, rel=1e-4)
    assert line_volts(65535) == pytest.approx(10.0 - 20.0 / 65536)


def test_dac_write_and_update_word(board):
    # Table 8, command 0011: write 0x8000 to DAC channel 3 and update -> bytes 33 80 00.
    assert dac_word(0x3, 3, 0x8000).to_bytes(3, "big") == bytes.fromhex("338000")
    dac(board, CS_DAC0, dac_word(0x3, 3, 0x8000))
    assert board.dacs[0].output[0, 3] == 0x8000
    assert board._dac_v[3] == 0.0


def test_dac_input_register_waits_for_ldac(board):
    dac(board, CS_DAC0, dac_word(0x1, 2, 40000))  # LDAC high: input register only
    assert board.dacs[0].input[0, 2] == 40000 and board.dacs[0].output[0, 2] == 0
    board.pin_write(LDAC, 0)  # falling edge loads the DAC register
    assert board.dacs[0].output[0, 2] == 40000
    dac(board, CS_DAC0, dac_word(0x1, 5, 1234))  # LDAC held low: updates on SYNC rise
    assert board.dacs[0].output[0, 5] == 1234
    board.pin_write(LDAC, 1)


def test_dac_ldac_mask_and_update_command(board):
    dac(board, CS_DAC0, dac_word(0x5, 0, 0b0000_0100))  # channel 2 ignores LDAC
    dac(board, CS_DAC0, dac_word(0x1, 2, 999))
    board.pin_write(LDAC, 0)
    board.pin_write(LDAC, 1)
    assert board.dacs[0].output[0, 2] == 0
    dac(board, CS_DAC0, dac_word(0x2, 2, 0))  # command 0010: update from input register
    assert board.dacs[0].output[0, 2] == 999


def test_dac_software_reset_needs_key(board):
    dac(board, CS_DAC0, dac_word(0x3, 1, 32768))
    dac(board, CS_DAC0, dac_word(0x6, 0, 0x0000))
    assert board.dacs[0].output[0, 1] == 32768
    assert board.diagnostics["dac_reset_bad_key"] == 1
    dac(board, CS_DAC0, dac_word(0x6, 0, 0x1234))
    assert board.dacs[0].output[0, 1] == 0  # zero scale


def test_dac_truncated_and_bad_words_are_ignored(board):
    frame(board, CS_DAC0, 0, bytes.fromhex("3380"), DAC_BAUD)  # 16 bits: aborted
    assert board.dacs[0].output[0, 3] == 0
    assert board.diagnostics["dac_partial_frames"] == 1
    dac(board, CS_DAC0, dac_word(0x3, 9, 100))  # channel 9 does not exist
    assert board.diagnostics["dac_bad_address"] == 1
    dac(board, CS_DAC0, dac_word(0xF, 0, 100))
    assert board.diagnostics["dac_bad_command"] == 1


def test_dac_daisy_chain_needs_dcen(device):
    b = BoardModel("xbar-1x32", seed=0, device=device, noise=NoiseConfig.off())
    assert b.dacs[0].n == 3
    # Before DCEN only chip 0 listens: a 3-word frame leaves its last word in chip 0.
    frame(b, CS_DAC0, 0, dac_frame(3, {2: dac_word(0x3, 0, 7)}), DAC_BAUD)
    assert b.dacs[0].output[2, 0] == 0
    dac(b, CS_DAC0, dac_word(0x8, 0, 1))  # chip 0 forwards
    frame(b, CS_DAC0, 0, dac_frame(2, {1: dac_word(0x8, 0, 1)}), DAC_BAUD)  # chip 1 forwards
    frame(b, CS_DAC0, 0, dac_frame(3, {2: dac_word(0x3, 4, 11), 0: dac_word(0x3, 1, 22)}), DAC_BAUD)
    assert b.dacs[0].output[2, 4] == 11 and b.dacs[0].output[0, 1] == 22
    assert b.dacs[0].output[1].sum() == 0  # NO-OP for the middle chip


# -- ADG714 ---------------------------------------------------------------------------


def test_switch_frame_byte_order():
    closed = np.zeros(64, dtype=bool)
    closed[3 * 12 + 1] = True  # column 2 (line 12) to its TIA: switch 37, chip 4, bit 5
    data = switch_frame(8, closed)
    assert data == bytes([0, 0, 0, 0x20, 0, 0, 0, 0])
    closed[0] = True  # switch 0: the last byte on the wire, bit 0
    assert switch_frame(8, closed)[-1] == 0x01


def test_switches_latch_on_sync_rising_edge(board):
    closed = np.zeros(64, dtype=bool)
    closed[3 * 0 + 0] = True  # row 0 to DAC
    closed[3 * 12 + 1] = True  # column 2 to TIA
    closed[3 * 15 + 2] = True  # column 5 to ground
    board.pin_write(CS_SW, 0)
    board.spi_transfer(0, switch_frame(8, closed), DAC_BAUD)
    assert (board.line_modes(0) == FLOAT).all()  # nothing before SYNC rises
    board.pin_write(CS_SW, 1)
    modes = board.line_modes(0)
    assert modes[0] == DRIVEN and modes[12] == TIA and modes[15] == DRIVEN
    assert (np.delete(modes, [0, 12, 15]) == FLOAT).all()


def test_short_is_refused_and_counted(board):
    closed = np.zeros(64, dtype=bool)
    closed[3 * 4 + 0] = closed[3 * 4 + 2] = True  # line 4: DAC and ground at once
    closed[3 * 1 + 0] = True
    frame(board, CS_SW, 0, switch_frame(8, closed), DAC_BAUD)
    assert board.diagnostics["shorted_lines_refused"] == 1
    modes = board.line_modes(0)
    assert modes[4] == FLOAT and modes[1] == DRIVEN


def test_switch_partial_bytes_ignored(board):
    board.pin_write(CS_SW, 0)
    board.spi_transfer(0, b"\x49", DAC_BAUD)  # switches 0, 3, 6: lines 0–2 to their DACs
    board.pin_write(CS_SW, 1)  # 8 bits: chip 0 latches them, stale zeros elsewhere
    assert board.diagnostics["switch_short_frames"] == 1
    assert list(board.line_modes(0)[:4]) == [DRIVEN, DRIVEN, DRIVEN, FLOAT]
    board.pin_write(CS_SW, 0)
    board.spi_transfer(0, b"\x00\x00", 8)
    board.pin_write(CS_SW, 1)
    board.pin_write(CS_SW, 0)
    board.pin_write(CS_SW, 1)  # no clocks: nothing latched
    assert board.diagnostics["switch_frames"] == 2


# -- ADS8688 --------------------------------------------------------------------------


def test_adc_command_words():
    assert [man_ch(n) for n in (0, 1, 7)] == [0xC000, 0xC400, 0xDC00]
    assert program_write(0x05, 0x00) == 0x0B00  # channel 0 range register, ±2.5·VREF


def test_adc_codes_transfer():
    lsb = 20.48 / 65536
    assert adc_codes(np.array(0.0), -10.24, 10.24) == 32768
    assert adc_codes(np.array(1000 * lsb), -10.24, 10.24) == 33768
    assert adc_codes(np.array(-20.0), -10.24, 10.24) == 0
    assert adc_codes(np.array(20.0), -10.24, 10.24) == 65535


def test_adc_pipeline_and_range(board):
    # Row 0 at +0.2 V (set before its switch closes) through a known conductance into
    # column 3 (line 13) and its TIA.
    code = 32768 + 655
    dac(board, CS_DAC0, dac_word(0x3, 0, code))
    closed = np.zeros(64, dtype=bool)
    closed[0] = closed[3 * 13 + 1] = True
    frame(board, CS_SW, 0, switch_frame(8, closed), DAC_BAUD)
    g = np.full((10, 10), board.device.g_min)
    g[0, 3] = 1e-6
    board.set_conductances(0, g)
    board.pin_write(GAIN0, 1)
    board.pin_write(GAIN1, 1)  # 1 MΩ
    board.sleep_us(10)
    current = float(line_volts(code)) * board.conductances(0)[0, 3]
    expect = int(adc_codes(np.array(-current * 1e6), -10.24, 10.24))
    first = adc(board, man_ch(3))  # selects channel 3; nothing pending yet
    assert first[2:] == b"\x00\x00"
    board.sleep_us(2)
    second = adc(board, 0x0000)  # NO_OP: returns channel 3's sample
    assert int.from_bytes(second[2:4], "big") == expect
    # Range register: ±1.25·VREF doubles the resolution.
    adc(board, program_write(0x05 + 3, 0x01))
    readback = adc(board, (0x05 + 3) << 9)  # program register read
    assert readback[2] == 0x01
    board.sleep_us(2)
    third = adc(board, 0x0000)
    assert int.from_bytes(third[2:4], "big") == int(
        adc_codes(np.array(-current * 1e6), -5.12, 5.12)
    )
    adc(board, 0x8500)  # RST: registers back to defaults
    assert board.adcs[0].regs[0, 0x05 + 3] == 0 and board.adcs[0].pending is None


def test_switching_in_a_zero_scale_dac_breaks_cells(board):
    # At power-on the DACs sit at zero scale (-10 V): closing a row onto it with a column
    # at virtual ground puts 10 V across that row's cells, beyond breakdown.
    closed = np.zeros(64, dtype=bool)
    closed[0] = closed[3 * 13 + 1] = True
    frame(board, CS_SW, 0, switch_frame(8, closed), DAC_BAUD)
    assert board.diagnostics["damage_events"] == 1
    assert board.conductances(0)[0, 3] > board.device.g_max


def test_adc_rate_violation_counted(board):
    # Frames back to back on a fast clock (20.8 MHz produced: 1.5 us per 32-bit frame)
    # start conversions closer than the ADS8688's 2 us cycle.
    for command in (man_ch(0), 0x0000, 0x0000):
        frame(board, CS_ADC0, 1, command.to_bytes(2, "big") + bytes(2), 30_000_000)
    assert board.diagnostics["adc_rate_violations"] >= 1


def test_adc_powered_down_by_rst_pin(board):
    board.pin_write(ADC_RST, 0)
    assert adc(board, man_ch(0)) == bytes(4)
    assert board.diagnostics["adc_frames_powered_down"] == 1
    board.pin_write(ADC_RST, 1)
    assert board.adcs[0].powered


def test_tia_gain_pins(board):
    rfs = []
    for g1 in (0, 1):
        for g0 in (0, 1):
            board.pin_write(GAIN0, g0)
            board.pin_write(GAIN1, g1)
            rfs.append(board.tia_rf)
    assert rfs == [1e3, 1e4, 1e5, 1e6]


def test_spi_wire_time(board):
    before = board.clock.cycles
    board.spi_transfer(0, bytes(3), 30_000_000)
    # Charged at the rate the RP2040's divider produces, not the one asked for:
    # 30 MHz -> 125 MHz / 6 = 20.83 MHz, 17 MHz -> 125 MHz / 8 = 15.625 MHz.
    assert spi_rate(30_000_000) == 125_000_000 // 6
    assert board.clock.cycles - before == -(-24 * 125_000_000 // spi_rate(30_000_000))
    before = board.clock.cycles
    board.spi_transfer(1, bytes(4), 17_000_000)
    assert spi_rate(17_000_000) == 125_000_000 // 8
    assert board.clock.cycles - before == -(-32 * 125_000_000 // spi_rate(17_000_000))


# -- robustness -------------------------------------------------------------------------

PINS = st.sampled_from(
    [CS_DAC0, CS_DAC1, 7, LDAC, CS_SW, CS_ADC0, CS_ADC1, ADC_RST, GAIN0, GAIN1, 25, 0, 99, -3]
)
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("pin"), PINS, st.integers(-2, 3)),
        st.tuples(
            st.just("spi"),
            st.integers(-1, 3),
            st.binary(max_size=40),
            st.sampled_from([0, -5, 1, 1_000_000, 17_000_000, 30_000_000, 10**9]),
        ),
    ),
    max_size=40,
)


@given(ACTIONS)
def test_garbage_never_raises(device, actions):
    b = BoardModel("xbar-10x10-passive", seed=2, device=device, noise=NoiseConfig())
    for action in actions:
        if action[0] == "pin":
            b.pin_write(action[1], action[2])
            b.pin_read(action[1])
        else:
            rx = b.spi_transfer(action[1], action[2], action[3])
            assert len(rx) == len(action[2])
    b.pin_write("x", None)  # type: ignore[arg-type]
    b.spi_transfer(0, None, 1)  # type: ignore[arg-type]
    assert b.ledger.total() >= 0
    assert all(v >= 0 for v in b.ledger.breakdown().values())
