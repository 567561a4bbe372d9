"""`xbar characterize`: I–V sweeps and pulse trains on chosen cells → a device model.

    xbar characterize --port P [--cells 0:0:0,0:1:1] [--cycles 3] --out DIR

Per cell and cycle: RESET pulses bring the cell low, then SET pulses of rising and then
falling amplitude (the sweep), each followed by a READ at the read voltage. The firmware
never applies a read above its 0.5 V hard limit, so the current at sweep voltage V is
taken as G·V with G read right after the pulse at V (the cell's state at V); the sweep
is written in the I–V file layout (`voltage`, one current column per cycle) that
`xbar devices fit` reads. σ, monotonicity and usability come from the same
`training.devices.usability.analyse` as the published devices, and the device model from the
same `training.devices.device_model.fit` (all cells' cycles pooled). A pulse train (n SET, then n
RESET pulses at fixed amplitude, G read after each) shows the programmable levels.

Writes DIR/device.json (DeviceModel), DIR/cells.csv (one row per cell: σ, monotonicity,
usability, conductance range; what a fabrication campaign ingests), DIR/pulses.csv and
one I–V file per cell (DIR/iv_a{array}_r{row}_c{col}.csv).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xbar.firmware import protocol as P
from xbar.host.board import Board, FirmwareError
from xbar.host.console import progress
from xbar.host.program import forget_programmed, programmed_model
from xbar.training.devices.device_model import DeviceModel, fit
from xbar.training.devices.ivdata import IVCurves
from xbar.training.devices.usability import UsabilityResult, analyse
from xbar.training.errors import UsageError

DEFAULT_CELLS = "0:0:0,0:0:1,0:1:0,0:1:1"  # four cells of array 0


WIDTH_US = 1000
"""Default pulse width: the emulated cells settle within it at their SET voltage
(emulator/cells.py: tau_set 10 µs there, e-folding every 0.5 V below)."""
STEPS_UNKNOWN = 20
"""Amplitudes per half sweep when the device is unknown."""
MIN_WINDOW_RATIO = 2.0
"""A sweep whose conductances span less than this ratio never reached switching."""


class CellSpecError(UsageError, ValueError):
    """A --cells entry that does not name a cell of the board, or sweep settings the board
    cannot make (exit 2: the command line is at fault)."""


@dataclass(frozen=True)
class SweepSettings:
    v_max: float = 2.5  # V, largest SET amplitude
    steps: int = 10  # amplitudes on the way up (as many on the way down)
    width_us: int = 1000
    v_reset: float = 2.5  # V, RESET amplitude before each cycle
    resets: int = 3  # RESET pulses before each cycle
    v_read: float = 0.2
    train: int = 10  # pulses per direction in the pulse train


@dataclass
class CellResult:
    cell: tuple[int, int, int]  # array, row, col
    curves: IVCurves
    usability: UsabilityResult | None  # None: the sweep gave nothing to analyse
    train: list[tuple[int, str, float, float]]  # (pulse, polarity, amplitude, G after)
    refused: int  # pulses the firmware refused (compliance)


def parse_cells(text: str, arrays: int, rows: int, cols: int) -> list[tuple[int, int, int]]:
    """'A:R:C,A:R:C' or 'R:C' (array 0) into cells, each checked against the geometry."""
    cells = []
    for item in (t.strip() for t in text.split(",")):
        parts = item.split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise CellSpecError(f"--cells {item!r}: expected ARRAY:ROW:COL or ROW:COL") from None
        if len(nums) == 2:
            nums = [0, *nums]
        if len(nums) != 3:
            raise CellSpecError(f"--cells {item!r}: expected ARRAY:ROW:COL or ROW:COL")
        a, r, c = nums
        if not (0 <= a < arrays and 0 <= r < rows and 0 <= c < cols):
            raise CellSpecError(f"--cells {item!r}: outside the board's {arrays} x {rows}x{cols}")
        cells.append((a, r, c))
    return cells


def sweep_voltages(s: SweepSettings) -> np.ndarray:
    up = np.linspace(s.v_max / s.steps, s.v_max, s.steps)
    return np.concatenate([up, up[::-1]])


def _pulse(board: Board, cell: tuple[int, int, int], v: float, width: int, pol: str) -> bool:
    a, r, c = cell
    try:
        board.pulse(r, c, v, width, polarity=pol, array=a)
        return True
    except FirmwareError as exc:
        if exc.code == P.E_COMPLIANCE:
            return False
        raise


def characterize_cell(
    board: Board, cell: tuple[int, int, int], cycles: int, s: SweepSettings
) -> CellResult:
    a, r, c = cell
    volts = sweep_voltages(s)
    current = np.full((len(volts), cycles), np.nan)
    refused = 0
    for k in range(cycles):
        for _ in range(s.resets):
            refused += not _pulse(board, cell, s.v_reset, s.width_us, "reset")
        for i, v in enumerate(volts):
            if _pulse(board, cell, float(v), s.width_us, "set"):
                current[i, k] = board.read(r, c, array=a, v_read=s.v_read) * v
            else:
                refused += 1
    train: list[tuple[int, str, float, float]] = []
    for n, pol in enumerate(["set"] * s.train + ["reset"] * s.train):
        amp = s.v_max if pol == "set" else s.v_reset
        refused += not _pulse(board, cell, amp, s.width_us, pol)
        train.append((n, pol, amp, board.read(r, c, array=a, v_read=s.v_read)))
    curves = IVCurves(f"a{a}_r{r}_c{c}", volts, current, source=board.port_name)
    try:
        result: UsabilityResult | None = analyse(curves)
    except ValueError:
        result = None
    return CellResult(cell, curves, result, train, refused)


def characterize(
    board: Board,
    cells: list[tuple[int, int, int]],
    cycles: int,
    s: SweepSettings,
    name: str,
    on_cell: Callable[[], object] | None = None,
) -> tuple[list[CellResult], DeviceModel]:
    """Sweep every cell; the device model fitted on all their cycles."""
    results = []
    for cell in cells:
        results.append(characterize_cell(board, cell, cycles, s))
        if on_cell is not None:
            on_cell()
    pooled = IVCurves(
        name,
        sweep_voltages(s),
        np.concatenate([r.curves.current for r in results], axis=1),
        source=board.port_name,
    )
    model, _ = fit(pooled, name=name)
    return results, model


def write_outputs(out: Path, results: list[CellResult], model: DeviceModel) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "device.json", out / "cells.csv", out / "pulses.csv"]
    model.save(written[0])
    with open(written[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "cell",
                "array",
                "row",
                "col",
                "cycles",
                "sigma",
                "monotonicity",
                "usability",
                "g_low_S",
                "g_high_S",
                "refused_pulses",
                "iv_file",
            ]
        )
        for r in results:
            a, row, col = r.cell
            g = r.curves.current / r.curves.voltage[:, None]
            u = r.usability
            iv = f"iv_a{a}_r{row}_c{col}.csv"
            w.writerow(
                [
                    r.curves.name,
                    a,
                    row,
                    col,
                    r.curves.cycles,
                    _num(u.sigma if u else math.nan),
                    _num(u.monotonicity if u else math.nan),
                    _num(u.usability if u else math.nan),
                    _num(float(np.nanmin(g))),
                    _num(float(np.nanmax(g))),
                    r.refused,
                    iv,
                ]
            )
    with open(written[2], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "pulse", "polarity", "amplitude_V", "g_after_S"])
        for r in results:
            for n, pol, amp, g_after in r.train:
                w.writerow([r.curves.name, n, pol, f"{amp:.4f}", f"{g_after:.6e}"])
    for r in results:
        a, row, col = r.cell
        path = out / f"iv_a{a}_r{row}_c{col}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["voltage", *(f"cycle_{k + 1}" for k in range(r.curves.cycles))])
            for v, row_i in zip(r.curves.voltage, r.curves.current, strict=True):
                w.writerow([f"{v:.6f}", *("" if np.isnan(i) else f"{i:.6e}" for i in row_i)])
        written.append(path)
    return written


def _num(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.6g}"


# ---- defaults from the device ---------------------------------------------------------
def board_device(board: Board, device: str | None) -> tuple[DeviceModel | None, str]:
    """The device model the cells are made of, and where it came from: `device` (a preset
    or a device JSON), else the device of the model programmed on this board, else the
    emulated board's own (an emu:// URL's `device=`); (None, why) when unknown."""
    if device:
        path = Path(device)
        if path.suffix == ".json" or path.exists():
            return DeviceModel.load(path), f"--device {device}"
        return DeviceModel.preset(device), f"--device {device}"
    record = programmed_model(board)
    if record is not None:
        from xbar.training.artifact import ArtifactError, load_artifact

        try:
            art = load_artifact(record[0])
        except (ArtifactError, OSError):
            art = None
        if art is not None and art.device is not None:
            return art.device, f"the programmed model {record[0]}"
    emulated = getattr(
        getattr(getattr(board.link.port, "board", None), "model", None), "device", None
    )
    if isinstance(emulated, DeviceModel):
        return emulated, "the emulated board"
    return None, "unknown (no --device, no programmed model)"


def sweep_defaults(
    dev: DeviceModel | None, pulse_limit: float, read_limit: float
) -> tuple[float, int, float, float]:
    """(v_max, steps, v_reset, v_read): the device's programmable range, or the board's
    pulse limit when the device is unknown."""
    if dev is None:
        return pulse_limit, STEPS_UNKNOWN, pulse_limit, min(0.2, read_limit)
    top = max([dev.v_set, *dev.level_voltages])
    steps = max(10, min(40, len(dev.level_voltages) // 2))
    return (
        min(top, pulse_limit),
        steps,
        min(abs(dev.v_reset), pulse_limit),
        min(dev.read_voltage, read_limit),
    )


def swept_ratio(results: list[CellResult]) -> float:
    """How far the sweep moved the cells: the 95th over the 5th percentile of each cell's
    conductances after the pulses (robust to single noisy reads), median over cells."""
    ratios = []
    for r in results:
        g = (r.curves.current / r.curves.voltage[:, None]).ravel()
        g = g[np.isfinite(g) & (g > 0)]
        if g.size:
            lo, hi = np.percentile(g, [5, 95])
            ratios.append(hi / lo)
    return float(np.median(ratios)) if ratios else math.inf


def sweep_warnings(
    dev: DeviceModel | None, source: str, v_max: float, results: list[CellResult]
) -> list[str]:
    """Why the model may say less than the cells can: the sweep stopped below the device's
    SET voltage, or the conductances hardly moved (switching never reached)."""
    notes = []
    if dev is not None and v_max < 0.95 * dev.v_set:
        notes.append(
            f"the sweep stops at {v_max:g} V, below the SET voltage {dev.v_set:g} V of "
            f"{dev.name} (levels {min(dev.level_voltages):g}-{max(dev.level_voltages):g} V, "
            f"from {source}): window and usability come out low; leave --v-max out to "
            "sweep the device's range"
        )
    ratio = swept_ratio(results)
    if ratio < MIN_WINDOW_RATIO:
        notes.append(
            f"the conductances span only a ratio of {ratio:.2f} (95th to 5th percentile, "
            f"median cell): the sweep (up to {v_max:g} V) never reached the switching "
            "region; raise --v-max or --width-us"
        )
    return notes


def _cells_text(cells: list[tuple[int, int, int]]) -> str:
    shown = ", ".join(f"{a}:{r}:{c}" for a, r, c in cells[:6])
    return shown + (f" and {len(cells) - 6} more" if len(cells) > 6 else "")


# ---- the job of `xbar characterize` ------------------------------------------------------
def characterize_board(
    port: str,
    out: str,
    cells: str = DEFAULT_CELLS,
    cycles: int = 3,
    v_max: float | None = None,
    steps: int | None = None,
    width_us: int = WIDTH_US,
    name: str = "characterized",
    timeout: float = 10.0,
    device: str | None = None,
    force: bool = False,
    as_json: bool = False,
) -> None:
    """Sweep `cells` of the board at `port`, fit a device model, write it and the CSVs to
    `out`, print the table (or JSON). Sweep range and steps default to the board's device
    model (`board_device`); cells of a model programmed on the board are refused unless
    `force`."""
    import json
    import sys

    if cycles < 1:
        raise CellSpecError(f"--cycles {cycles}: at least 1")
    if steps is not None and steps < 2:
        raise CellSpecError(f"--steps {steps}: at least 2")
    if width_us < 1:
        raise CellSpecError(f"--width-us {width_us}: at least 1 µs")
    if v_max is not None and not v_max > 0:
        raise CellSpecError(f"--v-max {v_max:g}: must be > 0 V")
    with Board.open(port, timeout=timeout) as board:
        info = board.info()
        limits = board.safety()
        pulse_limit = 2 * limits.v_line_max  # both lines driven, opposite signs
        if v_max is not None and v_max > pulse_limit:
            raise CellSpecError(
                f"--v-max {v_max:g} V: above the board's pulse limit {pulse_limit:g} V "
                f"(2 x its {limits.v_line_max:g} V line limit)"
            )
        chosen = parse_cells(cells, info.arrays, info.rows, info.cols)
        record = programmed_model(board)
        touched = sorted(set(chosen) & record[1]) if record else []
        if touched and record and not force:
            raise UsageError(
                f"cells {_cells_text(touched)} hold the model {record[0]}, programmed on "
                f"this board: characterizing rewrites them; choose other --cells, or pass "
                "--force (then program the model again)"
            )
        dev, source = board_device(board, device)
        d_vmax, d_steps, v_reset, v_read = sweep_defaults(dev, pulse_limit, limits.v_read_max)
        settings = SweepSettings(
            v_max=v_max if v_max is not None else d_vmax,
            steps=steps if steps is not None else d_steps,
            width_us=width_us,
            v_reset=v_reset if v_max is None or dev is not None else v_max,
            v_read=v_read,
        )
        print(
            f"device: {dev.name if dev else 'unknown'} ({source}); sweep to "
            f"{settings.v_max:g} V in {settings.steps} steps, {settings.width_us} µs pulses, "
            f"RESET {settings.v_reset:g} V, read {settings.v_read:g} V",
            file=sys.stderr,
        )
        with progress(len(chosen), "characterize", "cell", leave=False) as bar:
            results, model = characterize(
                board, chosen, cycles, settings, name, on_cell=lambda: bar.update(1)
            )
        if touched:
            forget_programmed(board)
    written = write_outputs(Path(out), results, model)
    notes = sweep_warnings(dev, source, settings.v_max, results)
    if touched and record:
        notes.append(f"cells of {record[0]} were rewritten: program it again before inferring")
    for note in notes:
        print(f"xbar: warning: {note}", file=sys.stderr)
    if as_json:
        print(
            json.dumps(
                {
                    "cells": [
                        {
                            "cell": r.curves.name,
                            "sigma": r.usability.sigma if r.usability else None,
                            "monotonicity": r.usability.monotonicity if r.usability else None,
                            "usability": r.usability.usability if r.usability else None,
                            "refused_pulses": r.refused,
                        }
                        for r in results
                    ],
                    "device_model": model.to_dict(),
                    "sweep": {
                        "v_max": settings.v_max,
                        "steps": settings.steps,
                        "width_us": settings.width_us,
                        "v_reset": settings.v_reset,
                        "v_read": settings.v_read,
                        "device": dev.name if dev else None,
                        "device_source": source,
                    },
                    "warnings": notes,
                    "written": [str(p) for p in written],
                },
                indent=2,
            )
        )
        return
    from xbar.host.console import print_table

    print_table(
        ["cell", "sigma", "monot.", "usability"],
        [
            [r.curves.name, "no usable sweep", "", ""]
            if r.usability is None
            else [
                r.curves.name,
                f"{r.usability.sigma:.4f}",
                f"{r.usability.monotonicity:.2f}",
                f"{r.usability.usability:.4f}",
            ]
            for r in results
        ],
        numeric=(1, 2, 3),
    )
    print(
        f"device model {model.name}: σ {model.sigma_c2c:.4f}, window {model.g_min:.3e} .. "
        f"{model.g_max:.3e} S, usability {model.usability:.4f}"
    )
    print(
        f"wrote {written[0]}, {written[1]}, {written[2]} and {len(written) - 3} I–V files in {out}"
    )
