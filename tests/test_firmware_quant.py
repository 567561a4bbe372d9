"""The shared integer arithmetic (firmware/quant.py): the firmware's small-int
requantisation equals exact arithmetic, and the ADC-code conversion factors are exact
to their fixed-point resolution."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st
from xbar.firmware import quant

accs = st.integers(-(1 << 24) + 1, (1 << 24) - 1)
mults = st.integers(1, quant.MULT_LIMIT - 1)
shifts = st.integers(0, quant.SHIFT_LIMIT - 1)


@given(accs, mults, shifts)
def test_mulshift_is_exact_round_half_up(a: int, m: int, s: int) -> None:
    exact = (a * m + (1 << (s - 1))) >> s if s else a * m
    assert quant.mulshift(a, m, s) == exact


@given(accs, mults, shifts)
def test_mulshift_intermediates_fit_32_bit_small_ints(a: int, m: int, s: int) -> None:
    """On a 32-bit MCU a small int holds 31 bits; the split keeps every product below."""
    if s >= 11:
        hi, lo = a >> 10, a & 1023
        assert abs(hi * m) < 1 << 30 and lo * m < 1 << 30


@given(accs, mults, shifts, st.integers(-128, 0), st.integers(0, 255), st.booleans())
def test_requant_clamps_then_relu(a: int, m: int, s: int, lo: int, hi: int, relu: bool) -> None:
    y = quant.requant(a, m, s, lo, hi, relu)
    assert lo <= y <= hi and (y >= 0 or not relu)


@given(st.floats(1e-6, 1e6))
def test_fixed_point_factor(q: float) -> None:
    mul, sh = quant.fixed(q)
    assert 1 << 14 <= mul < 1 << 15
    approx = Fraction(mul) / (Fraction(2) ** sh)
    assert abs(approx - Fraction(q)) <= Fraction(q) * Fraction(1, 1 << 14)
    assert abs(32767 * mul) < 1 << 30


def test_reference_layer() -> None:
    y, acc = quant.reference_layer(
        [[1, -2], [3, 4]], [10, -10], [5, 7], 1 << 15, 16, -128, 127, True
    )
    assert acc == [1, 33] and y == [1, 17]
