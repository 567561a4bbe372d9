"""The board clock's calibration: the published RP2040 loop figure and the SPI divider."""

from __future__ import annotations

import pytest
from xbar.emulator import clock
from xbar.emulator.board_model import BoardModel
from xbar.emulator.clock import CYCLE_COSTS, Clock, spi_rate


def test_calibrated_cost_model_reproduces_the_published_loop_figure() -> None:
    """7984 ms for 1,000,000 steps of the benchmark's add_test on an RP2040 at 125 MHz:
    the benchmark loop counted as the runtimes count firmware work (traced opcodes),
    charged at the table's cost, lands within 5 % of it."""
    steps = 20_000
    ops = clock.count_opcodes(clock.add_test, [steps, 12345678, 56781234])
    seconds = ops * CYCLE_COSTS["bytecode"] / clock.RP2040_HZ
    per_million_ms = seconds * 1e3 * clock.LOOP_STEPS / steps
    assert per_million_ms == pytest.approx(clock.LOOP_MS, rel=0.05)


def test_viper_and_native_costs_are_cheaper_than_interpreted() -> None:
    assert 1 <= CYCLE_COSTS["viper_op"] < CYCLE_COSTS["native_op"] < CYCLE_COSTS["bytecode"]


@pytest.mark.parametrize(
    ("asked", "clk", "made"),
    [
        (30_000_000, 125_000_000, 20_833_333),  # 125 MHz / (2 * 3)
        (17_000_000, 125_000_000, 15_625_000),  # 125 MHz / (2 * 4)
        (30_000_000, 120_000_000, 30_000_000),  # exact at 120 MHz
        (62_500_000, 125_000_000, 62_500_000),  # the fastest: clk_peri / 2
        (1_000_000, 125_000_000, 992_063),  # 125 MHz / (2 * 63)
    ],
)
def test_spi_rate_is_what_the_rp2040_divider_makes(asked: int, clk: int, made: int) -> None:
    assert spi_rate(asked, clk) == made


def test_spi_rate_never_exceeds_the_request_in_the_fast_range() -> None:
    for asked in range(1_000_000, 62_500_001, 977_777):
        made = spi_rate(asked)
        assert made <= asked
        # No (prescale, postdiv) pair gives a rate between what is made and the request.
        better = [
            125_000_000 // (p * d)
            for p in range(2, 255, 2)
            for d in range(1, 257)
            if made < 125_000_000 // (p * d) <= asked
        ]
        assert not better, (asked, made, better[:3])


def test_spi_wire_time_is_charged_at_the_produced_rate() -> None:
    c = Clock(125_000_000)
    assert c.spi_cycles(3, 30_000_000) == 145  # 24 bits at 20.83 MHz: 144.000002 cycles
    board = BoardModel("xbar-10x10", seed=0)
    t0 = board.clock.cycles
    board.spi_transfer(board.profile.bus_dac, b"\x00\x00\x00", 30_000_000)
    assert board.clock.cycles - t0 == 145
