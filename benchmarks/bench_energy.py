"""Energy per inference by part (rev B board), beside a digital int8 estimate and an
integrated-macro projection.

`xbar bench energy`'s measurement (`host.energy_report.measure`) on the in-process emulated
board, for the demo network (digits MLP 64-64-64-10 on `xbar-5x64x64`) and iris 4-5-3 on
`xbar-10x10`, exported for pvk-best with cells placed at their targets: N held-out inputs
streamed, the emulator's energy ledger read between marks around the stream (after one
warm-up inference), every part in board time with the power states the firmware sets.
The digital int8 baseline is the same network computed in software on the same MCU — a
cycle-count **estimate** (`host.energy_report.digital_baseline`). The integrated-macro
column is a **projection** (`emulator.macro`): V²·G·t from the board's conductances plus
published per-operation ADC, row-driver and accumulation energies. Parts driven outside
their ratings are counted (`rating_errors`, must be 0).

Run: ``python -m benchmarks.bench_energy`` (options: --n-digits, --n-iris, --noise, --out).
Writes ``bench_energy.json``, ``bench_energy.md``, ``bench_energy.png`` (digits) and
``bench_energy_iris.png``.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from scipy import stats
from xbar.emulator.energy import PowerFigures
from xbar.host.board import Board
from xbar.host.energy_report import CYCLES_PER_MAC, CYCLES_PER_OUTPUT, measure, plot

from benchmarks.bench_link import DEVICE, make_artifact, place
from benchmarks.run_all import run_meta, write_results

TARGETS_MJ = {"digits": 5.0, "iris": 0.1}  # issue targets, mJ per inference


def per_inference(board: Board, emulated: Any, x: np.ndarray) -> np.ndarray:
    """Each input's energy alone (one input per stream frame, ledger marks around it):
    the spread behind the mean's 95 % interval."""
    out = []
    for i in range(len(x)):
        emulated.settle()
        before = emulated.model.ledger.total()
        board.stream(x[i : i + 1])
        emulated.settle()
        out.append(emulated.model.ledger.total() - before)
    return np.array(out)


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its two-sided 95 % Student-t interval."""
    m = float(values.mean())
    if values.size < 2:
        return m, m, m
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return m, m - half, m + half


def run_model(task: str, n: int, noise: str, out: Path) -> dict:
    """Stream n inputs of `task` through its emulated board; the report as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        art, data = make_artifact(task, Path(tmp))
    assert art.plan is not None
    x = art.quantized.quantize_input(data.x_test)[:n]
    profile = art.geometry["profile"]
    port = serial.serial_for_url(
        f"emu://{profile}?seed=0&device={DEVICE}&noise={noise}", timeout=0.05
    )
    try:
        emulated = port.board  # type: ignore[attr-defined]
        place(emulated, art)
        with Board(port, timeout=600) as board:
            report = measure(board, art.plan, x, emulated.model.power or PowerFigures())
            each = per_inference(board, emulated, x)
        diag = dict(emulated.model.diagnostics)
    finally:
        port.close()
    name = f"{task} MLP {'-'.join(map(str, art.quantized.shape))}"
    png = out / ("bench_energy.png" if task == "digits" else f"bench_energy_{task}.png")
    plot(report, png, f"{name} on {report.board_name}")
    assert report.macro is not None
    return {
        "task": task,
        "model": name,
        "profile": profile,
        "board": report.board_name,
        "n": report.n,
        "parts": report.per_inference,
        "total_j": report.total,
        "single_j": dict(zip(("mean", "low", "high"), interval(each), strict=True)),
        "target_j": TARGETS_MJ[task] * 1e-3,
        "board_ms": report.board_seconds * 1e3,
        "link_bytes": report.link_bytes,
        "baseline": asdict(report.baseline),
        "macro": report.macro.to_dict(),
        "rating_errors": report.rating_errors,
        "rating_errors_board": diag.get("rating_errors", 0),
        "adc_wake_violations": diag.get("adc_wake_violations", 0),
        "png": png.name,
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "## Energy per inference (rev B board, emulator ledger)",
        "",
        f"Command: `{meta['command']}` — {meta['machine']}, {meta['date']}.",
        "",
        f"Models exported for {DEVICE}, cells placed at their targets, noise {meta['noise']}; "
        "inputs streamed through the in-process emulated board and the energy read from the "
        "emulator's ledger between marks around the stream, per inference, in board time "
        "with the firmware's power states (analog parts on only inside each measurement and "
        "pulse). Board time is the in-process runtime's clock and firmware as committed when "
        "this ran (it changes with the firmware's speed; energy is mostly static power × "
        "board time). The digital baseline is an ESTIMATE: MACs × "
        f"{CYCLES_PER_MAC} + outputs × {CYCLES_PER_OUTPUT} cycles at 125 MHz and the MCU's "
        "active power. The integrated macro is a PROJECTION (`emulator/macro.py`, figures "
        "cited there).",
        "",
    ]
    for r in results:
        total, b, m, one = r["total_j"], r["baseline"], r["macro"], r["single_j"]
        met = "met" if one["high"] <= r["target_j"] else "NOT met"
        lines += [
            f"### {r['model']} on `{r['profile']}` ({r['board']}), {r['n']} inferences",
            "",
            "| part | µJ per inference | share |",
            "|---|---:|---:|",
        ]
        for part, joules in sorted(r["parts"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {part} | {joules * 1e6:.3f} | {joules / total:.1%} |")
        lines += [
            f"| **total (measured)** | **{total * 1e6:.3f}** | |",
            "",
            f"One input per frame (the same inputs again, ledger marks around each): "
            f"{one['mean'] * 1e3:.4g} mJ per inference, 95 % interval "
            f"[{one['low'] * 1e3:.4g}, {one['high'] * 1e3:.4g}] mJ over {r['n']} inputs. "
            f"Target ≤ {r['target_j'] * 1e3:g} mJ: {met} (judged on the interval's upper end; "
            f"streamed: {total * 1e3:.4f} mJ). Board time "
            f"{r['board_ms']:.3f} ms per inference; link {r['link_bytes']} B per inference; "
            f"parts outside their ratings: {r['rating_errors_board']} over the whole run.",
            "",
            f"Digital int8 baseline (estimate): {b['macs']} MACs, {b['cycles']} cycles = "
            f"{b['seconds'] * 1e3:.3f} ms, {b['joules'] * 1e6:.3f} µJ per inference.",
            "",
            f"Integrated macro (projection, {m['figures']['node']}): "
            f"**{m['total_j'] * 1e9:.3f} nJ** per inference "
            f"({m['conversions']} conversions, {m['rows']} activated rows, {m['outputs']} "
            "accumulations):",
            "",
            "| component | nJ per inference |",
            "|---|---:|",
        ]
        for part, joules in m["parts_j"].items():
            lines.append(f"| {part} | {joules * 1e9:.4f} |")
        lines += ["", f"Plot: `benchmarks/results/{r['png']}`.", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-digits", type=int, default=20, help="digits streamed")
    parser.add_argument("--n-iris", type=int, default=30, help="iris inputs streamed")
    parser.add_argument("--noise", default="default", choices=["default", "off"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [
        run_model("digits", args.n_digits, args.noise, out),
        run_model("iris", args.n_iris, args.noise, out),
    ]
    meta = {**run_meta("bench_energy", args, parser), "noise": args.noise, "device": DEVICE}
    write_results("bench_energy", meta, results, markdown(results, meta), args.out)


if __name__ == "__main__":
    main()
