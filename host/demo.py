"""`xbar demo`: the main job, end to end, on built-in data and emulated boards, and
`OUT/report.md`, one file that says what ran and what came out (every figure with the
command that made it).

1. Devices: usability of the 43 published devices; the best and median device models.
2. Fabrication campaign: the 43 devices go into a new campaign (SQLite) as past
   experiments, and Bayesian optimisation suggests the lab's next batch.
3. The loop on one array, as a user with a real board would run it: BayesMulti trains an
   iris network for the best device; an emulated MicroPython board (the reference board
   xbar-10x10, cells of the best device) is served on a pty with nothing on its flash;
   `xbar flash` installs the firmware, `xbar program` write-verifies the model, `xbar infer`
   streams the held-out flowers through it and `xbar bench energy` measures board time and
   energy per inference.
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

import contextlib
import io
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from xbar.firmware.protocol import ST_OK
from xbar.host.devices import device_rows, print_device_table, show_device
from xbar.training.devices.device_model import DeviceModel
from xbar.training.devices.published import find_published
from xbar.training.devices.usability import analyse

DEMO_DEVICE = "pvk-best"
PROGRAM_URL = f"emu://xbar-10x10?seed=0&device={DEMO_DEVICE}"
INFER_URL = f"emu://xbar-5x64x64?seed=0&device={DEMO_DEVICE}"
T = TypeVar("T")
V_VERIFY = 0.3  # V: the highest read-safe voltage gives nS cells the most ADC codes
TRAIN_BUDGET = 4  # BayesMulti trials of the demo's iris search (a minute on two cores)


class Report:
    """`OUT/report.md`: what ran and what came out, each output under the command that
    produced it, figures linked beside theirs. Written after every section, so a demo
    stopped halfway still leaves what it did."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "report.md"
        self.titles: list[str] = []
        self.seconds: list[float] = []
        self.t_last = time.perf_counter()
        self.parts: list[str] = [
            "# xbar demo report\n",
            f"xbar {_version()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Every block below is "
            "what the command above it printed; `xbar demo` ran the same jobs in one "
            "process. Figures sit beside the command that drew them.\n",
        ]

    def section(self, title: str, text: str = "") -> None:
        self._lap()
        self.titles.append(title)
        self.parts.append(f"\n## {title}\n")
        if text:
            self.parts.append(text.strip() + "\n")

    def text(self, text: str) -> None:
        self.parts.append(text.strip() + "\n")

    def command(self, cmd: str, output: str) -> None:
        body = output.strip("\n")
        self.parts.append(f"```console\n$ {cmd}\n{body}\n```\n")

    def figure(self, png: Path, caption: str, cmd: str) -> None:
        rel = png.relative_to(self.out) if png.is_relative_to(self.out) else png
        self.parts.append(f"![{caption}]({rel})\n\n*{caption}* (drawn by `{cmd}`)\n")

    def table(self, columns: list[str], rows: list[list[object]]) -> None:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
        self.parts.append("\n".join(lines) + "\n")

    def _lap(self) -> None:
        now = time.perf_counter()
        if self.titles:
            self.seconds.append(now - self.t_last)
        self.t_last = now

    def timings(self) -> None:
        """Wall time per section (this machine, this run)."""
        self._lap()
        self.parts.append("\n## Wall time\n")
        self.table(
            ["section", "wall time (s)"],
            [[t, f"{s:.0f}"] for t, s in zip(self.titles, self.seconds, strict=False)],
        )

    def write(self) -> Path:
        self.path.write_text("\n".join(self.parts))
        return self.path


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for stream in self.streams:
            stream.write(s)
        return len(s)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """What a job prints goes to the terminal as ever and into the returned buffer."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buffer)):
        yield buffer


def _version() -> str:
    from importlib.metadata import version

    return version("xbar")


def demo_devices(out: Path, report: Report) -> None:
    from xbar.training.devices.plots import plot_device, plot_population

    rows = sorted(device_rows(), key=lambda r: r["usability"], reverse=True)
    print(f"== {len(rows)} published perovskite memristors, by usability ==")
    print_device_table(rows)
    presets = {}
    for preset in ("pvk-best", "pvk-median"):
        stem = DeviceModel.preset(preset).source.split(":", 1)[-1]
        short = find_published(stem).short_id
        presets[f"{preset} ({short})"] = next(i for i, r in enumerate(rows) if r["id"] == short)
    population = out / "usability_vs_sigma.png"
    plot_population(
        [r["name"] for r in rows],
        [r["sigma"] for r in rows],
        [r["usability"] for r in rows],
        [r["material"] for r in rows],
        population,
        marked=presets,
    )
    print(f"\nwrote {population}")
    report.section(
        "1. Devices",
        f"The {len(rows)} published perovskite memristors, analysed with the authors' "
        "usability definition (docs: usability = monotonicity · exp(−σ)). The ten most "
        "usable:",
    )
    report.table(
        ["id", "material", "σ", "monotonicity", "usability"],
        [
            [
                r["id"],
                r["material"],
                f"{r['sigma']:.4f}",
                f"{r['monotonicity']:.2f}",
                f"{r['usability']:.4f}",
            ]
            for r in rows[:10]
        ],
    )
    report.text("All of them: `xbar devices list --sort usability` (`--json` for a file).")
    report.figure(population, "usability against σ, presets ringed", "xbar demo --devices-only")
    for preset in ("pvk-best", "pvk-median"):
        model = DeviceModel.preset(preset)
        curves = find_published(model.source.split(":", 1)[-1]).curves
        model.save(out / f"{preset}.json")
        png = out / f"{preset}.png"
        plot_device(curves, analyse(curves), model, png)
        with captured() as text:
            print(f"\n== preset {preset} ==")
            show_device(preset)
        print(f"wrote {out / (preset + '.json')}, {png}")
        report.command(f"xbar devices show {preset}", text.getvalue().split("==\n", 1)[-1])
        report.figure(
            png,
            f"{preset}: I–V cycles, monotonic run, ln(G/ḡ)",
            f"xbar devices plot {preset} -o {png}",
        )
    report.write()


def demo_campaign(out: Path, report: Report, batch: int = 4) -> None:
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
    report.section(
        "2. Fabrication campaign",
        "The published devices enter a new campaign as past experiments; Bayesian "
        f"optimisation (with a focus on usability) suggests the lab's next {batch} runs.",
    )
    steps = [
        (f"xbar fab init perovskite --store {store}", lambda: fab.init(SPEC_PATH, store)),
        (f"xbar fab ingest {past} --store {store}", lambda: fab.ingest(store, [str(past)])),
        (
            f"xbar fab suggest --store {store} --batch {batch} --out {folder}",
            lambda: fab.suggest(store, batch, out=str(folder)),
        ),
        (f"xbar fab status --store {store}", lambda: fab.status(store)),
    ]
    for cmd, job in steps:
        with captured() as text:
            job()
        report.command(cmd, text.getvalue())
    sheets = sorted(folder.glob("*batch*.md"))
    if sheets:
        report.text(f"The lab's sheet for the batch ({sheets[-1].relative_to(out)}):")
        sheet = sheets[-1].read_text()
        report.text(
            "\n".join("###" + line if line.startswith("#") else line for line in sheet.splitlines())
        )
    report.write()


def demo_loop_on_one_array(out: Path, report: Report, budget: int = TRAIN_BUDGET) -> None:
    from xbar.emulator.build import BoardOptions, build_board
    from xbar.host.energy_report import bench_energy
    from xbar.host.flash import flash_board
    from xbar.host.model import show
    from xbar.host.program import program_model
    from xbar.host.stream import infer
    from xbar.host.train import TrainOptions, train

    folder = out / "iris"
    model = folder / "model.xbar"
    print(
        f"\n== the loop on one 10×10 array: BayesMulti for {DEMO_DEVICE}, then flash, program "
        "and infer on an emulated MicroPython board =="
    )
    report.section(
        "3. The loop on one array: train, flash, program, infer",
        f"BayesMulti trains an iris network for {DEMO_DEVICE} ({budget} trials). Then the "
        f"commands a user types for a real board, against an emulated one: the reference "
        f"board xbar-10x10 with {DEMO_DEVICE} cells, under the real MicroPython interpreter, "
        "served on a pty with nothing on its flash (`xbar emulate --micropython --blank "
        f"--device {DEMO_DEVICE}`).",
    )
    (folder / "search.jsonl").unlink(missing_ok=True)  # a fresh search, not a resumed one
    cmd = f"xbar train --dataset iris --device {DEMO_DEVICE} --budget {budget} --out {folder}"
    print(f"$ {cmd}")
    with captured() as text:
        train(
            TrainOptions(
                dataset="iris",
                device=DEMO_DEVICE,
                method="bayesmulti",
                budget=budget,
                out=str(folder),
            )
        )
    report.command(cmd, text.getvalue())
    for png in sorted(folder.glob("*.png")):
        report.figure(png, png.stem.replace("_", " "), cmd)
    with captured() as text:
        show(str(model))
    report.command(f"xbar model show --model {model}", text.getvalue())
    report.write()

    options = BoardOptions("xbar-10x10", 0, DEMO_DEVICE, micropython=True, blank=True)
    with build_board(options) as board:
        port = board.port
        print(f"board served on {port} (MicroPython, empty flash)")
        energy_png = out / "energy.png"

        def step(cmd: str, job: Callable[[], T]) -> T:
            print(f"$ {cmd}")
            with captured() as text:
                result = job()
            report.command(cmd, text.getvalue())
            report.write()
            return result

        step(
            f"xbar flash --port {port} --profile xbar-10x10",
            lambda: flash_board(port, "xbar-10x10"),
        )
        programmed = step(
            f"xbar program --port {port} --model {model} --fresh",
            lambda: program_model(port, str(model), fresh=True),
        )
        inferred = step(
            f"xbar infer --port {port} --model {model} --dataset iris",
            lambda: infer(port, str(model), dataset="iris"),
        )
        bench = f"xbar bench energy --port {port} --model {model} --n 10 --png {energy_png}"
        energy = step(bench, lambda: bench_energy(port, str(model), n=10, png=str(energy_png)))
        report.figure(energy_png, "energy per inference by part", bench)
    n = len(programmed.cells)
    ok = int(np.sum(programmed.status == ST_OK))
    how = "measured by the emulator's ledger" if energy.measured else "estimated from STATS"
    report.text("In short (each figure from the command named beside it):")
    report.table(
        ["figure", "value", "command"],
        [
            ["cells within tolerance", f"{ok} of {n}", "`xbar program`"],
            [
                "accuracy on the board",
                f"{inferred.accuracy:.3f} on {len(inferred.predictions)} flowers",
                "`xbar infer`",
            ],
            ["int8 reference accuracy", f"{inferred.reference_accuracy:.3f}", "`xbar infer`"],
            [
                "predictions equal to the int8 reference",
                f"{inferred.agreement:.3f}",
                "`xbar infer`",
            ],
            [
                "board time per inference",
                f"{energy.board_seconds * 1e3:.3f} ms",
                "`xbar bench energy`",
            ],
            [
                "energy per inference",
                f"{energy.total * 1e6:.2f} µJ ({how})",
                "`xbar bench energy`",
            ],
            [
                "digital int8 on the same MCU (estimate)",
                f"{energy.baseline.joules * 1e6:.3f} µJ",
                "`xbar bench energy`",
            ],
        ],
    )
    report.write()


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


def demo_programming(out: Path, report: Report) -> dict[str, Any]:
    from xbar.host.board import Board

    device = DeviceModel.preset(DEMO_DEVICE)
    target = program_pattern(device)
    tolerance = 0.02 * (device.g_max - device.g_min)
    print(f"\n== write-verify: the firmware programs {target.size} cells of {PROGRAM_URL} ==")
    report.section(
        "4. Write-verify on the reference board",
        f"The firmware's write-verify programs all {target.size} cells of {PROGRAM_URL} to a "
        "diagonal ramp of targets across the device's window (in-process emulation).",
    )
    with captured() as text, Board(PROGRAM_URL, timeout=600) as board:
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
    png = out / "write_verify.png"
    title = (
        f"Write-verify of {target.size} cells on {hello.profile} ({DEMO_DEVICE} cells, "
        f"emulated), tolerance ±{tolerance * 1e6:.3f} µS"
    )
    _plot_programming(target, result, png, title)
    print(f"wrote {png}")
    report.command(f"(xbar demo) Board({PROGRAM_URL!r}).program(...)", text.getvalue())
    report.figure(png, "targets, achieved conductances and the error distribution", "xbar demo")
    report.write()
    return {"converged": int(ok.sum()), "median_rel_error": float(np.median(err))}


def _plot_programming(target: np.ndarray, result: Any, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    achieved = np.full(target.shape, np.nan)
    for (r, c), g in zip(result.cells, result.achieved, strict=True):
        achieved[r, c] = g
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    vmin, vmax = np.nanmin(target) * 1e6, np.nanmax(target) * 1e6
    for ax, data, name in ((axes[0], target, "target"), (axes[1], achieved, "achieved")):
        im = ax.imshow(data * 1e6, vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set(title=f"{name} conductance", xlabel="column (index)", ylabel="row (index)")
        fig.colorbar(im, ax=ax, label="conductance (µS)")
    rel = (achieved - target) / target
    axes[2].hist(rel.ravel() * 100, bins=30, color="C0")
    axes[2].set(
        title="write-verify error", xlabel="(G − target) / target (%)", ylabel="cells (count)"
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_inference(out: Path, digits: int, report: Report) -> dict[str, Any]:
    from xbar.host.board import Board, CrossbarModel
    from xbar.training.quantize import digits_mlp

    model, data = digits_mlp()
    device = DeviceModel.preset(DEMO_DEVICE)
    print(
        f"\n== inference: {model.name} (int8 accuracy {data['int8_accuracy']:.3f} on "
        f"{len(data['y_test'])} test digits) on {INFER_URL} =="
    )
    report.section(
        "5. A larger network: digits on xbar-5x64x64",
        f"{model.name} (int8 accuracy {data['int8_accuracy']:.3f} on {len(data['y_test'])} "
        f"test digits), tiled on five 64×64 arrays of {DEMO_DEVICE} cells placed directly "
        f"in the emulator, {digits} test digits through the same firmware.",
    )
    with captured() as text, Board(INFER_URL, timeout=600) as board:
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
    report.command(f"(xbar demo --digits {digits}) {INFER_URL}", text.getvalue())
    report.write()
    return {"accuracy": accuracy, "agreement": agree}


def run(out: Path, board: bool = True, digits: int = 20) -> int:
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    t0 = time.perf_counter()
    demo_devices(out, report)
    if board:
        demo_campaign(out, report)
        demo_loop_on_one_array(out, report)
        demo_programming(out, report)
        demo_inference(out, digits, report)
    report.timings()
    report.text(f"`xbar demo` took {time.perf_counter() - t0:.0f} s of wall time in all.")
    path = report.write()
    print(f"\nwrote {path}")
    return 0
