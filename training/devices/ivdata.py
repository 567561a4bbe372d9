"""I–V sweep data of memristors: reading users' files and the project's bundled dataset.

A sweep file has a first column ``voltage`` (V) and then one current column (A) per
sweep cycle, as the published perovskite measurements are laid out. Blank cells are
kept as NaN and unnamed columns are kept as cycles, because the published usability
figures were computed that way; every other deviation is an error that names the file
and the cell, raised before anything is written.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xbar.training.errors import XbarError

# Text that spreadsheets use for an empty measurement.
_BLANK_TEXT = {"", "nan", "na", "n/a", "none", "null", "-"}


class IVDataError(XbarError, ValueError):
    """A sweep file that cannot be used, with the file and the problem in the message."""


@dataclass(frozen=True)
class IVCurves:
    """One device's sweep cycles: ``current[:, k]`` is cycle k at ``voltage``."""

    name: str
    voltage: np.ndarray
    current: np.ndarray
    source: str = ""

    @property
    def cycles(self) -> int:
        return int(self.current.shape[1])

    def __post_init__(self) -> None:
        if self.voltage.ndim != 1 or self.current.ndim != 2:
            raise IVDataError(f"{self.name}: voltage must be 1-D and current 2-D")
        if self.current.shape[0] != self.voltage.shape[0]:
            raise IVDataError(
                f"{self.name}: {self.voltage.shape[0]} voltages but "
                f"{self.current.shape[0]} current rows"
            )


def _cell_value(value: object, where: str) -> float:
    """One cell as a float, blanks as NaN; anything else that is not a number is an error."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise IVDataError(f"{where}: {value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.lower() in _BLANK_TEXT:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise IVDataError(f"{where}: {text!r} is not a number") from None


def curves_from_rows(name: str, rows: Sequence[Sequence[object]], source: str = "") -> IVCurves:
    """Validate a header row plus data rows and turn them into :class:`IVCurves`."""
    label = source or name
    if not rows:
        raise IVDataError(f"{label}: the file is empty")
    header = list(rows[0])
    first = str(header[0]).strip().lower() if header and header[0] is not None else ""
    if first != "voltage":
        shown = ", ".join(repr(h) for h in header[:4])
        raise IVDataError(f"{label}: no 'voltage' column first (header starts {shown})")
    width = max(len(r) for r in rows)
    data = np.full((len(rows) - 1, width), np.nan)
    for i, row in enumerate(rows[1:]):
        for j, value in enumerate(row):
            data[i, j] = _cell_value(value, f"{label}: row {i + 2}, column {j + 1}")
    # Rows with no value at all are spreadsheet padding, not measurements.
    data = data[~np.isnan(data).all(axis=1)]
    if data.size == 0 or np.isnan(data[:, 1:]).all():
        raise IVDataError(f"{label}: no current values (every cell is blank)")
    voltage, current = data[:, 0], data[:, 1:]
    if not np.any(voltage > 0):
        raise IVDataError(f"{label}: the sweep has no positive-voltage branch")
    cycles_with_data = int(np.sum(~np.isnan(current).all(axis=0)))
    if cycles_with_data < 2:
        raise IVDataError(
            f"{label}: {cycles_with_data} cycle(s) with data; at least two are needed "
            "to measure cycle-to-cycle variation"
        )
    if not np.all(np.isfinite(data[~np.isnan(data)])):
        raise IVDataError(f"{label}: infinite values in the data")
    return IVCurves(name=name, voltage=voltage, current=current, source=source)


def _read_xlsx_rows(path: Path) -> list[tuple[object, ...]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several unrelated types for bad files
        raise IVDataError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    try:
        return [tuple(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()


def _read_csv_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [row for row in csv.reader(handle) if row]
    except UnicodeDecodeError as exc:
        raise IVDataError(f"{path}: not a UTF-8 text CSV ({exc})") from exc


def read_iv(path: str | Path) -> IVCurves:
    """Read one device's I–V cycles from ``.xlsx`` (first sheet) or ``.csv``."""
    path = Path(path)
    if not path.is_file():
        raise IVDataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    rows: Sequence[Sequence[object]]
    if suffix in (".xlsx", ".xlsm"):
        rows = _read_xlsx_rows(path)
    elif suffix == ".csv":
        rows = _read_csv_rows(path)
    else:
        raise IVDataError(f"{path}: unsupported file type {suffix!r} (use .xlsx or .csv)")
    return curves_from_rows(device_stem(path.name), rows, source=str(path))


def device_stem(file_name: str) -> str:
    """The device name used throughout xbar: the file name without prefix and suffix."""
    stem = Path(file_name).name
    # Only known suffixes: device names such as "1.8um_length_…" contain dots.
    for suffix in (".xlsx", ".xlsm", ".csv"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem.removeprefix("I-V_data_")


def write_csv(curves: IVCurves, path: str | Path) -> None:
    """Write curves in the CSV layout :func:`read_iv` accepts (blanks as empty cells)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["voltage"] + [f"current_cycle{k + 1}" for k in range(curves.cycles)])
        for v, row in zip(curves.voltage, curves.current, strict=True):
            cells = ["" if math.isnan(x) else repr(float(x)) for x in row]
            writer.writerow([repr(float(v)), *cells])
