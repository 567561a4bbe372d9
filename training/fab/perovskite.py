"""The 43 published devices as campaign experiments: their conditions in the units of
``campaigns/perovskite.toml`` (package data beside this module), so they can be ingested
as past experiments or serve as the pool of the replay benchmark."""

from __future__ import annotations

import csv
import re
from importlib import resources
from pathlib import Path
from typing import Any

from xbar.training.devices.published import PublishedDevice, load_published

from .spec import Spec

# Package data: an installed wheel reads its own copy through importlib.resources.
SPEC_PATH = Path(str(resources.files(__package__) / "campaigns" / "perovskite.toml"))


def _number(text: str, unit: str) -> float:
    """'0.7um' -> 0.7; 'NA' (not applied) -> 0."""
    if text.strip().upper() == "NA":
        return 0.0
    match = re.fullmatch(rf"\s*([0-9.eE+-]+)\s*{unit}\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a number in {unit}")
    return float(match.group(1))


def device_values(device: PublishedDevice) -> dict[str, Any]:
    """One device's conditions as campaign parameter values (perovskite spec units)."""
    c = device.conditions
    return {
        "aao_length": _number(c["aao_length"], "um"),
        "aao_diameter": _number(c["aao_diameter"], "nm"),
        "bt_voltage": _number(c["bt_voltage"], "V"),
        "bt_time": int(_number(c["bt_time"], "s")),
        "third_etch": _number(c["third_etch"], "min"),
        "pb_ed": _number(c["pb_ed"], "h"),
        "material": device.material,
        "cvd_temperature": c["cvd_temperature"].removesuffix("C"),
        "pmma": "yes" if c["pmma"].upper() == "PMMA" else "no",
        "ag_thickness": _number(c["ag_thickness"], "nm"),
        "sweep_voltage": _number(c["running_bias"], "V"),
        "contact": c["contact"],
        "compliance_current": float(c["compliance_current"]),
        "wait": c["wait"],
    }


def published_experiments(spec: Spec) -> list[tuple[PublishedDevice, dict[str, Any]]]:
    """Every published device with its values, checked against ``spec``."""
    return [(d, spec.check_values(device_values(d), d.short_id)) for d in load_published()]


def write_past_sheet(path: str | Path, spec: Spec, devices: slice = slice(None)) -> Path:
    """The published devices as a results sheet of past experiments, ready for `xbar fab
    ingest`: blank experiment ids (the store numbers them), every parameter, and the
    authors' usability."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", *spec.names, "usability"])
        for device, values in published_experiments(spec)[devices]:
            writer.writerow(["", *(values[n] for n in spec.names), device.published["usability"]])
    return path
