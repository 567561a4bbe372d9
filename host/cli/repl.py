"""The `xbar repl` command: stop the firmware on a board so it is at its MicroPython REPL
(for mpremote, Thonny, a terminal); the logic is xbar.host.ports."""

from __future__ import annotations

import argparse

from xbar.host.cli import names


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "repl",
        help="return a board running xbar firmware to its MicroPython REPL",
        description="Stop the xbar firmware (lines grounded) so the board is at its "
        "MicroPython REPL: `mpremote connect PORT ...` works, files can be listed and "
        "edited. A soft reset (Ctrl-D at the >>> prompt) or a power cycle starts the "
        "firmware again.",
    )
    p.add_argument("--port", required=True, help="device or pty (or auto)")
    p.add_argument(
        "--timeout", type=names.positive_float, default=10.0, help="link timeout, s (default 10)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.host.ports import to_repl

    print(f"{args.port}: {to_repl(args.port, args.timeout)}")
    return 0
