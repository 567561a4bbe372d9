"""The `xbar train` command: parser and run; the logic is xbar.host.train."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from xbar.host.cli import names
from xbar.host.cli.output import text_or_json
from xbar.host.train import METHOD_NAMES, TrainOptions, train


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `train` on the `xbar` command's subparsers."""
    p = commands.add_parser(
        "train",
        help="noise-robust training (BayesMulti or a baseline) and model export",
        description="Train a network that keeps its accuracy under a device's noise: BayesMulti "
        "searches the noise injection α with Bayesian optimisation on a Dask cluster.",
    )
    p.add_argument(
        "--dataset",
        default="digits",
        choices=["digits", "iris"],
        help="digits or iris (default: digits)",
    )
    p.add_argument(
        "--arch",
        choices=["mlp", "cnn"],
        default="mlp",
        help="network family (cnn: digits only; no artifact, the exporter takes MLPs)",
    )
    p.add_argument(
        "--device",
        type=names.device,
        default="pvk-median",
        help="device preset whose σ is the target (default: pvk-median)",
    )
    p.add_argument("--method", choices=METHOD_NAMES, default="bayesmulti")
    p.add_argument(
        "--program",
        default="verify",
        metavar="SCHEME",
        help="programming scheme trained for and scored against, stored in the artifact: "
        "verify[:TOL] (write-verify within TOL weight steps, default 0.5), open-loop, or "
        "paper[:SIGMA] (the paper's w·exp(ε)); default verify (docs/training.md)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=32,
        help="BayesMulti first-rung trials (default: 32; successive halving trains the "
        "best quarter 4x longer, twice, and the baselines fully: 32 trials cost 8 full "
        "trainings)",
    )
    p.add_argument(
        "--halving",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="successive halving over epochs (default: on; off: every trial trains fully)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="training seeds of the final model and the baselines (default: 1): intervals "
        "over seeds as well as draws",
    )
    p.add_argument("--alpha", help="JSON file with α: skip the search and train with it")
    p.add_argument("--width", type=int, help="hidden width (baselines and non-searched methods)")
    p.add_argument(
        "--max-width",
        type=int,
        help="widest hidden layer to train (default: the widest the firmware runs on the "
        "task's board, 512 for digits; wider: simulation only, `xbar program` refuses it)",
    )
    p.add_argument("--epochs", type=int, help="training epochs (default: the task's)")
    p.add_argument("--draws", type=int, default=30, help="noise draws per evaluation (>= 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search and the training")
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="evaluate with the mean-gain calibration of the biases (docs/training.md; "
        "default: off, it did not measurably help; never in the artifact's plan)",
    )
    # The default named here is bayesmulti.DEFAULT_STRATEGY (a test keeps them equal; that
    # module is not imported to build the parser).
    p.add_argument("--strategy", help="search strategy (a training.search method; default bo)")
    p.add_argument("--scheduler", help="run trials on this Dask scheduler (tcp:// or tls://)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default: 2)")
    p.add_argument("--tls-ca-file", help="tls://: CA certificate (else Dask's TLS config)")
    p.add_argument("--tls-cert", help="tls://: client certificate")
    p.add_argument("--tls-key", help="tls://: client key")
    p.add_argument("--log", help="search log to write or resume (default: OUT/search.jsonl)")
    p.add_argument("--no-baselines", action="store_true", help="skip ERM and fixed-noise runs")
    p.add_argument("--out", default="train-out", help="output folder (default: train-out)")
    p.add_argument("--json", action="store_true", help="print OUT/summary.json when done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def job() -> Path:
        train(TrainOptions(**{f.name: getattr(args, f.name) for f in fields(TrainOptions)}))
        return Path(args.out) / "summary.json"

    return text_or_json(args.json, job, lambda summary: json.loads(summary.read_text()))
