"""`xbar program` resumed on another board: the progress file names the board it was
saved on; on a board not proved that one, the cells marked done are read again and those
out of tolerance written again, in one line. The file is written atomically and durably."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from xbar.firmware import protocol as P
from xbar.host.board import Board
from xbar.host.cli.main import main
from xbar.host.program import Pairs, Progress, plan_cells, program_plan
from xbar.training.artifact import load_artifact

from benchmarks.models import iris_artifact

URL = "emu://xbar-10x10?seed=0&device=pvk-best&noise=off"


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_artifact(tmp_path_factory.mktemp("models"))


def _interrupted(plan, state: Path, port: serial.Serial) -> None:
    """Program the first frame of 24 cells on `port`'s board, then stop."""

    def stop(n: int) -> None:
        raise KeyboardInterrupt

    with Board(port, timeout=30) as board, pytest.raises(KeyboardInterrupt):
        program_plan(board, plan, state, frame_cells=24, max_pulses=20, passes=1, on_frame=stop)


def _on_target(report, port: serial.Serial, tol: float) -> None:
    """Every converged cell holds its target on the board (ideal board: reads exact)."""
    actual = port.board.model.conductances(0)  # type: ignore[attr-defined]
    got = np.array([actual[c.row, c.col] for c in report.cells])
    ok = report.status == P.ST_OK
    assert ok.sum() >= len(ok) - 2
    assert np.all(np.abs(got - report.programmed)[ok] <= tol * 1.0001 + 1e-9)


def test_resume_on_another_board_reads_the_done_cells_again(iris: Path, tmp_path: Path) -> None:
    plan = load_artifact(iris).plan
    cells = plan_cells(plan)
    tol = 0.5 * plan.layers[0].g_unit
    state = tmp_path / "progress.json"
    first = serial.serial_for_url(URL, timeout=0.05)
    try:
        with Board(first, timeout=30) as board:
            first_id = board.identity()
            program_plan(board, plan, state, max_pulses=20, passes=1)
    finally:
        first.close()
    saved = json.loads(state.read_text())
    assert saved["board"] == first_id and first_id is not None and first_id.startswith("mcu:")
    assert len(saved["cells"]) == len(cells) and saved["complete"] is True

    # A fresh board (same seed, but a board of its own: another unique id, none of its
    # cells written): every cell marked done is read again; those far from what they were
    # written to go again, with their pair partners (cells at g_min were right already).
    second = serial.serial_for_url(URL, timeout=0.05)
    g0 = second.board.model.conductances(0).copy()  # type: ignore[attr-defined]
    pairs = Pairs(plan, cells)
    far = set()
    for c in cells:
        entry = saved["cells"][Progress.key(c)]
        goal = entry[4] if len(entry) > 4 else c.target
        if abs(g0[c.row, c.col] - goal) > tol:
            far |= {c, pairs.partner[c]}
    assert 0 < len(far) < len(cells)
    notes: list[str] = []
    try:
        with Board(second, timeout=30) as board:
            assert board.identity() != first_id
            report = program_plan(board, plan, state, max_pulses=20, passes=1, on_note=notes.append)
            assert report.loaded and report.reverified == (len(cells), len(far))
            assert report.resumed == len(cells) - len(far)
            _on_target(report, second, tol)
            assert json.loads(state.read_text())["board"] == board.identity()

            # Again on this same board: proved the same, nothing read again.
            again = program_plan(board, plan, state, max_pulses=20, passes=1, on_note=notes.append)
            assert again.reverified is None and again.resumed == len(cells)
    finally:
        second.close()
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith(f"{state} was saved on another board ({first_id}; this one is ")
    kept = len(cells) - len(far)
    assert f"read again the {len(cells)} cells it marks done: {kept} within ±" in notes[0]
    assert notes[0].endswith(f" S kept, {len(far)} to write again")


def test_a_board_without_id_is_read_again_and_good_cells_kept(iris: Path, tmp_path: Path) -> None:
    """A progress file that names no board (an older file, or a pty): the same board's
    cells all read within tolerance, so all are kept and none written again."""
    plan = load_artifact(iris).plan
    state = tmp_path / "progress.json"
    port = serial.serial_for_url(URL, timeout=0.05)
    notes: list[str] = []
    try:
        _interrupted(plan, state, port)
        data = json.loads(state.read_text())
        del data["board"]  # as written before boards were recorded
        state.write_text(json.dumps(data))
        with Board(port, timeout=30) as board:
            report = program_plan(
                board, plan, state, frame_cells=24, max_pulses=20, passes=1, on_note=notes.append
            )
        assert report.reverified == (24, 0) and report.resumed == 24
    finally:
        port.close()
    assert len(notes) == 1
    assert "cannot prove this board the one it was saved on (no board id in the file)" in notes[0]
    assert ": read again the 24 cells it marks done: 24 within ±" in notes[0]
    assert notes[0].endswith(" S kept, 0 to write again")


def test_cli_says_it_in_one_line(iris: Path, tmp_path: Path, capsys) -> None:
    """`xbar program` twice on emu:// (each run a new board): the second run says it
    reads the cells again, rewrites them, and finishes."""
    state = tmp_path / "p.json"
    argv = ["program", "--port", URL, str(iris), "--state", str(state), "--passes", "1"]
    argv += ["--max-pulses", "20", "--report", str(tmp_path / "cells.csv")]
    assert main(argv) == 0
    first = json.loads(state.read_text())
    assert first["complete"] is True and first["board"].startswith("mcu:")
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "was saved on another board" in line]
    assert len(lines) == 1, out
    n = len(plan_cells(load_artifact(iris).plan))
    assert f"read again the {n} cells it marks done" in lines[0]
    second = json.loads(state.read_text())
    assert second["complete"] is True and second["board"] != first["board"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fds through /proc")
def test_progress_is_written_atomically_and_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "progress.json"
    state = Progress(path, "digest", "xbar-10x10", fresh=False, board="usb:2e8a:0005:E66")
    state.done = {"0:0:0": [1e-5, 3, 0, 1]}
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    state.save()
    assert synced == [str(path) + ".tmp", str(tmp_path)]  # the data, then the rename
    assert not path.with_name(path.name + ".tmp").exists()
    again = Progress(path, "digest", "xbar-10x10", fresh=False, board="usb:2e8a:0005:E66")
    assert again.same_board and again.done == state.done

    # A crash between writing the temporary file and renaming it: the old file stands.
    def crash(src: object, dst: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    state.done["0:0:1"] = [2e-5, 1, 0, 1]
    with pytest.raises(OSError, match="power cut"):
        state.save()
    assert json.loads(path.read_text())["cells"] == {"0:0:0": [1e-5, 3, 0, 1]}


def test_program_uses_the_tolerance_the_model_was_trained_for(
    iris: Path, tmp_path: Path, capsys
) -> None:
    """An artifact trained for `verify:0.25` is programmed within 0.25 weight steps, not
    the generic half step; --tolerance still wins; a malformed field is one clear error."""
    from xbar.host.program import ProgramError, scheme_tolerance

    art = load_artifact(iris)
    step = min(layer.g_unit for layer in art.plan.layers)
    trained = {"program": {"scheme": "verify:0.25", "tolerance_steps": 0.25}}
    assert scheme_tolerance(trained, art.plan) == (
        0.25 * step,
        "0.25 weight steps, as trained (verify:0.25)",
    )
    half, why = scheme_tolerance({"program": {"scheme": "open-loop"}}, art.plan)
    assert half == 0.5 * step and "trained for open-loop" in why
    for bad in (0, -1, float("nan"), "0.25", True):
        with pytest.raises(ProgramError, match=r"program\.tolerance_steps"):
            scheme_tolerance({"program": {"tolerance_steps": bad}}, art.plan)

    model = iris_artifact(tmp_path, metadata=trained)
    argv = ["program", "--port", URL, str(model), "--json", "--passes", "1", "--max-pulses", "20"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tolerance_S"] == pytest.approx(0.25 * step)
    assert out["tolerance_source"] == "0.25 weight steps, as trained (verify:0.25)"
    assert main([*argv, "--fresh", "--tolerance", str(0.4 * step)]) == 0
    assert json.loads(capsys.readouterr().out)["tolerance_S"] == pytest.approx(0.4 * step)
