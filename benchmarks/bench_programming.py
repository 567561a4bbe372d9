"""Write-verify on the emulated board: wall time per write pulse and per cell read.

Every write pulse changes an array's conductances, so the next read (or pulse) meets a
network state the emulator has not solved yet. This benchmark drives the real firmware
in the in-process runtime (every bytecode charged, as `emu://` does) with the host's
`Board`: single-cell reads and PULSE commands on fresh states, then PROGRAM
(write-verify) of a few cells, on each profile twice:

* ``fast``: the default: large networks (sparse LU) are factorised once per state and
  solved only for the line voltages applied (one right-hand side per event; one per
  driven line for the ADC samples), small ones use the full operator;
* ``reference``: ``ArrayNetwork.fast = False``, the full operator (a solve for every
  line of the array, dense maps) on every state, also for events with every line at
  0 V, as the emulator did before.

The firmware runs give wall time per command as the host sees it. The in-process
runtime's board time depends a little on wall-clock timing, so two firmware runs are not
bit-identical even with the same code; the results are therefore compared on a second,
deterministic driver: the board model alone, the firmware's pulse scheme and a one-row
read sent byte by byte through `MvmDriver`'s parts (ADC codes, cycles, conductances).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from xbar.emulator.board_model import BoardModel
from xbar.emulator.mvm_driver import MvmDriver
from xbar.emulator.parts import DAC_MID, SW_DAC, SW_GND, mvm_switches
from xbar.emulator.runtime import InProcessBoard
from xbar.host.board import Board

from benchmarks.run_all import run_meta, write_results

DEVICE = "pvk-best"
V_PULSE = 4.0  # V, a SET pulse that moves pvk-best cells
# µs: above the shortest pulse every profile makes (the firmware times it at boot; 103 µs
# on xbar-5x64x64 in-process, whose switch chain is the longest here).
WIDTH_US = 200
LSB_V = 20.0 / 65536  # line volts per DAC code
PROFILES = ("xbar-5x64x64", "xbar-4x64", "xbar-10x10", "xbar-4x10x10")


def cells_of(p: Any, n: int, seed: int) -> list[tuple[int, int, int]]:
    """n distinct (array, row, col) cells spread over the board."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(p.arrays * p.rows * p.cols, size=n, replace=False)
    return [(int(i // (p.rows * p.cols)), int(i // p.cols % p.rows), int(i % p.cols)) for i in flat]


def run_firmware(
    profile: str, fast: bool, n_pulses: int, n_program: int, seed: int
) -> dict[str, Any]:
    """Reads and pulses through the firmware, then PROGRAM of a few cells."""
    model = BoardModel(profile, seed=seed, device=DEVICE)
    model.network.fast = fast
    p = model.profile
    cells = cells_of(p, n_pulses, seed)
    out: dict[str, Any] = {
        "profile": profile,
        "part": "firmware",
        "cell": p.cell,
        "mode": "fast" if fast else "reference",
    }
    with InProcessBoard(profile, seed, model=model) as emu:
        board = Board(emu.port, timeout=3600)
        try:
            board.read(0, 0, v_read=0.1)  # warm-up: first-use work, not timed
            solves0 = model.diagnostics["operator_solves"]
            rhs0 = model.network.rhs_solves
            t_pulse, t_read, reads = [], [], []
            for a, r, c in cells:
                t0 = time.perf_counter()
                board.pulse(r, c, V_PULSE, WIDTH_US, array=a)  # compliance read + one pulse
                t1 = time.perf_counter()
                reads.append(float(board.read(r, c, array=a, v_read=0.1)))  # verify read
                t2 = time.perf_counter()
                t_pulse.append(t1 - t0)
                t_read.append(t2 - t1)
            out["pulse_read_solves"] = model.diagnostics["operator_solves"] - solves0
            out["pulse_read_rhs_solves"] = model.network.rhs_solves - rhs0
            # Write-verify: targets spread over the device window, one array.
            rng = np.random.default_rng(seed + 1)
            g_min, g_max = model.device.g_min, model.device.g_max
            prog = [(r, c) for _, r, c in cells_of(p, n_program, seed + 2)]
            targets = {
                rc: float(rng.uniform(g_min + 0.2 * (g_max - g_min), g_max - 0.2 * (g_max - g_min)))
                for rc in prog
            }
            solves0 = model.diagnostics["operator_solves"]
            t0 = time.perf_counter()
            res = board.program(
                targets,
                tolerance=0.04 * (g_max - g_min),
                array=0,
                max_pulses=30,
                v_set=3.0,
                v_reset=3.0,
            )
            t_prog = time.perf_counter() - t0
            pulses = int(res.pulses.sum())
            out.update(
                {
                    "pulse_s": t_pulse,
                    "read_s": t_read,
                    "pulse_s_median": float(np.median(t_pulse)),
                    "read_s_median": float(np.median(t_read)),
                    "reads": reads,
                    "program_cells": len(prog),
                    "program_pulses": pulses,
                    "program_s": t_prog,
                    "program_s_per_pulse": t_prog / max(pulses, 1),
                    "program_solves": model.diagnostics["operator_solves"] - solves0,
                    "program_status": [int(s) for s in res.status],
                    "program_used": [int(u) for u in res.pulses],
                    "program_g": [float(g) for g in res.achieved],
                    "g_after": [float(model.conductances(0)[rc]) for rc in prog],
                }
            )
        finally:
            board.close()
    return out


def run_board(profile: str, fast: bool, n_cells: int, seed: int) -> dict[str, Any]:
    """The board model alone, no firmware: the firmware's pulse scheme (HAL.pulse) and a
    one-row read, byte by byte through `MvmDriver`'s parts; deterministic, so the two
    modes' results can be compared exactly. Three pulses per cell, each read back."""
    model = BoardModel(profile, seed=seed, device=DEVICE)
    model.network.fast = fast
    p = model.profile
    driver = MvmDriver(model)
    driver.setup()
    ground = np.zeros(3 * p.lines, dtype=bool)
    ground[SW_GND::3] = True
    half = round(V_PULSE / 2 / LSB_V)
    read_code = DAC_MID + round(0.1 / LSB_V)
    t_pulse, t_read, codes_out = [], [], []
    solves0 = model.diagnostics["operator_solves"]
    for a, r, c in cells_of(p, n_cells, seed):
        rl, cl = p.row_line(a, r), p.col_line(a, c)
        for rep in range(3):
            t0 = time.perf_counter()
            closed = ground.copy()
            closed[3 * rl + SW_GND], closed[3 * rl + SW_DAC] = False, True
            codes = {rl: DAC_MID + half}
            if p.cell == "1T1R":  # other columns follow the row, other rows float
                for cc in range(p.cols):
                    line = p.col_line(a, cc)
                    closed[3 * line + SW_GND], closed[3 * line + SW_DAC] = False, True
                    codes[line] = DAC_MID + half
                for rr in range(p.rows):
                    if rr != r:
                        closed[3 * p.row_line(a, rr) + SW_GND] = False
            else:  # every other line grounded
                closed[3 * cl + SW_GND], closed[3 * cl + SW_DAC] = False, True
            codes[cl] = DAC_MID - half
            driver.switches(closed)
            driver.load_lines(codes)
            model.sleep_us(100 * (rep + 1))
            driver.switches(ground)  # ends the pulse
            driver.load_lines({line: DAC_MID for line in codes})
            t1 = time.perf_counter()
            driver.switches(mvm_switches(p, [a]))
            rows = np.full(p.rows, DAC_MID)
            rows[r] = read_code
            codes_out.append(driver.mvm(a, rows).tolist())
            driver.mvm(a, np.full(p.rows, DAC_MID))  # back to 0 V
            t2 = time.perf_counter()
            t_pulse.append(t1 - t0)
            t_read.append(t2 - t1)
    return {
        "profile": profile,
        "part": "board",
        "mode": "fast" if fast else "reference",
        "pulse_s_median": float(np.median(t_pulse)),
        "read_s_median": float(np.median(t_read)),
        "pulses": len(t_pulse),
        "solves": model.diagnostics["operator_solves"] - solves0,
        "rhs_solves": model.network.rhs_solves,
        "codes": codes_out,
        "g": model.cells.g_prog.ravel().tolist(),
        "energy": model.ledger.breakdown(),
        "cycles": int(model.clock.cycles),
    }


def rel_diff(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-30), initial=0.0))


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    fw = {(r["profile"], r["mode"]): r for r in results if r.get("part") == "firmware"}
    bd = {(r["profile"], r["mode"]): r for r in results if r.get("part") == "board"}
    lines = [
        "# Write-verify on the emulated board: wall time per pulse and per read",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, date {meta['date']}, device `{DEVICE}`, seed "
        f"{meta['seed']}; load average {meta['load_average']} at the start (a shared "
        "machine).  ",
        "`reference`: the full operator (every line of the array solved, dense maps) on "
        "every network state, also while every line is at 0 V: the previous behaviour, "
        "kept as `ArrayNetwork.fast = False`. `fast` (the default): a large network is "
        "factorised once per state (sparse LU) and solved only for the voltages applied "
        "(one right-hand side per event, one per driven line for ADC samples), nothing "
        "is solved while every line is at 0 V; small networks keep the full operator.  ",
        "Firmware: the real firmware in the in-process runtime (bytecodes charged) driven "
        f"by the host's `Board`: {meta['n_pulses']} cells, each a PULSE command "
        f"(compliance read, then a {V_PULSE:g} V {WIDTH_US} µs SET pulse) and a single-cell READ "
        "right after it (a new conductance state each time), wall seconds per command "
        f"(median); then PROGRAM (write-verify) of {meta['n_program']} cells of array 0, "
        "wall seconds per pulse used; factorisations: the board's `operator_solves` over "
        "the PULSE and READ commands.  ",
        "Board: the board model alone (no firmware), the firmware's pulse scheme and a "
        f"one-row read byte by byte through `MvmDriver`: {meta['n_cells']} cells × 3 "
        "pulses, wall ms per pulse (switch frame, DACs, wait, switch frame, DACs back) "
        "and per read (read switches, one MVM, DACs back), median. Deterministic, so the "
        "two modes' results are compared exactly: ADC codes read back, conductances "
        "after all pulses (max relative difference), board cycles.",
        "",
        "| profile | cell | firmware PULSE s | firmware READ s | PROGRAM s/pulse "
        "| pulses used (ref / fast) | factorisations (ref / fast) | board ms/pulse "
        "| board ms/read | same codes, cycles | max rel Δ G |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for profile in meta["profiles"]:
        ref, fast = fw[(profile, "reference")], fw[(profile, "fast")]
        bref, bfast = bd[(profile, "reference")], bd[(profile, "fast")]
        same, d_g = bfast["same_codes_cycles"], bfast["g_max_rel_diff"]
        lines.append(
            f"| `{profile}` | {fast['cell']} "
            f"| {ref['pulse_s_median']:.3f} → {fast['pulse_s_median']:.3f} "
            f"| {ref['read_s_median']:.3f} → {fast['read_s_median']:.3f} "
            f"| {ref['program_s_per_pulse']:.3f} → {fast['program_s_per_pulse']:.3f} "
            f"| {ref['program_pulses']} / {fast['program_pulses']} "
            f"| {ref['pulse_read_solves']} / {fast['pulse_read_solves']} "
            f"| {1e3 * bref['pulse_s_median']:.1f} → {1e3 * bfast['pulse_s_median']:.1f} "
            f"| {1e3 * bref['read_s_median']:.1f} → {1e3 * bfast['read_s_median']:.1f} "
            f"| {'yes' if same else 'NO'} | {d_g:.1e} |"
        )
    lines += [
        "",
        "Pulses used by PROGRAM may differ between the two firmware runs without any "
        "difference in the physics: the in-process runtime's board time depends a little "
        "on wall-clock timing (two runs of the same code differ too), which moves pulse "
        "widths and drift. The board rows are deterministic; there the modes differ only "
        "by rounding.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--n-pulses", type=int, default=5, help="PULSE + READ pairs")
    parser.add_argument("--n-program", type=int, default=3, help="cells to write-verify")
    parser.add_argument("--n-cells", type=int, default=4, help="board-only cells (3 pulses)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv if argv is not None else [])
    load_start = os.getloadavg()
    profiles = [s for s in args.profiles.split(",") if s]
    results = []
    for profile in profiles:
        boards = []
        for fast in (False, True):
            r = run_firmware(profile, fast, args.n_pulses, args.n_program, args.seed)
            results.append(r)
            print({k: v for k, v in r.items() if not isinstance(v, list)})
            boards.append(run_board(profile, fast, args.n_cells, args.seed))
        ref, fast_run = boards
        g_ref, g_fast = np.asarray(ref.pop("g")), np.asarray(fast_run.pop("g"))
        fast_run["g_max_rel_diff"] = float(np.max(np.abs(g_fast - g_ref) / g_ref))
        fast_run["same_codes_cycles"] = (
            ref["codes"] == fast_run["codes"] and ref["cycles"] == fast_run["cycles"]
        )
        for r in boards:
            results.append(r)
            print({k: v for k, v in r.items() if not isinstance(v, list | dict)})
    meta: dict[str, Any] = {
        **run_meta("bench_programming", args, parser),
        "seed": args.seed,
        "profiles": profiles,
        "n_pulses": args.n_pulses,
        "n_program": args.n_program,
        "n_cells": args.n_cells,
        "load_average": " ".join(f"{x:.1f}" for x in load_start),
    }
    write_results("bench_programming", meta, results, markdown(results, meta), args.out)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
