"""The `xbar flash` command: parser and run; the logic is xbar.host.flash."""

from __future__ import annotations

import argparse

from xbar.host.cli import names
from xbar.host.flash import flash_board


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "flash",
        help="copy the firmware to a MicroPython board (raw REPL) and verify it",
        description="Write this xbar's firmware to a MicroPython board through its raw REPL "
        "(.mpy when the board's bytecode version matches mpy-cross), verify every file by "
        "SHA-256 and soft-reset into the firmware.",
    )
    p.add_argument(
        "--port", required=True, help="serial device or pty (e.g. /dev/ttyACM0), or auto"
    )
    p.add_argument(
        "--profile",
        type=names.profile,
        help="board profile written as xbar_profile.py (default: leave the board's own)",
    )
    p.add_argument("--source", action="store_true", help="copy .py sources, never .mpy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    flash_board(args.port, args.profile, args.source)
    return 0
