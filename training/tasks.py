"""Learning tasks that need no download: scikit-learn's bundled digits and iris.

Each task is a fixed, stratified train / validation / test split (validation drives the
search, test is only for reporting) with inputs scaled to [0, 1], the range the board's
DACs take, and the default network and board profile it is meant for:

- ``digits``: 8×8 handwritten digits, 64 inputs, 10 classes, for the MLP and the CNN; the
  default 64-512-10 MLP is the widest the firmware runs (512-wide layers at most).
- ``iris``: 4 inputs, 3 classes; a 4-5-3 MLP needs 4 + 5 = 9 rows and at most 5
  differential pairs (10 columns), so the whole network lives on one 10×10 array.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from xbar.training.errors import XbarError

TASKS = ("digits", "iris")


class TaskError(XbarError, ValueError):
    """An unknown task or an unusable split."""


@dataclass(frozen=True)
class Task:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    default_hidden: tuple[int, ...]  # the network the task is meant for
    default_epochs: int  # enough passes over its training set
    widths: tuple[int, ...]  # hidden widths BayesMulti may choose from
    array_side: int  # the square arrays of the board that holds the network
    image_side: int | None  # side of square images (CNN), None: not images

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def _split(
    x: np.ndarray, y: np.ndarray, seed: int, fractions: tuple[float, float] = (0.2, 0.2)
) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    val, test = fractions
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test, random_state=seed, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val / (1 - test), random_state=seed + 1, stratify=y_rest
    )
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_val": x_val,
        "y_val": y_val,
        "x_test": x_test,
        "y_test": y_test,
    }


def load_task(name: str, seed: int = 0) -> Task:
    """The task ``name`` (one of :data:`TASKS`), split with ``seed``: 60/20/20 %."""
    from sklearn.datasets import load_digits, load_iris

    if name == "digits":
        data = load_digits()
        x = data.data / 16.0
        parts = _split(x.astype(np.float32), data.target.astype(np.int64), seed)
        return Task(
            "digits",
            **parts,
            n_classes=10,
            default_hidden=(512,),
            default_epochs=60,
            widths=(512, 1024, 2048, 4096),
            array_side=64,
            image_side=8,
        )
    if name == "iris":
        data = load_iris()
        x = data.data
        lo, hi = x.min(axis=0), x.max(axis=0)
        parts = _split(
            ((x - lo) / (hi - lo)).astype(np.float32), data.target.astype(np.int64), seed
        )
        return Task(
            "iris",
            **parts,
            n_classes=3,
            default_hidden=(5,),
            default_epochs=1000,
            widths=(3, 4, 5),
            array_side=10,
            image_side=None,
        )
    raise TaskError(f"unknown dataset {name!r}; choose from {', '.join(TASKS)}")


def board_profile(sizes: list[int], side: int) -> str:
    """The board profile whose side × side arrays hold an MLP of these layer sizes.

    Weights sit on differential pairs (two columns each); a layer is tiled over whole
    arrays, except that a network whose layers fit one array stacked by rows (each layer
    read with only its own rows driven) uses that one array: ``xbar-10x10`` for iris.
    """
    pairs = side // 2
    rows_needed = sum(sizes[:-1])
    if rows_needed <= side and max(sizes[1:]) <= pairs:
        return f"xbar-{side}x{side}" if side == 10 else f"xbar-1x{side}x{side}"
    arrays = sum(-(-a // side) * -(-b // pairs) for a, b in itertools.pairwise(sizes))
    return f"xbar-{arrays}x{side}x{side}"


def firmware_problem(sizes: list[int], side: int) -> str | None:
    """Why the firmware would refuse an MLP of these layer sizes planned on its board
    (:func:`board_profile`): ``CrossbarModel.firmware_problem()`` of that plan's shape, or
    None when ``xbar program`` can load it. Only the shape matters, so no weights needed."""
    import numpy as np
    from xbar.firmware.profiles import Geometry
    from xbar.training.plan import CrossbarModel, PlanError, TileLayer, plan_tiles

    board = Geometry(board_profile(sizes, side))
    shapes = [(b, a) for a, b in itertools.pairwise(sizes)]
    try:
        tiles = plan_tiles(shapes, board.arrays, board.rows, board.cols)
    except PlanError as exc:
        return str(exc)
    layers = []
    for (n_out, n_in), t in zip(shapes, tiles, strict=True):
        weights, bias = np.zeros((n_out, n_in), np.int64), np.zeros(n_out, np.int64)
        layers.append(TileLayer(weights, bias, 1, 0, True, 0, 255, g_unit=1.0, k=1, tiles=t))
    return CrossbarModel(layers, g_min=1e-6).firmware_problem(conversion=False)
