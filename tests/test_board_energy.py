"""Reference board rev B: power states the firmware sets, the energy ledger, part ratings
and the integrated-macro projection."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from xbar.emulator.board_model import RATING_KEYS, BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.energy import REV_A, PowerFigures
from xbar.emulator.hardware import Hardware
from xbar.emulator.macro import MacroFigures, layer_inputs, project
from xbar.emulator.mvm_driver import MvmDriver
from xbar.emulator.parts import ADC_BAUD, SW_DAC, man_ch, switch_frame
from xbar.emulator.runtime import FirmwareNamespace
from xbar.host.board import Board
from xbar.host.energy_report import ledger_mark, measure, write_verify_energy
from xbar.training.artifact import load_artifact

from benchmarks.models import iris_artifact

ANALOG = ("line_drivers", "tia", "dac", "adc")


def firmware_on(model: BoardModel) -> Any:
    """The firmware's App booted on `model` (in-process, no link)."""
    name = model.profile.name
    ns = FirmwareNamespace(Hardware(model, 0), None, io.BytesIO(), profile=name)
    return ns.load("app").App(io.BytesIO(), name, watchdog=False)


def frame(model: BoardModel, cs: int, bus: int, data: bytes, baud: int = 1_000_000) -> None:
    model.pin_write(cs, 0)
    model.spi_transfer(bus, data, baud)
    model.pin_write(cs, 1)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_artifact(iris_artifact(Path(tmp_path_factory.mktemp("models"))))


def test_static_power_is_zero_while_powered_down() -> None:
    """With zero shut-down figures a part off draws nothing; the firmware turns the analog
    parts on for a measurement and off again, and the parts always sum to the total."""
    figures = replace(
        PowerFigures(),
        driver_shutdown_w=0.0,
        tia_shutdown_w=0.0,
        dac_powerdown_w=0.0,
        adc_standby_w=0.0,
        adc_powerdown_w=0.0,
    )
    model = BoardModel("xbar-10x10", noise=NoiseConfig.off(), power=figures)
    hal = firmware_on(model).hal
    assert [model.ledger.power(c) for c in ANALOG] == [0.0] * 4  # booted: all off
    mark = model.ledger.mark()
    model.sleep_us(1000)
    spent = model.ledger.since(mark)
    assert [spent[c] for c in ANALOG] == [0.0] * 4
    assert spent["mcu"] == pytest.approx(figures.mcu_idle_w * 1e-3)
    hal.power_up(0)
    for sel in range(len(hal.adc_on)):  # the ADCs awake, as in a conversion pass
        hal.adc._frame(sel, 0xE000)  # MAN_AUX: leaves STDBY, converts nothing of ours
        hal.adc_on[sel] = 1
    p = model.profile
    assert model.ledger.power("line_drivers") == pytest.approx(p.lines * figures.driver_static_w)
    assert model.ledger.power("tia") == pytest.approx(p.columns * figures.tia_static_w)
    assert model.ledger.power("dac") == pytest.approx(p.dac_chips * figures.dac_static_w)
    assert model.ledger.power("adc") == pytest.approx(p.adc_chips * figures.adc_static_w)
    mark = model.ledger.mark()
    model.sleep_us(1000)
    on = model.ledger.since(mark)
    assert on["tia"] == pytest.approx(p.columns * figures.tia_static_w * 1e-3)
    hal.power_down()
    assert [model.ledger.power(c) for c in ANALOG] == [0.0] * 4
    parts = model.ledger.breakdown()
    assert sum(parts.values()) == pytest.approx(model.ledger.total(), rel=1e-12)
    assert min(parts.values()) >= 0
    assert model.diagnostics["rating_errors"] == 0


def test_normal_command_sequences_stay_within_ratings(iris: Any) -> None:
    """Characterize (reads, SET and RESET pulses), program (write-verify) and inference on
    the in-process firmware: no part outside its rating, no sample before an ADC woke,
    the analog parts off between commands, and the energy report's parts sum to the
    ledger's total over the stream."""
    url = "emu://xbar-10x10?seed=0&device=pvk-best&noise=off"
    port = serial.serial_for_url(url, timeout=0.05)
    try:
        emulated = port.board  # type: ignore[attr-defined]
        model = emulated.model
        plan = iris.plan
        with Board(port, timeout=120) as board:
            board.read(v_read=0.2)
            board.pulse(2, 3, 2.0, 200)
            board.pulse(2, 3, 2.0, 200, polarity="reset")
            cells = dict(list(plan.targets()[0].items())[:3])
            mark = ledger_mark(board)
            board.program(cells, tolerance=0.5 * plan.layers[0].g_unit)
            line = write_verify_energy(mark, len(cells))
            assert line is not None and "µJ per cell written (3)" in line
            model.place(plan.targets())
            x = iris.quantized.quantize_input(np.asarray(iris_inputs()))[:5]
            emulated.settle()
            t0 = model.ledger.total()
            report = measure(board, plan, x, model.power)
            emulated.settle()
        spent = model.ledger.total() - t0
        d = model.diagnostics
        assert d["rating_errors"] == 0, {k: d[k] for k in RATING_KEYS}
        assert d["adc_wake_violations"] == 0
        assert report.rating_errors == 0
        # between commands: drivers and TIAs shut down, DACs powered down, ADCs in standby
        p, pw = model.profile, model.power
        assert model.ledger.power("line_drivers") == pytest.approx(p.lines * pw.driver_shutdown_w)
        assert model.ledger.power("tia") == pytest.approx(p.columns * pw.tia_shutdown_w)
        assert model.ledger.power("dac") == pytest.approx(p.dac_chips * pw.dac_powerdown_w)
        assert model.ledger.power("adc") == pytest.approx(p.adc_chips * pw.adc_standby_w)
    finally:
        port.close()
    # the stream's per-inference parts (plus the warm-up) add up to the ledger's total
    assert report.total * report.n < spent
    assert set(report.per_inference) >= {"mcu", "dac", "adc", "tia", "line_drivers"}
    m = report.macro
    assert m is not None
    assert m.conversions == 2 * sum(t.out_len for layer in plan.layers for t in layer.tiles)
    assert m.total == pytest.approx(sum(m.parts.values()))
    assert 1e-12 < m.total < 1e-8  # tens of pJ .. nJ for iris on a macro


def iris_inputs() -> np.ndarray:
    from xbar.training.tasks import load_task

    return load_task("iris", 0).x_test


def test_rating_fires_on_a_line_switched_to_a_shut_down_driver() -> None:
    model = BoardModel("xbar-10x10", noise=NoiseConfig.off())
    p = model.profile
    model.pin_write(p.pin_shdn[0], 1)  # array 0's drivers and TIAs shut down
    closed = np.zeros(3 * p.lines, dtype=bool)
    closed[3 * p.row_line(0, 2) + SW_DAC] = True
    frame(model, p.pin_cs_sw, p.bus_dac, switch_frame(p.sw_chips, closed))
    assert model.diagnostics["rating_driver_off"] == 1
    assert model.diagnostics["rating_errors"] == 1


def test_rating_fires_on_an_spi_clock_above_the_parts_maximum() -> None:
    model = BoardModel("xbar-10x10", noise=NoiseConfig.off())
    p = model.profile
    frame(model, p.pin_cs_adc[0], p.bus_adc, man_ch(0).to_bytes(2, "big") + bytes(2), 2 * ADC_BAUD)
    assert model.diagnostics["rating_spi"] == 1
    assert model.diagnostics["rating_errors"] == 1


def test_rev_a_switches_cannot_pass_the_line_voltages() -> None:
    """The legacy board's 5 V switches see the ±10 V line mapping at once (DAC reset puts
    every line at -10 V); rev B's ±12 V parts take the same sequence silently."""
    legacy = BoardModel("xbar-10x10", noise=NoiseConfig.off(), power=REV_A)
    MvmDriver(legacy).setup()
    assert legacy.diagnostics["rating_switch"] > 0
    rev_b = BoardModel("xbar-10x10", noise=NoiseConfig.off())
    MvmDriver(rev_b).setup()
    assert rev_b.diagnostics["rating_errors"] == 0


def test_macro_projection_counts_the_tiles(iris: Any) -> None:
    """V²·G·t by hand for one input, and the per-operation terms from the figures."""
    plan = iris.plan
    g = {0: np.full((10, 10), 2e-6)}
    x = np.array([[255, 0, 10, 20]])
    f = MacroFigures()
    m = project(plan, g, x, f)
    expect = 0.0
    for layer, xin in zip(plan.layers, layer_inputs(plan, x), strict=True):
        for t in layer.tiles:
            v = xin[0, t.in_start : t.in_start + t.in_len] * layer.k * (20.0 / 65536)
            expect += float((v**2).sum()) * 2 * t.out_len * 2e-6 * f.t_read_s
    assert m.array_j == pytest.approx(expect)
    assert m.adc_j == pytest.approx(m.conversions * f.adc_j)
    assert m.accumulate_j == pytest.approx(m.outputs * f.accumulate_j)
