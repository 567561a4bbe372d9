"""A crash in the middle of an ingest: the process is killed (SIGKILL) while its write
transaction is open; the store keeps exactly what was committed, and the re-ingest is
complete and idempotent."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from xbar.training.devices.ivdata import write_csv
from xbar.training.devices.published import load_published
from xbar.training.fab.perovskite import SPEC_PATH, published_experiments
from xbar.training.fab.spec import load_spec

ROWS = 120  # each row reads and analyses an I–V file: seconds of ingest to interrupt


def xbar(*args: object, **kwargs: object) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "xbar.host.cli.main", "fab", *map(str, args)]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        **kwargs,
    )  # type: ignore[call-overload]


def table_counts(store: Path) -> dict[str, int]:
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("experiments", "measurements", "ingests", "iv_files")
        }


def test_kill_during_ingest_loses_nothing_and_reingest_is_idempotent(tmp_path: Path) -> None:
    spec_path = tmp_path / "perovskite.toml"
    spec_path.write_text(SPEC_PATH.read_text().replace("budget = 60", "budget = 500"))
    store = tmp_path / "perovskite.sqlite"
    assert xbar("init", spec_path).wait() == 0

    # A committed ingest first: it must survive the crash untouched.
    spec = load_spec(SPEC_PATH)
    experiments = published_experiments(spec)
    header = ["experiment", *spec.names]
    first = tmp_path / "first.csv"
    with first.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "usability"])
        for device, values in experiments[:5]:
            writer.writerow(["", *(values[n] for n in spec.names), device.published["usability"]])
    assert xbar("ingest", first, "--store", store).wait() == 0
    committed = table_counts(store)
    assert committed == {"experiments": 5, "measurements": 5, "ingests": 1, "iv_files": 0}

    # A long sheet of past experiments, each with its raw I–V file.
    for device in load_published():
        write_csv(device.curves, tmp_path / f"{device.short_id}.csv")
    big = tmp_path / "big.csv"
    with big.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "iv_file"])
        for row in range(ROWS):
            device, values = experiments[row % len(experiments)]
            writer.writerow(["", *(values[n] for n in spec.names), f"{device.short_id}.csv"])

    process = xbar("ingest", big, "--store", store)
    journal = Path(f"{store}-journal")
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.stat().st_size > 0):  # the transaction is open
        assert process.poll() is None, "the ingest ended before it could be interrupted"
        assert time.monotonic() < deadline, "the ingest never started writing"
        time.sleep(0.01)
    time.sleep(0.1)  # inside the rows (each reads and analyses an I–V file)
    assert process.poll() is None, "the ingest ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL

    assert table_counts(store) == committed  # the hot journal rolled back: nothing half-done

    rerun = xbar("ingest", big, "--store", store)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    after = table_counts(store)
    assert after["measurements"] == committed["measurements"] + ROWS
    assert after["ingests"] == 2 and after["iv_files"] == len(experiments)

    again = xbar("ingest", big, "--store", store)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "already ingested" in out
    assert table_counts(store) == after
