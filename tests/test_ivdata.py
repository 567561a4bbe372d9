"""I–V files: users' .xlsx and .csv read like the published ones; bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openpyxl
import pytest
from xbar.training.devices.ivdata import IVDataError, device_stem, read_iv, write_csv
from xbar.training.devices.published import find_published
from xbar.training.devices.usability import analyse

BEST = find_published("pvk-30")


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def good_rows() -> list[list[object]]:
    rows: list[list[object]] = [["voltage", "current_cycle1", "current_cycle2"]]
    for v, a, b in zip(
        BEST.curves.voltage, BEST.curves.current[:, 0], BEST.curves.current[:, 1], strict=True
    ):
        rows.append([float(v), float(a), float(b)])
    return rows


def test_csv_round_trip_gives_the_same_usability(tmp_path: Path) -> None:
    write_csv(BEST.curves, tmp_path / "best.csv")
    again = read_iv(tmp_path / "best.csv")
    np.testing.assert_array_equal(again.voltage, BEST.curves.voltage)
    np.testing.assert_array_equal(again.current, BEST.curves.current)
    assert analyse(again).usability == analyse(BEST.curves).usability


def test_xlsx_import(tmp_path: Path) -> None:
    curves = read_iv(write_xlsx(tmp_path / "I-V_data_mine.xlsx", good_rows()))
    assert curves.name == "mine"
    assert curves.cycles == 2
    np.testing.assert_array_equal(curves.current[:, 1], BEST.curves.current[:, 1])


def test_device_stem_keeps_dots_in_names() -> None:
    assert device_stem("I-V_data_1.8um_length.xlsx") == "1.8um_length"
    assert device_stem("1.8um_length") == "1.8um_length"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: [["volts", "i1", "i2"], *rows[1:]], "no 'voltage' column"),
        (lambda rows: [rows[0], [0.1, "abc", 1e-6], *rows[2:]], "row 2, column 2: 'abc'"),
        (
            lambda rows: [rows[0]] + [[-abs(r[0]) - 0.1, r[1], r[2]] for r in rows[1:]],
            "no positive-voltage branch",
        ),
        (lambda rows: [[r[0], r[1]] for r in rows], "at least two are needed"),
        (lambda rows: [rows[0]] + [[r[0], None, None] for r in rows[1:]], "every cell is blank"),
    ],
    ids=["no-voltage", "non-numeric", "no-positive", "one-cycle", "all-blank"],
)
def test_bad_files_name_file_and_problem(tmp_path: Path, mutate, message: str) -> None:
    rows = mutate(good_rows())
    for path in (write_xlsx(tmp_path / "bad.xlsx", rows), tmp_path / "bad.csv"):
        if path.suffix == ".csv":
            lines = (",".join("" if c is None else str(c) for c in r) for r in rows)
            path.write_text("\n".join(lines))
        with pytest.raises(IVDataError) as info:
            read_iv(path)
        assert str(path) in str(info.value)
        assert message in str(info.value)


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("voltage\n")
    with pytest.raises(IVDataError, match="unsupported file type"):
        read_iv(tmp_path / "x.txt")
    with pytest.raises(IVDataError, match="no such file"):
        read_iv(tmp_path / "missing.csv")
    (tmp_path / "broken.xlsx").write_bytes(b"not a zip")
    with pytest.raises(IVDataError, match="not a readable"):
        read_iv(tmp_path / "broken.xlsx")
