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
