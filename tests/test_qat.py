"""Fake quantisation for QAT: the forward pass is exactly the export's integer grid, the
backward pass straight through."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from xbar.training.plan import level_steps, snap_weights
from xbar.training.qat import RangeObserver, fake_quant_activation, fake_quant_weight
from xbar.training.quantize import quantize_mlp


def test_weights_on_the_exported_grid() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (12, 7))  # sklearn layout (in, out)
    model = quantize_mlp([w], [np.zeros(7)], rng.uniform(0, 1, (10, 12)), input_scale=1 / 255)
    layer = model.layers[0]
    fq = fake_quant_weight(torch.tensor(w)).numpy()
    assert np.array_equal(np.round(fq / layer.weight_scale).T, layer.weights)
    steps = level_steps([1e-8, 3e-8, 2e-7, 1.28e-6], 1e-8, 1.28e-6)
    snapped = fake_quant_weight(torch.tensor(w), steps).numpy()
    assert np.array_equal(
        np.round(snapped / layer.weight_scale).T, snap_weights(layer.weights, steps)
    )


def test_straight_through_gradients() -> None:
    w = torch.tensor([[0.5, -1.0, 0.013]], requires_grad=True)
    (fake_quant_weight(w) * torch.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert w.grad is not None and w.grad.tolist() == [[1.0, 2.0, 3.0]]
    h = torch.tensor([-1.0, 0.3, 2.0, 9.0], requires_grad=True)
    out = fake_quant_activation(h, scale=0.02)  # uint8 range 0 .. 5.1
    assert out.tolist() == pytest.approx([0.0, 0.3, 2.0, 5.1])
    out.sum().backward()
    assert h.grad is not None and h.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    logits = fake_quant_activation(torch.tensor([-3.0, 0.011]), scale=0.02, logits=True)
    assert logits.tolist() == pytest.approx([-2.56, 0.02])


def test_range_observer_matches_calibration() -> None:
    obs = RangeObserver()
    for h in (torch.tensor([0.1, 2.55]), torch.tensor([1.0])):
        obs.update(h)
    assert obs.scale() == pytest.approx(0.01)
    assert obs.scale(logits=True) == pytest.approx(2.55 / 127)
