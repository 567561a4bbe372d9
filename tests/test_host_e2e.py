"""End to end, as a user types it: an emulated board running the real MicroPython
interpreter behind a pty, without firmware → `xbar flash` → `xbar program` → `xbar infer`
on digits.

The model is written cell by cell with write-verify through the interpreter, so for CI
time it is small (`benchmarks.bench_e2e.pooled_digits_model`): the digits test split
pooled 2×2 to 16 inputs, MLP 16-5-10, exported for the pvk-best device on `xbar-4x10x10`
(260 cells). `xbar infer --input` streams all 360 held-out inputs.

Board: device pvk-best, seed 0, the default noise except drift (`NoiseConfig(drift_nu=0)`:
read noise, cycle-to-cycle and device-to-device spread, 1 % stuck cells, wear, half-select
disturb and IR drop all on). Compared:

* the outputs `xbar infer` saved against the emulator's batch path for the firmware's
  inference (`emulator/infer_batch.py`) on a snapshot of the board taken between
  `program` and `infer`: equal, element for element (same seed, same read-noise counters);
* the board's accuracy against the digital int8 reference (`QuantizedModel.forward`, the
  integer arithmetic the firmware runs) on the same 360 uint8 inputs: within 2 points;
* what `xbar infer` prints (both accuracies, their agreement) against the outputs saved;
  the per-cell report's size and convergence (≥ 90 %).

With drift on, the programmed states relax with board time, and board time depends on
how many HELLO frames the host sent while the board booted (wall-clock), so runs differ;
`python -m benchmarks.bench_e2e` measures that setting too (BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.infer_batch import predict
from xbar.emulator.runtime_mpy import MicroPythonBoard
from xbar.host.cli.main import main
from xbar.host.remap import permute
from xbar.training.devices.device_model import DeviceModel

from benchmarks.bench_e2e import DEVICE, PROFILE, pooled_digits_model


@pytest.mark.slow
def test_flash_program_infer_digits_on_the_micropython_board(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "digits16.xbar"
    art, x, y = pooled_digits_model(model)
    np.save(tmp_path / "x.npy", x.astype(np.uint8))
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "outputs.npy"
    board_model = BoardModel(
        PROFILE, seed=0, device=DeviceModel.preset(DEVICE), noise=NoiseConfig(drift_nu=0.0)
    )
    with MicroPythonBoard(PROFILE, 0, board_model, firmware=False) as board:
        assert main(["flash", "--port", board.port, "--profile", PROFILE]) == 0
        assert main(["program", "--port", board.port, str(model)]) == 0
        with board.hw.lock:  # the firmware idles between commands; the bridge waits
            snapshot = copy.deepcopy(board_model)
        assert (
            main(
                [
                    "infer",
                    "--port",
                    board.port,
                    "--model",
                    str(model),
                    "--input",
                    str(tmp_path / "x.npy"),
                    "--labels",
                    str(tmp_path / "y.npy"),
                    "--save",
                    str(out),
                ]
            )
            == 0
        )
    text = capsys.readouterr().out
    outputs = np.load(out)
    cells = np.genfromtxt(
        f"{model}.cells.csv", delimiter=",", names=True, dtype=None, encoding="utf-8"
    )
    assert len(cells) == 260 and "model loaded: 2 layers" in text
    assert np.mean(cells["status"] == "ok") >= 0.9
    progress = json.loads(Path(f"{model}.progress.json").read_text())
    placed = (
        art.plan
        if progress["placement"] is None
        else permute(art.plan, [np.array(p) for p in progress["placement"]])
    )  # where `xbar program` put the hidden units, as `xbar infer` LOADed them
    batch = predict(snapshot, placed.to_blob(), x.astype(np.uint8))
    np.testing.assert_array_equal(outputs, batch.outputs)
    reference = art.quantized.forward(x).argmax(1)
    board_acc = float(np.mean(outputs.argmax(1) == y))
    ref_acc = float(np.mean(reference == y))
    agree = float(np.mean(outputs.argmax(1) == reference))
    assert f"accuracy {board_acc:.4f} on 360 inputs" in text
    assert f"digital int8 reference {ref_acc:.4f} on the same inputs" in text
    assert f"predictions equal to the int8 reference: {agree:.4f}" in text
    assert abs(board_acc - ref_acc) <= 0.02, text
