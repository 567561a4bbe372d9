"""Usability reproduces the published figures and behaves on any input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from xbar.training.devices.ivdata import IVCurves
from xbar.training.devices.published import load_published
from xbar.training.devices.usability import analyse, longest_monotonic_run

PUBLISHED = load_published()


def test_dataset_has_all_43_devices() -> None:
    assert len(PUBLISHED) == 43
    assert len({d.name for d in PUBLISHED}) == 43


@pytest.mark.parametrize("device", PUBLISHED, ids=lambda d: d.short_id)
def test_matches_published_columns(device) -> None:
    result = analyse(device.curves)
    assert result.sigma == pytest.approx(device.published["sigma"], abs=1e-6)
    assert result.monotonicity == pytest.approx(device.published["monotonicity"], abs=1e-6)
    assert result.usability == pytest.approx(device.published["usability"], abs=1e-6)


def test_monotonic_run_tolerates_two_falls_and_restarts_at_the_first() -> None:
    #          0  1  2  3  4  5  6  7  8  9
    g = np.array([1, 2, 1, 3, 2, 4, 3, 5, 6, 7], dtype=float)
    # falls at 2, 4, 6: the third closes [0, 5]; the next run starts at 2 with falls {4, 6}
    # and runs to the end: [2, 9] is longer.
    assert longest_monotonic_run(g) == (2, 9)
    assert longest_monotonic_run(np.arange(5.0)) == (0, 4)
    assert longest_monotonic_run(np.array([1.0, np.nan, 2.0, 3.0])) == (0, 3)


def sweeps(min_cycles: int = 2):
    """Sweeps shaped like the instrument's: 0 → +V → 0 → −V → 0, random finite currents."""

    @st.composite
    def build(draw):
        steps = draw(st.integers(2, 12))
        cycles = draw(st.integers(min_cycles, 6))
        up = np.arange(steps + 1) * 0.1
        volts = np.concatenate([up, up[::-1][1:], -up[1:], -up[::-1][1:]])
        # Currents an instrument can report: zero, or 1 fA .. 10 mA of either sign. (Subnormal
        # floats would lose precision in G = I / V, which no scaling law survives.)
        magnitude = st.one_of(st.just(0.0), st.floats(1e-15, 1e-2))
        signed = st.tuples(magnitude, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
        currents = draw(arrays(np.float64, (len(volts), cycles), elements=signed))
        return IVCurves("prop", volts, currents)

    return build()


@given(sweeps(), st.integers(-20, 20))
def test_sigma_invariant_to_scaling_currents(curves: IVCurves, exponent: int) -> None:
    # Powers of two scale every float exactly, so the procedure must give identical σ.
    scaled = IVCurves("scaled", curves.voltage, curves.current * 2.0**exponent)
    a, b = analyse(curves), analyse(scaled)
    assert (a.sigma == b.sigma) or (math.isnan(a.sigma) and math.isnan(b.sigma))
    assert (a.start, a.end) == (b.start, b.end)


@given(sweeps(), st.floats(1e-3, 1e3))
def test_sigma_nearly_invariant_to_any_positive_scale(curves: IVCurves, scale: float) -> None:
    a = analyse(curves)
    b = analyse(IVCurves("scaled", curves.voltage, curves.current * scale))
    if (a.start, a.end) == (b.start, b.end) and not math.isnan(a.sigma):
        # Same run: the ratios G/ḡ are the same up to rounding.
        assert b.sigma == pytest.approx(a.sigma, rel=1e-6, abs=1e-6)


@given(sweeps(min_cycles=1))
def test_monotonicity_never_negative_and_no_crash(curves: IVCurves) -> None:
    result = analyse(curves)
    assert result.monotonicity >= 0
    assert 0 <= result.start <= max(result.end, 0)
    assert math.isnan(result.usability) or result.usability >= 0


@given(
    arrays(
        np.float64,
        st.tuples(st.integers(0, 30), st.integers(1, 5)),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    )
)
def test_no_crash_on_any_finite_array(table: np.ndarray) -> None:
    volts = table[:, 0]
    curves = IVCurves("any", volts, table[:, 1:] if table.shape[1] > 1 else table[:, :1])
    result = analyse(curves)
    assert result.monotonicity >= 0
