"""Energy per inference of the demo model, by part, beside a digital int8 estimate.

`xbar bench energy`'s measurement (`host.energy_report.measure`) on the in-process emulated
board: the demo network (digits MLP 64-64-64-10 exported for pvk-best on
`xbar-5x64x64`, cells placed at their targets), N held-out digits streamed, the
emulator's energy ledger read between marks around the stream (after one warm-up
inference): array, array wiring, DACs, ADCs, TIAs, switches, MCU and link, in board time.
The digital int8 baseline is the same network computed in software on the same MCU — a
cycle-count **estimate** (`host.energy_report.digital_baseline`), not a measurement.

Run: ``python -m benchmarks.bench_energy`` (options: --n, --noise, --out). Writes
``bench_energy.json``, ``bench_energy.md`` and ``bench_energy.png``.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from xbar.emulator.energy import PowerFigures
from xbar.host.board import Board
from xbar.host.energy_report import CYCLES_PER_MAC, CYCLES_PER_OUTPUT, measure, plot

from benchmarks.bench_link import DEVICE, make_artifact, place
from benchmarks.run_all import run_meta, write_results


def markdown(r: dict, meta: dict) -> str:
    lines = [
        "## Energy per inference (demo model, emulator ledger)",
        "",
        f"Command: `{meta['command']}` — {meta['machine']}, {meta['date']}.",
        "",
        f"{r['model']} on `{r['profile']}` ({DEVICE}, noise {meta['noise']}), {r['n']} "
        "held-out digits streamed through the in-process emulated board; energy measured "
        "by the emulator's ledger between marks around the stream, per inference. The "
        "digital baseline is an ESTIMATE: MACs × "
        f"{CYCLES_PER_MAC} + outputs × {CYCLES_PER_OUTPUT} cycles (Cortex-M0+ instruction "
        "timings) at 125 MHz and the MCU's active power. Plot: `benchmarks/results/"
        "bench_energy.png`.",
        "",
        "| part | µJ per inference | share |",
        "|---|---:|---:|",
    ]
    total = sum(r["parts"].values())
    for part, joules in sorted(r["parts"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {part} | {joules * 1e6:.3f} | {joules / total:.1%} |")
    b = r["baseline"]
    lines += [
        f"| **total (measured)** | **{total * 1e6:.3f}** | |",
        "",
        f"Board time {r['board_ms']:.3f} ms per inference; link {r['link_bytes']} B per "
        f"inference. Digital int8 baseline (estimate): {b['macs']} MACs, {b['cycles']} "
        f"cycles = {b['seconds'] * 1e3:.3f} ms, {b['joules'] * 1e6:.3f} µJ of MCU energy "
        f"per inference; the analog board's measured total is {total / b['joules']:.0f}× "
        "this estimate (static power of the TIAs, DACs and ADCs over the board time).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="digits streamed")
    parser.add_argument("--noise", default="default", choices=["default", "off"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        art, task = make_artifact("digits", Path(tmp))
    assert art.plan is not None
    x = art.quantized.quantize_input(task.x_test)[: args.n]
    url = f"emu://{art.geometry['profile']}?seed=0&device={DEVICE}&noise={args.noise}"
    port = serial.serial_for_url(url, timeout=0.05)
    try:
        emulated = port.board  # type: ignore[attr-defined]
        place(emulated, art)
        with Board(port, timeout=600) as board:
            report = measure(board, art.plan, x, emulated.model.power or PowerFigures())
    finally:
        port.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(report, out / "bench_energy.png")
    result = {
        "model": f"digits MLP {'-'.join(map(str, art.quantized.shape))}",
        "profile": art.geometry["profile"],
        "n": report.n,
        "measured": report.measured,
        "parts": report.per_inference,
        "board_ms": report.board_seconds * 1e3,
        "link_bytes": report.link_bytes,
        "baseline": asdict(report.baseline),
        "total_j": float(np.sum(list(report.per_inference.values()))),
    }
    meta = {**run_meta("bench_energy", args, parser), "noise": args.noise, "device": DEVICE}
    write_results("bench_energy", meta, [result], markdown(result, meta), args.out)


if __name__ == "__main__":
    main()
