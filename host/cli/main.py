"""The ``xbar`` command line: one entry point, one subcommand per job.

Exit codes: 0 success, 1 the job failed (bad data, a board error), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from xbar.host.cli.train import TrainError
from xbar.host.protocol_client import BoardError
from xbar.host.stream import InputError
from xbar.training.artifact import ArtifactError
from xbar.training.devices.ivdata import IVCurves, IVDataError, read_iv
from xbar.training.devices.model import DeviceModel, DeviceModelError, fit
from xbar.training.devices.published import find_published, load_published
from xbar.training.devices.usability import analyse
from xbar.training.fab.errors import FabError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Errors that mean "your input or your board is wrong", reported in one line, exit 1.
USER_ERRORS: tuple[type[BaseException], ...] = (
    IVDataError,
    DeviceModelError,
    ArtifactError,
    KeyError,
    FileNotFoundError,
    OSError,
    TrainError,
    BoardError,
    InputError,
    FabError,
)


# -- devices -------------------------------------------------------------------------
def device_rows() -> list[dict[str, Any]]:
    rows = []
    for device in load_published():
        result = analyse(device.curves)
        rows.append(
            {
                "id": device.short_id,
                "name": device.name,
                "material": device.material,
                "sigma": result.sigma,
                "monotonicity": result.monotonicity,
                "usability": result.usability,
            }
        )
    return rows


def print_device_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'id':<6}  {'material':<8}  {'sigma':>7}  {'monot.':>6}  {'usability':>9}  device")
    for r in rows:
        print(
            f"{r['id']!s:<6}  {r['material']!s:<8}  {r['sigma']:>7.4f}  "
            f"{r['monotonicity']:>6.2f}  {r['usability']:>9.4f}  {r['name']}"
        )


def cmd_devices_list(args: argparse.Namespace) -> int:
    rows = device_rows()
    key = args.sort
    rows.sort(key=lambda r: r[key], reverse=key == "usability")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_device_table(rows)
    return EXIT_OK


def model_summary(model: DeviceModel) -> str:
    d2d = "n/a (no replicates)" if model.d2d_sigma is None else f"{model.d2d_sigma:.3f}"
    lines = [
        f"device        {model.name}",
        f"material      {model.material or 'unknown'}",
        f"usability     {model.usability:.4f}  (monotonicity {model.monotonicity:.2f})",
        f"sigma c2c     {model.sigma_c2c:.4f}  (log-normal)",
        f"sigma d2d     {d2d}",
        f"window        {model.g_min:.3e} .. {model.g_max:.3e} S  "
        f"(ratio {model.g_max / model.g_min:.2f})",
        f"levels        {len(model.level_conductances)} "
        f"({model.level_voltages[0]:.2f} .. {model.level_voltages[-1]:.2f} V)",
        f"read / set / reset  {model.read_voltage:.2f} / {model.v_set:.2f} / {model.v_reset:.2f} V",
        f"compliance    {model.compliance_current:.3g} A",
    ]
    if model.conditions:
        given = ", ".join(f"{k}={v}" for k, v in model.conditions.items() if v)
        lines.append(f"conditions    {given}")
    return "\n".join(lines)


def cmd_devices_show(args: argparse.Namespace) -> int:
    model = DeviceModel.preset(args.name)
    print(model.to_json() if args.json else model_summary(model))
    return EXIT_OK


def cmd_devices_fit(args: argparse.Namespace) -> int:
    curves = read_iv(args.iv_file)
    model, result = fit(curves)
    # Check every output path before writing any of them.
    outputs = [p for p in (args.out, args.plot) if p]
    for out in outputs:
        if not Path(out).parent.exists():
            raise FileNotFoundError(f"{out}: folder {Path(out).parent} does not exist")
    print(model_summary(model))
    if args.out:
        model.save(args.out)
        print(f"wrote {args.out}")
    if args.plot:
        from xbar.training.devices.plots import plot_device

        plot_device(curves, result, model, args.plot)
        print(f"wrote {args.plot}")
    return EXIT_OK


def _curves_and_model(name: str) -> tuple[IVCurves, DeviceModel]:
    path = Path(name)
    if path.suffix.lower() in (".xlsx", ".xlsm", ".csv") or path.is_file():
        curves = read_iv(path)
        return curves, fit(curves)[0]
    model = DeviceModel.preset(name)
    stem = model.source.split(":", 1)[-1] if model.source else name
    return find_published(stem).curves, model


def cmd_devices_plot(args: argparse.Namespace) -> int:
    from xbar.training.devices.plots import plot_device

    curves, model = _curves_and_model(args.name)
    out = Path(args.out or f"{model.name}.png")
    plot_device(curves, analyse(curves), model, out)
    print(f"wrote {out}")
    return EXIT_OK


# -- demo ----------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from xbar.host import demo

    return demo.run(Path(args.out), board=not args.devices_only, digits=args.digits)


# -- parser --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xbar",
        description="Hardware-in-the-loop toolkit for analog deep learning on perovskite "
        "memristor crossbars.",
    )
    parser.add_argument("--version", action="version", version=f"xbar {version('xbar')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    devices = commands.add_parser(
        "devices",
        help="measured devices: usability, device models, plots",
        description="Published perovskite devices and your own I–V files.",
    )
    dev = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    p = dev.add_parser("list", help="table of the published devices (σ, monotonicity, usability)")
    p.add_argument("--sort", choices=["id", "name", "sigma", "usability"], default="id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_devices_list)
    p = dev.add_parser("show", help="the device model of a preset or published device")
    p.add_argument(
        "name", help="pvk-best, pvk-median, or a device id (pvk-07) or name from `devices list`"
    )
    p.add_argument("--json", action="store_true", help="print the model as JSON")
    p.set_defaults(func=cmd_devices_show)
    p = dev.add_parser("fit", help="fit a device model from your I–V file (.xlsx or .csv)")
    p.add_argument("iv_file", help="first column `voltage`, then one current column per cycle")
    p.add_argument("-o", "--out", help="write the model as JSON here")
    p.add_argument("--plot", help="also write the analysis plot (PNG) here")
    p.set_defaults(func=cmd_devices_fit)
    p = dev.add_parser("plot", help="PNG of I–V cycles, the monotonic run and ln(G/ḡ)")
    p.add_argument("name", help="a preset, a published device name, or an I–V file")
    p.add_argument("-o", "--out", help="PNG path (default: NAME.png)")
    p.set_defaults(func=cmd_devices_plot)

    p = commands.add_parser(
        "demo",
        help="run the main job: devices, write-verify and inference on the emulator",
        description="Analyse the published devices, then program and run the emulated board "
        "(real firmware) built from the best device.",
    )
    p.add_argument("--out", default="out", help="folder for plots and models (default: out)")
    p.add_argument("--devices-only", action="store_true", help="stop after the device analysis")
    p.add_argument("--digits", type=int, default=20, help="test digits to infer (default: 20)")
    p.set_defaults(func=cmd_demo)

    for register in _optional_commands():
        register(commands)
    return parser


def _optional_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands whose modules live beside this one (the emulator, board tools)."""
    registered: list[Callable[[argparse._SubParsersAction], None]] = []
    import importlib

    for module in (
        "xbar.host.cli.emulate",
        "xbar.host.commands",
        "xbar.host.cli.train",
        "xbar.host.cli.fab",
        "xbar.host.cli.model",
    ):
        try:
            registered.append(importlib.import_module(module).add_parser)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (module == missing or module.startswith(missing + ".")):  # broken: say so
                raise
    return registered


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"xbar: error: {message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
