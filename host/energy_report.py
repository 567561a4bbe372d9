"""`xbar bench energy`: energy per inference with its breakdown, beside a digital baseline.

    xbar bench energy --port P --model MODEL.xbar [--n 50] [--png energy.png]

What is measured depends on the board:

* an emulated board opened here (`emu://…`): the emulator's energy ledger between two
  marks around the stream — every part (array, array wiring, DACs, ADCs, TIAs, switches,
  MCU, link) as the emulator accounts it in board time. **Measured (emulator ledger).**
* any other port (a real board, a pty served by another process): only the firmware's
  STATS counters are available (busy time, conversions, frames). The energy shown is
  **estimated** from them with the emulator's part figures (`PowerFigures`): MCU busy
  time × active power, conversions × the ADC's awake power over one 500 kSPS cycle, link
  bytes × link energy. Static draw of the analog parts between conversions cannot be
  seen from the counters and is left out (a lower bound).

The digital int8 baseline is the same network computed by the same MCU without the
crossbar: **a cycle-count estimate** (`digital_baseline`), never a measurement.

The third column, **integrated macro (projection)**, prices the same network and tiling
on an integrated RRAM compute-in-memory macro (`xbar.emulator.macro`): array read energy
V²·G·t from the conductances the board holds, per-conversion ADC, per-row driver and
per-output accumulation energies from published designs, each cited there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xbar.emulator.energy import PowerFigures
from xbar.emulator.macro import MacroProjection, project
from xbar.emulator.parts import ADC_CYCLE_S
from xbar.host.board import Board

MCU_HZ = 125_000_000  # RP2040 system clock of the reference board
# ARMv6-M (Cortex-M0+) instruction timings: LDRB/LDRSB 2 cycles each (input, weight),
# MULS 1, ADDS 1, pointer increments 2 × 1, loop branch taken 2 (unrolled by 4: ~0.5 per
# MAC) → about 8 cycles per int8 multiply-accumulate in a tight C loop.
CYCLES_PER_MAC = 8
# Per output: bias load and add, requantisation (32×16 multiply split in two MULS, shift,
# rounding), clamp, ReLU, store: about 30 cycles.
CYCLES_PER_OUTPUT = 30


@dataclass(frozen=True)
class Baseline:
    macs: int
    cycles: int
    seconds: float
    joules: float  # MCU active power over those cycles


def digital_baseline(layer_shapes: list[tuple[int, int]], power: PowerFigures) -> Baseline:
    """Estimated cost of one int8 inference in software on the board's MCU: MACs ×
    CYCLES_PER_MAC + outputs × CYCLES_PER_OUTPUT cycles at MCU_HZ, at the MCU's active
    power (the emulator's `PowerFigures.mcu_active_w`). An estimate from instruction
    timings, not a measurement."""
    macs = sum(n_in * n_out for n_in, n_out in layer_shapes)
    outputs = sum(n_out for _, n_out in layer_shapes)
    cycles = macs * CYCLES_PER_MAC + outputs * CYCLES_PER_OUTPUT
    seconds = cycles / MCU_HZ
    return Baseline(macs, cycles, seconds, seconds * power.mcu_active_w)


@dataclass
class EnergyReport:
    n: int
    per_inference: dict[str, float]  # J per part
    measured: bool  # True: the emulator's ledger; False: estimated from STATS counters
    board_seconds: float  # per inference (board time, or firmware busy time)
    baseline: Baseline
    link_bytes: int  # per inference, both directions
    note: str
    macro: MacroProjection | None = None  # from the board's conductances (emulated only)
    board_name: str = ""  # profile and part figures ("xbar-5x64x64, rev B")
    rating_errors: int = 0  # parts driven outside their ratings during the stream

    @property
    def total(self) -> float:
        return sum(self.per_inference.values())


def measure(board: Board, plan: Any, x: np.ndarray, power: PowerFigures) -> EnergyReport:
    """LOAD the plan's tile map, stream x, and account the energy of the stream; on an
    emulated board also project the same inferences onto an integrated macro."""
    shapes = [(layer.n_in, layer.n_out) for layer in plan.layers]
    baseline = digital_baseline(shapes, power)
    board.load(plan, program=False)
    board.stream(x[:1])  # warm-up: the first inference's one-off work stays outside
    emulated = getattr(board.link.port, "board", None)
    n = len(x)
    in0, out0 = board.link.bytes_in, board.link.bytes_out
    if emulated is not None:
        model = emulated.model
        emulated.settle()
        mark, c0 = model.ledger.mark(), model.clock.cycles
        errors0 = model.diagnostics["rating_errors"]
        board.stream(x)
        emulated.settle()
        spent = model.ledger.since(mark)
        seconds = (model.clock.cycles - c0) / model.clock.mcu_hz / n
        link = board.link.bytes_in - in0 + board.link.bytes_out - out0
        per = {k: v / n for k, v in spent.items() if v > 0}
        arrays = {t.array for layer in plan.layers for t in layer.tiles}
        macro = project(plan, {a: model.conductances(a) for a in arrays}, x)
        return EnergyReport(
            n,
            per,
            True,
            seconds,
            baseline,
            link // n,
            "measured: the emulator's energy ledger over the stream",
            macro=macro,
            board_name=f"{model.profile.name}, {model.power.name}",
            rating_errors=model.diagnostics["rating_errors"] - errors0,
        )
    before = board.stats()
    board.stream(x)
    after = board.stats()
    link = board.link.bytes_in - in0 + board.link.bytes_out - out0
    busy = (after["busy_us"] - before["busy_us"]) * 1e-6
    conversions = after["conversions"] - before["conversions"]
    per = {
        "mcu": busy * power.mcu_active_w / n,
        # each conversion at least one 500 kSPS cycle of the awake ADC's power
        "adc": conversions * (power.adc_conversion_j + power.adc_static_w * ADC_CYCLE_S) / n,
        "link": link * power.link_byte_j / n,
    }
    return EnergyReport(
        n,
        per,
        False,
        busy / n,
        baseline,
        link // n,
        "estimated from the firmware's STATS counters (busy time, "
        "conversions) and link bytes with the emulator's part figures; "
        "static analog power not included",
    )


def table(r: EnergyReport) -> list[str]:
    kind = "measured (emulator ledger)" if r.measured else "ESTIMATED from STATS counters"
    on = f" on {r.board_name}" if r.board_name else ""
    lines = [
        f"energy per inference over {r.n} inferences{on}, {kind}:",
        f"  {'part':<22} {'µJ':>14} {'share':>7}",
    ]
    total = r.total
    for part, joules in sorted(r.per_inference.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {part:<22} {joules * 1e6:14.4f} {joules / total:7.1%}")
    lines.append(f"  {'total':<22} {total * 1e6:14.4f}")
    b = r.baseline
    lines += [
        f"board time {r.board_seconds * 1e3:.3f} ms per inference; link {r.link_bytes} B per "
        f"inference (both directions)",
    ]
    if r.measured:
        lines.append(f"parts outside their ratings during the stream: {r.rating_errors}")
    lines += [
        f"digital int8 baseline, same network on the same MCU (ESTIMATE from a cycle count: "
        f"{b.macs} MACs × {CYCLES_PER_MAC} + outputs × {CYCLES_PER_OUTPUT} cycles = "
        f"{b.cycles} cycles at {MCU_HZ / 1e6:.0f} MHz): {b.seconds * 1e3:.3f} ms, "
        f"{b.joules * 1e6:.4f} µJ MCU energy (link excluded)",
    ]
    m = r.macro
    if m is not None:
        lines.append(
            f"integrated macro (projection, {m.figures.node}): {m.total * 1e9:.4f} nJ per "
            f"inference — {m.conversions} conversions, {m.rows} activated rows, "
            f"{m.outputs} accumulations"
        )
        for part, joules in m.parts.items():  # "macro:" keeps them apart from the board's
            lines.append(f"  macro: {part:<22} {joules * 1e9:12.4g} nJ")
        lines.append(f"  source: {m.figures.source}")
    lines.append(f"note: {r.note}")
    return lines


def plot(r: EnergyReport, path: Path, title: str = "") -> None:
    """Three stacked bars side by side, each on its own scale: the board's ledger by
    part, the digital baseline, the macro projection by component."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, dict[str, float], float, str]] = [
        (
            "analog board (measured)" if r.measured else "analog board (estimated)",
            r.per_inference,
            1e3,
            "mJ",
        ),
        ("digital int8 (cycle estimate)", {"MCU": r.baseline.joules}, 1e6, "µJ"),
    ]
    if r.macro is not None:
        panels.append(("integrated macro (projection)", r.macro.parts, 1e9, "nJ"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 5.2))
    for ax, (label, parts, scale, unit) in zip(np.atleast_1d(axes), panels, strict=True):
        bottom = 0.0
        for i, (part, joules) in enumerate(sorted(parts.items(), key=lambda kv: -kv[1])):
            ax.bar([0], [joules * scale], bottom=bottom, color=f"C{i % 10}", label=part, width=0.6)
            bottom += joules * scale
        ax.set_xticks([0], [label])
        ax.set_xlim(-0.6, 0.6)
        ax.set_ylabel(f"{unit} per inference")
        ax.set_title(f"{bottom:.4g} {unit}", fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    head = title or f"Energy per inference on {r.board_name or 'the board'}"
    fig.suptitle(f"{head} ({r.n} inferences)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---- programming energy (`xbar program`) ----------------------------------------------
def ledger_mark(board: Board) -> tuple[Any, dict[str, float]] | None:
    """A mark on an emulated board's energy ledger (None on any other board: a real
    board's energy is not visible from the host)."""
    emulated = getattr(board.link.port, "board", None)
    if emulated is None:
        return None
    emulated.settle()
    return emulated, emulated.model.ledger.mark()


def write_verify_energy(mark: tuple[Any, dict[str, float]] | None, cells: int) -> str | None:
    """One line: the energy spent since `mark` (ledger_mark), in total and per cell
    written, with the part that took most and the pulses' own share in the array."""
    if mark is None:
        return None
    emulated, before = mark
    emulated.settle()
    spent = emulated.model.ledger.since(before)
    total = sum(spent.values())
    top, top_j = max(spent.items(), key=lambda kv: kv[1])
    per_cell = f", {total / cells * 1e6:.2f} µJ per cell written ({cells})" if cells else ""
    return (
        f"write-verify energy (emulator ledger, {emulated.model.power.name}): "
        f"{total * 1e3:.3f} mJ in total{per_cell}; most in {top} ({top_j / total:.0%}), "
        f"pulses and reads in the array {spent.get('array', 0.0) * 1e6:.3f} µJ"
    )


# ---- the job of `xbar bench energy` ------------------------------------------------------
def bench_energy(
    port: str,
    model: str,
    state: str | None = None,
    dataset: str | None = None,
    n: int = 20,
    png: str = "energy.png",
    timeout: float = 30.0,
) -> EnergyReport:
    """Energy per inference of `model` on the board at `port`: print the table, plot to
    `png`, return the report."""
    from xbar.host.program import checked_plan
    from xbar.host.stream import InputError, dataset_inputs
    from xbar.training.artifact import load_artifact

    if n < 1:
        raise InputError(f"--n {n}: must be at least 1")
    png_path = Path(png)
    if not png_path.parent.exists():
        raise InputError(f"--png {png}: folder {png_path.parent} does not exist")
    art = load_artifact(model)
    x, _ = dataset_inputs(art, dataset or str(art.metadata.get("task", "digits")))
    with Board.open(port, timeout=timeout) as board:
        _art, plan = checked_plan(board, model, state)
        emulated = getattr(board.link.port, "board", None)
        power = getattr(getattr(emulated, "model", None), "power", None) or PowerFigures()
        report = measure(board, plan, x[:n], power)
    for line in table(report):
        print(line)
    plot(report, png_path, f"{Path(model).name} on {report.board_name or port}")
    print(f"wrote {png}")
    return report
