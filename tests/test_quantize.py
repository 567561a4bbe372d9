"""The int8 digits model: accurate, and its numpy forward is the firmware's integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from xbar.firmware import quant
from xbar.training.quantize import QuantizedModel, QuantizedModelError, digits_mlp, fixed_point


@pytest.fixture(scope="module")
def digits():
    return digits_mlp()


def test_int8_model_keeps_float_accuracy(digits) -> None:
    model, data = digits
    assert model.shape == [64, 64, 64, 10]
    assert data["float_accuracy"] > 0.93
    assert data["int8_accuracy"] >= data["float_accuracy"] - 0.02


def test_numpy_forward_equals_the_firmware_integer_reference(digits) -> None:
    model, data = digits
    for x in data["x_test_q"][:20]:
        y = [int(v) for v in x]
        for layer in model.layers:
            y, _ = quant.reference_layer(
                layer.weights.astype(int).tolist(),
                layer.bias.astype(int).tolist(),
                y,
                layer.multiplier,
                layer.shift,
                layer.out_min,
                layer.out_max,
                layer.relu,
            )
        assert y == model.forward(x)[0].tolist()


@given(st.floats(1e-6, 1e3))
def test_fixed_point_is_accurate(real: float) -> None:
    multiplier, shift = fixed_point(real)
    assert 1 << 15 <= multiplier < 1 << 16
    assert multiplier / 2**shift == pytest.approx(real, rel=2**-15)


def test_json_round_trip_and_bad_files(digits, tmp_path) -> None:
    model, data = digits
    model.save(tmp_path / "m.json")
    again = QuantizedModel.load(tmp_path / "m.json")
    np.testing.assert_array_equal(again.forward(data["x_test_q"]), model.forward(data["x_test_q"]))
    broken = model.to_dict()
    broken["layers"][1]["weights"] = [[1, 2]]
    with pytest.raises(QuantizedModelError, match="layer 1"):
        QuantizedModel.from_dict(broken)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(QuantizedModelError, match="not JSON"):
        QuantizedModel.load(tmp_path / "bad.json")
