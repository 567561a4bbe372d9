"""The viper kernels (firmware/kernels.py) compute what firmware/quant.py computes, under
the real MicroPython interpreter (native code, 32-bit words) and under CPython (the
in-process runtime runs them as Python), including the cases they hand back."""

from __future__ import annotations

import builtins
import subprocess
import sys
import types
from pathlib import Path

import pytest
from xbar.emulator.runtime import VIPER_BUILTINS

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
MICROPYTHON = Path(sys.executable).parent / "micropython"

# Random layers through accumulate + requant against quant.convert / quant.requant.
CHECK = """
import sys
sys.path.insert(0, %(fw)r)
import kernels, quant, random
from array import array
random.seed(%(seed)d)
bad = 0
handed = 0
for trial in range(300):
    n = random.randint(1, 32)
    codes = array("h", [random.randint(-32768, 32767) for _ in range(2 * n)])
    gains = bytearray([random.randint(0, 3) for _ in range(2 * n)])
    table = array("i", [0] * 8)
    for g in range(4):
        q = random.choice([0.5, 3.0, 40.0, 900.0, 30000.0, 70000.0]) * (1 + random.random())
        table[g], table[4 + g] = quant.fixed(q)
    acc = array("i", [random.randint(-1 << 20, 1 << 20) for _ in range(n)])
    ref = array("i", acc)
    # one tile: array 0, columns 0 .. 2n-1, outputs 0 .. n-1 (tile 3 of the table)
    tiles = array("H", [0] * 35)
    tiles[3 * 7 + 6] = n
    j = kernels.accumulate(acc, tiles, 3, 4, 64, codes, gains, table, 0, 4, quant.ACC_GUARD)
    if j >= 0:
        assert j >> 16 == 3
        j &= 0xFFFF
    stop = n if j < 0 else j
    for k in range(stop):
        ref[k] = (ref[k] + quant.convert(codes[2*k+1], table[gains[2*k+1]], table[4+gains[2*k+1]])
                  - quant.convert(codes[2*k], table[gains[2*k]], table[4+gains[2*k]]))
    if j >= 0:
        handed += 1
    for k in range(n):
        if acc[k] != ref[k]:
            bad += 1
    m = random.randint(1, 65535)
    s = random.randint(11, 40)
    last = random.randint(0, 1)
    # Hidden layers clamp to 0..255 (LOAD refuses others); the last one to int16.
    lo, hi, relu = random.choice([(-128, 127, 0), (-128, 127, 1)]) if last else (0, 255, 1)
    bias = array("i", [random.randint(-(1 << 22), 1 << 22) for _ in range(n)])
    blob = bytearray(bytes(bias))  # little-endian int32, as in the model blob
    out8 = bytearray(n)
    out16 = array("h", [0] * n)
    before = array("i", acc)
    j = kernels.requant(acc, blob, 0, n, m, s, lo, hi, relu, out8, out16, last, quant.ACC_LIMIT)
    stop = n if j < 0 else j
    for k in range(stop):
        a = before[k] + bias[k]
        y = quant.requant(a, m, s, lo, hi, relu)
        if acc[k] != a or (out16[k] if last else out8[k]) != y:
            bad += 1
    for k in range(stop, n):
        if acc[k] != before[k]:
            bad += 1
    if j >= 0:
        handed += 1
print("RESULT", bad, handed)
"""


def _cpython_kernels() -> types.ModuleType:
    mod = types.ModuleType("kernels")
    mod.__dict__["__builtins__"] = {**builtins.__dict__, **VIPER_BUILTINS}
    fake = types.ModuleType("micropython")
    fake.viper = lambda f: f  # type: ignore[attr-defined]
    saved = sys.modules.get("micropython")
    sys.modules["micropython"] = fake
    try:
        exec(compile((FIRMWARE / "kernels.py").read_text(), "kernels.py", "exec"), mod.__dict__)
    finally:
        if saved is None:
            del sys.modules["micropython"]
        else:
            sys.modules["micropython"] = saved
    return mod


def _micropython(seed: int) -> tuple[int, int]:
    done = subprocess.run(
        [str(MICROPYTHON), "-c", CHECK % {"fw": str(FIRMWARE), "seed": seed}],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    bad, handed = map(int, done.stdout.split("RESULT")[1].split())
    return bad, handed


def _cpython(seed: int) -> tuple[int, int]:
    from xbar.firmware import quant

    sys.modules["kernels"] = _cpython_kernels()
    sys.modules["quant"] = quant
    try:
        ns: dict = {}
        src = CHECK.split("import kernels, quant, random", 1)[1]
        exec("import kernels, quant, random" + src % {"seed": seed}, ns)
    finally:
        del sys.modules["kernels"], sys.modules["quant"]
    return ns["bad"], ns["handed"]


@pytest.mark.parametrize("seed", [1, 2])
def test_kernels_match_quant_in_both_interpreters(seed: int) -> None:
    """Random layers (each interpreter's random module draws its own): every result
    exact, and the hand-back paths taken too."""
    if not MICROPYTHON.is_file():
        pytest.skip("no micropython interpreter")
    bad, handed = _micropython(seed)
    assert bad == 0 and handed > 0  # the hand-back paths were taken too
    bad, handed_c = _cpython(seed)
    assert bad == 0 and handed_c > 0


def test_kernels_hand_back_the_same_cases_under_cpython_and_micropython() -> None:
    """One fixed layer with negative biases and accumulators (where a zero-extended
    load would differ): neither interpreter hands anything back."""
    script = """
import sys
sys.path.insert(0, %(fw)r)
import kernels, quant
from array import array
acc = array("i", [-5000, 7000, -(1 << 20), 3])
blob = bytearray(bytes(array("i", [-100, 200, -(1 << 21), 0])))
out16 = array("h", [0] * 4)
j = kernels.requant(acc, blob, 0, 4, 30000, 20, -128, 127, 0, bytearray(4), out16, 1, 1 << 24)
print("RESULT", j, list(acc), list(out16))
"""
    done = subprocess.run(
        [str(MICROPYTHON), "-c", script % {"fw": str(FIRMWARE)}],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    mpy = done.stdout.split("RESULT")[1].strip()
    from xbar.firmware import quant

    sys.modules["kernels"] = _cpython_kernels()
    sys.modules["quant"] = quant
    try:
        ns: dict = {}
        body = script.split("import kernels, quant", 1)[1].replace('print("RESULT", ', "r = (")
        exec("import kernels, quant" + body % {"fw": ""}, ns)
    finally:
        del sys.modules["kernels"], sys.modules["quant"]
    j, acc, out = ns["r"]
    assert j == -1 and mpy == f"{j} {list(acc)} {list(out)}"


# One scan's machine sequence (kernels.scan with kernels.adc_pass): chip selects, SPI
# calls, waits and gain steps in order, results in place, nothing allocated.
SCAN = """
import sys
sys.path.insert(0, %(fw)r)
import kernels, micropython
from array import array
ev = bytearray(64)
at = [0]
now = [0, 3]  # ADC select low, gain
def put(b):
    ev[at[0]] = b
    at[0] += 1
class Pin:
    def __init__(self, n):
        self.n = n
    def off(self):
        put(self.n)
        now[0] = self.n
    def on(self):
        put(16 + self.n)
def write(v):
    put(32 + v[0])
def xfer(tx, rx):  # the ADC on select 1 (pin 11) is near the rail at the top gain
    put(48 + tx[0])
    code = 32768 + (30000 if now[0] == 11 and now[1] == 3 else 100 * now[1])
    rx[2] = code >> 8
    rx[3] = code & 0xFF
def gain(g):
    put(64 + g)
    now[1] = g
def sleep_us(us):
    put(80 + (us & 15))
dac = [Pin(0), Pin(1), Pin(2)]
gate = [Pin(4)]
adc = [Pin(10), Pin(11)]
sw, ldac = Pin(8), Pin(9)
mach = (write, [p.off for p in dac], [p.on for p in dac], [p.off for p in gate],
        [p.on for p in gate], sw.off, sw.on, ldac.off, ldac.on, sleep_us, 20,
        bytearray([5]), bytes([6]), gain, 3)
plan = ([(0, bytearray([1]))], [(2, bytearray([7]))], [0])
frames = bytearray(4 * 18)
mv = memoryview(frames)
count = array("i", [0])
ctx = (kernels.adc_plan, kernels.adc_results, [p.off for p in adc], [p.on for p in adc],
       [mv[4 * f : 4 * f + 4] for f in range(18)], xfer, sleep_us, frames, bytearray(18),
       bytearray(18), bytearray(18), count,
       array("i", [4, 1, 16, 0xC000, 0x8200, 20, 32768, 29500]))
want = bytearray(16)
want[1] = want[9] = 1
codes = array("h", [0] * 16)
gains = bytearray(16)
micropython.heap_lock()
kernels.scan(mach, plan, want, 0, 1, ctx, codes, gains)
micropython.heap_unlock()
r = (list(ev[: at[0]]), codes[1], gains[1], codes[9], gains[9], list(want), count[0])
"""


def test_scan_sequence_in_both_interpreters() -> None:
    """kernels.scan: DAC frames up, gate on, wake-up wait, lines switched in, LDAC, then
    adc_pass per gain (wake frames, ADC_WAKE_US, the other frames, each answered in
    place) while a column is near the rail, lines grounded, gate off, DAC frames down;
    under MicroPython with the heap locked, and the same sequence under CPython."""
    man, stby = 48 + 0xC4, 48 + 0x82  # MAN_Ch1 and STDBY commands' first byte
    events = [
        *[0, 33, 16, 4, 84, 8, 37, 24, 9, 25, 67],  # up, gate, wait, switch in, LDAC, gain 3
        *[10, man, 26, 11, man, 27, 84, 10, stby, 26, 11, stby, 27, 66],  # pass 1, gain 2
        *[11, man, 27, 84, 11, stby, 27],  # pass 2: select 1 only
        *[8, 38, 24, 20, 2, 39, 18],  # grounded, gate off, down
    ]
    want = (
        events,
        300,  # column 1 at the top gain
        3,
        200,  # column 9 after one step down
        2,
        [0] * 16,
        3,  # conversions taken
    )
    if MICROPYTHON.is_file():
        done = subprocess.run(
            [str(MICROPYTHON), "-c", SCAN % {"fw": str(FIRMWARE)} + "print('RESULT', r)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("RESULT")[1].strip() == repr(want)
    fake = types.ModuleType("micropython")
    fake.heap_lock = fake.heap_unlock = lambda: None  # type: ignore[attr-defined]
    ns = {"kernels": _cpython_kernels(), "micropython": fake}
    exec(SCAN.split("import kernels, micropython", 1)[1], ns)
    assert ns["r"] == want
