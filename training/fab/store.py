"""One campaign store: the spec, every suggestion with its batch and time, every measurement
(what was actually done, linked to the suggestion it answers), raw I–V files by content
hash, every correction in an audit table, and the optimizer's log at each batch.

The store is a SQLite file (the default) or a PostgreSQL database named by a
``postgresql://`` URL, with the same schema: a lab that outgrows one file points every
instrument and person at one server. Every write happens inside
:meth:`CampaignStore.transaction`, and writers are serialised (SQLite ``BEGIN IMMEDIATE``;
a transaction-scoped advisory lock in PostgreSQL), so a crash at any point loses nothing
that was committed, never leaves half of a batch or an ingest behind, and two writers
never number two experiments alike.
"""

from __future__ import annotations

import datetime
import getpass
import json
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FabError
from .spec import Spec, SpecError, load_spec

SCHEMA_VERSION = 2
STATES = ("pending", "measured", "failed", "abandoned")
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE batches (
    id {serial}, created TEXT NOT NULL, method TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE experiments (
    id TEXT PRIMARY KEY,
    batch INTEGER REFERENCES batches(id),
    origin TEXT NOT NULL CHECK (origin IN ('suggested', 'external')),
    params TEXT NOT NULL,
    created TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'measured', 'failed', 'abandoned')));
CREATE TABLE ingests (
    id {serial}, at TEXT NOT NULL, source TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE, rows INTEGER NOT NULL);
CREATE TABLE iv_files (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, content {blob} NOT NULL);
CREATE TABLE measurements (
    experiment TEXT PRIMARY KEY REFERENCES experiments(id),
    ingest INTEGER REFERENCES ingests(id),
    measured TEXT NOT NULL,
    actual TEXT NOT NULL,
    metrics TEXT NOT NULL,
    iv_sha256 TEXT REFERENCES iv_files(sha256),
    notes TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '');
CREATE TABLE audit (
    id {serial}, experiment TEXT NOT NULL REFERENCES experiments(id), at TEXT NOT NULL,
    who TEXT NOT NULL, action TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL,
    why TEXT NOT NULL);
CREATE TABLE optimizer_state (
    batch INTEGER PRIMARY KEY REFERENCES batches(id),
    method TEXT NOT NULL, seed INTEGER NOT NULL, state TEXT NOT NULL);
"""
DIALECT = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY", "blob": "BLOB"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA"},
}
BUSY_TIMEOUT_S = 120.0  # SQLite: how long a writer waits for another's transaction


class StoreError(FabError):
    """A campaign store that is missing, foreign, or inconsistent with its spec."""


@dataclass(frozen=True)
class Experiment:
    """One fabricated (or planned) device: what was suggested, what was done, and once
    measured its outcomes. ``params`` are the conditions as done (the suggestion's until
    a measurement says otherwise)."""

    id: str
    batch: int | None
    origin: str
    params: dict[str, Any]
    created: str
    metrics: dict[str, Any] | None  # None unless measured
    measured: str | None = None
    iv_sha256: str | None = None
    state: str = "pending"
    suggested: dict[str, Any] | None = None  # the suggestion (None for external ones)
    notes: str = ""
    reason: str = ""  # why a run failed

    @property
    def done(self) -> bool:
        """No longer awaited: measured, failed or abandoned."""
        return self.state != "pending"


@dataclass(frozen=True)
class Correction:
    """One row of the audit table: a measurement amended, retracted or abandoned."""

    experiment: str
    at: str
    who: str
    action: str
    old: dict[str, Any]
    new: dict[str, Any]
    why: str


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def experiment_id(number: int) -> str:
    return f"E{number:04d}"


def whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def is_url(store: str | Path) -> bool:
    return str(store).startswith(("postgresql://", "postgres://"))


def shown(store: str | Path) -> str:
    """The store as messages name it: a URL without its password."""
    text = str(store)
    if not is_url(text) or "@" not in text:
        return text
    head, _, tail = text.partition("://")
    credentials, _, host = tail.rpartition("@")
    return f"{head}://{credentials.split(':', 1)[0]}@{host}"


class _Postgres:
    """psycopg in autocommit mode behind sqlite3's small API (``?`` placeholders,
    explicit BEGIN/COMMIT), so one set of SQL serves both stores."""

    def __init__(self, url: str) -> None:
        import psycopg

        try:
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"{shown(url)}: cannot connect ({reason})") from None

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        return self.db.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self.db.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def close(self) -> None:
        self.db.close()


class CampaignStore:
    """A campaign's store. Open it with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path | str, connection: Any, dialect: str = "sqlite") -> None:
        self.path = path if dialect == "sqlite" else shown(path)
        self.db = connection
        self.dialect = dialect
        self._spec: Spec | None = None

    # -- opening ----------------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # isolation_level None: transactions are explicit; the timeout lets a writer wait
        # for another's transaction instead of failing at once.
        db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = FULL")
        return db

    @classmethod
    def _connect_any(cls, where: str | Path) -> CampaignStore:
        if is_url(where):
            return cls(str(where), _Postgres(str(where)), "postgresql")
        return cls(Path(where), cls._connect(Path(where)))

    def _has_schema(self) -> bool:
        if self.dialect == "postgresql":
            row = self.db.execute("SELECT to_regclass('meta')").fetchone()
            return row[0] is not None
        row = self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        return row is not None

    @classmethod
    def create(cls, path: str | Path, spec: Spec, spec_toml: str, spec_path: str) -> CampaignStore:
        """A new store holding ``spec``; refuses to overwrite an existing one."""
        if not is_url(path) and Path(path).exists():
            raise StoreError(f"{path}: already exists; open it, or choose another --store")
        store = cls._connect_any(path)
        with store.transaction():
            if store._has_schema():
                store.close()
                raise StoreError(f"{store.path}: already holds a campaign; choose another --store")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    store.db.execute(statement.format(**DIALECT[store.dialect]))
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
        """An existing store; a missing or foreign one is a clear error."""
        if not is_url(path) and not Path(path).is_file():
            raise StoreError(f"{path}: no campaign store here; start one with `xbar fab init SPEC`")
        try:
            store = cls._connect_any(path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not an xbar campaign store ({exc})") from None
        try:
            if not store._has_schema():
                raise StoreError(f"{store.path}: not an xbar campaign store")
            row = store.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            store.close()
            raise StoreError(f"{path}: not an xbar campaign store ({exc})") from None
        except StoreError:
            store.close()
            raise
        if row is None:
            store.close()
            raise StoreError(f"{store.path}: not an xbar campaign store")
        if int(row[0]) == 1 and store.dialect == "sqlite":
            store._upgrade_from_1()
        elif int(row[0]) != SCHEMA_VERSION:
            store.close()
            raise StoreError(
                f"{store.path}: store schema {row[0]}, this xbar reads {SCHEMA_VERSION}"
            )
        return store

    def _upgrade_from_1(self) -> None:
        """A schema-1 store (fixed usability/sigma/monotonicity columns, no states or
        audit) rewritten as schema 2 in one transaction: nothing is dropped."""
        with self.transaction():
            db = self.db
            db.execute("ALTER TABLE experiments RENAME TO experiments_v1")
            db.execute("ALTER TABLE measurements RENAME TO measurements_v1")
            for statement in SCHEMA.split(";"):
                if "TABLE experiments" in statement or "TABLE measurements" in statement:
                    db.execute(statement.format(**DIALECT["sqlite"]))
                if "TABLE audit" in statement:
                    db.execute(statement.format(**DIALECT["sqlite"]))
            rows = db.execute(
                "SELECT e.id, e.batch, e.origin, e.params, e.created, m.ingest, m.measured, "
                "m.usability, m.sigma, m.monotonicity, m.iv_sha256, m.notes FROM "
                "experiments_v1 e LEFT JOIN measurements_v1 m ON m.experiment = e.id"
            ).fetchall()
            for r in rows:
                state = "pending" if r[6] is None else "measured"
                db.execute("INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?)", (*r[:5], state))
                if r[6] is not None:
                    metrics = {
                        k: v
                        for k, v in zip(
                            ("usability", "sigma", "monotonicity"), r[7:10], strict=True
                        )
                        if v is not None
                    }
                    db.execute(
                        "INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, '')",
                        (r[0], r[5], r[6], r[3], json.dumps(metrics), r[10], r[11]),
                    )
            db.execute("DROP TABLE measurements_v1")
            db.execute("DROP TABLE experiments_v1")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """All writes inside commit together or not at all; one writer at a time."""
        if self.dialect == "postgresql":
            self.db.execute("BEGIN")
            # Serialise writers as SQLite's BEGIN IMMEDIATE does (one key per database).
            key = zlib.crc32(b"xbar-fab-campaign")
            self.db.execute("SELECT pg_advisory_xact_lock(?)", (key,))
        else:
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
        if self._spec is None:
            import tomllib

            self._spec = Spec.from_dict(
                tomllib.loads(self.meta("spec_toml")), source=f"{self.path}:spec"
            )
        return self._spec

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
            "SELECT e.id, e.batch, e.origin, e.params, e.created, e.state, m.measured, "
            "m.actual, m.metrics, m.iv_sha256, m.notes, m.reason FROM experiments e "
            "LEFT JOIN measurements m ON m.experiment = e.id ORDER BY e.id"
        ).fetchall()
        out = []
        for r in rows:
            planned = json.loads(r[3])
            out.append(
                Experiment(
                    id=r[0],
                    batch=r[1],
                    origin=r[2],
                    params=planned if r[7] is None else json.loads(r[7]),
                    created=r[4],
                    state=r[5],
                    measured=r[6],
                    metrics=json.loads(r[8]) if r[5] == "measured" else None,
                    iv_sha256=r[9],
                    notes=r[10] or "",
                    reason=r[11] or "",
                    suggested=planned if r[2] == "suggested" else None,
                )
            )
        return out

    def experiment(self, ident: str) -> Experiment:
        for e in self.experiments():
            if e.id == ident:
                return e
        raise StoreError(f"{self.path}: no experiment {ident!r}")

    def batches(self) -> list[tuple[int, str, str, int]]:
        return list(self.db.execute("SELECT id, created, method, size FROM batches ORDER BY id"))

    def batch_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])

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

    def history(self, experiment: str | None = None) -> list[Correction]:
        """The audit table (every correction, oldest first), of one experiment or all."""
        sql = "SELECT experiment, at, who, action, old, new, why FROM audit"
        rows = self.db.execute(
            sql + (" WHERE experiment = ? ORDER BY id" if experiment else " ORDER BY id"),
            (experiment,) if experiment else (),
        ).fetchall()
        return [
            Correction(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6])
            for r in rows
        ]

    # -- writing (inside a transaction) -----------------------------------------------------
    def _next_number(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]) + 1

    def add_batch(
        self, method: str, values: list[dict[str, Any]], seed: int, state: dict[str, Any]
    ) -> tuple[int, list[str]]:
        """A batch of suggestions and the optimizer state that produced it."""
        created = now()
        batch = int(
            self.db.execute(
                "INSERT INTO batches (created, method, size) VALUES (?, ?, ?) RETURNING id",
                (created, method, len(values)),
            ).fetchone()[0]
        )
        first = self._next_number()
        ids = [experiment_id(first + i) for i in range(len(values))]
        self.db.executemany(
            "INSERT INTO experiments VALUES (?, ?, 'suggested', ?, ?, 'pending')",
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
            "INSERT INTO experiments VALUES (?, NULL, 'external', ?, ?, 'pending')",
            (new_id, json.dumps(values), now()),
        )
        return new_id

    def add_ingest(self, source: str, sha256: str, rows: int) -> int:
        return int(
            self.db.execute(
                "INSERT INTO ingests (at, source, sha256, rows) VALUES (?, ?, ?, ?) RETURNING id",
                (now(), source, sha256, rows),
            ).fetchone()[0]
        )

    def add_iv_file(self, name: str, sha256: str, content: bytes) -> None:
        self.db.execute(
            "INSERT INTO iv_files VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (sha256, name, content),
        )

    def add_measurement(
        self,
        experiment: str,
        ingest: int | None,
        metrics: dict[str, Any] | None,
        iv_sha256: str | None,
        notes: str = "",
        actual: dict[str, Any] | None = None,
        reason: str = "",
    ) -> None:
        """A measured outcome, or (``metrics`` None) a failed run with its ``reason``;
        ``actual``: the conditions as done, when they differ from the suggestion's."""
        if actual is None:
            row = self.db.execute(
                "SELECT params FROM experiments WHERE id = ?", (experiment,)
            ).fetchone()
            actual = json.loads(row[0])
        self.db.execute(
            "INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                experiment,
                ingest,
                now(),
                json.dumps(actual),
                json.dumps(metrics or {}),
                iv_sha256,
                notes,
                reason,
            ),
        )
        state = "measured" if metrics is not None else "failed"
        self.db.execute("UPDATE experiments SET state = ? WHERE id = ?", (state, experiment))

    # -- corrections (inside a transaction): the old value always goes to the audit -------
    def _record(self, experiment: Experiment) -> dict[str, Any]:
        return {
            "state": experiment.state,
            "params": experiment.params,
            "metrics": experiment.metrics,
            "notes": experiment.notes,
            "reason": experiment.reason,
            "iv_sha256": experiment.iv_sha256,
        }

    def _audit(
        self, experiment: str, action: str, old: dict[str, Any], new: dict[str, Any], who: str,
        why: str,
    ) -> None:  # fmt: skip
        self.db.execute(
            "INSERT INTO audit (experiment, at, who, action, old, new, why) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (experiment, now(), who, action, json.dumps(old), json.dumps(new), why),
        )

    def amend(
        self,
        experiment: Experiment,
        metrics: dict[str, Any] | None,
        actual: dict[str, Any],
        notes: str,
        reason: str,
        who: str,
        why: str,
        iv_sha256: str | None = None,
        ingest: int | None = None,
    ) -> None:
        """Replace a measurement (measured or failed) with a corrected one."""
        old = self._record(experiment)
        self.db.execute("DELETE FROM measurements WHERE experiment = ?", (experiment.id,))
        self.add_measurement(
            experiment.id, ingest, metrics, iv_sha256 or experiment.iv_sha256, notes, actual,
            reason,
        )  # fmt: skip
        new = {**old, "state": "measured" if metrics is not None else "failed",
               "params": actual, "metrics": metrics, "notes": notes, "reason": reason}  # fmt: skip
        self._audit(experiment.id, "amend", old, new, who, why)

    def retract(self, experiment: Experiment, who: str, why: str) -> None:
        """Withdraw a measurement: the experiment is pending again (to be re-measured)."""
        old = self._record(experiment)
        self.db.execute("DELETE FROM measurements WHERE experiment = ?", (experiment.id,))
        self.db.execute("UPDATE experiments SET state = 'pending' WHERE id = ?", (experiment.id,))
        self._audit(experiment.id, "retract", old, {"state": "pending"}, who, why)

    def abandon(self, experiment: Experiment, who: str, why: str) -> None:
        """Give an experiment up (not run, or its result unusable): no longer pending, and
        the optimizer ignores it; a measurement it had stays in the audit."""
        old = self._record(experiment)
        self.db.execute("DELETE FROM measurements WHERE experiment = ?", (experiment.id,))
        self.db.execute("UPDATE experiments SET state = 'abandoned' WHERE id = ?", (experiment.id,))
        self._audit(experiment.id, "abandon", old, {"state": "abandoned"}, who, why)
