"""The ``xbar`` command line: the entry point and the top-level parser; each command's
parser and run live in its own module here. (The board's own entry point is
``firmware/main.py``: the same idea on the other side of the link.)

Exit codes: 0 success, 1 the job failed (bad data, a board error), 2 bad usage, 130
interrupted (Ctrl-C), each failure with one `xbar: error:` line and no traceback
(XBAR_DEBUG=1 shows the traceback of an unexpected error).
"""

from __future__ import annotations

import os
import signal
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130  # 130: 128 + SIGINT


def _interrupted_early(signum: int, frame: object) -> None:
    """Ctrl-C while the libraries load or the line is parsed: nothing has started, so
    leave at once with one line (an interrupted import can surface as any exception)."""
    sys.stderr.write("xbar: interrupted\n")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_early)

import argparse  # noqa: E402 - after the early Ctrl-C handler, on purpose
import difflib  # noqa: E402
import importlib  # noqa: E402
import re  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

from xbar.training.errors import UsageError, XbarError  # noqa: E402

# One module per command, named as the command, in the order `xbar --help` lists them.
COMMANDS = (
    "xbar.host.cli.devices",
    "xbar.host.cli.demo",
    "xbar.host.cli.ports",
    "xbar.host.cli.emulate",
    "xbar.host.cli.flash",
    "xbar.host.cli.repl",
    "xbar.host.cli.program",
    "xbar.host.cli.infer",
    "xbar.host.cli.characterize",
    "xbar.host.cli.bench",
    "xbar.host.cli.train",
    "xbar.host.cli.fab",
    "xbar.host.cli.model",
)

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped command or choice (exit 2 as ever)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        m = _INVALID_CHOICE.search(message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
        super().error(message)


class _Version(argparse.Action):
    """`--version`, looked up only when asked (importlib.metadata costs ~30 ms a start)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import version

        parser.exit(message=f"xbar {version('xbar')}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command`` (a command's name) one with that command alone,
    so that a command imports its own module and libraries and not every other's
    (`xbar fab status` started in 0.34 s of CPU with all of them)."""
    parser = Parser(
        prog="xbar",
        description="Hardware-in-the-loop toolkit for analog deep learning on perovskite "
        "memristor crossbars.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        if command is None or _name(module) == command:
            importlib.import_module(module).add_parser(commands)
    return parser


def _name(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def _parser_for(argv: Sequence[str] | None) -> argparse.ArgumentParser:
    """The parser for a command line: a line that starts with a command's name needs that
    command only; any other (`--help`, a mistyped command) gets every command, so the
    listing and "did you mean" see them all."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] in {_name(m) for m in COMMANDS}:
        return build_parser(words[0])
    return build_parser()


def _resolve_port(args: argparse.Namespace) -> None:
    """`--port auto`: the single board that answers (xbar; for `flash`, any MicroPython)."""
    if getattr(args, "port", None) != "auto":
        return
    from xbar.host import ports

    want = ports.MICROPYTHON if args.command == "flash" else ports.XBAR
    args.port = ports.pick(want)
    print(f"--port auto: {args.port}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line `argv` (None: this process's own, and then its progress bars
    become lines where stderr is no terminal; a caller passing argv keeps its tqdm)."""
    try:
        if argv is None:
            from xbar.host.console import logs_without_bars

            logs_without_bars()  # before the command modules import tqdm
        args = _parser_for(argv).parse_args(argv)
        # From here Ctrl-C raises KeyboardInterrupt: the job may save what it has.
        if signal.getsignal(signal.SIGINT) is _interrupted_early:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _resolve_port(args)
        return int(args.func(args))
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK
    except XbarError as exc:
        print(f"xbar: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyError, OSError) as exc:  # an unknown name, a file that cannot be read
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"xbar: error: {message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # the shell's convention for Ctrl-C; the job said what it kept
        print("xbar: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        if os.environ.get("XBAR_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"xbar: error: unexpected {type(exc).__name__}: {first} "
            "(XBAR_DEBUG=1 shows where; please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILED


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError", "main"]

if __name__ == "__main__":
    sys.exit(main())
