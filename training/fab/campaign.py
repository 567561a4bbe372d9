"""The campaign loop: start a campaign, suggest a batch for the lab, take stock, export.

The optimizer is rebuilt from the store on every ``suggest`` (the measured experiments are
replayed into a :class:`xbar.training.search.Search`, the pending ones registered as
pending), so a campaign needs no pickled state and survives any restart; the log that
produced each batch is stored beside it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from xbar.training.search import DEFAULT_METHOD, Search

from .errors import FabError
from .spec import NAME_PATTERN, Spec, load_spec
from .store import CampaignStore, Experiment, StoreError

METRIC_COLUMNS = ("usability", "sigma", "monotonicity")


class CampaignError(FabError):
    """A campaign step that cannot be taken now (finished, nothing measured, …)."""


def default_store_path(spec_path: str | Path) -> Path:
    return Path(spec_path).with_suffix(".sqlite")


def bundled_spec(name: str) -> Path | None:
    """The spec shipped with xbar under ``name`` (``perovskite``), None if there is none:
    a wheel has no ``data/`` folder, so ``xbar fab init perovskite`` finds it here."""
    if not name or Path(name).name != name or Path(name).suffix:
        return None
    spec = resources.files(__package__) / "campaigns" / f"{name}.toml"
    return Path(str(spec)) if spec.is_file() else None


def spec_and_store(spec: str | Path, store_path: str | Path | None = None) -> tuple[Path, Path]:
    """The spec file ``spec`` names (a path, else a bundled spec's name) and the store: as
    given, else beside a spec file, or ``NAME.sqlite`` here for a bundled spec (the
    installed package may be read-only)."""
    path = Path(spec)
    bundled = None if path.exists() else bundled_spec(str(spec))
    if bundled is not None:
        return bundled, Path(store_path) if store_path else Path(f"{spec}.sqlite")
    return path, Path(store_path) if store_path else default_store_path(path)


def init_campaign(
    spec_path: str | Path, store_path: str | Path | None = None
) -> tuple[CampaignStore, bool]:
    """Open the campaign of ``spec_path`` (a file or a bundled spec's name), creating its
    store if needed; True if created. An existing store built from a different spec is an
    error."""
    spec_path, store_path = spec_and_store(spec_path, store_path)
    spec = load_spec(spec_path)
    if store_path.exists():
        store = CampaignStore.open(store_path)
        stored = store.meta("spec_fingerprint")
        if stored != spec.fingerprint():
            store.close()
            raise StoreError(
                f"{store_path} holds a campaign with a different spec ({stored}, {spec_path} "
                f"is {spec.fingerprint()}); choose another --store for the new spec"
            )
        return store, False
    return CampaignStore.create(store_path, spec, spec.to_toml(), str(spec_path.resolve())), True


def objective_metrics(spec: Spec, experiment: Experiment) -> dict[str, float] | None:
    """The measured metrics the objectives need, or None if one is missing."""
    if experiment.metrics is None:
        return None
    out = {}
    for objective in spec.objectives:
        value = experiment.metrics.get(objective.metric)
        if value is None:
            return None
        out[objective.metric] = float(value)
    return out


def scores(spec: Spec, experiments: list[Experiment]) -> list[tuple[Experiment, float]]:
    """Measured experiments with the campaign's figure of merit (larger is better)."""
    out = []
    for e in experiments:
        metrics = objective_metrics(spec, e)
        if metrics is not None:
            out.append((e, spec.score(metrics)))
    return out


def pareto_front(spec: Spec, experiments: list[Experiment]) -> list[Experiment]:
    """Measured experiments no other one beats on every objective."""
    rows = []
    for e in experiments:
        m = objective_metrics(spec, e)
        if m is not None:
            rows.append(
                (e, [m[o.metric] if o.goal == "max" else -m[o.metric] for o in spec.objectives])
            )
    return [
        e
        for e, a in rows
        if not any(all(x >= y for x, y in zip(b, a, strict=True)) and b != a for _, b in rows)
    ]


def build_search(
    store: CampaignStore, spec: Spec, method: str | None = None
) -> tuple[Search, list[float] | None]:
    """The optimizer as the store knows it: measured experiments told, pending ones pended.
    With a Pareto campaign the objectives are weighted afresh for every batch (ParEGO)."""
    batches = len(store.batches())
    seed = spec.seed + batches
    weights = None
    if spec.pareto:
        weights = list(
            np.random.default_rng([spec.seed, batches]).dirichlet(np.ones(len(spec.objectives)))
        )
    search = Search(
        spec.parametrization(),
        method or spec.method or DEFAULT_METHOD,
        seed=seed,
        budget=spec.budget,
        batch=spec.batch,
        sampler=spec.sample,
    )
    for experiment in store.experiments():
        metrics = objective_metrics(spec, experiment)
        if metrics is not None:
            search.tell(experiment.params, spec.loss(metrics, weights))
        elif not experiment.done:
            search.pend(experiment.params)
    return search, weights


@dataclass(frozen=True)
class Suggestion:
    batch: int
    experiments: list[tuple[str, dict[str, Any]]]
    method: str


def suggest(store: CampaignStore, k: int | None = None, method: str | None = None) -> Suggestion:
    """Suggest and store a batch of k experiments (the spec's batch size by default)."""
    store.check_spec_file()
    spec = store.spec
    k = k or spec.batch
    if k < 1:
        raise CampaignError(f"--batch must be >= 1, got {k}")
    experiments = store.experiments()
    used = len(experiments)
    if used >= spec.budget:
        raise CampaignError(
            f"{store.path}: the campaign is finished: {used} experiments of a "
            f"budget of {spec.budget}; raise [campaign] budget in a new spec to go on"
        )
    if used + k > spec.budget:
        raise CampaignError(
            f"{store.path}: only {spec.budget - used} experiment(s) left in the "
            f"budget of {spec.budget}; ask for --batch {spec.budget - used} or fewer"
        )
    search, weights = build_search(store, spec, method)
    candidates = search.ask(k)
    values = [spec.check_values(spec.for_lab(c.value), f"suggestion {c.id}") for c in candidates]
    state = {
        "method": search.method,
        "seed": search.seed,
        "weights": weights,
        "log": search.history,
        "pending": [c.value for c in search.pending if c not in candidates],
    }
    with store.transaction():
        batch, ids = store.add_batch(search.method, values, search.seed, state)
    return Suggestion(batch, list(zip(ids, values, strict=True)), search.method)


def write_sheets(
    store: CampaignStore, suggestion: Suggestion, out_dir: str | Path
) -> tuple[Path, Path]:
    """The lab's sheet for a batch: a CSV to fill in and ingest, and a Markdown table."""
    spec = store.spec
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not NAME_PATTERN.fullmatch(spec.name) or ".." in spec.name:  # it names files
        raise CampaignError(f"{store.path}: campaign name {spec.name!r} is not a file-name stem")
    stem = f"{spec.name}-batch{suggestion.batch:03d}"
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    names = spec.names
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["experiment", *names, *sorted({o.metric for o in spec.objectives}), "iv_file", "notes"]
        )
        for ident, values in suggestion.experiments:
            blanks = [""] * (len({o.metric for o in spec.objectives}) + 2)
            writer.writerow([ident, *(values[n] for n in names), *blanks])
    units = {p.name: f" ({p.unit})" if p.unit else "" for p in spec.parameters}
    lines = [
        f"# {spec.name}: batch {suggestion.batch}",
        "",
        f"Suggested by `{suggestion.method}`. Fixed for every experiment: "
        + (", ".join(f"{k} = {v}" for k, v in spec.fixed.items()) or "nothing")
        + ".",
        "Fill in the CSV beside this file (a metric, or the I–V file of each device) and run "
        f"`xbar fab ingest {csv_path.name} --store {store.path}`.",
        "",
        "| experiment | " + " | ".join(f"{n}{units[n]}" for n in names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for ident, values in suggestion.experiments:
        lines.append(f"| {ident} | " + " | ".join(_show(values[n]) for n in names) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def status(store: CampaignStore) -> dict[str, Any]:
    """Where the campaign stands: counts, budget, best experiment (and Pareto front)."""
    spec = store.spec
    experiments = store.experiments()
    scored = scores(spec, experiments)
    best = max(scored, key=lambda item: item[1]) if scored else None
    out: dict[str, Any] = {
        "campaign": spec.name,
        "store": str(store.path),
        "experiments": len(experiments),
        "measured": sum(e.done for e in experiments),
        "pending": [e.id for e in experiments if not e.done],
        "external": sum(e.origin == "external" for e in experiments),
        "batches": len(store.batches()),
        "budget": spec.budget,
        "objectives": [o.to_dict() for o in spec.objectives],
        "best": None
        if best is None
        else {
            "experiment": best[0].id,
            "score": best[1],
            "params": best[0].params,
            "metrics": best[0].metrics,
        },
    }
    if spec.pareto:
        out["pareto_front"] = [e.id for e in pareto_front(spec, experiments)]
    return out


def export_csv(store: CampaignStore, out: str | Path) -> int:
    """Every experiment, with its values, metrics and provenance, as one CSV."""
    spec = store.spec
    experiments = store.experiments()
    with Path(out).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "experiment",
                "batch",
                "origin",
                "created",
                "measured",
                *spec.names,
                *spec.fixed,
                *METRIC_COLUMNS,
                "iv_sha256",
            ]
        )
        for e in experiments:
            metrics = e.metrics or {}
            writer.writerow(
                [
                    e.id,
                    e.batch or "",
                    e.origin,
                    e.created,
                    e.measured or "",
                    *(e.params.get(n, "") for n in spec.names),
                    *spec.fixed.values(),
                    *("" if metrics.get(m) is None else repr(metrics[m]) for m in METRIC_COLUMNS),
                    e.iv_sha256 or "",
                ]
            )
    return len(experiments)
