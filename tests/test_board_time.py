"""One clock for both runtimes: the same INFER work costs the same board time whether the
firmware runs under CPython (opcodes traced) or the real MicroPython interpreter (the
counted firmware, emulator/work_count.py)."""

from __future__ import annotations

import pytest

from benchmarks.bench_board_time import measure
from benchmarks.bench_firmware import small_model


@pytest.mark.slow
def test_both_runtimes_agree_on_board_time_per_inference() -> None:
    layers, xs = small_model(0)
    inproc = measure("xbar-10x10", layers, xs, 4, micropython=False)
    mpy = measure("xbar-10x10", layers, xs, 4, micropython=True)
    assert mpy["spi_ms"] == pytest.approx(inproc["spi_ms"], rel=1e-9)
    assert mpy["waits_ms"] == pytest.approx(inproc["waits_ms"], rel=1e-9)
    assert mpy["board_ms"] == pytest.approx(inproc["board_ms"], rel=0.15)
    assert mpy["compute_ms"] > 0.5 * inproc["compute_ms"]  # interpreted work is charged


def test_counted_firmware_counts_the_calibration_loop_as_the_tracer_does() -> None:
    """The static count of the benchmark loop per step equals the traced one (11 on 3.11)."""
    import inspect
    import sys
    import types
    from array import array

    from xbar.emulator import clock, work_count

    src = inspect.getsource(clock.add_test).replace("p: Any) -> None", "p)")
    counted = work_count.instrument(src)
    work = types.ModuleType("_emu_work")
    work.W = array("i", [0, 0, 0])  # type: ignore[attr-defined]
    sys.modules["_emu_work"] = work
    try:
        ns: dict = {}
        exec(compile(counted, "counted", "exec"), ns)
        ns["add_test"]([1000, 1, 2])
        a = work.W[0]
        ns["add_test"]([2000, 1, 2])
        per_step = (work.W[0] - 2 * a) / 1000  # the second run minus the first
    finally:
        del sys.modules["_emu_work"]
    assert per_step == pytest.approx(clock.opcodes_per_step(), abs=0.01)


def test_link_limit_names_the_bottleneck() -> None:
    from xbar.host.stream import LINKS, link_limit

    uart, usb = LINKS["uart-921600"], LINKS["usb-cdc"]
    # 87 B per inference at 92160 B/s: 0.94 ms on the UART; a 0.5 ms board waits for it.
    a = link_limit(0.5e-3, 87, 21, uart)
    assert a["limit"] == "line" and a["line_busy"] == pytest.approx(1.0)
    assert a["per_s"] == pytest.approx(92160 / 87) and a["board_busy"] < 0.6
    # The same over USB full speed (one shared bus, 1.216 MB/s): the board limits.
    b = link_limit(0.5e-3, 87, 21, usb)
    assert b["limit"] == "board" and b["board_busy"] == pytest.approx(1.0)
    assert b["line_busy"] == pytest.approx(108 / 1_216_000 / 0.5e-3)
