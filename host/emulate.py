"""Serve an emulated board on a pty until stopped, or run a short self-test through it:
what `xbar emulate` does (host/cli/emulate.py parses its flags into `BoardOptions`).

In-process boards run the firmware under CPython; MicroPython boards run it under the
real interpreter and answer the raw REPL, so `mpremote connect PORT fs cp …` flashes
them. The same boards are reachable from Python as `emu://` URLs.
"""

from __future__ import annotations

import signal
import sys
import threading
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xbar.emulator.build import BoardOptions, build_board

if TYPE_CHECKING:
    from xbar.emulator.emulated_board import EmulatedBoard

EXIT_OK = 0


def serve(options: BoardOptions) -> int:
    """Print the board's port and serve it until SIGINT or SIGTERM."""
    board = build_board(options)
    stop = threading.Event()
    # Ctrl-C and SIGTERM both end the service cleanly (interpreters stopped, pty and
    # temporary flash removed), also when started where SIGINT was ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with board:
        mode = "MicroPython" if options.micropython else "in-process"
        print(board.port, flush=True)
        flash = getattr(board, "flash_dir", None)
        extra = f", flash {Path(flash)}" if flash is not None else ""
        print(
            f"emulated {options.profile} (seed {options.seed}, {mode}{extra}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        print(f"board time {board.board_seconds():.6f} s", file=sys.stderr)
    return EXIT_OK


def board_url(options: BoardOptions) -> str:
    """The `emu://` URL the self-test opens (the firmware installed, whatever `blank`)."""
    url = f"emu://{options.profile}?seed={options.seed}"
    for name in ("device", "noise"):
        if getattr(options, name):
            url += f"&{name}={getattr(options, name)}"
    if options.micropython:
        url += "&micropython=1"
        if options.flash:
            url += f"&flash={options.flash}"
        if options.measure_compute:
            url += "&compute=measured"
    return url


def selftest(options: BoardOptions, program: bool = False) -> int:
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

    url = board_url(options)
    port = serial.serial_for_url(url, timeout=60)
    emulated: EmulatedBoard = port.board  # type: ignore[attr-defined]
    model: Any = emulated.model  # the BoardModel: ledger, device, conductances
    try:
        with Board(port, timeout=600) as client:
            hello, info = client.hello(), client.info()
            print(
                f"{url}: firmware {'.'.join(map(str, hello.firmware))}, "
                f"{info.arrays}x {info.rows}x{info.cols}, "
                f"{'MicroPython' if options.micropython else 'in-process'}"
            )
            rng = np.random.default_rng(options.seed)
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
            if not program:
                model.place(crossbar.targets())
            start = emulated.mark()
            loaded = client.load(crossbar, program=program)
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
