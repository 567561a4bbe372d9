"""The small model the reliability benchmarks and their CI-sized tests program.

An iris 4-5-3 MLP (scikit-learn, seconds to train) planned on one 10×10 array for the
pvk-best device: 70 cells, so a board can be programmed many times in one run.
"""

from __future__ import annotations

import warnings
from pathlib import Path


def iris_artifact(folder: Path) -> Path:
    """Train the iris MLP and export it as `folder/iris.xbar`; returns the path."""
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
        metadata={"task": "iris", "seed": 0},
    )
    return path
