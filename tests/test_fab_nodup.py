"""No duplicate suggestions, ever: a suggestion never repeats a measured, failed, pending or
same-batch point, compared in the spec's own value space (after the lab's rounding), and a
finite space that is used up says so. Property tests over random mixed spaces."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nevergrad as ng
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xbar.training.fab.campaign import CampaignError, suggest
from xbar.training.fab.spec import Parameter, Spec
from xbar.training.fab.store import CampaignStore
from xbar.training.search import Search, value_key

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
METHODS = ["gp", "metamodel", "random", "de"]


@st.composite
def spaces(draw: st.DrawFn) -> tuple[Parameter, ...]:
    """Small mixed spaces, coarse enough that a careless optimizer repeats itself."""
    count = draw(st.integers(1, 3))
    params = []
    for i in range(count):
        kind = draw(st.sampled_from(["categorical", "ordinal", "int", "float", "log"]))
        name = f"p{i}"
        if kind in ("categorical", "ordinal"):
            n = draw(st.integers(2, 4))
            choices = tuple(["a", "b", "c", "d"][:n]) if kind == "categorical" else (2, 4, 6, 8)[:n]
            params.append(Parameter(name, kind, choices=choices))
        elif kind == "int":
            params.append(Parameter(name, "int", low=0.0, high=float(draw(st.integers(1, 4)))))
        elif kind == "float":
            params.append(Parameter(name, "float", low=0.0, high=1.0, step=0.25))
        else:
            params.append(Parameter(name, "log", low=1.0, high=100.0))
    return tuple(params)


def measure_all(store: CampaignStore, rng: np.random.Generator) -> None:
    with store.transaction():
        for e in store.experiments():
            if e.state == "pending":
                store.add_measurement(e.id, None, {"usability": float(rng.uniform())}, None)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=spaces(), method=st.sampled_from(METHODS), k=st.integers(1, 4), seed=st.integers(0, 99)
)
def test_campaign_never_suggests_a_point_twice(
    params: tuple[Parameter, ...], method: str, k: int, seed: int
) -> None:
    spec = Spec(name="dup", parameters=params, batch=k, budget=10_000, method=method, seed=seed)
    finite = spec.finite_points()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        store = CampaignStore.create(Path(folder) / "s.sqlite", spec, spec.to_toml(), "none")
        with store:
            for round_ in range(6):
                try:
                    suggest(store, k)
                except CampaignError as exc:
                    assert finite is not None and "exhausted" in str(exc)
                    left = len(finite) - len(store.experiments())
                    assert left < k  # refused only when fewer than k points remain
                    return
                keys = [value_key(e.params) for e in store.experiments()]
                assert len(keys) == len(set(keys)), keys
                for e in store.experiments():  # on the lab's grid, within the bounds
                    assert spec.for_lab(e.params) == e.params
                if round_ % 2:
                    measure_all(store, rng)


def test_exhausted_space_says_so(tmp_path: Path) -> None:
    params = (
        Parameter("m", "categorical", choices=("x", "y", "z")),
        Parameter("n", "int", low=1.0, high=4.0),
    )
    spec = Spec(name="small", parameters=params, batch=4, budget=100, method="metamodel")
    with CampaignStore.create(tmp_path / "s.sqlite", spec, spec.to_toml(), "none") as store:
        for _ in range(3):
            suggest(store, 4)
            measure_all(store, np.random.default_rng(0))
        keys = {value_key(e.params) for e in store.experiments()}
        assert len(keys) == 12
        with pytest.raises(CampaignError, match="exhausted: 12 of its 12 feasible points"):
            suggest(store, 1)


def test_told_category_matches_the_asked_one() -> None:
    """The bug behind the duplicates: Nevergrad's internal weights of an asked category
    differ from those of the same category told back as a value."""
    space = ng.p.Dict(c=ng.p.Choice(["b", "c"]), y=ng.p.Choice(["x", "y"]))
    for method in ("metamodel", "random", "de"):
        search = Search(space, method, seed=1, budget=20)
        seen: list[str] = []
        for _ in range(2):
            batch = search.ask(2)
            keys = [value_key(c.value) for c in batch]
            assert not set(keys) & set(seen) and len(set(keys)) == 2
            seen += keys
            for c in batch:
                search.tell(c.value, 1.0)  # told as a plain value, as a store replays it
        with pytest.raises(Exception, match=r"exhausted|no new point"):
            search.ask(1)


def test_rounding_never_makes_a_repeat() -> None:
    """Two asked points that round to one lab setting count as one point."""
    spec = Spec(name="r", parameters=(Parameter("x", "float", low=0.0, high=1.0, step=0.5),))
    search = Search(spec.parametrization(), "random", seed=0, canonical=spec.for_lab)
    values = [c.value["x"] for c in search.ask(3)]
    assert sorted(values) == [0.0, 0.5, 1.0]
    with pytest.raises(Exception, match=r"exhausted|no new point"):
        search.ask(1)


def test_gp_candidate_set_holds_each_point_once() -> None:
    """The GP scores random samples of the space; in a small space they repeat, and a
    repeated option once filled a whole batch with one point."""
    params = (
        Parameter("m", "categorical", choices=("x", "y")),
        Parameter("n", "int", low=0, high=2),
    )
    spec = Spec(name="g", parameters=params)
    search = Search(spec.parametrization(), "gp", seed=0, sampler=spec.sample, encoder=spec.encode)
    batch = search.ask(6)
    assert len({value_key(c.value) for c in batch}) == 6
    options = search._options  # the sampled candidate set
    assert len({value_key(v) for v in options}) == len(options) == 6
