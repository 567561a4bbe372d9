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
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xbar.emulator.runtime import EmulatedBoard

EXIT_OK = 0
EXIT_FAILED = 1


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
    p.add_argument("--profile", default="xbar-10x10", help="board profile (default: xbar-10x10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the board's devices and noise")
    p.add_argument("--device", help="device preset of the cells (default: pvk-median)")
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
    p.add_argument(
        "--program",
        action="store_true",
        help="--selftest: program the cells with the firmware's write-verify (slow)",
    )


def open_board(args: argparse.Namespace) -> EmulatedBoard:
    """The board the arguments describe (not started)."""
    from xbar.emulator.urlhandler.protocol_emu import board_model

    model = board_model(args.profile, args.seed, args.device, args.noise)
    if args.micropython:
        from xbar.emulator.runtime_mpy import MicroPythonBoard

        return MicroPythonBoard(
            args.profile,
            args.seed,
            model,
            flash_dir=args.flash,
            firmware=not args.blank,
            measure_compute=args.measure_compute,
        )
    if args.flash or args.blank or args.measure_compute:
        raise ValueError(
            "--flash, --blank and --measure-compute need --micropython (the "
            "in-process board runs the firmware source tree)"
        )
    from xbar.emulator.runtime import InProcessBoard

    return InProcessBoard(args.profile, args.seed, model)


def serve(args: argparse.Namespace) -> int:
    board = open_board(args)
    stop = threading.Event()
    # Ctrl-C and SIGTERM both end the service cleanly (interpreters stopped, pty and
    # temporary flash removed), also when started where SIGINT was ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with board:
        mode = "MicroPython" if args.micropython else "in-process"
        print(board.port, flush=True)
        flash = getattr(board, "flash_dir", None)
        extra = f", flash {Path(flash)}" if flash is not None else ""
        print(
            f"emulated {args.profile} (seed {args.seed}, {mode}{extra}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        print(f"board time {board.board_seconds():.6f} s", file=sys.stderr)
    return EXIT_OK


def board_url(args: argparse.Namespace) -> str:
    url = f"emu://{args.profile}?seed={args.seed}"
    for name in ("device", "noise"):
        if getattr(args, name):
            url += f"&{name}={getattr(args, name)}"
    if args.micropython:
        url += "&micropython=1"
        if args.flash:
            url += f"&flash={args.flash}"
        if args.measure_compute:
            url += "&compute=measured"
    return url


def selftest(args: argparse.Namespace) -> int:
    """A short MVM through the emulated board, the way a host would run it: LOAD a
    one-layer model through the firmware and INFER, next to the integer reference;
    then the board time, real-time factor and energy it took.

    The cells are placed at their target conductances directly (as on a board that was
    programmed earlier); `--program` programs them with the firmware's write-verify
    instead (minutes of emulation for a full array).
    """

    import numpy as np
    import serial
    import xbar.emulator  # noqa: F401 - registers emu://
    from xbar.host.board import Board, CrossbarModel

    url = board_url(args)
    port = serial.serial_for_url(url, timeout=60)
    emulated: EmulatedBoard = port.board  # type: ignore[attr-defined]
    model: Any = emulated.model  # the BoardModel: ledger, device, conductances
    try:
        with Board(port, timeout=600) as client:
            hello, info = client.hello(), client.info()
            print(
                f"{url}: firmware {'.'.join(map(str, hello.firmware))}, "
                f"{info.arrays}x {info.rows}x{info.cols}, "
                f"{'MicroPython' if args.micropython else 'in-process'}"
            )
            rng = np.random.default_rng(args.seed)
            n_out, n_in = info.cols // 2, info.rows
            layer = types.SimpleNamespace(
                weights=rng.integers(-127, 128, size=(n_out, n_in)),
                bias=rng.integers(-2000, 2000, size=n_out),
                multiplier=1,
                shift=10,
                relu=False,
                out_min=-128,
                out_max=127,
            )
            device = model.device
            crossbar = CrossbarModel.from_layers(
                [layer],
                arrays=1,
                rows=info.rows,
                cols=info.cols,
                g_min=2 * device.g_min,
                g_max=0.8 * device.g_max,
                v_read=0.2,
            )
            if not args.program:
                model.place(crossbar.targets())
            start = emulated.mark()
            loaded = client.load(crossbar, program=args.program)
            if loaded.program is not None:
                print(
                    f"programmed {len(loaded.program.cells)} cells, "
                    f"{loaded.program.converged.mean():.0%} converged"
                )
            emulated.settle()
            print(f"LOAD: {emulated.board_seconds():.4f} s of board time so far")
            mark = emulated.mark()  # settled: the same point in every run
            energy0 = model.ledger.mark()
            n = 4
            print("MVM  outputs (board)            reference")
            for _ in range(n):
                x = rng.integers(0, 256, size=n_in)
                y = client.infer(x)
                ref, _acc = crossbar.reference(x.tolist())
                print(f"     {np.array2string(y, separator=' '):28s} {ref}")
            end = emulated.mark()
            spent = model.ledger.since(energy0)
            wall = end[0] - mark[0]
            board_s = (end[1] - mark[1]) / model.clock.mcu_hz
            rtf = board_s / wall
            bytecodes = emulated.hw.bytecodes
        print(
            f"timing: {n} inferences in {board_s * 1e3:.3f} ms of board time "
            f"({board_s / n * 1e6:.1f} us each), {wall:.3f} s wall, "
            f"real-time factor {rtf:.3g} (board s / wall s); "
            f"whole run {emulated.realtime_factor(start):.3g}"
        )
        total = sum(spent.values())
        print(f"energy: {total * 1e6:.3f} uJ ({total / n * 1e6:.3f} uJ per inference)")
        for part, joules in sorted(spent.items(), key=lambda kv: -kv[1]):
            print(f"  {part:14s} {joules * 1e6:12.4f} uJ  {joules / total if total else 0:6.1%}")
        if bytecodes:
            print(f"firmware bytecodes charged: {bytecodes}")
    finally:
        port.close()
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.selftest:
        return selftest(args)
    return serve(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xbar emulate", description=__doc__.split("\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
