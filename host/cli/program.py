"""The `xbar program` command: parser and run; the logic is xbar.host.program."""

from __future__ import annotations

import argparse

from xbar.host.cli import names
from xbar.host.program import program_model


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "program",
        help="write-verify a model's crossbar plan onto a board and LOAD it",
        description="Write-verify every cell of MODEL's crossbar plan (resuming an "
        "interrupted run), then LOAD the model's tile map.",
    )
    p.add_argument("--port", required=True, help="device, pty or emu:// URL")
    names.add_model(p, "model artifact (.xbar) from `xbar train`")
    p.add_argument("--report", help="per-cell CSV (default: MODEL.cells.csv)")
    p.add_argument("--state", help="progress file for resuming (default: MODEL.progress.json)")
    p.add_argument("--fresh", action="store_true", help="ignore saved progress, program all")
    p.add_argument(
        "--tolerance",
        type=names.positive_float,
        help="S (default: the write-verify tolerance the model was trained for, "
        "else half a weight step)",
    )
    p.add_argument(
        "--max-pulses", type=names.positive_int, default=100, help="per cell (default: 100)"
    )
    p.add_argument(
        "--passes",
        type=names.positive_int,
        default=2,
        help="write-verify passes; later ones retry unconverged cells (default 2)",
    )
    p.add_argument(
        "--no-compensate",
        dest="compensate",
        action="store_false",
        help="write every cell to its own plan target (no pair compensation)",
    )
    p.add_argument(
        "--no-remap",
        dest="remap",
        action="store_false",
        help="keep the hidden units where the plan put them, whatever cells failed",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--timeout", type=names.positive_float, default=10.0, help="link timeout, s (default 10)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    program_model(
        args.port,
        names.model(args),
        report=args.report,
        state=args.state,
        fresh=args.fresh,
        tolerance=args.tolerance,
        max_pulses=args.max_pulses,
        passes=args.passes,
        compensate=args.compensate,
        remap=args.remap,
        timeout=args.timeout,
        as_json=args.json,
    )
    return 0
