"""The int8 TFLite export: it runs in the LiteRT interpreter and computes the integer
model's arithmetic (the same multipliers bit for bit, the same rounding but for negative
exact halves), and its reader refuses what is not such a model."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
import pytest
from xbar.training.quantize import QuantizedModel, QuantLayer, quantize_mlp
from xbar.training.requant import mulshift
from xbar.training.tflite_export import (
    TFLiteError,
    agreement,
    exact_scales,
    export_tflite,
    matches,
    read_tflite,
    run_tflite,
    tflite_multiplier,
)


@functools.cache
def digits_layers(seed: int = 0) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """A 64-64-64-10 ReLU MLP for the bundled digits in milliseconds: two random ReLU layers
    and a least-squares readout (sklearn's layout: weights (in, out)). Inputs are x/16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0,
        digits.target,
        test_size=0.25,
        random_state=seed,
        stratify=digits.target,
    )
    rng = np.random.default_rng(seed)
    layers, h = [], x_train
    for _ in range(2):
        w = rng.normal(0, np.sqrt(2 / h.shape[1]), (h.shape[1], 64))
        b = rng.normal(0, 0.1, 64)
        layers.append((w, b))
        h = np.maximum(h @ w + b, 0)
    design = np.hstack([h, np.ones((len(h), 1))])
    onehot = np.eye(10)[y_train]
    sol = np.linalg.solve(design.T @ design + 1e-2 * np.eye(65), design.T @ onehot)
    layers.append((sol[:-1], sol[-1]))
    return layers, {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def random_mlp(seed: int, sizes: tuple[int, ...] = (20, 16, 12, 5)) -> QuantizedModel:
    """A random ReLU MLP quantised from float weights, calibrated on random inputs."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 1 / np.sqrt(a), (a, b)) for a, b in itertools.pairwise(sizes)]
    biases = [rng.normal(0, 0.1, b) for b in sizes[1:]]
    calibration = rng.uniform(0, 1, (200, sizes[0]))
    return quantize_mlp(weights, biases, calibration, input_scale=1 / 255)


def negative_halves(model: QuantizedModel, x_q: np.ndarray) -> np.ndarray:
    """Where the last layer's acc·M is exactly a negative half step above its clamp (round
    half up in the firmware, half away from zero in TFLite)."""
    h = np.asarray(x_q, dtype=np.int64)
    for layer in model.layers[:-1]:
        h = layer.forward(h)
    last = model.layers[-1]
    acc = last.accumulators(h)
    prod = acc * last.multiplier
    half = (prod < 0) & (prod % (1 << last.shift) == 1 << (last.shift - 1))
    return half & (mulshift(acc, last.multiplier, last.shift) > last.out_min)  # not clamped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_equal_the_integer_model(seed: int) -> None:
    model = random_mlp(seed)
    x = np.random.default_rng(seed + 10).integers(0, 256, (500, 20))
    tfl, ref = run_tflite(export_tflite(model), x), model.forward(x)
    off = negative_halves(model, x)
    assert np.array_equal(tfl[~off], ref[~off])
    assert np.array_equal(tfl[off], ref[off] - 1)


def test_rounding_differs_only_on_negative_exact_halves() -> None:
    """One layer, acc = x + bias, chosen so many outputs land exactly on halves."""
    multiplier, shift = 49152, 20  # 0.046875 = 3/64: acc multiple of 32 → halves
    n_out = 256
    bias = np.arange(-n_out // 2, n_out // 2) * 32 * 11
    layer = QuantLayer(
        np.ones((n_out, 1), np.int8),
        bias.astype(np.int32),
        multiplier,
        shift,
        False,
        -128,
        127,
        1.0,
        1.0,
        2**shift / multiplier,
    )
    model = QuantizedModel([layer], 1.0)
    x = np.arange(0, 256, 32).reshape(-1, 1)
    tfl, ref = run_tflite(export_tflite(model), x), model.forward(x)
    off = negative_halves(model, x)
    prod = layer.accumulators(x) * multiplier
    halves = prod % (1 << shift) == 1 << (shift - 1)
    assert halves.sum() > 100 and off.sum() > 20  # the test does reach both kinds of halves
    assert np.array_equal(tfl[~off], ref[~off])  # positive halves round up in both
    assert np.array_equal(tfl[off], ref[off] - 1)


def test_scales_give_tflite_the_exact_multiplier() -> None:
    model = random_mlp(3)
    real_in = model.input_scale
    for layer, sc in zip(model.layers, exact_scales(model), strict=True):
        bits = layer.multiplier.bit_length()
        real = float(sc.input_scale) * float(sc.weight_scale) / float(sc.output_scale)
        assert tflite_multiplier(real) == (layer.multiplier << (31 - bits), bits - layer.shift)
        assert sc.output_scale == pytest.approx(layer.out_scale, rel=1e-4)
        assert sc.weight_scale == pytest.approx(layer.weight_scale, rel=1e-3)
        assert sc.input_scale == pytest.approx(real_in, rel=1e-4)
        real_in = sc.output_scale


def test_tflite_multiplier_is_quantize_multiplier() -> None:
    assert tflite_multiplier(0.5) == (1 << 30, 0)
    assert tflite_multiplier(0.75) == (3 << 29, 0)
    assert tflite_multiplier(1.0) == (1 << 30, 1)
    assert tflite_multiplier(1 - 2**-40) == (1 << 30, 1)  # rounds up to 2^31: renormalised


def test_read_back_and_match() -> None:
    model = random_mlp(4)
    data = export_tflite(model)
    layers, input_scale = read_tflite(data)
    assert input_scale == pytest.approx(model.input_scale, rel=1e-6)
    for got, want in zip(layers, model.layers, strict=True):
        assert np.array_equal(got.weights, want.weights)
        assert np.array_equal(got.bias, want.bias)
    assert [g.relu for g in layers] == [True, True, False]
    matches(data, model)
    other = random_mlp(5)
    with pytest.raises(TFLiteError, match="layer 0: weights differ"):
        matches(data, other)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"",
        lambda d: b"\x00" * 64,
        lambda d: d[:200],
        lambda d: d[:8] + bytes(len(d) - 8),
    ],
)
def test_reader_refuses_garbage(mangle: object) -> None:
    data = export_tflite(random_mlp(6))
    with pytest.raises(TFLiteError, match=r"model\.tflite"):
        read_tflite(mangle(data))  # type: ignore[operator]


def test_inexpressible_models_are_refused() -> None:
    model = random_mlp(7)
    model.layers[0].out_max = 127
    with pytest.raises(TFLiteError, match="layer 0: hidden output range"):
        export_tflite(model)
    model = random_mlp(7)
    model.layers[-1].out_min = 0
    with pytest.raises(TFLiteError, match="layer 2: output range"):
        export_tflite(model)
    model = random_mlp(7)
    model.layers[1].shift = 48 + 16
    with pytest.raises(TFLiteError, match=r"layer 1: requantisation .* outside what TFLite"):
        export_tflite(model)


def test_bad_inputs_and_resolver() -> None:
    data = export_tflite(random_mlp(8))
    with pytest.raises(TFLiteError, match="uint8"):
        run_tflite(data, np.full((2, 20), 300))
    with pytest.raises(TFLiteError, match=r"\(n, 20\)"):
        run_tflite(data, np.zeros((2, 19), dtype=np.int64))
    with pytest.raises(TFLiteError, match="resolver"):
        run_tflite(data, np.zeros((2, 20), dtype=np.int64), resolver="gpu")


def test_agreement_on_digits() -> None:
    """A 64-64-64-10 MLP on the digits test set: every prediction equal."""
    layers, data = digits_layers()
    model = quantize_mlp(
        [w for w, _ in layers], [b for _, b in layers], data["x_train"], input_scale=1 / 255
    )
    result = agreement(export_tflite(model), model, model.quantize_input(data["x_test"]))
    assert result["n"] == len(data["y_test"])
    assert result["predictions_equal"] == 1.0
    assert result["max_logit_diff"] <= 1
