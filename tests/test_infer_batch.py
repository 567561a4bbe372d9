"""The emulator's batch path for the firmware's inference (`emulator/infer_batch.py`)
against the board itself: same seed, same state, the same outputs bit for bit.

The in-process runtime runs the real firmware frame by frame; `predict` computes the same
stream from a snapshot of the board model taken just before it. The end-to-end test
(`test_host_e2e.py`) makes the same comparison on the MicroPython runtime.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.infer_batch import predict
from xbar.emulator.runtime import InProcessBoard
from xbar.host.board import Board
from xbar.training.artifact import export_artifact, load_artifact
from xbar.training.devices.device_model import DeviceModel
from xbar.training.tasks import load_task


def _iris_plan(tmp_path, profile: str, hidden: int):  # type: ignore[no-untyped-def]
    from sklearn.neural_network import MLPClassifier

    t = load_task("iris", 0)
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=800, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(t.x_train, t.y_train)
    path = tmp_path / "iris.xbar"
    export_artifact(
        path,
        list(zip(clf.coefs_, clf.intercepts_, strict=True)),
        t.x_train,
        input_scale=1 / 255,
        device=DeviceModel.preset("pvk-best"),
        profile=profile,
        metadata={"task": "iris"},
    )
    art = load_artifact(path)
    x = np.clip(np.round(t.x_test * 255), 0, 255).astype(np.uint8)
    return art, x


@pytest.mark.parametrize(
    ("profile", "noise", "hidden"),
    [
        ("xbar-10x10", NoiseConfig(drift_nu=0.0), 5),  # passive, every noise source but drift
        ("xbar-4x10x10", NoiseConfig(drift_nu=0.0), 8),  # 1T1R, tiles on several arrays
        ("xbar-10x10", NoiseConfig.off(), 5),
    ],
)
def test_batch_prediction_equals_the_firmware_on_the_board(
    tmp_path, profile: str, noise: NoiseConfig, hidden: int
) -> None:
    art, x = _iris_plan(tmp_path, profile, hidden)
    model = BoardModel(profile, seed=3, device=DeviceModel.preset("pvk-best"), noise=noise)
    model.place(art.plan.targets())
    emulated = InProcessBoard(profile, 3, model=model, count_bytecodes=False)
    with emulated, Board(emulated.port, timeout=20) as board:
        board.load(art.plan, program=False)
        emulated.settle()
        with emulated.hw.lock:
            snapshot = copy.deepcopy(model)
        before = model.adc_samples.copy()
        streamed = board.stream(x, per_frame=7).outputs
        emulated.settle()
        used = model.adc_samples - before
    predicted = predict(snapshot, art.plan.to_blob(), x)
    assert predicted.outputs.shape == streamed.shape
    np.testing.assert_array_equal(predicted.outputs, streamed)
    np.testing.assert_array_equal(predicted.samples, used)  # the same ADC frames
    assert used.sum() >= 2 * len(x)  # conversions for both layers of every input happened


def test_bad_inputs_are_refused(tmp_path) -> None:
    art, x = _iris_plan(tmp_path, "xbar-10x10", 5)
    model = BoardModel("xbar-10x10", seed=0)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        predict(model, art.plan.to_blob(), x[:, :3])
    with pytest.raises(ValueError, match=r"0\.\.255"):
        predict(model, art.plan.to_blob(), x.astype(np.int64) + 255)
