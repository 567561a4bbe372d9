"""Device models: fitted from the published data, validated, JSON round trip, presets."""

from __future__ import annotations

import json
import math

import pytest
from xbar.training.devices.device_model import DeviceModel, DeviceModelError, median_sigma_device
from xbar.training.devices.published import load_published
from xbar.training.devices.usability import analyse


def test_best_preset_is_the_published_best_device() -> None:
    model = DeviceModel.preset("pvk-best")
    assert model.name == "pvk-best"
    assert model.material == "MAPbI3"
    assert model.conditions["aao_length"] == "1.8um"
    assert model.conditions["aao_diameter"] == "50nm"
    assert model.usability == pytest.approx(0.349, abs=5e-4)
    best = max(load_published(), key=lambda d: d.published["usability"])
    assert model.sigma_c2c == pytest.approx(best.published["sigma"], abs=1e-6)


def test_median_preset_has_the_median_sigma() -> None:
    sigmas = sorted(analyse(d.curves).sigma for d in load_published())
    model = DeviceModel.preset("pvk-median")
    assert model.sigma_c2c == pytest.approx(sigmas[len(sigmas) // 2])
    assert median_sigma_device().name in model.source


def test_every_published_device_is_a_preset_with_a_sane_window() -> None:
    for device in load_published():
        model = DeviceModel.preset(device.name)
        assert DeviceModel.preset(device.short_id).to_dict() == model.to_dict()
        assert 0 < model.g_min <= model.g_max
        assert model.g_min == min(model.level_conductances)
        assert model.g_max == max(model.level_conductances)
        assert model.v_reset < 0 < model.read_voltage <= model.v_set
        assert model.sigma_c2c == pytest.approx(analyse(device.curves).sigma)


def test_replicates_give_a_device_to_device_spread() -> None:
    spreads = [DeviceModel.preset(d.name).d2d_sigma for d in load_published()]
    with_replicates = [s for s in spreads if s is not None]
    assert with_replicates, "the dataset has replicate devices"
    assert all(s >= 0 and math.isfinite(s) for s in with_replicates)


def test_json_round_trip() -> None:
    model = DeviceModel.preset("pvk-median")
    again = DeviceModel.from_json(model.to_json())
    assert again == model


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("g_min", -1.0, "g_min"),
        ("g_max", 1e-12, "g_max"),
        ("sigma_c2c", float("nan"), "sigma_c2c"),
        ("v_reset", 1.0, "v_reset"),
        ("level_voltages", [], "level_voltages"),
        ("d2d_sigma", -0.1, "d2d_sigma"),
    ],
)
def test_validation_names_the_field(field: str, value: object, message: str) -> None:
    data = DeviceModel.preset("pvk-best").to_dict()
    data[field] = value
    with pytest.raises(DeviceModelError, match=message):
        DeviceModel.from_dict(data)


def test_unknown_fields_and_bad_json_are_rejected() -> None:
    data = DeviceModel.preset("pvk-best").to_dict()
    data["colour"] = "red"
    with pytest.raises(DeviceModelError, match="unknown field"):
        DeviceModel.from_json(json.dumps(data))
    with pytest.raises(DeviceModelError, match="not JSON"):
        DeviceModel.from_json("{")
    with pytest.raises(DeviceModelError, match="no device preset"):
        DeviceModel.preset("pvk-nope")
