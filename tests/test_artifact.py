"""The model artifact (.xbar): export, load, what it holds, how it refuses bad files, and
that its crossbar plan runs through the firmware on the emulated board."""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_tflite_export import digits_layers
from xbar.firmware.profiles import DAC_LSB
from xbar.training.artifact import (
    FORMAT_VERSION,
    MEMBERS,
    WINDOW,
    ArtifactError,
    ModelArtifact,
    export_artifact,
    load_artifact,
)
from xbar.training.devices.device_model import DeviceModel
from xbar.training.plan import CrossbarModel, PlanError, level_steps, snap_weights

PROFILE = "xbar-5x64x64"


@pytest.fixture(scope="module")
def device() -> DeviceModel:
    return DeviceModel.preset("pvk-best")


def export(path: Path, device: DeviceModel, **kwargs: Any) -> ModelArtifact:
    layers, data = digits_layers()
    kwargs.setdefault("profile", PROFILE)
    kwargs.setdefault(
        "metadata", {"task": "digits", "alpha": [[0.1, 0.2], [0.0, 0.3]], "clean_accuracy": 0.9}
    )
    return export_artifact(
        path,
        layers,
        data["x_train"],
        input_scale=1 / 255,
        device=device,
        test=(data["x_test"], data["y_test"]),
        **kwargs,
    )


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, device: DeviceModel) -> ModelArtifact:
    return export(tmp_path_factory.mktemp("art") / "digits.xbar", device)


def test_round_trip(artifact: ModelArtifact, device: DeviceModel) -> None:
    assert artifact.path is not None
    again = load_artifact(artifact.path)
    assert again.quantized.to_dict() == artifact.quantized.to_dict()
    assert again.plan is not None and artifact.plan is not None
    assert again.plan.to_blob() == artifact.plan.to_blob()
    assert again.device == device
    assert again.tflite == artifact.tflite
    assert again.geometry == {"profile": PROFILE, "arrays": 5, "rows": 64, "cols": 64}
    meta = again.metadata
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["task"] == "digits" and meta["alpha"] == [[0.1, 0.2], [0.0, 0.3]]
    assert set(meta["checksums"]) == set(MEMBERS[:-1])
    assert {"xbar", "numpy", "ai-edge-litert"} <= set(meta["versions"])
    with zipfile.ZipFile(artifact.path) as z:
        assert z.namelist() == list(MEMBERS)


def test_tflite_reference_agrees_with_integer_model(artifact: ModelArtifact) -> None:
    _, data = digits_layers()
    check = artifact.metadata["tflite_check"]["test"]
    assert check["n"] == len(data["y_test"])
    assert check["predictions_equal"] >= 0.99
    assert check["int8_accuracy"] > 0.85
    floats = artifact.run_tflite(data["x_test"])
    codes = artifact.run_tflite(artifact.quantized.quantize_input(data["x_test"]).astype(np.uint8))
    assert np.array_equal(floats, codes)
    ref = artifact.quantized.forward(artifact.quantized.quantize_input(data["x_test"]))
    assert np.mean(floats.argmax(1) == ref.argmax(1)) >= 0.99


def test_targets_sit_on_the_device_levels(artifact: ModelArtifact, device: DeviceModel) -> None:
    plan = artifact.plan
    assert plan is not None and artifact.mapping["levels"] == "snapped"
    g_unit = plan.layers[0].g_unit
    levels = np.asarray(device.level_conductances)
    targets = np.array([g for cells in plan.targets().values() for g in cells.values()])
    top = device.g_min + WINDOW * (device.g_max - device.g_min)  # weight 127: the window's top
    gap = np.abs(targets[:, None] - np.append(levels, top)[None, :]).min(axis=1)
    assert gap.max() <= g_unit / 2 * (1 + 1e-9)
    assert plan.g_min == device.g_min and artifact.mapping["window"] == WINDOW
    assert g_unit == pytest.approx((top - device.g_min) / 127)
    assert targets.max() <= top * (1 + 1e-9) and WINDOW < 1
    # the read voltage is the device's own, so 255 input steps stay below it
    assert 255 * plan.layers[0].k * DAC_LSB <= device.read_voltage


def test_linear_mapping_keeps_the_quantised_weights(tmp_path: Path, device: DeviceModel) -> None:
    art = export(tmp_path / "linear.xbar", device, snap_levels=False)
    assert art.mapping["levels"] == "linear" and art.plan is not None
    mags = np.unique(np.abs(np.concatenate([lay.weights.ravel() for lay in art.quantized.layers])))
    assert len(mags) > len(art.mapping["level_steps"])  # snapping would have removed some


def test_level_snapping() -> None:
    steps = level_steps([1e-8, 2e-8, 5e-8, 1.28e-6], g_min=1e-8, g_max=1.28e-6)
    assert list(steps) == [0, 1, 4, 127]
    w = np.array([[-127, -3, -2, 0, 1, 2, 3, 60, 127]])
    assert snap_weights(w, steps).tolist() == [[-127, -4, -1, 0, 1, 1, 4, 4, 127]]


def test_geometry_check(artifact: ModelArtifact) -> None:
    assert artifact.check_geometry(5, 64, 64) is artifact.plan
    with pytest.raises(ArtifactError, match=r"planned for xbar-5x64x64 .* --profile"):
        artifact.check_geometry(1, 10, 10, board="xbar-10x10")


def test_plan_json_round_trip_and_validation(artifact: ModelArtifact) -> None:
    assert artifact.plan is not None
    data = json.loads(json.dumps(artifact.plan.to_dict()))
    assert CrossbarModel.from_dict(data).to_blob() == artifact.plan.to_blob()
    bad = json.loads(json.dumps(data))
    bad["layers"][1]["k"] = 0
    with pytest.raises(PlanError, match="plan layer 1: k = 0"):
        CrossbarModel.from_dict(bad)
    bad = json.loads(json.dumps(data))
    del bad["layers"][0]["tiles"]
    with pytest.raises(PlanError, match="plan layer 0: missing field 'tiles'"):
        CrossbarModel.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["layers"][0]["tiles"][1] = bad["layers"][0]["tiles"][0]
    with pytest.raises(PlanError, match="overlaps"):
        CrossbarModel.from_dict(bad).check_geometry(5, 64, 64)


# ---- bad files ---------------------------------------------------------------------------
def rewrite(src: Path, dst: Path, change: dict[str, bytes | None]) -> Path:
    """Copy an artifact, replacing (or dropping, with None) some members."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for name, data in change.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    dst.write_bytes(buf.getvalue())
    return dst


def metadata_with(artifact: ModelArtifact, **changes: Any) -> bytes:
    return json.dumps({**artifact.metadata, **changes}).encode()


def bad_files(artifact: ModelArtifact, tmp: Path) -> dict[str, tuple[Path, str]]:
    assert artifact.path is not None
    src, raw = artifact.path, artifact.path.read_bytes()
    (tmp / "truncated.xbar").write_bytes(raw[: len(raw) // 2])
    (tmp / "text.xbar").write_text("hello")
    quantized = json.loads(zipfile.ZipFile(src).read("quantized.json"))
    quantized["layers"][0]["bias"][0] += 1
    return {
        "truncated": (tmp / "truncated.xbar", "truncated or not an xbar model artifact"),
        "not a zip": (tmp / "text.xbar", "not a zip archive"),
        "missing": (tmp / "nope.xbar", "no such file"),
        "foreign zip": (
            rewrite(src, tmp / "foreign.xbar", {"metadata.json": None}),
            "not an xbar model artifact",
        ),
        "foreign format": (
            rewrite(
                src, tmp / "format.xbar", {"metadata.json": metadata_with(artifact, format="onnx")}
            ),
            "not an xbar model artifact",
        ),
        "newer": (
            rewrite(
                src,
                tmp / "newer.xbar",
                {
                    "plan.json": None,
                    "metadata.json": metadata_with(artifact, format_version=FORMAT_VERSION + 1),
                },
            ),
            "built by a newer xbar.*upgrade",
        ),
        "tampered": (
            rewrite(src, tmp / "tampered.xbar", {"quantized.json": json.dumps(quantized).encode()}),
            "quantized.json is corrupt",
        ),
        "lost member": (rewrite(src, tmp / "lost.xbar", {"plan.json": None}), "missing plan.json"),
        "bad metadata": (
            rewrite(src, tmp / "meta.xbar", {"metadata.json": b"{"}),
            "metadata.json is not JSON",
        ),
    }


def test_bad_files_give_one_line_errors(artifact: ModelArtifact, tmp_path: Path) -> None:
    for what, (path, message) in bad_files(artifact, tmp_path).items():
        with pytest.raises(ArtifactError, match=message) as info:
            load_artifact(path)
        text = str(info.value)
        assert "\n" not in text and str(path) in text, what


def test_consistent_checksums_do_not_hide_a_mismatch(
    artifact: ModelArtifact, tmp_path: Path
) -> None:
    """A re-checksummed but altered integer model is caught by the cross-checks."""
    import hashlib

    assert artifact.path is not None
    quantized = artifact.quantized.to_dict()
    quantized["layers"][1]["weights"][0][0] = -quantized["layers"][1]["weights"][0][0] or 5
    raw = json.dumps(quantized).encode()
    sums = {**artifact.metadata["checksums"], "quantized.json": hashlib.sha256(raw).hexdigest()}
    changes = {"quantized.json": raw, "metadata.json": metadata_with(artifact, checksums=sums)}
    path = rewrite(artifact.path, tmp_path / "x.xbar", changes)
    with pytest.raises(ArtifactError, match="plan layer 1 differs from the integer model"):
        load_artifact(path)


def test_bad_export_input_changes_nothing(
    artifact: ModelArtifact, tmp_path: Path, device: DeviceModel
) -> None:
    assert artifact.path is not None
    path = tmp_path / "kept.xbar"
    path.write_bytes(artifact.path.read_bytes())
    before = path.read_bytes()
    layers, data = digits_layers()
    cases = [
        (dict(profile="xbar-10x10"), "choose a larger profile"),
        (dict(profile="xbar-huge"), "unknown board profile"),
        (dict(metadata={"checksums": 1}), "reserved"),
        (dict(metadata={"noisy_accuracy": float("nan")}), "not plain JSON"),
        (dict(v_read=2.0), r"v_read = 2.0 V: the firmware reads at 0 < V <= 0.5 V"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ArtifactError, match=message):
            export(path, device, **kwargs)
    with pytest.raises(ArtifactError, match="layer 1: takes 64 inputs, layer 0 gives 10"):
        export_artifact(
            path,
            [(np.ones((64, 10)), np.ones(10)), layers[1]],
            data["x_train"],
            input_scale=1 / 255,
            device=device,
            profile=PROFILE,
        )
    with pytest.raises(ArtifactError, match=r"test: inputs \(450, 64\) and labels \(3,\)"):
        export_artifact(
            path,
            layers,
            data["x_train"],
            input_scale=1 / 255,
            device=device,
            profile=PROFILE,
            test=(data["x_test"], np.ones(3)),
        )
    with pytest.raises(ArtifactError, match=r"calibration: shape \(3, 5\)"):
        export_artifact(
            path, layers, np.ones((3, 5)), input_scale=1 / 255, device=device, profile=PROFILE
        )
    assert path.read_bytes() == before
    (tmp_path / "folder.xbar").mkdir()
    with pytest.raises(ArtifactError, match=r"folder\.xbar: cannot write"):
        export(tmp_path / "folder.xbar", device)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.xbar", "kept.xbar"]


# ---- on the board ------------------------------------------------------------------------
def test_plan_runs_through_the_firmware(tmp_path: Path) -> None:
    """A small artifact's plan, placed on the emulated board (noise off), LOADed into the
    real firmware: every INFER output within one LSB of the integer model."""
    pytest.importorskip("xbar.emulator.board_model")
    from xbar.emulator.board_model import BoardModel
    from xbar.emulator.board_profile import NoiseConfig
    from xbar.emulator.runtime import InProcessBoard
    from xbar.host.board import Board

    rng = np.random.default_rng(2)
    sizes = (24, 10, 6)
    layers = [
        (rng.normal(0, 1 / np.sqrt(a), (a, b)), rng.normal(0, 0.1, b))
        for a, b in itertools.pairwise(sizes)
    ]
    x = rng.uniform(0, 1, (100, sizes[0]))
    profile = "xbar-1x32x32"
    board_model = BoardModel(profile, seed=2, noise=NoiseConfig.off())
    device = board_model.device
    art = export_artifact(
        tmp_path / "small.xbar", layers, x, input_scale=1 / 255, device=device, profile=profile
    )
    plan = art.check_geometry(1, 32, 32)
    board_model.place(plan.targets())

    def entry(ns: Any, reader: Any, writer: Any) -> None:
        ns.load("app").run(reader, writer, profile=profile)

    xs = art.quantized.quantize_input(x[:6])
    with InProcessBoard(profile, 2, model=board_model, entry=entry) as emu:
        board = Board(emu.port, timeout=300)
        try:
            board.load(plan, program=False)
            out = np.asarray(board.infer_stream([[int(v) for v in row] for row in xs]))
        finally:
            board.close()
    assert len(np.unique(out)) > 10  # not a clamped constant
    assert np.abs(out - art.quantized.forward(xs)).max() <= 1
    assert np.abs(out - art.run_tflite(xs)).max() <= 1


# ---- CLI ---------------------------------------------------------------------------------
def test_cli_show_and_check(
    artifact: ModelArtifact, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xbar.host.cli.main import main

    assert main(["model", "show", str(artifact.path)]) == 0
    out = capsys.readouterr().out
    assert "pvk-best" in out and "xbar-5x64x64" in out and "snapped" in out
    assert main(["model", "check", str(artifact.path)]) == 0
    out = capsys.readouterr().out
    assert "predictions equal 100.00%" in out and "digits test set" in out
    _, data = digits_layers()
    np.save(tmp_path / "x.npy", data["x_test"][:40])
    np.save(tmp_path / "y.npy", data["y_test"][:40])
    args = [
        "model",
        "check",
        str(artifact.path),
        "--inputs",
        str(tmp_path / "x.npy"),
        "--labels",
        str(tmp_path / "y.npy"),
    ]
    assert main(args) == 0
    assert "on 40 inputs" in capsys.readouterr().out
    codes = artifact.quantized.quantize_input(data["x_test"][:40])
    np.savetxt(tmp_path / "codes.csv", codes, delimiter=",", fmt="%d")
    args = [
        "model",
        "check",
        str(artifact.path),
        "--inputs",
        str(tmp_path / "codes.csv"),
        "--codes",
    ]
    assert main(args) == 0
    assert "predictions equal 100.00%" in capsys.readouterr().out
    np.savetxt(tmp_path / "bad.csv", codes + 300, delimiter=",", fmt="%d")
    assert main([*args[:3], "--inputs", str(tmp_path / "bad.csv"), "--codes"]) == 1
    assert "--codes inputs must be integers 0..255" in capsys.readouterr().err
    (tmp_path / "bad.xbar").write_bytes(b"PK\x03\x04 truncated")
    assert main(["model", "show", str(tmp_path / "bad.xbar")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated" in err


@pytest.mark.parametrize("member", ["quantized.json", "plan.json", "device.json"])
def test_malformed_members_are_artifact_errors(
    artifact: ModelArtifact, tmp_path: Path, member: str
) -> None:
    """Any JSON in a member, checksummed as if genuine: the wrong shape is refused with
    ArtifactError, a changed field is either refused so or harmless; nothing else escapes."""
    import hashlib

    assert artifact.path is not None
    original = json.loads(zipfile.ZipFile(artifact.path).read(member))
    shapes: list[Any] = [[], "x", 1, {}, {"layers": "x"}, {"layers": [None]}]
    fields = [{**original, key: bad} for key in original for bad in (None, "x", [1], -1)]

    def load(i: int, value: Any) -> None:
        raw = json.dumps(value).encode()
        sums = {**artifact.metadata["checksums"], member: hashlib.sha256(raw).hexdigest()}
        changes = {member: raw, "metadata.json": metadata_with(artifact, checksums=sums)}
        assert artifact.path is not None
        load_artifact(rewrite(artifact.path, tmp_path / f"{i}.xbar", changes))

    for i, value in enumerate(shapes):
        with pytest.raises(ArtifactError):
            load(i, value)
    refused = 0
    for i, value in enumerate(fields, start=len(shapes)):
        try:
            load(i, value)
        except ArtifactError as exc:
            assert "\n" not in str(exc)
            refused += 1
    assert refused >= len(fields) // 2
