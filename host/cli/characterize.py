"""The `xbar characterize` command: parser and run; the logic is xbar.host.characterize."""

from __future__ import annotations

import argparse

from xbar.host.characterize import DEFAULT_CELLS, STEPS_UNKNOWN, WIDTH_US, characterize_board
from xbar.host.cli import names


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "characterize",
        help="I–V sweeps and pulse trains on cells → device model + CSV",
        description="Sweep chosen cells (SET pulses of rising then falling amplitude, read "
        "after each), run pulse trains, and fit a device model with the same code as the "
        "published devices. Sweep range, steps, RESET and read voltage come from the board's "
        "device model: --device, else the device of the model programmed on the board, else "
        "an emu:// board's own; unknown, the sweep goes to the board's pulse limit. Cells of "
        "a model programmed on the board are refused unless --force.",
    )
    p.add_argument("--port", required=True, help="device, pty or emu:// URL (or auto)")
    p.add_argument(
        "--cells",
        default=DEFAULT_CELLS,
        help=f"ARRAY:ROW:COL (or ROW:COL) list (default: {DEFAULT_CELLS})",
    )
    p.add_argument(
        "--device",
        type=names.device,
        help="device preset (pvk-best, pvk-median, pvk-07) or device JSON the cells are "
        "made of (default: the programmed model's, or an emu:// board's)",
    )
    p.add_argument(
        "--cycles", type=names.positive_int, default=3, help="sweep cycles per cell (default: 3)"
    )
    p.add_argument(
        "--v-max",
        type=float,
        help="largest SET amplitude, V (default: the device's highest level or SET voltage, "
        "e.g. 5.4 for pvk-best; device unknown: the board's pulse limit, 2 x its line limit)",
    )
    p.add_argument(
        "--steps",
        type=names.positive_int,
        help="amplitudes per half sweep (default: half the device's levels, 10..40; "
        f"device unknown: {STEPS_UNKNOWN})",
    )
    p.add_argument(
        "--width-us",
        type=names.positive_int,
        default=WIDTH_US,
        help=f"pulse width, µs (default: {WIDTH_US})",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="sweep cells of the model programmed on this board (it must be programmed again)",
    )
    p.add_argument(
        "--name", default="characterized", help="device model name (default: %(default)s)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--timeout", type=names.positive_float, default=10.0, help="link timeout, s (default: 10)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    characterize_board(
        args.port,
        args.out,
        cells=args.cells,
        cycles=args.cycles,
        v_max=args.v_max,
        steps=args.steps,
        width_us=args.width_us,
        name=args.name,
        timeout=args.timeout,
        device=args.device,
        force=args.force,
        as_json=args.json,
    )
    return 0
