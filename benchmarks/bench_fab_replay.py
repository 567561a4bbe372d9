"""Fabrication campaign replayed on real data: how many experiments until the best device?

The 43 published devices are the pool. Their conditions, in the units of
the bundled spec ``perovskite``, are the only experiments the "lab" can run: every
optimizer's suggestions are constrained to the devices not measured yet
(``Search(pool=…)``; model-based methods score the pool, the others are mapped to the
nearest unmeasured device in the encoded space), and the lab answers with that device's
usability, computed from its I–V file by ``training.devices.usability.analyse``. Every method
starts from the same 3 random devices per seed, then asks one experiment at a time (or
``--batch`` at a time). Metric: experiments, the 3 included, until the best device
(pvk-30, usability 0.349) has been measured; median and quartiles over the seeds.

``uniform`` is the reference random search: unmeasured devices in uniformly random order
(expected median ≈ 22 of 43). Nevergrad's ``random`` differs: its uniform points in the
box land on the nearest device, which favours devices far from the others.

Run: ``python -m benchmarks.bench_fab_replay`` (options: --seeds, --methods, --batch,
--jobs, --slow-seeds, --out). Writes ``bench_fab_replay.json`` and ``.md`` (default folder
benchmarks/results).

``--suite`` replays the campaign methods on datasets of different shapes instead — the 43
published devices and synthetic pools (:mod:`benchmarks.bench_fab_suite`: categorical, continuous
and mixed, 96 to 400 rows; no downloads) — and reports per dataset and method the
experiments to the top 1 % of the pool and to its best row (median with its 95 %
interval, quartiles), CPU per suggestion, and each method's mean rank: the default
(``training.search.DEFAULT_METHOD``) is the method with the best rank. Writes
``bench_fab_suite.json`` and ``.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402
from xbar.training.devices.usability import analyse  # noqa: E402
from xbar.training.fab.perovskite import SPEC_PATH, published_experiments  # noqa: E402
from xbar.training.fab.spec import load_spec  # noqa: E402
from xbar.training.search import DEFAULT_METHOD, METHODS, Search  # noqa: E402

from benchmarks.run_all import run_meta, write_results  # noqa: E402

START = 3  # random devices every method starts from
# bo first: the slowest by far (bayes_opt maximises its acquisition with L-BFGS restarts,
# a minute or more per replay on a shared core), so it runs on --slow-seeds seeds only.
SLOW = ("bo", "bo-ei")
DEFAULT_METHODS = "bo,uniform,gp,gp-ei,metamodel,rf-metamodel,de,ngopt,random"


def replay(method: str, seed: int, values: list[dict], usability: np.ndarray, batch: int) -> int:
    """Experiments until the best device is measured, for one method and seed."""
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(len(values))]
    start, best = order[:START], int(np.argmax(usability))
    measured = set(start)
    if best in measured:
        return START
    if method == "uniform":
        return order.index(best) + 1
    spec = load_spec(SPEC_PATH)
    search = Search(
        spec.parametrization(),
        method,
        seed=seed,
        pool=values,
        budget=len(values),
        batch=batch,
        encoder=spec.encode,  # as `xbar fab suggest` builds it
    )
    encoded = np.array([search.encode(v) for v in values])
    for i in start:
        search.tell(values[i], -usability[i])
    while True:
        k = min(batch, len(values) - len(measured))
        for candidate in search.ask(k):
            free = [i for i in range(len(values)) if i not in measured]
            x = search.encode(candidate.value)
            device = free[int(np.argmin(np.linalg.norm(encoded[free] - x, axis=1)))]
            measured.add(device)
            search.tell(candidate, -usability[device])
            if device == best:
                return len(measured)


def timed_replay(
    method: str, seed: int, values: list[dict], usability: np.ndarray, batch: int
) -> tuple[int, float]:
    """:func:`replay` and the CPU seconds it took (in the worker process)."""
    warnings.filterwarnings("ignore")  # nevergrad's bounds and lambda notes
    started = time.process_time()
    count = replay(method, seed, values, usability, batch)
    return count, time.process_time() - started


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if "--suite" in argv:
        from benchmarks.bench_fab_suite import main as suite

        suite([a for a in argv if a != "--suite"])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument(
        "--slow-seeds",
        type=int,
        default=10,
        help=f"seeds for the slow methods ({', '.join(SLOW)}; default: 10)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    for m in methods:
        if m != "uniform" and m not in METHODS:
            parser.error(f"unknown method {m!r}")
    warnings.filterwarnings("ignore")  # nevergrad's bounds and lambda notes
    spec = load_spec(SPEC_PATH)
    experiments = published_experiments(spec)
    values = [v for _, v in experiments]
    usability = np.array([analyse(d.curves).usability for d, _ in experiments])

    seeds = {m: min(args.seeds, args.slow_seeds) if m in SLOW else args.seeds for m in methods}
    tasks = [(m, seed) for m in methods for seed in range(seeds[m])]
    counts: dict[str, list[int]] = {m: [0] * seeds[m] for m in methods}
    cpu = dict.fromkeys(methods, 0.0)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(timed_replay, m, seed, values, usability, args.batch): (m, seed)
            for m, seed in tasks
        }
        for future in tqdm(as_completed(futures), total=len(futures), desc="replays"):
            m, seed = futures[future]
            counts[m][seed], seconds = future.result()
            cpu[m] += seconds
    results = []
    for method in methods:
        q1, median, q3 = np.percentile(counts[method], [25, 50, 75])
        results.append(
            {
                "method": method,
                "median": float(median),
                "q1": float(q1),
                "q3": float(q3),
                "mean": float(np.mean(counts[method])),
                "within_10": float(np.mean(np.array(counts[method]) <= 10)),
                "seeds": seeds[method],
                "cpu_s": cpu[method],
                "counts": counts[method],
            }
        )
        print(
            f"{method:>13}: median {median:5.1f}  IQR {q1:4.1f}–{q3:4.1f}  cpu {cpu[method]:6.1f} s"
        )

    meta = run_meta("bench_fab_replay", args, parser)
    meta.update(
        pool=len(values),
        start=START,
        best_device=experiments[int(np.argmax(usability))][0].short_id,
        best_usability=float(usability.max()),
        batch=args.batch,
        seeds=args.seeds,
        target_median=10,
        default=DEFAULT_METHOD,
    )
    write_results("bench_fab_replay", meta, results, render(meta, results), args.out)


def render(meta: dict, results: list[dict]) -> str:
    """The Markdown section; the measured best median is marked, and the default."""
    best = min(r["median"] for r in results if r["method"] != "uniform")
    lines = [
        "## Fabrication campaign: replay on the 43 published devices",
        "",
        f"Experiments (the {meta['start']} random starting devices included) until the best "
        f"device ({meta['best_device']}, usability {meta['best_usability']:.3f}) is measured; "
        f"suggestions constrained to unmeasured devices, batch {meta['batch']}, "
        f"{meta['seeds']} seeds (`benchmarks/bench_fab_replay.py` says how). `uniform`: "
        f"devices in random order. Target for the default (`{meta['default']}`): median ≤ 10.",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']}; {meta['date']}",
        "",
        "| method | seeds | median | quartiles | mean | ≤ 10 experiments | CPU s (all seeds) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        name = r["method"]
        if name == meta["default"]:
            name = f"**{name}** (default)"
        elif r["median"] == best:
            name += " (best median)"
        lines.append(
            f"| {name} | {r['seeds']} | {r['median']:.1f} | {r['q1']:.1f}–{r['q3']:.1f} | "
            f"{r['mean']:.1f} | {100 * r['within_10']:.0f} % | {r['cpu_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
