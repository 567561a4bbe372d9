"""Integer arithmetic of a quantised layer, shared by the board and the host reference.

Runs on MicroPython and CPython alike (the host imports it as `xbar.firmware.quant`),
so the firmware and the pure-integer reference compute requantisation with one function.

Per output j: acc = sum_i W[j][i] * x[i] + bias[j];
y = clamp(floor((acc * M + 2^(shift-1)) / 2^shift), out_min, out_max) (round half up),
then ReLU if asked. M is 1 .. 65535 so every intermediate stays a small int on a 32-bit
MCU (|acc| < 2^24 assumed; products are split, see mulshift).
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

ACC_LIMIT = 1 << 24
MULT_LIMIT = 1 << 16
SHIFT_LIMIT = 48
BIAS_LIMIT = 1 << 29
# Conversion factors q (accumulator units per ADC code) the board's arithmetic takes.
# fixed(q) gives mul in [2^14, 2^15), so code * mul < 2^30 (a MicroPython small int) for
# any 16-bit code, and convert() shifts that right by s. At the gain every conversion
# starts at (the largest Rf) s must not be negative, i.e. q < 2^15: a left shift there
# would take a single in-range reading past 2^30. At every gain s <= SHIFT_MAX, i.e.
# q >= 2^(14 - SHIFT_MAX): the rounding term 2^(s-1) stays a small int, and a smaller q
# rounds every reading to 0. Accumulators stay within ACC_GUARD (checked while
# accumulating, see inference.Model.run), so adding a bias keeps them int32.
Q_START_MAX = 32768.0
SHIFT_MAX = 30
ACC_GUARD = 1 << 30


def mulshift(a, m, s):
    """floor((a*m + 2^(s-1)) / 2^s) exactly, without intermediates beyond ~2^30.

    With a = hi*2^10 + lo (0 <= lo < 2^10) and s >= 11:
    floor((2^10*(hi*m + 2^(s-11)) + lo*m) / 2^s) = (hi*m + 2^(s-11) + (lo*m >> 10)) >> (s-10).
    """
    if s == 0:
        return a * m
    if s < 11:
        return (a * m + (1 << (s - 1))) >> s
    hi = a >> 10
    lo = a & 1023
    return (hi * m + (1 << (s - 11)) + ((lo * m) >> 10)) >> (s - 10)


def requant(acc, m, s, lo, hi, relu):
    """One output of a layer from its int32 accumulator (bias already added)."""
    y = mulshift(acc, m, s)
    if y < lo:
        y = lo
    elif y > hi:
        y = hi
    if relu and y < 0:
        y = 0
    return y


def reference_layer(w, bias, x, m, s, lo, hi, relu):
    """Pure-integer layer: w is n_out rows of n_in ints, x n_in ints; returns (y, acc)."""
    accs = []
    ys = []
    for j in range(len(w)):
        row = w[j]
        acc = bias[j]
        for i in range(len(x)):
            acc += row[i] * x[i]
        accs.append(acc)
        ys.append(requant(acc, m, s, lo, hi, relu))
    return ys, accs


def codes_per_unit(g_unit, k, dac_lsb, adc_lsb, rf):
    """Accumulator units per ADC code at feedback resistor rf.

    One accumulator unit is the column-pair current of weight 1 times input 1:
    k * dac_lsb (V) * g_unit (S). One ADC code is adc_lsb / rf (A).
    """
    return (adc_lsb / rf) / (k * dac_lsb * g_unit)


def fixed(q):
    """(mul, shift) with mul in [2^14, 2^15) and mul / 2^shift ~= q (q > 0), so that
    code * mul stays below 2^30 for any 16-bit ADC code."""
    if not 0 < q < 1e30:  # also NaN and inf, where the loops below would not end
        raise ValueError("conversion factor %r outside (0, 1e30)" % q)
    s = 0
    v = q
    while v >= 32768.0:
        v /= 2.0
        s -= 1
    while v < 16384.0:
        v *= 2.0
        s += 1
    mul = int(v + 0.5)
    if mul > 32767:
        mul = 32767
    return mul, s


def convert(c, mul, s):
    """Accumulator units for ADC code offset c: round(c * mul / 2^s)."""
    if s > 0:
        return (c * mul + (1 << (s - 1))) >> s
    return (c * mul) << -s
