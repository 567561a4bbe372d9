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
from xbar.host.stream import InputError
from xbar.training.devices.device_model import DeviceModel, fit
from xbar.training.devices.ivdata import IVCurves
from xbar.training.devices.usability import UsabilityResult, analyse

DEFAULT_CELLS = "0:0:0,0:0:1,0:1:0,0:1:1"  # four cells of array 0


class CellSpecError(InputError):
    """A --cells entry that does not name a cell of the board."""


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


# ---- the job of `xbar characterize` ------------------------------------------------------
def characterize_board(
    port: str,
    out: str,
    cells: str = DEFAULT_CELLS,
    cycles: int = 3,
    v_max: float = 2.5,
    steps: int = 10,
    width_us: int = 1000,
    name: str = "characterized",
    timeout: float = 10.0,
) -> None:
    """Sweep `cells` of the board at `port`, fit a device model, write it and the CSVs to
    `out`, print the table."""
    from tqdm import tqdm

    if cycles < 1 or steps < 2 or not 0 < v_max <= 10 or width_us < 1:
        raise CellSpecError("--cycles ≥ 1, --steps ≥ 2, 0 < --v-max ≤ 10 V, --width-us ≥ 1")
    settings = SweepSettings(v_max=v_max, steps=steps, width_us=width_us, v_reset=v_max)
    with Board.open(port, timeout=timeout) as board:
        info = board.info()
        chosen = parse_cells(cells, info.arrays, info.rows, info.cols)
        with tqdm(total=len(chosen), unit="cell", desc="characterize", leave=False) as bar:
            results, model = characterize(
                board, chosen, cycles, settings, name, on_cell=lambda: bar.update(1)
            )
    written = write_outputs(Path(out), results, model)
    print(f"{'cell':<12} {'sigma':>7} {'monot.':>6} {'usability':>9}")
    for r in results:
        u = r.usability
        if u is None:
            print(f"{r.curves.name:<12} {'no usable sweep':>24}")
        else:
            print(f"{r.curves.name:<12} {u.sigma:>7.4f} {u.monotonicity:>6.2f} {u.usability:>9.4f}")
    print(
        f"device model {model.name}: σ {model.sigma_c2c:.4f}, window {model.g_min:.3e} .. "
        f"{model.g_max:.3e} S, usability {model.usability:.4f}"
    )
    print(
        f"wrote {written[0]}, {written[1]}, {written[2]} and {len(written) - 3} I–V files in {out}"
    )
