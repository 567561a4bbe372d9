"""A lab's own campaign through `xbar fab`: its own objective (named, with unit, direction
and bounds; ordinal outcomes), sheets as a lab writes them (units, semicolons, decimal
commas), failed and abandoned runs, and corrections kept in the audit table."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from xbar.host.cli.main import main
from xbar.training.fab.campaign import build_search
from xbar.training.fab.perovskite import SPEC_PATH, write_past_sheet
from xbar.training.fab.spec import load_spec
from xbar.training.fab.store import CampaignStore

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SPEC = """
[campaign]
name = "films"
batch = 3
budget = 9
seed = 3

[parameters.voltage]
type = "float"
unit = "V"
low = 1.0
high = 5.0
step = 0.1

[parameters.thickness]
type = "float"
unit = "um"
low = 0.5
high = 5.0
decimals = 2

[parameters.layers]
type = "ordinal"
choices = [2, 4, 6]

[parameters.solvent]
type = "categorical"
choices = ["DMF", "DMSO"]

[[objectives]]
metric = "toughness"
goal = "maximise"
unit = "MJ/m^3"
low = 0
"""


def fab(*args: object) -> int:
    return main(["fab", *map(str, args)])


@pytest.fixture
def films(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    (tmp_path / "films.toml").write_text(SPEC)
    assert fab("init", tmp_path / "films.toml") == 0
    store = tmp_path / "films.sqlite"
    assert fab("suggest", "--store", store, "--out", tmp_path) == 0
    rows = list(csv.reader((tmp_path / "films-batch001.csv").open()))
    return store, rows


def test_a_labs_own_campaign(
    films: tuple[Path, list[list[str]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, rows = films
    header = rows[0]
    assert header == [
        "experiment", "voltage (V)", "thickness (um)", "layers", "solvent",
        "toughness (MJ/m^3)", "status", "notes",
    ]  # fmt: skip
    for r in rows[1:]:  # suggestions on the stated resolution
        assert round(float(r[1]) * 10) == pytest.approx(float(r[1]) * 10, abs=1e-9)
        assert len(r[2].split(".")[-1]) <= 2

    # The lab's sheet: semicolons, decimal commas, its own header spelling and units, a
    # thickness set slightly off the suggestion, a failed run, a shorted device.
    e1, e2, e3 = (r[0] for r in rows[1:])
    layers = rows[1][3]
    lines = [
        "Experiment;Voltage (V);thickness (nm);layers;solvent;toughness (kJ/m^3);status;notes",
        f"{e1};{rows[1][1].replace('.', ',')};{float(rows[1][2]) * 1000 + 4:.0f};{layers}.0;"
        f"{rows[1][4]};12500;;first film",
        f"{e2};;;;;;failed;film cracked in the oven",
        f"{e3};;;;;;shorted;",
    ]
    (tmp_path / "lab.csv").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert fab("ingest", tmp_path / "lab.csv", "--store", store) == 0
    out = capsys.readouterr().out
    assert f"measured {e1}; failed {e2}, {e3}" in out
    with CampaignStore.open(store) as s:
        by_id = {e.id: e for e in s.experiments()}
        assert by_id[e1].metrics == {"toughness": pytest.approx(12.5)}  # kJ/m^3 -> MJ/m^3
        assert by_id[e1].params["thickness"] == pytest.approx(float(rows[1][2]) + 0.004)
        assert by_id[e1].params["layers"] == int(layers)  # "6.0" is the ordinal 6
        assert (by_id[e2].state, by_id[e2].reason) == ("failed", "film cracked in the oven")
        assert (by_id[e3].state, by_id[e3].reason) == ("failed", "shorted")  # not a 0
        # The optimizer learns a failed region is bad: told worse than the worst measured.
        search, _ = build_search(s, s.spec)
        losses = dict((json.dumps(v, sort_keys=True), loss) for v, loss in search.history)
        assert losses[json.dumps(by_id[e2].params, sort_keys=True)] > -12.5

    assert fab("status", "--store", store) == 0
    out = capsys.readouterr().out
    assert f"best       {e1}  toughness (MJ/m^3, maximised) = 12.5" in out
    assert f"failed     {e2}, {e3}" in out

    # A typo corrected; the old value stays in the audit.
    assert fab("amend", e1, "--set", "toughness=1.25", "--why", "typo", "--store", store) == 0
    assert fab("retract", e3, "--why", "it was not shorted", "--store", store) == 0
    assert fab("abandon", e3, "--why", "substrate lost", "--by", "ana", "--store", store) == 0
    capsys.readouterr()
    assert fab("history", "--store", store) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert "amend" in out[0] and "12.5" in out[0] and "1.25" in out[0] and "(typo)" in out[0]
    assert "abandon  by ana" in out[2] and "substrate lost" in out[2]

    # A corrected sheet ingested again: the changed row is corrected, the others kept.
    lines[1] = lines[1].replace("12500", "13000")
    lines[3] = f"{e3};;;;;;abandoned;substrate lost"
    (tmp_path / "lab2.csv").write_text("\n".join(lines) + "\n")
    assert fab("ingest", tmp_path / "lab2.csv", "--store", store) == 0
    out = capsys.readouterr().out
    assert f"corrected {e1}" in out and f"unchanged {e2}" in out
    with CampaignStore.open(store) as s:
        assert s.experiment(e1).metrics == {"toughness": pytest.approx(13.0)}
        assert [c.action for c in s.history(e1)] == ["amend", "amend"]
        assert s.experiment(e3).state == "abandoned"

    assert fab("export", "--store", store, "-o", tmp_path / "all.csv") == 0
    exported = {r["experiment"]: r for r in csv.DictReader((tmp_path / "all.csv").open())}
    assert exported[e1]["notes"] == "first film" and exported[e1]["toughness (MJ/m^3)"] == "13.0"
    assert (
        exported[e2]["state"] == "failed" and exported[e2]["reason"] == "film cracked in the oven"
    )

    # Budget 9 counts suggested, not abandoned experiments: 2 measured/failed + 7 more.
    assert fab("suggest", "--store", store, "--batch", 8, "--out", tmp_path) == 1
    assert "only 7 experiment(s) left" in capsys.readouterr().err
    assert fab("report", "--store", store, "--out", tmp_path / "report") == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{e};2.0;1.0;2;DMF;-3;;", "column toughness: '-3' is outside [0, inf] of toughness"),
        ("{e};2.0;1.0;2;DMF;3 V;;", "3 V cannot be converted to MJ/m^3"),
        ("{e};2.0;2 V;2;DMF;3;;", "thickness: 2 V cannot be converted to um"),
        ("{e};2.0;1.0;3;DMF;3;;", "layers = '3' is not one of [2, 4, 6]"),
        ("{e};2.0;1.0;2;DMF;;;", "column toughness: missing"),
        ("{e};2.0;1.0;2;DMF;3;broken;", "column status: 'broken' is not one of"),
    ],
)
def test_bad_lab_rows_store_nothing(
    films: tuple[Path, list[list[str]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    message: str,
) -> None:
    store, rows = films
    head = "experiment;voltage;thickness;layers;solvent;toughness;status;notes"
    (tmp_path / "bad.csv").write_text(f"{head}\n{line.format(e=rows[1][0])}\n")
    capsys.readouterr()
    assert fab("ingest", tmp_path / "bad.csv", "--store", store) == 1
    errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("xbar: error: ")]
    assert len(errors) == 1 and message in errors[0] and "row 2" in errors[0], errors
    with CampaignStore.open(store) as s:
        assert all(e.state == "pending" for e in s.experiments())


def test_headerless_sheet_and_usability_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = load_spec(SPEC_PATH)
    assert fab("init", "perovskite", "--store", tmp_path / "p.sqlite") == 0
    sheet = write_past_sheet(tmp_path / "past.csv", spec, slice(0, 2))
    rows = list(csv.reader(sheet.open()))
    rows[1][-1] = "12"  # a typo: usability lies in [0, 1]
    with (tmp_path / "typo.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    capsys.readouterr()
    assert fab("ingest", tmp_path / "typo.csv", "--store", tmp_path / "p.sqlite") == 1
    assert "row 2, column usability: '12' is outside [0, 1]" in capsys.readouterr().err
    with (tmp_path / "bare.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows[1:])
    assert fab("ingest", tmp_path / "bare.csv", "--store", tmp_path / "p.sqlite") == 1
    assert "row 1 is not a header row" in capsys.readouterr().err


def test_minimised_and_ordinal_objectives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = SPEC.split("[[objectives]]")[0] + (
        '[[objectives]]\nmetric = "hse_gap"\ngoal = "min"\nunit = "eV"\n\n'
        '[[objectives]]\nmetric = "phase"\ngoal = "max"\nweight = 0.1\n'
        'levels = ["clear solution", "powder", "crystallites"]\n'
    )
    (tmp_path / "gap.toml").write_text(text.replace("budget = 9", "budget = 30"))
    assert fab("init", tmp_path / "gap.toml") == 0
    store = tmp_path / "gap.sqlite"
    head = "experiment;voltage;thickness;layers;solvent;hse_gap;phase"
    lines = [head, ";2.0;1.0;2;DMF;1.9;Powder", ";3.0;1.5;4;DMSO;1.2;crystallites"]
    (tmp_path / "past.csv").write_text("\n".join(lines) + "\n")
    assert fab("ingest", tmp_path / "past.csv", "--store", store) == 0
    (tmp_path / "bad.csv").write_text(head + "\n;2.0;1.0;2;DMF;1.9;gel\n")
    assert fab("ingest", tmp_path / "bad.csv", "--store", store) == 1
    assert "'gel' is not one of the levels" in capsys.readouterr().err
    assert fab("suggest", "--store", store, "--out", tmp_path) == 0
    capsys.readouterr()
    assert fab("status", "--store", store, "--json") == 0
    state = json.loads(capsys.readouterr().out)
    assert state["best"]["experiment"] == "E0002"  # lower gap, better phase
    assert state["score"].startswith("weighted score: 1·−hse_gap + 0.1·phase")
    assert state["budget_used"] == 3  # the two past runs are free


def test_single_minimised_objective_is_shown_as_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = SPEC.split("[[objectives]]")[0] + '[[objectives]]\nmetric = "hse_gap"\ngoal = "min"\n'
    (tmp_path / "gap.toml").write_text(text)
    assert fab("init", tmp_path / "gap.toml") == 0
    store = tmp_path / "gap.sqlite"
    lines = ["voltage,thickness,layers,solvent,hse_gap", "2,1,2,DMF,1.9", "3,1.5,4,DMSO,1.2"]
    (tmp_path / "past.csv").write_text("\n".join(lines) + "\n")
    assert fab("ingest", tmp_path / "past.csv", "--store", store) == 0
    capsys.readouterr()
    assert fab("status", "--store", store) == 0
    assert "best       E0002  hse_gap (minimised) = 1.2 " in capsys.readouterr().out


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY, created TEXT NOT NULL, method TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE experiments (
    id TEXT PRIMARY KEY, batch INTEGER REFERENCES batches(id),
    origin TEXT NOT NULL CHECK (origin IN ('suggested', 'external')),
    params TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE ingests (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, source TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE, rows INTEGER NOT NULL);
CREATE TABLE iv_files (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, content BLOB NOT NULL);
CREATE TABLE measurements (
    experiment TEXT PRIMARY KEY REFERENCES experiments(id),
    ingest INTEGER NOT NULL REFERENCES ingests(id), measured TEXT NOT NULL,
    usability REAL, sigma REAL, monotonicity REAL,
    iv_sha256 TEXT REFERENCES iv_files(sha256), notes TEXT NOT NULL DEFAULT '');
CREATE TABLE optimizer_state (
    batch INTEGER PRIMARY KEY REFERENCES batches(id),
    method TEXT NOT NULL, seed INTEGER NOT NULL, state TEXT NOT NULL);
"""


def test_a_schema_1_store_is_upgraded_losing_nothing(tmp_path: Path) -> None:
    spec = load_spec(SPEC_PATH)
    values = json.dumps(spec.sample(np.random.default_rng(0)))
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_1)
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema", "1"), ("spec_toml", spec.to_toml()), ("spec_path", "none"),
             ("spec_fingerprint", spec.fingerprint()), ("created", "then")],
        )  # fmt: skip
        db.execute("INSERT INTO ingests VALUES (1, 'then', 'past.csv', 'abc', 2)")
        for ident in ("E0001", "E0002", "E0003"):
            db.execute(
                "INSERT INTO experiments VALUES (?, NULL, 'external', ?, 'then')", (ident, values)
            )
        db.execute("INSERT INTO measurements VALUES ('E0001', 1, 'then', 0.2, 0.5, 0.3, NULL, 'a')")
        db.execute(
            "INSERT INTO measurements VALUES ('E0002', 1, 'then', 0.1, NULL, NULL, NULL, '')"
        )
    with CampaignStore.open(path) as store:
        by_id = {e.id: e for e in store.experiments()}
        assert by_id["E0001"].metrics == {"usability": 0.2, "sigma": 0.5, "monotonicity": 0.3}
        assert by_id["E0001"].notes == "a" and by_id["E0001"].params == json.loads(values)
        assert by_id["E0002"].metrics == {"usability": 0.1}
        assert by_id["E0003"].state == "pending"
        assert store.meta("schema") == "2"
