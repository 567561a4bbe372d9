"""What a model artifact holds (``xbar model show``), and proof that its TFLite reference
runs in the LiteRT interpreter and agrees with its integer model (``xbar model check``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from xbar.firmware.profiles import DAC_LSB
from xbar.training.artifact import (
    MIN_AGREEMENT,
    RESERVED,
    ArtifactError,
    ModelArtifact,
    load_artifact,
)
from xbar.training.tflite_export import TFLiteError, agreement


# ---- show --------------------------------------------------------------------------------
def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e-9, "n"), (1e-6, "µ"), (1e-3, "m")):
        if abs(value) < factor * 1000:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def describe(art: ModelArtifact) -> list[str]:
    """The lines of ``xbar model show``."""
    meta, q = art.metadata, art.quantized
    lines = [
        f"model     {q.name} ({'-'.join(map(str, q.shape))}), format "
        f"{meta['format_version']}, xbar {meta['versions'].get('xbar', '?')}"
    ]
    if art.device is not None:
        d = art.device
        lines.append(
            f"device    {d.name}: window {_si(d.g_min, 'S')} – {_si(d.g_max, 'S')}, "
            f"{len(d.level_conductances)} levels, σ {d.sigma_c2c:.3f}"
        )
    g = art.geometry
    if art.plan is None:
        lines.append(f"plan      none (for {g['profile']}): runs as TFLite only")
    else:
        m, plan = art.mapping, art.plan
        cells = sum(len(c) for c in plan.targets().values())
        tiles = sum(len(layer.tiles) for layer in plan.layers)
        lines.append(
            f"plan      {g['profile']} ({g['arrays']} x {g['rows']}x{g['cols']}): "
            f"{len(plan.layers)} layers, {tiles} tiles, {cells} cells"
        )
        lines.append(
            f"mapping   G± = g_min + max(±w, 0)·g_unit, g_unit "
            f"{_si(plan.layers[0].g_unit, 'S')}; inputs up to "
            f"{_si(255 * plan.layers[0].k * DAC_LSB, 'V')} (k = "
            f"{plan.layers[0].k}); weights {m.get('levels', '?')}"
            + (f" to {len(m['level_steps'])} level steps" if m.get("levels") == "snapped" else "")
        )
        problem = m.get("firmware_problem")
        lines.append(f"firmware  {'cannot load it: ' + problem if problem else 'loadable'}")
    checks = meta.get("tflite_check", {})
    for name, c in checks.items():
        acc = f", int8 accuracy {c['int8_accuracy']:.3f}" if "int8_accuracy" in c else ""
        lines.append(
            f"tflite    {name}: {c['predictions_equal']:.1%} of {c['n']} predictions "
            f"equal, {c['logits_equal']:.1%} logits equal, max Δ {c['max_logit_diff']}"
            f"{acc}"
        )
    lines.append(f"tflite    {len(art.tflite)} B, LiteRT reference kernels")
    lines += _accuracy_lines(meta)
    for key, value in meta.items():
        if key not in RESERVED and key not in _SHOWN:
            lines.append(f"{key:<9} {json.dumps(value)}")
    lines.append("versions  " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    return lines


_SHOWN = (
    "program",
    "accuracy_on_board",
    "accuracy_certificate",
    "certificate",
    "clean_test_accuracy",
    "test_accuracy_at_device",
    "test_accuracy_at_device_interval",
)


def _interval(d: dict[str, Any]) -> str:
    from xbar.training.stats import Interval, format_interval

    iv = Interval(d["mean"], d["low"], d["high"], d["n"], d.get("unit", "draws"))
    return f"{format_interval(iv)} (95 % interval over {d['n']} {iv.unit})"


def _accuracy_lines(meta: dict[str, Any]) -> list[str]:
    """The scheme trained for, the accuracy under it with its interval, the statistical
    certificate, and Theorem 1's radius with why it is vacuous when it is."""
    lines = []
    program = meta.get("program")
    if isinstance(program, dict):
        lines.append(f"program   {program.get('scheme')}: {program.get('label', '')}")
        if "residual_source" in program:
            lines.append(f"          residual {program['residual_source']}")
    board = meta.get("accuracy_on_board")
    method = meta.get("method")
    if isinstance(board, dict) and isinstance(board.get(method), dict):
        lines.append(f"accuracy  {_interval(board[method])} under {board.get('noise_model')}")
        for name, d in board.items():
            if name != method and isinstance(d, dict) and "mean" in d:
                lines.append(f"          baseline {name}: {_interval(d)}")
    paper = meta.get("test_accuracy_at_device_interval")
    if isinstance(paper, dict):
        sigma = meta.get("sigma")
        at = f" at σ {sigma:.3f}" if isinstance(sigma, int | float) else ""
        lines.append(f"paper     {_interval(paper)} under w·exp(ε){at}")
    if isinstance(meta.get("clean_test_accuracy"), int | float):
        lines.append(f"clean     {meta['clean_test_accuracy']:.3f} (no noise)")
    cert = meta.get("accuracy_certificate")
    if isinstance(cert, dict):
        lines.append(
            f"certified accuracy >= {cert['lower_bound']:.3f} with {cert['level']:.0%} "
            f"confidence under {cert['noise_model']} ({cert['method']}; {cert['draws']} "
            f"draws x {cert['inputs']} test inputs)"
        )
    th = meta.get("certificate")
    if isinstance(th, dict) and "radius" in th:
        note = (
            " — vacuous: " + str(th.get("why_vacuous", "the robustness set is empty"))
            if th["radius"] < 0
            else ""
        )
        lines.append(f"theorem 1 radius {th['radius']:.3g} (median f {th['f_median']:.3f}){note}")
    return lines


def show(artifact: str, as_json: bool = False) -> None:
    art = load_artifact(artifact)
    if as_json:
        print(json.dumps({"metadata": art.metadata, "mapping": art.mapping}, indent=2))
    else:
        print("\n".join(describe(art)))


# ---- check -------------------------------------------------------------------------------
def _read_array(path: str, what: str) -> np.ndarray:
    p = Path(path)
    try:
        if p.suffix == ".npy":
            return np.asarray(np.load(p, allow_pickle=False))
        return np.loadtxt(p, delimiter=",", ndmin=1)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read {what} ({exc})") from None


def _task_inputs(art: ModelArtifact, seed: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    from xbar.training.tasks import TASKS, load_task

    name = art.metadata.get("task", "digits")
    if seed is None:
        seed = int(art.metadata.get("split_seed", art.metadata.get("seed", 0)))
    if name not in TASKS:
        raise ArtifactError(f"task {name!r} is not bundled: pass --inputs")
    task = load_task(name, seed)
    if task.n_features != art.quantized.shape[0]:
        raise ArtifactError(
            f"the {name} task has {task.n_features} features, the model takes "
            f"{art.quantized.shape[0]}: pass --inputs"
        )
    return task.x_test, task.y_test, f"{name} test set, seed {seed}"


def check(
    artifact: str,
    inputs: str | None = None,
    codes: bool = False,
    labels: str | None = None,
    seed: int | None = None,
) -> None:
    """Run model.tflite in LiteRT and compare it with the integer model; an
    ArtifactError if fewer than MIN_AGREEMENT of the predictions agree."""
    art = load_artifact(artifact)
    if inputs:
        x, source = _read_array(inputs, "inputs"), inputs
        y = _read_array(labels, "labels") if labels else None
    else:
        x, y, source = _task_inputs(art, seed)
    x = np.atleast_2d(x)
    if y is not None and len(y) != len(x):
        raise ArtifactError(f"{len(y)} labels for {len(x)} inputs")
    if codes and not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 255):
        raise ArtifactError(f"{inputs}: --codes inputs must be integers 0..255")
    q = x.astype(np.int64) if codes else art.quantized.quantize_input(x)
    try:
        result: dict[str, Any] = agreement(art.tflite, art.quantized, q)
    except TFLiteError as exc:
        raise ArtifactError(f"{artifact}: {exc}") from None
    print(f"{artifact}: model.tflite ran in LiteRT on {result['n']} inputs ({source})")
    print(
        f"predictions equal {result['predictions_equal']:.2%}, logits equal "
        f"{result['logits_equal']:.2%}, max |Δ logit| {result['max_logit_diff']} LSB"
    )
    if y is not None:
        tfl = art.run_tflite(q).argmax(1)
        ref = art.quantized.forward(q).argmax(1)
        print(f"accuracy: TFLite {np.mean(tfl == y):.4f}, integer model {np.mean(ref == y):.4f}")
    if result["predictions_equal"] < MIN_AGREEMENT:
        raise ArtifactError(f"fewer than {MIN_AGREEMENT:.0%} of the predictions agree")
