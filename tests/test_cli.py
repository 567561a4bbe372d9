"""The `xbar` command line: devices subcommands, demo, exit codes, nothing written on error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from xbar.host.cli.main import main
from xbar.training.devices.ivdata import write_csv
from xbar.training.devices.published import find_published


def test_devices_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "list", "--json", "--sort", "usability"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 43
    assert rows[0]["usability"] == pytest.approx(0.349, abs=5e-4)
    assert rows[0]["material"] == "MAPbI3"


def test_devices_show_and_unknown_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "show", "pvk-best", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "pvk-best"
    with pytest.raises(SystemExit) as exit_:  # a usage error: argparse's exit 2
        main(["devices", "show", "pvk-nope"])
    assert exit_.value.code == 2
    assert "no device 'pvk-nope'; did you mean 'pvk-best'?" in capsys.readouterr().err


def test_fit_writes_model_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    iv = tmp_path / "mine.csv"
    write_csv(find_published("pvk-30").curves, iv)
    out, png = tmp_path / "mine.json", tmp_path / "mine.png"
    assert main(["devices", "fit", str(iv), "-o", str(out), "--plot", str(png)]) == 0
    assert json.loads(out.read_text())["usability"] == pytest.approx(0.349, abs=5e-4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_bad_file_fails_and_writes_nothing(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("volts,i1,i2\n0.1,1,2\n")
    out = tmp_path / "model.json"
    assert main(["devices", "fit", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "no 'voltage' column" in err
    assert not out.exists()


def test_plot_preset(tmp_path: Path) -> None:
    png = tmp_path / "best.png"
    assert main(["devices", "plot", "pvk-best", "-o", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_usage_errors_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xbar.host.cli.main", "devices", "frobnicate"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_demo_devices_prints_table_and_writes_plots(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--devices-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "43 published perovskite memristors" in out
    assert "usability" in out and "MAPbI3" in out
    for name in ("usability_vs_sigma.png", "pvk-best.png", "pvk-median.png", "pvk-best.json"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(600)  # the whole loop, MicroPython included: 3-5 min on two loaded cores
def test_demo_end_to_end_programs_and_infers_on_the_emulator(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--digits", "4"]) == 0
    out = capsys.readouterr().out
    assert "write-verify: the firmware programs 100 cells" in out
    assert "4 digits: accuracy" in out and "mJ/inference" in out
    assert (tmp_path / "write_verify.png").stat().st_size > 10_000
    # The campaign holds the 43 published devices and a suggested batch for the lab.
    assert "measured   43 of 47 experiments (43 external)" in out
    assert (tmp_path / "campaign" / "perovskite-batch001.csv").read_text().count("E00") == 4
    # The iris network went through train → program → infer on the pty-served board.
    assert (tmp_path / "iris" / "model.xbar").stat().st_size > 0
    assert "model loaded: 2 layers" in out and "on 30 inputs; digital int8 reference" in out
    # The report: every section, the firmware flashed by `xbar flash`, every linked figure.
    report = (tmp_path / "report.md").read_text()
    for heading in (
        "1. Devices",
        "2. Fabrication",
        "3. The loop",
        "4. Write-verify",
        "5. A larger",
    ):
        assert f"## {heading}" in report
    assert "$ xbar flash --port" in report and "firmware 0.1.0 running" in report
    assert "accuracy on the board" in report and "energy per inference" in report
    figures = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert len(figures) >= 6 and all((tmp_path / f).stat().st_size > 10_000 for f in figures)
