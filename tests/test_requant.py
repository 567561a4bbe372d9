"""The vectorised integer arithmetic (training/requant.py) is the firmware's scalar
reference (firmware/quant.py) bit for bit, so the host paths built on it (integer model,
batch inference) answer what the board answers. The layer arithmetic has no zero point:
uint8/int8 activations are the clamp bounds lo..hi."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from xbar.firmware import quant
from xbar.training import requant

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
accs = st.integers(INT32_MIN, INT32_MAX)
mults = st.integers(1, quant.MULT_LIMIT - 1)
shifts = st.integers(0, quant.SHIFT_LIMIT - 1)
triples = st.lists(st.tuples(accs, mults, shifts), min_size=1, max_size=64)


@st.composite
def bounds(draw: st.DrawFn) -> tuple[int, int]:
    """lo <= hi (LOAD rejects the rest): int8/uint8 ranges, or anywhere in int32."""
    lo, hi = draw(
        st.one_of(
            st.sampled_from([(-128, 127), (0, 255), (0, 0), (INT32_MIN, INT32_MAX)]),
            st.tuples(accs, accs),
        )
    )
    return min(lo, hi), max(lo, hi)


@st.composite
def ties(draw: st.DrawFn) -> tuple[int, int, int]:
    """(acc, M, shift) with acc·M exactly half a step above a multiple of 2^shift."""
    j = draw(st.integers(0, 15))
    s = draw(st.integers(j + 1, min(j + 32, quant.SHIFT_LIMIT - 1)))
    e = s - 1 - j  # acc = odd · 2^e, so acc · 2^j = odd · 2^(s−1)
    odd_max = (1 << (31 - e)) - 1
    q = draw(st.integers(-(odd_max + 1) // 2, (odd_max - 1) // 2))
    return (2 * q + 1) << e, 1 << j, s


def expect(rows: list[tuple[int, int, int]], lo: int, hi: int, relu: bool) -> list[int]:
    return [quant.requant(a, m, s, lo, hi, relu) for a, m, s in rows]


def kernel(rows: list[tuple[int, int, int]], lo: int, hi: int, relu: bool) -> list[int]:
    a, m, s = (np.array(col, dtype=np.int64) for col in zip(*rows, strict=True))
    return requant.requant(a, m, s, lo, hi, relu).tolist()


@given(triples, bounds(), st.booleans())
@example([(INT32_MAX, quant.MULT_LIMIT - 1, 0)], (-128, 127), False)  # saturates high
@example([(INT32_MIN, quant.MULT_LIMIT - 1, 0)], (0, 255), True)  # saturates low
@example([(INT32_MIN, quant.MULT_LIMIT - 1, 0)], (INT32_MIN, INT32_MAX), False)  # no clamp
@example([(INT32_MAX, 1, quant.SHIFT_LIMIT - 1), (INT32_MIN, 1, 47)], (-128, 127), False)
@example([(-1, 1, 1), (1, 1, 1), (-3, 1, 1), (-(1 << 30), 1, 31)], (-128, 127), False)  # ties
def test_requant_equals_firmware(
    rows: list[tuple[int, int, int]], lohi: tuple[int, int], relu: bool
) -> None:
    """Per-element multipliers and shifts: each output is quant.requant's."""
    lo, hi = lohi
    assert kernel(rows, lo, hi, relu) == expect(rows, lo, hi, relu)


@given(st.lists(ties(), min_size=1, max_size=16), bounds(), st.booleans())
def test_requant_rounds_ties_as_firmware(
    rows: list[tuple[int, int, int]], lohi: tuple[int, int], relu: bool
) -> None:
    """Exact halves, negative ones included: round half up (towards +inf) in both."""
    lo, hi = lohi
    assert kernel(rows, lo, hi, relu) == expect(rows, lo, hi, relu)


@given(st.lists(accs, min_size=1, max_size=64), mults, shifts, bounds(), st.booleans())
def test_requant_scalar_factors_broadcast(
    acc: list[int], m: int, s: int, lohi: tuple[int, int], relu: bool
) -> None:
    """One layer's (M, shift) over a 2-D batch, as the integer model calls it."""
    lo, hi = lohi
    got = requant.requant(np.array(acc, dtype=np.int64).reshape(1, -1), m, s, lo, hi, relu)
    assert got.shape == (1, len(acc))
    assert got[0].tolist() == [quant.requant(a, m, s, lo, hi, relu) for a in acc]
    assert requant.mulshift(acc, m, s).tolist() == [quant.mulshift(a, m, s) for a in acc]


@given(
    st.lists(
        st.tuples(
            st.integers(-(1 << 16), 1 << 16),
            st.integers(1 << 14, (1 << 15) - 1),
            st.integers(-16, 31),
        ),
        min_size=1,
        max_size=64,
    )
)
@example([(-(1 << 16), (1 << 15) - 1, -16), (1 << 16, 1 << 14, 31), (-1, 1 << 14, 15)])
def test_convert_equals_firmware(rows: list[tuple[int, int, int]]) -> None:
    """ADC code offsets to accumulator units, per-element gain factors (left shifts too)."""
    c, mul, s = (np.array(col, dtype=np.int64) for col in zip(*rows, strict=True))
    assert requant.convert(c, mul, s).tolist() == [quant.convert(*row) for row in rows]
