"""End to end on the emulator: the real firmware in the in-process runtime, over a pty,
driven by the host's `Board` (HELLO, READ, PULSE, PROGRAM of a full array, LOAD, INFER)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("xbar.emulator.board_model")

from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.runtime import InProcessBoard
from xbar.firmware import protocol as P
from xbar.host.board import Board, CrossbarModel, TileLayer, plan_tiles

# Diagnostics that mean the firmware spoke a part's protocol wrongly or endangered cells.
MISUSE = (
    "spi_bad_bus",
    "spi_bad_baudrate",
    "spi_overspeed",
    "spi_unselected_bytes",
    "miso_contention",
    "pin_bad_args",
    "dac_partial_frames",
    "dac_bad_address",
    "dac_bad_command",
    "dac_reset_bad_key",
    "switch_bad_frames",
    "switch_short_frames",
    "shorted_lines_refused",
    "row_tia_switch",
    "dac_tia_contention",
    "adc_truncated_frames",
    "adc_short_frames",
    "adc_bad_command",
    "adc_bad_range",
    "adc_rate_violations",
    "adc_frames_powered_down",
    "adc_unsettled_conversions",
    "damage_events",
)


@contextlib.contextmanager
def emulated(
    profile: str = "xbar-10x10", seed: int = 0, noise: NoiseConfig | None = None, device: Any = None
) -> Iterator[tuple[BoardModel, Board]]:
    model = BoardModel(profile, seed=seed, device=device, noise=noise)

    def entry(ns: Any, reader: Any, writer: Any) -> None:
        ns.load("app").run(reader, writer, profile=profile)

    with InProcessBoard(profile, seed, model=model, entry=entry) as emu:
        board = Board(emu.port, timeout=300)
        try:
            yield model, board
        finally:
            board.close()
    misuse = {k: model.diagnostics[k] for k in MISUSE if model.diagnostics[k]}
    assert not misuse, f"firmware misused the parts: {misuse}"


def test_hello_over_emu_url() -> None:
    with Board("emu://xbar-10x10?seed=3") as b:
        h = b.hello()
        assert (h.protocol, h.profile) == (P.VERSION, "xbar-10x10")
        info = b.info()
        assert (info.arrays, info.rows, info.cols) == (1, 10, 10)
        assert b.stats()["frames_ok"] >= 2


@pytest.mark.parametrize("url", ["emu://xbar-4x64?seed=1", "emu://xbar-1x32?seed=1&micropython=1"])
def test_emu_url_profile_reaches_firmware(url: str) -> None:
    with Board(url, timeout=120) as b:
        info = b.info()
        assert info.profile == url[6:].split("?")[0]
        assert (info.arrays, info.rows) in ((4, 64), (1, 32))
        g = b.read(info.rows - 1, array=info.arrays - 1, v_read=0.1)  # the last chips
        assert g.shape == (info.cols,) and (g > 0).all()


@pytest.mark.parametrize("profile", ["xbar-10x10", "xbar-10x10-passive"])
def test_read_matches_cells(profile: str) -> None:
    with emulated(profile, seed=1, noise=NoiseConfig.off()) as (model, b):
        g = b.read(v_read=0.2)
        np.testing.assert_allclose(g, model.conductances(0), rtol=0.01)
        assert b.stats()["conversions"] >= 100


def test_pulse_set_raises_reset_lowers() -> None:
    with emulated(seed=2, noise=NoiseConfig.off()) as (model, b):
        g0 = b.read(3, 4)
        r = b.pulse(3, 4, 5.5, 1000)
        assert r.g_before == pytest.approx(g0, rel=0.01) and r.width_us >= 1000
        g1 = b.read(3, 4)
        assert g1 > g0 * 1.05
        b.pulse(3, 4, 6.0, 1000, polarity="reset")
        assert b.read(3, 4) < g1
        # 1T1R scheme: no other cell moved.
        ref = BoardModel("xbar-10x10", seed=2, noise=NoiseConfig.off()).conductances(0)
        mask = np.ones((10, 10), bool)
        mask[3, 4] = False
        np.testing.assert_allclose(model.conductances(0)[mask], ref[mask], rtol=1e-6)


@pytest.mark.slow
def test_program_full_array_to_pattern() -> None:
    """Write-verify all 100 cells of the realistic board (c2c noise, variation, stuck
    cells, drift) to a random pattern; report the achieved error distribution."""
    rng = np.random.default_rng(0)
    target = rng.uniform(0.7e-6, 1.9e-6, size=(10, 10))
    tol = 0.04e-6
    with emulated(seed=1) as (_model, b):
        r = b.program(
            target,
            tolerance=tol,
            v_set=2.5,
            v_reset=2.5,
            v_step=0.25,
            width_us=100,
            max_width_us=10_000,
            max_pulses=100,
        )
        readback = b.read(v_read=0.1)
    ok = r.converged
    err = np.abs(r.error) / 1e-6
    print(
        f"\nPROGRAM 10x10: {ok.sum()} ok, status counts {np.bincount(r.status, minlength=4)}, "
        f"pulses mean {r.pulses.mean():.1f} max {r.pulses.max()}; |error| uS median "
        f"{np.median(err):.4f} p90 {np.percentile(err, 90):.4f} max {err.max():.4f}; "
        f"readback vs target median rel {np.median(np.abs(readback / target - 1)):.3f}"
    )
    assert ok.mean() >= 0.9
    assert np.abs(r.error[ok]).max() <= tol
    assert set(np.unique(r.status)) <= {P.ST_OK, P.ST_STUCK, P.ST_MAX_PULSES}


def test_program_model_pattern_converges_on_ideal_pvk_best() -> None:
    """One PROGRAM pass of a model-like pattern (int8 differential pairs G± = g_min +
    max(±w, 0)·g_unit, most weights small) onto the ideal pvk-best board, as `xbar
    program` sends it: every cell converges, in a few pulses. The old step control left
    some cells at max pulses (a SET overshoot of ~50 tolerances undone at ~0.5 tol per
    RESET pulse)."""
    from xbar.training.devices.device_model import DeviceModel

    dev = DeviceModel.preset("pvk-best")
    g_unit = (dev.g_max - dev.g_min) / 127
    tol = 0.5 * g_unit
    w = np.clip(np.round(np.random.default_rng(3).laplace(0, 30, size=(10, 5))), -127, 127)
    target = np.empty((10, 10))
    target[:, 0::2] = dev.g_min + np.maximum(w, 0) * g_unit
    target[:, 1::2] = dev.g_min + np.maximum(-w, 0) * g_unit
    with emulated("xbar-4x10x10", noise=NoiseConfig.off(), device=dev) as (_model, b):
        r = b.program(
            target, tolerance=tol, array=1, v_read=0.3, v_set=2.5, v_reset=2.5, max_pulses=100
        )
    print(
        f"\nPROGRAM pvk-best ideal: {r.converged.sum()}/100 ok, pulses mean "
        f"{r.pulses.mean():.2f} max {r.pulses.max()}"
    )
    assert r.converged.all(), np.bincount(r.status, minlength=4)
    assert np.abs(r.error).max() <= tol
    assert r.pulses.max() <= 40


def _model(
    rng: np.random.Generator,
    shapes: list[tuple[int, int]],
    geometry: tuple[int, ...],
    g_min: float,
    g_max: float,
) -> CrossbarModel:
    maps = plan_tiles(shapes, *geometry)
    layers = []
    for i, ((n_out, n_in), tiles) in enumerate(zip(shapes, maps, strict=True)):
        last = i == len(shapes) - 1
        layers.append(
            TileLayer(
                weights=rng.integers(-127, 128, size=(n_out, n_in)),
                bias=rng.integers(-2000, 2000, size=n_out),
                multiplier=50000,
                shift=24 + (n_in > 16),
                relu=not last,
                out_min=-128 if last else 0,
                out_max=127 if last else 255,
                g_unit=(g_max - g_min) / 127,
                k=1,
                tiles=tiles,
            )
        )
    return CrossbarModel(layers, g_min=g_min)


def _place(model: BoardModel, cm: CrossbarModel) -> None:
    """Set the cells to the model's conductances directly (the ideal PROGRAM)."""
    model.place(cm.targets())


@pytest.mark.parametrize(
    "profile, shapes, geometry",
    [
        ("xbar-10x10", [(5, 10)], (1, 10, 10)),
        ("xbar-4x64", [(24, 64), (10, 24)], (4, 64, 64)),
    ],
)
def test_infer_matches_integer_reference_noise_off(
    profile: str, shapes: list[tuple[int, int]], geometry: tuple[int, int, int]
) -> None:
    rng = np.random.default_rng(4)
    with emulated(profile, seed=4, noise=NoiseConfig.off()) as (model, b):
        dev = model.device
        cm = _model(rng, shapes, geometry, dev.g_min, dev.g_max)
        _place(model, cm)
        res = b.load(cm, program=False)
        assert (res.n_in, res.n_out) == (shapes[0][1], shapes[-1][0])
        xs = rng.integers(0, 256, size=(6, shapes[0][1]))
        ref = np.array([cm.reference(x)[0] for x in xs])
        single = np.array([b.infer(x) for x in xs[:2]])
        stream = b.infer_stream(xs, per_frame=2)
        assert np.abs(single - ref[:2]).max() <= 1
        assert np.abs(stream - ref).max() <= 1, (stream, ref)
        assert b.stats()["inferences"] == 8


def test_under_real_micropython_interpreter() -> None:
    """The same firmware files flashed to the emulator's MicroPython-mode board."""
    with Board("emu://xbar-10x10?seed=5&micropython=1", timeout=120) as b:
        assert b.hello().profile == "xbar-10x10"
        assert b.info().free_heap > 48 * 1024
        g = b.read(v_read=0.1)
        assert g.shape == (10, 10) and (g > 0).all()
        r = b.pulse(1, 1, 4.0, 200)
        assert r.width_us >= 200
        s = b.stats()
        assert s["pulses"] == 1 and s["errors"] == 0


@pytest.mark.slow
def test_micropython_mode_programs_full_array_and_infers() -> None:
    """The acceptance sequence under the real interpreter too: PROGRAM all 100 cells by
    write-verify, then LOAD and INFER against the integer reference (noise off, so every
    output must be within one LSB)."""
    rng = np.random.default_rng(7)
    target = rng.uniform(0.7e-6, 1.9e-6, size=(10, 10))
    tol = 0.04e-6
    url = "emu://xbar-10x10?seed=7&micropython=1&noise=off"
    with Board(url, timeout=600) as b:
        model: BoardModel = b.link.port.board.model  # type: ignore[attr-defined]
        r = b.program(
            target,
            tolerance=tol,
            v_set=2.5,
            v_reset=2.5,
            v_step=0.25,
            width_us=100,
            max_width_us=10_000,
            max_pulses=100,
        )
        err = np.abs(r.error) / 1e-6
        print(
            f"\nMicroPython PROGRAM 10x10: {r.converged.sum()} ok, pulses mean "
            f"{r.pulses.mean():.1f}; |error| uS median {np.median(err):.4f} "
            f"p90 {np.percentile(err, 90):.4f} max {err.max():.4f}"
        )
        assert r.converged.mean() >= 0.9
        assert np.abs(r.error[r.converged]).max() <= tol
        np.testing.assert_allclose(
            model.conductances(0).ravel()[r.converged], r.achieved[r.converged], rtol=0.02
        )

        dev = model.device
        cm = _model(rng, [(5, 10)], (1, 10, 10), dev.g_min, dev.g_max)
        _place(model, cm)
        b.load(cm, program=False)
        xs = rng.integers(0, 256, size=(4, 10))
        ref = np.array([cm.reference(x)[0] for x in xs])
        assert np.abs(np.array([b.infer(x) for x in xs]) - ref).max() <= 1
        assert np.abs(b.infer_stream(xs) - ref).max() <= 1
        assert b.stats()["errors"] == 0
