"""One SQLite file per campaign: the spec, every suggestion with its batch and time, every
measurement with the file it came from, raw I–V files by content hash, and the optimizer's
log at each batch.

Every write happens inside :meth:`CampaignStore.transaction` (``BEGIN IMMEDIATE`` …
``COMMIT``), and SQLite's rollback journal makes a crash at any point lose nothing that
was committed and never leave half of a batch or an ingest behind.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FabError
from .spec import Spec, SpecError, load_spec

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY, created TEXT NOT NULL, method TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE experiments (
    id TEXT PRIMARY KEY,
    batch INTEGER REFERENCES batches(id),
    origin TEXT NOT NULL CHECK (origin IN ('suggested', 'external')),
    params TEXT NOT NULL,
    created TEXT NOT NULL);
CREATE TABLE ingests (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, source TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE, rows INTEGER NOT NULL);
CREATE TABLE iv_files (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, content BLOB NOT NULL);
CREATE TABLE measurements (
    experiment TEXT PRIMARY KEY REFERENCES experiments(id),
    ingest INTEGER NOT NULL REFERENCES ingests(id),
    measured TEXT NOT NULL,
    usability REAL, sigma REAL, monotonicity REAL,
    iv_sha256 TEXT REFERENCES iv_files(sha256),
    notes TEXT NOT NULL DEFAULT '');
CREATE TABLE optimizer_state (
    batch INTEGER PRIMARY KEY REFERENCES batches(id),
    method TEXT NOT NULL, seed INTEGER NOT NULL, state TEXT NOT NULL);
"""


class StoreError(FabError):
    """A campaign store that is missing, foreign, or inconsistent with its spec."""


@dataclass(frozen=True)
class Experiment:
    """One fabricated (or planned) device: its values and, once measured, its metrics."""

    id: str
    batch: int | None
    origin: str
    params: dict[str, Any]
    created: str
    metrics: dict[str, float | None] | None  # None: not measured yet
    measured: str | None = None
    iv_sha256: str | None = None

    @property
    def done(self) -> bool:
        return self.metrics is not None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def experiment_id(number: int) -> str:
    return f"E{number:04d}"


class CampaignStore:
    """A campaign's SQLite file. Open it with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self.db = connection

    # -- opening ----------------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = FULL")
        return db

    @classmethod
    def create(cls, path: str | Path, spec: Spec, spec_toml: str, spec_path: str) -> CampaignStore:
        """A new store holding ``spec``; refuses to overwrite an existing file."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: already exists; open it, or choose another --store")
        store = cls(path, cls._connect(path))
        with store.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    store.db.execute(statement)
            store.db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("schema", str(SCHEMA_VERSION)),
                    ("spec_toml", spec_toml),
                    ("spec_fingerprint", spec.fingerprint()),
                    ("spec_path", spec_path),
                    ("created", now()),
                ],
            )
        return store

    @classmethod
    def open(cls, path: str | Path) -> CampaignStore:
        """An existing store; a missing or foreign file is a clear error."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no campaign store here; start one with `xbar fab init SPEC`")
        try:
            db = cls._connect(path)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not an xbar campaign store ({exc})") from None
        if row is None:
            db.close()
            raise StoreError(f"{path}: not an xbar campaign store")
        if int(row[0]) != SCHEMA_VERSION:
            db.close()
            raise StoreError(f"{path}: store schema {row[0]}, this xbar reads {SCHEMA_VERSION}")
        return cls(path, db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- the spec ---------------------------------------------------------------------------
    def meta(self, key: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return "" if row is None else str(row[0])

    @property
    def spec(self) -> Spec:
        import tomllib

        return Spec.from_dict(tomllib.loads(self.meta("spec_toml")), source=f"{self.path}:spec")

    def check_spec_file(self) -> None:
        """The spec file the campaign started from must still mean the same thing."""
        path = Path(self.meta("spec_path"))
        if not path.is_file():
            return  # moved or deleted: the store keeps its own copy
        try:
            current = load_spec(path).fingerprint()
        except SpecError as exc:
            raise StoreError(f"{path} (the spec of {self.path}) no longer reads: {exc}") from None
        if current != self.meta("spec_fingerprint"):
            raise StoreError(
                f"{path} changed since the campaign {self.path} started "
                f"(spec {current}, store {self.meta('spec_fingerprint')}); restore it, or start "
                "a new campaign with `xbar fab init` and ingest the results there"
            )

    # -- reading ----------------------------------------------------------------------------
    def experiments(self) -> list[Experiment]:
        rows = self.db.execute(
            "SELECT e.id, e.batch, e.origin, e.params, e.created, m.measured, m.usability, "
            "m.sigma, m.monotonicity, m.iv_sha256 FROM experiments e "
            "LEFT JOIN measurements m ON m.experiment = e.id ORDER BY e.id"
        ).fetchall()
        return [
            Experiment(
                id=r[0],
                batch=r[1],
                origin=r[2],
                params=json.loads(r[3]),
                created=r[4],
                measured=r[5],
                iv_sha256=r[9],
                metrics=None
                if r[5] is None
                else {"usability": r[6], "sigma": r[7], "monotonicity": r[8]},
            )
            for r in rows
        ]

    def batches(self) -> list[tuple[int, str, str, int]]:
        return list(self.db.execute("SELECT id, created, method, size FROM batches ORDER BY id"))

    def ingested(self, sha256: str) -> str | None:
        row = self.db.execute("SELECT at FROM ingests WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else str(row[0])

    def iv_file(self, sha256: str) -> tuple[str, bytes]:
        row = self.db.execute(
            "SELECT name, content FROM iv_files WHERE sha256 = ?", (sha256,)
        ).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no I–V file {sha256}")
        return str(row[0]), bytes(row[1])

    # -- writing (inside a transaction) -----------------------------------------------------
    def _next_number(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]) + 1

    def add_batch(
        self, method: str, values: list[dict[str, Any]], seed: int, state: dict[str, Any]
    ) -> tuple[int, list[str]]:
        """A batch of suggestions and the optimizer state that produced it."""
        created = now()
        cursor = self.db.execute(
            "INSERT INTO batches (created, method, size) VALUES (?, ?, ?)",
            (created, method, len(values)),
        )
        batch = int(cursor.lastrowid or 0)
        first = self._next_number()
        ids = [experiment_id(first + i) for i in range(len(values))]
        self.db.executemany(
            "INSERT INTO experiments VALUES (?, ?, 'suggested', ?, ?)",
            [(i, batch, json.dumps(v), created) for i, v in zip(ids, values, strict=True)],
        )
        self.db.execute(
            "INSERT INTO optimizer_state VALUES (?, ?, ?, ?)",
            (batch, method, seed, json.dumps(state)),
        )
        return batch, ids

    def add_external(self, values: dict[str, Any]) -> str:
        """An experiment the campaign did not suggest (a past run, a lab's own idea)."""
        new_id = experiment_id(self._next_number())
        self.db.execute(
            "INSERT INTO experiments VALUES (?, NULL, 'external', ?, ?)",
            (new_id, json.dumps(values), now()),
        )
        return new_id

    def add_ingest(self, source: str, sha256: str, rows: int) -> int:
        cursor = self.db.execute(
            "INSERT INTO ingests (at, source, sha256, rows) VALUES (?, ?, ?, ?)",
            (now(), source, sha256, rows),
        )
        return int(cursor.lastrowid or 0)

    def add_iv_file(self, name: str, sha256: str, content: bytes) -> None:
        self.db.execute("INSERT OR IGNORE INTO iv_files VALUES (?, ?, ?)", (sha256, name, content))

    def add_measurement(
        self,
        experiment: str,
        ingest: int,
        metrics: dict[str, float | None],
        iv_sha256: str | None,
        notes: str = "",
    ) -> None:
        self.db.execute(
            "INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                experiment,
                ingest,
                now(),
                metrics.get("usability"),
                metrics.get("sigma"),
                metrics.get("monotonicity"),
                iv_sha256,
                notes,
            ),
        )
