"""Lab results into the campaign store: a results sheet (CSV) and/or raw I–V files.

A results sheet has a column ``experiment`` (the id from the suggestion sheet; blank for
an experiment the campaign did not suggest, such as a past run — then every parameter
column is required), then either the metrics (``usability``, ``sigma``,
``monotonicity``; those the objectives use are required) or ``iv_file``, the device's
I–V sweep, from which the metrics are computed by :func:`xbar.training.devices.usability.analyse`
— the same code as the device models. An I–V file can also be given on its own, named by
its experiment (``E0007.csv``, ``E0007.xlsx``).

Each file is one transaction: a bad row (unknown column, value out of range, unknown or
duplicate id, unreadable I–V file) rolls the whole file back, and the error names the
file, row, column and value. A file whose content was already ingested is skipped, so a
re-run after a crash or by mistake changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm
from xbar.training.devices.ivdata import IVDataError, device_stem, read_iv
from xbar.training.devices.usability import analyse

from .errors import FabError
from .spec import METRICS, SpecError
from .store import CampaignStore

KNOWN_COLUMNS = ("experiment", "iv_file", "notes", *METRICS)
FLOAT_TOLERANCE = 1e-9  # relative: a reported value equal to the suggested one


class IngestError(FabError):
    """A results file that cannot be ingested; nothing of it was stored."""


@dataclass(frozen=True)
class IngestReport:
    source: str
    rows: int
    skipped: bool  # already ingested earlier
    experiments: tuple[str, ...] = ()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iv_metrics(path: Path, where: str) -> tuple[dict[str, float | None], bytes]:
    """σ, monotonicity and usability of one I–V file, and its bytes."""
    try:
        result = analyse(read_iv(path))
    except IVDataError as exc:
        raise IngestError(f"{where}: {exc}") from None
    if not math.isfinite(result.usability):
        raise IngestError(f"{where}: {path}: usability cannot be computed (no monotonic run)")
    metrics: dict[str, float | None] = {
        "usability": result.usability,
        "sigma": result.sigma,
        "monotonicity": result.monotonicity,
    }
    return metrics, path.read_bytes()


def _metric(value: str, where: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise IngestError(f"{where}, column {column}: {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise IngestError(f"{where}, column {column}: {value!r} must be a finite number >= 0")
    return number


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=1e-300)
    return bool(a == b)


def ingest_file(store: CampaignStore, path: str | Path) -> IngestReport:
    """Ingest one results CSV or one I–V file named by its experiment."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    data = path.read_bytes()
    digest = sha256_of(data)
    if store.ingested(digest):
        return IngestReport(str(path), 0, skipped=True)
    if path.suffix.lower() in (".xlsx", ".xlsm") or _looks_like_iv(data):
        return _ingest_iv(store, path, digest)
    return _ingest_sheet(store, path, data, digest)


def _looks_like_iv(data: bytes) -> bool:
    first = data.decode("utf-8-sig", errors="replace").split("\n", 1)[0]
    return first.split(",", 1)[0].strip().lower() == "voltage"


def _ingest_iv(store: CampaignStore, path: Path, digest: str) -> IngestReport:
    ident = device_stem(path.name)
    known = {e.id: e for e in store.experiments()}
    if ident not in known:
        raise IngestError(
            f"{path}: an I–V file on its own must be named by its experiment "
            f"(e.g. E0001.csv); {ident!r} is not an experiment of this campaign"
        )
    if known[ident].done:
        raise IngestError(f"{path}: experiment {ident} is already measured")
    metrics, content = iv_metrics(path, str(path))
    with store.transaction():
        ingest = store.add_ingest(str(path), digest, 1)
        store.add_iv_file(path.name, digest, content)
        store.add_measurement(ident, ingest, metrics, digest)
    return IngestReport(str(path), 1, skipped=False, experiments=(ident,))


def _ingest_sheet(store: CampaignStore, path: Path, data: bytes, digest: str) -> IngestReport:
    spec = store.spec
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not a UTF-8 text CSV ({exc})") from None
    rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if not rows:
        raise IngestError(f"{path}: the file is empty")
    header = [h.strip() for h in rows[0]]
    allowed = set(KNOWN_COLUMNS) | set(spec.names)
    for number, name in enumerate(header, start=1):
        if name not in allowed:
            raise IngestError(
                f"{path}: row 1, column {number}: unknown column {name!r} "
                f"(known: {', '.join(sorted(allowed))})"
            )
    if len(set(header)) != len(header):
        raise IngestError(f"{path}: row 1: a column name is repeated")
    if "experiment" not in header:
        raise IngestError(f"{path}: row 1: the column 'experiment' is missing")
    needed = sorted({o.metric for o in spec.objectives})
    if "iv_file" not in header and not set(needed) <= set(header):
        missing = [m for m in needed if m not in header]
        raise IngestError(
            f"{path}: row 1: column(s) {missing} missing (the objectives need "
            "them), or give an iv_file column"
        )
    known = {e.id: e for e in store.experiments()}
    seen: dict[str, int] = {}
    done: list[str] = []
    with store.transaction():
        ingest = store.add_ingest(str(path), digest, len(rows) - 1)
        for line, row in enumerate(
            tqdm(rows[1:], desc=f"ingest {path.name}", unit="row", leave=False, disable=None),
            start=2,
        ):
            if len(row) > len(header):
                raise IngestError(f"{path}: row {line}: {len(row)} cells, header has {len(header)}")
            cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
            done.append(_ingest_row(store, spec, path, line, cells, known, seen, ingest, needed))
    return IngestReport(str(path), len(rows) - 1, skipped=False, experiments=tuple(done))


def _ingest_row(
    store: CampaignStore,
    spec: Any,
    path: Path,
    line: int,
    cells: dict[str, str],
    known: dict[str, Any],
    seen: dict[str, int],
    ingest: int,
    needed: list[str],
) -> str:
    where = f"{path}: row {line}"
    ident = cells["experiment"]
    given = {n: cells[n] for n in spec.names if cells.get(n, "") != ""}
    try:
        if ident:
            if ident in seen:
                raise IngestError(
                    f"{where}, column experiment: {ident!r} repeats row {seen[ident]}"
                )
            if ident not in known:
                raise IngestError(
                    f"{where}, column experiment: {ident!r} is not an experiment "
                    "of this campaign (leave it blank for a new one)"
                )
            if known[ident].done:
                raise IngestError(f"{where}, column experiment: {ident} is already measured")
            seen[ident] = line
            planned = known[ident].params
            for name, text in given.items():
                value = next(p for p in spec.parameters if p.name == name).check(text, where)
                if not _same(value, planned[name]):
                    raise IngestError(
                        f"{where}, column {name}: {text!r} differs from the suggested "
                        f"{planned[name]!r}; report a changed experiment as a new row "
                        "(blank experiment id)"
                    )
        else:
            values = spec.check_values(given, where)
    except SpecError as exc:
        raise IngestError(str(exc)) from None
    iv_sha = None
    if cells.get("iv_file"):
        if any(cells.get(m) for m in METRICS):
            raise IngestError(f"{where}: give either iv_file or the metric columns, not both")
        iv_path = (path.parent / cells["iv_file"]).resolve()
        metrics, content = iv_metrics(iv_path, f"{where}, column iv_file")
        iv_sha = sha256_of(content)
        store.add_iv_file(iv_path.name, iv_sha, content)
    else:
        for metric in needed:
            if not cells.get(metric):
                raise IngestError(f"{where}, column {metric}: missing (the objectives need it)")
        metrics = {m: _metric(cells[m], where, m) if cells.get(m) else None for m in METRICS}
    if not ident:
        ident = store.add_external(values)
    store.add_measurement(ident, ingest, metrics, iv_sha, cells.get("notes", ""))
    return ident
