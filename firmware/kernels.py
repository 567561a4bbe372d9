"""Inner loops of a measurement and of inference, as `@micropython.viper` kernels.

Each works on preallocated buffers (`array`, `bytearray`, a frame's memoryview) and
allocates nothing; the loops around them, and the machine calls, stay in the callers.
Viper integers are machine words (32 bits on an RP2040, 64 on the unix port the
emulator runs), and a `ptr32` load is zero-extended to that word: signed 32-bit values
are sign-extended with `(v << _SX) >> _SX` (_SX = word bits - 32). Every kernel keeps its
values within int32 and hands anything that would not fit back to its caller (a return
value), which then finishes the job with the exact small-int code (firmware/quant.py).
`ptr16` loads are unsigned: a signed 16-bit value read through one is corrected (under
CPython, where the emulator's in-process runtime runs these as plain Python, the buffer
is read signed and the correction never applies).

Built with native code: `mpy-cross -march=armv6m` for an RP2040 (`xbar flash` asks the
board for its architecture; without one it copies sources, which the board compiles).
"""
# ruff: noqa: F821 (ptr8/ptr16/ptr32: viper's pointer casts, built in inside viper code)

import sys

import micropython

_SX = 32 if sys.maxsize > 0x7FFFFFFF else 0
"""Shift that sign-extends a 32-bit value loaded through ptr32 to the machine word."""


@micropython.viper
def out_of_range(codes: ptr16, i0: int, n: int, lim: int) -> int:
    """Index of the first of codes[i0 : i0+n] with |code - 32768| > lim, or -1."""
    for i in range(i0, i0 + n):
        d = int(codes[i]) - 32768
        if d > lim or -d > lim:
            return i
    return -1


@micropython.viper
def fill(buf: ptr8, lo: int, hi: int, v: int):
    """buf[lo:hi] = v."""
    for i in range(lo, hi):
        buf[i] = v


@micropython.viper
def reset16(buf: ptr16, lo: int, hi: int, v: int) -> int:
    """buf[lo:hi] = v; returns how many of them were not v before."""
    n = 0
    for i in range(lo, hi):
        if int(buf[i]) != v:
            buf[i] = v
            n += 1
    return n


@micropython.viper
def find(buf: ptr8, lo: int, hi: int, v: int) -> int:
    """Index of the first of buf[lo:hi] equal to v, or -1."""
    for i in range(lo, hi):
        if buf[i] == v:
            return i
    return -1


@micropython.viper
def words(buf: ptr8, chain: int, p_lo: int, p_hi: int, b0: int, b1: int, b2: int):
    """The same 24-bit word (b0, b1, b2) for chain positions p_lo .. p_hi of a DAC chain
    frame (position p is bytes 3 * (chain - 1 - p) ..)."""
    for p in range(p_lo, p_hi + 1):
        k = 3 * (chain - 1 - p)
        buf[k] = b0
        buf[k + 1] = b1
        buf[k + 2] = b2


@micropython.viper
def route(w: ptr8, last: int, line0: int, n: int, codes: ptr16, c0: int, gnd: int, mode: int):
    """Switch frame `w` (last byte index `last`): lines line0 .. line0+n-1, known to be
    grounded, from ground to `mode`; with `codes` (c0 >= 0) only those whose codes[c0 + i]
    is not 32768 (a row at 0 V stays on its ground switch)."""
    for i in range(n):
        if c0 >= 0 and int(codes[c0 + i]) == 32768:
            continue
        s = 3 * (line0 + i) + gnd
        k = last - (s >> 3)
        w[k] = w[k] & (0xFF ^ (1 << (s & 7)))
        s = 3 * (line0 + i) + mode
        k = last - (s >> 3)
        w[k] = w[k] | (1 << (s & 7))


@micropython.viper
def dac_frames(
    frames: ptr8,
    fsel: ptr8,
    staged: ptr16,
    codes: ptr16,
    i0: int,
    line0: int,
    n: int,
    cmd: int,
    chain: int,
    mid: int,
    delta: ptr32,
) -> int:
    """Every chain frame that writes codes[i0 : i0+n] to lines line0 .. line0+n-1: per DAC
    channel, one frame per chip select (fsel[f]) carrying that channel for every chip of
    the chain (no-ops elsewhere), frame f at frames[f * 3 * chain]. `staged` updated;
    delta[0] = the change in the number of lines not at `mid`. Returns the frame count."""
    flen = 3 * chain
    per_sel = 8 * chain
    end = line0 + n
    f = 0
    dirty = 0
    for ch in range(8):
        line = line0 + ((ch - line0) & 7)
        while line < end:
            s = line // per_sel
            stop = (s + 1) * per_sel
            if stop > end:
                stop = end
            base = f * flen
            for b in range(flen):
                frames[base + b] = 0
            chip0 = s * chain
            while line < stop:
                k = base + 3 * (chain - 1 - ((line >> 3) - chip0))
                code = int(codes[i0 + line - line0])
                frames[k] = cmd | ch
                frames[k + 1] = code >> 8
                frames[k + 2] = code & 0xFF
                old = int(staged[line])
                if old != code:
                    if old == mid:
                        dirty += 1
                    elif code == mid:
                        dirty -= 1
                    staged[line] = code
                line += 8
            fsel[f] = s
            f += 1
    delta[0] = dirty
    return f


@micropython.viper
def zero(acc: ptr32, n: int):
    for j in range(n):
        acc[j] = 0


@micropython.viper
def accumulate(
    acc: ptr32,
    tiles: ptr16,
    t: int,
    t1: int,
    cols: int,
    codes: ptr16,
    gains: ptr8,
    table: ptr32,
    mul0: int,
    qsh0: int,
    guard: int,
) -> int:
    """For tiles t .. t1-1 of the tile table (7 fields a tile: array, row0, col0, input0,
    inputs, output0, outputs): acc[j] += convert(G- code) - convert(G+ code) for each
    output j, its pair in columns array * cols + col0 + 2 (j - output0) and the one
    after, convert(c) = round(c * mul / 2^s) with the gain's (mul, s) at
    table[mul0 + gain], table[qsh0 + gain] (quant.convert). Returns (tile << 16) | the
    first output it could not do within int32 (a left shift, or a sum at or beyond
    +-guard), else -1."""
    sx = int(_SX)
    while t < t1:
        f = 7 * t
        j = int(tiles[f + 5])
        end = j + int(tiles[f + 6])
        cp = int(tiles[f]) * cols + int(tiles[f + 2])
        while j < end:
            c = int(codes[cp])
            if c >= 32768:
                c -= 65536
            d = int(codes[cp + 1])
            if d >= 32768:
                d -= 65536
            gp = int(gains[cp])
            gm = int(gains[cp + 1])
            sp = (int(table[qsh0 + gp]) << sx) >> sx
            sm = (int(table[qsh0 + gm]) << sx) >> sx
            if sp <= 0 or sm <= 0:
                return (t << 16) | j
            plus = (c * int(table[mul0 + gp]) + (1 << (sp - 1))) >> sp
            minus = (d * int(table[mul0 + gm]) + (1 << (sm - 1))) >> sm
            a = ((int(acc[j]) << sx) >> sx) + minus - plus
            if a >= guard or a <= -guard:
                return (t << 16) | j
            acc[j] = a
            cp += 2
            j += 1
        t += 1
    return -1


@micropython.viper
def requant(
    acc: ptr32,
    blob: ptr8,
    b0: int,
    n: int,
    m: int,
    s: int,
    lo: int,
    hi: int,
    relu: int,
    out8: ptr8,
    out16: ptr16,
    last: int,
    limit: int,
) -> int:
    """Bias and requantisation of a layer's outputs (quant.requant, for 11 <= s <= 40 and
    |acc + bias| < limit = 2^24, where every intermediate fits int32): acc[j] += the
    little-endian int32 at blob[b0 + 4j], y to out16[j] (last layer) or out8[j]. Returns
    the first j it left to the caller (acc[j] not yet changed), else -1."""
    sx = int(_SX)
    rnd = 1 << (s - 11)
    sh = s - 10
    for j in range(n):
        o = b0 + 4 * j
        top = int(blob[o + 3])
        if top >= 128:
            top -= 256
        bias = (top << 24) | (blob[o + 2] << 16) | (blob[o + 1] << 8) | blob[o]
        a = ((int(acc[j]) << sx) >> sx) + bias
        if a >= limit or -a >= limit:
            return j
        acc[j] = a
        y = ((a >> 10) * m + rnd + (((a & 1023) * m) >> 10)) >> sh
        if y < lo:
            y = lo
        elif y > hi:
            y = hi
        if relu and y < 0:
            y = 0
        if last:
            out16[j] = y
        else:
            out8[j] = y
    return -1


@micropython.viper
def put_i32(out: ptr8, o: int, src: ptr32, n: int) -> int:
    """n values of an 'i' array as little-endian int32 from out[o]; the end offset."""
    for j in range(n):
        v = src[j]
        out[o] = v & 0xFF
        out[o + 1] = (v >> 8) & 0xFF
        out[o + 2] = (v >> 16) & 0xFF
        out[o + 3] = (v >> 24) & 0xFF
        o += 4
    return o


@micropython.viper
def put_i16(out: ptr8, o: int, src: ptr16, n: int) -> int:
    """n values of an 'h' array as little-endian int16 from out[o]; the end offset."""
    for j in range(n):
        v = int(src[j])
        out[o] = v & 0xFF
        out[o + 1] = (v >> 8) & 0xFF
        o += 2
    return o


@micropython.viper
def cobs_read(readinto, one, b1: ptr8, nothing, dst: ptr8, cap: int, st: ptr32) -> int:
    """Read bytes one at a time (`readinto(one)`, `one` a 1-byte buffer, at b1) and
    COBS-decode them into dst as protocol.Decoder.push would, with its state in st
    (bytes stored, data bytes left in the block, block code, frame started), while they
    are the inside or the first byte of a frame. Returns the byte it leaves to push()
    (0x00 ends a frame; a CR at a frame boundary; a byte that would overflow cap), 256
    when readinto returned `nothing` (None: no byte within the poll timeout) or 257 at
    end of stream."""
    k = int(st[0])
    remain = int(st[1])
    block = int(st[2])
    started = int(st[3])
    r = 0
    while True:
        n = readinto(one)
        if n == nothing:
            r = 256
            break
        if int(n) == 0:
            r = 257
            break
        b = b1[0]
        if b == 0:
            break
        if remain == 0:
            if started:
                if block != 0xFF:
                    if k >= cap:
                        r = b
                        break
                    dst[k] = 0
                    k += 1
            elif b == 13:
                r = 13
                break
            started = 1
            block = b
            remain = b - 1
        else:
            if k >= cap:
                r = b
                break
            remain -= 1
            dst[k] = b
            k += 1
    st[0] = k
    st[1] = remain
    st[2] = block
    st[3] = started
    return r


@micropython.viper
def cobs_encode(src: ptr8, n: int, dst: ptr8) -> int:
    """protocol.cobs_encode: src[:n] COBS-encoded into dst (no delimiter); the length."""
    code_i = 0
    out = 1
    code = 1
    for i in range(n):
        b = src[i]
        if b == 0:
            dst[code_i] = code
            code_i = out
            out += 1
            code = 1
        else:
            dst[out] = b
            out += 1
            code += 1
            if code == 0xFF:
                dst[code_i] = code
                code_i = out
                out += 1
                code = 1
    dst[code_i] = code
    return out


@micropython.viper
def tile_rows(
    frames: ptr8, slots: ptr16, n: int, x: ptr8, off: int, k: int, lim: int, w: ptr8
) -> int:
    """The row codes of a scan (hal.Scan) into its DAC frames and switch frame w: row j's
    six slots (hal.Hal.plan) are the byte of its code in `frames`, its input index, its
    line, the switch bytes of its ground and drive switches, and their masks (clear |
    set << 8). Its code is 32768 + x[off + input] * k; a row with a nonzero input moves
    from ground to its drive switch. Returns the first row beyond `lim` codes from 32768
    (nothing sent yet), else -1."""
    j = 0
    q = 0
    while j < n:
        v = x[off + int(slots[q + 1])] * k
        if v > lim:
            return j
        b = int(slots[q])
        code = 32768 + v
        frames[b] = code >> 8
        frames[b + 1] = code & 0xFF
        if v:
            bits = int(slots[q + 5])
            i = int(slots[q + 3])
            w[i] = w[i] & bits
            i = int(slots[q + 4])
            w[i] = w[i] | (bits >> 8)
        j += 1
        q += 6
    return -1


@micropython.viper
def adc_plan(
    want: ptr8,
    columns: int,
    s_lo: int,
    s_hi: int,
    chain: int,
    tx: ptr8,
    flen: int,
    fsel: ptr8,
    fprev: ptr8,
    chans: ptr8,
    man: int,
    last: int,
) -> int:
    """The frames of one conversion pass over the wanted columns of ADC selects s_lo ..
    s_hi, all starting in standby: first one frame per select that selects its first
    needed channel (MAN_Ch: it also wakes the chain), then per select the frames of its
    other needed channels and a last command `last` (STDBY), each returning the result
    of the channel before it. Frame f: command at tx[f * flen], select fsel[f], the
    channel whose results it carries fprev[f] (255: none). `chans`: 9 bytes per select
    of scratch. Returns wake frames | (all frames << 8)."""
    nw = 0
    for s in range(s_lo, s_hi + 1):
        q = 9 * (s - s_lo)
        m = 0
        for ch in range(8):
            col = ((s * chain) << 3) + ch
            for _ in range(chain):
                if col < columns and want[col]:
                    chans[q + m] = ch
                    m += 1
                    break
                col += 8
        chans[q + 8] = m
        if m:
            cmd = man + (chans[q] << 10)
            tx[nw * flen] = cmd >> 8
            tx[nw * flen + 1] = cmd & 0xFF
            fsel[nw] = s
            fprev[nw] = 255
            nw += 1
    f = nw
    for s in range(s_lo, s_hi + 1):
        q = 9 * (s - s_lo)
        m = int(chans[q + 8])
        for j in range(1, m + 1):
            cmd = man + (chans[q + j] << 10) if j < m else last
            tx[f * flen] = cmd >> 8
            tx[f * flen + 1] = cmd & 0xFF
            fsel[f] = s
            fprev[f] = chans[q + j - 1]
            f += 1
    return nw | (f << 8)


@micropython.viper
def adc_results(
    rx: ptr8,
    flen: int,
    nf: int,
    fsel: ptr8,
    fprev: ptr8,
    chain: int,
    want: ptr8,
    codes: ptr16,
    columns: int,
    mid: int,
    gains: ptr8,
    gi: int,
    sat: int,
) -> int:
    """The results of a pass planned by adc_plan (frame f received at rx[f * flen]) at
    gain gi: codes[c] = result - mid and gains[c] = gi for every wanted column; a column
    near the rail (|code| > sat) stays wanted while a lower gain is left (gi > 0).
    Returns the columns taken | (1 << 16 if any stays wanted)."""
    taken = 0
    more = 0
    for f in range(nf):
        ch = fprev[f]
        if ch == 255:
            continue
        col = ((fsel[f] * chain) << 3) + ch
        b = f * flen + 2
        for _ in range(chain):
            if col < columns and want[col]:
                v = ((rx[b] << 8) | rx[b + 1]) - mid
                codes[col] = v
                gains[col] = gi
                taken += 1
                if gi > 0 and (v > sat or -v > sat):
                    more = 1 << 16
                else:
                    want[col] = 0
            col += 8
            b += 2
    return taken | more


@micropython.viper
def adc_pass(ctx, want: ptr8, s_lo: int, s_hi: int, codes: ptr16, gains: ptr8, gi: int) -> int:
    """One conversion pass at gain gi (drivers.Adc.scan); nonzero while a column stays
    wanted. ctx: drivers.Adc.ctx."""
    (plan, results, lows, highs, views, xfer, sleep_us, frames, fsel_b, fprev, chans,
     count_a, k_a) = ctx  # fmt: skip
    fsel = ptr8(fsel_b)
    count = ptr32(count_a)
    k = ptr32(k_a)
    flen = k[0]
    chain = k[1]
    columns = k[2]
    r = int(plan(want, columns, s_lo, s_hi, chain, frames, flen, fsel_b, fprev, chans,
                 k[3], k[4]))  # fmt: skip
    nw = r & 0xFF
    if nw == 0:
        return 0
    nf = r >> 8
    f = 0
    while f < nf:
        if f == nw:
            sleep_us(k[5])
        sel = fsel[f]
        v = views[f]
        lows[sel]()
        xfer(v, v)
        highs[sel]()
        f += 1
    r = int(results(frames, flen, nf, fsel_b, fprev, chain, want, codes, columns, k[6],
                    gains, gi, k[7]))  # fmt: skip
    count[0] = (count[0] + (r & 0xFFFF)) & 0x3FFFFFFF
    return r >> 16


@micropython.viper
def scan(mach, plan, want: ptr8, s_lo: int, s_hi: int, adc, codes: ptr16, gains: ptr8):
    """hal.Hal.scan's machine sequence, its frames staged (mach: hal.Hal.mach, plan:
    hal.Scan.plan, adc: drivers.Adc.ctx)."""
    (write, sel_low, sel_high, gate_low, gate_high, sw_low, sw_high, ldac_low, ldac_high,
     sleep_us, wake_us, wire, grounded, gain, top) = mach  # fmt: skip
    up, down, gates = plan
    for sel, v in up:
        sel_low[sel]()
        write(v)
        sel_high[sel]()
    for g in gates:
        gate_low[g]()
    sleep_us(wake_us)
    sw_low()
    write(wire)
    sw_high()
    ldac_low()
    ldac_high()
    gi = int(top)
    gain(gi)
    while adc_pass(adc, want, s_lo, s_hi, codes, gains, gi):
        gi -= 1
        gain(gi)
    sw_low()
    write(grounded)
    sw_high()
    for g in gates:
        gate_high[g]()
    for sel, v in down:
        sel_low[sel]()
        write(v)
        sel_high[sel]()
