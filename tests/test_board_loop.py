"""Board in the loop, CI-sized: an iris network trained for write-verify is programmed onto
one emulated board and run there, and its accuracy is set beside the noise model's
prediction (``benchmarks/bench_board_loop.py``; the full run uses 8 boards)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.bench_board_loop import main

torch.set_num_threads(1)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # one board: write-verify of 56 cells through the firmware
def test_board_in_the_loop_runs_ci_sized(tmp_path: Path) -> None:
    main(["--boards", "1", "--method", "erm", "--draws", "40", "--out", str(tmp_path)])
    (res,) = json.loads((tmp_path / "bench_board_loop.json").read_text())["results"]
    (board,) = res["boards"]
    assert 0 <= board["accuracy"] <= 1 and board["cells"] == 2 * (4 * 4 + 4 * 3)
    assert board["mean_pulses_per_cell"] >= 1
    p = res["predicted"]
    assert p["interval"][0] <= p["mean"] <= p["interval"][1]
    assert p["one_board_range"][0] <= p["one_board_range"][1]
    assert res["metadata"]["program"]["scheme"] == "verify:0.5"
    assert "one board" in (tmp_path / "bench_board_loop.md").read_text()
