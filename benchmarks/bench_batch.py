"""Batch-path throughput: a digits MLP (64-64-64-10, int8) tiled over 10×10 arrays.

The network is trained with scikit-learn on the bundled digits set, quantised to int8
(per-tensor symmetric weights, uint8 activations), and mapped to 10×10 tiles: each tile
takes 10 inputs on its rows and holds 5 weights as differential column pairs
``G± = g_min + max(±w, 0) · g_unit``. One inference is a fixed schedule of reference
MVMs (one per tile, with every DAC/ADC frame, LDAC edge and MicroPython call costed in
virtual cycles and joules) plus the firmware's digital work, evaluated for N inferences
at once by ``emulator.batch.BatchSession``. A short byte-level run of the same schedule
checks that the outputs, cycles and energy agree and gives the speed-up as a ratio.

Run: ``python -m benchmarks.bench_batch`` (options: --n, --profile, --byte-check, --out).
Writes ``bench_batch.json`` and ``bench_batch.md`` to the output folder
(default ``benchmarks/results``). Numpy is pinned to one thread.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from xbar.emulator.batch import BatchSession  # noqa: E402
from xbar.emulator.board_model import BoardModel  # noqa: E402
from xbar.emulator.board_profile import NoiseConfig, get_profile  # noqa: E402
from xbar.emulator.mvm_driver import MvmDriver  # noqa: E402
from xbar.emulator.mvm_schedule import ChargeStep, MvmStep, Step, run_bytes  # noqa: E402
from xbar.emulator.parts import DAC_MID, TIA_RF  # noqa: E402

from benchmarks.run_all import run_meta, write_results  # noqa: E402

ROWS, PAIRS = 10, 5  # a 10x10 tile: 10 inputs, 5 differential weight columns
INPUT_STEP = 3  # DAC codes per activation unit: 255 -> 0.23 V, below the disturb floor
GAIN = 3  # TIA 1 MΩ


@dataclass
class QuantLayer:
    w: np.ndarray  # int8 (out, in)
    w_scale: float
    b: np.ndarray  # float bias
    in_scale: float  # real value of one input activation unit
    out_scale: float | None  # real value of one output unit (None: final logits)


def train_and_quantise(seed: int = 0) -> tuple[list[QuantLayer], np.ndarray, np.ndarray, float]:
    """Digits MLP 64-64-64-10 in int8; returns layers, test inputs (uint8), labels, acc."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = digits.data / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=0.3, random_state=seed)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=600, random_state=seed)
    mlp.fit(x_tr, y_tr)
    float_acc = float(mlp.score(x_te, y_te))
    layers: list[QuantLayer] = []
    in_scale = 1.0 / 255.0
    act = x_tr
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        w_scale = float(np.abs(w).max() / 127.0)
        wq = np.clip(np.round(w.T / w_scale), -127, 127).astype(np.int64)
        act = np.maximum(act @ w + b, 0.0)
        last = i == len(mlp.coefs_) - 1
        out_scale = None if last else float(np.percentile(act, 99.9) / 255.0)
        layers.append(QuantLayer(wq, w_scale, b, in_scale, out_scale))
        if out_scale is not None:
            in_scale = out_scale
    x_q = np.clip(np.round(x_te * 255.0), 0, 255).astype(np.int64)
    return layers, x_q, y_te, float_acc


def digital_reference(layers: list[QuantLayer], x_q: np.ndarray) -> np.ndarray:
    """The integer pipeline the analog one approximates (exact accumulations)."""
    act = x_q
    for layer in layers:
        acc = act @ layer.w.T
        real = acc * layer.w_scale * layer.in_scale + layer.b
        if layer.out_scale is None:
            return real
        act = np.clip(np.round(np.maximum(real, 0.0) / layer.out_scale), 0, 255).astype(np.int64)
    return act


@dataclass
class Tile:
    layer: int
    array: int
    rows: slice  # input slice
    outs: slice  # output slice


def plan_tiles(layers: list[QuantLayer]) -> list[Tile]:
    tiles, array = [], 0
    for li, layer in enumerate(layers):
        n_out, n_in = layer.w.shape
        for t in range(0, n_in, ROWS):
            for u in range(0, n_out, PAIRS):
                tiles.append(
                    Tile(li, array, slice(t, min(t + ROWS, n_in)), slice(u, min(u + PAIRS, n_out)))
                )
                array += 1
    return tiles


def schedule(layers: list[QuantLayer], tiles: list[Tile]) -> list[Step]:
    """Per inference: one MVM per tile, then the firmware's digital work."""
    steps: list[Step] = []
    for li, layer in enumerate(layers):
        for tile in (t for t in tiles if t.layer == li):
            steps.append(MvmStep(tile.array))
            steps.append(ChargeStep("add", 2 * PAIRS))  # pair difference + accumulate
        steps.append(ChargeStep("requant", layer.w.shape[0]))
        if layer.out_scale is not None:
            steps.append(ChargeStep("relu", layer.w.shape[0]))
    return steps


def program(board: BoardModel, layers: list[QuantLayer], tiles: list[Tile]) -> float:
    """Write every tile's conductances; returns g_unit (S per weight unit)."""
    dev = board.device
    g_unit = (dev.g_max - dev.g_min) / 127.0
    for tile in tiles:
        w = np.zeros((ROWS, PAIRS), dtype=np.int64)
        block = layers[tile.layer].w[tile.outs, tile.rows].T  # (inputs, outputs)
        w[: block.shape[0], : block.shape[1]] = block
        g = np.empty((ROWS, 2 * PAIRS))
        g[:, 0::2] = dev.g_min + np.maximum(w, 0) * g_unit
        g[:, 1::2] = dev.g_min + np.maximum(-w, 0) * g_unit
        board.set_conductances(tile.array, g)
    return g_unit


def tile_codes(act: np.ndarray, tile: Tile) -> np.ndarray:
    codes = np.full((act.shape[0], ROWS), DAC_MID, dtype=np.int64)
    part = act[:, tile.rows]
    codes[:, : part.shape[1]] = DAC_MID + INPUT_STEP * part
    return codes


def infer_batch(
    board: BoardModel,
    layers: list[QuantLayer],
    tiles: list[Tile],
    steps: list[Step],
    x_q: np.ndarray,
    g_unit: float,
) -> np.ndarray:
    """N inferences through the batch path; returns the final-layer real outputs."""
    # ADC codes per (weight unit × activation unit): V/code · g_unit · Rf / (V per ADC code).
    per_unit = INPUT_STEP * (20.0 / 65536) * g_unit * TIA_RF[GAIN] / (20.48 / 65536)
    session = BatchSession(board, steps, x_q.shape[0])
    act = x_q
    out = act
    for li, layer in enumerate(layers):
        acc = np.zeros((act.shape[0], layer.w.shape[0]))
        layer_tiles = [t for t in tiles if t.layer == li]
        inputs: dict[int, np.ndarray] = {}  # one code array per input slice, shared by its tiles
        for tile in layer_tiles:
            if tile.rows.start not in inputs:
                inputs[tile.rows.start] = tile_codes(act, tile)
        results = session.mvms([inputs[t.rows.start] for t in layer_tiles])
        for tile, result in zip(layer_tiles, results, strict=True):
            diff = result[:, 1::2] - result[:, 0::2]  # G+ minus G- (the TIA inverts)
            n_out = tile.outs.stop - tile.outs.start
            acc[:, tile.outs] += diff[:, :n_out]
        real = acc / per_unit * layer.w_scale * layer.in_scale + layer.b
        if layer.out_scale is None:
            out = real
        else:
            act = np.clip(np.round(np.maximum(real, 0.0) / layer.out_scale), 0, 255)
            act = act.astype(np.int64)
    session.finish()
    return out


def make_board(profile: str, noise: NoiseConfig, seed: int) -> BoardModel:
    board = BoardModel(profile, seed=seed, device="pvk-best", noise=noise)
    MvmDriver(board, gain=GAIN).setup()
    return board


def run_variant(
    name: str,
    noise: NoiseConfig,
    args: argparse.Namespace,
    layers: list[QuantLayer],
    x_q: np.ndarray,
    y: np.ndarray,
) -> dict[str, object]:
    tiles = plan_tiles(layers)
    steps = schedule(layers, tiles)
    t_setup = time.perf_counter()
    board = make_board(args.profile, noise, args.seed)
    g_unit = program(board, layers, tiles)
    # Plans (one probe per tile) are made on first use; time them apart.
    BatchSession(board, steps, 1)
    setup_s = time.perf_counter() - t_setup
    reps = -(-args.n // x_q.shape[0])
    inputs = np.tile(x_q, (reps, 1))[: args.n]
    labels = np.tile(y, reps)[: args.n]
    infer_batch(board, layers, tiles, steps, inputs[: min(args.n, 2000)], g_unit)  # warm-up
    walls, cpus = [], []
    # One core, also when numpy was imported (and its BLAS pool sized) before this module
    # set the thread variables, as under benchmarks.run_all.
    single_thread = threadpool_limits(limits=1)
    for rep in range(args.repeat):
        cycles0 = board.clock.cycles
        mark = board.ledger.mark()
        start, cpu_start = time.perf_counter(), time.process_time()
        logits = infer_batch(board, layers, tiles, steps, inputs, g_unit)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
        if rep == 0:
            energy = board.ledger.since(mark)
            cycles = (board.clock.cycles - cycles0) / args.n
            accuracy = float(np.mean(np.argmax(logits, axis=1) == labels))
    single_thread.unregister()
    wall = min(walls)
    result: dict[str, object] = {
        "variant": name,
        "inferences": args.n,
        "wall_s": wall,
        "wall_s_all_runs": walls,
        "inferences_per_s": args.n / wall,
        "inferences_per_s_median": args.n / float(np.median(walls)),
        # CPU time of this (single-threaded) process: the one-core rate on a shared machine.
        "cpu_s_all_runs": cpus,
        "inferences_per_cpu_s": args.n / min(cpus),
        "setup_and_plan_s": setup_s,
        "accuracy": accuracy,
        "virtual_cycles_per_inference": cycles,
        "virtual_ms_per_inference": 1e3 * cycles / board.clock.mcu_hz,
        "energy_per_inference_j": {k: v / args.n for k, v in energy.items()},
        "energy_total_per_inference_j": sum(energy.values()) / args.n,
        "tiles": len(tiles),
    }
    if args.byte_check:
        result["byte_check"] = byte_check(args, noise, layers, tiles, steps, x_q[: args.byte_check])
    return result


def byte_check(
    args: argparse.Namespace,
    noise: NoiseConfig,
    layers: list[QuantLayer],
    tiles: list[Tile],
    steps: list[Step],
    x_q: np.ndarray,
) -> dict[str, object]:
    """Run a few inferences both ways from identical boards; compare and time them."""
    batch_board, byte_board = (make_board(args.profile, noise, args.seed) for _ in range(2))
    g_unit = program(batch_board, layers, tiles)
    program(byte_board, layers, tiles)
    BatchSession(batch_board, steps, 1)  # plans, outside the timing
    inputs: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    original = BatchSession.mvms

    def recording(self: BatchSession, codes_list: list[np.ndarray]) -> list[np.ndarray]:
        results = original(self, codes_list)
        inputs.extend(codes_list)
        outputs.extend(results)
        return results

    BatchSession.mvms = recording  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        infer_batch(batch_board, layers, tiles, steps, x_q, g_unit)
        batch_s = time.perf_counter() - start
    finally:
        BatchSession.mvms = original  # type: ignore[method-assign]
    start = time.perf_counter()
    byte_outputs = run_bytes(byte_board, steps, inputs)
    byte_s = time.perf_counter() - start
    differ = sum(int(np.count_nonzero(a != b)) for a, b in zip(outputs, byte_outputs, strict=True))
    e_byte, e_batch = byte_board.ledger.total(), batch_board.ledger.total()
    return {
        "inferences": int(x_q.shape[0]),
        "byte_level_s": byte_s,
        "batch_s": batch_s,
        "speedup": byte_s / batch_s,
        "adc_codes_compared": int(sum(o.size for o in outputs)),
        "adc_codes_differing": differ,
        "same_cycles": byte_board.clock.cycles == batch_board.clock.cycles,
        "energy_rel_diff": abs(e_byte - e_batch) / e_byte,
    }


def markdown(results: list[dict[str, object]], meta: dict[str, object]) -> str:
    lines = [
        "# Batch-path throughput: digits MLP 64-64-64-10 on 10×10 tiles",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, date {meta['date']}, profile `{meta['profile']}`, "
        f"device `{meta['device']}`, {meta['tiles']} tiles, one numpy thread, best and "
        f"median of {meta['repeat']} timed runs after a warm-up; load average "
        f"{meta['load_average']} at the start (a shared machine).  ",
        f"Float MLP accuracy {meta['float_accuracy']:.4f}; int8 digital reference "
        f"{meta['int8_accuracy']:.4f}.",
        "",
        "| noise | inferences | best wall s | inferences/s (best) | inferences/s (median) "
        "| inferences per CPU-s | accuracy | virtual ms/inference | energy/inference (J) "
        "| array J |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        e = r["energy_per_inference_j"]
        assert isinstance(e, dict)
        lines.append(
            f"| {r['variant']} | {r['inferences']} | {r['wall_s']:.2f} | "
            f"{r['inferences_per_s']:.0f} | {r['inferences_per_s_median']:.0f} | "
            f"{r['inferences_per_cpu_s']:.0f} | "
            f"{r['accuracy']:.4f} | "
            f"{r['virtual_ms_per_inference']:.1f} | {r['energy_total_per_inference_j']:.3e} | "
            f"{e.get('array', 0.0):.3e} |"
        )
    checks = [r for r in results if "byte_check" in r]
    if checks:
        lines += [
            "",
            "Byte-level check (same schedule, same seed, run frame by frame):",
            "",
            "| noise | inferences | byte-level s | batch s | speed-up | ADC codes differing "
            "| same cycles | energy rel. diff |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in checks:
            c = r["byte_check"]
            assert isinstance(c, dict)
            lines.append(
                f"| {r['variant']} | {c['inferences']} | {c['byte_level_s']:.2f} | "
                f"{c['batch_s']:.3f} | {c['speedup']:.0f}× | "
                f"{c['adc_codes_differing']} of {c['adc_codes_compared']} | "
                f"{c['same_cycles']} | {c['energy_rel_diff']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="inferences per variant")
    parser.add_argument("--profile", default="xbar-196x10x10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (best is reported)")
    parser.add_argument(
        "--byte-check",
        type=int,
        default=1,
        help="inferences to run byte-level for the check (0: skip)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    layers, x_q, y, float_acc = train_and_quantise(args.seed)
    tiles = plan_tiles(layers)
    if len(tiles) > get_profile(args.profile).arrays:
        parser.error(f"{len(tiles)} tiles do not fit profile {args.profile}")
    int8_acc = float(np.mean(np.argmax(digital_reference(layers, x_q), axis=1) == y))
    variants = {
        "off": NoiseConfig.off(),
        # Drift re-solves every array's operator at each drift step; the default run
        # keeps every other source on.
        "default (no drift)": replace(NoiseConfig(), drift_nu=0.0),
    }
    results = [run_variant(name, noise, args, layers, x_q, y) for name, noise in variants.items()]
    meta: dict[str, object] = {
        **run_meta("bench_batch", args, parser),
        "profile": args.profile,
        "device": "pvk-best",
        "tiles": len(tiles),
        "repeat": args.repeat,
        "load_average": " ".join(f"{x:.1f}" for x in load_start),
        "float_accuracy": float_acc,
        "int8_accuracy": int8_acc,
    }
    write_results("bench_batch", meta, results, markdown(results, meta), args.out)


if __name__ == "__main__":
    main()
