"""The `xbar infer` command: parser and run; the logic is xbar.host.stream (streaming
inputs through a programmed board)."""

from __future__ import annotations

import argparse

import numpy as np
from xbar.host.cli import names
from xbar.host.cli.output import text_or_json
from xbar.host.stream import DEFAULT_BAUD, InferReport, infer


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "infer",
        help="stream inputs through a programmed board: accuracy, speed, link",
        description="Stream a dataset or an .npy file through the board (several frames in "
        "flight) and compare with the digital int8 reference.",
    )
    p.add_argument("--port", required=True, help="device, pty or emu:// URL")
    p.add_argument("--model", required=True, help="model artifact (.xbar) from `xbar train`")
    p.add_argument(
        "--state",
        help="`xbar program`'s progress file, for where it placed the "
        "hidden units (default: MODEL.progress.json)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=["digits", "iris"], help="a bundled test split")
    src.add_argument("--input", help=".npy inputs: (n, n_in) uint8 codes or float values")
    p.add_argument("--labels", help="--input: .npy labels (n,) for the accuracy")
    p.add_argument("--limit", type=names.positive_int, help="stream only the first N inputs")
    p.add_argument(
        "--window", type=names.positive_int, help="frames in flight (default: the board's)"
    )
    p.add_argument(
        "--baud",
        type=names.positive_int,
        default=DEFAULT_BAUD,
        help=f"line rate for the link efficiency (default {DEFAULT_BAUD})",
    )
    p.add_argument("--save", help="write the board's outputs (n, n_out) to this .npy")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--timeout", type=names.positive_float, default=10.0, help="link timeout, s (default 10)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def job() -> InferReport:
        return infer(
            args.port,
            args.model,
            state=args.state,
            dataset=args.dataset,
            inputs=args.input,
            labels=args.labels,
            limit=args.limit,
            window=args.window,
            baud=args.baud,
            save=args.save,
            timeout=args.timeout,
        )

    def to_json(report: InferReport) -> dict:
        s = report.stream
        return {
            "inputs": len(report.predictions),
            "accuracy": report.accuracy,
            "reference_accuracy": report.reference_accuracy,
            "agreement_with_reference": report.agreement,
            "inferences_per_s": report.throughput,
            "wall_s": s.wall_s,
            "latency_median_s": float(np.median(s.latencies)) if len(s.latencies) else None,
            "retried": s.retried,
            "wire_bytes_out": s.wire_bytes_out,
            "wire_bytes_in": s.wire_bytes_in,
            "predictions": report.predictions.tolist(),
        }

    return text_or_json(args.json, job, to_json)
