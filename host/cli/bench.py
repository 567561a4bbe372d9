"""The `xbar bench` command (`xbar bench energy`): parser and run; the logic is
xbar.host.energy_report."""

from __future__ import annotations

import argparse
import dataclasses

from xbar.host.cli import names
from xbar.host.cli.output import text_or_json
from xbar.host.energy_report import EnergyReport, bench_energy


def add_parser(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="benchmarks against a board (energy per inference)",
        description="Benchmarks run against a board, real or emulated.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    _add_energy(sub)


def _add_energy(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "energy",
        help="energy per inference by part, beside a digital int8 estimate and an "
        "integrated-macro projection",
        description="Stream test inputs and report energy per inference by part (measured "
        "by the emulator's ledger on emu:// boards, estimated from STATS elsewhere), the "
        "same network as int8 software on the MCU (a cycle-count estimate) and on an "
        "integrated RRAM macro (a projection from published per-operation energies).",
    )
    p.add_argument("--port", required=True, help="device, pty or emu:// URL")
    p.add_argument("--model", required=True, help="model artifact (.xbar)")
    p.add_argument(
        "--state",
        help="`xbar program`'s progress file, for where it placed the "
        "hidden units (default: MODEL.progress.json)",
    )
    p.add_argument(
        "--dataset",
        choices=["digits", "iris"],
        help="inputs from this bundled test split (default: the model's own task)",
    )
    p.add_argument("--n", type=names.positive_int, default=20, help="inferences (default 20)")
    p.add_argument("--png", default="energy.png", help="plot (default: energy.png)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--timeout", type=names.positive_float, default=30.0, help="link timeout, s (default 30)"
    )
    p.set_defaults(func=run_energy)


def run_energy(args: argparse.Namespace) -> int:
    def job() -> EnergyReport:
        return bench_energy(
            args.port,
            args.model,
            state=args.state,
            dataset=args.dataset,
            n=args.n,
            png=args.png,
            timeout=args.timeout,
        )

    def to_json(report: EnergyReport) -> dict:
        return {**dataclasses.asdict(report), "total_J": report.total, "png": args.png}

    return text_or_json(args.json, job, to_json)
