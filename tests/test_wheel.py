"""The wheel a user installs: built by `pip wheel`, installed (not editable) into a fresh
virtual environment, run from outside the source tree.

The environment borrows this test environment's third-party packages through a path
entry (never its xbar), so only the wheel's own files can answer `import xbar`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a clean checkout holds; build outputs and caches stay out of the copy.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "out", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel . --no-deps` on a copy of the source tree (the checkout stays untouched)."""
    src = tmp_path_factory.mktemp("src") / "xbar"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(out)],
        cwd=src,
        check=True,
    )
    (built,) = out.glob("xbar-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its bin/ folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run([*pip, "install", "-q", "--no-deps", str(wheel)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Dependencies from this environment; a plain path line, so its .pth files (and with
    # them the editable xbar) are not processed.
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_wheel_holds_data_spec_and_every_firmware_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in (
        "xbar/training/devices/data/devices.npz",
        "xbar/training/devices/data/devices.csv",
        "xbar/training/fab/campaigns/perovskite.toml",
    ):
        assert data in names, f"{data} missing from {wheel.name}"
    firmware = {f"xbar/firmware/{p.name}" for p in (ROOT / "firmware").glob("*.py")}
    shims = {f"xbar/emulator/mpy/{p.name}" for p in (ROOT / "emulator" / "mpy").glob("*.py")}
    assert firmware and firmware <= names, sorted(firmware - names)
    assert shims and shims <= names, sorted(shims - names)
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)


def test_installed_wheel_runs_without_the_source_tree(installed: Path, tmp_path: Path) -> None:
    where = _run(
        installed, tmp_path, "python", "-c", "import xbar.host, sys; print(xbar.host.__file__)"
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout
    assert not Path(where.stdout.strip()).resolve().is_relative_to(ROOT)

    devices = _run(installed, tmp_path, "xbar", "devices", "list")
    assert devices.returncode == 0, devices.stderr
    assert sum("pvk-" in line for line in devices.stdout.splitlines()) == 43

    selftest = _run(installed, tmp_path, "xbar", "emulate", "--selftest")
    assert selftest.returncode == 0, selftest.stderr
    assert "firmware bytecodes charged" in selftest.stdout, selftest.stdout


def test_no_links_in_the_repository() -> None:
    """Every package folder is real: no symlink is tracked (mode 120000)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    staged = subprocess.run(
        ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert [line for line in staged.splitlines() if line.startswith("120000")] == []
