"""The bundled dataset: 43 published perovskite memristors, their conditions and results.

Package data beside this module: ``data/devices.npz`` holds each device's sweep
(``<stem>.voltage``, ``<stem>.current``) and ``data/devices.csv`` its fabrication and
measurement conditions with the authors' own figures (σ, monotonicity, usability, LeNet
accuracy). :func:`build_published_dataset` regenerates both from the authors' spreadsheets;
everything else reads the project copy.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .ivdata import IVCurves, IVDataError, device_stem, read_iv

# Package data: found through importlib.resources, so an installed wheel reads its own copy.
DATA_DIR = Path(str(resources.files(__package__) / "data"))
NPZ_NAME = "devices.npz"
CSV_NAME = "devices.csv"

# Source column in devices.xlsx -> column in devices.csv. Three source headers are shifted
# by one against their contents, as the file names show ("…_BT_4V_NA_third_etch_20min_
# Pb_ED_3h_180C…"): "third etch" holds the barrier-thinning time, "Pb ED" the third-etch
# time and "CVD time (min)" the Pb electrodeposition time. The CSV names what they hold.
CONDITION_COLUMNS = {
    "AAO length": "aao_length",
    "AAO diameter": "aao_diameter",
    "BT voltage": "bt_voltage",
    "third etch": "bt_time",
    "Pb ED": "third_etch",
    "CVD time (min)": "pb_ed",
    "CVD temperature (C)": "cvd_temperature",
    "material": "material",
    "PMMA": "pmma",
    "Ag thickness": "ag_thickness",
    "running bias": "running_bias",
    "contact type": "contact",
    "wait between cyles": "wait",
    "compliance current": "compliance_current",
}
RESULT_COLUMNS = {
    "sigma": "sigma",
    "monotonicity": "monotonicity",
    "usability_updated": "usability",
    "lenet mnist": "lenet_mnist",
}
# Conditions that describe how a device was made (not how it was measured): devices that
# share them are replicates, whose spread gives the device-to-device variation.
FABRICATION_KEYS = (
    "aao_length",
    "aao_diameter",
    "bt_voltage",
    "bt_time",
    "third_etch",
    "pb_ed",
    "cvd_temperature",
    "material",
    "pmma",
    "ag_thickness",
)
# CVD precursor named in the conditions -> the perovskite it converts lead into.
MATERIALS = {"MAI": "MAPbI3", "MABr": "MAPbBr3", "FAI": "FAPbI3", "CsPbI3": "CsPbI3"}


@dataclass(frozen=True)
class PublishedDevice:
    """One device of the published dataset: sweep, conditions and the authors' figures."""

    curves: IVCurves
    index: int  # position in file-name order; gives the short id pvk-01 … pvk-43
    file_name: str
    conditions: dict[str, str]
    published: dict[str, float]

    @property
    def name(self) -> str:
        return self.curves.name

    @property
    def short_id(self) -> str:
        return f"pvk-{self.index + 1:02d}"

    @property
    def material(self) -> str:
        precursor = self.conditions.get("material", "")
        return MATERIALS.get(precursor, precursor)

    @property
    def fabrication(self) -> tuple[str, ...]:
        return tuple(self.conditions.get(k, "") for k in FABRICATION_KEYS)


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def build_published_dataset(source: str | Path, out_dir: str | Path = DATA_DIR) -> list[str]:
    """Convert the authors' spreadsheets (``devices.xlsx`` + ``iv/*.xlsx``) into the
    project's compact NPZ + CSV. Everything is read and checked before a file is written."""
    import openpyxl

    source, out_dir = Path(source), Path(out_dir)
    book = openpyxl.load_workbook(source / "devices.xlsx", read_only=True, data_only=True)
    rows = book.active.iter_rows(values_only=True) if book.active else iter(())
    header = [_text(h) for h in next(rows)]
    table: dict[str, dict[str, object]] = {}
    for row in rows:
        if row and row[0]:
            table[_text(row[0])] = dict(zip(header, row, strict=False))
    book.close()

    arrays: dict[str, np.ndarray] = {}
    records: list[dict[str, str]] = []
    for path in sorted((source / "iv").glob("*.xlsx")):
        if path.name not in table:
            raise IVDataError(f"{path}: no row for this file in {source / 'devices.xlsx'}")
        curves = read_iv(path)
        arrays[f"{curves.name}.voltage"] = curves.voltage
        arrays[f"{curves.name}.current"] = curves.current
        entry = table[path.name]
        record = {"name": curves.name, "file_name": path.name}
        record.update({new: _text(entry.get(old)) for old, new in CONDITION_COLUMNS.items()})
        record.update({new: repr(float(entry[old])) for old, new in RESULT_COLUMNS.items()})  # type: ignore[arg-type]
        records.append(record)

    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / NPZ_NAME, allow_pickle=False, **arrays)
    with (out_dir / CSV_NAME).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    load_published.cache_clear()
    return [r["name"] for r in records]


@functools.cache
def load_published(data_dir: Path = DATA_DIR) -> tuple[PublishedDevice, ...]:
    """All published devices from the project's copy, in file-name order."""
    npz_path, csv_path = data_dir / NPZ_NAME, data_dir / CSV_NAME
    for path in (npz_path, csv_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the bundled device dataset is missing")
    with csv_path.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    devices = []
    with np.load(npz_path) as arrays:
        for index, record in enumerate(records):
            name = record["name"]
            curves = IVCurves(
                name=name,
                voltage=arrays[f"{name}.voltage"],
                current=arrays[f"{name}.current"],
                source=f"{npz_path.name}:{name}",
            )
            conditions = {v: record[v] for v in CONDITION_COLUMNS.values()}
            published = {v: float(record[v]) for v in RESULT_COLUMNS.values()}
            devices.append(
                PublishedDevice(curves, index, record["file_name"], conditions, published)
            )
    return tuple(devices)


def find_published(name: str) -> PublishedDevice:
    """A published device by stem, full file name or short id (pvk-07); the error lists
    close matches."""
    stem = device_stem(name)
    devices = load_published()
    for device in devices:
        if stem in (device.name, device.short_id):
            return device
    close = [d.name for d in devices if stem.lower() in d.name.lower()]
    hint = f"; did you mean: {', '.join(close[:3])}" if close else ""
    raise KeyError(f"no published device named {name!r}{hint}")
