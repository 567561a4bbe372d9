"""Fault-aware placement (`host/remap.py`): permuting hidden units keeps the network's
function, the chosen placement puts failed cells where they spoil the least weight, and
`xbar program` → `xbar infer` on a board with stuck cells uses it end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_host_commands import _mlp
from xbar.emulator.board_model import BoardModel
from xbar.emulator.board_profile import NoiseConfig
from xbar.emulator.cells import STUCK_HIGH, STUCK_LOW
from xbar.emulator.runtime import InProcessBoard
from xbar.firmware import quant
from xbar.host.cli.main import main
from xbar.host.program import Pairs, plan_cells
from xbar.host.remap import best_permutations, permute
from xbar.training.artifact import export_artifact, load_artifact
from xbar.training.devices.device_model import DeviceModel
from xbar.training.plan import CrossbarModel

PROFILE = "xbar-10x10"
DEVICE = DeviceModel.preset("pvk-best")


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    t, layers = _mlp("iris", 5)
    path = tmp_path_factory.mktemp("remap") / "iris.xbar"
    export_artifact(
        path,
        layers,
        t.x_train,
        input_scale=1 / 255,
        device=DEVICE,
        profile=PROFILE,
        metadata={"task": "iris", "seed": 0},
    )
    return path


def _forward(plan: CrossbarModel, x: np.ndarray) -> np.ndarray:
    """The firmware's integer arithmetic over a plan's layers (quant.reference_layer)."""
    out = []
    for row in x:
        h = [int(v) for v in row]
        for lay in plan.layers:
            h, _ = quant.reference_layer(
                lay.weights.tolist(),
                lay.bias.tolist(),
                h,
                lay.multiplier,
                lay.shift,
                lay.out_min,
                lay.out_max,
                lay.relu,
            )
        out.append(h)
    return np.array(out)


def test_permuting_hidden_units_keeps_the_function(iris: Path) -> None:
    art = load_artifact(iris)
    plan = art.plan
    assert plan is not None
    x = np.random.default_rng(0).integers(0, 256, size=(40, 4))
    perm = np.array([3, 0, 4, 1, 2])
    moved = permute(plan, [perm])
    np.testing.assert_array_equal(_forward(moved, x), _forward(plan, x))
    assert not np.array_equal(moved.layers[0].weights, plan.layers[0].weights)
    # Slot s of layer 0 now holds unit perm[s]: its weights and bias, and its input row.
    np.testing.assert_array_equal(moved.layers[0].weights[1], plan.layers[0].weights[0])
    np.testing.assert_array_equal(moved.layers[1].weights[:, 1], plan.layers[1].weights[:, 0])


def test_a_stuck_low_cell_goes_under_a_weight_it_can_hold(iris: Path) -> None:
    """G+ stuck at g_min under a large positive weight cannot be made up for (the G−
    partner is at g_min already); the placement moves a unit there whose weight on that
    input is ≤ 0, so the stuck cell costs nothing."""
    art = load_artifact(iris)
    plan = art.plan
    assert plan is not None
    lay = plan.layers[0]
    t = lay.tiles[0]
    i, j = np.unravel_index(np.argmax(lay.weights), lay.weights.shape)  # largest w > 0
    assert lay.weights[i, j] > 20 and (lay.weights[:, j] <= 0).any()
    cell = (t.array, t.row0 + int(j) - t.in_start, t.col0 + 2 * (int(i) - t.out_start))
    perms, before, after = best_permutations(plan, {cell: plan.g_min}, DEVICE.g_max)
    assert before == pytest.approx(float(lay.weights[i, j]))
    assert after == 0.0
    slot = (cell[2] - t.col0) // 2 + t.out_start
    assert lay.weights[perms[0][slot], j] <= 0  # the unit now there wants 0 or less


def test_program_places_units_around_stuck_cells_and_infer_follows(
    iris: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ideal board but for two stuck cells under large weights: `xbar program` places
    the hidden units again, records it, and `xbar infer` (reading the progress file)
    matches the int8 reference; `--no-remap` leaves the weights spoiled."""
    art = load_artifact(iris)
    plan = art.plan
    assert plan is not None
    cells = plan_cells(plan)
    pairs = Pairs(plan, cells)
    lay = plan.layers[0]
    big = sorted((c for c in cells if c.layer == 0 and pairs.sign[c] == 1), key=lambda c: -c.target)
    faulty = [big[0], next(c for c in big[1:] if c.col != big[0].col)]
    assert all(c.target > plan.g_min + 20 * lay.g_unit for c in faulty)

    def board() -> InProcessBoard:
        model = BoardModel(PROFILE, seed=0, device=DEVICE, noise=NoiseConfig.off())
        for c, kind in zip(faulty, (STUCK_LOW, STUCK_HIGH), strict=True):
            model.cells.stuck[c.array][c.row, c.col] = kind
        model.cells._apply_stuck()
        return InProcessBoard(PROFILE, 0, model=model, count_bytecodes=False)

    results = {}
    for flag in ([], ["--no-remap"]):
        model = tmp_path / f"m{len(flag)}.xbar"
        model.write_bytes(iris.read_bytes())
        with board() as emulated:
            capsys.readouterr()
            assert (
                main(["program", "--port", emulated.port, str(model), "--max-pulses", "60", *flag])
                == 0
            )
            assert (
                main(["infer", "--port", emulated.port, "--model", str(model), "--dataset", "iris"])
                == 0
            )
        text = capsys.readouterr().out
        agree = float(text.split("predictions equal to the int8 reference: ")[1].split()[0])
        placement = json.loads(Path(f"{model}.progress.json").read_text())["placement"]
        results[bool(flag)] = (text, agree, placement)
    text, agree, placement = results[False]
    assert "hidden units placed again" in text, text
    assert sorted(placement[0]) == list(range(lay.n_out)) and results[True][2] is None
    assert agree >= 0.95, text
    assert results[True][1] < agree  # without it, the stuck cells' weights stay spoiled
    assert "hidden units placed again" not in results[True][0]
