"""The crossbar plan: a quantised network placed on a board's arrays.

`CrossbarModel` holds per layer the int8 weights, int32 bias, requantisation, activation,
the conductance mapping (g_min, g_unit, input step k) and the tile map; `to_blob()` is the
firmware's LOAD payload and `targets()` the conductance of every used cell.
`reference()` is the pure-integer forward pass the analog pipeline must match (with noise
off, within one LSB), computed with the firmware's own `quant` module.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xbar.firmware import profiles, quant
from xbar.firmware import protocol as P
from xbar.training.errors import XbarError

__all__ = [
    "DAC_LSB",
    "CrossbarModel",
    "PlanError",
    "Tile",
    "TileLayer",
    "conversion_problem",
    "gain_factors",
    "layer_record",
    "level_steps",
    "plan_tiles",
    "snap_weights",
]

DAC_LSB: float = profiles.DAC_LSB  # AD5676 step over the ±10 V span
# What the firmware's LOAD accepts (firmware/inference.py checks these limits).
FIRMWARE_MAX_LAYERS: int = profiles.MAX_LAYERS
FIRMWARE_MAX_TILES: int = profiles.MAX_TILES
FIRMWARE_MAX_WIDTH: int = profiles.MAX_WIDTH


def conversion_problem(g_unit: float, k: int) -> str | None:
    """Why LOAD would refuse a layer's ADC-code conversion (firmware/inference.py), or None.

    The firmware holds, per TIA gain, the accumulator units one ADC code is worth as a
    fixed-point multiplier and shift (`quant.fixed`); it refuses a g_unit·k so small that one
    code is worth 2^15 units or more, or so large that a code rounds to 0 at some gain. The
    same functions and constants decide here, on g_unit as the blob carries it (float32).
    """
    g = float(np.float32(g_unit))
    if not 0 < g <= 1.0:
        return f"g_unit {g_unit:.3g} S outside (0, 1] S"
    top = profiles.TIA_RF[profiles.N_GAINS - 1]
    if not g * k * profiles.DAC_LSB * top * quant.Q_START_MAX / profiles.ADC_LSB > 1.0:
        return (
            f"g_unit {g_unit:.3g} S with k={k}: one ADC code would be worth "
            f"{quant.Q_START_MAX:g} accumulator units or more"
        )
    for gain, (_, shift) in enumerate(gain_factors(g, k)):
        if shift > quant.SHIFT_MAX:
            return f"g_unit {g_unit:.3g} S with k={k}: every reading at gain {gain} rounds to 0"
    return None


def gain_factors(g_unit: float, k: int) -> list[tuple[int, int]]:
    """Per TIA gain, (multiplier, shift) of the accumulator units one ADC code is worth
    (`quant.fixed` of `quant.codes_per_unit`), in double precision from g_unit as the blob
    carries it (float32). The LOAD blob ships them, so the board, the emulator's batch path
    and the host reference convert alike; raises ValueError where no factor exists."""
    if k < 1:
        raise ValueError(f"input step k={k} must be >= 1")
    g = float(np.float32(g_unit))
    if not g > 0:  # also NaN, and a g_unit that float32 rounds to 0
        raise ValueError(f"g_unit {g_unit!r} S must be > 0 in float32")
    factors = [
        quant.fixed(quant.codes_per_unit(g, k, profiles.DAC_LSB, profiles.ADC_LSB, rf))
        for rf in profiles.TIA_RF
    ]
    if any(not -128 <= s <= 127 for _, s in factors):
        raise ValueError(f"g_unit {g_unit!r} S with k={k}: a shift beyond the blob's i8")
    return factors


def layer_record(
    n_in: int,
    n_out: int,
    relu: bool,
    k: int,
    n_tiles: int,
    g_unit: float,
    multiplier: int,
    shift: int,
    out_min: int,
    out_max: int,
    factors: list[tuple[int, int]] | None = None,
) -> bytes:
    """One layer's header in the LOAD blob (`protocol.MODEL_LAYER`); `factors` default to
    `gain_factors(g_unit, k)`."""
    fs = gain_factors(g_unit, k) if factors is None else factors
    act = P.ACT_RELU if relu else P.ACT_NONE
    return struct.pack(
        P.MODEL_LAYER,
        n_in,
        n_out,
        act,
        k,
        n_tiles,
        0,
        g_unit,
        multiplier,
        shift,
        out_min,
        out_max,
        *(m for m, _ in fs),
        *(s for _, s in fs),
    )


# ---- model -------------------------------------------------------------------------------
class PlanError(XbarError, ValueError):
    """A model does not fit the board (names the layer and what ran out)."""


@dataclass(frozen=True)
class Tile:
    array: int
    row0: int
    col0: int
    in_start: int
    in_len: int
    out_start: int
    out_len: int


@dataclass
class TileLayer:
    """One quantised layer and its placement (docs/architecture.md, model artifact)."""

    weights: np.ndarray  # int8 (n_out, n_in)
    bias: np.ndarray  # int32 (n_out,)
    multiplier: int  # 1 .. 65535
    shift: int
    relu: bool
    out_min: int
    out_max: int
    g_unit: float  # S per weight step
    k: int  # DAC codes per input step
    tiles: list[Tile] = field(default_factory=list)

    @property
    def n_in(self) -> int:
        return int(self.weights.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weights.shape[0])


def plan_tiles(
    shapes: Sequence[tuple[int, int]], arrays: int, rows: int, cols: int
) -> list[list[Tile]]:
    """Tile maps for layers of (n_out, n_in): blocks of at most rows x cols/2 weights,
    packed into vertical strips of each array in turn. Raises PlanError when they do
    not fit."""
    pairs = cols // 2
    if pairs < 1:
        raise PlanError(f"arrays of {cols} columns hold no differential pair")
    array, strip_col, strip_w, row = 0, 0, 0, rows  # force a new strip first
    out: list[list[Tile]] = []
    for li, (n_out, n_in) in enumerate(shapes):
        tiles = []
        for o0 in range(0, n_out, pairs):
            no = min(pairs, n_out - o0)
            for i0 in range(0, n_in, rows):
                ni = min(rows, n_in - i0)
                w = 2 * no
                if row + ni > rows or w > strip_w:
                    strip_col += strip_w
                    strip_w, row = w, 0
                    if strip_col + w > cols:
                        array, strip_col = array + 1, 0
                    if array >= arrays:
                        raise PlanError(
                            f"layer {li}: the {arrays} array(s) of {rows}x{cols} are full"
                        )
                tiles.append(Tile(array, row, strip_col, i0, ni, o0, no))
                row += ni
        out.append(tiles)
    return out


def level_steps(levels: Sequence[float], g_min: float, g_max: float) -> np.ndarray:
    """Weight magnitudes 0..127 whose conductance g_min + m·g_unit is the nearest step to
    one of the device's programmable levels (0 and 127 always: g_min and g_max)."""
    if not 0 < g_min < g_max:
        raise PlanError(f"conductance window {g_min}..{g_max} S is empty")
    g = np.asarray(levels, dtype=float)
    if g.ndim != 1 or not np.all(np.isfinite(g)):
        raise PlanError("device levels must be a list of finite conductances")
    steps = np.round((g - g_min) / ((g_max - g_min) / 127.0))
    steps = steps[(steps >= 0) & (steps <= 127)]
    return np.unique(np.concatenate([[0, 127], steps])).astype(np.int64)


def snap_weights(weights: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Each weight's magnitude moved to the nearest allowed step (ties to the smaller), sign
    kept: the int8 weights whose targets G± sit on the device's levels."""
    w = np.asarray(weights, dtype=np.int64)
    allowed = np.unique(np.asarray(steps, dtype=np.int64))
    mag = np.abs(w)
    hi = np.clip(np.searchsorted(allowed, mag), 0, len(allowed) - 1)
    lo = np.clip(hi - 1, 0, len(allowed) - 1)
    nearest = np.where(mag - allowed[lo] <= allowed[hi] - mag, allowed[lo], allowed[hi])
    return np.sign(w) * nearest


@dataclass
class CrossbarModel:
    """A quantised network mapped to conductances: G± = g_min + max(±w, 0) * g_unit."""

    layers: list[TileLayer]
    g_min: float

    @classmethod
    def from_layers(
        cls,
        layers: Sequence[Any],
        *,
        arrays: int,
        rows: int,
        cols: int,
        g_min: float,
        g_max: float,
        v_read: float,
    ) -> CrossbarModel:
        """Map layers with weights/bias/multiplier/shift/relu/out_min/out_max (such as
        training's QuantLayer) onto a board geometry; weight 127 maps to g_max and the
        largest input (255) to at most v_read."""
        if not 0 < g_min < g_max:
            raise PlanError(f"conductance window {g_min}..{g_max} S is empty")
        k = int(v_read / (255 * DAC_LSB))
        if k < 1:
            raise PlanError(f"read voltage {v_read} V is below one DAC step per input")
        g_unit = (g_max - g_min) / 127.0
        shapes = [tuple(np.asarray(layer.weights).shape) for layer in layers]
        maps = plan_tiles([(int(s[0]), int(s[1])) for s in shapes], arrays, rows, cols)
        out = []
        for layer, tiles in zip(layers, maps, strict=True):
            out.append(
                TileLayer(
                    weights=np.asarray(layer.weights, dtype=np.int64),
                    bias=np.asarray(layer.bias, dtype=np.int64),
                    multiplier=int(layer.multiplier),
                    shift=int(layer.shift),
                    relu=bool(layer.relu),
                    out_min=int(layer.out_min),
                    out_max=int(layer.out_max),
                    g_unit=g_unit,
                    k=k,
                    tiles=tiles,
                )
            )
        return cls(out, g_min)

    def validate(self) -> CrossbarModel:
        for li, layer in enumerate(self.layers):
            where = f"layer {li}"
            w = layer.weights
            if w.ndim != 2 or w.min(initial=0) < -127 or w.max(initial=0) > 127:
                raise PlanError(f"{where}: weights must be a 2-D int8 array in -127..127")
            if layer.bias.shape != (layer.n_out,):
                raise PlanError(f"{where}: bias shape {layer.bias.shape} != ({layer.n_out},)")
            if not 1 <= layer.multiplier < quant.MULT_LIMIT:
                raise PlanError(f"{where}: multiplier {layer.multiplier} outside 1..65535")
            if not 0 <= layer.shift < quant.SHIFT_LIMIT:
                raise PlanError(f"{where}: shift {layer.shift} outside 0..47")
            if li and self.layers[li - 1].n_out != layer.n_in:
                raise PlanError(f"{where}: n_in {layer.n_in} != previous n_out")
        return self

    def check_geometry(self, arrays: int, rows: int, cols: int) -> CrossbarModel:
        """Raise PlanError unless every tile lies on `arrays` arrays of rows x cols, no two
        share a cell and they cover each layer exactly (the firmware's LOAD checks)."""
        used: set[tuple[int, int, int]] = set()
        for li, layer in enumerate(self.layers):
            area = 0
            for ti, t in enumerate(layer.tiles):
                where = f"layer {li} tile {ti}"
                if not (
                    0 <= t.array < arrays
                    and t.row0 >= 0
                    and t.col0 >= 0
                    and t.row0 + t.in_len <= rows
                    and t.col0 + 2 * t.out_len <= cols
                ):
                    raise PlanError(f"{where} lies outside {arrays} array(s) of {rows}x{cols}")
                if (
                    t.in_len < 1
                    or t.out_len < 1
                    or t.in_start < 0
                    or t.out_start < 0
                    or t.in_start + t.in_len > layer.n_in
                    or t.out_start + t.out_len > layer.n_out
                ):
                    raise PlanError(
                        f"{where} lies outside the layer's {layer.n_out}x{layer.n_in} weights"
                    )
                cells = {
                    (t.array, t.row0 + r, t.col0 + c)
                    for r in range(t.in_len)
                    for c in range(2 * t.out_len)
                }
                if cells & used:
                    raise PlanError(f"{where} overlaps another tile")
                used |= cells
                area += t.in_len * t.out_len
            if area != layer.n_in * layer.n_out:
                raise PlanError(
                    f"layer {li}: tiles cover {area} of {layer.n_in * layer.n_out} weights"
                )
        return self

    def firmware_problem(self, conversion: bool = True) -> str | None:
        """Why the firmware's LOAD would refuse this plan (layers, width, tiles and, unless
        only the shape is asked about, each layer's conversion factors), or None."""
        if len(self.layers) > FIRMWARE_MAX_LAYERS:
            return f"{len(self.layers)} layers; the firmware takes at most {FIRMWARE_MAX_LAYERS}"
        for li, layer in enumerate(self.layers):
            if max(layer.n_in, layer.n_out) > FIRMWARE_MAX_WIDTH:
                return (
                    f"layer {li} is {layer.n_in} → {layer.n_out} wide; the firmware takes "
                    f"at most {FIRMWARE_MAX_WIDTH}"
                )
        tiles = sum(len(layer.tiles) for layer in self.layers)
        if tiles > FIRMWARE_MAX_TILES:
            return f"{tiles} tiles; the firmware takes at most {FIRMWARE_MAX_TILES}"
        for li, layer in enumerate(self.layers if conversion else ()):
            problem = conversion_problem(layer.g_unit, layer.k)
            if problem:
                return f"layer {li}: {problem}"
        return None

    # -- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form; `from_dict` reads it back and validates it."""
        return {
            "g_min": self.g_min,
            "layers": [
                {
                    "weights": layer.weights.astype(int).tolist(),
                    "bias": layer.bias.astype(int).tolist(),
                    "multiplier": layer.multiplier,
                    "shift": layer.shift,
                    "relu": layer.relu,
                    "out_min": layer.out_min,
                    "out_max": layer.out_max,
                    "g_unit": layer.g_unit,
                    "k": layer.k,
                    "tiles": [
                        [t.array, t.row0, t.col0, t.in_start, t.in_len, t.out_start, t.out_len]
                        for t in layer.tiles
                    ],
                }
                for layer in self.layers
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> CrossbarModel:
        """The plan `to_dict` wrote; raises PlanError naming the layer and field."""

        def integer(value: Any, what: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise PlanError(f"{what} = {value!r} is not an integer")
            return value

        def positive(value: Any, what: str) -> float:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (np.isfinite(value) and value > 0)
            ):
                raise PlanError(f"{what} = {value!r} is not a finite number > 0")
            return float(value)

        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise PlanError("plan: expected an object with a list of layers")
        layers = []
        for li, raw in enumerate(data["layers"]):
            where = f"plan layer {li}"
            if not isinstance(raw, dict):
                raise PlanError(f"{where}: not an object")
            try:
                weights = np.asarray(raw["weights"], dtype=np.int64)
                bias = np.asarray(raw["bias"], dtype=np.int64)
                tiles = [
                    Tile(*(integer(v, f"{where} tile {ti}") for v in t))
                    for ti, t in enumerate(raw["tiles"])
                ]
                relu = raw["relu"]
                if not isinstance(relu, bool):
                    raise PlanError(f"{where}: relu = {relu!r} is not true/false")
                k = integer(raw["k"], f"{where} k")
                if not 1 <= k <= 255:
                    raise PlanError(f"{where}: k = {k} outside 1..255")
                layers.append(
                    TileLayer(
                        weights=weights,
                        bias=bias,
                        multiplier=integer(raw["multiplier"], f"{where} multiplier"),
                        shift=integer(raw["shift"], f"{where} shift"),
                        relu=relu,
                        out_min=integer(raw["out_min"], f"{where} out_min"),
                        out_max=integer(raw["out_max"], f"{where} out_max"),
                        g_unit=positive(raw["g_unit"], f"{where} g_unit"),
                        k=k,
                        tiles=tiles,
                    )
                )
            except KeyError as exc:
                raise PlanError(f"{where}: missing field {exc}") from None
            except (TypeError, ValueError, OverflowError) as exc:
                if isinstance(exc, PlanError):
                    raise
                raise PlanError(f"{where}: bad field ({exc})") from None
        if not layers:
            raise PlanError("plan: no layers")
        return cls(layers, positive(data.get("g_min"), "plan g_min")).validate()

    def to_blob(self) -> bytes:
        """The LOAD blob (docs/architecture.md, model blob)."""
        self.validate()
        out = bytearray(struct.pack(P.MODEL_HEADER, P.MODEL_MAGIC, len(self.layers), 0, 0))
        for layer in self.layers:
            out += layer_record(
                layer.n_in,
                layer.n_out,
                layer.relu,
                layer.k,
                len(layer.tiles),
                layer.g_unit,
                layer.multiplier,
                layer.shift,
                layer.out_min,
                layer.out_max,
            )
            for t in layer.tiles:
                out += struct.pack(
                    P.MODEL_TILE,
                    t.array,
                    0,
                    t.row0,
                    t.col0,
                    t.in_start,
                    t.in_len,
                    t.out_start,
                    t.out_len,
                )
            out += struct.pack(f"<{layer.n_out}i", *(int(b) for b in layer.bias))
        return bytes(out)

    def targets(self) -> dict[int, dict[tuple[int, int], float]]:
        """Target conductance of every used cell: {array: {(row, col): G}}."""
        cells: dict[int, dict[tuple[int, int], float]] = {}
        for layer in self.layers:
            for t in layer.tiles:
                block = layer.weights[
                    t.out_start : t.out_start + t.out_len, t.in_start : t.in_start + t.in_len
                ]
                arr = cells.setdefault(t.array, {})
                for j in range(t.out_len):
                    for i in range(t.in_len):
                        w = int(block[j, i])
                        arr[(t.row0 + i, t.col0 + 2 * j)] = self.g_min + max(w, 0) * layer.g_unit
                        arr[(t.row0 + i, t.col0 + 2 * j + 1)] = (
                            self.g_min + max(-w, 0) * layer.g_unit
                        )
        return cells

    def reference(self, x: Sequence[int]) -> tuple[list[int], list[int]]:
        """Pure-integer forward of one uint8 input: (outputs, last layer accumulators)."""
        xs = [int(v) for v in x]
        acc: list[int] = []
        for layer in self.layers:
            w = layer.weights.tolist()
            xs, acc = quant.reference_layer(
                w,
                layer.bias.tolist(),
                xs,
                layer.multiplier,
                layer.shift,
                layer.out_min,
                layer.out_max,
                layer.relu,
            )
        return xs, acc
