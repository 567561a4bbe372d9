"""`xbar emulate`: serve an emulated board on a serial port, or run its self-test.

    xbar emulate [--profile P] [--seed S] [--micropython] [--flash DIR]
    xbar emulate --selftest [--micropython]

Serving prints the port path (a pty any serial client opens: pyserial, mpremote,
`screen`) and runs until Ctrl-C. In-process mode runs the firmware under CPython; with
--micropython the real MicroPython interpreter runs it and the board answers the raw
REPL, so `mpremote connect PORT fs cp …` flashes it. The same boards are reachable
from Python as `emu://PROFILE?seed=N[&micropython=1]` URLs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xbar.emulator.runtime import EmulatedBoard

EXIT_OK = 0
EXIT_FAILED = 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `emulate` on the `xbar` command's subparsers."""
    p = subparsers.add_parser(
        "emulate", help="serve an emulated board on a serial port (pty)",
        description="Serve an emulated xbar board on a pty until Ctrl-C, or self-test it.",
    )  # fmt: skip
    configure(p)
    p.set_defaults(func=run)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="xbar-10x10", help="board profile (default: xbar-10x10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the board's devices and noise")
    p.add_argument(
        "--micropython", action="store_true",
        help="run the firmware under the real MicroPython interpreter (raw REPL, flashing)",
    )  # fmt: skip
    p.add_argument(
        "--flash", metavar="DIR",
        help="--micropython: the board's flash folder, kept between runs "
        "(default: a temporary folder)",
    )  # fmt: skip
    p.add_argument(
        "--blank", action="store_true",
        help="--micropython: start with the flash as it is (default: install the firmware)",
    )  # fmt: skip
    p.add_argument(
        "--selftest", action="store_true",
        help="run a short MVM through the board and print timing and energy",
    )  # fmt: skip


def open_board(args: argparse.Namespace) -> EmulatedBoard:
    """The board the arguments describe (not started)."""
    if args.micropython:
        from xbar.emulator.runtime_mpy import MicroPythonBoard

        return MicroPythonBoard(args.profile, args.seed, flash_dir=args.flash,
                                firmware=not args.blank)  # fmt: skip
    if args.flash or args.blank:
        raise ValueError("--flash and --blank need --micropython (the in-process board "
                         "runs the firmware source tree)")  # fmt: skip
    from xbar.emulator.runtime import InProcessBoard

    return InProcessBoard(args.profile, args.seed)


def serve(args: argparse.Namespace) -> int:
    board = open_board(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with board:
        mode = "MicroPython" if args.micropython else "in-process"
        print(board.port, flush=True)
        flash = getattr(board, "flash_dir", None)
        extra = f", flash {Path(flash)}" if flash is not None else ""
        print(f"emulated {args.profile} (seed {args.seed}, {mode}{extra}); Ctrl-C to stop",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        print(f"board time {board.board_seconds():.6f} s", file=sys.stderr)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.selftest:
        from xbar.emulator.selftest import selftest  # type: ignore[import-not-found]

        return int(selftest(args))
    return serve(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xbar emulate", description=__doc__.split("\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
