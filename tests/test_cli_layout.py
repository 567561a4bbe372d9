"""Where the CLI lives: one module per command in host/cli (that logic modules never import
argparse or the CLI is an import-linter contract), one error base; and `xbar fab init`
with a bundled spec's name."""

from __future__ import annotations

from pathlib import Path

import pytest
import xbar.host
from xbar.host.cli.main import COMMANDS, main
from xbar.training.errors import UsageError, XbarError
from xbar.training.fab.perovskite import SPEC_PATH

HOST = Path(xbar.host.__file__).parent


def test_every_command_module_is_registered() -> None:
    # A command module is one with a parser; the others (names, output) are its helpers.
    modules = {p.stem for p in (HOST / "cli").glob("*.py") if "def add_parser(" in p.read_text()}
    assert modules >= {"program", "infer", "fab"}
    assert {m.rsplit(".", 1)[-1] for m in COMMANDS} == modules


def test_error_base_carries_the_exit_code() -> None:
    assert XbarError.exit_code == 1 and UsageError.exit_code == 2


def test_fab_init_takes_a_bundled_spec_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fab", "init", "perovskite"]) == 0
    assert "started" in capsys.readouterr().out
    assert (tmp_path / "perovskite.sqlite").is_file()  # here, not in the installed package
    assert main(["fab", "init", "perovskite"]) == 0
    assert "reopened" in capsys.readouterr().out
    # A path keeps its rule: the store beside the spec.
    spec = tmp_path / "specs" / "mine.toml"
    spec.parent.mkdir()
    spec.write_text(SPEC_PATH.read_text())
    assert main(["fab", "init", str(spec)]) == 0
    assert (tmp_path / "specs" / "mine.sqlite").is_file()
    assert main(["fab", "init", "no-such-campaign"]) == 1
    assert "no-such-campaign: no such spec file" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    import xbar.host.cli.main as cli

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=interrupted)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 130
    assert capsys.readouterr().err == "xbar: interrupted\n"


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    # Each command is registered under its module's name, which is how a line that starts
    # with a command's name gets a parser with that command alone (build_parser(name)).
    import argparse
    import subprocess
    import sys

    from xbar.host.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [m.rsplit(".", 1)[-1] for m in COMMANDS]
    store = tmp_path / "c.sqlite"
    code = (
        "import sys\nfrom xbar.host.cli.main import main\n"
        f"assert main(['fab', 'init', {str(SPEC_PATH)!r}, '--store', {str(store)!r}]) == 0\n"
        f"assert main(['fab', 'status', '--store', {str(store)!r}]) == 0\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())  # fmt: skip
    assert "xbar.host.cli.fab" in loaded
    others = {m for m in COMMANDS if not m.endswith(".fab")}
    heavy = {"torch", "nevergrad", "sklearn", "matplotlib", "dask", "scipy"}
    assert not loaded & (others | heavy)
