"""`xbar bench energy`: energy per inference with its breakdown, beside a digital baseline.

    xbar bench energy --port P --model MODEL.xbar [--n 50] [--png energy.png]

What is measured depends on the board:

* an emulated board opened here (`emu://…`): the emulator's energy ledger between two
  marks around the stream — every part (array, array wiring, DACs, ADCs, TIAs, switches,
  MCU, link) as the emulator accounts it in board time. **Measured (emulator ledger).**
* any other port (a real board, a pty served by another process): only the firmware's
  STATS counters are available (busy time, conversions, frames). The energy shown is
  **estimated** from them with the emulator's part figures (`PowerFigures`): MCU busy
  time × active power, conversions × ADC energy, link bytes × link energy. Static draw of
  the analog parts cannot be seen from the counters and is left out.

The digital int8 baseline is the same network computed by the same MCU without the
crossbar: **a cycle-count estimate** (`digital_baseline`), never a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xbar.emulator.energy import PowerFigures
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

    @property
    def total(self) -> float:
        return sum(self.per_inference.values())


def measure(board: Board, plan: Any, x: np.ndarray, power: PowerFigures) -> EnergyReport:
    """LOAD the plan's tile map, stream x, and account the energy of the stream."""
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
        board.stream(x)
        emulated.settle()
        spent = model.ledger.since(mark)
        seconds = (model.clock.cycles - c0) / model.clock.mcu_hz / n
        link = board.link.bytes_in - in0 + board.link.bytes_out - out0
        per = {k: v / n for k, v in spent.items() if v > 0}
        return EnergyReport(
            n,
            per,
            True,
            seconds,
            baseline,
            link // n,
            "measured: the emulator's energy ledger over the stream",
        )
    before = board.stats()
    board.stream(x)
    after = board.stats()
    link = board.link.bytes_in - in0 + board.link.bytes_out - out0
    busy = (after["busy_us"] - before["busy_us"]) * 1e-6
    conversions = after["conversions"] - before["conversions"]
    per = {
        "mcu": busy * power.mcu_active_w / n,
        "adc": conversions * power.adc_conversion_j / n,
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
    lines = [
        f"energy per inference over {r.n} inferences, {kind}:",
        f"  {'part':<14} {'µJ':>12} {'share':>7}",
    ]
    total = r.total
    for part, joules in sorted(r.per_inference.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {part:<14} {joules * 1e6:12.4f} {joules / total:7.1%}")
    lines.append(f"  {'total':<14} {total * 1e6:12.4f}")
    b = r.baseline
    lines += [
        f"board time {r.board_seconds * 1e3:.3f} ms per inference; link {r.link_bytes} B per "
        f"inference (both directions)",
        f"digital int8 baseline, same network on the same MCU (ESTIMATE from a cycle count: "
        f"{b.macs} MACs × {CYCLES_PER_MAC} + outputs × {CYCLES_PER_OUTPUT} cycles = "
        f"{b.cycles} cycles at {MCU_HZ / 1e6:.0f} MHz): {b.seconds * 1e3:.3f} ms, "
        f"{b.joules * 1e6:.4f} µJ MCU energy (link excluded)",
        f"note: {r.note}",
    ]
    return lines


def plot(r: EnergyReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cmp) = plt.subplots(1, 2, figsize=(10, 4))
    bottom = 0.0
    label = "analog (measured)" if r.measured else "analog (estimated)"
    for i, (part, joules) in enumerate(sorted(r.per_inference.items(), key=lambda kv: -kv[1])):
        ax.bar(label, joules * 1e6, bottom=bottom, color=f"C{i % 10}", label=part)
        bottom += joules * 1e6
    ax.set(ylabel="µJ per inference", title="Analog board, by part")
    ax.legend(fontsize=8, loc="upper right")
    cmp.bar(
        [label, "digital int8\n(cycle estimate)"],
        [r.total * 1e6, r.baseline.joules * 1e6],
        color=["C0", "0.5"],
    )
    cmp.set(yscale="log", ylabel="µJ per inference (log)", title="Total vs digital baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the job of `xbar bench energy` ------------------------------------------------------
def bench_energy(
    port: str,
    model: str,
    state: str | None = None,
    dataset: str = "digits",
    n: int = 20,
    png: str = "energy.png",
    timeout: float = 30.0,
) -> None:
    """Energy per inference of `model` on the board at `port`: print the table, plot to `png`."""
    from xbar.host.program import checked_plan
    from xbar.host.stream import InputError, dataset_inputs
    from xbar.training.artifact import load_artifact

    if n < 1:
        raise InputError(f"--n {n}: must be at least 1")
    png_path = Path(png)
    if not png_path.parent.exists():
        raise InputError(f"--png {png}: folder {png_path.parent} does not exist")
    art = load_artifact(model)
    x, _ = dataset_inputs(art, dataset)
    with Board.open(port, timeout=timeout) as board:
        _art, plan = checked_plan(board, model, state)
        emulated = getattr(board.link.port, "board", None)
        power = getattr(getattr(emulated, "model", None), "power", None) or PowerFigures()
        report = measure(board, plan, x[:n], power)
    for line in table(report):
        print(line)
    plot(report, png_path)
    print(f"wrote {png}")
