"""The `xbar characterize` command: parser and run; the logic is xbar.host.characterize."""

from __future__ import annotations

import argparse

from xbar.host.characterize import DEFAULT_CELLS, characterize_board


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "characterize",
        help="I–V sweeps and pulse trains on cells → device model + CSV",
        description="Sweep chosen cells (SET pulses of rising then falling amplitude, read "
        "after each), run pulse trains, and fit a device model with the same code as the "
        "published devices.",
    )
    p.add_argument("--port", required=True, help="device, pty or emu:// URL")
    p.add_argument(
        "--cells",
        default=DEFAULT_CELLS,
        help="ARRAY:ROW:COL (or ROW:COL) list (default: four cells of array 0)",
    )
    p.add_argument("--cycles", type=int, default=3, help="sweep cycles per cell (default 3)")
    p.add_argument("--v-max", type=float, default=2.5, help="largest SET amplitude, V")
    p.add_argument("--steps", type=int, default=10, help="amplitudes per half sweep")
    p.add_argument("--width-us", type=int, default=1000, help="pulse width, µs")
    p.add_argument("--name", default="characterized", help="device model name")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--timeout", type=float, default=10.0, help="link timeout, s (default 10)")
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
    )
    return 0
