"""The firmware's profile table and the emulator's describe the same boards."""

from __future__ import annotations

import pytest
from test_firmware_sim import FirmwareSim

profiles = pytest.importorskip("xbar.emulator.board_profile")

NAMES = [*profiles.PROFILES, "xbar-3x16x24", "xbar-2x100x50-passive"]


@pytest.mark.parametrize("name", NAMES)
def test_geometry_matches_emulator(name: str) -> None:
    board = FirmwareSim().load("profiles")
    g = board.Geometry(name)
    p = profiles.get_profile(name)
    assert (g.arrays, g.rows, g.cols, g.dac_chain, g.adc_chain, g.cell) == (
        p.arrays,
        p.rows,
        p.cols,
        p.dac_chain,
        p.adc_chain,
        p.cell,
    )
    assert (g.dac_chips, g.adc_chips, g.sw_chips) == (p.dac_chips, p.adc_chips, p.sw_chips)


def test_unknown_profile_named() -> None:
    board = FirmwareSim().load("profiles")
    with pytest.raises(ValueError, match="xbar-nope"):
        board.Geometry("xbar-nope")
