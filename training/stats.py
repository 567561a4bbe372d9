"""Intervals for accuracies drawn at random (noise draws, training seeds, boards), printed
to the precision they allow, and the one-sided lower bound the statistical certificate
states.

- :func:`mean_interval`: a two-sided 95 % Student-t interval of a mean. For several
  training seeds the unit is the seed (each seed's mean over its draws), so the interval
  covers seed-to-seed spread as well as draw noise; with one seed it is the draws'.
- :func:`lower_bound`: a one-sided lower confidence bound on the expected accuracy
  E_{draw, input}[correct] from a (draws × inputs) matrix of correct predictions, by the
  two-way ("pigeonhole") bootstrap: draws and inputs are resampled independently, so the
  bound accounts for both the programming variation and the finite test set. Rows share a
  draw and columns an input, so the cells are not independent and a binomial
  (Clopper–Pearson) bound on all cells would be too narrow; the two-way bootstrap counts
  the interaction twice, which errs on the safe side (tests/test_certificate.py checks its
  coverage on a case where the true accuracy is known).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided interval, and the number of units it was made from."""

    mean: float
    low: float
    high: float
    n: int
    unit: str = "draws"  # what was averaged: draws, seeds, boards

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return format_interval(self)

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "unit": self.unit,
            "level": LEVEL,
        }


def mean_interval(values: Sequence[float], unit: str = "draws", level: float = LEVEL) -> Interval:
    """Student-t interval of the mean of ``values`` (a single value: the interval is
    unknown, shown as [0, 1] for an accuracy)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("interval of no values")
    m = float(v.mean())
    if v.size < 2:
        return Interval(m, 0.0, 1.0, 1, unit)
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Interval(m, m - half, m + half, int(v.size), unit)


def seeds_interval(per_seed_draws: Sequence[Sequence[float]]) -> Interval:
    """Accuracy over training seeds × noise draws: the seeds' means when there are several
    seeds, else the draws of the one seed."""
    if len(per_seed_draws) == 1:
        return mean_interval(per_seed_draws[0], "draws")
    return mean_interval([float(np.mean(d)) for d in per_seed_draws], "seeds")


def decimals(half_width: float) -> int:
    """Digits after the point that the interval allows: the half-width to 1 significant
    digit (2 when it starts with a 1), at least 1 and at most 4 decimals."""
    if not (half_width > 0 and math.isfinite(half_width)):
        return 4
    lead = -math.floor(math.log10(half_width))
    first = half_width * 10**lead
    return int(min(4, max(1, lead + (1 if first < 2 else 0))))


def format_interval(iv: Interval) -> str:
    """``0.894 ± 0.012`` at the precision the interval allows (``n/a`` bounds: one value)."""
    if iv.n < 2:
        return f"{iv.mean:.3f} (one {iv.unit[:-1]}, no interval)"
    d = decimals(iv.half_width)
    return f"{iv.mean:.{d}f} ± {iv.half_width:.{d}f}"


def lower_bound(
    correct: np.ndarray, level: float = LEVEL, resamples: int = BOOTSTRAP, seed: int = 0
) -> float:
    """One-sided ``level`` lower bound on E[correct] from a (draws × inputs) 0/1 matrix, by
    the two-way bootstrap percentile (draws and inputs resampled independently)."""
    c = np.asarray(correct, dtype=float)
    if c.ndim != 2 or min(c.shape) < 1:
        raise ValueError(f"lower bound: expected a (draws, inputs) matrix, got {c.shape}")
    d, n = c.shape
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    chunk = max(1, 4_000_000 // (d * n + d + n))
    for s in range(0, resamples, chunk):
        b = min(chunk, resamples - s)
        wd = rng.multinomial(d, np.full(d, 1 / d), size=b).astype(float)
        wn = rng.multinomial(n, np.full(n, 1 / n), size=b).astype(float)
        out[s : s + b] = np.einsum("bd,dn,bn->b", wd, c, wn) / (d * n)
    return float(np.quantile(out, 1 - level))
