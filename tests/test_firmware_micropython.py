"""The firmware under the real MicroPython interpreter with the target's heap (192 KB):
every module imports, the board boots, a model loads through the dispatcher, and the
inference loop runs with the heap locked (any allocation would raise MemoryError)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from xbar.firmware import protocol as P
from xbar.host.board import CrossbarModel, TileLayer, plan_tiles

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
MICROPYTHON = Path(sys.executable).parent / "micropython"

# A do-nothing `machine` (pins remember values, SPI reads mid-scale) for the interpreter.
NULL_MACHINE = Path(__file__).resolve().parent / "micropython_null"

SCRIPT = """
import sys, gc, micropython
sys.path.insert(0, %(fake)r)
sys.path.insert(0, %(fw)r)
import binascii
gc.collect()
f0 = gc.mem_free()
import app, protocol
class W:
    def __init__(self):
        self.out = bytearray()
    def write(self, b):
        self.out.extend(b)
w = W()
a = app.App(w, %(profile)r)
gc.collect()
print("BOOT", f0 - gc.mem_free(), gc.mem_free())
blob = binascii.unhexlify(%(blob)r)
def ask(code, payload):
    w.out = bytearray()
    a.dispatch(code, 1, memoryview(payload))
    d = protocol.Decoder()
    frames = d.feed(bytes(w.out))
    return frames[0][0]
import struct
assert ask(protocol.LOAD_BEGIN, struct.pack("<II", len(blob), protocol.crc32(blob))) == 0xA0
step = 1000
for off in range(0, len(blob), step):
    assert ask(protocol.LOAD_CHUNK, struct.pack("<I", off) + blob[off:off + step]) == 0xA1
assert ask(protocol.LOAD_END, b"") == 0xA2
x = bytearray(range(%(n_in)d))
gc.collect()
a.model.run(x)
micropython.heap_lock()
try:
    a.model.run(x)
finally:
    micropython.heap_unlock()
gc.collect()
print("LOADED", gc.mem_free())
print("OK")
"""


def _model(shapes: list[tuple[int, int]], arrays: int, rows: int, cols: int) -> CrossbarModel:
    rng = np.random.default_rng(0)
    maps = plan_tiles(shapes, arrays, rows, cols)
    layers = [
        TileLayer(
            weights=rng.integers(-127, 128, size=s),
            bias=rng.integers(-99, 99, size=s[0]),
            multiplier=40000,
            shift=24,
            relu=i < len(shapes) - 1,
            out_min=0 if i < len(shapes) - 1 else -128,
            out_max=255 if i < len(shapes) - 1 else 127,
            g_unit=1e-8,
            k=3,
            tiles=t,
        )
        for i, (s, t) in enumerate(zip(shapes, maps, strict=True))
    ]
    return CrossbarModel(layers, g_min=5e-7)


@pytest.mark.skipif(not MICROPYTHON.exists(), reason="MicroPython unix port not installed")
@pytest.mark.parametrize(
    "profile, shapes, geometry",
    [
        ("xbar-10x10", [(5, 10)], (1, 10, 10)),
        ("xbar-4x64", [(64, 64), (32, 64), (10, 32)], (4, 64, 64)),
    ],
)
def test_firmware_in_192k_heap(
    tmp_path: Path, profile: str, shapes: list[tuple[int, int]], geometry: tuple[int, int, int]
) -> None:
    blob = _model(shapes, *geometry).to_blob()
    script = SCRIPT % {
        "fake": str(NULL_MACHINE),
        "fw": str(FIRMWARE),
        "profile": profile,
        "blob": blob.hex(),
        "n_in": shapes[0][1],
    }
    (tmp_path / "run.py").write_text(script)
    res = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=192K", str(tmp_path / "run.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "OK" in out, out
    used = int(re.search(r"BOOT (\d+) (\d+)", out).group(1))  # type: ignore[union-attr]
    free = int(re.search(r"LOADED (\d+)", out).group(1))  # type: ignore[union-attr]
    # The budget: the firmware's code and boot-time buffers (the inference kernels'
    # bound calls included) within 126 KB, and 48 KB left once a model is loaded.
    assert used < 126 * 1024, f"firmware takes {used} bytes of the 192 KB heap"
    assert free > 48 * 1024, f"only {free} bytes free after LOAD"
    print(f"{profile}: firmware {used} B after boot, {free} B free after LOAD")
    assert len(blob) <= P.MAX_PAYLOAD * 8
