"""One source for the board's figures: the firmware's `profiles` module, imported from
CPython, is what training, the emulator and the host plan against."""

from __future__ import annotations

import numpy as np
from xbar.emulator import board_profile, parts
from xbar.firmware import profiles as fw
from xbar.training import artifact, plan


def test_profiles_import_from_cpython_with_identity_const() -> None:
    assert fw.MAX_WIDTH == 512 and isinstance(fw.MAX_WIDTH, int)
    assert fw.Geometry(fw.DEFAULT_PROFILE).name == "xbar-10x10"


def test_emulator_presets_are_the_firmwares() -> None:
    assert list(board_profile.PROFILES) == list(fw.PROFILES)
    for name, p in board_profile.PROFILES.items():
        assert (p.arrays, p.rows, p.cols, p.dac_chain, p.adc_chain, p.cell) == fw.PROFILES[name]
    assert (board_profile.DAC_CHANNELS, board_profile.ADC_CHANNELS, board_profile.SW_PER_CHIP) == (
        fw.DAC_CHANNELS,
        fw.ADC_CHANNELS,
        fw.SW_PER_CHIP,
    )


def test_plan_limits_are_the_firmwares() -> None:
    assert plan.DAC_LSB == fw.DAC_LSB
    assert (plan.FIRMWARE_MAX_LAYERS, plan.FIRMWARE_MAX_TILES, plan.FIRMWARE_MAX_WIDTH) == (
        fw.MAX_LAYERS,
        fw.MAX_TILES,
        fw.MAX_WIDTH,
    )
    read_default, read_hard = fw.SAFE_DEFAULT[0], fw.SAFE_HARD[0]
    assert (read_default, read_hard) == (artifact.V_READ_LIMIT, artifact.V_READ_HARD)


def test_emulated_parts_match_what_the_firmware_assumes() -> None:
    mid = fw.DAC_MID
    v = parts.line_volts(np.array([mid - 1, mid, mid + 1]))
    assert v[1] == 0.0 and v[2] - v[1] == fw.DAC_LSB and v[1] - v[0] == fw.DAC_LSB
    low, high = parts.ADC_RANGES[fw.ADC_RANGE_10V24]
    assert (high - low) / 65536 == fw.ADC_LSB
    assert parts.adc_codes(np.array([0.0, fw.ADC_LSB]), low, high).tolist() == [
        fw.ADC_MID,
        fw.ADC_MID + 1,
    ]
    # The chips' command codes are written from the datasheets on both sides.
    assert parts.DAC_RESET_KEY == fw.DAC_RESET_DATA and parts.ADC_RST == fw.ADC_CMD_RESET
    assert parts.TIA_RF == fw.TIA_RF and parts.TIA_SAT_V == fw.TIA_SAT_V
