"""The firmware's tiled inference for N inputs, computed from a board model's state.

`predict(board, blob, inputs)` gives, for each input in order, what the firmware answers
to INFER (`firmware/inference.py` ``Model.run``, ``hal.scan``, ``drivers.Adc.scan``) on
that board, without running the firmware: the same tiles, the same gain ranging per
column, the same ADC frames and therefore the same per-chip sample counters, the same
counter-based read noise (``board.sample_normals``), the same TIA/ADC quantisation
(``board.convert``) and the same integer arithmetic (``firmware/quant.py``). So on a board
whose firmware has just loaded ``blob``, the outputs equal the board's own for the same
seed, bit for bit (``tests/test_infer_batch.py`` checks it against the in-process runtime,
``tests/test_host_e2e.py`` against the MicroPython one).

What it relies on: each conversion happens after the firmware's DAC settling waits (so
line voltages are final), and conductances do not change during the stream. Reads stay
below the cells' disturb floor, so only drift can change them: with drift on, the
conductances are those of the board's present drift epoch, and outputs match only while
the board's stream stays within that epoch. Board time and energy are not computed
(they depend on the firmware's instruction timing); `emulator/batch.py` is the batch
path for those, on the reference MVM schedule.

The board's state is not changed (operators are solved outside its cache; only the
network's solve counters count them), so no snapshot is needed while its firmware is idle;
take ``hw.lock`` (and a copy) if another thread may drive it meanwhile.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from xbar.firmware import profiles as fw
from xbar.firmware import protocol as P
from xbar.training import requant
from xbar.training.plan import Tile

from .board_model import BoardModel, convert, sample_normals
from .crossbar import DRIVEN, TIA, Operator
from .parts import DAC_MID, line_volts


@dataclass(frozen=True)
class Layer:
    """One layer of a model blob, with the per-gain fixed-point factors the firmware
    derives from it at LOAD."""

    n_in: int
    n_out: int
    relu: bool
    k: int
    g_unit: float
    m: int
    shift: int
    lo: int
    hi: int
    tiles: tuple[Tile, ...]
    biases: np.ndarray
    mul: tuple[int, ...] = field(default=())
    qshift: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class Prediction:
    outputs: np.ndarray  # (N, n_out) int: the last layer's requantised outputs (INFER)
    accumulators: np.ndarray  # (N, n_out) int: its accumulators, bias included
    samples: np.ndarray  # (adc_chips,) ADC samples per chip the N inferences take


def parse_blob(blob: bytes) -> list[Layer]:
    """The layers of a model blob (the wire format LOAD carries; the board validated it)."""
    _, n_layers, _, _ = struct.unpack_from(P.MODEL_HEADER, blob, 0)
    off = struct.calcsize(P.MODEL_HEADER)
    layers = []
    for _ in range(n_layers):
        fields = struct.unpack_from(P.MODEL_LAYER, blob, off)
        n_in, n_out, act, k, nt, _, g_unit, m, sh, lo, hi = fields[:11]
        n = len(fw.TIA_RF)
        factors = list(zip(fields[11 : 11 + n], fields[11 + n : 11 + 2 * n], strict=True))
        off += struct.calcsize(P.MODEL_LAYER)
        tiles = []
        for _ in range(nt):
            arr, _, r0, c0, i0, ni, o0, no = struct.unpack_from(P.MODEL_TILE, blob, off)
            off += struct.calcsize(P.MODEL_TILE)
            tiles.append(Tile(arr, r0, c0, i0, ni, o0, no))
        biases = np.frombuffer(blob, dtype="<i4", count=n_out, offset=off).astype(np.int64)
        off += 4 * n_out
        layers.append(
            Layer(
                n_in,
                n_out,
                act == P.ACT_RELU,
                k,
                g_unit,
                m,
                sh,
                lo,
                hi,
                tuple(tiles),
                biases,
                tuple(f[0] for f in factors),
                tuple(f[1] for f in factors),
            )
        )
    return layers


class _Adcs:
    """The ADC chains' pipeline (channel pending per chip select) and sample counters,
    stepped frame by frame as `drivers.Adc.scan` sends them."""

    def __init__(self, board: BoardModel) -> None:
        p = board.profile
        self.chain = p.adc_chain
        self.chips = p.adc_chips
        self.columns = p.columns
        self.n8 = fw.ADC_CHANNELS
        self.pending = [chain.pending for chain in board.adcs]
        self.counts = board.adc_samples.copy()
        self.start = self.counts.copy()

    def _frame(self, sel: int, command: int | None) -> np.ndarray | None:
        """CS falling edge: every chip of the chain samples the pending channel (its
        counters before the frame, or None); then `command`'s channel is pending."""
        first = sel * self.chain
        n = min(self.chain, self.chips - first)
        taken = None
        if self.pending[sel] is not None:
            taken = self.counts[first : first + n].copy()
            self.counts[first : first + n] += 1
        self.pending[sel] = command
        return taken

    def scan(self, want: np.ndarray) -> np.ndarray:
        """One conversion pass over the wanted columns (bool, global columns): the sample
        counter of each, -1 where not wanted. A MAN_Ch frame per select for its first
        channel, then per select its other channels and STDBY (`kernels.adc_plan`)."""
        chain, n8 = self.chain, self.n8
        counter = np.full(self.columns, -1, dtype=np.int64)
        cols = np.flatnonzero(want)
        if not cols.size:
            return counter
        s_lo, s_hi = cols[0] // (n8 * chain), cols[-1] // (n8 * chain)
        plan = []
        for sel in range(s_lo, s_hi + 1):
            chans = [
                ch
                for ch in range(n8)
                if any(
                    c < self.columns and want[c]
                    for c in (sel * chain * n8 + ch + n8 * p for p in range(chain))
                )
            ]
            if chans:
                plan.append((sel, chans))
        for sel, chans in plan:
            self._frame(sel, chans[0])
        for sel, chans in plan:
            for j, prev in enumerate(chans):
                taken = self._frame(sel, chans[j + 1] if j + 1 < len(chans) else None)
                for p in range(chain):
                    c = (sel * chain + p) * n8 + prev
                    if taken is not None and c < self.columns and want[c]:
                        counter[c] = taken[p]
        return counter


class _Measurement:
    """`hal.scan` of a group of tiles on the board model: line voltages in, gain-ranged
    codes out, with the ADC frames and read noise the firmware's conversions take."""

    def __init__(self, board: BoardModel) -> None:
        self.board = board
        self.p = board.profile
        self.adcs = _Adcs(board)
        self.epoch = board.cells.drift_epoch(board.clock.seconds)
        self.operators: dict[tuple[int, int, int], Operator] = {}
        p = self.p
        low = np.zeros(p.columns)
        high = np.zeros(p.columns)
        for c in range(p.columns):
            chip, ch = divmod(c, fw.ADC_CHANNELS)
            chain = board.adcs[chip // p.adc_chain]
            low[c], high[c] = chain.range_of(chip % p.adc_chain, ch)
        self.low, self.high = low, high

    def operator(self, t: Tile) -> Operator:
        key = (t.array, t.col0, t.out_len)
        if key not in self.operators:
            b, p = self.board, self.p
            # hal.scan: every line grounded or driven, the tile's columns on TIAs.
            modes = np.full(p.lines_per_array, DRIVEN, dtype=b.line_modes(t.array).dtype)
            modes[p.rows + t.col0 : p.rows + t.col0 + 2 * t.out_len] = TIA
            g = b.cells.conductance(t.array, self.epoch)
            self.operators[key] = b.network.operator(g, modes)
        return self.operators[key]

    def group(
        self, tiles: list[Tile], x: np.ndarray, k: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(codes − ADC_MID, gain index) of each tile's 2·out_len columns for input x, the
        tiles (on distinct arrays) measured together as the firmware's scan does."""
        b, p = self.board, self.p
        current = np.zeros(p.columns)
        sumsq = np.zeros(p.columns)
        want = np.zeros(p.columns, dtype=bool)
        spans = []
        for t in tiles:
            v = np.zeros(p.lines_per_array)
            xs = x[t.in_start : t.in_start + t.in_len]
            # Rows at mid-code (input 0) are grounded, not driven: 0 V either way.
            v[t.row0 : t.row0 + t.in_len] = np.where(xs != 0, line_volts(DAC_MID + xs * k), 0.0)
            ncols = 2 * t.out_len
            contrib = self.operator(t).tia[p.rows + t.col0 + np.arange(ncols)] * v
            lo = t.array * p.cols + t.col0
            current[lo : lo + ncols] = contrib.sum(axis=1)  # as the byte path reduces a column
            sumsq[lo : lo + ncols] = (contrib * contrib).sum(axis=1)
            want[lo : lo + ncols] = True
            spans.append((lo, lo + ncols))
        codes = np.zeros(p.columns, dtype=np.int64)
        gains = np.zeros(p.columns, dtype=np.int64)
        gi = fw.N_GAINS - 1
        while True:  # every column starts at the highest gain, a decade down while railed
            counter = self.adcs.scan(want)
            w = np.flatnonzero(want)
            chip = w // fw.ADC_CHANNELS
            eps = sample_normals(b.noise_key, chip, counter[w]) if b.noise.read_noise_on else None
            raw, _ = convert(
                current[w], sumsq[w], eps, fw.TIA_RF[gi], self.low[w], self.high[w], b.noise
            )
            codes[w] = raw.astype(np.int64) - fw.ADC_MID
            gains[w] = gi
            railed = np.abs(codes[w]) > fw.ADC_SAT if gi > 0 else np.zeros(w.size, dtype=bool)
            want[w[~railed]] = False
            if not railed.any():
                return [(codes[lo:hi], gains[lo:hi]) for lo, hi in spans]
            gi -= 1


def scans(tiles: tuple[Tile, ...]) -> list[list[Tile]]:
    """A layer's tiles in the groups the firmware measures together (inference.Model
    ._plan): consecutive tiles on distinct arrays."""
    groups: list[list[Tile]] = []
    for t in tiles:
        if not groups or any(u.array == t.array for u in groups[-1]):
            groups.append([])
        groups[-1].append(t)
    return groups


def predict(board: BoardModel, blob: bytes, inputs: np.ndarray) -> Prediction:
    """What the board's firmware answers to INFER for each row of `inputs` (uint8 codes,
    (N, n_in)), starting from the board's present state (module docstring)."""
    layers = parse_blob(bytes(blob))
    x_all = np.asarray(inputs)
    if x_all.ndim != 2 or x_all.shape[1] != layers[0].n_in:
        raise ValueError(f"inputs of shape {x_all.shape}; the model takes (N, {layers[0].n_in})")
    if x_all.size and (x_all.min() < 0 or x_all.max() > 255):
        raise ValueError("inputs must be uint8 codes 0..255")
    measure = _Measurement(board)
    last = layers[-1]
    outputs = np.zeros((len(x_all), last.n_out), dtype=np.int64)
    accs = np.zeros_like(outputs)
    for n, x0 in enumerate(x_all):
        x = x0.astype(np.int64)
        for layer in layers:
            acc = np.zeros(layer.n_out, dtype=np.int64)
            mul, qsh = np.asarray(layer.mul), np.asarray(layer.qshift)
            for group in scans(layer.tiles):
                for t, (codes, gains) in zip(group, measure.group(group, x, layer.k), strict=True):
                    # Pair j: G+ on column 2j, G− on 2j + 1; the TIA inverts.
                    plus, minus = codes[0::2], codes[1::2]
                    gp, gm = gains[0::2], gains[1::2]
                    acc[t.out_start : t.out_start + t.out_len] += requant.convert(
                        minus, mul[gm], qsh[gm]
                    ) - requant.convert(plus, mul[gp], qsh[gp])
            acc += layer.biases
            x = requant.requant(acc, layer.m, layer.shift, layer.lo, layer.hi, layer.relu)
        outputs[n], accs[n] = x, acc
    adcs = measure.adcs
    return Prediction(outputs, accs, adcs.counts - adcs.start)
