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
MAX_CURRENT_A = 1.0
"""Largest |current| a sweep may hold: memristor compliance currents are µA to 100 mA and
source-measure units range to about 1 A; beyond it the column is not amperes (mA or µA
numbers, a scaling error, corrupt data)."""
MAX_VOLTAGE_V = 1000.0
"""Largest |voltage|: beyond the range of any source-measure unit (memristors sweep a few
volts)."""
MAX_XLSX_BYTES = 64 << 20
"""Largest decompressed size of an .xlsx (all zip members together): the bundled sweeps
are below 1 MB; a few-hundred-KB file that inflates to hundreds of MB is a zip bomb."""


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
    _check_range(
        label, data[:, :1], "voltage", MAX_VOLTAGE_V, "V", 1, "beyond any source-measure unit"
    )
    _check_range(
        label,
        data[:, 1:],
        "current",
        MAX_CURRENT_A,
        "A",
        2,
        "far above any compliance current (µA to 100 mA); is the column in amperes?",
    )
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


def _check_range(
    label: str, values: np.ndarray, what: str, bound: float, unit: str, first: int, why: str
) -> None:
    """Every finite |value| <= bound (blanks aside), else an error naming the first cell beyond
    it; ``values`` is (rows, columns) of data, ``first`` its first column's number."""
    with np.errstate(invalid="ignore"):
        over = np.argwhere(np.isfinite(values) & (np.abs(values) > bound))
    if over.size:
        row, col = (int(x) for x in over[0])
        raise IVDataError(
            f"{label}: row {row + 2}, column {first + col}: {what} {values[row, col]:g} {unit} "
            f"exceeds {bound:g} {unit}: {why}"
        )


def _check_xlsx_size(path: Path) -> None:
    """Refuse a workbook whose members inflate beyond MAX_XLSX_BYTES, before parsing it."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            total = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise IVDataError(f"{path}: not a readable .xlsx workbook ({exc})") from None
    if total > MAX_XLSX_BYTES:
        raise IVDataError(
            f"{path}: the workbook inflates to {total / 2**20:.0f} MiB, more than the "
            f"{MAX_XLSX_BYTES >> 20} MiB an I–V sweep can need (a zip bomb?); save the "
            "sweep as .csv"
        )


def _read_xlsx_rows(path: Path) -> list[tuple[object, ...]]:
    import openpyxl

    _check_xlsx_size(path)
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several unrelated types for bad files
        raise IVDataError(f"{path}: not a readable .xlsx workbook ({exc})") from None
    try:
        if not book.worksheets:
            raise IVDataError(f"{path}: the workbook has no worksheet")
        return [tuple(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    except IVDataError:
        raise
    except Exception as exc:  # the sheet is parsed lazily: XML errors, bad zip data, …
        raise IVDataError(
            f"{path}: corrupt .xlsx worksheet ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        book.close()


def _read_csv_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [row for row in csv.reader(handle) if row]
    except UnicodeDecodeError as exc:
        raise IVDataError(f"{path}: not a UTF-8 text CSV ({exc})") from None
    except csv.Error as exc:
        raise IVDataError(f"{path}: not a readable CSV ({exc})") from None


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
