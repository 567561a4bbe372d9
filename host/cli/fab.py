"""The `xbar fab` command: parser and run; the logic is xbar.host.fab.

xbar fab init SPEC [--store PATH]          # start (or reopen) a campaign: a spec file or
                                           # the name of a bundled one (perovskite)
xbar fab suggest --store PATH [--batch K]  # the next K experiments: CSV + Markdown sheet
xbar fab ingest FILE... --store PATH       # results sheets and/or I–V files (E0007.csv)
xbar fab status --store PATH [--json]
xbar fab report --store PATH [--out DIR]   # PNG plots
xbar fab export --store PATH [-o OUT.csv]
"""

from __future__ import annotations

import argparse

from xbar.host import fab
from xbar.training.search import METHODS


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "fab",
        help="fabrication campaigns: Bayesian optimisation with the lab in the loop",
        description="Suggest fabrication runs, ingest their measurements, report progress. "
        "One SQLite file per campaign keeps everything.",
    )
    actions = p.add_subparsers(dest="fab_command", metavar="ACTION", required=True)

    a = actions.add_parser("init", help="start a campaign from a TOML spec (or reopen it)")
    a.add_argument(
        "spec", help="campaign spec: a TOML file, or the name of a bundled one (perovskite)"
    )
    a.add_argument(
        "--store",
        help="campaign file (default: SPEC with suffix .sqlite; NAME.sqlite here for a "
        "bundled spec)",
    )
    a.set_defaults(func=run_init)

    a = actions.add_parser("suggest", help="suggest the next batch and write the lab's sheet")
    _store(a)
    a.add_argument("--batch", type=int, help="experiments in the batch (default: the spec's)")
    a.add_argument("--method", choices=list(METHODS), help="optimizer (default: the spec's)")
    a.add_argument("--out", default=".", help="folder for the sheet (default: .)")
    a.set_defaults(func=run_suggest)

    a = actions.add_parser("ingest", help="store measured results (CSV sheets, I–V files)")
    a.add_argument("files", nargs="+", help="results CSV, or an I–V file named E0007.csv/.xlsx")
    _store(a)
    a.set_defaults(func=run_ingest)

    a = actions.add_parser("status", help="experiments, budget and the best device so far")
    _store(a)
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=run_status)

    a = actions.add_parser("report", help="PNG plots: best so far, parameter effects, batches")
    _store(a)
    a.add_argument("--out", default=".", help="folder for the PNGs (default: .)")
    a.set_defaults(func=run_report)

    a = actions.add_parser("export", help="every experiment and measurement as one CSV")
    _store(a)
    a.add_argument("-o", "--out", help="CSV path (default: the store's name with .csv)")
    a.set_defaults(func=run_export)


def _store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="the campaign file from `xbar fab init`")


def run_init(args: argparse.Namespace) -> int:
    fab.init(args.spec, args.store)
    return 0


def run_suggest(args: argparse.Namespace) -> int:
    fab.suggest(args.store, args.batch, args.method, args.out)
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    fab.ingest(args.store, args.files)
    return 0


def run_status(args: argparse.Namespace) -> int:
    fab.status(args.store, args.json)
    return 0


def run_report(args: argparse.Namespace) -> int:
    fab.report(args.store, args.out)
    return 0


def run_export(args: argparse.Namespace) -> int:
    fab.export(args.store, args.out)
    return 0
