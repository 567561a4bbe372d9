"""`xbar train`: a small end-to-end run, its artifact, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from xbar.host.cli.main import main
from xbar.training.artifact import ArtifactError, load_artifact
from xbar.training.bayesmulti import DEFAULT_STRATEGY
from xbar.training.tasks import board_profile, firmware_problem, load_task

torch.set_num_threads(1)


def test_train_writes_a_valid_artifact_plot_and_summary_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        "iris",
        "--device",
        "pvk-median",
        "--method",
        "bayesmulti",
        "--budget",
        "2",
        "--workers",
        "1",
        "--epochs",
        "60",
        "--strategy",
        "de",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "bayesmulti: clean test accuracy" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["search"]["trials"] == 2 and summary["width"] in (3, 4, 5)
    assert set(summary["accuracy_vs_sigma"]) == {"bayesmulti", "erm", "gaussian", "multinomial"}
    assert (out / "accuracy_vs_sigma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifact = load_artifact(out / "model.xbar")
    assert artifact.geometry["profile"] == "xbar-10x10"  # the whole network on one array
    assert artifact.metadata["method"] == "bayesmulti"
    assert artifact.metadata["alpha"] == summary["alpha"]
    # The scheme trained for, the accuracy with its interval, and the certificate.
    assert artifact.metadata["program"]["scheme"] == "verify:0.5"
    board = artifact.metadata["accuracy_on_board"]["bayesmulti"]
    assert board["low"] <= board["mean"] <= board["high"] and board["n"] == 30
    cert = artifact.metadata["accuracy_certificate"]
    assert 0 <= cert["lower_bound"] <= cert["mean"] and "bootstrap" in cert["method"]
    capsys.readouterr()
    assert main(["model", "show", str(out / "model.xbar")]) == 0
    shown = capsys.readouterr().out
    assert "certified accuracy >=" in shown and "program   verify:0.5" in shown
    # The LiteRT interpreter runs it and agrees with the integer model on the test set.
    task = load_task("iris")
    tfl = artifact.run_tflite(task.x_test).argmax(1)
    ref = artifact.quantized.predict(task.x_test)
    assert np.mean(tfl == ref) >= 0.99
    # Same command again: the search resumes from its log and runs no new trial.
    log = (out / "search.jsonl").read_text()
    assert main([*argv, "--no-baselines"]) == 0
    assert (out / "search.jsonl").read_text() == log


def test_a_baseline_without_search(tmp_path: Path) -> None:
    out = tmp_path / "erm"
    argv = [
        "train",
        "--dataset",
        "iris",
        "--method",
        "erm",
        "--width",
        "4",
        "--epochs",
        "100",
        "--no-baselines",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "erm" and summary["width"] == 4 and "search" not in summary
    assert load_artifact(out / "model.xbar").metadata["method"] == "erm"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "0"], "--budget 0: must be at least 1"),
        (["--draws", "5"], "--draws 5: must be at least 20"),
        (["--dataset", "iris", "--arch", "cnn"], "has no images"),
        (["--program", "closed"], "program scheme 'closed'"),
        (["--seeds", "0"], "--seeds 0: must be at least 1"),
        (["--width", "1024"], "the firmware takes at most 512; add --max-width 1024"),
        (["--max-width", "256"], "none of digits's widths 512, 1024, 2048, 4096 fits"),
        (["--max-width", "0"], "--max-width 0: must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "never"
    assert main(["train", *extra, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xbar: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["--dataset", "digts"], "did you mean 'digits'?"),
        (["--device", "pvk-99"], "no device 'pvk-99'"),
        (["--device", "pvk-bst"], "did you mean 'pvk-best'?"),
    ],
)
def test_unknown_names_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exit_:
        main(["train", *extra, "--out", str(out)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_alpha_file_with_p1_plus_p2_over_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alpha = tmp_path / "alpha.json"
    alpha.write_text(
        json.dumps(
            {"multinomial": [{"p1": 0.7, "p2": 0.6}], "noise_scale": 1.0, "clip": 1.0, "width": 5}
        )
    )
    assert (
        main(["train", "--dataset", "iris", "--alpha", str(alpha), "--out", str(tmp_path / "o")])
        == 1
    )
    err = capsys.readouterr().err
    assert f"--alpha {alpha}" in err and "p1 + p2 = 1.3 must be <= 1" in err
    assert not (tmp_path / "o").exists()


def test_a_corrupt_or_foreign_artifact_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.xbar"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ArtifactError, match=r"model\.xbar"):
        load_artifact(bad)


def test_board_profiles() -> None:
    assert board_profile([4, 5, 3], 10) == "xbar-10x10"
    # 64-1024-10 on 64×64 arrays with differential pairs: 1×32 + 16×1 arrays.
    assert board_profile([64, 1024, 10], 64) == "xbar-48x64x64"


def test_which_networks_the_firmware_runs() -> None:
    assert firmware_problem([4, 5, 3], 10) is None
    assert firmware_problem([64, 512, 10], 64) is None
    assert "at most 512" in str(firmware_problem([64, 1024, 10], 64))
    assert "at most 8" in str(firmware_problem([64, *[256] * 8, 10], 64))


def _erm_digits(out: Path, *extra: str) -> dict:
    argv = [
        "train",
        "--method",
        "erm",
        "--epochs",
        "1",
        "--draws",
        "20",
        "--no-baselines",
        "--out",
        str(out),
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "summary.json").read_text())


def test_digits_by_default_is_a_network_the_firmware_can_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = _erm_digits(tmp_path / "run")
    assert summary["width"] == 512 and summary["firmware_problem"] is None
    assert "note:" not in capsys.readouterr().out
    artifact = load_artifact(tmp_path / "run" / "model.xbar")
    assert artifact.plan is not None and artifact.plan.firmware_problem() is None
    calibration = artifact.metadata["noise_calibration"]
    assert not calibration["used_in_accuracies"] and not calibration["in_plan"]
    assert len(calibration["bias_factors_at_device"]) == 2


def test_a_wider_network_is_for_simulation_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = _erm_digits(tmp_path / "wide", "--width", "1024", "--max-width", "1024")
    assert summary["width"] == 1024 and "at most 512" in summary["firmware_problem"]
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "`xbar program` refuses it" in notes[0]
    artifact = load_artifact(tmp_path / "wide" / "model.xbar")
    with pytest.raises(ArtifactError, match="the firmware cannot load this network"):
        g = artifact.geometry
        artifact.check_geometry(g["arrays"], g["rows"], g["cols"])


def test_the_strategy_help_names_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default {DEFAULT_STRATEGY})" in help_text


def test_the_cnn_trains_and_evaluates_without_an_artifact(tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--arch",
        "cnn",
        "--method",
        "erm",
        "--width",
        "16",
        "--epochs",
        "1",
        "--draws",
        "20",
        "--no-baselines",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arch"] == "cnn" and "artifact" not in summary
    assert 0.0 <= summary["accuracy_vs_sigma"]["erm"]["1.3"] <= 1.0
    assert (out / "accuracy_vs_sigma.png").exists() and not (out / "model.xbar").exists()
