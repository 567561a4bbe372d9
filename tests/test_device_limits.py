"""Pulse limits from the device: `xbar program` lowers the board's line limit so that no
pulse can exceed what the plan's device may take (DeviceModel.pulse_limit), and the
firmware then refuses any pulse beyond it."""

from __future__ import annotations

from pathlib import Path

import pytest
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from xbar.firmware import profiles
from xbar.firmware import protocol as P
from xbar.host import program as program_module
from xbar.host.board import Board, FirmwareError
from xbar.training.devices.device_model import PULSE_MARGIN, DeviceModel

from benchmarks.models import iris_artifact

URL = "emu://xbar-10x10?seed=0&device=pvk-best&noise=off"


@pytest.mark.parametrize("name", DeviceModel.preset_names())
def test_pulse_limit_is_a_margin_over_what_the_device_was_measured_at(name: str) -> None:
    d = DeviceModel.preset(name)
    measured = max(d.v_set, abs(d.v_reset), *d.level_voltages)
    assert d.pulse_limit == pytest.approx(PULSE_MARGIN * measured)
    assert 1.0 < PULSE_MARGIN < 1.6  # below the emulator's hard breakdown factor


def test_board_refuses_a_pulse_beyond_the_device_limit() -> None:
    device = DeviceModel.preset("pvk-best")
    port = serial.serial_for_url(URL, timeout=0.05)
    try:
        with Board(port, timeout=10) as board:
            before = board.safety().v_line_max
            line = program_module.limit_pulses_to_device(board, device)
            assert line < before and line == pytest.approx(device.pulse_limit / 2, abs=1e-6)
            assert board.safety().v_line_max == pytest.approx(line)
            cell_max = 2 * line
            with pytest.raises(FirmwareError) as refused:
                board.pulse(0, 0, cell_max + 4 * profiles.DAC_LSB + 0.05, 100)
            assert refused.value.code == P.E_SAFETY
            board.pulse(0, 0, min(cell_max, 1.0), 100)  # within it: taken
            # Never raises the limit: a device that may take more leaves it as it is.
            tough = DeviceModel.preset("pvk-best")
            tough.v_reset = -100.0
            assert program_module.limit_pulses_to_device(board, tough) == pytest.approx(line)
    finally:
        port.close()


def test_xbar_program_applies_the_device_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = iris_artifact(tmp_path)
    seen: list[float] = []
    real = program_module.limit_pulses_to_device

    def spy(board: Board, device: DeviceModel) -> float:
        seen.append(real(board, device))
        return seen[-1]

    monkeypatch.setattr(program_module, "limit_pulses_to_device", spy)
    program_module.program_model(
        URL, str(model), state=str(tmp_path / "p.json"), max_pulses=5, passes=1
    )
    assert seen == [pytest.approx(DeviceModel.preset("pvk-best").pulse_limit / 2, abs=1e-6)]
