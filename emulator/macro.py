"""What the same network and tiling would cost on an integrated memristor macro.

A projection, not a measurement: the board's crossbar plan, its programmed conductances
and the inference inputs, priced with per-operation energies published for an integrated
RRAM compute-in-memory design (:class:`MacroFigures`, every figure with its source). Per
inference and per tile (one MVM of ``in_len`` rows and ``2 · out_len`` columns):

* **array read**: Σ V_i² · G_ij · t_read over the tile's cells, with V_i the read voltage
  the board applies for input i (``x_i · k · DAC_LSB``), G the conductances the board holds
  and t_read the macro's read cycle;
* **ADC**: one conversion per column of the tile;
* **row drivers**: one driver event per activated row (input ≠ 0);
* **digital accumulation**: one shift-and-add per output and tile (pair difference,
  partial sums across tiles, bias and requantisation).

Inputs are applied as one analog amplitude per row, as the board does (not bit-serially);
bit-serial macros convert once per input bit, which multiplies the ADC term by the input
bits. Layer inputs after the first are the int8 reference's activations
(``firmware/quant.py``), the values the board's layers receive when they match it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from xbar.firmware import profiles as fw
from xbar.firmware import quant


@dataclass(frozen=True)
class MacroFigures:
    """Per-operation energies of an integrated RRAM macro, with their sources.

    ISAAC (A. Shafiee et al., "ISAAC: a convolutional neural network accelerator with
    in-situ analog arithmetic in crossbars", ISCA 2016, Table I "ISAAC parameters",
    32 nm, 100 ns crossbar read cycle; a design study whose ADC figure is that of a
    published SAR ADC): 8-bit ADC at 1.28 GS/s, 16 mW → 12.5 pJ per conversion; 1-bit
    DACs, 1024 per IMA for 4 mW → 0.39 pJ per row activation per 100 ns cycle (a
    multi-level row driver costs more: a lower bound); shift-and-add, 4 per IMA for
    0.2 mW → 5 pJ per operation per cycle. Figures as commonly quoted from that table;
    not verified here against the paper.

    NeuRRAM (W. Wan et al., Nature 608, 504–512, 2022; 130 nm CMOS, 48 RRAM CIM cores of
    256 × 256, measured) reports twice the energy efficiency of earlier RRAM-CIM chips at
    4-bit precision; it is named as the measured reference point of the field, its
    per-operation figures are not used here.
    """

    node: str = "32 nm CMOS (ISAAC, ISCA 2016)"
    t_read_s: float = 100e-9
    adc_j: float = 16e-3 / 1.28e9
    row_j: float = 4e-3 / 1024 * 100e-9
    accumulate_j: float = 0.2e-3 / 4 * 100e-9
    source: str = (
        "ISAAC (Shafiee et al., ISCA 2016) Table I per-operation energies at 32 nm; array "
        "read V²·G·t from the board's conductances and read voltages"
    )


@dataclass
class MacroProjection:
    """Joules per inference by component, and the counts behind them."""

    array_j: float
    adc_j: float
    row_driver_j: float
    accumulate_j: float
    conversions: int  # per inference
    rows: int  # activated rows per inference (mean over the inputs)
    outputs: int  # shift-and-adds per inference
    figures: MacroFigures

    @property
    def parts(self) -> dict[str, float]:
        return {
            "array read (V²·G·t)": self.array_j,
            "ADC": self.adc_j,
            "row drivers": self.row_driver_j,
            "digital accumulation": self.accumulate_j,
        }

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts_j": self.parts,
            "total_j": self.total,
            "conversions": self.conversions,
            "rows": self.rows,
            "outputs": self.outputs,
            "figures": asdict(self.figures),
        }


def layer_inputs(plan: Any, x: np.ndarray) -> list[np.ndarray]:
    """Each layer's uint8 inputs (N, n_in) for inputs x: x itself, then the int8
    reference's activations (the firmware's own arithmetic, ``firmware/quant.py``)."""
    x = np.asarray(x, dtype=np.int64)
    out = [x]
    for layer in plan.layers[:-1]:
        w, b = layer.weights.tolist(), layer.bias.tolist()
        nxt = [
            quant.reference_layer(
                w,
                b,
                [int(v) for v in row],
                layer.multiplier,
                layer.shift,
                layer.out_min,
                layer.out_max,
                layer.relu,
            )[0]
            for row in out[-1]
        ]
        out.append(np.asarray(nxt, dtype=np.int64))
    return out


def project(
    plan: Any,
    conductances: Mapping[int, np.ndarray],
    x: np.ndarray,
    figures: MacroFigures | None = None,
) -> MacroProjection:
    """Energy per inference (mean over the rows of x, uint8 inputs) of ``plan`` on a macro
    holding ``conductances`` ({array: (rows, cols) S}, e.g. the board's)."""
    f = figures or MacroFigures()
    x = np.atleast_2d(np.asarray(x))
    n = len(x)
    array_j = 0.0
    rows_on = 0
    conversions = outputs = 0
    for layer, xin in zip(plan.layers, layer_inputs(plan, x), strict=True):
        volts = xin * (layer.k * fw.DAC_LSB)  # (N, n_in) read voltage of every row
        for t in layer.tiles:
            g = np.asarray(conductances[t.array])[
                t.row0 : t.row0 + t.in_len, t.col0 : t.col0 + 2 * t.out_len
            ]
            v = volts[:, t.in_start : t.in_start + t.in_len]
            array_j += float(((v * v) @ g.sum(axis=1)).sum()) * f.t_read_s
            rows_on += int(np.count_nonzero(v))
            conversions += 2 * t.out_len
            outputs += t.out_len
    rows = rows_on / n
    return MacroProjection(
        array_j=array_j / n,
        adc_j=conversions * f.adc_j,
        row_driver_j=rows * f.row_j,
        accumulate_j=outputs * f.accumulate_j,
        conversions=conversions,
        rows=round(rows),
        outputs=outputs,
        figures=f,
    )
