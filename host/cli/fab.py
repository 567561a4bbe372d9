"""`xbar fab`: run a fabrication campaign from the command line.

xbar fab init SPEC [--store PATH]          # start (or reopen) the campaign of SPEC
xbar fab suggest --store PATH [--batch K]  # the next K experiments: CSV + Markdown sheet
xbar fab ingest FILE... --store PATH       # results sheets and/or I–V files (E0007.csv)
xbar fab status --store PATH [--json]
xbar fab report --store PATH [--out DIR]   # PNG plots
xbar fab export --store PATH [-o OUT.csv]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xbar.training.fab import campaign
from xbar.training.fab.campaign import CampaignError
from xbar.training.fab.ingest import ingest_file
from xbar.training.fab.store import CampaignStore
from xbar.training.search import METHODS, SearchError

EXIT_OK = 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `fab` on the `xbar` command's subparsers."""
    fab = commands.add_parser(
        "fab",
        help="fabrication campaigns: Bayesian optimisation with the lab in the loop",
        description="Suggest fabrication runs, ingest their measurements, report progress. "
        "One SQLite file per campaign keeps everything.",
    )
    actions = fab.add_subparsers(dest="fab_command", metavar="ACTION", required=True)

    p = actions.add_parser("init", help="start a campaign from a TOML spec (or reopen it)")
    p.add_argument("spec", help="campaign spec (TOML), e.g. data/campaigns/perovskite.toml")
    p.add_argument("--store", help="campaign file (default: SPEC with suffix .sqlite)")
    p.set_defaults(func=cmd_init)

    p = actions.add_parser("suggest", help="suggest the next batch and write the lab's sheet")
    _store(p)
    p.add_argument("--batch", type=int, help="experiments in the batch (default: the spec's)")
    p.add_argument("--method", choices=list(METHODS), help="optimizer (default: the spec's)")
    p.add_argument("--out", default=".", help="folder for the sheet (default: .)")
    p.set_defaults(func=cmd_suggest)

    p = actions.add_parser("ingest", help="store measured results (CSV sheets, I–V files)")
    p.add_argument("files", nargs="+", help="results CSV, or an I–V file named E0007.csv/.xlsx")
    _store(p)
    p.set_defaults(func=cmd_ingest)

    p = actions.add_parser("status", help="experiments, budget and the best device so far")
    _store(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = actions.add_parser("report", help="PNG plots: best so far, parameter effects, batches")
    _store(p)
    p.add_argument("--out", default=".", help="folder for the PNGs (default: .)")
    p.set_defaults(func=cmd_report)

    p = actions.add_parser("export", help="every experiment and measurement as one CSV")
    _store(p)
    p.add_argument("-o", "--out", help="CSV path (default: the store's name with .csv)")
    p.set_defaults(func=cmd_export)


def _store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="the campaign file from `xbar fab init`")


def cmd_init(args: argparse.Namespace) -> int:
    store, created = campaign.init_campaign(args.spec, args.store)
    with store:
        spec = store.spec
        verb = "started" if created else "reopened (same spec)"
        print(f"campaign {spec.name!r} {verb}: {store.path}")
        print(f"{len(spec.parameters)} parameters, budget {spec.budget}, batch {spec.batch}")
    return EXIT_OK


def cmd_suggest(args: argparse.Namespace) -> int:
    with CampaignStore.open(args.store) as store:
        try:
            suggestion = campaign.suggest(store, args.batch, args.method)
        except SearchError as exc:
            raise CampaignError(f"{store.path}: {exc}") from None
        csv_path, md_path = campaign.write_sheets(store, suggestion, args.out)
    print(
        f"batch {suggestion.batch} ({suggestion.method}): "
        + ", ".join(ident for ident, _ in suggestion.experiments)
    )
    print(f"wrote {csv_path} and {md_path}")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    with CampaignStore.open(args.store) as store:
        store.check_spec_file()
        for name in args.files:
            report = ingest_file(store, name)
            if report.skipped:
                print(f"{name}: already ingested, nothing to do")
            else:
                print(f"{name}: {report.rows} row(s): {', '.join(report.experiments)}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with CampaignStore.open(args.store) as store:
        state = campaign.status(store)
    if args.json:
        print(json.dumps(state, indent=2))
        return EXIT_OK
    print(f"campaign   {state['campaign']}  ({state['store']})")
    print(
        f"measured   {state['measured']} of {state['experiments']} experiments "
        f"({state['external']} external), budget {state['budget']}, "
        f"{state['batches']} batch(es)"
    )
    if state["pending"]:
        print(f"pending    {', '.join(state['pending'])}")
    best = state["best"]
    if best:
        given = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"best       {best['experiment']}  score {best['score']:.4f}  ({given})")
    if "pareto_front" in state:
        print(f"pareto     {', '.join(state['pareto_front'])}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from xbar.training.fab.report import write_report

    with CampaignStore.open(args.store) as store:
        for path in write_report(store, args.out):
            print(f"wrote {path}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.store).with_suffix(".csv")
    with CampaignStore.open(args.store) as store:
        rows = campaign.export_csv(store, out)
    print(f"wrote {out} ({rows} experiments)")
    return EXIT_OK
