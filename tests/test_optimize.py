"""The shared ask/tell search: batches, constraints, pools, replay and reproducibility."""

from __future__ import annotations

import math
import warnings

import nevergrad as ng
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xbar.training.search import DEFAULT_METHOD, METHODS, Search, SearchError

warnings.filterwarnings("ignore", module="nevergrad")


def not_c_above_one(value: dict) -> bool:
    return not (value["m"] == "c" and value["x"] > 1.0)


def mixed_space() -> ng.p.Dict:
    space = ng.p.Dict(
        x=ng.p.Scalar(lower=-2.0, upper=2.0),
        y=ng.p.Log(lower=1e-3, upper=10.0),
        m=ng.p.Choice(["a", "b", "c"]),
        n=ng.p.TransitionChoice([1, 2, 3, 4]),
    )
    space.register_cheap_constraint(not_c_above_one)
    return space


def loss(value: dict) -> float:
    return (
        (value["x"] - 0.5) ** 2
        + math.log10(value["y"]) ** 2
        + {"a": 0.0, "b": 1.0, "c": 2.0}[value["m"]]
        + 0.1 * value["n"]
    )


def valid(value: dict) -> bool:
    return (
        -2.0 <= value["x"] <= 2.0
        and 1e-3 <= value["y"] <= 10.0
        and value["m"] in ("a", "b", "c")
        and value["n"] in (1, 2, 3, 4)
        and not_c_above_one(value)
    )


CHEAP = [m for m in METHODS if m not in ("bo", "bo-ei")]  # bayes_opt: seconds per point


@pytest.mark.parametrize("method", CHEAP)
def test_batches_are_new_distinct_and_feasible(method: str) -> None:
    search = Search(mixed_space(), method, seed=3, budget=12, batch=3)
    seen: list[dict] = []
    for _ in range(3):
        batch = search.ask(3)
        assert len({c.id for c in batch}) == 3
        for candidate in batch:
            assert valid(candidate.value), candidate.value
            assert candidate.value not in seen
            seen.append(candidate.value)
        for candidate in batch:
            search.tell(candidate, loss(candidate.value))
    assert len(search.history) == 9 and not search.pending
    best_value, best_loss = min(search.history, key=lambda item: item[1])
    assert search.recommend() == best_value and loss(best_value) == best_loss


def test_nevergrad_bo_batches_by_constant_liar() -> None:
    search = Search(ng.p.Scalar(lower=0.0, upper=1.0), "bo", seed=0, budget=8)
    for x in (0.1, 0.9):
        search.tell(x, (x - 0.3) ** 2)
    batch = search.ask(3)
    values = [c.value for c in batch]
    assert len(set(values)) == 3 and all(0.0 <= v <= 1.0 for v in values)
    assert len(search.history) == 2  # fantasies are not measurements


def test_same_seed_same_suggestions() -> None:
    def run(seed: int) -> list:
        space = ng.p.Dict(x=ng.p.Scalar(lower=-2.0, upper=2.0), m=ng.p.Choice(["a", "b"]))
        search = Search(space, DEFAULT_METHOD, seed=seed, budget=6)
        values = []
        for _ in range(3):
            batch = search.ask(2)
            values += [c.value for c in batch]
            for c in batch:
                search.tell(c, (c.value["x"] - 0.5) ** 2 + (c.value["m"] == "b"))
        return values

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_replayed_log_resumes_the_search() -> None:
    pool = [{"x": float(x), "m": m} for x in np.linspace(-1, 1, 7) for m in ("a", "b")]
    space = ng.p.Dict(x=ng.p.Scalar(lower=-1.0, upper=1.0), m=ng.p.Choice(["a", "b"]))

    def f(v: dict) -> float:
        return (v["x"] - 0.4) ** 2 + (0.5 if v["m"] == "b" else 0.0)

    first = Search(space, "gp", seed=2, pool=pool)
    for _ in range(3):
        for c in first.ask(2):
            first.tell(c, f(c.value))
    resumed = Search(space, "gp", seed=2, pool=pool)
    for value, measured in first.history:
        resumed.tell(value, measured)
    assert [c.value for c in resumed.ask(2)] == [c.value for c in first.ask(2)]


@pytest.mark.parametrize("method", ["gp", "de", "random"])
def test_pool_suggestions_are_unused_members_until_exhausted(method: str) -> None:
    pool = [{"x": float(x), "m": m} for x in (-0.5, 0.0, 0.5) for m in ("a", "b")]
    space = ng.p.Dict(x=ng.p.Scalar(lower=-1.0, upper=1.0), m=ng.p.Choice(["a", "b"]))
    search = Search(space, method, seed=0, pool=pool)
    search.tell(pool[0], 1.0)  # a past experiment, told before the first suggestion
    got = [c.value for c in search.ask(2)]
    got += [c.value for c in search.ask(3)]  # the first two are still pending
    assert sorted(map(str, got)) == sorted(map(str, pool[1:]))
    with pytest.raises(SearchError, match="pool has 0"):
        search.ask(1)


def test_bad_use_is_reported() -> None:
    with pytest.raises(SearchError, match="unknown search method 'cmaes'"):
        Search(mixed_space(), "cmaes")
    with pytest.raises(SearchError, match="pool of values to choose from is empty"):
        Search(mixed_space(), pool=[])
    search = Search(mixed_space(), "random")
    with pytest.raises(SearchError, match="finite"):
        search.tell({"x": 0.0, "y": 1.0, "m": "a", "n": 1}, float("nan"))
    with pytest.raises(SearchError, match="does not fit"):
        search.tell({"x": 0.0, "y": 1.0, "m": "zz", "n": 1}, 1.0)
    with pytest.raises(SearchError, match="nothing has been told"):
        search.recommend()


@settings(max_examples=15)
@given(
    method=st.sampled_from(["gp", "de", "random", "metamodel"]),
    upper=st.floats(0.5, 50.0),
    limit=st.floats(0.1, 0.9),
    seed=st.integers(0, 2**16),
)
def test_suggestions_respect_bounds_and_constraints(
    method: str, upper: float, limit: float, seed: int
) -> None:
    space = ng.p.Dict(a=ng.p.Scalar(lower=0.0, upper=upper), b=ng.p.Choice(["p", "q"]))
    space.register_cheap_constraint(lambda v: v["b"] == "p" or v["a"] <= limit * upper)
    search = Search(space, method, seed=seed, budget=6)
    for _ in range(2):
        batch = search.ask(3)
        for c in batch:
            assert 0.0 <= c.value["a"] <= upper
            assert c.value["b"] == "p" or c.value["a"] <= limit * upper
            search.tell(c, c.value["a"])


def test_gp_without_a_pool_also_weighs_neighbours_of_the_best() -> None:
    # The trust region of a campaign without a pool: besides random samples (whose floats
    # never equal a told one), options that keep some of the best point's conditions.
    counts = {}
    for method in ("gp", "gp-ei"):
        search = Search(mixed_space(), method, seed=0, budget=20)
        for _ in range(6):
            (candidate,) = search.ask()
            search.tell(candidate, loss(candidate.value))
        best = search.recommend()
        search.ask()
        counts[method] = sum(
            v != best and (v["x"] == best["x"] or v["y"] == best["y"]) for v in search._options
        )
    assert counts["gp-ei"] == 0 and counts["gp"] >= 8


def test_same_seed_same_suggestions_in_any_process() -> None:
    """A campaign's next batch depends on its store and seed alone, not on the process's
    string-hash seed (a killed `fab suggest` rerun must give the batch the first would
    have): the default method, with its perturbations of the best points, in two
    interpreters with different PYTHONHASHSEED."""
    import os
    import subprocess
    import sys

    script = (
        "import nevergrad as ng\n"
        "from xbar.training.search import DEFAULT_METHOD, Search\n"
        "space = ng.p.Dict(**{f'x{i}': ng.p.Scalar(lower=0.0, upper=1.0) for i in range(4)},\n"
        "                  m=ng.p.Choice(['a', 'b', 'c']))\n"
        "search = Search(space, DEFAULT_METHOD, seed=3, budget=40)\n"
        "for _ in range(8):\n"
        "    (c,) = search.ask()\n"
        "    search.tell(c, sum((c.value[f'x{i}'] - 0.3) ** 2 for i in range(4)))\n"
        "print([c.value for c in search.ask(4)])\n"
    )
    outs = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        outs.add(done.stdout)
    assert len(outs) == 1, outs
