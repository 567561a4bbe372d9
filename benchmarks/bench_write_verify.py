"""Write-verify on the emulated board, measured: the residual the noise model's ``verify``
scheme draws from, and the pulses it costs.

For a device and each tolerance (in weight steps g_unit = window·(g_max − g_min)/127, the
plan's unit), the real firmware in the in-process runtime write-verifies cells of fresh emulated
boards (default noise: c2c, d2d, stuck cells, read noise, drift) to targets at random weight
steps, with the pulse settings ``xbar program`` uses. Per cell it records the programmed
conductance's error (the cell's true conductance, not the firmware's reading) in weight
steps, the pulses used and the status.

The summary per tolerance (residual σ and mean in weight steps, the fraction of cells the
firmware gave up on, mean pulses per cell) is written to
``training/devices/data/write_verify.json``, where
:mod:`xbar.training.noise_model` reads it as the ``verify`` scheme's measured residual.

    python -m benchmarks.bench_write_verify --device pvk-median --cells 60 --boards 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest
from tqdm import tqdm
from xbar.emulator.board_model import BoardModel
from xbar.emulator.runtime import InProcessBoard
from xbar.firmware import protocol as P
from xbar.host.board import Board
from xbar.host.program import V_VERIFY
from xbar.training.artifact import WINDOW
from xbar.training.devices.device_model import WRITE_VERIFY_FILE
from xbar.training.noise_model import STEPS
from xbar.training.stats import LEVEL, mean_interval

from benchmarks.run_all import run_meta, write_results

PROFILE = "xbar-10x10"
TOLERANCES = (0.25, 0.5, 1.0, 2.0, 4.0)  # weight steps
# The settings `xbar program` passes to Board.program (host/program.py program_plan).
PROGRAM_ARGS: dict[str, Any] = {"v_read": V_VERIFY, "v_set": 2.5, "v_reset": 2.5, "max_pulses": 100}


def measure(device: str, tol: float, cells: int, seed: int) -> dict[str, Any]:
    """Write-verify ``cells`` cells of one fresh board (seed) within ``tol`` weight steps."""
    model = BoardModel(PROFILE, seed=seed, device=device)
    p = model.profile
    g_min, g_max = model.device.g_min, model.device.g_max
    g_unit = WINDOW * (g_max - g_min) / STEPS  # the plan's weight step
    rng = np.random.default_rng(seed + 1000)
    flat = rng.choice(p.rows * p.cols, size=min(cells, p.rows * p.cols), replace=False)
    rcs = [(int(i // p.cols), int(i % p.cols)) for i in flat]
    steps = rng.integers(0, STEPS + 1, size=len(rcs))
    targets = {rc: float(g_min + m * g_unit) for rc, m in zip(rcs, steps, strict=True)}
    with InProcessBoard(PROFILE, seed, model=model) as emu:
        board = Board(emu.port, timeout=3600)
        try:
            # A loaded shared machine can take minutes per frame: no link timeout here.
            res = board.program(
                targets, tolerance=tol * g_unit, array=0, timeout=3600, **PROGRAM_ARGS
            )
        finally:
            board.close()
    g_true = model.conductances(0)
    err = np.array([(g_true[rc] - targets[rc]) / g_unit for rc in rcs])
    return {
        "err_steps": err.tolist(),
        "pulses": [int(u) for u in res.pulses],
        "ok": [bool(s == P.ST_OK) for s in res.status],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    err = np.concatenate([r["err_steps"] for r in runs])
    ok = np.concatenate([r["ok"] for r in runs])
    pulses = np.concatenate([r["pulses"] for r in runs])
    conv = err[ok]
    mean_ci = mean_interval(conv, "cells") if conv.size > 1 else None
    missed = binomtest(int((~ok).sum()), int(ok.size)).proportion_ci(LEVEL, method="wilson")
    return {
        "cells": int(err.size),
        "residual_sigma_steps": float(conv.std()) if conv.size else float("nan"),
        "residual_mean_steps": float(conv.mean()) if conv.size else float("nan"),
        "residual_mean_ci95": [mean_ci.low, mean_ci.high] if mean_ci else None,
        "miss_rate": float(1 - ok.mean()),
        "miss_rate_ci95": [float(missed.low), float(missed.high)],
        "miss_sigma_steps": float(err[~ok].std()) if (~ok).sum() > 1 else 0.0,
        "mean_pulses": float(pulses.mean()),
    }


def store(args: argparse.Namespace, command: str, rows: list[dict[str, Any]]) -> None:
    """Merge this device's rows into the data file the noise model reads (in the source
    tree: the installed package links to it)."""
    path = Path(__file__).resolve().parent.parent / "training/devices/data" / WRITE_VERIFY_FILE.name
    data = json.loads(path.read_text()) if path.exists() else {}
    entry = data.get(args.device, {})
    tolerances = dict(entry.get("tolerances", {}))
    tolerances.update({f"{r['tolerance_steps']:g}": r for r in rows})
    data[args.device] = {
        "profile": PROFILE,
        "program_args": PROGRAM_ARGS,
        "boards": args.boards,
        "cells_per_board": args.cells,
        "command": command,
        "measured": time.strftime("%Y-%m-%d", time.gmtime()),
        "tolerances": tolerances,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="pvk-median")
    ap.add_argument("--cells", type=int, default=60, help="cells per board")
    ap.add_argument("--boards", type=int, default=2, help="board seeds per tolerance")
    ap.add_argument("--tolerances", default=",".join(map(str, TOLERANCES)))
    ap.add_argument("--no-store", action="store_true", help="do not update the data file")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    tols = [float(t) for t in args.tolerances.split(",")]
    meta = run_meta("bench_write_verify", args, ap)
    command = meta["command"]
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for tol in tqdm(tols, desc="tolerances"):
        runs = [measure(args.device, tol, args.cells, s) for s in range(args.boards)]
        rows.append({"tolerance_steps": tol, **summarise(runs)})
        if not args.no_store:  # after each tolerance: a cut run keeps what it measured
            store(args, command, rows)
    wall = time.perf_counter() - start
    md = [
        "# Write-verify residual on the emulated board (the `verify` scheme's measurement)",
        "",
        f"Command: `{command}`  ",
        f"Device `{args.device}`, profile `{PROFILE}`, {args.boards} board seeds × "
        f"{args.cells} cells per tolerance, default board noise, `xbar program`'s pulse "
        f"settings; wall {wall:.0f} s.",
        "",
        "Converged cells' error (true conductance − target) and the cells given up, with "
        "95 % intervals (Student t for the mean, Wilson for the fraction given up).",
        "",
        "| tolerance (steps) | cells | residual σ (steps) | residual mean [95 % CI] | "
        "given up [95 % CI] | mean pulses/cell |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lo, hi = r["residual_mean_ci95"] or (float("nan"), float("nan"))
        m_lo, m_hi = r["miss_rate_ci95"]
        md.append(
            f"| {r['tolerance_steps']:g} | {r['cells']} | {r['residual_sigma_steps']:.2f} | "
            f"{r['residual_mean_steps']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {r['miss_rate']:.1%} "
            f"[{m_lo:.0%}, {m_hi:.0%}] | {r['mean_pulses']:.1f} |"
        )
    meta.update({"device": args.device, "wall_s": wall})
    write_results("bench_write_verify", meta, rows, "\n".join(md) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
