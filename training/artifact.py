"""The model artifact: one ``.xbar`` file that holds a trained network for both worlds.

A zip (stdlib ``zipfile``, no pickle anywhere) with five members:

* ``model.tflite`` — the int8 TFLite flatbuffer, the digital reference (tflite_export);
* ``quantized.json`` — the integer model (:class:`QuantizedModel`), the firmware's arithmetic;
* ``plan.json`` — the crossbar plan on the board profile's geometry (tile map, per-layer
  g_unit and input step k, biases, requantisation) and the conductance mapping it used
  (device window, read voltage, the weight steps on the device's levels);
* ``device.json`` — the :class:`DeviceModel` the plan was made for;
* ``metadata.json`` — format and version, the trainer's metadata (task, α, accuracies,
  certificate …), package versions, the TFLite check and a sha256 of every other member.

:func:`load_artifact` checks all of it (format, version, checksums, each member's schema,
that the flatbuffer, the integer model and the plan hold the same integers, that the plan
fits its geometry) and runs the flatbuffer in the LiteRT interpreter; any failure is one
:class:`ArtifactError` line saying what and what to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import numpy as np
from xbar.firmware import profiles
from xbar.training.errors import XbarError
from xbar.training.nesting import nesting_depth
from xbar.training.plan import CrossbarModel, PlanError, level_steps, snap_weights

from .devices.device_model import DeviceModel, DeviceModelError
from .quantize import QuantizedModel, QuantizedModelError, quantize_mlp
from .tflite_export import TFLiteError, agreement, export_tflite, matches, run_tflite

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ArtifactError",
    "ModelArtifact",
    "export_artifact",
    "load_artifact",
]

FORMAT = "xbar-model"
FORMAT_VERSION = 1
SUFFIX = ".xbar"
MEMBERS = ("model.tflite", "quantized.json", "plan.json", "device.json", "metadata.json")
MAX_MEMBER_BYTES = 64 << 20  # a member larger than this is not an xbar model
MAX_JSON_DEPTH = 32  # nesting of arrays/objects in a JSON member (the plan needs 4)
MIN_WINDOW = 0.01
"""Smallest share of the device's conductance window a plan may use: below it one weight
step is far below the device's level spacing and every weight programs to about g_min."""
# Read voltages: the firmware's default and hard read limits; the default read voltage
# is capped at the first.
V_READ_LIMIT: float = profiles.SAFE_DEFAULT[0]
V_READ_HARD: float = profiles.SAFE_HARD[0]
I_COMPLIANCE_HARD: float = profiles.SAFE_HARD[3]  # A, the firmware's hard compliance
G_UNIT_HARD = 1.0  # S, the largest g_unit the firmware's LOAD takes (firmware/inference.py)
MIN_AGREEMENT = 0.99  # TFLite vs integer predictions, below which export refuses
WINDOW = 0.8
"""Share of the device's conductance window the weights use (weight 127 at g_min + 0.8 ·
(g_max − g_min)). Cells differ from device to device: on an array, some cells' windows end
below the device's g_max, and a target above a cell's window costs a whole weight (write-
verify gives up; only part of the error can be moved to the partner cell). 0.8 leaves room
for a window spread of σ = 0.1 (log-normal) to 2.2 σ, so about 1 cell in 70 cannot reach
the top weight, against 1 in 2 at 1.0."""
PROBE_INPUTS = 64  # random inputs the interpreter runs on every load
RESERVED = (
    "format",
    "format_version",
    "versions",
    "checksums",
    "geometry",
    "device",
    "mapping",
    "tflite_check",
    "shape",
)
_PACKAGES = ("xbar", "numpy", "torch", "ai-edge-litert", "tflite", "flatbuffers")
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed member dates: the same model gives the same file


class ArtifactError(XbarError, ValueError):
    """A model artifact that cannot be written or read; says what and what to do."""


@dataclass
class ModelArtifact:
    """A loaded (validated) model artifact."""

    quantized: QuantizedModel
    plan: CrossbarModel | None
    geometry: dict[str, Any]
    device: DeviceModel | None
    tflite: bytes
    metadata: dict[str, Any]
    mapping: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def run_tflite(self, x: np.ndarray) -> np.ndarray:
        """int8 logits from the LiteRT interpreter (the digital reference). Float inputs are
        real values, quantised with the model's input scale; integer inputs are uint8 codes."""
        arr = np.asarray(x)
        codes = self.quantized.quantize_input(arr) if arr.dtype.kind == "f" else arr
        try:
            return run_tflite(self.tflite, codes)
        except TFLiteError as exc:
            raise ArtifactError(f"{self._where()}: {exc}") from None

    def check_geometry(
        self, arrays: int, rows: int, cols: int, board: str = "this board"
    ) -> CrossbarModel:
        """The plan, if it fits ``arrays`` arrays of ``rows`` x ``cols`` and the firmware can
        LOAD it; else ArtifactError saying what to do."""
        g = self.geometry
        built = f"{g['profile']} ({g['arrays']} x {g['rows']}x{g['cols']})"
        if self.plan is None:
            raise ArtifactError(
                f"{self._where()} has no crossbar plan (only an MLP can be placed on a "
                "crossbar); run it with its TFLite reference"
            )
        try:
            self.plan.check_geometry(arrays, rows, cols)
        except PlanError:
            raise ArtifactError(
                f"{self._where()} was planned for {built}; {board} has {arrays} x "
                f"{rows}x{cols}: use a board of profile {g['profile']} (`xbar flash "
                f"--profile {g['profile']}`, `xbar emulate --profile {g['profile']}`)"
            ) from None
        problem = self.plan.firmware_problem()
        if problem:
            raise ArtifactError(
                f"{self._where()}: the firmware cannot load this network "
                f"({problem}); train a smaller one"
            )
        return self.plan

    def _where(self) -> str:
        return str(self.path) if self.path else "model artifact"


# ---- export ------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_bytes(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, indent=1, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{what} is not plain JSON ({exc})") from None


def _check_layers(
    layers: Any, calibration: Any, input_scale: Any
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    if not isinstance(layers, list | tuple) or not layers:
        raise ArtifactError("layers: expected a non-empty list of (weight, bias) pairs")
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    for i, pair in enumerate(layers):
        try:
            w, b = (np.asarray(a, dtype=float) for a in pair)
        except (TypeError, ValueError):
            raise ArtifactError(f"layer {i}: expected a (weight, bias) pair of arrays") from None
        if w.ndim != 2 or b.shape != (w.shape[1],):
            raise ArtifactError(
                f"layer {i}: weight {w.shape} and bias {b.shape}; expected (in, out) and (out,)"
            )
        if weights and weights[-1].shape[1] != w.shape[0]:
            raise ArtifactError(
                f"layer {i}: takes {w.shape[0]} inputs, layer {i - 1} gives {weights[-1].shape[1]}"
            )
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise ArtifactError(f"layer {i}: weights or bias not finite")
        weights.append(w)
        biases.append(b)
    cal = np.asarray(calibration, dtype=float)
    if cal.ndim != 2 or cal.shape[1] != weights[0].shape[0] or not len(cal):
        raise ArtifactError(
            f"calibration: shape {cal.shape}, expected (n, {weights[0].shape[0]}) with n >= 1"
        )
    if not np.all(np.isfinite(cal)):
        raise ArtifactError("calibration: inputs not finite")
    if (
        isinstance(input_scale, bool)
        or not isinstance(input_scale, int | float)
        or not (math.isfinite(input_scale) and input_scale > 0)
    ):
        raise ArtifactError(f"input_scale = {input_scale!r}: expected a real number > 0")
    return weights, biases, cal


def _check_test(test: Any, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = (np.asarray(a) for a in test)
    except (TypeError, ValueError):
        raise ArtifactError("test: expected a pair (inputs, labels)") from None
    if x.ndim != 2 or x.shape[1] != n_in or y.shape != (len(x),) or x.dtype.kind not in "iuf":
        raise ArtifactError(
            f"test: inputs {x.shape} and labels {y.shape}; expected (n, {n_in}) and (n,)"
        )
    return x.astype(float), y


def _place(
    model: QuantizedModel,
    device: DeviceModel,
    geometry: dict[str, Any],
    v_read: float | None,
    snap: bool,
    window: float = WINDOW,
) -> tuple[QuantizedModel, CrossbarModel, dict[str, Any]]:
    """Snap the int8 weights to the device's levels (if asked) and plan the crossbar on
    the lower `window` share of the device's conductance window."""
    v = min(device.read_voltage, V_READ_LIMIT) if v_read is None else float(v_read)
    if not 0 < v <= V_READ_HARD:
        raise ArtifactError(f"v_read = {v} V: the firmware reads at 0 < V <= {V_READ_HARD} V")
    if not MIN_WINDOW <= window <= 1:
        raise ArtifactError(
            f"window = {window}: the share of the device window must be in [{MIN_WINDOW}, 1]"
        )
    g_top = device.g_min + window * (device.g_max - device.g_min)
    steps = level_steps(device.level_conductances, device.g_min, g_top)
    if snap:
        layers = [
            replace(lay, weights=snap_weights(lay.weights, steps).astype(np.int8))
            for lay in model.layers
        ]
        model = replace(model, layers=layers, metadata=dict(model.metadata))
    try:
        plan = CrossbarModel.from_layers(
            model.layers,
            arrays=geometry["arrays"],
            rows=geometry["rows"],
            cols=geometry["cols"],
            g_min=device.g_min,
            g_max=g_top,
            v_read=v,
        ).validate()
    except PlanError as exc:
        raise ArtifactError(
            f"{exc} (profile {geometry['profile']}): choose a larger profile or a smaller network"
        ) from None
    mapping = {
        "g_min": device.g_min,
        "g_max": g_top,
        "window": window,
        "v_read": v,
        "g_unit": plan.layers[0].g_unit,
        "k": plan.layers[0].k,
        "levels": "snapped" if snap else "linear",
        "level_steps": [int(s) for s in steps],
        "firmware_problem": plan.firmware_problem(),
    }
    return model, plan, mapping


def _geometry(profile: str) -> dict[str, Any]:
    """The arrays of a board profile, as the firmware lays them out."""
    try:
        g = profiles.Geometry(profile)
    except ValueError as exc:
        raise ArtifactError(
            f"{exc}: use one of {', '.join(profiles.PROFILES)} "
            "or xbar-{arrays}x{rows}x{cols}[-passive]"
        ) from None
    return {"profile": g.name, "arrays": g.arrays, "rows": g.rows, "cols": g.cols}


def export_artifact(
    path: str | Path,
    layers: list[tuple[np.ndarray, np.ndarray]],
    calibration: np.ndarray,
    *,
    input_scale: float,
    device: DeviceModel,
    profile: str,
    metadata: dict[str, Any] | None = None,
    snap_levels: bool = True,
    v_read: float | None = None,
    window: float = WINDOW,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> ModelArtifact:
    """Quantise a ReLU MLP, plan it on ``profile`` for ``device``, write the artifact.

    ``layers``: (weight (in, out), bias (out,)) pairs; ``calibration``: float inputs for the
    activation ranges; ``input_scale``: real value of one uint8 input step. With
    ``snap_levels`` every weight's conductance pair lies on the device's programmable levels
    (the int8 weights are the snapped ones, so the digital reference is what the crossbar
    computes). ``v_read``: the largest input voltage (default: the device's read voltage,
    at most the firmware's 0.3 V read limit). ``window``: the share of the device's
    conductance window the weights use (weight 127 ↔ g_min + window·(g_max − g_min); see
    :data:`WINDOW`). ``test``: float inputs and labels on which the
    int8 accuracy and the TFLite agreement are measured and recorded. Writes atomically;
    returns the artifact as :func:`load_artifact` reads it back.
    """
    weights, biases, cal = _check_layers(layers, calibration, input_scale)
    if not isinstance(device, DeviceModel):
        raise ArtifactError(f"device: expected a DeviceModel, got {type(device).__name__}")
    user = dict(metadata or {})
    clash = sorted(set(user) & set(RESERVED))
    if clash:
        raise ArtifactError(f"metadata key(s) {', '.join(clash)} are reserved for the artifact")
    geometry = _geometry(profile)
    try:
        device.validate()
        model = quantize_mlp(
            weights, biases, cal, float(input_scale), name=str(user.get("name", "mlp"))
        )
        model, plan, mapping = _place(model, device, geometry, v_read, snap_levels, window)
        tfl = export_tflite(model, description=f"xbar {model.name}")
        x_check = model.quantize_input(cal)
        checks = {"calibration": agreement(tfl, model, x_check)}
        if test is not None:
            x_test, y_test = _check_test(test, model.shape[0])
            checks["test"] = agreement(tfl, model, model.quantize_input(x_test))
            checks["test"]["int8_accuracy"] = float(np.mean(model.predict(x_test) == y_test))
    except (QuantizedModelError, DeviceModelError, TFLiteError, PlanError) as exc:
        raise ArtifactError(str(exc)) from None
    for name, check in checks.items():
        if check["predictions_equal"] < MIN_AGREEMENT:
            raise ArtifactError(
                f"the TFLite reference agrees with the integer model on only "
                f"{check['predictions_equal']:.1%} of the {name} inputs"
            )
    members = {
        "model.tflite": tfl,
        "quantized.json": _json_bytes(model.to_dict(), "the quantised model"),
        "plan.json": _json_bytes({"mapping": mapping, "crossbar": plan.to_dict()}, "the plan"),
        "device.json": _json_bytes(device.to_dict(), "the device model"),
    }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **user,
        "device": device.name,
        "geometry": geometry,
        "mapping": mapping["levels"],
        "shape": model.shape,
        "versions": _versions(),
        "tflite_check": checks,
        "checksums": {name: _sha256(data) for name, data in members.items()},
    }
    members["metadata.json"] = _json_bytes(meta, "metadata")
    _write_zip(Path(path), members)
    return load_artifact(path)


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    """Write all members to a temporary file beside ``path``, then rename it into place."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in MEMBERS:
            z.writestr(zipfile.ZipInfo(name, _ZIP_DATE), members[name], zipfile.ZIP_DEFLATED)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an artifact is for sharing
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise ArtifactError(f"{path}: cannot write ({exc.strerror or exc})") from None


# ---- load --------------------------------------------------------------------------------
def _read_members(path: Path) -> dict[str, bytes]:
    where = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist() if i.filename in MEMBERS}
            if "metadata.json" not in infos:
                raise ArtifactError(f"{where}: not an xbar model artifact (no metadata.json)")
            big = [m for m, info in infos.items() if info.file_size > MAX_MEMBER_BYTES]
            if big:
                raise ArtifactError(f"{where}: {big[0]} is larger than {MAX_MEMBER_BYTES} B")
            return {m: z.read(m) for m in infos}
    except FileNotFoundError:
        raise ArtifactError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{where}: is a folder, not a model artifact") from None
    except zipfile.BadZipFile:
        raise ArtifactError(
            f"{where}: truncated or not an xbar model artifact (not a zip archive); export it again"
        ) from None
    except (
        zipfile.LargeZipFile,
        zlib.error,  # a flipped bit in a deflated member
        NotImplementedError,  # ... in a member's compression method
        RuntimeError,  # ... in its flags (encrypted)
        EOFError,
        OSError,
        ValueError,
        UnicodeDecodeError,
    ) as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(
            f"{where}: corrupt or not an xbar model artifact ({exc}); export it again"
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _json(data: bytes, name: str, where: str) -> Any:
    """A member as strict JSON: finite numbers only (no NaN, Infinity, 1e999), nested at
    most MAX_JSON_DEPTH deep."""
    try:
        value = json.loads(data.decode(), parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ArtifactError(
            f"{where}: {name} is nested too deeply (more than {MAX_JSON_DEPTH} levels)"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ArtifactError(f"{where}: {name} is not JSON ({exc})") from None
    if nesting_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ArtifactError(
            f"{where}: {name} is nested too deeply (more than {MAX_JSON_DEPTH} levels)"
        )
    return value


def _check_metadata(meta: Any, where: str) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(
            f"{where}: not an xbar model artifact (metadata format is not {FORMAT!r})"
        )
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{where}: format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: built by a newer xbar (model format {version}; this one "
            f"reads up to {FORMAT_VERSION}); upgrade xbar"
        )
    versions = meta.get("versions")
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        raise ArtifactError(f"{where}: metadata versions is not an object of version strings")
    checks = meta.get("tflite_check", {})
    numbers = ("n", "predictions_equal", "logits_equal", "max_logit_diff")
    if not isinstance(checks, dict) or not all(
        isinstance(c, dict)
        and all(_is_number(c.get(k)) for k in numbers)
        and _is_number(c.get("int8_accuracy", 0))
        for c in checks.values()
    ):
        raise ArtifactError(f"{where}: metadata tflite_check is malformed")
    return meta


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _check_geometry(geometry: Any, where: str) -> dict[str, Any]:
    ok = (
        isinstance(geometry, dict)
        and isinstance(geometry.get("profile"), str)
        and all(
            isinstance(geometry.get(k), int) and geometry[k] >= 1
            for k in ("arrays", "rows", "cols")
        )
    )
    if not ok:
        raise ArtifactError(f"{where}: metadata geometry {geometry!r} is malformed")
    return {k: geometry[k] for k in ("profile", "arrays", "rows", "cols")}


def _same_integers(model: QuantizedModel, plan: CrossbarModel, where: str) -> None:
    if len(model.layers) != len(plan.layers):
        raise ArtifactError(
            f"{where}: the plan has {len(plan.layers)} layers, the integer "
            f"model {len(model.layers)}"
        )
    for i, (q, p) in enumerate(zip(model.layers, plan.layers, strict=True)):
        same = (
            np.array_equal(q.weights, p.weights)
            and np.array_equal(q.bias, p.bias)
            and (q.multiplier, q.shift, q.relu, q.out_min, q.out_max)
            == (p.multiplier, p.shift, p.relu, p.out_min, p.out_max)
        )
        if not same:
            raise ArtifactError(f"{where}: plan layer {i} differs from the integer model")


def _check_window(plan: CrossbarModel, device: DeviceModel | None, where: str) -> None:
    """The plan's conductances lie in the device's window (using at least MIN_WINDOW of it)
    and within the firmware's limits: 0 < g_unit <= 1 S, and the top cell read at the
    hardest read voltage draws at most the firmware's hard compliance current."""
    g_min = plan.g_min
    for li, layer in enumerate(plan.layers):
        field_ = f"{where}: plan.json layer {li} g_unit = {layer.g_unit:g} S"
        if not 0 < layer.g_unit <= G_UNIT_HARD:
            raise ArtifactError(f"{field_}: the firmware takes 0 < g_unit <= {G_UNIT_HARD} S")
        top = g_min + 127 * layer.g_unit
        current = top * V_READ_HARD
        if current > I_COMPLIANCE_HARD:
            raise ArtifactError(
                f"{field_}: weight 127 ({top:.3g} S) would draw {current:.3g} A at "
                f"{V_READ_HARD} V, above the firmware's hard compliance of "
                f"{I_COMPLIANCE_HARD:g} A; export it again"
            )
        if device is None:
            continue
        window = device.g_max - device.g_min
        slack = 1e-6 * device.g_max
        span = f"the device window {device.g_min:.4g}..{device.g_max:.4g} S of {device.name!r}"
        if g_min < device.g_min - slack or top > device.g_max + slack:
            raise ArtifactError(
                f"{field_}: weights 0..127 span {g_min:.4g}..{top:.4g} S, outside {span}; "
                "export it again"
            )
        if 127 * layer.g_unit < MIN_WINDOW * window:
            raise ArtifactError(
                f"{field_}: weights 0..127 use less than {MIN_WINDOW:.0%} of {span} "
                "(no weight step would be programmable); export it again"
            )


def load_artifact(path: str | Path) -> ModelArtifact:
    """Read and validate an artifact; raises :class:`ArtifactError` (one line)."""
    path = Path(path)
    where = str(path)
    try:
        return _load(path, where)
    except XbarError:
        raise
    except (
        KeyError,
        IndexError,
        AttributeError,
        TypeError,
        ValueError,
        OverflowError,
        RecursionError,
        MemoryError,
    ) as exc:
        raise ArtifactError(
            f"{where}: malformed model artifact ({exc!r}); export it again"
        ) from None


def _load(path: Path, where: str) -> ModelArtifact:
    members = _read_members(path)
    meta = _check_metadata(_json(members["metadata.json"], "metadata.json", where), where)
    missing = [m for m in MEMBERS if m not in members]
    if missing:
        raise ArtifactError(f"{where}: missing {', '.join(missing)}; export it again")
    sums = meta.get("checksums")
    if not isinstance(sums, dict):
        raise ArtifactError(f"{where}: metadata has no checksums")
    for name in MEMBERS[:-1]:
        if sums.get(name) != _sha256(members[name]):
            raise ArtifactError(f"{where}: {name} is corrupt (sha256 mismatch); export it again")
    geometry = _check_geometry(meta.get("geometry"), where)
    try:
        raw_model = _json(members["quantized.json"], "quantized.json", where)
        if not isinstance(raw_model, dict):
            raise ArtifactError(f"{where}: quantized.json is not an object")
        model = QuantizedModel.from_dict(raw_model)
        raw_device = _json(members["device.json"], "device.json", where)
        if raw_device is not None and not isinstance(raw_device, dict):
            raise ArtifactError(f"{where}: device.json is not an object")
        device = None if raw_device is None else DeviceModel.from_dict(raw_device)
        raw_plan = _json(members["plan.json"], "plan.json", where)
        if not isinstance(raw_plan, dict) or not {"crossbar", "mapping"} <= set(raw_plan):
            raise ArtifactError(f"{where}: plan.json is not an object with crossbar and mapping")
        mapping = raw_plan.get("mapping") or {}
        if not isinstance(mapping, dict):
            raise ArtifactError(f"{where}: plan.json mapping is not an object")
        plan = None
        if raw_plan.get("crossbar") is not None:
            plan = CrossbarModel.from_dict(raw_plan["crossbar"])
            plan.check_geometry(geometry["arrays"], geometry["rows"], geometry["cols"])
            _same_integers(model, plan, where)
            _check_window(plan, device, where)
        matches(members["model.tflite"], model)
        probe = np.random.default_rng(0).integers(0, 256, (PROBE_INPUTS, model.shape[0]))
        check = agreement(members["model.tflite"], model, probe)
    except (QuantizedModelError, DeviceModelError, PlanError, TFLiteError, TypeError) as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    if check["max_logit_diff"] > 1:
        raise ArtifactError(
            f"{where}: the TFLite model and the integer model disagree by "
            f"{check['max_logit_diff']} LSB; export it again"
        )
    return ModelArtifact(
        model, plan, geometry, device, members["model.tflite"], meta, mapping, path
    )
