"""INFER and INFER_STREAM allocate nothing, under the real MicroPython interpreter of the
emulated board: every request after the first of its kind runs with
`micropython.heap_lock()` held (the first one sizes the encoder's reusable views), and the
answers still equal the integer reference computed on the host."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.runtime_mpy import MicroPythonBoard
from xbar.host.board import Board, CrossbarModel
from xbar.training.devices.device_model import DeviceModel

from benchmarks.bench_firmware import small_model

# Prepended to the firmware's main.py on the emulated flash (MicroPython source).
LOCKING_MAIN = """\
import micropython
import app as _app

_orig = _app.App.dispatch
_seen = set()


def _dispatch(self, code, seq, payload):
    if code in (0x30, 0x31) and code in _seen:  # INFER, INFER_STREAM
        with open("/locked.log", "a") as f:  # before the answer: the host reads it then
            f.write("%d\\n" % code)
        micropython.heap_lock()
        try:
            _orig(self, code, seq, payload)
        finally:
            micropython.heap_unlock()
    else:
        _seen.add(code)
        _orig(self, code, seq, payload)


_app.App.dispatch = _dispatch
"""


def test_infer_and_stream_run_with_the_heap_locked() -> None:
    layers, xs = small_model(0)
    model = BoardModel(
        "xbar-10x10", seed=0, device=DeviceModel.preset("pvk-best"), noise=NoiseConfig.off()
    )
    emu = MicroPythonBoard("xbar-10x10", 0, model, firmware=True)
    main = Path(emu.flash_dir) / "main.py"
    main.write_text(LOCKING_MAIN + main.read_text())
    with emu, Board(emu.port, timeout=60) as board:
        info = board.info()
        cm = CrossbarModel.from_layers(
            layers,
            arrays=info.arrays,
            rows=info.rows,
            cols=info.cols,
            g_min=model.device.g_min,
            g_max=model.device.g_max,
            v_read=0.2,
        )
        model.place(cm.targets())
        board.load(cm, program=False)
        refs = [cm.reference(x)[0] for x in xs[:6]]
        singles = [board.infer(x) for x in xs[:3]]
        streamed = board.stream(xs[:6], per_frame=3).outputs
        board.stream(xs[:6], per_frame=3)
        locked = (Path(emu.flash_dir) / "locked.log").read_text().split()
    # Noise off: within one LSB of the crossbar model's reference (analog rounding).
    assert max(np.abs(np.asarray(y) - r).max() for y, r in zip(singles, refs, strict=False)) <= 1
    assert np.abs(streamed - np.asarray(refs)).max() <= 1
    assert locked.count("48") == 2 and locked.count("49") >= 3  # INFER, INFER_STREAM locked
