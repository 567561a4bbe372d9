"""The `xbar demo` command: parser and run; the logic is xbar.host.demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from xbar.host.cli import names


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "demo",
        help="run the main job: devices, write-verify and inference on the emulator",
        description="Analyse the published devices, then program and run the emulated board "
        "(real firmware) built from the best device.",
    )
    p.add_argument("--out", default="out", help="folder for plots and models (default: out)")
    p.add_argument("--devices-only", action="store_true", help="stop after the device analysis")
    p.add_argument(
        "--digits", type=names.positive_int, default=20, help="test digits to infer (default: 20)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.host import demo  # the emulator and plots load only for this command

    return demo.run(Path(args.out), board=not args.devices_only, digits=args.digits)
