"""Board in the loop: the accuracy a model keeps when programmed onto emulated boards,
against what its noise model predicted.

The iris network (4-W-3 on one 10×10 array) is trained by the documented command
``xbar train --dataset iris --device pvk-median --budget B --program verify`` (run in this
process), then, for each of N board seeds, programmed onto a fresh emulated board (the
real firmware in the in-process runtime: ``xbar program``'s write-verify, default board
noise) and run on the test split there (``xbar infer``'s streaming). The prediction is
the noise model stored in the artifact (the ``verify`` scheme with the measured residual
when ``training/devices/data/write_verify.json`` has it) applied to the artifact's integer
model (``robustness.quantized_correct_matrix``: int8 weights drawn as the board holds them,
the firmware's requantisation), over D draws: its mean with a 95 % interval, and the
central 95 % range of one board's accuracy. The check: the boards' mean lies in the
predicted interval's reach (the two intervals overlap) and each board's accuracy in the
one-board range.

    python -m benchmarks.bench_board_loop --boards 8
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.run_all import run_meta, write_results

PROFILE = "xbar-10x10"
DEVICE = "pvk-median"


def train_model(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    from xbar.host.cli.main import main as xbar

    argv = [
        "train",
        "--dataset",
        "iris",
        "--device",
        DEVICE,
        "--budget",
        str(args.budget),
        "--program",
        args.program,
        "--out",
        str(work / "iris"),
    ]
    if args.method != "bayesmulti":
        argv += ["--method", args.method, "--width", "4", "--no-baselines"]
    if xbar(argv) != 0:
        raise RuntimeError(f"xbar {shlex.join(argv)} failed")
    shown = list(argv)
    shown[-1] = "train-iris"
    return work / "iris" / "model.xbar", "xbar " + shlex.join(shown)


def on_board(model: Path, seed: int, work: Path) -> dict[str, Any]:
    """Program ``model`` onto board ``seed`` and run the test split there."""
    from xbar.emulator.build import board_model
    from xbar.emulator.runtime import InProcessBoard
    from xbar.host.program import program_model
    from xbar.host.stream import infer

    emulated = board_model(PROFILE, seed, DEVICE, None)
    with InProcessBoard(PROFILE, seed, emulated) as board:
        rep = program_model(
            board.port,
            str(model),
            report=str(work / f"cells-{seed}.csv"),
            state=str(work / f"progress-{seed}.json"),
            fresh=True,
        )
        result = infer(board.port, str(model), dataset="iris")
    return {
        "seed": seed,
        "accuracy": result.accuracy,
        "reference_accuracy": result.reference_accuracy,
        "mean_pulses_per_cell": float(np.mean(rep.pulses)),
        "cells": len(rep.cells),
        "converged": rep.converged,
    }


def predicted(model: Path, draws: int) -> dict[str, Any]:
    from xbar.host.stream import dataset_inputs
    from xbar.training.artifact import load_artifact
    from xbar.training.noise_model import Mapping, NoiseModel
    from xbar.training.robustness import quantized_correct_matrix
    from xbar.training.stats import mean_interval

    art = load_artifact(model)
    noise = NoiseModel.from_dict(art.metadata["program"]["noise_model"])
    noise = noise.with_mapping(Mapping(window=float(art.mapping["window"])))
    x_q, y = dataset_inputs(art, "iris")
    correct = quantized_correct_matrix(art.quantized, x_q, y, noise, draws, seed=11)
    per_draw = correct.mean(axis=1)
    iv = mean_interval(per_draw)
    return {
        "noise_model": noise.label,
        "source": noise.programming.source,
        "draws": draws,
        "mean": iv.mean,
        "interval": [iv.low, iv.high],
        "one_board_range": [
            float(np.quantile(per_draw, 0.025)),
            float(np.quantile(per_draw, 0.975)),
        ],
    }


def markdown(meta: dict[str, Any], res: dict[str, Any]) -> str:
    from xbar.training.stats import Interval, format_interval, mean_interval

    boards = res["boards"]
    accs = [b["accuracy"] for b in boards]
    iv = mean_interval(accs, "boards")
    p = res["predicted"]
    pv = Interval(p["mean"], p["interval"][0], p["interval"][1], p["draws"])
    lo, hi = p["one_board_range"]
    inside = sum(lo <= a <= hi for a in accs)
    overlap = iv.n >= 2 and iv.low <= pv.high and pv.low <= iv.high
    lines = [
        "# Board in the loop: emulated boards against the noise model's prediction",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, date {meta['date']}.  ",
        f"Model: `{res['train_command']}` (iris, {boards[0]['cells']} cells on one "
        f"`{PROFILE}` array); each board: `xbar program` (write-verify, default board "
        "noise, fresh board seed) then `xbar infer --dataset iris` (30 test inputs).",
        "",
        "| board seed | accuracy | int8 reference | mean pulses/cell | converged cells |",
        "|---:|---:|---:|---:|---:|",
    ]
    for b in boards:
        lines.append(
            f"| {b['seed']} | {b['accuracy']:.3f} | {b['reference_accuracy']:.3f} | "
            f"{b['mean_pulses_per_cell']:.1f} | {b['converged']}/{b['cells']} |"
        )
    lines += [
        "",
        f"Measured over {len(boards)} boards: {format_interval(iv)} (95 % interval over "
        f"boards). Predicted by the artifact's noise model ({p['noise_model']}; residual "
        f"{p['source'] or 'n/a'}) on its integer model over {p['draws']} draws: "
        f"{format_interval(pv)}; one board's central 95 % range [{lo:.3f}, {hi:.3f}].",
        "",
        f"Intervals overlap: {'yes' if overlap else 'no' if iv.n >= 2 else 'n/a (one board)'}; "
        f"boards inside the one-board range: {inside}/{len(boards)}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=8, help="emulated boards (seeds)")
    parser.add_argument("--budget", type=int, default=8, help="BayesMulti first-rung trials")
    parser.add_argument("--program", default="verify", help="scheme trained for")
    parser.add_argument(
        "--method", default="bayesmulti", help="training method (erm: width 4, CI-sized)"
    )
    parser.add_argument("--draws", type=int, default=500, help="draws of the prediction")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    meta = run_meta("bench_board_loop", args, parser)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, train_command = train_model(args, work)
        res: dict[str, Any] = {
            "train_command": train_command,
            "boards": [],
            "predicted": predicted(model, args.draws),
            "metadata": json.loads(json.dumps(_meta(model))),
        }
        for seed in tqdm(range(args.boards), desc="boards"):
            res["boards"].append(on_board(model, seed, work))
            res["wall_s"] = time.perf_counter() - start
            # After each board: a cut run keeps the boards it measured.
            write_results("bench_board_loop", meta, [res], markdown(meta, res), Path(args.out))


def _meta(model: Path) -> dict[str, Any]:
    from xbar.training.artifact import load_artifact

    m = load_artifact(model).metadata
    return {k: m[k] for k in ("program", "accuracy_on_board", "accuracy_certificate") if k in m}


if __name__ == "__main__":
    main()
