"""Robustness under device noise: ERM, fixed noise and BayesMulti on the digits MLP.

Every method trains the same network family (64-W-10 ReLU MLP, the width BayesMulti
chose, same optimiser and schedule, :mod:`xbar.training.harness`) and is evaluated on the
held-out test set under log-normal weight noise w·exp(ε), ε ~ N(0, σ²), accuracy averaged
over ``--draws`` Monte Carlo draws (same seed for every model), at the σ of each of the 43
published devices and on the grid {0, 0.3, 0.5, 0.8, 1.0, 1.3}. Two families: BayesMulti
searched over --widths, and restricted to --deployable-widths (the firmware runs at most
512-wide layers), each with the three baselines at its chosen width. On the grid every
model is evaluated with and without the mean-gain calibration of its biases
(:func:`xbar.training.robustness.gain_calibration`, an option, off by default); on the
devices without it.

Parts, in order: (1) the search-strategy comparison that chose BayesMulti's default
(several training.search methods, same budget and batch, on a cheaper proxy of the
search: narrower widths and fewer epochs); (2) the BayesMulti searches on a 2-worker Dask
LocalCluster, objective the mean validation accuracy at σ ∈ --targets; (3) baselines and
evaluation; (4) last, on a quieter machine, the same fixed set of trials on 1 and on 2 Dask
workers, for the speed-up (the load average is recorded).

Run: ``python -m benchmarks.bench_robustness`` (options: --budget, --epochs, --draws,
--compare-budget, --compare-seeds, --out). Writes bench_robustness.json/.md and
bench_robustness.png into benchmarks/results.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from xbar.training.bayesmulti import (  # noqa: E402
    DEFAULT_STRATEGY,
    SearchSettings,
    evaluate_trial,
    open_client,
    run_search,
    train_alpha,
)
from xbar.training.certificate import certify  # noqa: E402
from xbar.training.devices.usability import analyse  # noqa: E402
from xbar.training.harness import TrainConfig, method_spec, train_network  # noqa: E402
from xbar.training.robustness import accuracy_vs_sigma, plot_accuracy_vs_sigma  # noqa: E402
from xbar.training.tasks import load_task  # noqa: E402

from benchmarks.run_all import run_meta, write_results  # noqa: E402

GRID = (0.0, 0.3, 0.5, 0.8, 1.0, 1.3)
STRATEGIES = ("gp", "bo", "de", "random")
TARGETS = {1.0: 0.95, 1.3: 0.85}
BASELINES = ("erm", "gaussian", "multinomial")


def device_sigmas() -> list[tuple[str, float]]:
    from xbar.training.devices.published import load_published

    return [(d.short_id, float(analyse(d.curves).sigma)) for d in load_published()]


def compare_strategies(client: Any, args: argparse.Namespace, work: Path) -> list[dict]:
    """Best validation accuracy each strategy finds with the same budget and batch."""
    rows = []
    for strategy in STRATEGIES:
        bests, walls = [], []
        for seed in range(args.compare_seeds):
            settings = SearchSettings(
                sigmas=(1.0,),
                draws=20,
                seed=seed,
                strategy=strategy,
                widths=(128, 256, 512),
                train=TrainConfig(epochs=args.compare_epochs),
            )
            log = work / f"compare-{strategy}-{seed}.jsonl"
            result = run_search(settings, args.compare_budget, log, client)
            bests.append(result.best.result["val_accuracy"])
            walls.append(result.wall_s)
            print(f"compare {strategy} seed {seed}: best {bests[-1]:.4f} in {walls[-1]:.0f} s")
        rows.append(
            {
                "strategy": strategy,
                "best_val_accuracy": bests,
                "mean_best": float(np.mean(bests)),
                "wall_s": walls,
            }
        )
    return rows


def speedup(args: argparse.Namespace) -> dict[str, Any]:
    """The same fixed trials (first points of a seeded search) on 1 and on 2 workers."""
    from distributed import wait

    settings = SearchSettings(
        sigmas=(1.0,), draws=20, widths=(512,), train=TrainConfig(epochs=args.compare_epochs)
    )
    rng = np.random.default_rng(0)
    values = [
        {
            "p1": [float(rng.uniform(0, 0.3))],
            "p2": [float(rng.uniform(0, 0.3))],
            "noise_scale": 1.0,
            "clip": 1.0,
            "width": 512,
        }
        for _ in range(args.speedup_trials)
    ]
    load = os.getloadavg()
    walls = {}
    for workers in (1, 2):
        with open_client(None, workers) as client:
            # Warm every worker (imports, first torch call) outside the timing.
            warm = [
                client.submit(
                    evaluate_trial, settings.to_dict(), values[0], pure=False, workers=[w]
                )
                for w in client.scheduler_info()["workers"]
            ]
            wait(warm)
            start = time.perf_counter()
            futures = [
                client.submit(evaluate_trial, settings.to_dict(), v, pure=False) for v in values
            ]
            wait(futures)
            walls[workers] = time.perf_counter() - start
    return {
        "trials": len(values),
        "wall_1_worker_s": walls[1],
        "wall_2_workers_s": walls[2],
        "speedup": walls[1] / walls[2],
        "load_average_before": list(load),
        "load_average_after": list(os.getloadavg()),
    }


def _grid_table(grid: dict[str, list[float]]) -> list[str]:
    lines = [
        "| model | " + " | ".join(f"σ = {s:g}" for s in GRID) + " |",
        "|---|" + "---:|" * len(GRID),
    ]
    return lines + [
        f"| {m} | " + " | ".join(f"{a:.4f}" for a in accs) + " |" for m, accs in grid.items()
    ]


def _targets(grid: dict[str, list[float]], name: str) -> str:
    """Each target σ's accuracy for ``name`` and whether it meets the target."""
    accs = {s: grid[name][GRID.index(s)] for s in TARGETS}
    return ", ".join(
        f"σ = {s:g}: {accs[s]:.4f} {'met' if accs[s] >= t else 'missed'}"
        for s, t in TARGETS.items()
    )


def markdown(meta: dict[str, Any], res: dict[str, Any]) -> str:
    families = res["families"]
    lines = [
        "# Robustness under device noise: digits MLP, ERM vs fixed noise vs BayesMulti",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, date {meta['date']}; load average at the start "
        f"{meta['load_average']} (a shared machine).  ",
        "Network: 64-W-10 ReLU MLP; each row is `method-W`: BayesMulti with the width its "
        "search chose, and the three baselines at that same width; "
        f"{meta['epochs']} epochs, same optimiser. Test set {meta['n_test']} digits; "
        f"accuracy = mean over {meta['draws']} noise draws w·exp(ε), ε ~ N(0, σ²), biases "
        "digital (noise-free), same draws for every model; the Gaussian baseline trains "
        f"with σ = {max(meta['targets']):g}.  ",
        "Two BayesMulti searches, each with strategy "
        f"`{meta['strategy']}`, budget {meta['budget']} trials on a 2-worker Dask "
        f"LocalCluster, objective = mean validation accuracy at σ ∈ {list(meta['targets'])}:",
        "",
    ]
    for f in families:
        lines.append(
            f"- {f['label']} (widths {', '.join(map(str, f['widths']))}): chose W = "
            f"{f['width']}; search wall time {f['search']['wall_s']:.0f} s "
            f"({f['search']['trials']} trials, best validation {f['search']['best']:.4f}); "
            f"α: {f['alpha']}."
        )
    lines += [
        "",
        "**Without calibration** (the trained biases, the default):",
        "",
        *_grid_table(res["grid"]),
        "",
        "**With the mean-gain calibration** (an option, same draws: each layer's bias scaled "
        "by the mean gain E[exp(ε)] = exp(σ²/2) its inputs carry, compounded through the "
        "layers and relative to the gain the model was trained under; "
        "`training/robustness.py` `gain_calibration`, the same rule for every model):",
        "",
        *_grid_table(res["grid_calibrated"]),
        "",
        "Targets for BayesMulti (≥ 0.95 at σ = 1.0, ≥ 0.85 at σ = 1.3):",
        "",
    ]
    for f in families:
        name = f"bayesmulti-{f['width']}"
        lines.append(
            f"- {name}: {_targets(res['grid'], name)}; with the calibration "
            f"{_targets(res['grid_calibrated'], name)}."
        )
    lines += [
        "",
        "On the 43 published devices (each device's own σ, no calibration): mean "
        "accuracy over devices, and the number of devices where the model reaches 0.9.",
        "",
        "| model | mean over 43 devices | devices ≥ 0.9 | worst device |",
        "|---|---:|---:|---:|",
    ]
    for m in res["grid"]:
        accs = np.array([d[m] for d in res["devices"]])
        worst = res["devices"][int(np.argmin(accs))]
        lines.append(
            f"| {m} | {accs.mean():.4f} | {int((accs >= 0.9).sum())} | "
            f"{accs.min():.4f} ({worst['id']}, σ = {worst['sigma']:.2f}) |"
        )
    if res.get("comparison"):
        lines += [
            "",
            "Search strategy comparison (proxy: widths 128–512, "
            f"{meta['compare_epochs']} epochs, σ = 1.0, budget {meta['compare_budget']}, "
            f"batches of 2 on 2 workers, {meta['compare_seeds']} seeds): best validation "
            "accuracy found.",
            "",
            "| strategy | mean best | per seed | wall s |",
            "|---|---:|---|---:|",
        ]
        for r in res["comparison"]:
            lines.append(
                f"| {r['strategy']} | {r['mean_best']:.4f} | "
                + ", ".join(f"{b:.4f}" for b in r["best_val_accuracy"])
                + f" | {np.mean(r['wall_s']):.0f} |"
            )
    for f in families:
        if not f.get("certificate"):
            continue
        c = f["certificate"]
        lines += [
            "",
            f"Certificate (Theorem 1, bayesmulti-{f['width']}, 100 test inputs): median f "
            f"{c['f_median']:.4f}, radius {c['radius']:.3g}; per layer: "
            + "; ".join(
                f"layer {la['layer']} Θ = {la['theta']}, p1 = {la['p1']:.3f}, "
                f"p2 = {la['p2']:.3f}, median r = {la['radius_median']:.3g}, "
                f"{la['kept']}/{la['checked']} disturbances inside the set kept "
                "the prediction"
                for la in c["layers"]
            )
            + ".",
        ]
    if res.get("speedup"):
        s = res["speedup"]
        lines += [
            "",
            f"Dask speed-up: {s['trials']} identical-size trials (width 512, "
            f"{meta['compare_epochs']} epochs) took {s['wall_1_worker_s']:.1f} s on 1 "
            f"worker and {s['wall_2_workers_s']:.1f} s on 2: **{s['speedup']:.2f}×** "
            f"(load average before {s['load_average_before'][0]:.2f}, after "
            f"{s['load_average_after'][0]:.2f}).",
        ]
    lines += [
        "",
        f"Total wall time of this benchmark: {res['total_wall_s']:.0f} s. "
        "Plot: `benchmarks/results/bench_robustness.png`.",
    ]
    return "\n".join(lines) + "\n"


def _widths(text: str) -> tuple[int, ...]:
    return tuple(int(w) for w in text.split(",") if w.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=8, help="BayesMulti trials per search")
    parser.add_argument("--widths", default="1024,2048,4096", help="widths BayesMulti may choose")
    parser.add_argument(
        "--deployable-widths",
        default="512",
        help="widths of the second search, the firmware's (empty: skip it)",
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--targets", default="1.0,1.3", help="σ of the search objective")
    parser.add_argument(
        "--strategy",
        help="BayesMulti's strategy (default: the comparison's "
        "winner, or the library default with --skip-compare)",
    )
    parser.add_argument("--compare-budget", type=int, default=8)
    parser.add_argument("--compare-seeds", type=int, default=2)
    parser.add_argument("--compare-epochs", type=int, default=15)
    parser.add_argument("--speedup-trials", type=int, default=4)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-speedup", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    load = os.getloadavg()
    task = load_task("digits")
    targets = tuple(float(s) for s in args.targets.split(","))
    searched = [("searched", _widths(args.widths))]
    if _widths(args.deployable_widths):
        searched.append(("deployable", _widths(args.deployable_widths)))
    res: dict[str, Any] = {"families": []}
    results = []
    with tempfile.TemporaryDirectory() as tmp, open_client(None, 2) as client:
        work = Path(tmp)
        if not args.skip_compare:
            res["comparison"] = compare_strategies(client, args, work)
        strategy = args.strategy or DEFAULT_STRATEGY
        if not args.strategy and res.get("comparison"):
            strategy = max(res["comparison"], key=lambda r: r["mean_best"])["strategy"]
        for label, widths in searched:
            settings = SearchSettings(
                sigmas=targets,
                draws=args.draws,
                strategy=strategy,
                widths=widths,
                train=TrainConfig(epochs=args.epochs),
            )
            result = run_search(
                settings,
                args.budget,
                work / f"search-{label}.jsonl",
                client,
                progress=lambda t: print(f"trial {t.id}: {t.result}"),
            )
            results.append((label, settings, result))
    models: dict[str, Any] = {}
    for label, settings, result in results:
        alpha = result.alpha
        family: dict[str, Any] = {
            "label": label,
            "widths": list(settings.widths),
            "width": alpha.width,
            "alpha": alpha.to_dict(),
            "search": {
                "wall_s": result.wall_s,
                "trials": len(result.trials),
                "best": result.best.result["val_accuracy"],
                "log": [{"value": t.value, **t.result} for t in result.trials],
            },
        }
        models[f"bayesmulti-{alpha.width}"] = train_alpha(settings, alpha)
        for name in BASELINES:
            spec = method_spec(name, task, "mlp", (alpha.width,), max(targets))
            models[f"{name}-{alpha.width}"] = train_network(spec, task, settings.train)
        if any(m.active for m in alpha.multinomial):
            bayesmulti = models[f"bayesmulti-{alpha.width}"]
            family["certificate"] = certify(bayesmulti, task.x_test[:100], checks=4).to_dict()
        res["families"].append(family)
    devices = device_sigmas()
    curves: dict[str, list[Any]] = {}
    res["grid"], res["grid_calibrated"], res["devices"] = {}, {}, []
    for name, model in models.items():
        for key, calibrate in (("grid", False), ("grid_calibrated", True)):
            points = accuracy_vs_sigma(
                model, task.x_test, task.y_test, GRID, args.draws, calibrate=calibrate
            )
            res[key][name] = [p.mean for p in points]
            curves.setdefault(name, points)
        print(name, [f"{a:.4f}" for a in res["grid"][name]])
    per_device = {
        name: accuracy_vs_sigma(m, task.x_test, task.y_test, [s for _, s in devices], args.draws)
        for name, m in models.items()
    }
    for i, (short, sigma) in enumerate(devices):
        res["devices"].append(
            {"id": short, "sigma": sigma, **{n: per_device[n][i].mean for n in models}}
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_accuracy_vs_sigma(
        {n: curves[n] + per_device[n] for n in models},
        out / "bench_robustness.png",
        "digits 64-W-10: test accuracy under w·exp(ε)",
        marks=[s for _, s in devices],
    )
    if not args.skip_speedup:
        res["speedup"] = speedup(args)
    res["total_wall_s"] = time.perf_counter() - start
    meta = {
        **run_meta("bench_robustness", args, parser),
        "load_average": " ".join(f"{x:.1f}" for x in load),
        "epochs": args.epochs,
        "draws": args.draws,
        "budget": args.budget,
        "strategy": strategy,
        "targets": targets,
        "n_test": len(task.y_test),
        "compare_budget": args.compare_budget,
        "compare_seeds": args.compare_seeds,
        "compare_epochs": args.compare_epochs,
    }
    write_results("bench_robustness", meta, [res], markdown(meta, res), out)


if __name__ == "__main__":
    main()
