"""The `xbar model` command: parser and run; the logic is xbar.host.model."""

from __future__ import annotations

import argparse

from xbar.host import model
from xbar.host.cli import names
from xbar.training.artifact import MIN_AGREEMENT


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``model`` on the ``xbar`` command's subparsers."""
    p = subparsers.add_parser(
        "model",
        help="inspect or check a model artifact (.xbar)",
        description="A model artifact holds the int8 TFLite reference, the integer model, "
        "the crossbar plan, the device model and metadata.",
    )
    sub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    s = sub.add_parser("show", help="device, plan, accuracies, certificate, versions")
    names.add_model(s, "a .xbar file")
    s.add_argument("--json", action="store_true", help="print the metadata and plan mapping")
    s.set_defaults(func=run_show)
    c = sub.add_parser(
        "check",
        help="run the TFLite file in LiteRT and compare it with the integer model",
        description="Runs model.tflite in the LiteRT interpreter on the task's test set (or "
        "--inputs) and compares its logits with the integer model's. Exit 1 if fewer than "
        f"{MIN_AGREEMENT:.0%} of the predictions agree.",
    )
    names.add_model(c, "a .xbar file")
    c.add_argument(
        "--inputs",
        help="inputs (n, features) as .npy or .csv, real values "
        "(default: the test set of the artifact's task)",
    )
    c.add_argument("--codes", action="store_true", help="--inputs are uint8 codes 0..255")
    c.add_argument("--labels", help="labels (n,) as .npy or .csv, for accuracies")
    c.add_argument(
        "--seed",
        type=int,
        help="task split seed (default: the artifact's split_seed or seed, else 0)",
    )
    c.set_defaults(func=run_check)


def run_show(args: argparse.Namespace) -> int:
    model.show(names.model(args), args.json)
    return 0


def run_check(args: argparse.Namespace) -> int:
    model.check(names.model(args), args.inputs, args.codes, args.labels, args.seed)
    return 0
