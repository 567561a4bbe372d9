"""The firmware's integer arithmetic (``xbar.firmware.quant``) vectorised over numpy arrays.

One kernel for every host-side path that must agree with the board bit for bit: the
integer model (`training/quantize.py`) and the batch inference (`emulator/infer_batch.py`).
``firmware/quant.py`` stays the scalar reference; ``tests/test_requant.py`` checks these
against it. Arguments broadcast; results are int64, exact while ``|acc·M| + 2^shift < 2^63``
(int32 accumulators with ``M < 2^16`` and ``shift < 48`` are far inside).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def mulshift(acc: ArrayLike, multiplier: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """``quant.mulshift``: floor((acc·M + 2^(shift−1)) / 2^shift), round half up; shift ≥ 0.

    int64 needs no hi/lo split; ``(1 << shift) >> 1`` is the half step, 0 when shift is 0.
    """
    a = np.asarray(acc, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    return (a * np.asarray(multiplier, dtype=np.int64) + ((1 << s) >> 1)) >> s


def requant(
    acc: ArrayLike,
    multiplier: ArrayLike,
    shift: ArrayLike,
    lo: ArrayLike,
    hi: ArrayLike,
    relu: bool,
) -> np.ndarray:
    """``quant.requant``: the next layer's activations from int32 accumulators (bias added).

    Clamps to lo..hi (the firmware's LOAD rejects lo > hi), then ReLU if asked.
    """
    y = np.clip(mulshift(acc, multiplier, shift), lo, hi)
    return np.maximum(y, 0) if relu else y


def convert(codes: ArrayLike, mul: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """``quant.convert``: accumulator units for ADC code offsets, round(c·mul / 2^shift);
    a negative shift (large conversion factor) shifts left."""
    c = np.asarray(codes, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    prod = c * np.asarray(mul, dtype=np.int64)
    right = np.maximum(s, 0)
    return np.where(s > 0, (prod + ((1 << right) >> 1)) >> right, prod << np.maximum(-s, 0))
