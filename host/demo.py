"""`xbar demo`: the main job, end to end, on built-in data and the emulated board.

1. Devices: usability of the 43 published devices; the best and median device models.
2. Fabrication campaign: the 43 devices go into a new campaign (SQLite) as past
   experiments, and Bayesian optimisation suggests the lab's next batch.
3. The loop on one array: BayesMulti trains an iris network for the best device, and
   `xbar program` / `xbar infer` write-verify it onto an emulated 10×10 board served on a
   pty and stream the held-out flowers through it, as a user would on a real board.
4. Programming: the real firmware, on the emulated reference board (xbar-10x10) built from
   the best device, write-verifies all 100 cells to a pattern; the error distribution,
   pulse counts, board time and energy are reported and plotted.
5. Inference: the int8 digits MLP (64-64-64-10) runs tiled on a board large enough to hold
   it (xbar-5x64x64, five 64×64 arrays) through the same firmware; accuracy, agreement with
   the int8 reference, board time and energy per inference by part. Its 17,000 cells are
   placed directly in the emulator (write-verifying them over the link would take an hour
   of wall time; steps 3 and 4 measure write-verify itself).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from xbar.host.devices import device_rows, model_summary, print_device_table
from xbar.training.devices.device_model import DeviceModel
from xbar.training.devices.published import find_published
from xbar.training.devices.usability import analyse

DEMO_DEVICE = "pvk-best"
PROGRAM_URL = f"emu://xbar-10x10?seed=0&device={DEMO_DEVICE}"
INFER_URL = f"emu://xbar-5x64x64?seed=0&device={DEMO_DEVICE}"
V_VERIFY = 0.3  # V: the highest read-safe voltage gives nS cells the most ADC codes


def demo_devices(out: Path) -> None:
    from xbar.training.devices.plots import plot_device, plot_population

    rows = sorted(device_rows(), key=lambda r: r["usability"], reverse=True)
    print(f"== {len(rows)} published perovskite memristors, by usability ==")
    print_device_table(rows)
    plot_population(
        [r["name"] for r in rows],
        [r["sigma"] for r in rows],
        [r["usability"] for r in rows],
        [r["material"] for r in rows],
        out / "usability_vs_sigma.png",
    )
    print(f"\nwrote {out / 'usability_vs_sigma.png'}")
    for preset in ("pvk-best", "pvk-median"):
        model = DeviceModel.preset(preset)
        curves = find_published(model.source.split(":", 1)[-1]).curves
        model.save(out / f"{preset}.json")
        plot_device(curves, analyse(curves), model, out / f"{preset}.png")
        print(f"\n== preset {preset} ==\n{model_summary(model)}")
        print(f"wrote {out / (preset + '.json')}, {out / (preset + '.png')}")


def demo_campaign(out: Path, batch: int = 4) -> None:
    from xbar.host import fab
    from xbar.training.fab.perovskite import SPEC_PATH, write_past_sheet
    from xbar.training.fab.spec import load_spec

    folder = out / "campaign"
    folder.mkdir(exist_ok=True)
    store = folder / "perovskite.sqlite"
    store.unlink(missing_ok=True)  # each demo run starts its campaign afresh
    past = write_past_sheet(folder / "published.csv", load_spec(SPEC_PATH))
    print(
        f"\n== fabrication campaign: the published devices as past experiments, then the "
        f"next {batch} runs =="
    )
    # What `xbar fab init|ingest|suggest|status` do, with the store in the demo's folder.
    fab.init(SPEC_PATH, store)
    fab.ingest(store, [str(past)])
    fab.suggest(store, batch, out=str(folder))
    fab.status(store)


def demo_loop_on_one_array(out: Path, budget: int = 4) -> None:
    from xbar.emulator.build import board_model
    from xbar.emulator.runtime import InProcessBoard
    from xbar.host.program import program_model
    from xbar.host.stream import infer
    from xbar.host.train import TrainOptions, train

    folder = out / "iris"
    model = folder / "model.xbar"
    print(
        f"\n== the loop on one 10×10 array: BayesMulti for {DEMO_DEVICE}, then program and "
        "infer on the emulated board =="
    )
    (folder / "search.jsonl").unlink(missing_ok=True)  # a fresh search, not a resumed one
    train(
        TrainOptions(
            dataset="iris",
            device=DEMO_DEVICE,
            method="bayesmulti",
            budget=budget,
            out=str(folder),
        )
    )
    emulated = board_model("xbar-10x10", 0, DEMO_DEVICE, None)
    with InProcessBoard("xbar-10x10", 0, emulated) as board:
        print(f"board served on {board.port}")
        # The commands a user would type, and the jobs they run.
        print(f"$ xbar program --port {board.port} {model} --fresh")
        program_model(board.port, str(model), fresh=True)
        print(f"$ xbar infer --port {board.port} --model {model} --dataset iris")
        infer(board.port, str(model), dataset="iris")


def _energy_lines(breakdown: dict[str, float], per: int = 1) -> str:
    total = sum(breakdown.values())
    parts = sorted(breakdown.items(), key=lambda kv: -kv[1])
    return "\n".join(
        f"  {name:<13} {value / per * 1e3:12.4f} mJ  {value / total:6.1%}" for name, value in parts
    )


def program_pattern(device: DeviceModel, rows: int = 10, cols: int = 10) -> np.ndarray:
    """A diagonal ramp of targets spanning most of the device's window, log-spaced."""
    lo, hi = device.g_min * 8, device.g_max * 0.8
    ramp = np.add.outer(np.arange(rows), np.arange(cols)) / (rows + cols - 2)
    return lo * (hi / lo) ** ramp


def demo_programming(out: Path) -> dict[str, Any]:
    from xbar.host.board import Board

    device = DeviceModel.preset(DEMO_DEVICE)
    target = program_pattern(device)
    tolerance = 0.02 * (device.g_max - device.g_min)
    print(f"\n== write-verify: the firmware programs {target.size} cells of {PROGRAM_URL} ==")
    with Board(PROGRAM_URL, timeout=600) as board:
        emulated = board.link.port.board  # type: ignore[attr-defined]
        hello, info = board.hello(), board.info()
        print(
            f"board {hello.profile}, firmware {'.'.join(map(str, hello.firmware))}, "
            f"{info.arrays}x {info.rows}x{info.cols}, free heap {info.free_heap} B"
        )
        clock, ledger = emulated.model.clock, emulated.model.ledger
        t0, mark, wall = clock.seconds, ledger.mark(), time.perf_counter()
        result = board.program(
            target, tolerance=tolerance, v_read=V_VERIFY, v_set=2.5, v_reset=2.5, max_pulses=100
        )
        board_s, energy = clock.seconds - t0, ledger.since(mark)
        wall = time.perf_counter() - wall
    err = np.abs(result.error) / target.ravel()[: len(result.error)]
    ok = result.converged
    print(
        f"converged {ok.sum()}/{ok.size} within ±{tolerance * 1e6:.3f} µS; "
        f"pulses/cell mean {result.pulses.mean():.1f}, max {result.pulses.max()}"
    )
    print(
        f"relative error |G−target|/target: median {np.median(err):.3f}, "
        f"p90 {np.percentile(err, 90):.3f}, max {err.max():.3f}"
    )
    joules = sum(energy.values())
    print(f"board time {board_s:.3f} s ({wall:.1f} s wall); energy {joules * 1e3:.3f} mJ")
    _plot_programming(target, result, out / "write_verify.png")
    print(f"wrote {out / 'write_verify.png'}")
    return {"converged": int(ok.sum()), "median_rel_error": float(np.median(err))}


def _plot_programming(target: np.ndarray, result: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    achieved = np.full(target.shape, np.nan)
    for (r, c), g in zip(result.cells, result.achieved, strict=True):
        achieved[r, c] = g
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    vmin, vmax = np.nanmin(target) * 1e6, np.nanmax(target) * 1e6
    for ax, data, title in ((axes[0], target, "target (µS)"), (axes[1], achieved, "achieved (µS)")):
        im = ax.imshow(data * 1e6, vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set(title=title, xlabel="column", ylabel="row")
        fig.colorbar(im, ax=ax)
    rel = (achieved - target) / target
    axes[2].hist(rel.ravel() * 100, bins=30, color="C0")
    axes[2].set(title="write-verify error", xlabel="(G − target) / target (%)", ylabel="cells")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_inference(out: Path, digits: int) -> dict[str, Any]:
    from xbar.host.board import Board, CrossbarModel
    from xbar.training.quantize import digits_mlp

    model, data = digits_mlp()
    device = DeviceModel.preset(DEMO_DEVICE)
    print(
        f"\n== inference: {model.name} (int8 accuracy {data['int8_accuracy']:.3f} on "
        f"{len(data['y_test'])} test digits) on {INFER_URL} =="
    )
    with Board(INFER_URL, timeout=600) as board:
        emulated = board.link.port.board  # type: ignore[attr-defined]
        info = board.info()
        plan = CrossbarModel.from_layers(
            model.layers,
            arrays=info.arrays,
            rows=info.rows,
            cols=info.cols,
            g_min=device.g_min,
            g_max=device.g_max,
            v_read=0.2,
        )
        emulated.model.place(plan.targets())
        loaded = board.load(plan, program=False)
        print(
            f"loaded {loaded.layers} layers as {loaded.tiles} tiles "
            f"({sum(len(v) for v in plan.targets().values())} cells placed directly)"
        )
        xs = data["x_test_q"][:digits]
        clock, ledger = emulated.model.clock, emulated.model.ledger
        t0, mark, wall = clock.seconds, ledger.mark(), time.perf_counter()
        outputs = np.asarray(board.infer_stream([[int(v) for v in x] for x in xs]))
        board_s, energy = clock.seconds - t0, ledger.since(mark)
        wall = time.perf_counter() - wall
    reference = model.forward(xs)
    accuracy = float(np.mean(outputs.argmax(1) == data["y_test"][:digits]))
    agree = float(np.mean(outputs.argmax(1) == reference.argmax(1)))
    worst = int(np.abs(outputs - reference).max())
    print(
        f"{digits} digits: accuracy {accuracy:.3f}; predictions agree with the int8 "
        f"reference {agree:.3f}; max |output − reference| {worst} LSB"
    )
    per_board, per_wall = board_s / digits * 1e3, wall / digits
    print(
        f"board time {per_board:.2f} ms/inference ({per_wall:.2f} s wall each); "
        f"energy {sum(energy.values()) / digits * 1e3:.3f} mJ/inference:"
    )
    print(_energy_lines(energy, digits))
    return {"accuracy": accuracy, "agreement": agree}


def run(out: Path, board: bool = True, digits: int = 20) -> int:
    out.mkdir(parents=True, exist_ok=True)
    demo_devices(out)
    if board:
        demo_campaign(out)
        demo_loop_on_one_array(out)
        demo_programming(out)
        demo_inference(out, digits)
    return 0
