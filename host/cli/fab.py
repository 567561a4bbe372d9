"""The `xbar fab` command: parser and run; the logic is xbar.host.fab.

xbar fab init SPEC [--store PATH]          # start (or reopen) a campaign: a spec file or
                                           # the name of a bundled one (perovskite)
xbar fab suggest --store PATH [--batch K]  # the next K experiments: CSV + Markdown sheet
xbar fab ingest FILE... --store PATH       # results sheets and/or I–V files (E0007.csv)
xbar fab amend E0007 --set usability=0.12 --why TEXT --store PATH   # correct a measurement
xbar fab retract E0007 --why TEXT --store PATH   # withdraw it (pending again)
xbar fab abandon E0009 --why TEXT --store PATH   # give an experiment up
xbar fab history [E0007] --store PATH      # every correction: who, when, why
xbar fab status --store PATH [--json]
xbar fab report --store PATH [--out DIR]   # PNG plots
xbar fab export --store PATH [-o OUT.csv]
"""

from __future__ import annotations

import argparse

from xbar.host import fab
from xbar.host.cli.output import text_or_json


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "fab",
        help="fabrication campaigns: Bayesian optimisation with the lab in the loop",
        description="Suggest fabrication runs, ingest their measurements, report progress. "
        "One store per campaign keeps everything: a SQLite file, or a postgresql:// URL "
        "shared by several people and instruments.",
    )
    actions = p.add_subparsers(dest="fab_command", metavar="ACTION", required=True)

    a = actions.add_parser("init", help="start a campaign from a TOML spec (or reopen it)")
    a.add_argument(
        "spec", help="campaign spec: a TOML file, or the name of a bundled one (perovskite)"
    )
    a.add_argument(
        "--store",
        help="campaign store: a SQLite file (default: SPEC with suffix .sqlite; NAME.sqlite "
        "here for a bundled spec) or a postgresql:// URL",
    )
    a.set_defaults(func=run_init)

    a = actions.add_parser("suggest", help="suggest the next batch and write the lab's sheet")
    _store(a)
    a.add_argument("--batch", type=int, help="experiments in the batch (default: the spec's)")
    a.add_argument(
        "--method", help="optimizer (default: the spec's; `xbar fab suggest --method list`)"
    )
    a.add_argument("--out", default=".", help="folder for the sheet (default: .)")
    a.add_argument("--json", action="store_true", help="print the batch as JSON")
    a.set_defaults(func=run_suggest, parser=a)

    a = actions.add_parser("ingest", help="store measured results (CSV sheets, I–V files)")
    a.add_argument("files", nargs="+", help="results CSV, or an I–V file named E0007.csv/.xlsx")
    _store(a)
    _who(a)
    a.add_argument("--json", action="store_true", help="print what each file did as JSON")
    a.set_defaults(func=run_ingest)

    a = actions.add_parser("amend", help="correct a measurement (the old value is kept)")
    a.add_argument("experiment", help="experiment id, e.g. E0007")
    a.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="NAME=VALUE",
        help="an outcome, a condition as done, status=failed|measured, reason or notes "
        "(repeatable)",
    )
    _correction(a)
    a = actions.add_parser("retract", help="withdraw a measurement: the experiment is pending")
    a.add_argument("experiment", help="experiment id, e.g. E0007")
    _correction(a)
    a = actions.add_parser("abandon", help="give an experiment up (not run, or unusable)")
    a.add_argument("experiment", help="experiment id, e.g. E0009")
    _correction(a)

    a = actions.add_parser("history", help="every correction: who, when, old and new, why")
    a.add_argument("experiment", nargs="?", help="one experiment (default: all)")
    _store(a)
    a.set_defaults(func=run_history)

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
    p.add_argument(
        "--store",
        required=True,
        help="the campaign store from `xbar fab init`: a SQLite file or a postgresql:// URL",
    )


def _who(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", help="who makes the change, for the audit (default: the login name)")


def _correction(p: argparse.ArgumentParser) -> None:
    p.add_argument("--why", required=True, help="the reason, kept in the audit table")
    _store(p)
    _who(p)
    p.set_defaults(func=run_correction)


def run_init(args: argparse.Namespace) -> int:
    fab.init(args.spec, args.store)
    return 0


def run_suggest(args: argparse.Namespace) -> int:
    # The method list comes with Nevergrad (a second to import): read only when asked for,
    # so status, ingest and the rest start fast.
    from xbar.training.search import METHODS

    if args.method == "list":
        for name, method in METHODS.items():
            print(f"{name:<13} {method.doc}")
        return 0
    if args.method is not None and args.method not in METHODS:
        args.parser.error(
            f"argument --method: invalid choice: {args.method!r} (choose from {', '.join(METHODS)})"
        )
    return text_or_json(
        args.json, lambda: fab.suggest(args.store, args.batch, args.method, args.out), dict
    )


def run_ingest(args: argparse.Namespace) -> int:
    return text_or_json(args.json, lambda: fab.ingest(args.store, args.files, args.by), list)


def run_correction(args: argparse.Namespace) -> int:
    changes = getattr(args, "set", None)
    fab.correct(args.store, args.fab_command, args.experiment, args.why, changes, args.by)
    return 0


def run_history(args: argparse.Namespace) -> int:
    fab.history(args.store, args.experiment)
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
