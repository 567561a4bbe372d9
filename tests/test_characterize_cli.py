"""`xbar characterize` takes its sweep from the board's device model, says when a sweep
never reached switching, and leaves a programmed model's cells alone unless --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from xbar.emulator.runtime import InProcessBoard
from xbar.host.board import Board
from xbar.host.cli.main import build_parser, main
from xbar.host.program import note_programmed, programmed_model

BEST = "emu://xbar-10x10?seed=0&device=pvk-best"


def test_help_shows_every_default() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    sub = commands.choices["characterize"]  # type: ignore[index]
    helps = {a.dest: a.help or "" for a in sub._actions}
    for dest in ("v_max", "steps", "width_us", "cycles", "cells", "device", "timeout"):
        assert "default" in helps[dest], dest
    assert "pvk-best" in helps["v_max"]


def test_sweep_defaults_come_from_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["characterize", "--port", BEST, "--cells", "0:0:0", "--cycles", "1", "--json"]
    assert main([*args, "--out", str(tmp_path / "c")]) == 0
    out = json.loads(capsys.readouterr().out)
    sweep = out["sweep"]
    assert sweep["device"] == "pvk-best" and sweep["v_max"] == pytest.approx(5.4)
    assert sweep["steps"] == 20 and sweep["v_reset"] == pytest.approx(6.0)
    assert out["warnings"] == []
    window = out["device_model"]["g_max"] / out["device_model"]["g_min"]
    assert window > 10  # the default sweep reaches the device's switching range


def test_a_sweep_below_switching_is_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["characterize", "--port", BEST, "--cells", "0:0:0", "--cycles", "1"]
    assert main([*args, "--v-max", "2.5", "--steps", "10", "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "below the SET voltage 5.4 V of pvk-best" in err
    assert "never reached the switching region" in err


def test_programmed_cells_are_refused_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XBAR_STATE_DIR", str(tmp_path / "state"))
    with InProcessBoard("xbar-10x10", 0, count_bytecodes=False) as served:
        with Board(served.port, timeout=5) as board:
            note_programmed(board, "digits.xbar", [(0, 0, 0), (0, 0, 1), (0, 5, 5)])
        out = tmp_path / "c"
        base = ["characterize", "--port", served.port, "--cycles", "1", "--steps", "3"]
        assert main([*base, "--cells", "0:0:1,0:9:9", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "cells 0:0:1 hold the model" in err and "digits.xbar" in err and "--force" in err
        assert "\n" not in err and not out.exists()
        assert main([*base, "--cells", "0:9:9", "--v-max", "3", "--out", str(out)]) == 0
        capsys.readouterr()
        assert main([*base, "--cells", "0:0:1", "--v-max", "3", "--force", "--out", str(out)]) == 0
        assert "program it again" in capsys.readouterr().err
        with Board(served.port, timeout=5) as board:
            assert programmed_model(board) is None


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--cells", "a:b"], "--cells 'a:b'"),
        (["--cells", "0:99:0"], "outside the board"),
        (["--v-max", "12"], "--v-max 12 V: above the board's pulse limit 8 V"),
        (["--v-max", "-1"], "--v-max -1"),
        (["--steps", "1"], "--steps 1"),
        (["--cycles", "0"], "argument --cycles: 0 must be at least 1"),
    ],
)
def test_bad_sweep_settings_are_usage_errors(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c"
    try:
        code = main(["characterize", "--port", BEST, *extra, "--out", str(out)])
    except SystemExit as exc:  # caught by argparse (its usage line comes first)
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and needle in err, err
    assert not out.exists()
