"""The `xbar devices` command: parser and run; the logic is xbar.host.devices."""

from __future__ import annotations

import argparse

from xbar.host import devices
from xbar.host.cli import names


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "devices",
        help="measured devices: usability, device models, plots",
        description="Published perovskite devices and your own I–V files.",
    )
    actions = p.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    a = actions.add_parser(
        "list", help="table of the published devices (σ, monotonicity, usability)"
    )
    a.add_argument("--sort", choices=["id", "name", "sigma", "usability"], default="id")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=run_list)
    a = actions.add_parser("show", help="the device model of a preset or published device")
    a.add_argument(
        "name",
        type=names.device,
        help="pvk-best, pvk-median, or a device id (pvk-07) or name from `xbar devices list`",
    )
    a.add_argument("--json", action="store_true", help="print the model as JSON")
    a.set_defaults(func=run_show)
    a = actions.add_parser("fit", help="fit a device model from your I–V file (.xlsx or .csv)")
    a.add_argument("iv_file", help="first column `voltage`, then one current column per cycle")
    a.add_argument("-o", "--out", help="write the model as JSON here")
    a.add_argument("--plot", help="also write the analysis plot (PNG) here")
    a.add_argument("--json", action="store_true", help="print the model as JSON")
    a.set_defaults(func=run_fit)
    a = actions.add_parser("plot", help="PNG of I–V cycles, the monotonic run and ln(G/ḡ)")
    a.add_argument("name", help="a preset, a published device name, or an I–V file")
    a.add_argument("-o", "--out", help="PNG path (default: NAME.png)")
    a.set_defaults(func=run_plot)


def run_list(args: argparse.Namespace) -> int:
    devices.list_devices(args.sort, args.json)
    return 0


def run_show(args: argparse.Namespace) -> int:
    devices.show_device(args.name, args.json)
    return 0


def run_fit(args: argparse.Namespace) -> int:
    devices.fit_device(args.iv_file, args.out, args.plot, args.json)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    devices.plot_device_file(args.name, args.out)
    return 0
