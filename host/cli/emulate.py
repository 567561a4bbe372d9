"""`xbar emulate`: serve an emulated board on a serial port, or run its self-test.

    xbar emulate [--profile P] [--seed S] [--micropython] [--flash DIR]
                 [--ber B] [--drop P] [--stall P [--stall-ms MS]] [--fault-seed S]
    xbar emulate --selftest [--micropython]

Serving prints the port path (a pty any serial client opens: pyserial, mpremote,
`screen`) and runs until Ctrl-C. In-process mode runs the firmware under CPython; with
--micropython the real MicroPython interpreter runs it and the board answers the raw
REPL, so `mpremote connect PORT fs cp …` flashes it. The same boards are reachable
from Python as `emu://PROFILE?seed=N[&micropython=1]` URLs. --ber, --drop and --stall
make the line faulty (bit flips, lost bytes, stalls; seeded, both directions unless
--fault-dir says one): URL options ber, drop, stall, stall_ms, fault_seed, fault_dir.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from xbar.emulator.build import DEFAULT_PROFILE, BoardOptions
from xbar.host.cli import names
from xbar.training.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `emulate` on the `xbar` command's subparsers."""
    p = subparsers.add_parser(
        "emulate",
        help="serve an emulated board on a serial port (pty)",
        description="Serve an emulated xbar board on a pty until Ctrl-C, or self-test it.",
    )
    configure(p)
    p.set_defaults(func=run)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        type=names.profile,
        default=DEFAULT_PROFILE,
        help=f"board profile (default: {DEFAULT_PROFILE})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the board's devices and noise")
    p.add_argument(
        "--device", type=names.device, help="device preset of the cells (default: pvk-median)"
    )
    p.add_argument("--noise", choices=["default", "off"], help="noise preset (default: default)")
    p.add_argument(
        "--micropython",
        action="store_true",
        help="run the firmware under the real MicroPython interpreter (raw REPL, flashing)",
    )
    p.add_argument(
        "--flash",
        metavar="DIR",
        help="--micropython: the board's flash folder, kept between runs "
        "(default: a temporary folder)",
    )
    p.add_argument(
        "--blank",
        action="store_true",
        help="--micropython: start with the flash as it is (default: install the firmware)",
    )
    p.add_argument(
        "--selftest",
        action="store_true",
        help="run a short MVM through the board and print timing and energy",
    )
    p.add_argument(
        "--measure-compute",
        action="store_true",
        help="--micropython: also charge the interpreter's computation, from its host CPU "
        "time (not reproducible; see MicroPythonBoard)",
    )
    p.add_argument("--ber", type=float, default=0.0, help="line fault: bit error rate")
    p.add_argument("--drop", type=float, default=0.0, help="line fault: probability a byte is lost")
    p.add_argument(
        "--stall",
        type=float,
        default=0.0,
        help="line fault: probability, per byte, that the line first stalls --stall-ms",
    )
    p.add_argument(
        "--stall-ms", type=float, default=100.0, help="length of one stall, ms (default 100)"
    )
    p.add_argument("--fault-seed", type=int, default=0, help="seed of the line faults (default 0)")
    p.add_argument(
        "--fault-dir",
        choices=["both", "to_board", "to_host"],
        default="both",
        help="which way the line faults hit (default: both)",
    )
    p.add_argument(
        "--program",
        action="store_true",
        help="--selftest: program the cells with the firmware's write-verify (slow)",
    )


def board_options(args: argparse.Namespace) -> BoardOptions:
    """The flags as the emulator's board options (what an `emu://` URL's query gives)."""
    return BoardOptions(
        profile=args.profile,
        seed=args.seed,
        device=args.device,
        noise=args.noise,
        micropython=args.micropython,
        flash=args.flash,
        blank=args.blank,
        measure_compute=args.measure_compute,
        ber=args.ber,
        drop=args.drop,
        stall=args.stall,
        stall_ms=args.stall_ms,
        fault_seed=args.fault_seed,
        fault_dir=args.fault_dir,
    )


def check(args: argparse.Namespace) -> None:
    """Flags that only mean something with others: a usage error naming both."""
    needs = {
        "--blank": args.blank,
        "--flash": args.flash,
        "--measure-compute": args.measure_compute,
    }
    for flag, given in needs.items():
        if given and not args.micropython:
            raise UsageError(f"{flag} needs --micropython (the in-process board has no flash)")
    if getattr(args, "program", False) and not args.selftest:
        raise UsageError("--program needs --selftest")


def run(args: argparse.Namespace) -> int:
    from xbar.host.emulate import selftest, serve

    check(args)
    options = board_options(args)
    problems = options.faults.problems()  # --ber 2, --drop -1: usage, not a failure
    if problems:
        raise UsageError("; ".join(f"--{p.replace('_', '-', 1)}" for p in problems))
    if args.selftest:
        return selftest(options, program=args.program)
    return serve(options)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m xbar.host.cli.emulate`: the command on its own."""
    parser = argparse.ArgumentParser(prog="xbar emulate", description=__doc__.split("\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
