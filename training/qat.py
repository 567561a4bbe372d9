"""Quantisation-aware training: fake quantisation on the export's integer grid (torch).

The forward pass rounds weights and activations exactly as :func:`quantize_mlp` and the
artifact's level snapping will (per-tensor symmetric int8 weights, optionally moved to
the device's level steps; uint8 activations); the backward pass is the straight-through
estimator, so training sees the quantisation error and learns around it. It helps most
where the grid is coarse: weights snapped to a device with few levels.
"""

from __future__ import annotations

import numpy as np
import torch
from xbar.training.plan import snap_weights

from .quantize import ACT_MAX, ACT_MIN, OUT_MAX, OUT_MIN

WEIGHT_MAX = 127  # symmetric int8 weights, as quantize_mlp


def ste(exact: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """``quantized`` forward, the identity's gradient backward (straight-through)."""
    return exact + (quantized - exact).detach()


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """quantize_mlp's per-tensor scale: the largest |w| is int8 127 (1.0 for all zeros)."""
    top = w.detach().abs().max()
    return top / WEIGHT_MAX if top > 0 else torch.ones((), dtype=w.dtype, device=w.device)


def fake_quant_weight(w: torch.Tensor, steps: np.ndarray | None = None) -> torch.Tensor:
    """``w`` on the int8 grid (× its scale); with ``steps`` (plan.level_steps) each int8
    magnitude is also moved to the nearest device level step, as the artifact does."""
    scale = weight_scale(w)
    q = torch.round(w.detach() / scale)
    if steps is not None:
        snapped = snap_weights(q.cpu().numpy().astype(np.int64), steps)
        q = torch.as_tensor(snapped, dtype=w.dtype, device=w.device)
    return ste(w, q * scale)


def fake_quant_activation(h: torch.Tensor, scale: float, *, logits: bool = False) -> torch.Tensor:
    """``h`` on the uint8 grid of ``scale`` (int8 for ``logits``), clamped like the
    firmware; the gradient passes inside the range and stops where the value clamps."""
    lo, hi = (OUT_MIN, OUT_MAX) if logits else (ACT_MIN, ACT_MAX)
    clamped = torch.clamp(h, lo * scale, hi * scale)
    return ste(clamped, torch.round(clamped.detach() / scale) * scale)


class RangeObserver:
    """Tracks the largest activation seen, for the uint8 scale quantize_mlp would pick."""

    def __init__(self) -> None:
        self.top = 0.0

    def update(self, h: torch.Tensor) -> torch.Tensor:
        self.top = max(self.top, float(h.detach().abs().max()))
        return h

    def scale(self, logits: bool = False) -> float:
        return self.top / (OUT_MAX if logits else ACT_MAX) or 1.0
