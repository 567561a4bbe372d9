"""Campaign specs: the shipped example, validation errors, and the TOML round trip."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xbar.training.fab.perovskite import SPEC_PATH, published_experiments
from xbar.training.fab.spec import Infeasible, Objective, Parameter, Spec, SpecError, load_spec
from xbar.training.search import Search


def test_shipped_spec_holds_every_published_device() -> None:
    spec = load_spec(SPEC_PATH)
    experiments = published_experiments(spec)
    assert len(experiments) == 43
    assert {v["material"] for _, v in experiments} == {"MAPbI3", "MAPbBr3", "FAPbI3", "CsPbI3"}
    assert all(spec.is_feasible(v) for _, v in experiments)
    best = max(experiments, key=lambda item: item[0].published["usability"])
    assert best[1]["aao_diameter"] == 50.0 and best[1]["aao_length"] == 1.8


def spec_text(extra: str = "", parameters: str = "") -> str:
    return (
        """
[campaign]
name = "mini"
[parameters.x]
type = "float"
low = 0.0
high = 1.0
"""
        + parameters
        + extra
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (spec_text(parameters='[parameters.y]\ntype = "cubic"\n'), "type = 'cubic'"),
        (spec_text(parameters='[parameters.y]\ntype = "float"\nlow = 2\nhigh = 1\n'), "below"),
        (spec_text(parameters='[parameters.y]\ntype = "log"\nlow = 0\nhigh = 1\n'), "> 0"),
        (spec_text(parameters='[parameters.y]\ntype = "categorical"\nchoices = ["a"]\n'), "two"),
        (spec_text("[[infeasible]]\nwhen = { z = 1 }\n"), "'z' is not a parameter"),
        (spec_text("[[infeasible]]\nwhen = { x = 3.0 }\n"), "outside"),
        (spec_text('[[objectives]]\nmetric = "speed"\n'), "speed is not built in, so say which"),
        (spec_text('[[objectives]]\nmetric = "a b"\ngoal = "max"\n'), "metric = 'a b'"),
        (spec_text("[fixed]\nx = 1\n"), "also a free parameter"),
        (spec_text("[extra]\na = 1\n"), "unknown section"),
        (spec_text("[campaign.sub]\n"), "unknown key"),
        ('[campaign]\nname = "x"\n[parameters]\n', "nothing to optimise"),
        (spec_text("[campaign]\n"), "not valid TOML"),
    ],
)
def test_bad_specs_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_values_are_checked_with_where() -> None:
    spec = load_spec(SPEC_PATH)
    good = dict(published_experiments(spec)[0][1])
    with pytest.raises(SpecError, match=r"row 4: aao_length = '9' is outside \[0.7, 3\] um"):
        spec.check_values({**good, "aao_length": "9"}, "row 4")
    with pytest.raises(SpecError, match="contact = 'glue' is not one of"):
        spec.check_values({**good, "contact": "glue"}, "row 2")
    with pytest.raises(SpecError, match=r"infeasible .*MAI converts at 180 C"):
        spec.check_values({**good, "cvd_temperature": "210"}, "row 2")
    with pytest.raises(SpecError, match=r"bt_time = 2\.5 is not an integer"):
        spec.check_values({**good, "bt_time": 2.5}, "row 2")


names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
labels = st.text("abcxyz0123+", min_size=1, max_size=6)


@st.composite
def parameters(draw: st.DrawFn, name: str) -> Parameter:
    kind = draw(st.sampled_from(["float", "int", "log", "ordinal", "categorical"]))
    unit = draw(st.sampled_from(["", "nm", "V"]))
    if kind in ("ordinal", "categorical"):
        choices = draw(st.lists(labels, min_size=2, max_size=5, unique=True))
        return Parameter(name, kind, unit, choices=tuple(choices))
    low = draw(st.integers(1, 100))
    high = low + draw(st.integers(1, 1000))
    return Parameter(name, kind, unit, float(low), float(high))


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    keys = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    params = tuple(draw(parameters(k)) for k in keys)
    infeasible = []
    for p in params:
        if p.choices and draw(st.booleans()):
            infeasible.append(
                Infeasible({p.name: [p.choices[0]]}, draw(st.sampled_from(["", "r"])))
            )
    objectives = draw(
        st.sampled_from(
            [
                (Objective("usability", "max"),),
                (Objective("usability", "max", 2.0), Objective("sigma", "min", 0.5)),
            ]
        )
    )
    return Spec(
        name=draw(names),
        parameters=params,
        infeasible=tuple(infeasible),
        objectives=objectives,
        pareto=len(objectives) > 1 and draw(st.booleans()),
        batch=draw(st.integers(1, 8)),
        budget=draw(st.integers(8, 200)),
        method=draw(st.sampled_from([None, "gp", "de"])),
        seed=draw(st.integers(0, 99)),
        fixed={"top": "Ag"} if draw(st.booleans()) else {},
    )


@settings(max_examples=40)
@given(spec=specs())
def test_spec_toml_round_trip(spec: Spec) -> None:
    again = Spec.from_dict(tomllib.loads(spec.to_toml()))
    assert again == spec
    assert again.fingerprint() == spec.fingerprint()


@settings(max_examples=12)
@given(spec=specs(), method=st.sampled_from(["gp", "de", "random"]), k=st.integers(1, 4))
def test_suggestions_satisfy_bounds_and_constraints(spec: Spec, method: str, k: int) -> None:
    finite = spec.finite_points()  # as `xbar fab suggest` does: a finite space is a pool
    search = Search(
        spec.parametrization(),
        method,
        seed=spec.seed,
        budget=3 * k,
        sampler=spec.sample,
        pool=finite,
        canonical=spec.for_lab,
        encoder=spec.encode,
    )
    for round_ in range(3):
        if finite is not None and len(finite) < (round_ + 1) * k:
            break  # used up (tests/test_fab_nodup.py checks that it says so)
        batch = search.ask(k)
        for candidate in batch:
            checked = spec.check_values(candidate.value, "suggestion")  # bounds, infeasible sets
            assert checked == candidate.value
            search.tell(candidate, float(len(str(candidate.value))))
