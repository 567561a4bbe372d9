"""Lab results into the campaign store: a results sheet (CSV) and/or raw I–V files.

A results sheet's first row names its columns: ``experiment`` (the id from the suggestion
sheet; blank, or no such column, for experiments the campaign did not suggest, such as a
lab's history — then every parameter column is required), the parameters (the
conditions as actually done: they may differ from the suggestion, and the measurement
records them), the objectives' columns (any named outcome of the spec; the built-in
``usability``, ``sigma`` and ``monotonicity`` can instead come from ``iv_file``, the
device's I–V sweep, through :func:`xbar.training.devices.usability.analyse`), ``status``
(blank or ``measured``; ``failed`` or ``shorted`` for a run without a value; ``abandoned``
for one the lab did not run), ``reason`` and ``notes``. An I–V file can also be given on
its own, named by its experiment (``E0007.csv``, ``E0007.xlsx``).

Sheets are read as labs write them: ``;``, tab or ``,`` separated (a decimal comma in a
``;``/tab file), a unit in a header (``bt_voltage (V)``, ``aao_length [um]``) or in a
value (``2.1 um``), converted to the spec's unit with ``pint``.

Each file is one transaction: a bad row (unknown column, value out of range, unknown or
duplicate id, unreadable I–V file) rolls the whole file back, and the error names the
file, row, column and value. A file whose content was already ingested is skipped; a
corrected sheet ingested again applies its corrections (each kept in the audit table)
and leaves the unchanged rows alone.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm
from xbar.training.devices.ivdata import IVDataError, device_stem, read_iv
from xbar.training.devices.usability import analyse

from .errors import FabError
from .spec import DERIVED, RESERVED, Objective, Parameter, Spec, SpecError
from .store import CampaignStore, Experiment, whoami
from .units import NUMBER, decimal_point, split_header

FAILED = {"failed": "", "fail": "", "shorted": "shorted", "short": "shorted", "open": "open"}
MEASURED = ("", "measured", "ok", "done")
DELIMITERS = (",", ";", "\t")


class IngestError(FabError):
    """A results file that cannot be ingested; nothing of it was stored."""


@dataclass(frozen=True)
class IngestReport:
    source: str
    rows: int
    skipped: bool  # already ingested earlier
    experiments: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    abandoned: tuple[str, ...] = ()
    amended: tuple[str, ...] = ()  # measured before, corrected by this file
    unchanged: tuple[str, ...] = ()  # measured before, same values
    deviations: tuple[str, ...] = field(default=())  # done differently from the suggestion


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iv_metrics(path: Path, where: str) -> tuple[dict[str, Any], bytes]:
    """σ, monotonicity and usability of one I–V file, and its bytes."""
    try:
        result = analyse(read_iv(path))
    except IVDataError as exc:
        raise IngestError(f"{where}: {exc}") from None
    if not math.isfinite(result.usability):
        raise IngestError(f"{where}: {path}: usability cannot be computed (no monotonic run)")
    metrics: dict[str, Any] = {
        "usability": result.usability,
        "sigma": result.sigma,
        "monotonicity": result.monotonicity,
    }
    return metrics, path.read_bytes()


def ingest_file(store: CampaignStore, path: str | Path, who: str | None = None) -> IngestReport:
    """Ingest one results CSV or one I–V file named by its experiment."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    data = path.read_bytes()
    digest = sha256_of(data)
    if store.ingested(digest):
        return IngestReport(str(path), 0, skipped=True)
    if path.suffix.lower() in (".xlsx", ".xlsm") or _looks_like_iv(data, store.spec):
        return _ingest_iv(store, path, digest)
    return _ingest_sheet(store, path, data, digest, who or whoami())


def _looks_like_iv(data: bytes, spec: Spec) -> bool:
    """An I–V file: its first column is ``voltage`` and no other column is one a results
    sheet has (a campaign may well have a parameter called voltage)."""
    first = data.decode("utf-8-sig", errors="replace").split("\n", 1)[0]
    cells = [_normal(split_header(c)[0]) for c in first.split(",")]
    known = {_normal(n) for n in (*RESERVED, *spec.names, *(o.metric for o in spec.objectives))}
    return cells[0] == "voltage" and not known & set(cells[1:])


def _ingest_iv(store: CampaignStore, path: Path, digest: str) -> IngestReport:
    ident = device_stem(path.name)
    metrics, content = iv_metrics(path, str(path))
    with store.transaction():
        if store.ingested(digest):
            return IngestReport(str(path), 0, skipped=True)
        known = {e.id: e for e in store.experiments()}
        if ident not in known:
            raise IngestError(
                f"{path}: an I–V file on its own must be named by its experiment "
                f"(e.g. E0001.csv); {ident!r} is not an experiment of this campaign"
            )
        if known[ident].done:
            raise IngestError(
                f"{path}: experiment {ident} is already {known[ident].state}; "
                f"`xbar fab amend {ident}` corrects it"
            )
        ingest = store.add_ingest(str(path), digest, 1)
        store.add_iv_file(path.name, digest, content)
        store.add_measurement(ident, ingest, metrics, digest)
    return IngestReport(str(path), 1, skipped=False, experiments=(ident,))


def _delimiter(first_line: str) -> str:
    """The separator of a sheet: whichever of , ; tab its header row uses most."""
    counts = [first_line.count(d) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))] if max(counts) else ","


@dataclass
class _Columns:
    """What each header cell of a sheet means, with the unit it gave."""

    names: list[str]  # canonical column names, in order
    units: dict[str, str]


def _normal(name: str) -> str:
    return name.strip().casefold().replace(" ", "_").replace("-", "_")


def _columns(spec: Spec, header: list[str], path: Path) -> _Columns:
    objectives = [o.metric for o in spec.objectives]
    allowed = [*RESERVED, *spec.names, *objectives, *(m for m in DERIVED if m not in objectives)]
    by_normal = {_normal(n): n for n in allowed}
    if any(NUMBER.fullmatch(cell) for cell in header if cell.strip()):
        raise IngestError(
            f"{path}: row 1 is not a header row (it holds numbers: {', '.join(header[:4])}…); "
            f"the first row must name the columns: experiment, {', '.join(spec.names[:3])}, …, "
            f"{', '.join(objectives)}"
        )
    names, units = [], {}
    for number, cell in enumerate(header, start=1):
        name, unit = split_header(cell)
        canonical = name if name in allowed else by_normal.get(_normal(name))
        if canonical is None:
            raise IngestError(
                f"{path}: row 1, column {number}: unknown column {cell!r} "
                f"(known: {', '.join(sorted(allowed))})"
            )
        names.append(canonical)
        if unit:
            units[canonical] = unit
    if len(set(names)) != len(names):
        raise IngestError(f"{path}: row 1: a column name is repeated")
    return _Columns(names, units)


def _ingest_sheet(
    store: CampaignStore, path: Path, data: bytes, digest: str, who: str
) -> IngestReport:
    spec = store.spec
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not a UTF-8 text CSV ({exc})") from None
    lines = text.splitlines()
    delimiter = _delimiter(next((line for line in lines if line.strip()), ""))
    rows = [
        row for row in csv.reader(lines, delimiter=delimiter) if any(cell.strip() for cell in row)
    ]
    if not rows:
        raise IngestError(f"{path}: the file is empty")
    columns = _columns(spec, [h.strip() for h in rows[0]], path)
    header = columns.names
    needed = [o for o in spec.objectives if not (o.derived and "iv_file" in header)]
    missing = [o.metric for o in needed if o.metric not in header]
    if missing and "status" not in header:
        raise IngestError(
            f"{path}: row 1: column(s) {missing} missing (the objectives need them)"
            + (", or give an iv_file column" if all(m in DERIVED for m in missing) else "")
        )
    sheet = _Sheet(store, spec, path, columns, who)
    with store.transaction():
        if store.ingested(digest):
            return IngestReport(str(path), 0, skipped=True)
        sheet.known = {e.id: e for e in store.experiments()}
        sheet.ingest = store.add_ingest(str(path), digest, len(rows) - 1)
        for line, row in enumerate(
            tqdm(rows[1:], desc=f"ingest {path.name}", unit="row", leave=False, disable=None),
            start=2,
        ):
            if len(row) > len(header):
                raise IngestError(f"{path}: row {line}: {len(row)} cells, header has {len(header)}")
            cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
            if delimiter != ",":
                cells = {h: decimal_point(v) for h, v in cells.items()}
            try:
                sheet.row(line, cells)
            except SpecError as exc:
                raise IngestError(str(exc)) from None
    return IngestReport(
        str(path),
        len(rows) - 1,
        skipped=False,
        experiments=tuple(sheet.done["measured"]),
        failed=tuple(sheet.done["failed"]),
        abandoned=tuple(sheet.done["abandoned"]),
        amended=tuple(sheet.done["amended"]),
        unchanged=tuple(sheet.done["unchanged"]),
        deviations=tuple(sheet.deviations),
    )


class _Sheet:
    """One sheet being ingested (inside its transaction)."""

    def __init__(
        self, store: CampaignStore, spec: Spec, path: Path, columns: _Columns, who: str
    ) -> None:
        self.store, self.spec, self.path, self.who = store, spec, path, who
        self.units = columns.units
        self.known: dict[str, Experiment] = {}
        self.ingest = 0
        self.seen: dict[str, int] = {}
        self.done: dict[str, list[str]] = {
            k: [] for k in ("measured", "failed", "abandoned", "amended", "unchanged")
        }
        self.deviations: list[str] = []
        self.objectives = {o.metric: o for o in spec.objectives}

    def row(self, line: int, cells: dict[str, str]) -> None:
        where = f"{self.path}: row {line}"
        ident = cells.get("experiment", "")
        status = cells.get("status", "").casefold()
        if status not in MEASURED and status not in FAILED and status != "abandoned":
            raise IngestError(
                f"{where}, column status: {cells['status']!r} is not one of measured, "
                "failed, shorted, abandoned"
            )
        given = {n: cells[n] for n in self.spec.names if cells.get(n, "") != ""}
        experiment = self._experiment(where, ident) if ident else None
        if status == "abandoned":
            if experiment is None:
                raise IngestError(
                    f"{where}, column status: only a suggested experiment is abandoned"
                )
            if experiment.state != "abandoned":
                reason = cells.get("reason") or cells.get("notes") or "abandoned in a sheet"
                self.store.abandon(experiment, self.who, f"{reason} ({self.path.name})")
            self.done["abandoned"].append(experiment.id)
            return
        if experiment is None:
            actual = self.spec.check_values(
                {n: self._param(n, v, where) for n, v in given.items()}, where
            )
        else:
            merged = {**(experiment.suggested or experiment.params)}
            merged.update({n: self._param(n, v, where) for n, v in given.items()})
            actual = self.spec.check_values(merged, where)
            self._note_deviations(experiment, actual)
        failed = status in FAILED
        metrics, iv_sha = (None, None) if failed else self._outcomes(where, cells)
        notes = cells.get("notes", "")
        reason = cells.get("reason", "") or (FAILED.get(status, "") if failed else "")
        if failed and not reason:  # the note of a failed run is its reason
            reason, notes = notes or "failed", ""
        if experiment is None:
            ident = self.store.add_external(actual)
        elif experiment.state in ("measured", "failed"):
            if self._same(experiment, metrics, actual, notes, reason):
                self.done["unchanged"].append(experiment.id)
                return
            self.store.amend(
                experiment, metrics, actual, notes, reason, self.who,
                f"re-ingested from {self.path.name}", iv_sha, self.ingest,
            )  # fmt: skip
            self.done["amended"].append(experiment.id)
            return
        elif experiment.state == "abandoned":
            raise IngestError(
                f"{where}, column experiment: {ident} was abandoned (`xbar fab history "
                f"{ident}`); report the run as a new row (blank experiment id)"
            )
        self.store.add_measurement(
            ident, self.ingest, metrics, iv_sha, notes, actual, reason if failed else ""
        )
        self.done["failed" if failed else "measured"].append(ident)

    def _experiment(self, where: str, ident: str) -> Experiment:
        if ident in self.seen:
            raise IngestError(
                f"{where}, column experiment: {ident!r} repeats row {self.seen[ident]}"
            )
        if ident not in self.known:
            raise IngestError(
                f"{where}, column experiment: {ident!r} is not an experiment "
                "of this campaign (leave it blank for a new one)"
            )
        self.seen[ident] = int(where.rsplit(" ", 1)[1])
        return self.known[ident]

    def _param(self, name: str, text: str, where: str) -> Any:
        parameter = next(p for p in self.spec.parameters if p.name == name)
        return parameter.check(text, where, self.units.get(name, ""))

    def _outcomes(self, where: str, cells: dict[str, str]) -> tuple[dict[str, Any], str | None]:
        metrics: dict[str, Any] = {}
        iv_sha = None
        if cells.get("iv_file"):
            if any(cells.get(m) for m in DERIVED):
                raise IngestError(f"{where}: give either iv_file or the metric columns, not both")
            iv_path = (self.path.parent / cells["iv_file"]).resolve()
            metrics, content = iv_metrics(iv_path, f"{where}, column iv_file")
            iv_sha = sha256_of(content)
            self.store.add_iv_file(iv_path.name, iv_sha, content)
        for name, text in cells.items():
            if name in RESERVED or name in self.spec.names or not text:
                continue
            objective = self.objectives.get(name) or _builtin(name)
            metrics[name] = objective.parse(
                text, f"{where}, column {name}", self.units.get(name, "")
            )
        for name in self.objectives:
            if name not in metrics:
                raise IngestError(
                    f"{where}, column {name}: missing (the objectives need it; "
                    "status = failed for a run without a value)"
                )
        return metrics, iv_sha

    def _note_deviations(self, experiment: Experiment, actual: dict[str, Any]) -> None:
        planned = experiment.suggested
        if planned is None:
            return
        for p in self.spec.parameters:
            a, s = actual[p.name], planned.get(p.name)
            if not _close(p, a, s):
                self.deviations.append(f"{experiment.id} {p.name} {a} (suggested {s})")

    @staticmethod
    def _same(
        experiment: Experiment,
        metrics: dict[str, Any] | None,
        actual: dict[str, Any],
        notes: str,
        reason: str,
    ) -> bool:
        if (metrics is None) != (experiment.state == "failed"):
            return False
        old = experiment.metrics or {}
        same_metrics = metrics is None or (
            set(metrics) <= set(old) and all(_equal(metrics[k], old[k]) for k in metrics)
        )
        return (
            same_metrics
            and all(_equal(v, experiment.params.get(k)) for k, v in actual.items())
            and notes == experiment.notes
            and (metrics is not None or reason == experiment.reason)
        )


def _builtin(name: str) -> Objective:
    sense, low, high = DERIVED[name]
    return Objective(name, sense, low=low, high=high)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-300)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def _close(p: Parameter, actual: Any, suggested: Any) -> bool:
    """Done as suggested, within the parameter's resolution (2.1 µm for 2.089 µm is the
    suggestion as set), or 1 % of its range."""
    if p.kind in ("ordinal", "categorical", "int") or suggested is None:
        return bool(actual == suggested)
    assert p.low is not None and p.high is not None
    tolerance = max(p.resolution(float(suggested)), 0.01 * (p.high - p.low))
    return abs(float(actual) - float(suggested)) <= tolerance * (1 + 1e-9)
