"""BayesMulti: the search on a real Dask LocalCluster, its log, resume, and the baselines."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from xbar.training.bayesmulti import (
    DEFAULT_STRATEGY,
    SearchLog,
    SearchLogError,
    SearchSettings,
    alpha_from_value,
    baseline_points,
    evaluate_trial,
    open_client,
    run_search,
    search_space,
    target_noises,
)
from xbar.training.harness import FIXED_MULTINOMIAL, TrainConfig, method_spec
from xbar.training.noise import NoiseConfigError
from xbar.training.tasks import load_task

torch.set_num_threads(1)

# Iris, tiny networks, few epochs: a trial takes about a second. DE asks instantly; the
# resume test uses the default (GP) strategy, whose model is rebuilt from the log.
SETTINGS = SearchSettings(
    task="iris",
    sigmas=(0.6,),
    draws=20,
    widths=(4, 5),
    strategy="de",
    train=TrainConfig(epochs=60, batch=16),
    eta=1,  # every trial trains the full schedule (successive halving: its own test)
)
GP_SETTINGS = SearchSettings(**{**vars(SETTINGS), "strategy": DEFAULT_STRATEGY})


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with open_client(workers=2) as c:
        yield c


def test_search_space_and_alpha() -> None:
    space = search_space(SETTINGS)
    for _ in range(20):
        value = space.sample().value
        alpha = alpha_from_value(value)
        assert alpha.width in (4, 5) and len(alpha.multinomial) == 1
        assert all(m.p1 + m.p2 <= 1 for m in alpha.multinomial)


def test_trial_is_scored_under_the_device_noise() -> None:
    value = {"p1": [0.05], "p2": [0.05], "noise_scale": 0.3, "clip": 2.0, "width": 5}
    settings = SearchSettings(**{**vars(SETTINGS), "sigmas": (0.0, 1.5)})
    result = evaluate_trial(settings.to_dict(), value)
    clean, noisy = result["val_accuracy_per_sigma"]
    assert clean == pytest.approx(result["clean_val_accuracy"])  # σ = 0 is the clean network
    assert noisy < clean  # σ = 1.5 hurts: the objective sees the noise
    assert result["loss"] == pytest.approx(1 - (clean + noisy) / 2)
    assert evaluate_trial(settings.to_dict(), value)["loss"] == result["loss"]  # seeded


def test_search_logs_every_trial_and_resumes_without_rerunning(client: Any, tmp_path: Path) -> None:
    log = tmp_path / "search.jsonl"
    seen: list[int] = []
    first = run_search(GP_SETTINGS, 3, log, client, progress=lambda t: seen.append(t.id))
    assert len(first.trials) == 3 and sorted(seen) == [0, 1, 2]
    lines = log.read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "header" and len(lines) == 4
    # Resume to a larger budget: the three finished trials are replayed, two new ones run.
    seen.clear()
    second = run_search(GP_SETTINGS, 5, log, client, progress=lambda t: seen.append(t.id))
    assert len(second.trials) == 5 and sorted(seen) == [3, 4]
    assert [t.value for t in second.trials[:3]] == [t.value for t in first.trials]
    assert second.best.result["loss"] == min(t.result["loss"] for t in second.trials)
    # Budget already reached: nothing runs.
    seen.clear()
    assert (
        len(run_search(GP_SETTINGS, 5, log, client, progress=lambda t: seen.append(t.id)).trials)
        == 5
    )
    assert seen == []


def test_a_trial_cut_mid_write_is_dropped_and_run_again(client: Any, tmp_path: Path) -> None:
    log = tmp_path / "search.jsonl"
    run_search(SETTINGS, 2, log, client)
    text = log.read_text()
    log.write_text(text + text.splitlines()[-1][:25])  # Ctrl-C while writing a third
    assert len(SearchLog(log, SETTINGS).trials) == 2
    assert log.read_text() == text  # the partial line is gone
    assert len(run_search(SETTINGS, 3, log, client).trials) == 3


def test_a_dead_worker_loses_no_finished_trial(client: Any, tmp_path: Path) -> None:
    """Kill a worker process once the first trial has finished: the trial on it is run
    again elsewhere (the nanny restarts the worker) and the log holds every trial."""
    log = tmp_path / "search.jsonl"
    killed: list[int] = []

    def kill_one(trial: Any) -> None:
        if not killed:
            pids = client.run(os.getpid)  # worker address -> pid
            pid = next(iter(pids.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = run_search(SETTINGS, 4, log, client, progress=kill_one)
    assert killed and len(result.trials) == 4
    assert len(SearchLog(log, SETTINGS).trials) == 4
    client.wait_for_workers(2, timeout=60)


def test_bad_logs_and_budgets_are_refused(client: Any, tmp_path: Path) -> None:
    log = tmp_path / "search.jsonl"
    with pytest.raises(ValueError, match="budget"):
        run_search(SETTINGS, 0, log, client)
    run_search(SETTINGS, 1, log, client)
    other = SearchSettings(**{**vars(SETTINGS), "seed": 9})
    with pytest.raises(SearchLogError, match="other settings"):
        SearchLog(log, other)
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    with pytest.raises(SearchLogError, match=r"search.jsonl:2: not JSON"):
        SearchLog(log, SETTINGS)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": 1}\nno newline at the end')
    with pytest.raises(SearchLogError, match="not a BayesMulti search log"):
        SearchLog(foreign, SETTINGS)
    assert foreign.read_text() == '{"hello": 1}\nno newline at the end'  # refused, unchanged
    with pytest.raises(ValueError, match="draws"):
        SearchSettings(draws=5).validate()


def test_baselines_share_the_network_and_differ_only_in_noise() -> None:
    task = load_task("digits")
    specs = {
        m: method_spec(m, task, "mlp", (256,), 1.0) for m in ("erm", "gaussian", "multinomial")
    }
    assert {s.hidden for s in specs.values()} == {(256,)}
    assert specs["erm"].train_noise is None and not specs["erm"].multinomial
    assert specs["gaussian"].train_noise is not None
    assert specs["gaussian"].train_noise.kind == "gaussian-mult"
    assert specs["gaussian"].train_noise.sigma == 1.0
    assert specs["multinomial"].multinomial == (FIXED_MULTINOMIAL,)
    with pytest.raises(NoiseConfigError, match="alpha"):
        method_spec("bayesmulti", task, "mlp", (256,), 1.0)
    with pytest.raises(NoiseConfigError, match="unknown method"):
        method_spec("sgd", task, "mlp", (256,), 1.0)


def test_the_baselines_are_points_of_the_space_and_run_first(client: Any, tmp_path: Path) -> None:
    space = search_space(SETTINGS)
    points = baseline_points(SETTINGS)
    for value in points.values():
        space.spawn_child(new_value=value)  # fits the space (raises otherwise)
    task = load_task("iris")
    for name, value in points.items():
        alpha = alpha_from_value(value)
        got = method_spec("bayesmulti", task, "mlp", (4,), 0.6, alpha)
        want = method_spec(name, task, "mlp", (4,), 0.6)
        assert got == want, name
    result = run_search(SETTINGS, 4, tmp_path / "s.jsonl", client)
    first = sorted(result.trials, key=lambda t: t.id)[:3]  # eta = 1: one rung
    assert [t.value for t in first] == list(points.values())


def test_successive_halving_promotes_the_best_and_costs_less(client: Any, tmp_path: Path) -> None:
    halving = SearchSettings(**{**vars(SETTINGS), "eta": 2})
    assert halving.rungs(4) == [(4, 15), (2, 30), (1, 60)]
    assert SearchSettings(eta=4).rungs(32) == [(32, 3), (8, 15), (2, 60)]
    # 32 trials, the top rung one promoted trial and the three baselines: no more epochs
    # than 8 trials of the full schedule.
    assert 32 * 3 + 8 * 15 + (1 + 3) * 60 <= 8 * 60
    log = tmp_path / "h.jsonl"
    result = run_search(halving, 4, log, client)
    rungs = [[t for t in result.trials if t.rung == r] for r in range(3)]
    assert [len(r) for r in rungs] == [4, 2, 4]
    assert [t.result["epochs"] for t in (rungs[0][0], rungs[1][0], rungs[2][0])] == [15, 30, 60]
    best0 = sorted(rungs[0], key=lambda t: (t.result["loss"], t.id))[:2]
    assert sorted(json.dumps(t.value) for t in best0) == sorted(
        json.dumps(t.value) for t in rungs[1]
    )
    base = [json.dumps(v) for v in baseline_points(halving).values()]
    searched = [t for t in sorted(rungs[1], key=lambda t: (t.result["loss"], t.id))]
    searched = [t for t in searched if json.dumps(t.value) not in base][:1]
    assert sorted(json.dumps(t.value) for t in rungs[2]) == sorted(
        base + [json.dumps(t.value) for t in searched]
    )
    assert result.best.result["loss"] == min(t.result["loss"] for t in rungs[2])
    again = run_search(halving, 4, log, client)  # resumed: nothing runs again
    assert len(again.trials) == len(result.trials)


def test_a_trial_is_scored_under_the_board_noise_model() -> None:
    from xbar.training.devices.device_model import DeviceModel
    from xbar.training.noise_model import NoiseModel

    target = NoiseModel.for_device(DeviceModel.preset("pvk-median"), "open-loop")
    settings = SearchSettings(**{**vars(SETTINGS), "noise": target.to_dict()})
    value = {**baseline_points(settings)["erm"], "window": 0.6, "full_scale": 0.9}
    (noise,) = target_noises(settings, alpha_from_value(value))
    assert noise.mapping.window == 0.6 and noise.mapping.clip == 0.9
    result = evaluate_trial(settings.to_dict(), value, epochs=20)
    assert result["epochs"] == 20 and result["val_accuracy"] < result["clean_val_accuracy"]


def test_the_same_search_runs_on_an_existing_scheduler(client: Any, tmp_path: Path) -> None:
    """`--scheduler tcp://…`: a second client on the running cluster's address."""
    address = client.scheduler.address
    assert address.startswith("tcp://")
    with open_client(address) as remote:
        result = run_search(SETTINGS, 2, tmp_path / "remote.jsonl", remote)
    assert len(result.trials) == 2 and result.workers == 2
