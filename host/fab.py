"""The jobs of `xbar fab` as the user sees them: each runs one campaign step
(xbar.training.fab.campaign) and prints what it did; `xbar demo` runs them too."""

from __future__ import annotations

import json
from pathlib import Path

from xbar.training.fab import campaign
from xbar.training.fab.campaign import CampaignError
from xbar.training.fab.ingest import ingest_file
from xbar.training.fab.store import CampaignStore
from xbar.training.search import SearchError


def init(spec: str | Path, store_path: str | Path | None = None) -> None:
    store, created = campaign.init_campaign(spec, store_path)
    with store:
        loaded = store.spec
        verb = "started" if created else "reopened (same spec)"
        print(f"campaign {loaded.name!r} {verb}: {store.path}")
        print(f"{len(loaded.parameters)} parameters, budget {loaded.budget}, batch {loaded.batch}")


def suggest(
    store_path: str | Path, batch: int | None = None, method: str | None = None, out: str = "."
) -> None:
    with CampaignStore.open(store_path) as store:
        try:
            suggestion = campaign.suggest(store, batch, method)
        except SearchError as exc:
            raise CampaignError(f"{store.path}: {exc}") from None
        csv_path, md_path = campaign.write_sheets(store, suggestion, out)
    print(
        f"batch {suggestion.batch} ({suggestion.method}): "
        + ", ".join(ident for ident, _ in suggestion.experiments)
    )
    print(f"wrote {csv_path} and {md_path}")


def ingest(store_path: str | Path, files: list[str]) -> None:
    with CampaignStore.open(store_path) as store:
        store.check_spec_file()
        for name in files:
            report = ingest_file(store, name)
            if report.skipped:
                print(f"{name}: already ingested, nothing to do")
            else:
                print(f"{name}: {report.rows} row(s): {', '.join(report.experiments)}")


def status(store_path: str | Path, as_json: bool = False) -> None:
    with CampaignStore.open(store_path) as store:
        state = campaign.status(store)
    if as_json:
        print(json.dumps(state, indent=2))
        return
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


def report(store_path: str | Path, out: str = ".") -> None:
    from xbar.training.fab.report import write_report

    with CampaignStore.open(store_path) as store:
        for path in write_report(store, out):
            print(f"wrote {path}")


def export(store_path: str | Path, out: str | None = None) -> None:
    csv_path = Path(out) if out else Path(store_path).with_suffix(".csv")
    with CampaignStore.open(store_path) as store:
        rows = campaign.export_csv(store, csv_path)
    print(f"wrote {csv_path} ({rows} experiments)")
