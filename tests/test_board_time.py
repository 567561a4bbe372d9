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


_VIPER_SAMPLE = """
@micropython.viper
def kernel(buf: ptr8, pins, frames, n: int) -> int:
    total = 0
    for i in range(n):
        total += buf[i] * 3
        buf[i] = int(buf[i]) & 0xF
        pins[i].off()
    for cs, v in frames:
        cs.on()
        total += v
    frames[0][1] += 1
    p = pins[0]
    if p is not None and n > 2:
        total += 1
    return total + len(frames)
"""


def test_viper_object_operations_are_counted_alike_by_both_runtimes() -> None:
    """In viper code, attribute, call, subscript and iteration of Python objects are
    runtime calls, charged as interpreted opcodes: the tracer (by opcode offset) and the
    counted firmware (by statement) split the same opcodes the same way."""
    import ast
    import sys
    import types
    from array import array

    from xbar.emulator import work_count
    from xbar.emulator.runtime import VIPER_BUILTINS

    class Pin:
        def off(self) -> None: ...

        def on(self) -> None: ...

    def args() -> tuple:
        return bytearray(range(8)), [Pin() for _ in range(8)], [[Pin(), 5], [Pin(), 7]], 8

    micropython = types.SimpleNamespace(viper=lambda f: f)
    fn = ast.parse(_VIPER_SAMPLE).body[0]
    assert isinstance(fn, ast.FunctionDef)
    code = compile(_VIPER_SAMPLE, "sample", "exec")
    ns: dict = {"micropython": micropython, **VIPER_BUILTINS}
    exec(code, ns)
    kernel = ns["kernel"]
    objects = work_count.viper_object_offsets(kernel.__code__, fn)
    traced = [0, 0]

    def trace(frame, event, arg):  # type: ignore[no-untyped-def]
        if frame.f_code is kernel.__code__:
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            if event == "opcode":
                traced[0 if frame.f_lasti in objects else 1] += 1
            return trace
        return None

    sys.settrace(trace)
    try:
        kernel(*args())
    finally:
        sys.settrace(None)

    work = types.ModuleType("_emu_work")
    work.W = array("i", [0, 0, 0])  # type: ignore[attr-defined]
    sys.modules["_emu_work"] = work
    try:
        counted = work_count.instrument(_VIPER_SAMPLE)
        ns = {"micropython": micropython, **VIPER_BUILTINS}
        exec(compile(counted, "counted", "exec"), ns)
        work.W[0] = work.W[1] = 0  # the module's own statements
        ns["kernel"](*args())
    finally:
        del sys.modules["_emu_work"]
    # pins[i].off(): 4 object opcodes a step; for cs, v in frames: GET_ITER, FOR_ITER per
    # item and at the end, UNPACK, cs.on(); frames[0][1] += 1; pins[0]; p is not None;
    # len(frames).
    assert traced[0] == 8 * 4 + 2 + 2 * 2 + 2 * 3 + 3 + 1 + 1 + 2
    assert work.W[0] == traced[0]
    # The rest is counted per statement (a short-circuit, `is not None` fused into a jump
    # by CPython): a few opcodes apart.
    assert work.W[1] == pytest.approx(traced[1], rel=0.03)


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
