"""Integer (int8) models: post-training quantisation and the exact integer forward pass.

A :class:`QuantizedModel` is the digital reference of what the crossbar computes: uint8
activations, int8 weights, int32 biases, and a requantisation ``(multiplier, shift)`` per
layer, with the same rounding as the firmware (``xbar.firmware.quant``). The demo network
is an MLP on scikit-learn's bundled 8×8 digits (64-64-64-10), which needs no download.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xbar.training.errors import XbarError

from .requant import requant

ACT_MIN, ACT_MAX = 0, 255  # hidden activations: uint8 after ReLU
OUT_MIN, OUT_MAX = -128, 127  # last layer: int8 logits
MULT_BITS = 16  # multiplier in [2^15, 2^16): fits the firmware's 16-bit mulshift
SHIFT_LIMIT = 48  # shifts 0..47: the firmware's requantisation (firmware/quant.py)
INT32_MAX = 2**31 - 1  # biases are int32


class QuantizedModelError(XbarError, ValueError):
    """An inconsistent or unreadable quantised model; the message says which layer/field."""


@dataclass
class QuantLayer:
    """One fully connected layer in integers: ``y = clamp(round(acc·M / 2^shift))``."""

    weights: np.ndarray  # int8, (out, in)
    bias: np.ndarray  # int32, (out,)
    multiplier: int
    shift: int
    relu: bool
    out_min: int
    out_max: int
    weight_scale: float  # real weight = weight_scale × int weight
    in_scale: float  # real input = in_scale × int input
    out_scale: float  # real output = out_scale × int output

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Exact integer forward of a batch ``x`` (n, in) → (n, out), as the firmware does."""
        return requant(
            self.accumulators(x), self.multiplier, self.shift, self.out_min, self.out_max, self.relu
        )

    def accumulators(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.int64) @ self.weights.T.astype(np.int64) + self.bias.astype(np.int64)


def fixed_point(real: float, bits: int = MULT_BITS) -> tuple[int, int]:
    """(M, shift) with M in [2^(bits−1), 2^bits) and M / 2^shift ≈ real (real > 0)."""
    if not real > 0 or not math.isfinite(real):
        raise QuantizedModelError(f"requantisation scale {real!r} must be a finite number > 0")
    shift = bits - 1 - math.floor(math.log2(real))
    if shift >= SHIFT_LIMIT:
        raise QuantizedModelError(
            f"requantisation scale {real!r} is too small (shift {shift}; the firmware "
            f"shifts by at most {SHIFT_LIMIT - 1}): the weights or activations span too "
            "many orders of magnitude"
        )
    multiplier = round(real * 2.0**shift)
    if multiplier >= 1 << bits:  # rounding reached the next power of two
        multiplier, shift = multiplier >> 1, shift - 1
    if shift < 0:
        raise QuantizedModelError(f"requantisation scale {real!r} is too large")
    return multiplier, shift


@dataclass
class QuantizedModel:
    """An int8 MLP: inputs quantised with ``input_scale``, layers in integers."""

    layers: list[QuantLayer]
    input_scale: float
    name: str = "model"
    metadata: dict[str, Any] = field(default_factory=dict)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(np.asarray(x) / self.input_scale), ACT_MIN, ACT_MAX).astype(
            np.int64
        )

    def forward(self, x_q: np.ndarray) -> np.ndarray:
        """Integer logits for a batch of quantised inputs."""
        y = np.atleast_2d(np.asarray(x_q, dtype=np.int64))
        for layer in self.layers:
            y = layer.forward(y)
        return y

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.forward(self.quantize_input(x)), axis=1)

    @property
    def shape(self) -> list[int]:
        return [self.layers[0].weights.shape[1]] + [lay.weights.shape[0] for lay in self.layers]

    # -- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_scale": self.input_scale,
            "metadata": self.metadata,
            "layers": [
                {
                    "weights": lay.weights.astype(int).tolist(),
                    "bias": lay.bias.astype(int).tolist(),
                    "multiplier": lay.multiplier,
                    "shift": lay.shift,
                    "relu": lay.relu,
                    "out_min": lay.out_min,
                    "out_max": lay.out_max,
                    "weight_scale": lay.weight_scale,
                    "in_scale": lay.in_scale,
                    "out_scale": lay.out_scale,
                }
                for lay in self.layers
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizedModel:
        try:
            layers: list[QuantLayer] = []
            if not data["layers"]:
                raise QuantizedModelError("quantised model: no layers")
            for i, raw in enumerate(data["layers"]):
                try:
                    w = np.asarray(raw["weights"], dtype=np.int64)
                    b = np.asarray(raw["bias"], dtype=np.int64)
                except (TypeError, ValueError, OverflowError):
                    raise QuantizedModelError(
                        f"layer {i}: weights and bias must be arrays of integers"
                    ) from None
                if w.ndim != 2 or b.shape != (w.shape[0],) or w.size == 0:
                    raise QuantizedModelError(f"layer {i}: weights {w.shape} and bias {b.shape}")
                if w.min(initial=0) < -128 or w.max(initial=0) > 127:
                    raise QuantizedModelError(f"layer {i}: weights outside int8")
                if b.min(initial=0) < -INT32_MAX - 1 or b.max(initial=0) > INT32_MAX:
                    raise QuantizedModelError(f"layer {i}: bias outside int32")
                for key in ("weight_scale", "in_scale", "out_scale"):
                    _positive(raw[key], f"layer {i}: {key}")
                if not 1 <= int(raw["multiplier"]) < 1 << MULT_BITS:
                    raise QuantizedModelError(
                        f"layer {i}: multiplier = {raw['multiplier']!r} outside "
                        f"1..{(1 << MULT_BITS) - 1}"
                    )
                if not 0 <= int(raw["shift"]) < SHIFT_LIMIT:
                    raise QuantizedModelError(
                        f"layer {i}: shift = {raw['shift']!r} outside 0..{SHIFT_LIMIT - 1}"
                    )
                if layers and layers[-1].weights.shape[0] != w.shape[1]:
                    given = layers[-1].weights.shape[0]
                    raise QuantizedModelError(
                        f"layer {i}: takes {w.shape[1]} inputs, previous layer gives {given}"
                    )
                layers.append(
                    QuantLayer(
                        w.astype(np.int8),
                        b.astype(np.int32),
                        int(raw["multiplier"]),
                        int(raw["shift"]),
                        bool(raw["relu"]),
                        int(raw["out_min"]),
                        int(raw["out_max"]),
                        float(raw["weight_scale"]),
                        float(raw["in_scale"]),
                        float(raw["out_scale"]),
                    )
                )
            return cls(
                layers,
                _positive(data["input_scale"], "input_scale"),
                str(data.get("name", "model")),
                dict(data.get("metadata", {})),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, QuantizedModelError):
                raise
            raise QuantizedModelError(f"quantised model: missing or bad field ({exc})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> QuantizedModel:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise QuantizedModelError(f"{path}: not JSON ({exc})") from None
        return cls.from_dict(data)


def _positive(value: Any, what: str) -> float:
    """A scale from a file: a finite number > 0 (not NaN, inf, 0, a string, true)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise QuantizedModelError(f"quantised model: {what} = {value!r} is not a finite number > 0")
    return float(value)


def _finite(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise QuantizedModelError(f"{what}: not finite (inf or NaN)")


def quantize_mlp(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    calibration: np.ndarray,
    input_scale: float,
    name: str = "mlp",
) -> QuantizedModel:
    """Post-training quantisation of a ReLU MLP (weights as (in, out), sklearn's layout).

    Per-layer symmetric int8 weights; hidden activation scales from the calibration set's
    largest activation, so uint8 covers it; the output layer keeps int8 logits.
    """
    layers: list[QuantLayer] = []
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise QuantizedModelError(f"input_scale = {input_scale!r}: expected a finite number > 0")
    in_scale = input_scale
    h = np.asarray(calibration, dtype=float)
    _finite(h, "calibration inputs")
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        w, b = np.asarray(w, dtype=float), np.asarray(b, dtype=float)
        _finite(w, f"layer {i} weights")
        _finite(b, f"layer {i} bias")
        w_scale = float(np.abs(w).max()) / 127 or 1.0
        w_q = np.clip(np.round(w.T / w_scale), -127, 127).astype(np.int8)
        with np.errstate(over="ignore", invalid="ignore"):
            b_real = np.round(b / (w_scale * in_scale))
            h = h @ w + b
        if not np.all(np.abs(b_real) <= INT32_MAX):
            raise QuantizedModelError(
                f"layer {i} bias: {float(np.abs(b).max()):.3g} is beyond int32 at the weight "
                f"and input scales ({w_scale:.3g}, {in_scale:.3g}); scale the network down"
            )
        if not np.all(np.isfinite(h)):
            raise QuantizedModelError(
                f"layer {i}: the calibration activations overflow (weights up to "
                f"{float(np.abs(w).max()):.3g}); scale the network down"
            )
        b_q = b_real.astype(np.int32)
        if i < last:
            h = np.maximum(h, 0)
            out_scale = float(h.max()) / ACT_MAX or 1.0
            lo, hi, relu = ACT_MIN, ACT_MAX, True
        else:
            out_scale = float(np.abs(h).max()) / OUT_MAX or 1.0
            lo, hi, relu = OUT_MIN, OUT_MAX, False
        try:
            multiplier, shift = fixed_point(w_scale * in_scale / out_scale)
        except QuantizedModelError as exc:
            raise QuantizedModelError(f"layer {i}: {exc}") from None
        layers.append(
            QuantLayer(w_q, b_q, multiplier, shift, relu, lo, hi, w_scale, in_scale, out_scale)
        )
        in_scale = out_scale
    return QuantizedModel(layers, input_scale, name)


def digits_mlp(hidden: tuple[int, ...] = (64, 64), seed: int = 0) -> tuple[QuantizedModel, dict]:
    """Train the demo MLP on the bundled digits and quantise it.

    Returns the model and a dict with the held-out test set (``x_test`` float pixels 0–16,
    ``x_test_q`` uint8 inputs, ``y_test``) and the float and int8 test accuracies.
    """
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )
    clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=400, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train / 16.0, y_train)
    # Pixels are 0..16; inputs are fed as x/16 in [0, 1], quantised to uint8 with scale 1/255.
    model = quantize_mlp(
        clf.coefs_,
        clf.intercepts_,
        x_train / 16.0,
        input_scale=1 / 255,
        name=f"digits-mlp-{'-'.join(map(str, (64, *hidden, 10)))}",
    )
    float_acc = float(clf.score(x_test / 16.0, y_test))
    int8_acc = float(np.mean(model.predict(x_test / 16.0) == y_test))
    model.metadata.update(
        {
            "dataset": "sklearn digits",
            "seed": seed,
            "float_accuracy": float_acc,
            "int8_accuracy": int8_acc,
        }
    )
    return model, {
        "x_test": x_test,
        "x_test_q": model.quantize_input(x_test / 16.0),
        "y_test": y_test,
        "float_accuracy": float_acc,
        "int8_accuracy": int8_acc,
    }
