"""Campaign stores on a real PostgreSQL server (``--store postgresql://…``): the same loop,
the same all-or-nothing ingests, corrections and concurrent writers as a SQLite file.

The server is ``XBAR_TEST_POSTGRES`` (``.ci/run`` starts Debian's package and sets it) or
a throwaway cluster from the installed binaries; the tests skip, saying why, only where
neither can start."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from xbar.host.cli.main import main
from xbar.training.fab.perovskite import SPEC_PATH, write_past_sheet
from xbar.training.fab.spec import load_spec
from xbar.training.fab.store import CampaignStore

from benchmarks.bench_fab_concurrency import (
    PostgresUnavailable,
    fresh_database,
    postgres_server,
    run,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL store tests need a server: {exc}")


@pytest.fixture
def database(server: str) -> Iterator[str]:
    with fresh_database(server) as url:
        yield url


def fab(*args: object) -> int:
    return main(["fab", *map(str, args)])


def test_campaign_on_postgres(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fab("init", "perovskite", "--store", database) == 0
    assert fab("init", "perovskite", "--store", database) == 0  # reopened, same spec
    assert "reopened" in capsys.readouterr().out
    past = write_past_sheet(tmp_path / "past.csv", load_spec(SPEC_PATH), slice(0, 5))
    assert fab("ingest", past, "--store", database) == 0
    assert fab("ingest", past, "--store", database) == 0  # the same file: nothing to do
    assert "already ingested" in capsys.readouterr().out
    assert fab("suggest", "--store", database, "--batch", 2, "--out", tmp_path) == 0

    # A bad sheet rolls back as a whole on PostgreSQL too.
    rows = list(csv.reader((tmp_path / "perovskite-batch001.csv").open()))
    usability = rows[0].index("usability")
    rows[1][usability], rows[2][usability] = "0.2", "high"
    with (tmp_path / "bad.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    capsys.readouterr()
    assert fab("ingest", tmp_path / "bad.csv", "--store", database) == 1
    assert "row 3, column usability: 'high' is not a number" in capsys.readouterr().err
    with CampaignStore.open(database) as store:
        assert store.dialect == "postgresql"
        assert [e.state for e in store.experiments()] == ["measured"] * 5 + ["pending"] * 2

    rows[2][usability] = "0.3"
    with (tmp_path / "good.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    assert fab("ingest", tmp_path / "good.csv", "--store", database) == 0
    assert (
        fab("amend", "E0006", "--set", "usability=0.25", "--why", "typo", "--store", database) == 0
    )
    assert fab("history", "--store", database) == 0
    assert "E0006  amend" in capsys.readouterr().out
    assert fab("status", "--store", database) == 0
    assert "measured   7 of 7 experiments (5 external)" in capsys.readouterr().out
    assert fab("export", "--store", database, "-o", tmp_path / "all.csv") == 0
    assert len(list(csv.DictReader((tmp_path / "all.csv").open()))) == 7
    assert fab("report", "--store", database, "--out", tmp_path / "report") == 0


def test_postgres_errors_are_one_line(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    params = {**conninfo_to_dict(server), "dbname": "nosuchdb"}
    bad = "postgresql://?" + "&".join(f"{k}={v}" for k, v in params.items())
    assert fab("status", "--store", bad) == 1
    err = capsys.readouterr().err
    assert err.startswith("xbar: error: ") and "cannot connect" in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_concurrent_writers_lose_nothing(kind: str, tmp_path: Path, request) -> None:
    """CI-sized: 4 processes × 12 operations (the benchmark runs 200 each)."""
    if kind == "sqlite":
        result = run(str(tmp_path / "s.sqlite"), 4, 12)
    else:
        server = request.getfixturevalue("server")
        with fresh_database(server) as url:
            result = run(url, 4, 12)
    assert result["ok"], result
    assert result["experiments"] == result["suggested_seen"] >= 4 * 4
