"""Messages that are true: every usage mistake on every subcommand exits 2 with one error
line and no traceback; every `xbar ...` command and --option a message or docstring names
exists in the parser; typos get "did you mean"."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from xbar.host.cli import names
from xbar.host.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
XBAR = str(Path(sys.executable).parent / "xbar")


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _leaves(
    p: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = _subparsers(p)
    if not subs:
        yield path, p
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


LEAVES = list(_leaves(build_parser()))


def _required_args(p: argparse.ArgumentParser) -> list[str]:
    """A minimal command line that satisfies the parser (values that parse)."""
    argv: list[str] = []
    for a in p._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        if a.option_strings and (a.required or False):
            argv += [a.option_strings[0], _value(a)]
        elif not a.option_strings and a.nargs not in ("?", "*"):
            argv.append(_value(a))
    for group in p._mutually_exclusive_groups:
        if group.required:
            first = group._group_actions[0]
            argv += [first.option_strings[0], _value(first)]
    return argv


def _value(a: argparse.Action) -> str:
    if a.choices:
        return str(next(iter(a.choices)))
    if a.type in (int, names.positive_int):
        return "3"
    if a.type in (float, names.positive_float):
        return "1.5"
    if a.type is names.device:
        return "pvk-best"
    if a.type is names.profile:
        return "xbar-10x10"
    return "x"


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("path", "parser"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_bad_argument_is_a_usage_error(
    path: tuple[str, ...], parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [*path, *_required_args(parser)]
    cases = [[*base, "--no-such-option"]]
    for a in parser._actions:
        if not a.option_strings or isinstance(a, argparse._HelpAction):
            continue
        if a.type in (int, float, names.positive_int, names.positive_float):
            cases.append([*base, a.option_strings[0], "not-a-number"])
        if a.type in (names.positive_int, names.positive_float):
            cases.append([*base, a.option_strings[0], "0"])
        if a.choices:
            cases.append([*base, a.option_strings[0], "no-such-choice"])
        if a.type in (names.device, names.profile):
            cases.append([*base, a.option_strings[0], "zzz-typo"])
        if a.required:
            cases.append([x for x in base if x not in (a.option_strings[0], _value(a))])
    for argv in cases:
        code, err = _exit(argv, capsys)
        assert code == 2, (argv, err)
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and "Traceback" not in err, (argv, err)


def test_typos_of_commands_get_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, want in [
        (["devics"], "did you mean 'devices'?"),
        (["fab", "sugest"], "did you mean 'suggest'?"),
        (["devices", "show", "pvk-bets"], "did you mean 'pvk-best'?"),
        (["emulate", "--profile", "xbar-10x01"], "did you mean 'xbar-10x10'?"),
        (["bench", "enrgy"], "did you mean 'energy'?"),
    ]:
        code, err = _exit(argv, capsys)
        assert code == 2 and want in err, (argv, err)


def test_usage_mistakes_found_after_parsing_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, want in [
        (["emulate", "--blank"], "--blank needs --micropython"),
        (["emulate", "--flash", str(tmp_path)], "--flash needs --micropython"),
        (["emulate", "--ber", "3", "--selftest"], "--ber 3"),
        (["emulate", "--program"], "--program needs --selftest"),
    ]:
        code, err = _exit(argv, capsys)
        assert code == 2 and want in err and len(err.strip().splitlines()) == 1, (argv, err)


def _strings(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            parts = (v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            yield node.lineno, "".join(str(p) for p in parts)


def _suggestions() -> list[tuple[str, int, str]]:
    found = []
    for root in ("host", "training", "emulator"):
        for path in sorted((ROOT / root).rglob("*.py")):
            for line, text in _strings(path):
                for m in re.finditer(r"`xbar ([^`]*)`", text):
                    found.append((f"{path.relative_to(ROOT)}:{line}", line, m.group(1)))
    return found


def test_every_command_a_message_names_exists() -> None:
    """Each `xbar ...` in a message or docstring: its subcommands and options exist."""
    parser = build_parser()
    suggestions = _suggestions()
    assert len(suggestions) > 30  # the scan sees the messages
    wrong = []
    for where, _, words in suggestions:
        p = parser
        for word in words.split():
            subs = _subparsers(p)
            if word.startswith("--"):
                option = word.split("=")[0]
                if option not in {o for a in p._actions for o in a.option_strings}:
                    wrong.append(f"{where}: `xbar {words}`: no option {option}")
            elif re.fullmatch(r"[a-z][a-z-]*", word) and subs:
                if word not in subs:
                    wrong.append(f"{where}: `xbar {words}`: no command {word}")
                    break
                p = subs[word]
    assert not wrong, "\n".join(wrong)


def test_every_option_a_message_names_exists() -> None:
    """Each --option named in the logic modules' strings exists on some command."""
    parser = build_parser()
    options: set[str] = set()
    todo = [parser]
    while todo:
        p = todo.pop()
        options |= {o for a in p._actions for o in a.option_strings}
        todo += _subparsers(p).values()
    wrong = []
    for root in ("host", "training", "emulator"):
        for path in sorted((ROOT / root).rglob("*.py")):
            if "cli" in path.parts:
                continue
            for line, text in _strings(path):
                for m in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]+)", text):
                    if m.group(1) not in options:
                        wrong.append(f"{path.relative_to(ROOT)}:{line}: {m.group(1)}")
    assert not wrong, "\n".join(wrong)


def test_ctrl_c_while_loading_is_one_line_and_130(tmp_path: Path) -> None:
    """SIGINT in the first moments (libraries loading) or while waiting for HELLO from a
    board that does not answer (a bare pty)."""
    import os
    import signal
    import time

    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        for delay in (0.2, 2.5):
            proc = subprocess.Popen(
                [
                    XBAR,
                    "characterize",
                    "--port",
                    port,
                    "--out",
                    str(tmp_path / "c"),
                    "--timeout=30",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                # As from a shell: a test worker may ignore SIGINT, and an ignored signal
                # is inherited (a process started that way is meant to be deaf to Ctrl-C).
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 130, (delay, err)
            assert err == "xbar: interrupted\n", (delay, err)
            assert not (tmp_path / "c").exists()
    finally:
        os.close(master)
        os.close(slave)


def test_every_command_in_the_readme_exists() -> None:
    """The README's command lines (in code blocks, `xbar ...` or `$ xbar ...`) name
    commands and options the parser has."""
    parser = build_parser()
    wrong, seen = [], 0
    in_block = False
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        text = line.strip().removeprefix("$ ")
        if not in_block or not text.startswith("xbar "):
            continue
        seen += 1
        p = parser
        for alternatives in text.split("#")[0].split()[1:]:
            word = alternatives.split("|")[0]  # `status|report|export`: the first stands
            subs = _subparsers(p)
            if word.startswith("--"):
                option = word.split("=")[0].strip("[]")
                if option not in {o for a in p._actions for o in a.option_strings}:
                    wrong.append(f"README.md:{number}: {option}")
            elif subs and re.fullmatch(r"[a-z][a-z-]*", word):
                if word not in subs:
                    wrong.append(f"README.md:{number}: no command {word}")
                    break
                p = subs[word]
    assert seen > 20 and not wrong, "\n".join(wrong)
