"""Device models fitted from measured I–V cycles, with named presets from the published devices.

A :class:`DeviceModel` is what the rest of xbar needs to know about a memristor: the
conductance window a weight can use, the levels it can be programmed to (the mean
conductance reached at each step of the SET sweep), its cycle-to-cycle log-normal spread,
the spread between replicate devices, and the conditions it was made under. The emulator
builds its cells from one; training injects its σ as weight noise.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from xbar.training.errors import XbarError

from .ivdata import IVCurves
from .published import PublishedDevice, find_published, load_published
from .usability import UsabilityResult, analyse

SCHEMA_VERSION = 1
# The write-verify residual measured on emulated boards of each device preset
# (benchmarks/bench_write_verify.py), kept beside the devices it describes.
WRITE_VERIFY_FILE = Path(__file__).parent / "data" / "write_verify.json"
MAX_CONDUCTANCE_S = 1.0  # above it a "device" is a short circuit (memristors: nS to mS)
PULSE_MARGIN = 1.25  # DeviceModel.pulse_limit: over the largest voltage the device was measured at
BEST_PRESET = "pvk-best"
MEDIAN_PRESET = "pvk-median"
# The published best device: 1.8 µm AAO, 50 nm pores, MAPbI3 (usability 0.349).
BEST_DEVICE = (
    "1.8um_length_50nm_diameter_BT_4V_NA_third_etch_20min_Pb_ED_3h_180C_MAI_no_200nm"
    "_Ag_memory_6V_carbon_paste_no_wait"
)


class DeviceModelError(XbarError, ValueError):
    """A device model that is inconsistent; the message names the field."""


@dataclass
class DeviceModel:
    """A memristor as the emulator and the noise-aware training see it (SI units)."""

    name: str
    material: str
    g_min: float  # S, lowest mean conductance on the monotonic SET run
    g_max: float  # S, highest
    sigma_c2c: float  # σ of ln(G/ḡ): cycle-to-cycle log-normal variation
    level_voltages: list[float]  # V, SET amplitudes of the programmable levels
    level_conductances: list[float]  # S, mean conductance reached at each of them
    usability: float
    monotonicity: float
    read_voltage: float  # V, small enough not to move the state
    v_set: float  # V, SET amplitude that reaches g_max
    v_reset: float  # V (negative), RESET amplitude back to g_min
    compliance_current: float  # A, current limit of the measurement
    d2d_sigma: float | None = None  # σ of ln(ḡ) across replicate devices; None: no replicates
    conditions: dict[str, str] = field(default_factory=dict)
    source: str = ""
    schema: int = SCHEMA_VERSION

    # -- validation -----------------------------------------------------------------
    def validate(self) -> DeviceModel:
        """Raise :class:`DeviceModelError` naming the first inconsistent field."""

        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise DeviceModelError(f"device model {self.name!r}: {name} {why}")

        for name in (
            "g_min",
            "g_max",
            "sigma_c2c",
            "read_voltage",
            "v_set",
            "compliance_current",
            "usability",
            "monotonicity",
        ):
            value = getattr(self, name)
            finite = isinstance(value, int | float) and math.isfinite(value)
            need(finite, name, f"= {value!r} is not a finite number")
        need(self.g_min > 0, "g_min", f"= {self.g_min} must be > 0 S")
        need(self.g_max >= self.g_min, "g_max", f"= {self.g_max} must be >= g_min ({self.g_min})")
        need(
            self.g_max <= MAX_CONDUCTANCE_S,
            "g_max",
            f"= {self.g_max:g} S is above {MAX_CONDUCTANCE_S:g} S: a short circuit, not a "
            "memristor (are the currents in amperes and the voltages in volts?)",
        )
        need(self.sigma_c2c >= 0, "sigma_c2c", "must be >= 0")
        need(self.read_voltage > 0, "read_voltage", "must be > 0 V")
        need(self.v_set > 0, "v_set", "must be > 0 V")
        need(math.isfinite(self.v_reset) and self.v_reset < 0, "v_reset", "must be < 0 V")
        need(self.compliance_current > 0, "compliance_current", "must be > 0 A")
        need(self.monotonicity >= 0, "monotonicity", "must be >= 0")
        need(
            len(self.level_voltages) == len(self.level_conductances) >= 1,
            "level_voltages/level_conductances",
            "must be non-empty lists of equal length",
        )
        need(
            all(math.isfinite(v) and v > 0 for v in self.level_voltages),
            "level_voltages",
            "must be finite and > 0 V",
        )
        need(
            all(math.isfinite(g) and 0 < g <= MAX_CONDUCTANCE_S for g in self.level_conductances),
            "level_conductances",
            f"must be finite and in (0, {MAX_CONDUCTANCE_S:g}] S",
        )
        need(
            self.d2d_sigma is None or (math.isfinite(self.d2d_sigma) and self.d2d_sigma >= 0),
            "d2d_sigma",
            "must be None or a finite number >= 0",
        )
        need(self.schema == SCHEMA_VERSION, "schema", f"= {self.schema} is not {SCHEMA_VERSION}")
        return self

    @property
    def pulse_limit(self) -> float:
        """Largest cell voltage (V) a pulse may put on this device: a quarter above the
        largest its own measurement applied (v_set, |v_reset|, the levels), which it
        survived. The margin lets write-verify push cells slower than the mean device;
        it stays below the 1.6x hard breakdown the emulator's physics assume
        (emulator/cells.py, breakdown_factor). `xbar program` lowers the board's line
        limit to half of it (a pulse puts +-V/2 on two lines)."""
        return PULSE_MARGIN * max(self.v_set, abs(self.v_reset), *self.level_voltages)

    # -- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceModel:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DeviceModelError(f"device model: unknown field(s) {', '.join(unknown)}")
        try:
            model = cls(**data)
        except TypeError as exc:
            raise DeviceModelError(f"device model: {exc}") from None
        return model.validate()

    @classmethod
    def from_json(cls, text: str) -> DeviceModel:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DeviceModelError(f"device model: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DeviceModelError("device model: JSON must be an object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> DeviceModel:
        return cls.from_json(Path(path).read_text())

    # -- presets -------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> DeviceModel:
        """``pvk-best``, ``pvk-median``, or any published device by stem or id (``pvk-07``)."""
        if name == BEST_PRESET:
            return _published_model(BEST_DEVICE, preset=BEST_PRESET)
        if name == MEDIAN_PRESET:
            return _published_model(median_sigma_device().name, preset=MEDIAN_PRESET)
        try:
            return _published_model(find_published(name).name)
        except KeyError as exc:
            raise DeviceModelError(
                f"no device preset {name!r}: use {BEST_PRESET}, {MEDIAN_PRESET}, or a device "
                "id or name from `xbar devices list`"
            ) from exc

    def write_verify(self) -> dict[str, Any]:
        """What write-verify leaves on emulated boards of this device, per tolerance in
        weight steps (``{"0.5": {"residual_sigma_steps": …, …}}`` plus how it was
        measured); empty if it was not measured."""
        return write_verify_measurements(self.name)

    @staticmethod
    def preset_names() -> list[str]:
        return [BEST_PRESET, MEDIAN_PRESET] + [d.name for d in load_published()]


def fit(
    curves: IVCurves,
    conditions: dict[str, str] | None = None,
    material: str = "",
    compliance_current: float | None = None,
    d2d_sigma: float | None = None,
    name: str | None = None,
) -> tuple[DeviceModel, UsabilityResult]:
    """Fit a device model from one device's cycles; returns it with the usability analysis."""
    result = analyse(curves)
    run = slice(result.start, result.end + 1)
    volts, levels = result.voltage[run], result.mean_conductance[run]
    keep = np.isfinite(volts) & np.isfinite(levels) & (levels > 0)
    if not keep.any():
        raise DeviceModelError(
            f"{curves.source or curves.name}: no positive conductance on the monotonic run; "
            "the rising sweep has no usable data"
        )
    volts, levels = volts[keep], levels[keep]
    negative = curves.voltage[np.isfinite(curves.voltage) & (curves.voltage < 0)]
    positive = curves.voltage[np.isfinite(curves.voltage) & (curves.voltage > 0)]
    if compliance_current is None:
        finite = np.abs(curves.current[np.isfinite(curves.current)])
        compliance_current = float(finite.max()) if finite.size and finite.max() > 0 else 1e-3
    model = DeviceModel(
        name=name or curves.name,
        material=material,
        g_min=float(levels.min()),
        g_max=float(levels.max()),
        sigma_c2c=result.sigma if math.isfinite(result.sigma) else 0.0,
        level_voltages=[float(v) for v in volts],
        level_conductances=[float(g) for g in levels],
        usability=result.usability if math.isfinite(result.usability) else 0.0,
        monotonicity=result.monotonicity,
        read_voltage=float(positive.min()),
        v_set=float(volts[int(np.argmax(levels))]),
        v_reset=float(negative.min()) if negative.size else -float(positive.max()),
        compliance_current=float(compliance_current),
        d2d_sigma=d2d_sigma,
        conditions=dict(conditions or {}),
        source=curves.source,
    )
    return model.validate(), result


def _log_mean_level(device: PublishedDevice) -> float:
    result = analyse(device.curves)
    levels = result.mean_conductance[result.start : result.end + 1]
    levels = levels[np.isfinite(levels) & (levels > 0)]
    return float(np.mean(np.log(levels))) if levels.size else math.nan


def replicate_spread(device: PublishedDevice) -> float | None:
    """σ of the mean log-level across devices made under the same fabrication conditions."""
    group = [d for d in load_published() if d.fabrication == device.fabrication]
    values = [v for v in (_log_mean_level(d) for d in group) if math.isfinite(v)]
    if len(values) < 2:
        return None
    return float(statistics.pstdev(values))


def median_sigma_device() -> PublishedDevice:
    """The published device whose σ is the median of all of them."""
    ranked = sorted(load_published(), key=lambda d: analyse(d.curves).sigma)
    return ranked[len(ranked) // 2]


def fit_published(device: PublishedDevice, name: str | None = None) -> DeviceModel:
    compliance = float(device.conditions.get("compliance_current") or "nan")
    model, _ = fit(
        device.curves,
        conditions=device.conditions,
        material=device.material,
        compliance_current=compliance if math.isfinite(compliance) and compliance > 0 else None,
        d2d_sigma=replicate_spread(device),
        name=name,
    )
    return model


_CACHE: dict[tuple[str, str | None], DeviceModel] = {}


def _published_model(stem: str, preset: str | None = None) -> DeviceModel:
    key = (stem, preset)
    if key not in _CACHE:
        _CACHE[key] = fit_published(find_published(stem), name=preset)
    # Callers may tweak their copy; the cache stays pristine.
    return DeviceModel.from_dict(json.loads(_CACHE[key].to_json()))


def write_verify_measurements(name: str) -> dict[str, Any]:
    """The stored write-verify measurement of the device (preset) ``name``, or {}."""
    if not WRITE_VERIFY_FILE.exists():
        return {}
    try:
        data = json.loads(WRITE_VERIFY_FILE.read_text())
    except json.JSONDecodeError as exc:
        raise DeviceModelError(f"{WRITE_VERIFY_FILE}: not JSON ({exc})") from None
    entry = data.get(name, {}) if isinstance(data, dict) else {}
    return dict(entry) if isinstance(entry, dict) else {}
