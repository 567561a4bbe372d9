"""Usability of a memristor from raw I–V cycles, exactly as the published figures were computed.

Usability rewards a device whose conductance rises steadily along the SET sweep (many
programmable levels: *monotonicity*) and repeats from cycle to cycle (small log-normal
spread σ): ``usability = monotonicity × exp(−σ)``. Every step below mirrors the authors'
procedure (docs/architecture.md, GUIDE); it reproduces their columns for all 43 devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ivdata import IVCurves

CLIP_FRACTION = 0.99  # values within 1 % of a column's maximum are compliance-clipped
V_EPS = 1e-8  # keeps G = I / V finite at V = 0
R_EPS = 1e-8  # keeps ln(G / ḡ) finite at G = 0
MAX_FALLS = 2  # a monotonic run tolerates this many falls of ḡ
TRIM_LOW, TRIM_HIGH = 0.05, 0.95  # tails of the sorted ln(G / ḡ) dropped before σ


@dataclass(frozen=True)
class UsabilityResult:
    """σ, monotonicity and usability, with the intermediate quantities a device model needs."""

    sigma: float
    monotonicity: float
    usability: float
    start: int  # first row of the monotonic run (index into ``voltage``)
    end: int  # last row of the run, inclusive
    voltage: np.ndarray  # rising-sweep voltages after clipping (NaN = blanked)
    conductance: np.ndarray  # G per row and cycle on the rising sweep (NaN = blank)
    mean_conductance: np.ndarray  # ḡ per row
    log_ratios: np.ndarray  # the trimmed, sorted ln(G/ḡ) that σ is measured on


def rising_sweep(voltage: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with V > 0, first half (the rising sweep), with clipped values blanked."""
    table = np.column_stack([voltage, current]).astype(float)
    with np.errstate(invalid="ignore"):
        table = table[table[:, 0] > 0]
    table = table[: len(table) // 2].copy()
    if len(table):
        with np.errstate(invalid="ignore"):
            maxima = np.max(np.where(np.isnan(table), -np.inf, table), axis=0)
            table[table >= CLIP_FRACTION * maxima] = np.nan
    return table[:, 0], table[:, 1:]


def longest_monotonic_run(g: np.ndarray, max_falls: int = MAX_FALLS) -> tuple[int, int]:
    """[start, end] of the longest run of ``g`` that rises, tolerating ``max_falls`` falls.

    A fall that exceeds the tolerance closes the run; the next run restarts at the first
    remembered fall, keeping the later falls. Comparisons with NaN count as falls.
    """
    start, falls = 0, list[int]()
    best = (0, 0)
    for i in range(1, len(g)):
        if g[i] > g[i - 1]:
            continue
        if len(falls) < max_falls:
            falls.append(i)
            continue
        if i - 1 - start > best[1] - best[0]:
            best = (start, i - 1)
        start, falls = falls[0], [*falls[1:], i]
    if len(g) - 1 - start > best[1] - best[0]:
        best = (start, len(g) - 1)
    return best


def analyse(curves: IVCurves) -> UsabilityResult:
    """Usability of one device from its sweep cycles."""
    voltage, current = rising_sweep(curves.voltage, curves.current)
    with np.errstate(all="ignore"):
        conductance = current / (voltage[:, None] + V_EPS)
        has_data = ~np.isnan(conductance).all(axis=1)
        mean_g = np.full(len(voltage), np.nan)
        mean_g[has_data] = np.nanmean(conductance[has_data], axis=1)
    start, end = longest_monotonic_run(mean_g)
    with np.errstate(all="ignore"):
        ratios = (conductance[start : end + 1] / mean_g[start : end + 1, None]).ravel()
        ratios = ratios[~np.isnan(ratios)]
        x = np.log(ratios + R_EPS)
    x = np.sort(x[np.isfinite(x)])
    n = len(x)
    x = x[math.floor(TRIM_LOW * n) : math.floor(TRIM_HIGH * n) + 1]
    sigma = float(x.std()) if len(x) else math.nan
    monotonicity = (end - start) / 100
    return UsabilityResult(
        sigma=sigma,
        monotonicity=monotonicity,
        usability=monotonicity * math.exp(-sigma) if len(x) else math.nan,
        start=start,
        end=end,
        voltage=voltage,
        conductance=conductance,
        mean_conductance=mean_g,
        log_ratios=x,
    )
