"""`xbar program`: write a model's crossbar plan to a board with write-verify.

    xbar program --port P MODEL.xbar [--report cells.csv] [--state progress.json] [--fresh]
                 [--no-compensate] [--no-remap]

The model artifact's plan must fit the board's geometry (INFO); then every cell of the
plan is write-verified to its target conductance, one PROGRAM frame (≤ 125 cells) at a
time, with a progress bar. After every frame the results are saved to a progress file,
so an interrupted run (Ctrl-C, a lost board) resumes where it stopped: the cells already
done are not programmed again (on a board not proved the one they were written on, they
are read again first, and those out of tolerance written again). Only when every cell
has been programmed is the model's tile map LOADed and the run reported as done; the
per-cell report (target vs achieved, pulses, status) goes to a CSV.

A weight is the difference of a pair of cells (G+ − G−), and that difference is all
inference reads. So each pair's *base* cell (the smaller target) is written first and its
partner then to its own target plus the base's error: the pair is as close as one cell's
write-verify tolerance. A cell that cannot reach its target at all (stuck, or a window too
narrow) is made up for the same way: its converged partner moves by the same error, up
to the device's g_max (`--no-compensate` turns both off). If cells failed, the hidden
units are then placed again where those cells spoil the least (`host/remap.py`,
`--no-remap`); the placement is kept in the progress file, which `xbar infer` reads.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xbar.firmware import protocol as P
from xbar.firmware.profiles import VERIFY_GUARD
from xbar.host.board import MAX_PROGRAM_CELLS, Board, BoardError, CrossbarModel
from xbar.host.remap import best_permutations, permute

STATUS_NAMES = {
    P.ST_OK: "ok",
    P.ST_STUCK: "stuck",
    P.ST_MAX_PULSES: "max-pulses",
    P.ST_COMPLIANCE: "compliance",
}
V_VERIFY = 0.3  # V: the highest default read-safe voltage gives the most ADC codes per cell


class ProgramError(BoardError):
    """Programming cannot start or finish (bad progress file, model does not fit)."""


@dataclass(frozen=True)
class Cell:
    array: int
    row: int
    col: int
    layer: int
    target: float


@dataclass
class ProgramReport:
    cells: list[Cell]
    achieved: np.ndarray
    pulses: np.ndarray
    status: np.ndarray
    resumed: int  # cells taken from the progress file, not programmed in this run
    loaded: bool
    programmed: np.ndarray  # target each cell was written to (≠ plan target: compensating)
    pair_error: np.ndarray  # per cell, its pair's (G+ − G−) error against the plan, S
    remap: tuple[float, float] | None = None  # failed cells' weight error (steps) before/after
    plan: CrossbarModel | None = None  # the plan as placed on the board (and LOADed)
    # Resumed on a board not proved the one the progress was saved on: (cells marked done
    # and read again, of those out of tolerance and written again).
    reverified: tuple[int, int] | None = None

    @property
    def converged(self) -> int:
        return int(np.sum(self.status == P.ST_OK))

    def compensated(self, tolerance: float) -> int:
        """Cells written more than `tolerance` off their plan target, to make up for their
        partner's error."""
        targets = np.array([c.target for c in self.cells])
        return int(np.sum(np.abs(self.programmed - targets) > tolerance))


def plan_cells(plan: CrossbarModel) -> list[Cell]:
    """Every cell of the plan with its layer, in (array, row, col) order."""
    owner: dict[tuple[int, int, int], int] = {}
    for li, layer in enumerate(plan.layers):
        for t in layer.tiles:
            for i in range(t.in_len):
                for c in range(2 * t.out_len):
                    owner[(t.array, t.row0 + i, t.col0 + c)] = li
    cells = [
        Cell(a, r, c, owner[(a, r, c)], g)
        for a, targets in plan.targets().items()
        for (r, c), g in targets.items()
    ]
    return sorted(cells, key=lambda x: (x.array, x.row, x.col))


class Pairs:
    """The plan's cells as weight pairs (G+ on a tile's column col0 + 2j, G− on the next):
    each cell's partner, the sign it enters the weight with, and which of the two is
    written first (the *base*: the smaller target, the G− cell on a tie)."""

    def __init__(
        self, plan: CrossbarModel, cells: list[Cell], g_limit: float | None = None
    ) -> None:
        self.plan = plan
        self.g_limit = g_limit
        by_place = {(c.array, c.row, c.col): c for c in cells}
        self.partner: dict[Cell, Cell] = {}
        self.sign: dict[Cell, int] = {}
        for layer in plan.layers:
            for t in layer.tiles:
                for i in range(t.in_len):
                    for j in range(t.out_len):
                        plus = by_place[(t.array, t.row0 + i, t.col0 + 2 * j)]
                        minus = by_place[(t.array, t.row0 + i, t.col0 + 2 * j + 1)]
                        self.partner[plus], self.partner[minus] = minus, plus
                        self.sign[plus], self.sign[minus] = 1, -1

    def is_base(self, c: Cell) -> bool:
        p = self.partner[c]
        return c.target < p.target or (c.target == p.target and self.sign[c] < 0)

    def window(self, c: Cell, g: float) -> float:
        """g clipped into [g_min, g_limit] (default: the plan's top, weight 127)."""
        top = self.plan.g_min + 127 * self.plan.layers[c.layer].g_unit
        return min(max(g, self.plan.g_min), max(top, self.g_limit or top))


def plan_digest(plan: CrossbarModel) -> str:
    """Identifies the plan (blob and targets) in a progress file."""
    h = hashlib.sha256(plan.to_blob())
    for cell in plan_cells(plan):
        h.update(f"{cell.array},{cell.row},{cell.col},{cell.target:.9e};".encode())
    return h.hexdigest()


class Progress:
    """The progress file: which cells are done, for which plan, board profile and board
    (`Board.identity()`, None where unknown; `saved_board` is the one the file names).
    Every save writes a temporary file, syncs it to disk and renames it over the old one
    (then syncs the folder), so a crash or power cut leaves the old file or the new,
    never half of one."""

    def __init__(
        self, path: Path, digest: str, profile: str, fresh: bool, board: str | None = None
    ) -> None:
        self.path = path
        self.digest = digest
        self.profile = profile
        self.board = board
        self.saved_board: str | None = None
        self.done: dict[str, list[float]] = {}
        self.complete = False
        # Where the hidden units went (host/remap.py): per hidden layer, slot -> unit.
        self.placement: list[np.ndarray] | None = None
        if path.exists() and not fresh:
            try:
                data = json.loads(path.read_text())
                same = data["plan"] == digest and data["profile"] == profile
                done = {
                    str(k): [
                        float(v[0]),
                        int(v[1]),
                        int(v[2]),
                        int(v[3]),
                        *([float(v[4])] if len(v) > 4 else []),
                    ]
                    for k, v in data["cells"].items()
                }
                placement = data.get("placement")
                perms = (
                    None
                    if placement is None
                    else [np.asarray(p, dtype=np.int64) for p in placement]
                )
                complete = bool(data.get("complete", False))
                saved_board = data.get("board")
                if saved_board is not None and not isinstance(saved_board, str):
                    raise TypeError("board")
            except (ValueError, KeyError, TypeError, IndexError):
                raise ProgramError(
                    f"{path}: progress file unreadable; delete it or pass --fresh to start over"
                ) from None
            if not same:
                raise ProgramError(
                    f"{path}: progress of another model or board profile; "
                    "pass --fresh to start over, or --state for another file"
                )
            self.done = done
            self.placement = perms
            self.complete = complete
            self.saved_board = saved_board

    @property
    def same_board(self) -> bool:
        """Whether the board now is proved the one the cells marked done were written on."""
        return self.saved_board is not None and self.saved_board == self.board

    @staticmethod
    def key(cell: Cell) -> str:
        return f"{cell.array}:{cell.row}:{cell.col}"

    def save(self, complete: bool = False) -> None:
        placement = None if self.placement is None else [p.tolist() for p in self.placement]
        data = {
            "plan": self.digest,
            "profile": self.profile,
            "board": self.board,
            "complete": complete,
            "placement": placement,
            "cells": self.done,
        }
        write_durably(self.path, json.dumps(data))
        self.saved_board = self.board


def write_durably(path: Path, text: str) -> None:
    """Replace `path` by `text` atomically and durably: a temporary file beside it,
    flushed and fsynced, renamed over it, then the folder fsynced (the rename itself)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return  # a folder cannot be opened (Windows): the rename is as durable as it gets
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder
    finally:
        os.close(fd)


def reverify(
    board: Board,
    state: Progress,
    plan: CrossbarModel,
    tol: float,
    v_read: float,
    pairs: Pairs | None,
) -> tuple[int, int]:
    """Read again every cell `state` marks done (one READ per array, or per row where an
    array does not fit a frame): a cell read within `tol` of what it was written to (less
    the firmware's guard for read error, VERIFY_GUARD) keeps its
    record (with the conductance read now), one out of it is dropped to be written again,
    with its pair partner where `pairs` (compensation: the partner's target depends on
    the base's error). (cells read, cells dropped); the state is saved."""
    cells = [c for c in plan_cells(plan) if Progress.key(c) in state.done]
    reads = {a: board.read(array=a, v_read=v_read) for a in sorted({c.array for c in cells})}
    drop: set[Cell] = set()
    for c in cells:
        entry = state.done[Progress.key(c)]
        goal = entry[4] if len(entry) > 4 else c.target
        g = float(reads[c.array][c.row, c.col])
        if abs(g - goal) <= tol * (1.0 - VERIFY_GUARD):  # the firmware's own band
            entry[0], entry[2] = g, P.ST_OK
        else:
            drop.add(c)
    if pairs is not None:
        drop |= {pairs.partner[c] for c in drop if Progress.key(pairs.partner[c]) in state.done}
    for c in drop:
        del state.done[Progress.key(c)]
    state.save()
    return len(cells), len(drop)


def program_plan(
    board: Board,
    plan: CrossbarModel,
    progress_path: Path,
    *,
    tolerance: float | None = None,
    fresh: bool = False,
    on_frame: Callable[[int], object] | None = None,
    frame_cells: int = MAX_PROGRAM_CELLS,
    passes: int = 2,
    compensate: bool = True,
    g_limit: float | None = None,
    remap: bool = True,
    on_note: Callable[[str], object] | None = None,
    **program_args: Any,
) -> ProgramReport:
    """Write-verify every cell of `plan` not yet done (per the progress file), then LOAD.

    `tolerance` defaults to half a weight step (0.5 g_unit), within which each cell still
    maps to its int8 weight; `frame_cells` (≤ 125) cells go in one PROGRAM frame, the unit
    of progress saved; `passes`: write-verify runs, the later ones only for cells that
    did not converge (pulses add up); `program_args` go to `Board.program`.

    `compensate` (module docstring): each pair's base cell is written first, then its
    partner to its target plus the base's error (so a pair's error is the second cell's
    alone, within `tolerance`); after the passes, a cell that still missed its target
    has its converged partner moved by the same error, up to `g_limit` (the device's g_max:
    the plan keeps weights below it, but a partner may go higher to make up for a cell
    stuck at its top; default the plan's top).

    `remap` (with `compensate`): if cells failed, the hidden units are placed again so the
    failed cells spoil the least weight (`host/remap.py`), by at least one weight step in
    all, and the cells are written again for that placement (the failed ones are not
    tried again). The placement is kept in the progress file; `xbar infer` reads it.

    The progress file names the board (`Board.identity()`). Resumed on a board not proved
    that one (another id, or none to compare), the cells marked done are read again and
    those out of tolerance written again (`reverify`); `on_note` gets one line saying so."""
    info = board.info()
    state = Progress(progress_path, plan_digest(plan), info.profile, fresh, board.identity())
    tol = tolerance if tolerance is not None else 0.5 * min(layer.g_unit for layer in plan.layers)
    args: dict[str, Any] = {"v_read": V_VERIFY, "v_set": 2.5, "v_reset": 2.5, "max_pulses": 100}
    args.update(program_args)
    placed = plan if state.placement is None else permute(plan, state.placement)
    checked = None
    if state.done and not state.same_board:
        saved = state.saved_board
        pairs = Pairs(placed, plan_cells(placed), g_limit) if compensate else None
        checked = reverify(board, state, placed, tol, float(args["v_read"]), pairs)
        if on_note is not None:
            if saved is not None and state.board is not None:
                why = f"was saved on another board ({saved}; this one is {state.board})"
            else:
                why = (
                    "cannot prove this board the one it was saved on (no board id "
                    f"{'on this port' if state.board is None else 'in the file'})"
                )
            on_note(
                f"{progress_path} {why}: read again the {checked[0]} cells it marks done: "
                f"{checked[0] - checked[1]} within ±{tol:.3e} S kept, {checked[1]} to write "
                "again"
            )
    resumed = sum(Progress.key(c) in state.done for c in plan_cells(placed))
    if on_frame is not None and resumed:
        on_frame(resumed)
    writer = _PlanWriter(board, state, tol, frame_cells, args, g_limit)
    report = writer.run(placed, passes, compensate, on_frame, resumed)
    if remap and compensate and state.placement is None and len(plan.layers) > 1:
        faults = {
            (c.array, c.row, c.col): float(g)
            for c, g, st in zip(report.cells, report.achieved, report.status, strict=True)
            if st != P.ST_OK
        }
        if faults:
            top = plan.g_min + 127 * max(layer.g_unit for layer in plan.layers)
            perms, before, after = best_permutations(plan, faults, max(g_limit or top, top))
            if before - after >= 1.0:
                # Only the failed cells' records stay: every other cell is written again.
                state.done = {
                    Progress.key(c): state.done[Progress.key(c)][:4]
                    for c in report.cells
                    if (c.array, c.row, c.col) in faults
                }
                state.placement = perms
                state.save()
                placed = permute(plan, perms)
                report = writer.run(placed, passes, compensate, None, resumed)
                report.remap = (before, after)
    board.load(placed, program=False)
    state.save(complete=True)
    report.plan = placed
    report.reverified = checked
    return report


class _PlanWriter:
    """Writes one placement of a plan: base cells first, then their partners, retry
    passes, then partner moves (see `program_plan`), recording progress after each frame."""

    def __init__(
        self,
        board: Board,
        state: Progress,
        tol: float,
        frame_cells: int,
        args: dict[str, Any],
        g_limit: float | None,
    ) -> None:
        self.board, self.state, self.tol = board, state, tol
        self.frame_cells, self.args, self.g_limit = frame_cells, args, g_limit

    def run(
        self,
        plan: CrossbarModel,
        passes: int,
        compensate: bool,
        on_frame: Callable[[int], object] | None,
        resumed: int,
    ) -> ProgramReport:
        cells = plan_cells(plan)
        pairs = Pairs(plan, cells, self.g_limit)
        done = self.state.done
        todo = [c for c in cells if Progress.key(c) not in done]
        if compensate:
            self.write([(c, c.target) for c in todo if pairs.is_base(c)], 1, on_frame)
            second = []
            for c in todo:
                if not pairs.is_base(c):
                    base = pairs.partner[c]
                    error = done[Progress.key(base)][0] - base.target
                    second.append((c, pairs.window(c, c.target + error)))
            self.write(second, 1, on_frame)
        else:
            self.write([(c, c.target) for c in todo], 1, on_frame)
        for attempt in range(2, max(1, passes) + 1):  # again for the cells not converged yet
            self.write(
                [
                    (c, self.goal(c))
                    for c in cells
                    if done[Progress.key(c)][2] != P.ST_OK
                    and done[Progress.key(c)][3] == attempt - 1
                ],
                attempt,
                None,
            )
        if compensate:
            self.write(partner_moves(pairs, cells, done, self.tol), max(1, passes) + 1, None)
        rows = [done[Progress.key(c)] for c in cells]
        achieved = np.array([r[0] for r in rows])
        errors = {c: a - c.target for c, a in zip(cells, achieved, strict=True)}
        return ProgramReport(
            cells,
            achieved,
            np.array([r[1] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.int64),
            resumed,
            True,
            np.array([self.goal(c) for c in cells]),
            np.array([pairs.sign[c] * (errors[c] - errors[pairs.partner[c]]) for c in cells]),
        )

    def goal(self, c: Cell) -> float:
        entry = self.state.done[Progress.key(c)]
        return entry[4] if len(entry) > 4 else c.target

    def write(
        self,
        group: list[tuple[Cell, float]],
        attempt: int,
        on_frame: Callable[[int], object] | None,
    ) -> None:
        """Write-verify (cell, target) pairs frame by frame, saving after each frame."""
        done = self.state.done
        by_array: dict[int, list[tuple[Cell, float]]] = {}
        for c, g in group:
            by_array.setdefault(c.array, []).append((c, g))
        for array, items in sorted(by_array.items()):
            for s in range(0, len(items), self.frame_cells):
                part = items[s : s + self.frame_cells]
                result = self.board.program(
                    {(c.row, c.col): g for c, g in part},
                    tolerance=self.tol,
                    array=array,
                    **self.args,
                )
                for (c, target), g, n, st in zip(
                    part, result.achieved, result.pulses, result.status, strict=True
                ):
                    key = Progress.key(c)
                    earlier = done[key][1] if key in done else 0
                    entry = [float(g), int(n) + earlier, int(st), attempt]
                    done[key] = entry + ([target] if target != c.target else [])
                self.state.save()
                if on_frame is not None:
                    on_frame(len(part))


def partner_moves(
    pairs: Pairs, cells: list[Cell], done: dict[str, list[float]], tol: float
) -> list[tuple[Cell, float]]:
    """(partner, new target) for each cell that missed its target by more than `tol`
    after every pass, where the partner converged and has not been moved already: the
    partner moves by the same error, as far as the window allows, when that takes the
    pair's error down by more than `tol`."""
    moves = []
    for c in cells:
        g, _, st, *_ = done[Progress.key(c)]
        p = pairs.partner[c]
        entry = done[Progress.key(p)]
        err = (g - c.target) - (entry[0] - p.target)  # the pair's error, c's sign
        if st == P.ST_OK or abs(err) <= tol or entry[2] != P.ST_OK:
            continue
        if len(entry) > 4 and not pairs.is_base(p):
            continue  # p already made up for c when it was written
        target = pairs.window(p, entry[0] + err)
        if abs(err - (target - entry[0])) < abs(err) - tol:
            moves.append((p, target))
    return moves


def write_report(report: ProgramReport, path: Path) -> None:
    """Per-cell CSV: where, target vs achieved, pulses, status."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "array",
                "row",
                "col",
                "layer",
                "target_S",
                "achieved_S",
                "error_S",
                "pulses",
                "status",
                "programmed_S",
                "pair_error_S",
            ]
        )
        for c, g, n, st, prog, pair in zip(
            report.cells,
            report.achieved,
            report.pulses,
            report.status,
            report.programmed,
            report.pair_error,
            strict=True,
        ):
            w.writerow(
                [
                    c.array,
                    c.row,
                    c.col,
                    c.layer,
                    f"{c.target:.6e}",
                    f"{g:.6e}",
                    f"{g - c.target:.6e}",
                    int(n),
                    STATUS_NAMES.get(int(st), str(st)),
                    f"{prog:.6e}",
                    f"{pair:.6e}",
                ]
            )


def summary(report: ProgramReport, tolerance: float) -> list[str]:
    n = len(report.cells)
    targets = np.array([c.target for c in report.cells])
    err = np.abs(report.achieved - targets)
    counts = {name: int(np.sum(report.status == code)) for code, name in STATUS_NAMES.items()}
    lines = [
        f"programmed {n} cells ({report.resumed} from an earlier run): {counts['ok']} within "
        f"±{tolerance:.3e} S, {counts['stuck']} stuck, {counts['max-pulses']} at max pulses, "
        f"{counts['compliance']} refused by compliance",
        f"pulses per cell: mean {report.pulses.mean():.1f}, max {int(report.pulses.max())}; "
        f"|achieved − target|: median {np.median(err):.3e} S, max {err.max():.3e} S",
    ]
    bad = [c for c, st in zip(report.cells, report.status, strict=True) if st != P.ST_OK]
    if bad:
        shown = ", ".join(f"a{c.array}({c.row},{c.col})" for c in bad[:8])
        lines.append(f"not converged: {shown}{' …' if len(bad) > 8 else ''} (see the report)")
    pair = np.abs(report.pair_error)
    half, one = int(np.sum(pair <= tolerance)) // 2, int(np.sum(pair <= 2 * tolerance)) // 2
    lines.append(
        f"weights (G+ − G− of each pair) within ±{tolerance:.3e} S: {half} of {n // 2}, "
        f"within twice that: {one}; {report.compensated(tolerance)} cells written more "
        "than that off their plan target to make up for their partner's error"
    )
    if report.remap is not None:
        before, after = report.remap
        lines.append(
            f"hidden units placed again around the cells that failed: the weight error they "
            f"leave went from {before:.1f} to {after:.1f} steps (placement kept in the "
            "progress file, which `xbar infer` reads)"
        )
    return lines


def summary_json(report: ProgramReport, tolerance: float) -> dict[str, Any]:
    """What `summary` says, as numbers (`xbar program --json`)."""
    targets = np.array([c.target for c in report.cells])
    err = np.abs(report.achieved - targets)
    pair = np.abs(report.pair_error)
    return {
        "cells": len(report.cells),
        "resumed": report.resumed,
        "tolerance_S": tolerance,
        "status": {name: int(np.sum(report.status == code)) for code, name in STATUS_NAMES.items()},
        "pulses_mean": float(report.pulses.mean()) if len(report.pulses) else 0.0,
        "pulses_max": int(report.pulses.max()) if len(report.pulses) else 0,
        "error_median_S": float(np.median(err)) if len(err) else 0.0,
        "error_max_S": float(err.max()) if len(err) else 0.0,
        "weights_within_tolerance": int(np.sum(pair <= tolerance)) // 2,
        "weights": len(report.cells) // 2,
        "compensated": report.compensated(tolerance),
        "remap_error_steps": list(report.remap) if report.remap is not None else None,
        "not_converged": [
            [c.array, c.row, c.col]
            for c, st in zip(report.cells, report.status, strict=True)
            if st != P.ST_OK
        ],
        "loaded": report.loaded,
    }


def checked_plan(
    board: Board, model: str, state: str | None = None, placed: bool = True
) -> tuple[Any, CrossbarModel]:
    """The artifact and its plan, refused if the plan does not fit the board (INFO), with
    the hidden units where `xbar program` placed them on this board's profile (its
    progress file, `state` or MODEL.progress.json, complete and for this plan) unless
    `placed` is False."""
    from xbar.training.artifact import load_artifact

    art = load_artifact(model)
    info = board.info()
    plan = art.check_geometry(
        info.arrays, info.rows, info.cols, board=f"the board ({info.profile})"
    )
    path = Path(state or f"{model}.progress.json")
    if placed and path.exists():
        try:
            progress = Progress(path, plan_digest(plan), info.profile, fresh=False)
        except ProgramError:
            return art, plan  # another model's or board's progress: not this placement
        if progress.complete and progress.placement is not None:
            plan = permute(plan, progress.placement)
    return art, plan


def scheme_tolerance(metadata: dict[str, Any], plan: CrossbarModel) -> tuple[float, str]:
    """The write-verify tolerance (S) and where it comes from: the `verify` scheme the
    model was trained for (`xbar train --program verify:TOL` stores TOL weight steps in
    the artifact's `program` metadata), since its accuracy figures assume cells that
    close; otherwise half a weight step. Raises ProgramError naming a malformed field."""
    step = min(layer.g_unit for layer in plan.layers)
    program = metadata.get("program")
    if isinstance(program, dict) and "tolerance_steps" in program:
        steps = program["tolerance_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int | float) or not 0 < steps < 1e3:
            raise ProgramError(
                f"the model's metadata program.tolerance_steps = {steps!r} is not a number of "
                "weight steps in (0, 1000): retrain it, or give --tolerance"
            )
        return float(steps) * step, f"{steps:g} weight steps, as trained ({program.get('scheme')})"
    scheme = program.get("scheme") if isinstance(program, dict) else None
    trained_for = f" (the model was trained for {scheme})" if scheme else ""
    return 0.5 * step, "half a weight step" + trained_for


def limit_pulses_to_device(board: Board, device: Any) -> float:
    """Lower the board's line limit (SAFETY) so that no pulse can exceed what `device`
    may take (`DeviceModel.pulse_limit`; a pulse puts +-V/2 on two lines); never raises
    it. The firmware then refuses any pulse beyond it, whatever is asked. Returns the
    line limit in force (V)."""
    now = board.safety()
    line = 0.5 * float(device.pulse_limit)
    if line < now.v_line_max:
        return float(board.safety(v_line_max=line).v_line_max)
    return float(now.v_line_max)


# ---- which model is on which board -------------------------------------------------------
def _registry_path() -> Path:
    """Where `xbar program` notes the model it wrote on each board (so `xbar characterize`
    does not overwrite it unasked): $XBAR_STATE_DIR or $XDG_STATE_HOME/xbar."""
    base = os.environ.get("XBAR_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "xbar"
    )
    return Path(base) / "programmed.json"


def board_key(board: Board) -> str:
    """The board's identity where it can be proved, else its port (a pty, a bridge)."""
    ident = board.identity()
    if ident is not None:
        return ident
    name = board.port_name
    return f"port:{os.path.realpath(name) if os.path.exists(name) else name}"


def _read_registry() -> dict[str, Any]:
    try:
        data = json.loads(_registry_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_registry(data: dict[str, Any]) -> None:
    path = _registry_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError:  # a read-only home: the guard is lost, programming is not
        pass


def note_programmed(board: Board, model: str, cells: list[tuple[int, int, int]]) -> None:
    """Record that `model`'s cells are (being) written on this board."""
    data = _read_registry()
    data[board_key(board)] = {
        "model": os.path.abspath(model),
        "cells": [list(c) for c in cells],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_registry(data)


def programmed_model(board: Board) -> tuple[str, set[tuple[int, int, int]]] | None:
    """(model path, its cells) last programmed on this board, or None."""
    entry = _read_registry().get(board_key(board))
    if not isinstance(entry, dict) or "model" not in entry:
        return None
    return str(entry["model"]), {(int(a), int(r), int(c)) for a, r, c in entry.get("cells", [])}


def forget_programmed(board: Board) -> None:
    data = _read_registry()
    if data.pop(board_key(board), None) is not None:
        _write_registry(data)


# ---- the job of `xbar program` -----------------------------------------------------------
def program_model(
    port: str,
    model: str,
    report: str | None = None,
    state: str | None = None,
    fresh: bool = False,
    tolerance: float | None = None,
    max_pulses: int = 100,
    passes: int = 2,
    compensate: bool = True,
    remap: bool = True,
    timeout: float = 10.0,
    as_json: bool = False,
) -> ProgramReport:
    """Write-verify the plan of `model` onto the board at `port` (resuming what an earlier
    run left), LOAD its tile map and print the summary (as JSON with `as_json`, the rest
    then on stderr): `xbar program` and `xbar demo`."""
    from xbar.host.console import progress
    from xbar.host.energy_report import ledger_mark, write_verify_energy
    from xbar.training.artifact import load_artifact

    load_artifact(model)  # a bad model file fails before the port is touched
    report_path = Path(report or f"{model}.cells.csv")
    state_path = Path(state or f"{model}.progress.json")
    with Board.open(port, timeout=timeout) as board:
        art, plan = checked_plan(board, model, placed=False)  # program_plan places it
        if tolerance is not None:
            tol, tol_source = tolerance, "--tolerance"
        else:
            tol, tol_source = scheme_tolerance(art.metadata, plan)
        if art.device is not None:
            limit_pulses_to_device(board, art.device)
        cells = plan_cells(plan)
        total = len(cells)
        note_programmed(board, model, [(c.array, c.row, c.col) for c in cells])
        energy = ledger_mark(board)
        with progress(total, "write-verify", "cell") as bar:
            try:
                result = program_plan(
                    board,
                    plan,
                    state_path,
                    tolerance=tol,
                    fresh=fresh,
                    on_frame=bar.update,
                    max_pulses=max_pulses,
                    passes=passes,
                    compensate=compensate,
                    remap=remap,
                    g_limit=art.device.g_max if art.device else None,
                    on_note=bar.write,
                )
            except (BoardError, KeyboardInterrupt) as exc:
                bar.close()
                done = bar.n
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
                raise ProgramError(
                    f"programming stopped after {done} of {total} cells "
                    f"({why}); progress kept in {state_path}: run the same "
                    "command again to resume"
                ) from None
        energy_line = write_verify_energy(energy, len(result.cells) - result.resumed)
    write_report(result, report_path)
    if as_json:
        data = summary_json(result, tol)
        data.update(report=str(report_path), progress=str(state_path), energy=energy_line or None)
        data["tolerance_source"] = tol_source
        print(json.dumps(data, indent=2))
        return result
    print(f"tolerance ±{tol:.3e} S: {tol_source}")
    for line in summary(result, tol):
        print(line)
    if energy_line:
        print(energy_line)
    print(
        f"model loaded: {len(plan.layers)} layers, "
        f"{sum(len(layer.tiles) for layer in plan.layers)} tiles; per-cell report {report_path}"
    )
    return result
