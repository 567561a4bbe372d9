"""The campaign loop through the `xbar fab` command on a temporary store, and its errors."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest
from xbar.host.cli.main import main
from xbar.training.devices.ivdata import write_csv
from xbar.training.devices.published import load_published
from xbar.training.devices.usability import analyse
from xbar.training.fab.perovskite import SPEC_PATH, published_experiments, write_past_sheet
from xbar.training.fab.spec import load_spec
from xbar.training.fab.store import CampaignStore
from xbar.training.fab.units import split_header

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def fab(*args: str) -> int:
    return main(["fab", *map(str, args)])


def error_lines(err: str) -> list[str]:
    """The error lines of a command's stderr (progress lines of a log aside)."""
    return [line for line in err.splitlines() if line.startswith("xbar: error: ")]


def write_rows(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def past_sheet(path: Path, devices: slice) -> Path:
    return write_past_sheet(path, load_spec(SPEC_PATH), devices)


def counts(store_path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(store_path) as db:
        return tuple(  # type: ignore[return-value]
            db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("experiments", "measurements", "ingests")
        )


@pytest.fixture
def campaign(tmp_path: Path) -> Path:
    spec = tmp_path / "perovskite.toml"
    text = SPEC_PATH.read_text().replace("budget = 60", "budget = 12")
    spec.write_text(text)
    assert fab("init", spec) == 0
    return tmp_path / "perovskite.sqlite"


def test_full_loop(campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Past experiments go in before the first suggestion.
    assert fab("ingest", past_sheet(tmp_path / "past.csv", slice(0, 6)), "--store", campaign) == 0
    assert counts(campaign) == (6, 6, 1)

    assert fab("suggest", "--store", campaign, "--batch", 3, "--out", tmp_path) == 0
    sheet = tmp_path / "perovskite-batch001.csv"
    assert (tmp_path / "perovskite-batch001.md").read_text().count("| E000") == 3
    rows = list(csv.reader(sheet.open()))
    header, body = [split_header(h)[0] for h in rows[0]], rows[1:]
    assert rows[0][1:3] == ["aao_length (um)", "aao_diameter (nm)"]  # units in the header
    assert [r[0] for r in body] == ["E0007", "E0008", "E0009"]
    spec = load_spec(SPEC_PATH)
    for r in body:  # every suggestion is a feasible point of the spec
        spec.check_values(dict(zip(header, r, strict=True)), "sheet")
    floats = [p for p in spec.parameters if p.kind in ("float", "log")]
    for r in body:  # as a lab sets them: on the parameter's resolution, at most 3 digits
        for p in floats:
            value = float(r[header.index(p.name)])
            assert p.for_lab(value) == value, (p.name, value)
            digits = f"{value:e}".split("e")[0].replace(".", "").rstrip("0")
            assert len(digits) <= 3, (p.name, value)

    # The lab fills in one usability, one I–V file in the sheet, and one I–V file alone.
    devices = load_published()
    write_csv(devices[29].curves, tmp_path / "best.csv")
    body[0][header.index("usability")] = "0.2"
    body[1][header.index("iv_file")] = "best.csv"
    write_rows(tmp_path / "results.csv", [header, *body[:2]])
    write_csv(devices[3].curves, tmp_path / "E0009.csv")
    assert fab("ingest", tmp_path / "results.csv", tmp_path / "E0009.csv", "--store", campaign) == 0
    assert counts(campaign) == (9, 9, 3)

    capsys.readouterr()
    assert fab("status", "--store", campaign) == 0
    out = capsys.readouterr().out
    assert "measured   9 of 9 experiments (6 external)" in out
    assert "best       E0008" in out  # the best published device, from its I–V file

    with CampaignStore.open(campaign) as store:
        e8 = next(e for e in store.experiments() if e.id == "E0008")
        assert e8.metrics is not None
        assert e8.metrics["usability"] == pytest.approx(analyse(devices[29].curves).usability)
        assert e8.iv_sha256 is not None
        _, content = store.iv_file(e8.iv_sha256)
        assert content == (tmp_path / "best.csv").read_bytes()

    assert fab("report", "--store", campaign, "--out", tmp_path / "report") == 0
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["perovskite-batches.png", "perovskite-best.png", "perovskite-effects.png"]
    assert all((tmp_path / "report" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)

    assert fab("export", "--store", campaign, "-o", tmp_path / "all.csv") == 0
    exported = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert [r["experiment"] for r in exported] == [f"E{i:04d}" for i in range(1, 10)]
    assert exported[7]["origin"] == "suggested" and exported[0]["origin"] == "external"
    assert exported[0]["top_electrode"] == "Ag"

    # Budget 12 counts the suggested experiments only (the 6 past ones are free): 9 more,
    # then the campaign is finished.
    assert fab("suggest", "--store", campaign, "--batch", 10, "--out", tmp_path) == 1
    assert "only 9 experiment(s) left" in capsys.readouterr().err
    assert fab("suggest", "--store", campaign, "--batch", 9, "--out", tmp_path) == 0
    assert fab("suggest", "--store", campaign, "--out", tmp_path) == 1
    assert "the campaign is finished" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h, b: h.__setitem__(1, "colour"), "row 1, column 2: unknown column 'colour'"),
        (lambda h, b: h.__setitem__(0, "id"), "unknown column 'id'"),
        (lambda h, b: b[1].__setitem__(1, "7.5"), "row 3: aao_length = '7.5' is outside"),
        (lambda h, b: b[0].__setitem__(-1, "high"), "row 2, column usability: 'high' is not"),
        (lambda h, b: b[2].__setitem__(-1, ""), "row 4, column usability: missing"),
        (lambda h, b: b[1].__setitem__(0, "E0099"), "row 3, column experiment: 'E0099' is not"),
        (lambda h, b: b[2].__setitem__(7, "lead"), "row 4: material = 'lead' is not one of"),
    ],
)
def test_bad_sheets_store_nothing(
    campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, message
) -> None:
    sheet = past_sheet(tmp_path / "past.csv", slice(0, 3))
    rows = list(csv.reader(sheet.open()))
    edit(rows[0], rows[1:])
    write_rows(sheet, rows)
    assert fab("ingest", sheet, "--store", campaign) == 1
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and message in errors[0] and str(sheet) in errors[0]
    assert counts(campaign) == (0, 0, 0)


def test_duplicate_ids_and_bad_iv_files_store_nothing(
    campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fab("suggest", "--store", campaign, "--batch", 2, "--out", tmp_path) == 0
    rows = list(csv.reader((tmp_path / "perovskite-batch001.csv").open()))
    header = rows[0]
    rows[1][header.index("usability")] = rows[2][header.index("usability")] = "0.1"
    write_rows(tmp_path / "dup.csv", [header, rows[1], rows[1]])
    assert fab("ingest", tmp_path / "dup.csv", "--store", campaign) == 1
    assert "row 3, column experiment: 'E0001' repeats row 2" in capsys.readouterr().err

    (tmp_path / "broken.csv").write_text("voltage,i1\n0.1,abc\n")
    rows[2][header.index("usability")] = ""
    rows[2][header.index("iv_file")] = "broken.csv"
    write_rows(tmp_path / "iv.csv", [header, rows[1], rows[2]])
    assert fab("ingest", tmp_path / "iv.csv", "--store", campaign) == 1
    assert "row 3, column iv_file" in (err := capsys.readouterr().err) and "'abc'" in err

    (tmp_path / "E0002.csv").write_text("voltage,i1,i2\nx,1,2\n")
    assert fab("ingest", tmp_path / "E0002.csv", "--store", campaign) == 1
    assert "E0002.csv: row 2, column 1: 'x' is not a number" in capsys.readouterr().err
    assert counts(campaign) == (2, 0, 0)  # the two suggestions only


def test_store_and_spec_errors(
    campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fab("suggest", "--store", tmp_path / "none.sqlite") == 1
    assert "no campaign store here" in capsys.readouterr().err
    (tmp_path / "other.sqlite").write_bytes(b"not a database at all, just text" * 40)
    assert fab("status", "--store", tmp_path / "other.sqlite") == 1
    assert "not an xbar campaign store" in capsys.readouterr().err
    (tmp_path / "empty.sqlite").touch()
    assert fab("suggest", "--store", tmp_path / "empty.sqlite") == 1
    assert "empty.sqlite: not an xbar campaign store" in capsys.readouterr().err

    spec = tmp_path / "perovskite.toml"
    assert fab("init", spec) == 0  # the same spec again: reopened
    spec.write_text(spec.read_text().replace("high = 3.0", "high = 3.5"))
    assert fab("suggest", "--store", campaign, "--out", tmp_path) == 1
    assert "changed since the campaign" in capsys.readouterr().err
    assert fab("init", spec) == 1
    assert "holds a campaign with a different spec" in capsys.readouterr().err
    assert counts(campaign) == (0, 0, 0)


def test_pareto_campaign_keeps_its_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "two.toml"
    text = SPEC_PATH.read_text().split("[[objectives]]")[0]
    spec.write_text(
        text.replace("seed = 0", "seed = 0\npareto = true")
        + '[[objectives]]\nmetric = "usability"\n\n'
        + '[[objectives]]\nmetric = "sigma"\ngoal = "min"\n'
    )
    assert fab("init", spec) == 0
    store = tmp_path / "two.sqlite"
    sheet = past_sheet(tmp_path / "past.csv", slice(20, 26))
    rows = list(csv.reader(sheet.open()))
    rows[0].append("sigma")
    for row, (device, _) in zip(
        rows[1:], published_experiments(load_spec(SPEC_PATH))[20:26], strict=True
    ):
        row.append(device.published["sigma"])
    write_rows(sheet, rows)
    assert fab("ingest", sheet, "--store", store) == 0
    assert fab("suggest", "--store", store, "--batch", 2, "--out", tmp_path) == 0
    capsys.readouterr()
    assert fab("status", "--store", store) == 0
    out = capsys.readouterr().out
    six = [(d.published["usability"], d.published["sigma"]) for d in load_published()[20:26]]
    front = [
        f"E{i + 1:04d}"
        for i, (u, s) in enumerate(six)
        if not any(u2 >= u and s2 <= s and (u2, s2) != (u, s) for u2, s2 in six)
    ]
    assert 2 <= len(front) < 6
    assert f"pareto     {', '.join(front)}\n" in out


_IMPORTS_AFTER_SUGGEST = (
    "import sys\n"
    "from xbar.host.cli.main import main\n"
    "code = main(['fab', 'suggest', '--store', sys.argv[1], '--out', sys.argv[2]] + sys.argv[3:])\n"
    "print(code, 'nevergrad' in sys.modules, 'sklearn' in sys.modules)\n"
)


@pytest.mark.parametrize(("method", "loaded"), [(None, False), ("de", True)])
def test_default_suggest_imports_neither_nevergrad_nor_sklearn(
    campaign: Path, tmp_path: Path, method: str | None, loaded: bool
) -> None:
    """Each import costs about a second of CPU, the whole budget of a suggestion: the
    default method needs neither; a Nevergrad method still loads them (Nevergrad imports
    scikit-learn)."""
    import subprocess
    import sys

    assert fab("ingest", past_sheet(tmp_path / "past.csv", slice(0, 6)), "--store", campaign) == 0
    extra = ["--method", method] if method else []
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER_SUGGEST, str(campaign), str(tmp_path), *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split()[-3:] == ["0", str(loaded), str(loaded)]
