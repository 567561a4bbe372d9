"""Power loss and kill -9, CI-sized (benchmarks/bench_power_loss.py runs the full counts):
board resets during `xbar program` (in-process runtime), kill -9 of the host `xbar
program` against a board served by `xbar emulate`, kill -9 of `xbar fab ingest` and
`xbar fab suggest`. Every one must recover fully."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xbar.training.artifact import load_artifact

from benchmarks import bench_power_loss as B


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return B.iris_artifact(tmp_path_factory.mktemp("models"))


def test_board_resets_during_program_leave_lines_safe_and_the_array_within_tolerance(
    model: Path, tmp_path: Path
) -> None:
    """The board proves itself the same after its reset (IDENT), so the resumed run trusts
    the cells marked done, and judged on the true conductances (on the placement it saved)
    leaves as many cells within tolerance as a run without reset."""
    plan = load_artifact(model).plan
    clean = B.clean_program(plan, False, tmp_path)
    assert clean["damage"] == 0 and clean["within"] == 70
    for fraction in (0.15, 0.5, 0.85):
        row = B.reset_run(plan, False, fraction, tmp_path, clean)
        assert row["reset_fired"] and row["rebooted"] and row["lines_safe_after_boot"], row
        assert row["damage_events"] == 0, row
        # The host finds the reset by its HELLO probe and sends the PROGRAM again itself.
        assert row["host_error"] is None, row
        assert row["cells_reread"] == 0, row
        assert row["within"] >= clean["within"], row


def test_host_kills_recover(model: Path) -> None:
    result = B.part_host_kills(model, 2, 2, np.random.default_rng(1))
    kills = [k for e in result["episodes"] for k in e["kills"]]
    assert sum(k["killed_while_running"] for k in kills) >= 2  # kills that hit a running job
    assert all(k["progress_parseable"] is not False for k in kills)
    for episode in result["episodes"]:
        assert episode["final"]["recovered"], episode["final"]


def test_fab_kills_recover() -> None:
    result = B.part_fab(2, 20, np.random.default_rng(2))
    for step in ("ingest", "suggest"):
        for row in result[step]:
            assert row["integrity_after_kill"] == "ok", row
            assert row["state_after_kill"] != "partial", row
            assert row["recovered"], row


def test_fab_kills_recover_on_postgresql() -> None:
    from benchmarks.bench_fab_concurrency import PostgresUnavailable, postgres_server

    try:
        with postgres_server() as server:
            result = B.part_fab(1, 20, np.random.default_rng(3), server)
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL store tests need a server: {exc}")
    assert result["backend"] == "postgresql"
    for step in ("ingest", "suggest"):
        for row in result[step]:
            assert row["integrity_after_kill"] == "ok", row
            assert row["state_after_kill"] != "partial", row
            assert row["recovered"], row
