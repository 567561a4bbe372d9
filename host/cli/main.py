"""The ``xbar`` command line: the entry point and the top-level parser; each command's
parser and run live in its own module here. (The board's own entry point is
``firmware/main.py``: the same idea on the other side of the link.)

Exit codes: 0 success, 1 the job failed (bad data, a board error), 2 bad usage, 130
interrupted (Ctrl-C), each failure with one `xbar: error:` line and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

from xbar.training.errors import XbarError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130  # 130: 128 + SIGINT

# One module per command, in the order `xbar --help` lists them.
COMMANDS = (
    "xbar.host.cli.devices",
    "xbar.host.cli.demo",
    "xbar.host.cli.emulate",
    "xbar.host.cli.flash",
    "xbar.host.cli.program",
    "xbar.host.cli.infer",
    "xbar.host.cli.characterize",
    "xbar.host.cli.bench",
    "xbar.host.cli.train",
    "xbar.host.cli.fab",
    "xbar.host.cli.model",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xbar",
        description="Hardware-in-the-loop toolkit for analog deep learning on perovskite "
        "memristor crossbars.",
    )
    parser.add_argument("--version", action="version", version=f"xbar {version('xbar')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        importlib.import_module(module).add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
