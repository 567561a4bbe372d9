"""Board time per inference in both emulator runtimes, on the calibrated clock.

    python -m benchmarks.bench_board_time [--n 20]

For each model (digits 64-64-64-10 on xbar-5x64x64; iris 4-5-3 on one 10×10 array,
xbar-10x10) and each runtime (in-process: the firmware under CPython, its opcodes traced;
MicroPython: the real unix-port interpreter running the counted firmware,
emulator/work_count.py), the model's conductances are placed directly
(`BoardModel.place`), the model is LOADed, one INFER warms up and then `n` INFER requests
run; board time is the board clock's advance over those `n`, divided by `n` (frame
decoding and the response included). Split:

* compute: cycles charged for firmware work (opcodes, machine-call overheads;
  emulator/clock.py, calibrated on the published RP2040 loop figure);
* SPI: wire time of the SPI bytes sent, at the rates the RP2040 divider produces;
* waits: the MCU idle (DAC settling, sleeps).

"SPI floor" is the SPI wire time alone: the board time if computation and waits took
nothing, for the frames this firmware sends; the "call floor" adds the waits and the
machine calls' own cost (each SPI transfer and pin write, at the cost table's figures).
The same inputs are then streamed (INFER_STREAM). Inferences/s per link: a stream whose
board time per inference is the streamed figure, against the line's byte rate for the
bytes one
full INFER_STREAM frame carries per input (request and answer, COBS framing
included): the smaller of the two rates, and which one limits
(`xbar.host.stream.link_limit`). Noise off; outputs compared with the crossbar model's
reference (`CrossbarModel.reference`).
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from xbar.emulator.clock import NATIVE_SPEEDUP
from xbar.firmware import protocol as P
from xbar.host.board import Board
from xbar.host.stream import LINKS, link_limit

from benchmarks.models import place_directly
from benchmarks.run_all import run_meta, write_results

V_READ = 0.2
TARGET_MS = {"digits": 3.0, "iris": 0.5}
AGREE = 0.15


# The host calibration behind emulator/clock.py's NATIVE_SPEEDUP: one accumulate-and-round
# kernel interpreted, as viper and as native code, timed by the unix-port interpreter.
SPEEDUP_SCRIPT = """
import micropython, time
from array import array

def k_i(acc, codes, n, mul, s):
    r = 1 << (s - 1)
    for i in range(n):
        acc[i] = acc[i] + ((codes[i] * mul + r) >> s)

@micropython.viper
def k_v(acc: ptr32, codes: ptr16, n: int, mul: int, s: int):
    r = 1 << (s - 1)
    for i in range(n):
        acc[i] = acc[i] + ((codes[i] * mul + r) >> s)

@micropython.native
def k_n(acc, codes, n, mul, s):
    r = 1 << (s - 1)
    for i in range(n):
        acc[i] = acc[i] + ((codes[i] * mul + r) >> s)

acc = array("i", [0] * 256)
codes = array("H", range(256))
for f in (k_i, k_v, k_n):
    best = 1e18
    for rep in range(7):
        t0 = time.time_ns()
        for _ in range(200):
            f(acc, codes, 256, 20000, 15)
        best = min(best, (time.time_ns() - t0) / 200 / 256)
    print(best)
"""


def native_speedup() -> dict[str, float]:
    """Interpreted / viper and interpreted / native time per element of the kernel above
    (best of 7), on this host's unix-port MicroPython."""
    import subprocess

    from xbar.emulator.runtime_mpy import micropython_binary

    out = subprocess.run(
        [micropython_binary(), "-c", SPEEDUP_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    interp, viper, native = map(float, out)
    return {"interpreted_ns": interp, "viper": interp / viper, "native": interp / native}


def digits_layers() -> tuple[list[Any], np.ndarray]:
    from xbar.training.quantize import digits_mlp

    model, data = digits_mlp(hidden=(64, 64), seed=0)
    return model.layers, data["x_test_q"]


def iris_layers() -> tuple[list[Any], np.ndarray]:
    from xbar.training.artifact import load_artifact

    from benchmarks.models import iris_artifact

    with tempfile.TemporaryDirectory() as tmp:
        art = load_artifact(iris_artifact(Path(tmp)))
    rng = np.random.default_rng(0)
    return art.quantized.layers, rng.integers(0, 256, size=(64, 4))


def measure(
    profile: str, layers: list[Any], xs: np.ndarray, n: int, micropython: bool, seed: int = 0
) -> dict[str, Any]:
    """Board time per INFER in one runtime (module docstring)."""
    url = f"emu://{profile}?seed={seed}&device=pvk-best&noise=off"
    if micropython:
        url += "&micropython=1"
    board = Board(url, timeout=600)
    try:
        cm, emu = place_directly(board, layers, V_READ)
        bm = emu.model
        board.load(cm, program=False)
        board.infer(xs[0])  # warm-up; its unflushed tail is the same at both ends

        def snap() -> tuple[int, int, int, int, int, dict[str, int]]:
            if micropython:
                time.sleep(0.2)  # the interpreter's tail after its last answer
            emu.settle()
            with emu.hw.lock:
                clock, d = bm.clock, bm.diagnostics
                return (
                    clock.cycles,
                    clock.idle_cycles,
                    d["charge_cycles"],
                    d["spi_bytes"],
                    emu.hw.calls,
                    dict(emu.hw.calls_by_kind),
                )

        s0 = snap()
        diffs = []
        for x in tqdm(xs[1 : n + 1], desc=f"{profile} {'mpy' if micropython else 'inproc'}"):
            y = board.infer(x)
            ref, _ = cm.reference(x)
            diffs.append(int(np.abs(np.asarray(y) - np.asarray(ref)).max()))
        s1 = snap()
        streamed = board.stream(xs[1 : n + 1])  # the same inputs, INFER_STREAM frames
        s2 = snap()
        for x, y in zip(xs[1 : n + 1], streamed.outputs, strict=True):
            ref, _ = cm.reference(x)
            diffs.append(int(np.abs(np.asarray(y) - np.asarray(ref)).max()))
    finally:
        board.close()
        emu.stop()
    hz = emu.hw.hz()
    c0, i0, k0, b0, n0, kinds0 = s0
    c1, i1, k1, b1, n1, kinds1 = s1
    total, idle, compute = (c1 - c0) / n, (i1 - i0) / n, (k1 - k0) / n
    spi = total - idle - compute
    calls = {k: (v - kinds0.get(k, 0)) / n for k, v in kinds1.items()}
    # The machine calls' own cost (the C side, cost table), not the code that makes them.
    call_cycles = sum(c * bm.cycle_costs[emu.hw.COST_OP[k]] for k, c in calls.items())
    return {
        "board_ms": 1e3 * total / hz,
        "compute_ms": 1e3 * compute / hz,
        "spi_ms": 1e3 * spi / hz,
        "waits_ms": 1e3 * idle / hz,
        "stream_ms": 1e3 * (s2[0] - c1) / n / hz,
        "max_abs_diff_lsb": max(diffs),
        "spi_bytes": (b1 - b0) / n,
        "machine_calls": (n1 - n0) / n,
        "spi_transfers": calls.get("spi", 0.0),
        "pin_writes": calls.get("pin_write", 0.0),
        "call_floor_ms": 1e3 * (spi + idle + call_cycles) / hz,
        "n_in": cm.layers[0].n_in,
        "n_out": cm.layers[-1].n_out,
    }


def stream_bytes(n_in: int, n_out: int) -> tuple[float, float]:
    """Wire bytes per input of the INFER_STREAM frames `Board.stream` sends by default (as
    many inputs as one frame holds, at most 255): (host->board, board->host), COBS
    framing included."""
    hdr, rs = struct.calcsize(P.STREAM_REQ), struct.calcsize(P.STREAM_RESP)
    per = max(1, min(255, (P.MAX_PAYLOAD - hdr) // n_in, (P.MAX_PAYLOAD - rs) // (2 * n_out)))
    req = P.encode(P.INFER_STREAM, 1, bytes(hdr + per * n_in))
    resp = P.encode(P.INFER_STREAM, 1, bytes(rs + 2 * per * n_out))
    return len(req) / per, len(resp) / per


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any], command: str) -> str:
    links = list(LINKS)
    head = (
        "| model | profile | runtime | board ms / INFER | compute | SPI | waits "
        "| SPI floor (bytes) | SPI transfers, pin writes | call floor | target "
        "| board ms / inference streamed | "
        + " | ".join(f"inf/s {LINKS[k].name} (limit)" for k in links)
        + " |\n|"
        + "---|" * (12 + len(links))
        + "\n"
    )
    body = ""
    for r in rows:
        rates = " | ".join(
            f"{r['links'][k]['per_s']:.0f} ({r['links'][k]['limit']})" for k in links
        )
        met = "met" if r["board_ms"] <= TARGET_MS[r["model"]] else "missed"
        body += (
            f"| {r['model']} | `{r['profile']}` | {r['runtime']} | **{r['board_ms']:.2f}** "
            f"| {r['compute_ms']:.2f} | {r['spi_ms']:.3f} | {r['waits_ms']:.3f} "
            f"| {r['spi_ms']:.3f} ({r['spi_bytes']:.0f} B) "
            f"| {r['spi_transfers']:.0f}, {r['pin_writes']:.0f} | {r['call_floor_ms']:.2f} "
            f"| ≤ {TARGET_MS[r['model']]} ms: {met} | {r['stream_ms']:.2f} | {rates} |\n"
        )
    agree = "".join(
        f"- {m}: MicroPython / in-process board time = {ratio:.3f} "
        f"({'within' if abs(ratio - 1) <= AGREE else 'outside'} the ±{AGREE:.0%} target)\n"
        for m, ratio in meta["agreement"].items()
    )
    measured, used = meta["native_speedup_measured"], meta["native_speedup_clock"]
    calibration = (
        "\nHost calibration of the viper/native costs, rerun here (accumulate kernel on the "
        "unix port, best of 7 by wall clock, so it varies with the host's load): viper "
        f"{measured['viper']:.0f}×, native {measured['native']:.1f}× faster than "
        f"interpreted; the clock uses {used['viper']:.0f}× and {used['native']:.1f}× "
        "(emulator/clock.py).\n"
    )
    return (
        "## Board time\n\n"
        f"Command: `{command}` — {meta['machine']}, {meta['date']}.\n\n"
        f"{meta['n']} INFER requests per row after one warm-up (frame decoding and the "
        "answer included), noise off; largest difference from the crossbar model's "
        f"reference output over all rows: {meta['max_abs_diff_lsb']} LSB. Clock: "
        "emulator/clock.py (interpreted opcodes calibrated on the published RP2040 loop "
        "figure, viper opcodes from a host calibration, SPI at the rates the RP2040 divider "
        "produces, machine-call overheads estimated). Compute = firmware work charged, "
        "SPI = wire time of the SPI bytes sent, waits = MCU idle (settling). SPI floor = "
        "the board time if computation and waits took nothing, for the frames this firmware "
        "sends. Call floor = SPI floor + waits + the machine calls' own cost (cost table: "
        "`pin`, `spi_call`, `call`): the board time if the firmware's own code around "
        "its SPI transfers and pin writes took nothing, for this sequence of calls. "
        "Streamed: the same inputs in INFER_STREAM frames (as many as one frame holds), "
        "the request's decoding and the answer shared by them. Inferences/s: "
        "min(board rate, line rate) for those frames at the streamed board time, "
        "`xbar.host.stream.link_limit`. The target is judged on the single INFER.\n\n"
        + head
        + body
        + "\n"
        + agree
        + calibration
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="INFER requests per row")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    models = {
        "digits": ("xbar-5x64x64", *digits_layers()),
        "iris": ("xbar-10x10", *iris_layers()),
    }
    rows = []
    for name, (profile, layers, xs) in models.items():
        for mpy in (False, True):
            r = measure(profile, layers, xs, args.n, mpy)
            up, down = stream_bytes(r["n_in"], r["n_out"])
            r["links"] = {
                k: link_limit(r["stream_ms"] * 1e-3, up, down, link) for k, link in LINKS.items()
            }
            r.update(model=name, profile=profile, runtime="MicroPython" if mpy else "in-process")
            rows.append(r)
            print(
                f"{name} {r['runtime']}: {r['board_ms']:.2f} ms (compute {r['compute_ms']:.2f},"
                f" SPI {r['spi_ms']:.3f}, waits {r['waits_ms']:.3f}, call floor "
                f"{r['call_floor_ms']:.2f}), streamed {r['stream_ms']:.2f} ms, "
                f"diff {r['max_abs_diff_lsb']}"
            )
    agreement = {}
    for name in models:
        a, b = (r["board_ms"] for r in rows if r["model"] == name)
        agreement[name] = b / a
    speedup = native_speedup()
    meta = {
        **run_meta("bench_board_time", args, ap),
        "native_speedup_measured": speedup,
        "native_speedup_clock": NATIVE_SPEEDUP,
        "n": args.n,
        "agreement": agreement,
        "max_abs_diff_lsb": max(r["max_abs_diff_lsb"] for r in rows),
    }
    write_results("bench_board_time", meta, rows, markdown(rows, meta, meta["command"]), args.out)


if __name__ == "__main__":
    main()
