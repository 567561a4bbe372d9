"""The jobs of `xbar fab` as the user sees them: each runs one campaign step
(xbar.training.fab.campaign) and prints what it did; `xbar demo` runs them too."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from xbar.training.fab import campaign
from xbar.training.fab.campaign import CampaignError
from xbar.training.fab.store import CampaignStore, is_url, whoami


def init(spec: str | Path, store_path: str | Path | None = None) -> None:
    store, created = campaign.init_campaign(spec, store_path)
    with store:
        loaded = store.spec
        verb = "started" if created else "reopened (same spec)"
        print(f"campaign {loaded.name!r} {verb}: {store.path}")
        print(f"{len(loaded.parameters)} parameters, budget {loaded.budget}, batch {loaded.batch}")


def suggest(
    store_path: str | Path, batch: int | None = None, method: str | None = None, out: str = "."
) -> dict[str, Any]:
    """Suggest a batch, write its lab sheets, print a line; returns the batch (`--json`)."""
    with CampaignStore.open(store_path) as store:
        suggestion = campaign.suggest(store, batch, method)
        csv_path, md_path = campaign.write_sheets(store, suggestion, out)
    print(
        f"batch {suggestion.batch} ({suggestion.method}): "
        + ", ".join(ident for ident, _ in suggestion.experiments)
    )
    print(f"wrote {csv_path} and {md_path}")
    return {
        "batch": suggestion.batch,
        "method": suggestion.method,
        "experiments": [{"id": i, "conditions": c} for i, c in suggestion.experiments],
        "sheets": [str(csv_path), str(md_path)],
    }


def ingest(store_path: str | Path, files: list[str], who: str | None = None) -> list[dict]:
    """Ingest result sheets or I–V files in order, printing a line each; returns what each
    file did (`--json`)."""
    # Ingest reads I–V files (the device analysis, tqdm): imported here, so status and the
    # other steps start without it.
    from xbar.training.fab.ingest import ingest_file

    done: list[dict] = []
    with CampaignStore.open(store_path) as store:
        store.check_spec_file()
        for name in files:
            report = ingest_file(store, name, who)
            done.append(dataclasses.asdict(report))
            if report.skipped:
                print(f"{name}: already ingested, nothing to do")
                continue
            parts = [
                f"{label} {', '.join(ids)}"
                for label, ids in (
                    ("measured", report.experiments),
                    ("failed", report.failed),
                    ("abandoned", report.abandoned),
                    ("corrected", report.amended),
                    ("unchanged", report.unchanged),
                )
                if ids
            ]
            print(f"{name}: {report.rows} row(s): {'; '.join(parts) or 'nothing'}")
            for line in report.deviations:
                print(f"  done differently from the suggestion: {line}")
    return done


def status(store_path: str | Path, as_json: bool = False) -> None:
    with CampaignStore.open(store_path) as store:
        state = campaign.status(store)
    if as_json:
        print(json.dumps(state, indent=2))
        return
    print(f"campaign   {state['campaign']}  ({state['store']})")
    print(
        f"measured   {state['measured']} of {state['experiments']} experiments "
        f"({state['external']} external), budget {state['budget_used']} of "
        f"{state['budget']} used, {state['batches']} batch(es)"
    )
    for key in ("pending", "failed", "abandoned"):
        if state[key]:
            print(f"{key:<10} {', '.join(state[key])}")
    if state["corrections"]:
        print(f"corrected  {state['corrections']} time(s) (xbar fab history)")
    best = state["best"]
    if best:
        given = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"best       {best['experiment']}  {state['score']} = {best['score']:.4g}  ({given})")
    if "pareto_front" in state:
        print(f"pareto     {', '.join(state['pareto_front'])}")


def report(store_path: str | Path, out: str = ".") -> None:
    from xbar.training.fab.report import write_report

    with CampaignStore.open(store_path) as store:
        for path in write_report(store, out):
            print(f"wrote {path}")


def correct(
    store_path: str | Path,
    action: str,
    experiment: str,
    why: str,
    changes: list[str] | None = None,
    who: str | None = None,
) -> None:
    """amend / retract / abandon one experiment; the old record goes to the audit."""
    parsed = {}
    for item in changes or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CampaignError(f"--set {item!r}: expected NAME=VALUE")
        parsed[name.strip()] = value.strip()
    with CampaignStore.open(store_path) as store:
        after = campaign.correct(store, experiment, action, why, who or whoami(), parsed)
    shown = ", ".join(f"{k}={v}" for k, v in (after.metrics or {}).items())
    print(f"{experiment}: {after.state}" + (f" ({shown})" if shown else ""))


def history(store_path: str | Path, experiment: str | None = None) -> None:
    with CampaignStore.open(store_path) as store:
        rows = store.history(experiment)
    if not rows:
        print("no corrections")
    for r in rows:
        old = r.old.get("metrics") or r.old.get("reason") or r.old.get("state")
        new = r.new.get("metrics") or r.new.get("reason") or r.new.get("state")
        print(f"{r.at}  {r.experiment}  {r.action:<8} by {r.who}: {old} -> {new}  ({r.why})")


def export(store_path: str | Path, out: str | None = None) -> None:
    if out is None and is_url(store_path):
        raise CampaignError("a PostgreSQL store needs -o OUT.csv for its export")
    csv_path = Path(out) if out else Path(store_path).with_suffix(".csv")
    with CampaignStore.open(store_path) as store:
        rows = campaign.export_csv(store, csv_path)
    print(f"wrote {csv_path} ({rows} experiments)")
