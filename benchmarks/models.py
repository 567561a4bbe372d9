"""The small model the reliability benchmarks and their CI-sized tests program.

An iris 4-5-3 MLP (scikit-learn, seconds to train) planned on one 10×10 array for the
pvk-best device: 70 cells, so a board can be programmed many times in one run.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def iris_artifact(folder: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Train the iris MLP and export it as `folder/iris.xbar` (with `metadata` added to its
    own); returns the path."""
    from sklearn.neural_network import MLPClassifier
    from xbar.training.artifact import export_artifact
    from xbar.training.devices.device_model import DeviceModel
    from xbar.training.tasks import load_task

    t = load_task("iris", 0)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=800, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(t.x_train, t.y_train)
    path = Path(folder) / "iris.xbar"
    export_artifact(
        path,
        list(zip(clf.coefs_, clf.intercepts_, strict=True)),
        t.x_train,
        input_scale=1 / 255,
        device=DeviceModel.preset("pvk-best"),
        profile="xbar-10x10",
        metadata={"task": "iris", "seed": 0, **(metadata or {})},
    )
    return path


def place_directly(board: Any, layers: list[Any], v_read: float = 0.2) -> tuple[Any, Any]:
    """Map `layers` on an emulated board's geometry (INFO) and set its cells' conductances
    directly, without write-verify: (the crossbar plan, the emulated board). For
    benchmarks of inference that must not pay for programming."""
    from xbar.host.board import CrossbarModel

    info = board.info()
    emu = board.link.port.board
    bm = emu.model
    cm = CrossbarModel.from_layers(
        layers,
        arrays=info.arrays,
        rows=info.rows,
        cols=info.cols,
        g_min=bm.device.g_min,
        g_max=bm.device.g_max,
        v_read=v_read,
    )
    bm.place(cm.targets())
    return cm, emu
