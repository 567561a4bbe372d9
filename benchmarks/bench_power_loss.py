"""Reliability: power loss and kill -9.

    python -m benchmarks.bench_power_loss [--resets-inproc 35] [--resets-mpy 15]
                                          [--host-kills 30] [--fab-kills 30]

(a) Board resets during `xbar program` (the job's `program_plan`), on both runtimes, at a
    random point of board time (a uniform fraction of a clean run's cycles): once the
    firmware has booted again every line must be grounded (switch state) with every DAC
    at 0 V and no damage event counted; the resumed run (same progress file) must leave
    as many cells within tolerance of what they were written to as a clean run.
(b) kill -9 of the host `xbar program` process, against a board served on a pty by a
    separate `xbar emulate` process, at random moments: the progress file must always
    parse, and the final rerun leaves the array within tolerance (read back on the port).
(c) kill -9 of `xbar fab ingest` and `xbar fab suggest` on the SQLite store at random
    moments: `PRAGMA integrity_check` passes, what was committed stays, and the reruns
    give what an uninterrupted run gives (ingest: "already ingested" the second time;
    suggest: the same batch).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import iris_artifact
from benchmarks.run_all import run_meta, write_results

OUT = Path(__file__).parent / "results"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "200"}
PROGRAM_ARGS = {"max_pulses": 100, "passes": 2}  # `xbar program`'s defaults
SERVED = ["--seed", "0", "--device", "pvk-best", "--noise", "off"]


# ---- the model ------------------------------------------------------------------------
def _within(achieved: dict[str, float], progress: dict, plan: Any, tol: float) -> int:
    """Cells whose conductance now (`achieved`, by key) is within `tol` of what the
    progress file says it was written to: the plan as placed on the board (`xbar
    program` may place hidden units again around failed cells and saves where)."""
    from xbar.host.program import Progress, plan_cells
    from xbar.host.remap import permute

    placement = progress.get("placement")
    if placement is not None:
        plan = permute(plan, [np.asarray(p, dtype=np.int64) for p in placement])
    n = 0
    for c in plan_cells(plan):
        entry = progress["cells"].get(Progress.key(c))
        if entry is None:
            continue
        goal = entry[4] if len(entry) > 4 else c.target
        n += abs(achieved[Progress.key(c)] - goal) <= tol * 1.0001 + 1e-12
    return n


# ---- (a) board resets ------------------------------------------------------------------
def _board(micropython: bool):
    from xbar.emulator.build import BoardOptions, build_board

    return build_board(
        BoardOptions(seed=0, device="pvk-best", noise="off", micropython=micropython)
    )


def lines_safe(model: Any) -> bool:
    """Every line grounded through its ground switch only, every DAC line at 0 V."""
    from xbar.emulator.parts import SW_DAC, SW_GND, SW_TIA

    sw = np.asarray(model._sw).reshape(-1, 3)
    grounded = bool(sw[:, SW_GND].all() and not sw[:, SW_DAC].any() and not sw[:, SW_TIA].any())
    return grounded and bool(np.all(np.asarray(model._dac_v) == 0.0))


def _by_key(progress: dict, array_g: Callable[[int], np.ndarray]) -> dict[str, float]:
    """The conductance now of every cell the progress file names (`array:row:col`)."""
    arrays: dict[int, np.ndarray] = {}
    achieved = {}
    for key in progress["cells"]:
        array, row, col = (int(x) for x in key.split(":"))
        if array not in arrays:
            arrays[array] = array_g(array)
        achieved[key] = float(arrays[array][row, col])
    return achieved


def _model_within(model: Any, state: Path, plan: Any, tol: float) -> int:
    progress = json.loads(state.read_text())
    return _within(_by_key(progress, model.conductances), progress, plan, tol)


def clean_program(plan: Any, micropython: bool, folder: Path) -> dict:
    """A run without reset: its board cycles (where resets are drawn) and cells within tolerance."""
    from xbar.host.board import Board
    from xbar.host.program import program_plan

    state = folder / f"clean-{int(micropython)}.json"
    tol = 0.5 * min(layer.g_unit for layer in plan.layers)
    with _board(micropython) as b:
        c0 = int(b.model.clock.cycles)
        t0 = time.perf_counter()
        with Board(b.port, timeout=10) as board:
            program_plan(board, plan, state, fresh=True, **PROGRAM_ARGS)
        cycles = int(b.model.clock.cycles) - c0
        within = _model_within(b.model, state, plan, tol)
        damage = int(b.model.diagnostics["damage_events"])
        progress = json.loads(state.read_text())
        true = _by_key(progress, b.model.conductances)
        read_error = max(abs(e[0] - true[k]) for k, e in progress["cells"].items()) / tol
    return {
        "cycles": cycles,
        "within": within,
        "read_error_tol": round(read_error, 4),
        "wall_s": time.perf_counter() - t0,
        "damage": damage,
    }


def reset_run(plan: Any, micropython: bool, fraction: float, folder: Path, clean: dict) -> dict:
    """Program on a fresh board, reset it at `fraction` of a clean run's board cycles,
    check the lines once it has booted, resume, and count the cells within tolerance."""
    from xbar.host.board import Board, BoardError
    from xbar.host.program import program_plan

    state = folder / "reset.json"
    state.unlink(missing_ok=True)
    tol = 0.5 * min(layer.g_unit for layer in plan.layers)
    row: dict[str, Any] = {"runtime": "micropython" if micropython else "in-process"}
    with _board(micropython) as b:
        model = b.model
        target = int(model.clock.cycles) + int(fraction * clean["cycles"])
        fired = threading.Event()
        finished = threading.Event()

        def watch() -> None:
            while not finished.is_set():
                if int(model.clock.cycles) >= target:
                    row["reset_at_cycles"] = int(model.clock.cycles)
                    row["reset_at_cells_programmed"] = int(model.diagnostics["cells_programmed"])
                    fired.set()
                    b.reset()
                    return
                time.sleep(0.0002)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        error = None
        try:
            with Board(b.port, timeout=5) as board:
                program_plan(board, plan, state, **PROGRAM_ARGS)
        except (BoardError, OSError) as exc:
            error = type(exc).__name__
        finished.set()
        watcher.join()
        row["fraction"] = round(fraction, 4)
        row["reset_fired"] = fired.is_set()
        row["host_error"] = error
        if fired.is_set():
            row["rebooted"] = b.wait_ready(30)
            row["lines_safe_after_boot"] = lines_safe(model)
        done_before = 0
        if state.exists():
            done_before = len(json.loads(state.read_text())["cells"])
        row["cells_done_at_reset"] = done_before
        with Board(b.port, timeout=10) as board:
            report = program_plan(board, plan, state, **PROGRAM_ARGS)
        row["cells_reread"] = report.reverified[0] if report.reverified else 0
        row["cells_rewritten"] = len(report.cells) - report.resumed
        row["within"] = _model_within(model, state, plan, tol)
        row["clean_within"] = clean["within"]
        row["damage_events"] = int(model.diagnostics["damage_events"])
        row["wall_s"] = round(time.perf_counter() - t0, 3)
    row["recovered"] = bool(
        row["within"] >= clean["within"]
        and row["damage_events"] == 0
        and row.get("lines_safe_after_boot", True)
        and row.get("rebooted", True)
    )
    return row


def part_resets(model_path: Path, n_inproc: int, n_mpy: int, rng: np.random.Generator) -> dict:
    from xbar.training.artifact import load_artifact

    plan = load_artifact(model_path).plan
    rows: list[dict] = []
    cleans = {}
    with tempfile.TemporaryDirectory() as tmp:
        for micropython, n in ((False, n_inproc), (True, n_mpy)):
            if n <= 0:
                continue
            clean = clean_program(plan, micropython, Path(tmp))
            cleans["micropython" if micropython else "in-process"] = clean
            for _ in range(n):
                rows.append(reset_run(plan, micropython, rng.uniform(0.02, 0.98), Path(tmp), clean))
    return {"clean": cleans, "runs": rows}


# ---- (b) kill -9 of the host -----------------------------------------------------------
@contextlib.contextmanager
def served_board() -> Iterator[str]:
    """`xbar emulate` in its own process; yields its pty."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xbar.host.cli.main", "emulate", *SERVED],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port:
            raise RuntimeError("xbar emulate printed no port")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _program_cmd(port: str, model: Path, state: Path, folder: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "xbar.host.cli.main",
        "program",
        "--port",
        port,
        str(model),
        "--state",
        str(state),
        "--report",
        str(folder / "cells.csv"),
        "--max-pulses",
        str(PROGRAM_ARGS["max_pulses"]),
        "--passes",
        str(PROGRAM_ARGS["passes"]),
    ]


def _parseable(state: Path) -> bool | None:
    """Whether the progress file parses (None: there is none yet)."""
    if not state.exists():
        return None
    try:
        data = json.loads(state.read_text())
        return isinstance(data["cells"], dict)
    except (ValueError, KeyError, TypeError):
        return False


def _port_within(port: str, model: Path, state: Path) -> int:
    from xbar.host.board import Board
    from xbar.training.artifact import load_artifact

    plan = load_artifact(model).plan
    tol = 0.5 * min(layer.g_unit for layer in plan.layers)
    progress = json.loads(state.read_text())
    with Board(port, timeout=10) as board:
        return _within(
            _by_key(progress, lambda a: board.read(array=a, v_read=0.3)), progress, plan, tol
        )


def host_episode(model: Path, kills: int, rng: np.random.Generator, span: float, folder: Path):
    """One served board: up to `kills` host runs killed at random moments (the episode
    ends early if a run finishes first), then one to the end."""
    from xbar.host.program import plan_cells
    from xbar.training.artifact import load_artifact

    cells = len(plan_cells(load_artifact(model).plan))
    state = folder / "progress.json"
    state.unlink(missing_ok=True)
    rows = []
    with served_board() as port:
        for _ in range(kills):
            at = float(rng.uniform(0.3, span))
            proc = subprocess.Popen(
                _program_cmd(port, model, state, folder),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=ENV,
            )
            try:
                proc.wait(timeout=at)
                alive = False  # it finished first: the board is programmed, nothing to kill
            except subprocess.TimeoutExpired:
                alive = True
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            ok = _parseable(state)
            done = len(json.loads(state.read_text())["cells"]) if ok else 0
            rows.append(
                {
                    "kill_at_s": round(at, 3),
                    "killed_while_running": alive,
                    "progress_parseable": ok,
                    "cells_done_at_kill": done,
                }
            )
            if not alive:
                break
            # A resumed run has less left to do: the next kill lands within what is left.
            span = 0.3 + (span - 0.3) * max(0.1, 1 - done / max(1, cells))
        final = subprocess.run(
            _program_cmd(port, model, state, folder),
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        within = _port_within(port, model, state) if final.returncode == 0 else -1
        complete = (
            bool(json.loads(state.read_text()).get("complete")) if _parseable(state) else False
        )
    return rows, {
        "rc": final.returncode,
        "within": within,
        "complete": complete,
        "err": final.stderr[-300:],
    }


def part_host_kills(model: Path, kills: int, per_episode: int, rng: np.random.Generator) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # A clean run: its wall time bounds the kill moments, its within count is the goal.
        state = folder / "progress.json"
        with served_board() as port:
            t0 = time.perf_counter()
            subprocess.run(
                _program_cmd(port, model, state, folder),
                check=True,
                env=ENV,
                capture_output=True,
                timeout=300,
            )
            span = time.perf_counter() - t0
            clean_within = _port_within(port, model, state)
        episodes = []
        left = kills  # kills that land while `xbar program` runs
        for _ in range(4 * kills):
            if left <= 0:
                break
            n = min(per_episode, left)
            rows, final = host_episode(model, n, rng, span, folder)
            left -= sum(r["killed_while_running"] for r in rows)
            final["recovered"] = bool(
                final["rc"] == 0
                and final["complete"]
                and final["within"] >= clean_within
                and all(r["progress_parseable"] is not False for r in rows)
            )
            episodes.append({"kills": rows, "final": final})
    return {"clean_wall_s": round(span, 3), "clean_within": clean_within, "episodes": episodes}


# ---- (c) kill -9 of fab ingest / suggest -----------------------------------------------
def _fab(*args: object) -> list[str]:
    return [sys.executable, "-m", "xbar.host.cli.main", "fab", *map(str, args)]


class SqliteStore:
    """The campaign store under test as a SQLite file: `base` (one committed ingest) and
    `work`, a fresh copy of it before each kill."""

    backend = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.base = str(folder / "perovskite.sqlite")
        self.work = str(folder / "work.sqlite")

    def fresh(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.work}{suffix}").unlink(missing_ok=True)
        shutil.copy(self.base, self.work)

    def query(self, sql: str, where: str | None = None) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(where or self.work)) as db:
            return db.execute(sql).fetchall()

    def integrity(self, where: str | None = None) -> str:
        return str(self.query("PRAGMA integrity_check", where)[0][0])

    def close(self) -> None:
        pass


class PostgresStore:
    """The campaign store under test as PostgreSQL databases on `server`: `base` and
    `work`, created from it as a template before each kill. Integrity: every B-tree index
    checked by the server's amcheck (`bt_index_check`), and the rows readable."""

    backend = "postgresql"

    def __init__(self, server: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self.server = server
        tag = os.urandom(4).hex()
        self.names = {"base": f"xbar_pl_base_{tag}", "work": f"xbar_pl_work_{tag}"}
        params = conninfo_to_dict(server)
        self.base, self.work = (
            "postgresql://?" + "&".join(f"{k}={v}" for k, v in {**params, "dbname": n}.items())
            for n in (self.names["base"], self.names["work"])
        )
        self._admin(f'CREATE DATABASE "{self.names["base"]}"')

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(sql)

    def fresh(self) -> None:
        work, base = self.names["work"], self.names["base"]
        self._admin(f'DROP DATABASE IF EXISTS "{work}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{work}" TEMPLATE "{base}"')

    def query(self, sql: str, where: str | None = None) -> list[tuple]:
        import psycopg

        with psycopg.connect(where or self.work) as db:
            return db.execute(sql).fetchall()

    def integrity(self, where: str | None = None) -> str:
        import psycopg

        try:
            with psycopg.connect(where or self.work, autocommit=True) as db:
                db.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                indexes = db.execute(
                    "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE a.amname = 'btree' AND n.nspname = 'public'"
                ).fetchall()
                for (oid,) in indexes:
                    db.execute("SELECT bt_index_check(%s)", (oid,))
            return "ok"
        except psycopg.Error as exc:
            return f"{type(exc).__name__}: {exc}".splitlines()[0]

    def close(self) -> None:
        for name in self.names.values():
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


Store = SqliteStore | PostgresStore


def store_counts(store: Store, where: str | None = None) -> dict[str, Any]:
    """Rows per table of the campaign store, and its integrity check."""

    def one(sql: str) -> Any:
        return store.query(sql, where)[0][0]

    counts: dict[str, Any] = {
        t: one(f"SELECT COUNT(*) FROM {t}")
        for t in ("experiments", "measurements", "ingests", "iv_files", "batches")
    }
    counts["optimizer_state"] = one("SELECT COUNT(*) FROM optimizer_state")
    counts["suggested"] = one("SELECT COUNT(*) FROM experiments WHERE origin = 'suggested'")
    counts["batch_sizes"] = int(one("SELECT COALESCE(SUM(size), 0) FROM batches"))
    counts["integrity"] = store.integrity(where)
    return counts


def _last_batch(store: Store) -> list:
    rows = store.query(
        "SELECT batch, params FROM experiments WHERE batch = (SELECT MAX(id) FROM batches)"
        " ORDER BY id"
    )
    return [tuple(r) for r in rows]


def fab_setup(folder: Path, rows: int, store: Store) -> Path:
    """`store.base` made a campaign with one committed ingest; a long sheet to ingest."""
    from xbar.training.devices.ivdata import write_csv
    from xbar.training.devices.published import load_published
    from xbar.training.fab.perovskite import SPEC_PATH, published_experiments
    from xbar.training.fab.spec import load_spec

    spec_path = folder / "perovskite.toml"
    spec_path.write_text(SPEC_PATH.read_text().replace("budget = 60", "budget = 500"))
    subprocess.run(
        _fab("init", spec_path, "--store", store.base), check=True, env=ENV, capture_output=True
    )
    spec = load_spec(SPEC_PATH)
    experiments = published_experiments(spec)
    header = ["experiment", *spec.names]
    first = folder / "first.csv"
    with first.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "usability"])
        for device, values in experiments[:5]:
            writer.writerow(["", *(values[n] for n in spec.names), device.published["usability"]])
    subprocess.run(
        _fab("ingest", first, "--store", store.base), check=True, env=ENV, capture_output=True
    )
    for device in load_published():
        write_csv(device.curves, folder / f"{device.short_id}.csv")
    big = folder / "big.csv"
    with big.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "iv_file"])
        for row in range(rows):
            device, values = experiments[row % len(experiments)]
            writer.writerow(["", *(values[n] for n in spec.names), f"{device.short_id}.csv"])
    return big


def _state_after_kill(whole: bool, rolled_back: bool) -> str:
    """What a kill left in the store: the whole step, none of it, or (never wanted) part."""
    return "committed" if whole else "rolled back" if rolled_back else "partial"


def _killed(command: list[str], at: float) -> bool:
    """Run `command`, SIGKILL it after `at` s; whether it was still running."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    time.sleep(at)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def _timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    return time.perf_counter() - t0, done


def part_fab(kills: int, rows: int, rng: np.random.Generator, server: str | None = None) -> dict:
    """Kills of `fab ingest` and `fab suggest` on a SQLite store, or on PostgreSQL
    databases of `server`."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store: Store = SqliteStore(folder) if server is None else PostgresStore(server)
        try:
            return _fab_kills(store, folder, kills, rows, rng)
        finally:
            store.close()


def _fab_kills(store: Store, folder: Path, kills: int, rows: int, rng: np.random.Generator) -> dict:
    big = fab_setup(folder, rows, store)
    committed = store_counts(store, store.base)
    work = store.work
    fresh = store.fresh

    # Uninterrupted references.
    fresh()
    ingest_s, done = _timed(_fab("ingest", big, "--store", work))
    assert done.returncode == 0, done.stderr
    ingested = store_counts(store)
    fresh()
    suggest_s, done = _timed(_fab("suggest", "--store", work, "--out", folder))
    assert done.returncode == 0, done.stderr
    suggested = store_counts(store)
    reference_batch = _last_batch(store)

    ingest_rows = []
    for _ in range(kills):
        fresh()
        at = float(rng.uniform(0.2, ingest_s))
        alive = _killed(_fab("ingest", big, "--store", work), at)
        after = store_counts(store)
        rolled_back = {k: after[k] for k in committed} == committed
        whole = {k: after[k] for k in ingested} == ingested
        _, rerun = _timed(_fab("ingest", big, "--store", work))
        rerun_counts = store_counts(store)
        _, again = _timed(_fab("ingest", big, "--store", work))
        again_counts = store_counts(store)
        ingest_rows.append(
            {
                "kill_at_s": round(at, 3),
                "killed_while_running": alive,
                "integrity_after_kill": after["integrity"],
                "state_after_kill": _state_after_kill(whole, rolled_back),
                "recovered": bool(
                    after["integrity"] == "ok"
                    and (rolled_back or whole)
                    and rerun.returncode == 0
                    and rerun_counts == ingested
                    and again.returncode == 0
                    and "already ingested" in again.stdout
                    and again_counts == ingested
                ),
            }
        )

    suggest_rows = []
    for _ in range(kills):
        fresh()
        at = float(rng.uniform(0.2, suggest_s))
        alive = _killed(_fab("suggest", "--store", work, "--out", folder), at)
        after = store_counts(store)
        rolled_back = after == committed
        whole = after == suggested
        consistent = (
            after["integrity"] == "ok"
            and after["suggested"] == after["batch_sizes"]
            and after["optimizer_state"] == after["batches"]
            and (rolled_back or whole)
        )
        if whole:  # committed before the kill: the batch it stored is the reference one
            same = _last_batch(store) == reference_batch
            rerun_ok = True
        else:  # rolled back: the rerun stores the batch an uninterrupted run stores
            _, rerun = _timed(_fab("suggest", "--store", work, "--out", folder))
            same = rerun.returncode == 0 and _last_batch(store) == reference_batch
            rerun_ok = store_counts(store) == suggested
        suggest_rows.append(
            {
                "kill_at_s": round(at, 3),
                "killed_while_running": alive,
                "integrity_after_kill": after["integrity"],
                "state_after_kill": _state_after_kill(whole, rolled_back),
                "recovered": bool(consistent and same and rerun_ok),
            }
        )
    return {
        "backend": store.backend,
        "rows": rows,
        "ingest_clean_s": round(ingest_s, 3),
        "suggest_clean_s": round(suggest_s, 3),
        "ingest": ingest_rows,
        "suggest": suggest_rows,
    }


# ---- report ----------------------------------------------------------------------------
def summarize(results: dict) -> dict:
    s: dict[str, Any] = {}
    runs = results.get("resets", {}).get("runs", [])
    for rt in ("in-process", "micropython"):
        mine = [r for r in runs if r["runtime"] == rt]
        if mine:
            s[f"resets_{rt}"] = {
                "runs": len(mine),
                "fired": sum(r["reset_fired"] for r in mine),
                "recovered": sum(r["recovered"] for r in mine),
                "lines_safe": sum(r.get("lines_safe_after_boot", False) for r in mine),
                "damage_events": sum(r["damage_events"] for r in mine),
                "cells_rewritten_mean": round(
                    float(np.mean([r["cells_rewritten"] for r in mine])), 1
                ),
                "cells_reread_mean": round(float(np.mean([r["cells_reread"] for r in mine])), 1),
            }
    hk = results.get("host_kills")
    if hk:
        kills = [k for e in hk["episodes"] for k in e["kills"]]
        s["host_kills"] = {
            "kills": len(kills),
            "killed_while_running": sum(k["killed_while_running"] for k in kills),
            "progress_unparseable": sum(k["progress_parseable"] is False for k in kills),
            "episodes": len(hk["episodes"]),
            "episodes_recovered": sum(e["final"]["recovered"] for e in hk["episodes"]),
        }
    for part, key in (("fab", "fab"), ("fab_postgresql", "fab_pg")):
        fab = results.get(part)
        if not fab:
            continue
        for step in ("ingest", "suggest"):
            rows = fab[step]
            s[f"{key}_{step}"] = {
                "kills": len(rows),
                "killed_while_running": sum(r["killed_while_running"] for r in rows),
                "rolled_back": sum(r["state_after_kill"] == "rolled back" for r in rows),
                "committed": sum(r["state_after_kill"] == "committed" for r in rows),
                "partial": sum(r["state_after_kill"] == "partial" for r in rows),
                "integrity_ok": sum(r["integrity_after_kill"] == "ok" for r in rows),
                "recovered": sum(r["recovered"] for r in rows),
            }
    return s


def markdown(summary: dict, results: dict, meta: dict) -> str:
    lines = [
        "## Reliability: power loss and kill -9",
        "",
        f"`{meta['command']}` ({meta['machine']}, {meta['date']}, {meta['wall_s']:.0f} s).",
        "",
        "| part | events | recovered | failed | notes |",
        "|---|---:|---:|---:|---|",
    ]
    clean = results.get("resets", {}).get("clean", {})
    for rt in ("in-process", "micropython"):
        r = summary.get(f"resets_{rt}")
        if r:
            lines.append(
                f"| board reset during PROGRAM ({rt}) | {r['runs']} ({r['fired']} fired) | "
                f"{r['recovered']} | {r['runs'] - r['recovered']} | lines safe after boot "
                f"{r['lines_safe']}/{r['fired']}, damage events {r['damage_events']}, cells "
                f"rewritten {r['cells_rewritten_mean']} / re-read {r['cells_reread_mean']} "
                f"per run (mean), within tolerance ≥ clean run's {clean[rt]['within']} "
                f"(its reads differ from the true conductance by ≤ "
                f"{clean[rt].get('read_error_tol', float('nan')):.3f} tol) |"
            )
    h = summary.get("host_kills")
    if h:
        hk = results["host_kills"]
        lines.append(
            f"| kill -9 of host `xbar program` | {h['kills']} ({h['killed_while_running']} "
            f"while running) | {h['episodes_recovered']}/{h['episodes']} boards | "
            f"{h['episodes'] - h['episodes_recovered']} | progress file unparseable "
            f"{h['progress_unparseable']} times; final rerun within tolerance ≥ clean "
            f"{hk['clean_within']} |"
        )
    for key, step in itertools.product(("fab", "fab_pg"), ("ingest", "suggest")):
        f = summary.get(f"{key}_{step}")
        where = "SQLite" if key == "fab" else "PostgreSQL"
        if f:
            lines.append(
                f"| kill -9 of `xbar fab {step}` ({where}) | {f['kills']} "
                f"({f['killed_while_running']} "
                f"while running) | {f['recovered']} | {f['kills'] - f['recovered']} | "
                f"integrity ok {f['integrity_ok']}/{f['kills']}; after the kill: "
                f"{f['rolled_back']} rolled back, {f['committed']} committed, "
                f"{f['partial']} partial |"
            )
    lines += [
        "",
        "Resets land at a uniform random fraction of a clean run's board cycles; the host "
        "keeps its default PROGRAM timeout and finds the reset by a HELLO probe answered "
        "before the PROGRAM (host/protocol_client.py, PROBE_AFTER_S). A run recovers when "
        "the lines are grounded with DACs at 0 V once the firmware has booted, no damage event is "
        "counted, and the resumed run leaves as many cells within tolerance of their "
        "written targets (judged on the true conductance, on the placement the progress "
        "file saved) as a clean run; `xbar program`'s defaults (100 pulses, 2 passes). "
        "Host kills: the kill moments are uniform over a "
        "clean run's wall time (process start included); several kills per served board, "
        "then a rerun to the end, read back on the port. Fab kills: each on a copy of a "
        "store with one committed ingest (SQLite: a copy of the file, integrity by PRAGMA "
        "integrity_check; PostgreSQL: a database made from it as a template, integrity by "
        "amcheck's bt_index_check on every index); recovered = integrity ok, the store either as "
        "before or as after an uninterrupted run, and the rerun(s) give the uninterrupted "
        'result (ingest: then "already ingested"; suggest: the same batch).',
        "",
    ]
    if meta.get("merged"):
        lines += [f"Parts kept from an earlier run: {meta['merged']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resets-inproc", type=int, default=35)
    parser.add_argument("--resets-mpy", type=int, default=15)
    parser.add_argument("--host-kills", type=int, default=30)
    parser.add_argument("--kills-per-board", type=int, default=3)
    parser.add_argument("--fab-kills", type=int, default=30)
    parser.add_argument("--fab-rows", type=int, default=40)
    parser.add_argument(
        "--fab-kills-pg",
        type=int,
        default=30,
        help="kills of each fab step on PostgreSQL ($XBAR_TEST_POSTGRES or a throwaway server)",
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep the earlier results of the parts not run now"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = iris_artifact(Path(tmp))
        if args.resets_inproc or args.resets_mpy:
            results["resets"] = part_resets(model, args.resets_inproc, args.resets_mpy, rng)
        if args.host_kills:
            results["host_kills"] = part_host_kills(
                model, args.host_kills, args.kills_per_board, rng
            )
    if args.fab_kills:
        results["fab"] = part_fab(args.fab_kills, args.fab_rows, rng)
    if args.fab_kills_pg:
        from benchmarks.bench_fab_concurrency import postgres_server

        with postgres_server() as server:
            results["fab_postgresql"] = part_fab(args.fab_kills_pg, args.fab_rows, rng, server)
    meta = {**run_meta("bench_power_loss", args, parser), "wall_s": time.perf_counter() - t0}
    # Where each part's figures come from (the command and date that ran it), carried
    # through any number of merges.
    meta["parts"] = {k: f"`{meta['command']}`, {meta['date']}" for k in results}
    earlier = Path(args.out) / "bench_power_loss.json"
    if args.merge and earlier.exists():
        old = json.loads(earlier.read_text())
        kept = {k: v for k, v in old["results"][0].items() if k != "summary" and k not in results}
        results = {**kept, **results}
        origin = old["meta"].get("parts", {})
        for k in kept:
            meta["parts"][k] = origin.get(k, f"`{old['meta']['command']}`, {old['meta']['date']}")
        meta["merged"] = ", ".join(f"{k} ({meta['parts'][k]})" for k in kept)
    summary = summarize(results)
    write_results(
        "bench_power_loss",
        meta,
        [{"summary": summary, **results}],
        markdown(summary, results, meta),
        args.out,
    )
    failed = sum(
        v.get("runs", v.get("kills", 0)) - v.get("recovered", v.get("episodes_recovered", 0))
        if "episodes" not in v
        else v["episodes"] - v["episodes_recovered"]
        for v in summary.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
