"""The `xbar ports` command: which serial ports hold an xbar board, a MicroPython REPL or
neither; the logic is xbar.host.ports."""

from __future__ import annotations

import argparse
import json

from xbar.host import ports
from xbar.host.cli import names


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "ports",
        help="list serial ports and what answers on each (xbar firmware, MicroPython)",
        description="List serial ports and probe each with one HELLO frame: xbar firmware "
        "(profile, firmware and protocol version), a MicroPython REPL without xbar, or "
        "nothing. Ports another program holds are left alone; only RP2040 and MicroPython "
        "USB ports are opened unless named or --all (opening a port resets many other "
        "boards).",
    )
    p.add_argument("extra", nargs="*", metavar="PORT", help="also probe these (ptys, emu:// URLs)")
    p.add_argument("--all", action="store_true", help="probe every listed port")
    p.add_argument(
        "--timeout",
        type=names.positive_float,
        default=ports.PROBE_TIMEOUT_S,
        help=f"wait per port, s (default {ports.PROBE_TIMEOUT_S:g})",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.host.console import print_table

    reports = ports.scan(args.extra, all_ports=args.all, timeout=args.timeout)
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
        return 0
    if not reports:
        print("no serial ports (is the board plugged in? name a pty or emu:// URL to probe it)")
        return 0
    print_table(
        ["port", "USB", "what answers"],
        [[r.device, r.usb or "", r.detail] for r in reports],
        title="serial ports",
    )
    return 0
