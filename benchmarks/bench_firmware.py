"""Firmware on the emulated board: peak heap use and inference latency.

Heap: the real firmware under the real MicroPython interpreter (`micropython -X
heapsize=192K`, the emulator's MicroPython mode, machine calls bridged to the board
model), driven over the emulated link by the host's `Board` client. The board's flash
holds the firmware as flashed, except `main.py`, which wraps `app.App.dispatch` before
running the firmware's own `main.py` source: before each command it collects and records
`gc.mem_alloc()`/`gc.mem_free()`, collection on throughout (the emulator's machine shim
allocates on every call, so a command run without collection can exhaust this heap where
the firmware alone would not: LOAD_END of the digits model on `xbar-5x64x64` does). The
records go to a file on the board's flash after each command. INFO's free-heap figure
(after `gc.collect()`) is reported too.
Peak heap during inference comes from the firmware alone under the same interpreter
(`alone_run`, as tests/test_firmware_micropython.py drives it, with a machine module that
allocates nothing), automatic collection off around each INFER and INFER_STREAM: heap in use
before plus every byte the command allocated, an upper bound on the true peak. LOAD_END
runs with collection on (its planning makes more garbage than the digits model's free heap
holds): its figure is what it keeps, net.

Latency: board time per INFER request (virtual clock, from the request's first byte to the
firmware waiting for the host again) in the in-process runtime, which charges every
firmware bytecode; MicroPython mode's figure (machine calls and per-byte frame work only:
a lower bound) is given beside it.

Conductances are placed directly with `BoardModel.set_conductances` (write-verify over
the link is measured separately), then the model is LOADed with `program=False`.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from tqdm import tqdm
from xbar.emulator.emulated_board import FIRMWARE_DIR
from xbar.emulator.runtime_mpy import HEAPSIZE, install_firmware, micropython_binary
from xbar.firmware import protocol as P
from xbar.host.board import Board, CrossbarModel
from xbar.training.quantize import fixed_point

from benchmarks.models import place_directly
from benchmarks.run_all import run_meta, write_results

V_READ = 0.2
HEAP_LOG = "heap.log"

# Prepended to the firmware's main.py on the emulated flash (MicroPython source).
MAIN_WRAPPER = """\
import gc
import app as _app

_NOGC = (%(nogc)s)
_orig_dispatch = _app.App.dispatch


def _dispatch(self, code, seq, payload):
    gc.collect()
    a0 = gc.mem_alloc()
    f0 = gc.mem_free()
    off = code in _NOGC
    if off:
        gc.disable()
    try:
        _orig_dispatch(self, code, seq, payload)
    finally:
        a1 = gc.mem_alloc()
        if off:
            gc.enable()
    with open("/%(log)s", "a") as f:
        f.write("%%d %%d %%d %%d %%d\\n" %% (code, a0, f0, a1, 1 if off else 0))


_app.App.dispatch = _dispatch
del _dispatch
gc.collect()
"""


# The firmware alone under the interpreter (as tests/test_firmware_micropython.py drives
# it): a machine module that allocates nothing, so every byte counted is the firmware's.
NULL_MACHINE = Path(__file__).resolve().parent.parent / "tests" / "micropython_null"

ALONE_SCRIPT = """\
import sys, gc, micropython, struct, binascii
sys.path.insert(0, %(fake)r)
sys.path.insert(0, %(fw)r)
gc.collect()
print("START", gc.mem_alloc(), gc.mem_free())
import app, protocol
class W:
    def __init__(self):
        self.n = 0
    def write(self, b):
        self.n += len(b)
w = W()
a = app.App(w, %(profile)r)
gc.collect()
print("BOOT", gc.mem_alloc(), gc.mem_free())
blob = binascii.unhexlify(%(blob)r)

def run(tag, code, payload, nogc):
    mv = memoryview(payload)
    gc.collect()
    a0 = gc.mem_alloc()
    if nogc:
        gc.disable()
    n0 = a.counts[6]
    a.dispatch(code, 1, mv)
    a1 = gc.mem_alloc()
    gc.enable()
    print(tag, a0, a1, a.counts[6] - n0)

run("LOAD_BEGIN", protocol.LOAD_BEGIN,
    struct.pack("<II", len(blob), protocol.crc32(blob)), False)
for off in range(0, len(blob), 1000):
    run("LOAD_CHUNK", protocol.LOAD_CHUNK, struct.pack("<I", off) + blob[off:off + 1000], False)
run("LOAD_END", protocol.LOAD_END, b"", False)
gc.collect()
print("LOADED", gc.mem_alloc(), gc.mem_free())
x = bytes(range(%(n_in)d))
req = struct.pack("<BH", 0, len(x)) + x
for i in range(3):
    run("INFER", protocol.INFER, req, True)
cnt = %(count)d
sreq = struct.pack("<HHB", 1, 0, cnt) + x * cnt
for i in range(3):
    run("INFER_STREAM", protocol.INFER_STREAM, sreq, True)
mv = memoryview(req)
gc.collect()
micropython.heap_lock()
try:
    a.dispatch(protocol.INFER, 1, mv)
    ok = 1
except MemoryError:
    ok = 0
micropython.heap_unlock()
print("LOCKED_INFER", ok, a.counts[6])
gc.collect()
print("END", gc.mem_alloc(), gc.mem_free())
"""


def alone_run(profile: str, cm: CrossbarModel, n_in: int, n_out: int) -> dict[str, Any]:
    """The firmware under `micropython -X heapsize=192K` with a machine that allocates
    nothing: heap after boot and LOAD, bytes each command allocates."""
    with tempfile.TemporaryDirectory(prefix="xbar-bench-mpy-") as tmp:
        count = min((P.MAX_PAYLOAD - 5) // n_in, (P.MAX_PAYLOAD - 6) // (2 * n_out), 255)
        script = ALONE_SCRIPT % {
            "fake": str(NULL_MACHINE),
            "fw": str(FIRMWARE_DIR),
            "profile": profile,
            "blob": cm.to_blob().hex(),
            "n_in": n_in,
            "count": count,
        }
        (Path(tmp) / "run.py").write_text(script)
        res = subprocess.run(
            [micropython_binary(), "-X", f"heapsize={HEAPSIZE}", str(Path(tmp) / "run.py")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise RuntimeError(f"firmware under MicroPython failed:\n{out}")
    lines = [ln.split() for ln in out.splitlines() if ln.strip()]
    first = {ln[0]: [int(v) for v in ln[1:]] for ln in reversed(lines)}
    cmds: dict[str, dict[str, int]] = {}
    for ln in lines:
        if ln[0] in ("LOAD_BEGIN", "LOAD_CHUNK", "LOAD_END", "INFER", "INFER_STREAM"):
            a0, a1, errors = int(ln[1]), int(ln[2]), int(ln[3])
            d = cmds.setdefault(
                ln[0],
                {
                    "count": 0,
                    "alloc_before_max": 0,
                    "allocated_during_max": 0,
                    "peak_in_use_max": 0,
                    "errors": 0,
                },
            )
            d["count"] += 1
            d["alloc_before_max"] = max(d["alloc_before_max"], a0)
            d["allocated_during_max"] = max(d["allocated_during_max"], a1 - a0)
            d["peak_in_use_max"] = max(d["peak_in_use_max"], a1)
            d["errors"] += errors
    failed = {name: d["errors"] for name, d in cmds.items() if d["errors"]}
    if failed:  # a refused LOAD would leave every later figure measuring an error path
        raise RuntimeError(f"{profile}: commands answered with errors {failed}:\n{out}")
    start, boot, loaded = first["START"], first["BOOT"], first["LOADED"]
    return {
        "heap_total_b": start[0] + start[1],
        "free_after_boot_b": boot[1],
        "firmware_after_boot_b": boot[0] - start[0],
        "free_after_load_b": loaded[1],
        "stream_count": count,
        "per_command": cmds,
        "infer_runs_with_heap_locked": bool(first["LOCKED_INFER"][0]),
    }


def small_model(seed: int) -> tuple[list[SimpleNamespace], np.ndarray]:
    """A 10-in, 5-out int8 layer (one 10x10 tile) and some uint8 inputs."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, size=(5, 10))
    x = rng.integers(0, 256, size=(64, 10))
    acc = x @ w.T
    m, s = fixed_point(127.0 / float(np.abs(acc).max()))
    layer = SimpleNamespace(
        weights=w,
        bias=np.zeros(5, dtype=np.int64),
        multiplier=m,
        shift=s,
        relu=False,
        out_min=-128,
        out_max=127,
    )
    return [layer], x


def digits(seed: int) -> tuple[list[Any], np.ndarray]:
    from xbar.training.quantize import digits_mlp

    model, data = digits_mlp(seed=seed)
    return model.layers, data["x_test_q"]


def heap_run(profile: str, layers: list[Any], xs: np.ndarray, n: int, seed: int) -> dict[str, Any]:
    """LOAD and INFER under MicroPython with the instrumented main.py."""
    with tempfile.TemporaryDirectory(prefix="xbar-bench-flash-") as flash:
        install_firmware(Path(flash), profile=profile)
        # Collection stays on for every command (module docstring); what LOAD_END itself
        # allocates comes from the firmware alone (alone_run).
        source = (FIRMWARE_DIR / "main.py").read_text()
        wrapper = MAIN_WRAPPER % {"nogc": "", "log": HEAP_LOG}
        (Path(flash) / "main.py").write_text(wrapper + source)
        url = (
            f"emu://{profile}?seed={seed}&device=pvk-best&noise=off&micropython=1"
            f"&firmware=0&flash={flash}"
        )
        board = Board(url, timeout=600)
        emu = board.link.port.board  # type: ignore[attr-defined]
        try:
            info_boot = board.info()
            cm, emu = place_directly(board, layers, V_READ)
            board.load(cm, program=False)
            info_loaded = board.info()
            lat, diffs = [], []
            for x in tqdm(xs[:n], desc=f"{profile} MicroPython INFER", leave=False):
                time.sleep(0.2)  # the firmware's tail after its last response
                c0 = int(emu.model.clock.cycles)
                y = board.infer(x)
                time.sleep(0.2)
                lat.append((int(emu.model.clock.cycles) - c0) / emu.hw.hz())
                ref, _ = cm.reference(x)
                diffs.append(int(np.abs(np.asarray(y) - np.asarray(ref)).max()))
            board.infer_stream(xs[:n])
            time.sleep(0.3)
            log = (Path(flash) / HEAP_LOG).read_text().split()
        finally:
            board.close()
            emu.stop()
    rows = [tuple(int(v) for v in log[i : i + 5]) for i in range(0, len(log), 5)]
    names = {
        v: k
        for k, v in vars(P).items()
        if k.isupper()
        and isinstance(v, int)
        and k in ("HELLO", "INFO", "LOAD_BEGIN", "LOAD_CHUNK", "LOAD_END", "INFER", "INFER_STREAM")
    }
    per: dict[str, dict[str, int]] = {}
    for code, a0, f0, a1, _off in rows:
        name = names.get(code, f"0x{code:02x}")
        d = per.setdefault(
            name,
            {
                "count": 0,
                "alloc_before_max": 0,
                "free_before_min": 1 << 30,
                "allocated_during_max": 0,
                "peak_in_use_max": 0,
            },
        )
        d["count"] += 1
        d["alloc_before_max"] = max(d["alloc_before_max"], a0)
        d["free_before_min"] = min(d["free_before_min"], f0)
        d["allocated_during_max"] = max(d["allocated_during_max"], a1 - a0)
        d["peak_in_use_max"] = max(d["peak_in_use_max"], a1)
    first = rows[0]
    infer_rows = [r for r in rows if r[0] == P.INFER]
    return {
        "heap_total_b": first[1] + first[2],
        "free_after_boot_first_command_b": first[2],
        "info_free_after_boot_b": info_boot.free_heap,
        "info_free_after_load_b": info_loaded.free_heap,
        "free_before_first_infer_b": infer_rows[0][2],
        "per_command": per,
        "records": rows,
        "board_ms_per_infer_micropython_lower_bound": 1e3 * float(np.mean(lat)),
        "max_abs_diff_lsb_micropython": max(diffs),
        "alone": alone_run(profile, cm, cm.layers[0].n_in, cm.layers[-1].n_out),
        "tiles": sum(len(layer.tiles) for layer in cm.layers),
        "blob_bytes": len(cm.to_blob()),
    }


def latency_run(
    profile: str, layers: list[Any], xs: np.ndarray, n: int, seed: int
) -> dict[str, Any]:
    """Board time per INFER (and for LOAD) in the in-process runtime."""
    url = f"emu://{profile}?seed={seed}&device=pvk-best&noise=off"
    board = Board(url, timeout=600)
    emu = board.link.port.board  # type: ignore[attr-defined]
    try:
        cm, emu = place_directly(board, layers, V_READ)
        m0 = emu.mark()
        board.load(cm, program=False)
        m1 = emu.mark()
        board.infer(xs[0])  # warm-up
        lat, walls, diffs = [], [], []
        for x in tqdm(xs[:n], desc=f"{profile} in-process INFER", leave=False):
            a = emu.mark()
            y = board.infer(x)
            b = emu.mark()
            lat.append((b[1] - a[1]) / emu.hw.hz())
            walls.append(b[0] - a[0])
            ref, _ = cm.reference(x)
            diffs.append(int(np.abs(np.asarray(y) - np.asarray(ref)).max()))
    finally:
        board.close()
        emu.stop()
    lat_ms = 1e3 * np.asarray(lat)
    return {
        "inferences": n,
        "load_board_ms": 1e3 * (m1[1] - m0[1]) / emu.hw.hz(),
        "infer_board_ms_mean": float(lat_ms.mean()),
        "infer_board_ms_min": float(lat_ms.min()),
        "infer_board_ms_max": float(lat_ms.max()),
        "infer_wall_s_mean": float(np.mean(walls)),
        "max_abs_diff_lsb": max(diffs),
    }


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    kib = 1024
    lines = [
        "# Firmware: peak heap use and inference latency on the emulated board",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, date {meta['date']}, device `pvk-best`, noise off, "
        f"seed {meta['seed']}, heap `-X heapsize={HEAPSIZE}` "
        f"({results[0]['heap']['alone']['heap_total_b']} B as the interpreter reports it).  ",
        "Measured, all under the real MicroPython interpreter: (a) **firmware alone**, "
        "driven as `tests/test_firmware_micropython.py` does (`app.App.dispatch` called "
        "directly, a `machine` module that allocates nothing): free heap after boot and "
        "after LOAD (after `gc.collect()`), and per command the bytes allocated with "
        "automatic collection off, so *peak in use* = heap in use before the command + "
        "every byte it allocated (an upper bound on the true peak), except LOAD_END, run "
        "with collection on (its figure is what it keeps, net); (b) **emulated board**: "
        "the same firmware as flashed on the emulator's MicroPython board, over the "
        "emulated link, with a `main.py` that wraps `App.dispatch` (collect, then record the "
        "heap in use before each command; collection on throughout); INFO's "
        "free-heap figure; this heap also holds the emulator's boot, REPL and bridge "
        "modules, and its figures include the bytes the emulator's `machine` shim "
        "allocates per call (a board's `machine` module would not).  ",
        "Latency: board time per INFER request (request bytes in → firmware waiting for "
        "the host again), in-process runtime (every firmware bytecode charged), mean over "
        f"{meta['n']} single-input requests after a warm-up; the MicroPython runtime's "
        "figure (machine calls + per-byte frame work only) is a lower bound. "
        "Conductances placed directly; write-verify measured separately.",
        "",
        "| board | model | tiles | blob B | free after boot: alone / board (INFO) "
        "| free after LOAD: alone / board (INFO) | LOAD_END keeps (alone, net) "
        "| peak in use during INFER: alone (allocated) | board: in use before INFER "
        "| INFER_STREAM (n per frame): alone peak (allocated) "
        "| LOAD board ms | INFER board ms in-process, mean [min–max] "
        "| INFER board ms MicroPython (lower bound) | max \\|Δ\\| vs reference (LSB) |",
        "|---|---|---:|---:|---|---|---:|---|---:|---|---:|---|---:|---:|",
    ]
    for r in results:
        h, t = r["heap"], r["latency"]
        a = h["alone"]
        ai, bi = a["per_command"]["INFER"], h["per_command"]["INFER"]
        ast = a["per_command"]["INFER_STREAM"]
        lines.append(
            f"| `{r['profile']}` | {r['model']} | {h['tiles']} | {h['blob_bytes']} | "
            f"{a['free_after_boot_b'] / kib:.1f} / {h['info_free_after_boot_b'] / kib:.1f} KiB | "
            f"{a['free_after_load_b'] / kib:.1f} / {h['info_free_after_load_b'] / kib:.1f} KiB | "
            f"{a['per_command']['LOAD_END']['allocated_during_max']} B | "
            f"{ai['peak_in_use_max'] / kib:.1f} KiB ({ai['allocated_during_max']} B) | "
            f"{bi['alloc_before_max'] / kib:.1f} KiB | "
            f"({a['stream_count']}) {ast['peak_in_use_max'] / kib:.1f} KiB "
            f"({ast['allocated_during_max']} B) | {t['load_board_ms']:.1f} | "
            f"{t['infer_board_ms_mean']:.2f} [{t['infer_board_ms_min']:.2f}–"
            f"{t['infer_board_ms_max']:.2f}] | "
            f"{h['board_ms_per_infer_micropython_lower_bound']:.2f} | "
            f"{max(t['max_abs_diff_lsb'], h['max_abs_diff_lsb_micropython'])} |"
        )
    lines += [
        "",
        "Full INFER dispatch with `micropython.heap_lock()` (firmware alone): "
        + ", ".join(
            f"`{r['profile']}` "
            + (
                "completes"
                if r["heap"]["alone"]["infer_runs_with_heap_locked"]
                else "fails (MemoryError: the command allocates)"
            )
            for r in results
        )
        + ".",
        "",
        "Heap per command on the emulated board (bytes; worst over the run; includes "
        "the emulator's machine-shim allocations):",
        "",
        "| board | command | count | in use before (after collect) | allocated during "
        "(collection on: net) | in use after |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for name, d in r["heap"]["per_command"].items():
            lines.append(
                f"| `{r['profile']}` | {name} | {d['count']} | {d['alloc_before_max']} "
                f"| {d['allocated_during_max']} | {d['peak_in_use_max']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="INFER requests per board and mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv if argv is not None else [])
    cases = [
        ("xbar-10x10", "random int8 10-5 (one 10×10 tile)", *small_model(args.seed)),
        ("xbar-5x64x64", "digits MLP 64-64-64-10", *digits(args.seed)),
    ]
    results = []
    for profile, name, layers, xs in cases:
        heap = heap_run(profile, layers, xs, args.n, args.seed)
        latency = latency_run(profile, layers, xs, args.n, args.seed)
        results.append({"profile": profile, "model": name, "heap": heap, "latency": latency})
        print(profile, {k: v for k, v in heap.items() if k != "records"}, latency)
    meta: dict[str, Any] = {
        **run_meta("bench_firmware", args, parser),
        "seed": args.seed,
        "heapsize": HEAPSIZE,
        "n": args.n,
    }
    write_results("bench_firmware", meta, results, markdown(results, meta), args.out)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
