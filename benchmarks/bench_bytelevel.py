"""Byte-level path: real-time factor of the real firmware on the emulated board.

The digits MLP 64-64-64-10 (int8) runs through the board's own firmware, frame by frame
over the emulated USB link, with INFER_STREAM, in both runtimes: in-process (the
firmware under CPython, every bytecode charged) and MicroPython (the real unix-port
interpreter with a 192 KB heap, running the counted firmware, `emulator/work_count.py`):
both charge the same calibrated clock (`emulator/clock.py`).

Real-time factor = virtual board seconds ÷ wall seconds over the stream (above 1 the
emulation is faster than the board would be). Conductances are placed directly with
`BoardModel.set_conductances` (write-verify over the link is measured elsewhere), then
the model is LOADed with `program=False`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from xbar.host.board import Board, FirmwareError
from xbar.training.quantize import QuantizedModel, digits_mlp

from benchmarks.models import place_directly
from benchmarks.run_all import run_meta, write_results

V_READ = 0.2  # V on a row for input 255
CHUNK = 60  # inputs per infer_stream call (4 frames of 15: the stream window stays full)


def url(profile: str, seed: int, noise: str, micropython: bool) -> str:
    u = f"emu://{profile}?seed={seed}&device=pvk-best&noise={noise}"
    return u + ("&micropython=1" if micropython else "")


def run_variant(
    label: str,
    profile: str,
    noise: str,
    micropython: bool,
    n: int,
    model: QuantizedModel,
    xs: np.ndarray,
    labels: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    u = url(profile, seed, noise, micropython)
    result: dict[str, Any] = {
        "variant": label,
        "profile": profile,
        "noise": noise,
        "mode": "MicroPython" if micropython else "in-process",
        "model": model.name,
        "url": u,
        "inferences": n,
    }
    t0 = time.perf_counter()
    board = Board(u, timeout=900)
    emu = board.link.port.board  # type: ignore[attr-defined]
    try:
        cm, emu = place_directly(board, model.layers, V_READ)
        try:
            loaded = board.load(cm, program=False)
        except FirmwareError as exc:
            result["load_refused"] = str(exc)
            return result
        result["tiles"] = loaded.tiles
        result["open_place_load_s"] = time.perf_counter() - t0
        bm = emu.model
        board.infer_stream(xs[:1])  # warm-up (first-use work), not timed
        ref = model.forward(xs[:n])
        emu.settle()
        if micropython:
            time.sleep(0.3)  # the firmware's tail after its last response (no settle here)
        with emu.hw.lock:
            cycles0 = int(bm.clock.cycles)
            e0 = bm.ledger.mark()
        outs = []
        start = time.perf_counter()
        with tqdm(total=n, desc=label, unit="inf", leave=False) as bar:
            for i in range(0, n, CHUNK):
                outs.append(board.infer_stream(xs[i : min(n, i + CHUNK)]))
                bar.update(outs[-1].shape[0])
        wall = time.perf_counter() - start
        emu.settle()
        if micropython:
            time.sleep(0.3)
        with emu.hw.lock:
            board_s = (int(bm.clock.cycles) - cycles0) / emu.hw.hz()
            energy = bm.ledger.since(e0)
        y = np.concatenate(outs)
        total_j = sum(energy.values())
        result.update(
            {
                "wall_s": wall,
                "wall_s_per_inference": wall / n,
                "board_s": board_s,
                "board_ms_per_inference": 1e3 * board_s / n,
                "realtime_factor": board_s / wall,
                "energy_per_inference_j": total_j / n,
                "energy_breakdown_per_inference_j": {k: v / n for k, v in sorted(energy.items())},
                "argmax_agreement": float(np.mean(y.argmax(1) == ref.argmax(1))),
                "max_abs_diff_lsb": int(np.abs(y - ref).max()),
                "mean_abs_diff_lsb": float(np.abs(y - ref).mean()),
                "accuracy_board": float(np.mean(y.argmax(1) == labels[:n])),
                "accuracy_int8_reference": float(np.mean(ref.argmax(1) == labels[:n])),
                "diagnostics": {k: int(v) for k, v in bm.diagnostics.items() if v},
            }
        )
        return result
    finally:
        board.close()
        emu.stop()


def fmt_breakdown(e: dict[str, float]) -> str:
    parts = sorted(e.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {1e3 * v:.3g}" for k, v in parts if v > 0)


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Byte-level path: real-time factor of the real firmware on the emulated board",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, date {meta['date']}, device `pvk-best`, seed "
        f"{meta['seed']}; load average {meta['load_average']} at the start (a shared "
        "machine).  ",
        "Measured: INFER_STREAM of the first N held-out digits through the real firmware "
        f"(frames over the emulated link, {CHUNK} inputs per host call, stream window 4), "
        "after one warm-up inference. Real-time factor (RTF) = virtual board seconds ÷ "
        "wall seconds over the stream; energy from the board's ledger between marks "
        "taken before and after the stream. Conductances placed directly; write-verify "
        "measured separately. Agreement: argmax of the board's int8 logits vs the integer "
        "reference `QuantizedModel.forward`; max |Δ| in output LSB.  ",
        "In-process mode charges every firmware bytecode it traces; MicroPython mode (the real "
        "interpreter, `-X heapsize=192K`) runs the counted firmware (`emulator/work_count.py`): "
        "both on the calibrated clock of `emulator/clock.py`, so their board times agree. "
        "RTF below 1: the emulation runs slower than the board would. "
        f"Float MLP accuracy {meta['float_accuracy']:.4f}"
        f", int8 reference {meta['int8_accuracy']:.4f} (whole test set).",
        "",
        "| variant | profile | mode | noise | N | wall s/inference | board ms/inference "
        "| RTF | energy/inference (mJ) | argmax agreement | max \\|Δ\\| (LSB) "
        "| accuracy (board / int8 ref) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    refused = []
    for r in results:
        if "load_refused" in r:
            refused.append(r)
            continue
        lines.append(
            f"| {r['variant']} | `{r['profile']}` | {r['mode']} | {r['noise']} | "
            f"{r['inferences']} | {r['wall_s_per_inference']:.3f} | "
            f"{r['board_ms_per_inference']:.2f} | {r['realtime_factor']:.3f} | "
            f"{1e3 * r['energy_per_inference_j']:.3f} | {r['argmax_agreement']:.3f} | "
            f"{r['max_abs_diff_lsb']} | {r['accuracy_board']:.3f} / "
            f"{r['accuracy_int8_reference']:.3f} |"
        )
    lines += ["", "Energy per inference by part (mJ, largest first):", ""]
    for r in results:
        if "load_refused" not in r:
            lines.append(
                f"- {r['variant']}: {fmt_breakdown(r['energy_breakdown_per_inference_j'])}"
            )
    for r in refused:
        lines += [
            "",
            f"{r['variant']} (`{r['profile']}`, {r['model']}): LOAD refused by the "
            f"firmware: {r['load_refused']}",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Noise on costs far more wall time per inference (in-process most): fewer there, so
    # each mode stays near two minutes on a 2-core machine.
    parser.add_argument("--n", type=int, default=200, help="in-process inferences, noise off")
    parser.add_argument(
        "--n-noise", type=int, default=30, help="in-process inferences, noise default"
    )
    parser.add_argument("--n-mpy", type=int, default=200, help="MicroPython inferences, noise off")
    parser.add_argument(
        "--n-mpy-noise", type=int, default=120, help="MicroPython inferences, noise default"
    )
    parser.add_argument(
        "--n-tiles10", type=int, default=2, help="inferences on 10x10 tiles (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv if argv is not None else [])
    load_start = os.getloadavg()
    model, data = digits_mlp()
    xs, labels = data["x_test_q"], data["y_test"]
    variants: list[tuple[str, str, str, bool, int, QuantizedModel]] = []
    counts = {
        (False, "off"): args.n,
        (False, "default"): args.n_noise,
        (True, "off"): args.n_mpy,
        (True, "default"): args.n_mpy_noise,
    }
    for (mpy, noise), n in counts.items():
        if n:
            label = f"MLP {'MicroPython' if mpy else 'in-process'}, noise {noise}"
            variants.append((label, "xbar-5x64x64", noise, mpy, n, model))
    if args.n_tiles10:
        # The 64-64-64-10 MLP needs 196 tiles of 10x10; the firmware holds at most 64.
        variants.append(("MLP 10x10 tiles", "xbar-196x10x10", "off", False, args.n_tiles10, model))
        small, _ = digits_mlp(hidden=(16,))
        for noise in ("off", "default"):
            variants.append(
                (
                    f"64-16-10 on 10x10 tiles, noise {noise}",
                    "xbar-196x10x10",
                    noise,
                    False,
                    args.n_tiles10,
                    small,
                )
            )
    results = []
    for label, profile, noise, mpy, n, m in variants:
        r = run_variant(label, profile, noise, mpy, n, m, xs, labels, args.seed)
        results.append(r)
        print({k: v for k, v in r.items() if k != "energy_breakdown_per_inference_j"})
    meta: dict[str, Any] = {
        **run_meta("bench_bytelevel", args, parser),
        "seed": args.seed,
        "load_average": " ".join(f"{x:.1f}" for x in load_start),
        "float_accuracy": data["float_accuracy"],
        "int8_accuracy": data["int8_accuracy"],
    }
    write_results("bench_bytelevel", meta, results, markdown(results, meta), args.out)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
