"""One interface: --model on every command that takes a model (the positional form kept),
--json on every command that prints results, tables within 100 columns, progress as one
line per step in a log, and `devices show` naming the device behind a preset."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from xbar.emulator.runtime import InProcessBoard
from xbar.host.cli.main import build_parser, main

from benchmarks.models import iris_artifact

XBAR = str(Path(sys.executable).parent / "xbar")
RESULTS = [
    ("devices", "list"),
    ("devices", "show"),
    ("devices", "fit"),
    ("ports",),
    ("program",),
    ("infer",),
    ("characterize",),
    ("bench", "energy"),
    ("fab", "status"),
    ("fab", "suggest"),
    ("fab", "ingest"),
    ("model", "show"),
    ("train",),
]


def _parser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    p = build_parser()
    for word in path:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[word]
    return p


@pytest.mark.parametrize("path", RESULTS, ids=[" ".join(p) for p in RESULTS])
def test_commands_that_print_results_have_json(path: tuple[str, ...]) -> None:
    options = {o for a in _parser(path)._actions for o in a.option_strings}
    assert "--json" in options


@pytest.mark.parametrize("path", [("program",), ("infer",), ("bench", "energy")])
def test_model_is_an_option(path: tuple[str, ...]) -> None:
    options = {o for a in _parser(path)._actions for o in a.option_strings}
    assert "--model" in options


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_artifact(tmp_path_factory.mktemp("iris"))


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessBoard]:
    monkeypatch.setenv("XBAR_STATE_DIR", str(tmp_path / "state"))
    board = InProcessBoard("xbar-10x10", 0, count_bytecodes=False)
    with board:
        yield board


def _json(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue())


def test_program_infer_bench_print_json(iris: Path, served: InProcessBoard, tmp_path: Path) -> None:
    port = ["--port", served.port]
    done = _json(["program", *port, "--model", str(iris), "--json", "--passes", "1"])
    assert done["cells"] > 0 and done["status"]["ok"] > 0 and done["loaded"] is True
    got = _json(["infer", *port, "--model", str(iris), "--dataset", "iris", "--json"])
    assert got["inputs"] == len(got["predictions"]) > 0 and 0 <= got["accuracy"] <= 1
    png = tmp_path / "e.png"
    energy = _json(
        ["bench", "energy", *port, "--model", str(iris), "--n", "3", "--png", str(png), "--json"]
    )
    assert energy["n"] == 3 and energy["total_J"] > 0 and png.exists()


def test_the_positional_model_still_works_and_two_models_are_refused(
    iris: Path, served: InProcessBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    port = ["--port", served.port]
    assert main(["program", *port, str(iris), "--passes", "1", "--max-pulses", "5"]) == 0
    capsys.readouterr()
    assert main(["program", *port, str(iris), "--model", "other.xbar"]) == 2
    assert "two models" in capsys.readouterr().err
    assert main(["program", *port]) == 2
    assert "give --model" in capsys.readouterr().err


def test_devices_show_names_the_device_behind_a_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "show", "pvk-best"]) == 0
    out = capsys.readouterr().out
    assert "published as  pvk-30," in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert main(["devices", "list"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 100


def test_progress_in_a_log_is_one_line_per_step(tmp_path: Path) -> None:
    argv = ["--cells", "0:0:0,0:1:1", "--cycles", "1", "--steps", "3", "--out", str(tmp_path)]
    out = subprocess.run(
        [XBAR, "characterize", "--port", "emu://xbar-10x10?seed=0", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr
    steps = [line for line in out.stderr.splitlines() if line.startswith("characterize: ")]
    assert steps == ["characterize: 1/2 cell", "characterize: 2/2 cell"]


def test_devices_fit_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xbar.training.devices.ivdata import write_csv
    from xbar.training.devices.published import find_published

    iv = tmp_path / "mine.csv"
    write_csv(find_published("pvk-30").curves, iv)
    assert main(["devices", "fit", str(iv), "--json", "-o", str(tmp_path / "m.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["usability"] == pytest.approx(0.349, abs=5e-4)
    assert json.loads((tmp_path / "m.json").read_text()) == printed


def test_any_tqdm_bar_in_the_command_process_writes_lines_to_a_log() -> None:
    code = (
        "from xbar.host.console import logs_without_bars\n"
        "logs_without_bars()\n"
        "from tqdm import tqdm\n"
        "for _ in tqdm(range(20), desc='steps', unit='step'):\n"
        "    pass\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "\r" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == "steps: 2/20 step" and lines[-1] == "steps: 20/20 step" and len(lines) == 10


def test_fab_suggest_and_ingest_print_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from xbar.training.fab.perovskite import SPEC_PATH, write_past_sheet
    from xbar.training.fab.spec import load_spec

    monkeypatch.chdir(tmp_path)
    store = str(tmp_path / "c.sqlite")
    assert main(["fab", "init", "perovskite", "--store", store]) == 0
    past = write_past_sheet(tmp_path / "past.csv", load_spec(SPEC_PATH), slice(0, 5))
    capsys.readouterr()
    assert main(["fab", "ingest", str(past), "--store", store, "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["rows"] == 5 and len(report["experiments"]) == 5
    assert main(["fab", "suggest", "--store", store, "--batch", "2", "--json"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert batch["batch"] == 1 and len(batch["experiments"]) == 2
    assert all(Path(p).is_file() for p in batch["sheets"])
