"""The board commands of `xbar`: flash, program, infer, characterize, bench energy.

One module per command; this one only registers them on the CLI (host/cli/main.py loads it).
"""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    from xbar.host import characterize, energy_report, flash, program, stream

    for module in (flash, program, stream, characterize):
        module.add_parser(commands)
    bench = commands.add_parser(
        "bench",
        help="benchmarks against a board (energy per inference)",
        description="Benchmarks run against a board, real or emulated.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    energy_report.add_parser(sub)
