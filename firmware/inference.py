"""Model storage (LOAD) and tiled analog inference (INFER).

LOAD streams the model blob (docs/architecture.md, model artifact) into one buffer
allocated at boot, then LOAD_END checks its CRC and parses it into flat integer tables,
so INFER only reads preallocated arrays. Weights are not in the blob: they live in the
crossbar as differential conductance pairs, programmed by the host with PROGRAM.

Per tile, input x (uint8) drives its row as DAC code 32768 + x*k; output j's pair is
columns col0 + 2j (G+) and col0 + 2j + 1 (G-). A column current I = -c * ADC_LSB / Rf
(inverting TIA), and one accumulator unit is k * DAC_LSB * g_unit amps of pair current,
so acc_j += conv(c_minus) - conv(c_plus) with conv the per-gain fixed-point factor.
"""
# ruff: noqa: UP031 (%-formatting: the cheapest formatting path on every MicroPython build)

import gc
import struct
import time
from array import array

import kernels
import profiles
import protocol
import quant
from micropython import const

_MID = const(32768)
_LF = const(19)  # layer table fields
_L_NIN = const(0)
_L_NOUT = const(1)
_L_ACT = const(2)
_L_K = const(3)
_L_T0 = const(4)
_L_NT = const(5)
_L_B0 = const(6)  # byte offset of the layer's int32 biases in the blob
_L_M = const(7)
_L_SH = const(8)
_L_LO = const(9)
_L_HI = const(10)
_L_MUL = const(11)  # 4 gains
_L_QSH = const(15)  # 4 gains
_TF = const(7)  # tile table fields: array, row0, col0, in_start, in_len, out_start, out_len

IDLE = 0
LOADING = 1
LOADED = 2


class ModelError(Exception):
    """The model blob is malformed or does not fit this board; says what and where."""


class Model:
    def __init__(self, hal, blob):
        self.hal = hal
        self.blob = blob  # geometry's model_bytes, allocated first (app.App)
        # zeroed from bytes, not from a list as long: no large temporary on the heap
        self.layers = array("i", bytes(4 * profiles.MAX_LAYERS * _LF))
        self.tiles = array("H", bytes(2 * profiles.MAX_TILES * _TF))
        self.acc = array("i", bytes(4 * profiles.MAX_WIDTH))
        self.out = array("h", bytes(2 * profiles.MAX_WIDTH))
        self.act = bytearray(profiles.MAX_WIDTH)
        self.steps = []  # per layer, what INFER reads (Model._plan)
        self.unload()

    def unload(self):
        self.state = IDLE
        self.steps = []
        self.n_layers = 0
        self.n_tiles = 0
        self.size = 0
        self.crc = 0
        self.received = 0

    # ---- LOAD --------------------------------------------------------------------
    def begin(self, size, crc):
        self.unload()
        if size < struct.calcsize(protocol.MODEL_HEADER) or size > len(self.blob):
            raise ModelError("model of %d bytes; this board holds %d" % (size, len(self.blob)))
        self.size = size
        self.crc = crc
        self.state = LOADING

    def chunk(self, offset, data):
        if offset != self.received:
            raise ModelError("chunk at offset %d, expected %d" % (offset, self.received))
        end = offset + len(data)
        if end > self.size:
            raise ModelError("chunk ends at %d, past the model size %d" % (end, self.size))
        self.blob[offset:end] = data
        self.received = end

    def end(self):
        if self.received != self.size:
            raise ModelError("received %d of %d model bytes" % (self.received, self.size))
        mv = memoryview(self.blob)[: self.size]
        if protocol.crc32(mv) != self.crc:
            raise ModelError("model CRC-32 mismatch")
        try:
            self._parse(mv)
        except ModelError:
            self.unload()
            raise
        self.state = LOADED

    def _parse(self, mv):
        hal = self.hal
        geom = hal.geom
        magic, nl, _, _ = struct.unpack_from(protocol.MODEL_HEADER, mv, 0)
        if bytes(magic) != protocol.MODEL_MAGIC:
            raise ModelError("bad magic %r" % bytes(magic))
        if nl < 1 or nl > profiles.MAX_LAYERS:
            raise ModelError("%d layers; 1..%d allowed" % (nl, profiles.MAX_LAYERS))
        off = struct.calcsize(protocol.MODEL_HEADER)
        lsz = struct.calcsize(protocol.MODEL_LAYER)
        tsz = struct.calcsize(protocol.MODEL_TILE)
        L = self.layers
        T = self.tiles
        nt_all = 0
        prev_out = -1
        for li in range(nl):
            if off + lsz > len(mv):
                raise ModelError("layer %d header past the end of the blob" % li)
            f = struct.unpack_from(protocol.MODEL_LAYER, mv, off)
            n_in, n_out, act, k, nt, _, g_unit, m, sh, lo, hi = f[:11]
            off += lsz
            where = "layer %d: " % li
            if n_in < 1 or n_out < 1 or n_in > profiles.MAX_WIDTH or n_out > profiles.MAX_WIDTH:
                raise ModelError(
                    where + "width %dx%d outside 1..%d" % (n_out, n_in, profiles.MAX_WIDTH)
                )
            if prev_out >= 0 and n_in != prev_out:
                raise ModelError(where + "n_in %d != previous n_out %d" % (n_in, prev_out))
            if li > 0 and (L[(li - 1) * _LF + _L_LO] < 0 or L[(li - 1) * _LF + _L_HI] > 255):
                raise ModelError(where + "previous layer's outputs must be clamped to 0..255")
            if act != protocol.ACT_NONE and act != protocol.ACT_RELU:
                raise ModelError(where + "unknown activation %d" % act)
            if k < 1 or 255 * k > hal.read_codes:
                raise ModelError(where + "input step k=%d: 255*k codes beyond the read limit" % k)
            if not g_unit > 0 or g_unit > 1.0:
                raise ModelError(where + "g_unit %r S must be in (0, 1]" % g_unit)
            # The host's conversion factors (quant.fixed: multiplier in 2^14 .. 2^15-1):
            # one ADC code at the starting (largest) Rf must be < 2^15 units (shift >= 0).
            if f[10 + 2 * profiles.N_GAINS] < 0:
                raise ModelError(
                    where + "g_unit %.3g S with k=%d: one ADC code would be >= %d accumulator"
                    " units at the top gain" % (g_unit, k, 1 << 15)
                )
            if m < 1 or m >= quant.MULT_LIMIT or sh >= quant.SHIFT_LIMIT:
                raise ModelError(where + "multiplier %d / shift %d out of range" % (m, sh))
            if lo > hi:
                raise ModelError(where + "out_min %d > out_max %d" % (lo, hi))
            if nt < 1 or nt_all + nt > profiles.MAX_TILES:
                raise ModelError(where + "%d tiles; %d allowed in all" % (nt, profiles.MAX_TILES))
            b = li * _LF
            L[b + _L_NIN] = n_in
            L[b + _L_NOUT] = n_out
            L[b + _L_ACT] = act
            L[b + _L_K] = k
            L[b + _L_T0] = nt_all
            L[b + _L_NT] = nt
            L[b + _L_M] = m
            L[b + _L_SH] = sh
            L[b + _L_LO] = lo
            L[b + _L_HI] = hi
            for gi in range(profiles.N_GAINS):
                mul = f[11 + gi]
                qs = f[11 + profiles.N_GAINS + gi]
                if qs > quant.SHIFT_MAX:
                    raise ModelError(
                        where + "g_unit %.3g S with k=%d: at gain %d (shift %d) one ADC code"
                        " rounds every reading to 0" % (g_unit, k, gi, qs)
                    )
                if mul < 1 << 14 or mul >= 1 << 15 or qs < -quant.SHIFT_MAX:
                    raise ModelError(
                        where + "gain %d: conversion factor %d / 2^%d out of range" % (gi, mul, qs)
                    )
                L[b + _L_MUL + gi] = mul
                L[b + _L_QSH + gi] = qs
            area = 0
            for ti in range(nt):
                if off + tsz > len(mv):
                    raise ModelError(where + "tile %d past the end of the blob" % ti)
                arr, _, r0, c0, i0, ni, o0, no = struct.unpack_from(protocol.MODEL_TILE, mv, off)
                off += tsz
                tw = where + "tile %d: " % ti
                if arr >= geom.arrays or ni < 1 or no < 1:
                    raise ModelError(tw + "array %d / size %dx%d invalid" % (arr, no, ni))
                if r0 + ni > geom.rows or c0 + 2 * no > geom.cols:
                    raise ModelError(
                        tw
                        + "rows %d+%d, columns %d+2x%d exceed the %dx%d array"
                        % (r0, ni, c0, no, geom.rows, geom.cols)
                    )
                if i0 + ni > n_in or o0 + no > n_out:
                    raise ModelError(
                        tw + "inputs %d+%d / outputs %d+%d exceed the layer" % (i0, ni, o0, no)
                    )
                t = (nt_all + ti) * _TF
                T[t] = arr
                T[t + 1] = r0
                T[t + 2] = c0
                T[t + 3] = i0
                T[t + 4] = ni
                T[t + 5] = o0
                T[t + 6] = no
                area += ni * no
            if area != n_in * n_out:
                raise ModelError(
                    where + "tiles cover %d weights, layer has %d" % (area, n_in * n_out)
                )
            if off + 4 * n_out > len(mv):
                raise ModelError(where + "biases past the end of the blob")
            L[b + _L_B0] = off
            for j in range(n_out):
                v = struct.unpack_from("<i", mv, off + 4 * j)[0]
                if v >= quant.BIAS_LIMIT or v <= -quant.BIAS_LIMIT:
                    raise ModelError(where + "bias %d = %d beyond +-2^29" % (j, v))
            off += 4 * n_out
            nt_all += nt
            prev_out = n_out
        if off != len(mv):
            raise ModelError("%d trailing bytes after the last layer" % (len(mv) - off))
        self._check_overlap(nt_all)
        self._plan(nl)
        self.n_layers = nl
        self.n_tiles = nt_all

    def _plan(self, nl):
        """Group each layer's tiles into scans measured together (consecutive tiles on
        distinct arrays: (hal.Scan, first tile, end tile)) and gather what INFER reads per
        layer into one tuple (self.steps), so its loop unpacks instead of indexing (gc
        first: these are this model's only allocations)."""
        self.steps = []
        gc.collect()
        L = self.layers
        T = self.tiles
        for li in range(nl):
            b = li * _LF
            t0 = L[b + _L_T0]
            end = t0 + L[b + _L_NT]
            scans = []
            while t0 < end:
                t1 = t0
                arrays = []
                while t1 < end and T[t1 * _TF] not in arrays:
                    arrays.append(T[t1 * _TF])
                    t1 += 1
                tiles = []
                for t in range(t0 * _TF, t1 * _TF, _TF):
                    tiles.append((T[t], T[t + 1], T[t + 4], T[t + 3], T[t + 2], 2 * T[t + 6]))
                scans.append((self.hal.plan(tiles), t0, t1))
                t0 = t1
            self.steps.append(
                (
                    li,
                    L[b + _L_NOUT],
                    L[b + _L_K],
                    scans,
                    b + _L_MUL,
                    b + _L_QSH,
                    L[b + _L_B0],
                    L[b + _L_M],
                    L[b + _L_SH],
                    L[b + _L_LO],
                    L[b + _L_HI],
                    1 if L[b + _L_ACT] == protocol.ACT_RELU else 0,
                    1 if li == nl - 1 else 0,
                )
            )

    def _check_overlap(self, nt):
        """Two tiles sharing a cell would need two weights in one device."""
        T = self.tiles
        for a in range(nt):
            ta = a * _TF
            for b in range(a + 1, nt):
                tb = b * _TF
                if T[ta] != T[tb]:
                    continue
                if (
                    T[ta + 1] < T[tb + 1] + T[tb + 4]
                    and T[tb + 1] < T[ta + 1] + T[ta + 4]
                    and T[ta + 2] < T[tb + 2] + 2 * T[tb + 6]
                    and T[tb + 2] < T[ta + 2] + 2 * T[ta + 6]
                ):
                    raise ModelError("tiles %d and %d overlap on array %d" % (a, b, T[ta]))

    # ---- INFER -------------------------------------------------------------------
    def n_in(self):
        return self.layers[_L_NIN]

    def n_out(self):
        return self.layers[(self.n_layers - 1) * _LF + _L_NOUT]

    def run(self, x, off=0):
        """Forward one input (n_in uint8 bytes of buffer x from offset off); results in
        self.out, the last layer's accumulators (bias included) in self.acc. Allocates
        nothing: the per-element work runs in firmware/kernels.py, which hands anything
        beyond int32 back to the exact small-int code here (_accumulate, _requant)."""
        hal = self.hal
        L = self.layers
        T = self.tiles
        codes = hal.codes
        gains = hal.gains
        acc = self.acc
        cols = hal.geom.cols
        guard = quant.ACC_GUARD
        nxt = self.act
        out = self.out
        blob = self.blob
        accumulate = kernels.accumulate
        t_start = time.ticks_us()
        hal.led.on()
        try:
            for li, n_out, k, scans, mul, qsh, b0, m, sh, lo, hi, relu, last in self.steps:
                kernels.zero(acc, n_out)
                for s, t0, t1 in scans:
                    hal.scan(s, x, off, k)
                    r = accumulate(acc, T, t0, t1, cols, codes, gains, L, mul, qsh, guard)
                    while r >= 0:  # tile r >> 16 from output r & 0xFFFF: small ints
                        t = r >> 16
                        self._accumulate(li, t, r & 0xFFFF)
                        r = accumulate(acc, T, t + 1, t1, cols, codes, gains, L, mul, qsh, guard)
                j = 0
                if 11 <= sh <= 40:
                    j = kernels.requant(
                        acc, blob, b0, n_out, m, sh, lo, hi, relu, nxt, out, last, quant.ACC_LIMIT
                    )
                if j >= 0:
                    self._requant(li, j, n_out, last)
                x = nxt
                off = 0
        finally:
            hal.led.off()
            hal.busy(t_start)
        return self.n_out()

    def _accumulate(self, li, t, j0):
        """Outputs j0 .. of tile t, just measured, in small ints (quant.convert)."""
        L = self.layers
        b = li * _LF
        T = self.tiles
        f = t * _TF
        end = T[f + 5] + T[f + 6]
        cp = T[f] * self.hal.geom.cols + T[f + 2] + 2 * (j0 - T[f + 5])
        codes = self.hal.codes
        gains = self.hal.gains
        acc = self.acc
        guard = quant.ACC_GUARD
        for j in range(j0, end):
            gp = gains[cp]
            gm = gains[cp + 1]
            a = (
                acc[j]
                + quant.convert(codes[cp + 1], L[b + _L_MUL + gm], L[b + _L_QSH + gm])
                - quant.convert(codes[cp], L[b + _L_MUL + gp], L[b + _L_QSH + gp])
            )
            if a >= guard or a <= -guard:
                raise ValueError(
                    "layer %d output %d: accumulator beyond +-2^30 (readings far"
                    " from the model's conductances)" % (li, j)
                )
            acc[j] = a
            cp += 2

    def _requant(self, li, j0, n_out, last):
        """Bias and requantisation of outputs j0 .. n_out-1 in small ints (quant.requant)."""
        L = self.layers
        b = li * _LF
        b0 = L[b + _L_B0]
        m = L[b + _L_M]
        sh = L[b + _L_SH]
        lo = L[b + _L_LO]
        hi = L[b + _L_HI]
        relu = L[b + _L_ACT] == protocol.ACT_RELU
        acc = self.acc
        blob = self.blob
        for j in range(j0, n_out):
            # int32 little-endian bias, |bias| < 2^29 (checked at LOAD): small ints only
            o = b0 + 4 * j
            top = blob[o + 3]
            if top >= 128:
                top -= 256
            a = acc[j] + ((top << 24) | (blob[o + 2] << 16) | (blob[o + 1] << 8) | blob[o])
            acc[j] = a
            y = quant.requant(a, m, sh, lo, hi, relu)
            if last:
                self.out[j] = y
            else:
                self.act[j] = y
