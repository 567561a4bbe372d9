"""End to end on the MicroPython board: flash, write-verify every cell, stream digits.

What a user does, timed: an emulated board running the real MicroPython interpreter
behind a pty, without firmware; `host.flash.flash` (raw REPL, .mpy, SHA-256 checks, soft
reset), `host.program.program_plan` (write-verify of every cell, 2 passes), then
`host.stream.stream_model` on the whole held-out split. The model is the one the CI
end-to-end test uses (small enough to write-verify through the interpreter): digits
pooled 2×2 to 16 inputs, MLP 16-5-10, exported for pvk-best on `xbar-4x10x10` (260 cells).
Run once per noise setting of the board (default: every source on; default without drift,
the CI test's setting; off: the ideal board).

Run: ``python -m benchmarks.bench_e2e`` (options: --noise, --out).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.infer_batch import predict
from xbar.emulator.runtime import InProcessBoard
from xbar.emulator.runtime_mpy import MicroPythonBoard
from xbar.host.board import Board
from xbar.host.flash import flash
from xbar.host.program import program_plan
from xbar.host.stream import stream_model
from xbar.training.artifact import ModelArtifact, export_artifact
from xbar.training.devices.device_model import DeviceModel
from xbar.training.tasks import load_task

from benchmarks.run_all import run_meta, write_results

PROFILE = "xbar-4x10x10"
DEVICE = "pvk-best"
HIDDEN = 5  # the hidden width: 260 cells, written through the interpreter within CI time
NOISE = {
    "default": NoiseConfig(),
    "default, no drift": NoiseConfig(drift_nu=0.0),
    "off": NoiseConfig.off(),
}


def pooled(x: np.ndarray) -> np.ndarray:
    """8×8 digits averaged over 2×2 blocks: 16 inputs in [0, 1]."""
    return x.reshape(len(x), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(x), 16)


def pooled_digits_model(
    path: Path, hidden: int = HIDDEN
) -> tuple[ModelArtifact, np.ndarray, np.ndarray]:
    """The 16-`hidden`-10 pooled-digits artifact, and the test split's uint8 inputs and
    labels."""
    from sklearn.neural_network import MLPClassifier

    task = load_task("digits", 0)
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=2000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(pooled(task.x_train), task.y_train)
    art = export_artifact(
        path,
        list(zip(clf.coefs_, clf.intercepts_, strict=True)),
        pooled(task.x_train),
        input_scale=1 / 255,
        device=DeviceModel.preset(DEVICE),
        profile=PROFILE,
        metadata={"task": "digits-pooled-4x4", "seed": 0},
    )
    x = art.quantized.quantize_input(pooled(task.x_test))
    return art, x, task.y_test


def run_once(noise_name: str, folder: Path) -> dict[str, Any]:
    art, x, y = pooled_digits_model(folder / "digits16.xbar")
    assert art.plan is not None
    noise = NOISE[noise_name]
    model = BoardModel(PROFILE, seed=0, device=DeviceModel.preset(DEVICE), noise=noise)
    with MicroPythonBoard(PROFILE, 0, model, firmware=False) as board:
        t0 = time.perf_counter()
        flashed = flash(board.port, profile=PROFILE)
        t1 = time.perf_counter()
        with Board(board.port, timeout=60) as client:
            prog = program_plan(
                client,
                art.plan,
                folder / "progress.json",
                fresh=True,
                g_limit=DeviceModel.preset(DEVICE).g_max,
            )
            t2 = time.perf_counter()
            with board.hw.lock:  # the firmware idles between commands
                snapshot = copy.deepcopy(model)
            assert prog.plan is not None  # as placed on the board (hidden units may move)
            report = stream_model(client, art, prog.plan, x, y)
    batch = predict(snapshot, prog.plan.to_blob(), x.astype(np.uint8)).outputs
    return {
        "noise": noise_name,
        "cells": len(prog.cells),
        "converged": prog.converged,
        "pulses_mean": float(prog.pulses.mean()),
        "flash_s": t1 - t0,
        "program_s": t2 - t1,
        "files": len(flashed.files),
        "mpy": flashed.compiled,
        "n": len(y),
        "accuracy": report.accuracy,
        "reference_accuracy": report.reference_accuracy,
        "agreement": report.agreement,
        "throughput": report.throughput,
        "stream_s": report.stream.wall_s,
        "batch_equal": float(np.mean(batch == report.stream.outputs)),
    }


def seed_sweep(seeds: list[int], folder: Path) -> list[dict[str, Any]]:
    """The same model, program and stream on in-process boards of several seeds (default
    noise without drift): how much a board's stuck cells and spread decide the outcome."""
    art, x, y = pooled_digits_model(folder / "digits16.xbar")
    assert art.plan is not None
    tol = 0.5 * art.plan.layers[0].g_unit
    rows = []
    for seed in seeds:
        model = BoardModel(
            PROFILE, seed=seed, device=DeviceModel.preset(DEVICE), noise=NOISE["default, no drift"]
        )
        emulated = InProcessBoard(PROFILE, seed, model=model, count_bytecodes=False)
        with emulated, Board(emulated.port, timeout=60) as client:
            prog = program_plan(
                client,
                art.plan,
                folder / f"progress{seed}.json",
                fresh=True,
                g_limit=DeviceModel.preset(DEVICE).g_max,
            )
            outputs = client.stream(x.astype(np.uint8)).outputs
        stuck = model.cells.stuck != 0
        used = [(c.array, c.row, c.col) for c in prog.cells]
        rows.append(
            {
                "seed": seed,
                "cells": len(prog.cells),
                "converged": prog.converged,
                "stuck_cells": int(sum(stuck[a, r, c] for a, r, c in used)),
                "compensated": prog.compensated(tol),
                "pairs_off_2_steps": int(np.sum(np.abs(prog.pair_error) > 4 * tol)) // 2,
                "accuracy": float(np.mean(outputs.argmax(1) == y)),
                "reference_accuracy": float(np.mean(art.quantized.forward(x).argmax(1) == y)),
            }
        )
        print(rows[-1])
    return rows


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "## End to end on the MicroPython board (flash → program → infer)",
        "",
        f"Command: `{meta['command']}` — {meta['machine']}, {meta['date']}.",
        "",
        "Emulated board under the real MicroPython interpreter (`-X heapsize=192K`) behind "
        f"a pty, no firmware at start; `{PROFILE}`, device {DEVICE}, seed 0. Model: digits "
        f"pooled 2×2 (16 inputs), MLP 16-{HIDDEN}-10 (the CI end-to-end test's model). Flash: "
        "raw REPL, .mpy, SHA-256 verified; program: `xbar program`'s write-verify of every "
        "cell (2 passes, tolerance half a weight step, pair compensation); infer: the whole "
        "held-out split streamed. *= batch path*: the share of output values equal to the "
        "emulator's batch path for the firmware's inference (`emulator/infer_batch.py`) on "
        "a snapshot of the board taken between program and infer. Wall times on this "
        "machine. With drift on, results vary from run to run: board time (which drift "
        "follows) depends on how many HELLO frames the host sent while the board booted; "
        "without drift a run repeats (the CI test's setting).",
        "",
        "| board noise | cells | converged | pulses/cell | flash s | program s | N | "
        "accuracy board / int8 ref | argmax = int8 ref | = batch path | inferences/s (wall) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['noise']} | {r['cells']} | {r['converged']} | {r['pulses_mean']:.1f} | "
            f"{r['flash_s']:.1f} | {r['program_s']:.0f} | {r['n']} | {r['accuracy']:.4f} / "
            f"{r['reference_accuracy']:.4f} | {r['agreement']:.4f} | {r['batch_equal']:.4f} | "
            f"{r['throughput']:.1f} |"
        )
    sweep = meta.get("sweep") or []
    if sweep:
        lines += [
            "",
            f"Board seeds (in-process runtime, default noise without drift, the same model "
            f"and `program_plan`): stuck cells among the {sweep[0]['cells']} the model uses, "
            "partner cells moved to make up for them, weights still more than 2 steps off, "
            "accuracy.",
            "",
            "| seed | converged | stuck cells | partners moved | weights > 2 steps off | "
            "accuracy board / int8 ref | difference |",
            "|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in sweep:
            lines.append(
                f"| {r['seed']} | {r['converged']} | {r['stuck_cells']} | {r['compensated']} | "
                f"{r['pairs_off_2_steps']} | {r['accuracy']:.4f} / "
                f"{r['reference_accuracy']:.4f} | {r['accuracy'] - r['reference_accuracy']:+.4f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--noise",
        action="append",
        choices=list(NOISE),
        help="board noise setting (repeatable; default: all)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=8,
        help="board seeds 0..N-1 for the in-process sweep (default 8; 0: none)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    results = []
    for name in args.noise or list(NOISE):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_once(name, Path(tmp)))
            print(results[-1])
    with tempfile.TemporaryDirectory() as tmp:
        sweep = seed_sweep(list(range(args.seeds)), Path(tmp))
    meta = {
        **run_meta("bench_e2e", args, parser),
        "profile": PROFILE,
        "device": DEVICE,
        "sweep": sweep,
    }
    write_results("bench_e2e", meta, results, markdown(results, meta), args.out)


if __name__ == "__main__":
    main()
