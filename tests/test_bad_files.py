"""A corpus of bad files through the command line: every one is refused with exactly one
``xbar: error:`` line (exit 1, no traceback) and nothing is written.

Bad model artifacts (bit flips in every member, truncations, deeply nested and non-finite
JSON, conductances outside the device window or the firmware's limits), campaign specs,
results sheets and I–V files (CSV and xlsx, a zip bomb among them), all built here in
a few seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_tflite_export import digits_layers
from xbar.host.cli.main import main
from xbar.training.artifact import MEMBERS, export_artifact
from xbar.training.devices.device_model import DeviceModel
from xbar.training.devices.ivdata import MAX_XLSX_BYTES
from xbar.training.quantize import QuantizedModelError, quantize_mlp

PROFILE = "xbar-5x64x64"


def run_bad(argv: list[str], folder: Path, capsys: pytest.CaptureFixture[str], *more: Path) -> str:
    """Run the CLI on a bad input: exit 1, one error line, no traceback, nothing new in
    ``folder`` (and ``more`` folders); returns the message."""
    folders = (folder, *more)
    before = [sorted(os.listdir(f)) for f in folders]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("xbar: error: "), (argv, err)
    assert "Traceback" not in err
    assert [sorted(os.listdir(f)) for f in folders] == before, (argv, err)
    return lines[0]


# ---- model artifacts ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    layers, data = digits_layers()
    path = tmp_path_factory.mktemp("good") / "digits.xbar"
    export_artifact(
        path,
        layers,
        data["x_train"][:200],
        input_scale=1 / 255,
        device=DeviceModel.preset("pvk-best"),
        profile=PROFILE,
        metadata={"task": "digits"},
    )
    return path.read_bytes()


def members_of(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return {name: z.read(name) for name in MEMBERS}


def rezip(members: dict[str, bytes], fix_checksums: bool = True) -> bytes:
    """The members as an artifact again, with their checksums recomputed (as an attacker
    or a buggy tool would), so the content checks must catch what is wrong."""
    members = dict(members)
    if fix_checksums:
        meta = json.loads(members["metadata.json"])
        meta["checksums"] = {
            name: hashlib.sha256(members[name]).hexdigest() for name in MEMBERS[:-1]
        }
        members["metadata.json"] = json.dumps(meta).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in MEMBERS:
            z.writestr(name, members[name])
    return buf.getvalue()


def edit_json(blob: bytes, member: str, edit: Callable[[Any], Any]) -> bytes:
    members = members_of(blob)
    members[member] = json.dumps(edit(json.loads(members[member]))).encode()
    return rezip(members)


def set_plan(field: str, value: Any) -> Callable[[Any], Any]:
    def edit(plan: Any) -> Any:
        for layer in plan["crossbar"]["layers"]:
            layer[field] = value
        return plan

    return edit


def data_offsets(blob: bytes, per_member: int, only: str = "") -> list[int]:
    """Offsets inside each member's compressed data, short of its last bytes (whose padding
    bits a flip may leave meaningless): a flip there changes the data or breaks the stream."""
    out = []
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        for info in z.infolist():
            if only not in info.filename:
                continue
            start = info.header_offset + 30 + len(info.filename) + len(info.extra)
            out += [int(x) for x in np.linspace(start, start + info.compress_size - 3, per_member)]
    return out


def bad_artifacts(blob: bytes) -> dict[str, bytes]:
    bad: dict[str, bytes] = {}
    for offset in data_offsets(blob, 5):
        flipped = bytearray(blob)
        flipped[offset] ^= 1 << (offset % 8)
        bad[f"flip@{offset}"] = bytes(flipped)
    central = blob.index(b"PK\x01\x02")
    # signatures (local, central, end of directory) and the central compression method
    for offset in (0, central, central + 10, len(blob) - 22):
        flipped = bytearray(blob)
        flipped[offset] ^= 0x10
        bad[f"header-flip@{offset}"] = bytes(flipped)
    for size in (0, 10, 100, len(blob) // 2, len(blob) - 1):
        bad[f"truncated@{size}"] = blob[:size]
    members = members_of(blob)
    nested = dict(members)
    nested["metadata.json"] = b"[" * 100_000 + b"]" * 100_000
    bad["metadata-nested-deep"] = rezip(nested, fix_checksums=False)

    def deep(meta: Any) -> Any:
        value: Any = 1
        for _ in range(40):
            value = {"a": value}
        return {**meta, "note": value}

    bad["metadata-nested-40"] = edit_json(blob, "metadata.json", deep)
    bad["metadata-versions"] = edit_json(blob, "metadata.json", lambda m: {**m, "versions": 3})
    bad["input-scale-nan"] = edit_json(
        blob, "quantized.json", lambda q: {**q, "input_scale": float("nan")}
    )
    bad["input-scale-zero"] = edit_json(blob, "quantized.json", lambda q: {**q, "input_scale": 0})
    bad["input-scale-1e999"] = rezip(
        {
            **members,
            "quantized.json": members["quantized.json"].replace(
                b'"input_scale": ', b'"input_scale": 1e999, "x": '
            ),
        }
    )
    bad["weight-huge"] = edit_json(
        blob,
        "quantized.json",
        lambda q: {**q, "layers": [{**q["layers"][0], "bias": [10**30] * 64}, *q["layers"][1:]]},
    )
    bad["g-unit-1e-30"] = edit_json(blob, "plan.json", set_plan("g_unit", 1e-30))
    bad["g-unit-10"] = edit_json(blob, "plan.json", set_plan("g_unit", 10.0))
    bad["g-unit-inf"] = edit_json(blob, "plan.json", set_plan("g_unit", float("inf")))
    bad["device-gmax-huge"] = edit_json(blob, "device.json", lambda d: {**d, "g_max": 7e292})
    bad["quantized-list"] = edit_json(blob, "quantized.json", lambda q: [q])
    return bad


def test_bad_artifacts(
    artifact_bytes: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = bad_artifacts(artifact_bytes)
    assert len(bad) >= 40
    out = tmp_path / "out"
    out.mkdir()
    messages = {}
    for name, blob in bad.items():
        path = out / f"{name}.xbar"
        path.write_bytes(blob)
        messages[name] = run_bad(["model", "show", str(path)], out, capsys)
        assert str(path) in messages[name]
    assert "nested too deeply" in messages["metadata-nested-deep"]
    assert "nested too deeply" in messages["metadata-nested-40"]
    assert "NaN" in messages["input-scale-nan"] and "quantized.json" in messages["input-scale-nan"]
    assert "input_scale = 0" in messages["input-scale-zero"]
    assert "g_unit" in messages["g-unit-1e-30"] and "device window" in messages["g-unit-1e-30"]
    assert "g_unit" in messages["g-unit-10"] and "firmware" in messages["g-unit-10"]
    assert "g_max" in messages["device-gmax-huge"]
    assert "layer 0: weights and bias" in messages["weight-huge"]


# ---- campaign specs ----------------------------------------------------------------------
SPEC = """
[campaign]
name = "mini"
batch = 2
budget = 10
[parameters.x]
type = "float"
low = 0.0
high = 1.0
"""

BAD_SPECS = {
    "nested": "[campaign]\nname = 'x'\n[parameters.x]\ntype = 'float'\nlow = 0\nhigh = 1\n"
    "[fixed]\ndeep = " + "[" * 5000 + "]" * 5000 + "\n",
    "nested-40": SPEC + "[fixed]\ndeep = " + "[" * 40 + "1" + "]" * 40 + "\n",
    "high-inf": SPEC.replace("high = 1.0", "high = inf"),
    "low-nan": SPEC.replace("low = 0.0", "low = nan"),
    "high-1e308": SPEC.replace("low = 0.0", "low = -1.7e308").replace(
        "high = 1.0", "high = 1.7e308"
    ),
    "seed-1e23": SPEC.replace("batch = 2", "batch = 2\nseed = 1e23"),
    "seed-negative": SPEC.replace("batch = 2", "batch = 2\nseed = -1"),
    "name-traversal": SPEC.replace('"mini"', '"../../x"'),
    "name-slash": SPEC.replace('"mini"', '"a/b"'),
    "name-table": SPEC.replace('"mini"', "{ a = 1 }"),
    "int-huge": SPEC + "[parameters.n]\ntype = 'int'\nlow = 0\nhigh = 100000000000000000000\n",
    "weight-inf": SPEC + "[[objectives]]\nmetric = 'usability'\nweight = inf\n",
    "choices-table": SPEC + "[parameters.c]\ntype = 'categorical'\nchoices = [{a = 1}, {b = 2}]\n",
    "not-toml": "[campaign\nname = 1\n",
    "binary": "\x00\x01\x02",
}


def test_bad_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messages = {}
    for name, text in BAD_SPECS.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        store = tmp_path / f"{name}.sqlite"
        messages[name] = run_bad(
            ["fab", "init", str(path), "--store", str(store)], tmp_path, capsys
        )
        assert str(path) in messages[name]
    assert "high = inf" in messages["high-inf"]
    assert "seed = 1e+23" in messages["seed-1e23"]
    assert "name = '../../x'" in messages["name-traversal"]
    assert "nested too deeply" in messages["nested"]


# ---- results sheets and I–V files --------------------------------------------------------
@pytest.fixture
def campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    spec = tmp_path / "mini.toml"
    spec.write_text(SPEC)
    store = tmp_path / "mini.sqlite"
    sheets = tmp_path / "sheets"
    assert main(["fab", "init", str(spec), "--store", str(store)]) == 0
    assert main(["fab", "suggest", "--store", str(store), "--out", str(sheets)]) == 0
    capsys.readouterr()
    return store, sheets


def good_iv_rows() -> list[list[float]]:
    volts = np.concatenate([np.linspace(0, 1, 11), np.linspace(1, -1, 21), np.linspace(-1, 0, 11)])
    rng = np.random.default_rng(0)
    return [
        [float(v)] + [float(1e-5 * v * (1 + 0.1 * rng.random())) for _ in range(3)] for v in volts
    ]


def iv_csv(rows: list[list[float]], scale: float = 1.0, volts: float = 1.0) -> str:
    lines = ["voltage,c1,c2,c3"]
    lines += [",".join([repr(r[0] * volts)] + [repr(x * scale) for x in r[1:]]) for r in rows]
    return "\n".join(lines) + "\n"


def xlsx_bytes(rows: list[list[float]]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["voltage", "c1", "c2", "c3"])
    for row in rows:
        sheet.append(row)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def replace_sheet(blob: bytes, transform: Callable[[bytes], bytes], pad: int = 0) -> bytes:
    """The workbook with its first sheet's XML transformed (CRCs right), and ``pad``
    spaces after it: a few hundred KB that inflate to ``pad`` bytes (a zip bomb)."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(blob)) as src,
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst,
    ):
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = transform(data)
                with dst.open(info.filename, "w", force_zip64=True) as f:
                    f.write(data)
                    chunk = b" " * (1 << 20)
                    for _ in range(pad // len(chunk)):
                        f.write(chunk)
            else:
                dst.writestr(info, data)
    return buf.getvalue()


def bad_iv_files() -> dict[str, bytes]:
    rows = good_iv_rows()
    good_xlsx = xlsx_bytes(rows)
    bad = {
        "current-1e300.csv": iv_csv(rows, scale=1e300).encode(),
        "current-1e3.csv": iv_csv(rows, scale=1e8).encode(),
        "voltage-1e6.csv": iv_csv(rows, volts=1e6).encode(),
        "inf.csv": iv_csv(rows).encode() + b"0.5,inf,1e-6,1e-6\n",
        "text.csv": iv_csv(rows).encode() + b"0.5,abc,1e-6,1e-6\n",
        "one-cycle.csv": b"voltage,c1\n0.1,1e-6\n0.2,2e-6\n",
        "latin1.csv": "voltage,c1,c2\n0.1,1e-6,\xb5\n".encode("latin-1"),
        "empty.csv": b"",
        "xml-broken.xlsx": replace_sheet(good_xlsx, lambda x: x.replace(b"<row", b"<r<ow", 3)),
        "zip-bomb.xlsx": replace_sheet(good_xlsx, lambda x: x, pad=MAX_XLSX_BYTES + (1 << 20)),
        "truncated.xlsx": good_xlsx[: len(good_xlsx) // 2],
        "not-zip.xlsx": b"PK\x03\x04 not really",
    }
    for offset in data_offsets(good_xlsx, 6, only="sheet1.xml"):
        flipped = bytearray(good_xlsx)
        flipped[offset] ^= 0x04
        bad[f"flip{offset}.xlsx"] = bytes(flipped)
    return bad


def test_bad_iv_files_through_devices_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tmp_path / "in"
    files.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    good = files / "good.csv"
    good.write_text(iv_csv(good_iv_rows()))
    assert main(["devices", "fit", str(good), "-o", str(out / "good.json")]) == 0
    (out / "good.json").unlink()
    messages = {}
    for name, data in bad_iv_files().items():
        path = files / name
        path.write_bytes(data)
        messages[name] = run_bad(
            ["devices", "fit", str(path), "-o", str(out / "model.json")], out, capsys
        )
        assert str(path) in messages[name]
    assert "far above any compliance current" in messages["current-1e300.csv"]
    assert "zip bomb" in messages["zip-bomb.xlsx"]
    assert "infinite" in messages["inf.csv"]
    assert "corrupt .xlsx worksheet" in messages["xml-broken.xlsx"]


def test_bad_sheets_and_iv_files_through_ingest(
    campaign: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, sheets = campaign
    first = next(sheets.glob("*.csv")).read_text().splitlines()[1].split(",")[0]
    results = tmp_path / "results"
    results.mkdir()
    header = "experiment,x,usability\n"
    bad = {
        "unknown-column.csv": b"experiment,speed\nE0001,1\n",
        "metric-nan.csv": f"{header}{first},,nan\n".encode(),
        "metric-inf.csv": f"{header}{first},,inf\n".encode(),
        "metric-text.csv": f"{header}{first},,good\n".encode(),
        "x-inf.csv": f"{header},inf,0.5\n".encode(),
        "x-outside.csv": f"{header},7,0.5\n".encode(),
        "unknown-id.csv": f"{header}E9999,,0.5\n".encode(),
        "repeated-id.csv": f"{header}{first},,0.5\n{first},,0.4\n".encode(),
        "latin1.csv": f"{header}{first},,0.5\n\xb5".encode("latin-1"),
        "iv-bad.csv": f"experiment,iv_file\n{first},{first}.csv\n".encode(),
    }
    for name, data in bad_iv_files().items():
        if name.endswith(".xlsx"):
            bad[f"{first}.xlsx" if name == "zip-bomb.xlsx" else name] = data
    (results / f"{first}.csv").write_text(iv_csv(good_iv_rows(), scale=1e300))
    for name, data in bad.items():
        path = results / name
        path.write_bytes(data)
        run_bad(["fab", "ingest", str(path), "--store", str(store)], results, capsys, sheets)
    assert main(["fab", "status", "--store", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["measured"] == 0


# ---- weights that no int8 model can hold -------------------------------------------------
@pytest.mark.parametrize(
    ("layer", "what", "value", "message"),
    [
        (0, "bias", np.inf, "layer 0 bias: not finite"),
        (0, "bias", 1e30, "beyond int32"),
        (0, "weight", np.nan, "layer 0 weights: not finite"),
        (0, "weight", 1e300, "overflow"),
    ],
)
def test_quantize_refuses_extreme_weights(
    layer: int, what: str, value: float, message: str
) -> None:
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(4, 5)), rng.normal(size=(5, 3))]
    biases = [np.zeros(5), np.zeros(3)]
    if what == "bias":
        biases[layer][:] = value
    else:
        weights[layer][0, 0] = value
        weights[1] *= 1e300 if value == 1e300 else 1
    with pytest.raises(QuantizedModelError, match=message):
        quantize_mlp(weights, biases, rng.random((20, 4)), 1 / 255)
