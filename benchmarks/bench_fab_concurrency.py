"""Several writers on one campaign store: 4 processes each run 200 operations (suggest a
batch of 1, ingest the result of one of their own suggestions as a one-row sheet, or read
the status) against one SQLite file and one PostgreSQL database.

Checked afterwards: the store's integrity (SQLite ``integrity_check`` and
``foreign_key_check``; PostgreSQL's constraints hold by construction, the same queries
check the links), nothing lost (every suggestion and ingest a worker saw succeed is in the
store), experiment ids unique and numbered without gaps, and no point suggested twice.

The PostgreSQL server is the one ``XBAR_TEST_POSTGRES`` names (``.ci/run`` starts
Debian's package and sets it), else a throwaway cluster started here from the installed
PostgreSQL binaries; without either the PostgreSQL half is reported as skipped, with why.

Run: ``python -m benchmarks.bench_fab_concurrency`` (options: --workers, --ops, --out).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import glob  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from xbar.training.fab.campaign import status, suggest  # noqa: E402
from xbar.training.fab.ingest import ingest_file  # noqa: E402
from xbar.training.fab.spec import Spec  # noqa: E402
from xbar.training.fab.store import CampaignStore  # noqa: E402
from xbar.training.search import value_key  # noqa: E402

from benchmarks.run_all import run_meta, write_results  # noqa: E402

SPEC_TOML = """
[campaign]
name = "shared"
budget = 100000
batch = 1
method = "random"

[parameters.x]
type = "float"
low = 0.0
high = 1.0
decimals = 6

[parameters.y]
type = "log"
unit = "nm"
low = 1.0
high = 1000.0
decimals = 6

[parameters.m]
type = "categorical"
choices = ["a", "b", "c"]
"""


class PostgresUnavailable(Exception):
    """No PostgreSQL server could be reached or started; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A URL of a PostgreSQL server to create databases on: ``XBAR_TEST_POSTGRES``, else a
    throwaway cluster (Debian's initdb/pg_ctl, run as the postgres user when we are root)."""
    url = os.environ.get("XBAR_TEST_POSTGRES")
    if url:
        yield url
        return
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = binaries[-1] if binaries else shutil.which("initdb")
    if initdb is None:
        raise PostgresUnavailable(
            "no PostgreSQL server: XBAR_TEST_POSTGRES is unset and initdb is not installed "
            "(Debian: apt-get install postgresql; .ci/run does this)"
        )
    bindir = Path(initdb).parent
    folder = Path(tempfile.mkdtemp(prefix="xbar-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            shutil.chown(folder, "postgres")
        except (LookupError, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresUnavailable(f"running as root without a postgres user ({exc})") from None
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    log = folder / "log"
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "xbar", "--auth=trust"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {folder} -c listen_addresses='' -c fsync=on"
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
             "-w", "start"],
            check=True,
            capture_output=True,
        )  # fmt: skip
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        raise PostgresUnavailable(
            f"could not start a PostgreSQL cluster: {exc} {detail.decode(errors='replace')[-300:]}"
        ) from None
    try:
        yield f"postgresql://xbar@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server`` (dropped afterwards): its URL."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"xbar_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server)
    params["dbname"] = name
    url = "postgresql://?" + "&".join(f"{k}={v}" for k, v in params.items())
    try:
        yield url
    finally:
        with psycopg.connect(make_conninfo(server), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_store(where: str) -> None:
    import tomllib

    spec = Spec.from_dict(tomllib.loads(SPEC_TOML))
    CampaignStore.create(where, spec, spec.to_toml(), "none").close()


def worker(where: str, seed: int, ops: int, folder: str) -> dict:
    """One writer: ``ops`` operations; what it saw succeed."""
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(seed)
    mine: list[str] = []
    suggested: list[str] = []
    ingested: list[str] = []
    for op in range(ops):
        with CampaignStore.open(where) as store:
            kind = op % 3
            if kind == 0 or (kind == 1 and not mine):
                for ident, _ in suggest(store, 1).experiments:
                    mine.append(ident)
                    suggested.append(ident)
            elif kind == 1:
                ident = mine.pop(0)
                sheet = Path(folder) / f"w{seed}-{ident}.csv"
                sheet.write_text(f"experiment,usability\n{ident},{rng.uniform():.6f}\n")
                report = ingest_file(store, sheet)
                ingested.extend(report.experiments)
            else:
                status(store)
    return {"suggested": suggested, "ingested": ingested}


def check(where: str, results: list[dict]) -> dict:
    """Integrity, nothing lost, ids unique and gap-free, no point twice."""
    with CampaignStore.open(where) as store:
        if store.dialect == "sqlite":
            integrity = store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            integrity &= not store.db.execute("PRAGMA foreign_key_check").fetchall()
        else:
            orphans = store.db.execute(
                "SELECT COUNT(*) FROM measurements m LEFT JOIN experiments e "
                "ON e.id = m.experiment WHERE e.id IS NULL"
            ).fetchone()[0]
            integrity = orphans == 0
        experiments = store.experiments()
    ids = [e.id for e in experiments]
    suggested = [i for r in results for i in r["suggested"]]
    ingested = [i for r in results for i in r["ingested"]]
    measured = {e.id for e in experiments if e.state == "measured"}
    keys = [value_key(e.params) for e in experiments]
    return {
        "integrity": bool(integrity),
        "experiments": len(ids),
        "suggested_seen": len(suggested),
        "ingested_seen": len(ingested),
        "lost": len(set(suggested) - set(ids)) + len(set(ingested) - measured),
        "duplicate_ids": len(suggested) - len(set(suggested)),
        "ids_gap_free": ids == [f"E{i:04d}" for i in range(1, len(ids) + 1)],
        "duplicate_points": len(keys) - len(set(keys)),
    }


def run(where: str, workers: int, ops: int) -> dict:
    new_store(where)
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(workers) as pool:
        started = time.perf_counter()
        futures = [pool.submit(worker, where, seed, ops, folder) for seed in range(workers)]
        results = [f.result() for f in futures]
        wall = time.perf_counter() - started
    out = check(where, results)
    out.update(wall_s=wall, ops=workers * ops, ops_per_s=workers * ops / wall)
    out["ok"] = (
        out["integrity"]
        and out["lost"] == 0
        and out["duplicate_ids"] == 0
        and out["ids_gap_free"]
        and out["duplicate_points"] == 0
        and out["experiments"] == out["suggested_seen"]
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--ops", type=int, default=200, help="operations per worker")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rows.append(
            {"store": "sqlite", **run(str(Path(folder) / "s.sqlite"), args.workers, args.ops)}
        )
    try:
        with postgres_server() as server, fresh_database(server) as url:
            rows.append({"store": "postgresql", **run(url, args.workers, args.ops)})
    except PostgresUnavailable as exc:
        rows.append({"store": "postgresql", "skipped": str(exc)})
    meta = run_meta("bench_fab_concurrency", args, parser)
    meta.update(workers=args.workers, ops_per_worker=args.ops)
    write_results("bench_fab_concurrency", meta, rows, render(meta, rows), args.out)


def render(meta: dict, rows: list[dict]) -> str:
    lines = [
        "## Fabrication campaign: concurrent writers on one store",
        "",
        f"{meta['workers']} processes × {meta['ops_per_worker']} operations each (suggest a "
        "batch of 1, ingest one of their own suggestions' results, read the status; each "
        "operation opens the store afresh, as a CLI call does) into one store. Target: "
        "integrity holds, nothing lost, no duplicate experiment id, no point twice.",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']}; {meta['date']}",
        "",
        "| store | integrity | experiments | ingests seen | lost | duplicate ids | ids gap-free "
        "| duplicate points | ops/s | target met |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['store']} | skipped: {r['skipped']} |||||||||")
            continue
        lines.append(
            f"| {r['store']} | {'ok' if r['integrity'] else 'FAILED'} | {r['experiments']} | "
            f"{r['ingested_seen']} | {r['lost']} | {r['duplicate_ids']} | "
            f"{'yes' if r['ids_gap_free'] else 'no'} | {r['duplicate_points']} | "
            f"{r['ops_per_s']:.1f} | {'yes' if r['ok'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
