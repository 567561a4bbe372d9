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
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FabError
from .spec import DERIVED, NAME_PATTERN, Spec, load_spec
from .store import STATES, CampaignStore, Experiment, StoreError, is_url

if TYPE_CHECKING:  # search is imported where used: the commands that never suggest skip it
    from xbar.training.search import Search


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


def _store_arg(store_path: str | Path) -> str | Path:
    return str(store_path) if is_url(store_path) else Path(store_path)


def spec_and_store(
    spec: str | Path, store_path: str | Path | None = None
) -> tuple[Path, str | Path]:
    """The spec file ``spec`` names (a path, else a bundled spec's name) and the store: as
    given (a path or a ``postgresql://`` URL), else beside a spec file, or ``NAME.sqlite``
    here for a bundled spec (the installed package may be read-only)."""
    path = Path(spec)
    bundled = None if path.exists() else bundled_spec(str(spec))
    if bundled is not None:
        return bundled, _store_arg(store_path) if store_path else Path(f"{spec}.sqlite")
    return path, _store_arg(store_path) if store_path else default_store_path(path)


def init_campaign(
    spec_path: str | Path, store_path: str | Path | None = None
) -> tuple[CampaignStore, bool]:
    """Open the campaign of ``spec_path`` (a file or a bundled spec's name), creating its
    store if needed; True if created. An existing store built from a different spec is an
    error."""
    spec_path, store_path = spec_and_store(spec_path, store_path)
    spec = load_spec(spec_path)
    exists = (
        _postgres_holds_campaign(store_path) if is_url(store_path) else Path(store_path).exists()
    )
    if exists:
        store = CampaignStore.open(store_path)
        stored = store.meta("spec_fingerprint")
        if stored != spec.fingerprint():
            store.close()
            raise StoreError(
                f"{store.path} holds a campaign with a different spec ({stored}, {spec_path} "
                f"is {spec.fingerprint()}); choose another --store for the new spec"
            )
        return store, False
    return CampaignStore.create(store_path, spec, spec.to_toml(), str(spec_path.resolve())), True


def _postgres_holds_campaign(url: str | Path) -> bool:
    store = CampaignStore._connect_any(url)
    try:
        return store._has_schema()
    finally:
        store.close()


def objective_metrics(spec: Spec, experiment: Experiment) -> dict[str, Any] | None:
    """The measured outcomes the objectives need, or None if one is missing."""
    if experiment.metrics is None or experiment.state != "measured":
        return None
    out = {}
    for objective in spec.objectives:
        value = experiment.metrics.get(objective.metric)
        if value is None:
            return None
        out[objective.metric] = value
    return out


def scores(spec: Spec, experiments: list[Experiment]) -> list[tuple[Experiment, float]]:
    """Measured experiments with the campaign's figure of merit (:meth:`Spec.score`)."""
    out = []
    for e in experiments:
        metrics = objective_metrics(spec, e)
        if metrics is not None:
            out.append((e, spec.score(metrics)))
    return out


def best_of(spec: Spec, scored: list[tuple[Experiment, float]]) -> tuple[Experiment, float] | None:
    best = None
    for item in scored:
        if best is None or spec.better(item[1], best[1]):
            best = item
    return best


def pareto_front(spec: Spec, experiments: list[Experiment]) -> list[Experiment]:
    """Measured experiments no other one beats on every objective."""
    rows = []
    for e in experiments:
        m = objective_metrics(spec, e)
        if m is not None:
            rows.append(
                (
                    e,
                    [
                        o.number(m[o.metric]) * (1 if o.goal == "max" else -1)
                        for o in spec.objectives
                    ],
                )
            )
    return [
        e
        for e, a in rows
        if not any(all(x >= y for x, y in zip(b, a, strict=True)) and b != a for _, b in rows)
    ]


FAILURE_PENALTY = 0.1  # a failed run's loss: the worst measured + 10 % of the loss range


def build_search(
    store: CampaignStore,
    spec: Spec,
    method: str | None = None,
    experiments: list[Experiment] | None = None,
    pool: list[dict[str, Any]] | None = None,
) -> tuple[Search, list[float] | None]:
    """The optimizer as the store knows it: measured experiments told (with the
    conditions as done), failed runs told as worse than the worst measured one (so the
    model learns the region is bad; never suggested again), pending ones pended, abandoned
    ones ignored. With a Pareto campaign the objectives are weighted afresh for every
    batch (ParEGO)."""
    from xbar.training.search import DEFAULT_METHOD, Search

    batches = store.batch_count()
    seed = spec.seed + batches
    weights = None
    if spec.pareto:
        weights = list(
            np.random.default_rng([spec.seed, batches]).dirichlet(np.ones(len(spec.objectives)))
        )
    search = Search(
        spec.parametrization,  # built only by the Nevergrad methods
        method or spec.method or DEFAULT_METHOD,
        seed=seed,
        budget=spec.budget,
        batch=spec.batch,
        sampler=spec.sample,
        canonical=spec.for_lab,
        encoder=spec.encode,
        feasible=spec.is_feasible,
        pool=pool,
    )
    failed = []
    losses = []
    for experiment in experiments if experiments is not None else store.experiments():
        metrics = objective_metrics(spec, experiment)
        if metrics is not None:
            loss = spec.loss(metrics, weights)
            losses.append(loss)
            search.tell(experiment.params, loss)
        elif experiment.state == "failed":
            failed.append(experiment.params)
        elif experiment.state == "pending":
            search.pend(experiment.params)
    for params in failed:
        if losses:
            spread = max(losses) - min(losses) or 1.0
            search.tell(params, max(losses) + FAILURE_PENALTY * spread)
        else:
            search.pend(params)  # nothing to compare with yet: only kept from repeats
    return search, weights


@dataclass(frozen=True)
class Suggestion:
    batch: int
    experiments: list[tuple[str, dict[str, Any]]]
    method: str


def used_budget(experiments: list[Experiment]) -> int:
    """Experiments the budget counts: those this campaign suggested and did not abandon
    (a lab's imported history is free)."""
    return sum(e.origin == "suggested" and e.state != "abandoned" for e in experiments)


def suggest(store: CampaignStore, k: int | None = None, method: str | None = None) -> Suggestion:
    """Suggest and store a batch of k experiments (the spec's batch size by default). The
    whole step is one transaction: two people suggesting into one store at once get
    different experiments, never the same point twice."""
    from xbar.training.search import SearchError

    store.check_spec_file()
    spec = store.spec
    k = k or spec.batch
    if k < 1:
        raise CampaignError(f"--batch must be >= 1, got {k}")
    with store.transaction():
        experiments = store.experiments()
        used = used_budget(experiments)
        if used >= spec.budget:
            raise CampaignError(
                f"{store.path}: the campaign is finished: {used} suggested experiments of a "
                f"budget of {spec.budget}; raise [campaign] budget in a new spec to go on"
            )
        if used + k > spec.budget:
            raise CampaignError(
                f"{store.path}: only {spec.budget - used} experiment(s) left in the "
                f"budget of {spec.budget}; ask for --batch {spec.budget - used} or fewer"
            )
        pool = _free_points(store, spec, experiments, k)
        search, weights = build_search(store, spec, method, experiments, pool)
        try:
            candidates = search.ask(k)
        except SearchError as exc:
            raise CampaignError(f"{store.path}: {exc}") from None
        values = [spec.check_values(c.value, f"suggestion {c.id}") for c in candidates]
        state = {
            "method": search.method,
            "seed": search.seed,
            "weights": weights,
            "log": search.history,
            "pending": [c.value for c in search.pending if c not in candidates],
        }
        batch, ids = store.add_batch(search.method, values, search.seed, state)
    return Suggestion(batch, list(zip(ids, values, strict=True)), search.method)


def _free_points(
    store: CampaignStore, spec: Spec, experiments: list[Experiment], k: int
) -> list[dict[str, Any]] | None:
    """A finite space (choices and integers only) as the optimizer's pool of points not
    yet measured, failed or pending; an exhausted space is a clear error."""
    from xbar.training.search import value_key

    points = spec.finite_points()
    if points is None:
        return None
    busy = {value_key(e.params) for e in experiments if e.state != "abandoned"}
    free = [v for v in points if value_key(v) not in busy]
    if len(free) < k:
        raise CampaignError(
            f"{store.path}: the space is exhausted: {len(points) - len(free)} of its "
            f"{len(points)} feasible points are measured, failed or pending"
            + (f"; only {len(free)} left, ask for --batch {len(free)}" if free else "")
        )
    return points


def _header(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else name


def write_sheets(
    store: CampaignStore, suggestion: Suggestion, out_dir: str | Path
) -> tuple[Path, Path]:
    """The lab's sheet for a batch: a CSV to fill in and ingest (units in the headers, a
    status column for a failed run), and a Markdown table."""
    spec = store.spec
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not NAME_PATTERN.fullmatch(spec.name) or ".." in spec.name:  # it names files
        raise CampaignError(f"{store.path}: campaign name {spec.name!r} is not a file-name stem")
    stem = f"{spec.name}-batch{suggestion.batch:03d}"
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    names = spec.names
    units = {p.name: p.unit for p in spec.parameters if p.kind not in ("ordinal", "categorical")}
    outcomes = [_header(o.metric, o.unit) for o in spec.objectives]
    derived = any(o.derived for o in spec.objectives)
    extra = ["iv_file"] if derived else []
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "experiment",
                *(_header(n, units.get(n, "")) for n in names),
                *outcomes,
                *extra,
                "status",
                "notes",
            ]
        )
        for ident, values in suggestion.experiments:
            blanks = [""] * (len(outcomes) + len(extra) + 2)
            writer.writerow([ident, *(values[n] for n in names), *blanks])
    shown_units = {p.name: f" ({p.unit})" if p.unit else "" for p in spec.parameters}
    levels = [o for o in spec.objectives if o.levels]
    lines = [
        f"# {spec.name}: batch {suggestion.batch}",
        "",
        f"Suggested by `{suggestion.method}`. Fixed for every experiment: "
        + (", ".join(f"{k} = {v}" for k, v in spec.fixed.items()) or "nothing")
        + ".",
        "Fill in the CSV beside this file ("
        + " and ".join(o.label for o in spec.objectives)
        + (", or the I–V file of each device" if derived else "")
        + "; the conditions as actually done if they differ; status `failed` or `shorted` "
        "with a note for a run without a value, `abandoned` for one not run) and run "
        f"`xbar fab ingest {csv_path.name} --store {store.path}`.",
        *(f"Levels of {o.metric}, worst first: {', '.join(o.levels)}." for o in levels),
        "",
        "| experiment | " + " | ".join(f"{n}{shown_units[n]}" for n in names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for ident, values in suggestion.experiments:
        lines.append(f"| {ident} | " + " | ".join(str(values[n]) for n in names) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def status(store: CampaignStore) -> dict[str, Any]:
    """Where the campaign stands: counts, budget, best experiment (and Pareto front),
    the objectives named as the spec names them."""
    spec = store.spec
    experiments = store.experiments()
    scored = scores(spec, experiments)
    best = best_of(spec, scored)
    by_state = {s: [e.id for e in experiments if e.state == s] for s in STATES}
    out: dict[str, Any] = {
        "campaign": spec.name,
        "store": str(store.path),
        "experiments": len(experiments),
        "measured": len(by_state["measured"]),
        "failed": by_state["failed"],
        "abandoned": by_state["abandoned"],
        "pending": by_state["pending"],
        "external": sum(e.origin == "external" for e in experiments),
        "batches": store.batch_count(),
        "budget": spec.budget,
        "budget_used": used_budget(experiments),
        "objectives": [o.to_dict() for o in spec.objectives],
        "score": spec.score_label,
        "corrections": len(store.history()),
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
    """Every experiment, with its conditions as done, outcomes, state, notes and
    provenance, as one CSV."""
    spec = store.spec
    experiments = store.experiments()
    metrics = [o.metric for o in spec.objectives]
    metrics += [
        m for m in DERIVED if m not in metrics and any(m in (e.metrics or {}) for e in experiments)
    ]
    units = {o.metric: o.unit for o in spec.objectives}
    params = {p.name: p.unit for p in spec.parameters if p.kind not in ("ordinal", "categorical")}
    with Path(out).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "experiment",
                "batch",
                "origin",
                "state",
                "created",
                "measured",
                *(_header(n, params.get(n, "")) for n in spec.names),
                *spec.fixed,
                *(_header(m, units.get(m, "")) for m in metrics),
                "iv_sha256",
                "reason",
                "notes",
            ]
        )
        for e in experiments:
            values = e.metrics or {}
            writer.writerow(
                [
                    e.id,
                    e.batch or "",
                    e.origin,
                    e.state,
                    e.created,
                    e.measured or "",
                    *(e.params.get(n, "") for n in spec.names),
                    *spec.fixed.values(),
                    *("" if values.get(m) is None else _cell(values[m]) for m in metrics),
                    e.iv_sha256 or "",
                    e.reason,
                    e.notes,
                ]
            )
    return len(experiments)


def _cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def correct(
    store: CampaignStore,
    ident: str,
    action: str,
    why: str,
    who: str,
    changes: dict[str, str] | None = None,
) -> Experiment:
    """``amend`` (set outcomes or conditions of a measurement, or ``status=failed``),
    ``retract`` (withdraw it: pending again) or ``abandon`` (give the experiment up); the
    old record is kept in the audit table with who, when and why. One transaction."""
    from .ingest import _builtin

    if not why.strip():
        raise CampaignError(f"{action} {ident}: say why (--why): the audit keeps it")
    spec = store.spec
    with store.transaction():
        experiment = store.experiment(ident)
        if action == "abandon":
            if experiment.state == "abandoned":
                raise CampaignError(f"{store.path}: {ident} is already abandoned")
            store.abandon(experiment, who, why)
        elif experiment.state not in ("measured", "failed"):
            raise CampaignError(
                f"{store.path}: {ident} is {experiment.state}: only a measured or failed "
                f"experiment can be {action}ed"
                + (" (abandon a pending one)" if experiment.state == "pending" else "")
            )
        elif action == "retract":
            store.retract(experiment, who, why)
        else:
            _amend(store, spec, experiment, changes or {}, who, why, _builtin)
    return store.experiment(ident)


def _amend(
    store: CampaignStore,
    spec: Spec,
    experiment: Experiment,
    changes: dict[str, str],
    who: str,
    why: str,
    builtin: Any,
) -> None:
    if not changes:
        raise CampaignError(f"amend {experiment.id}: nothing to change (--set NAME=VALUE)")
    where = f"amend {experiment.id}"
    metrics = dict(experiment.metrics or {})
    actual = dict(experiment.params)
    notes, reason = experiment.notes, experiment.reason
    failed = experiment.state == "failed"
    objectives = {o.metric: o for o in spec.objectives}
    for name, text in changes.items():
        if name in spec.names:
            actual[name] = text
        elif name == "status":
            if text.casefold() not in ("measured", "failed", "shorted"):
                raise CampaignError(f"{where}: status = {text!r} must be measured or failed")
            failed = text.casefold() != "measured"
            if text.casefold() == "shorted":
                reason = reason or "shorted"
        elif name == "notes":
            notes = text
        elif name == "reason":
            reason = text
        elif name in objectives or name in DERIVED:
            objective = objectives.get(name) or builtin(name)
            metrics[name] = objective.parse(text, f"{where}: {name}")
        else:
            raise CampaignError(
                f"{where}: {name!r} is not a parameter, objective, status, reason or notes"
            )
    actual = spec.check_values(actual, where)
    if failed:
        store.amend(experiment, None, actual, notes, reason or "failed", who, why)
        return
    missing = [m for m in objectives if m not in metrics]
    if missing:
        raise CampaignError(f"{where}: a measured experiment needs {', '.join(missing)}")
    store.amend(experiment, metrics, actual, notes, "", who, why)
