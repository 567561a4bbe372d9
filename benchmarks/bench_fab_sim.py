"""Fabrication campaign on a simulated fab: best-so-far against the number of experiments.

The fab is a synthetic response surface over the mixed space of
the bundled spec ``perovskite`` (its constraints included), shaped like usability
(0 … ≈ 0.45, larger is better):

- smooth effects: a log-normal bump in pore diameter (best at 50 nm), a bump in AAO
  length (best at 1.8 µm), a gentle optimum of the third etch (20 min), a weak optimum of
  the Ag thickness (200 nm);
- interactions: the sweep voltage's optimum moves with the compliance current (high
  compliance wants lower voltage), and Pb deposition helps long pores more than short ones;
- categorical jumps: material (MAPbI3 best, CsPbI3 worst), contact (carbon > probe >
  silver), PMMA a small gain for FAPbI3 only;
- noise: every measurement adds N(0, 0.01²) (replicates differ);
- infeasible regions: besides the spec's known material × CVD-temperature constraints, an
  unknown one: pores narrower than 20 nm in templates longer than 2.5 µm do not fill, and
  such devices measure 0.

Every method runs the same campaign loop as ``xbar fab`` (a :class:`Search` over the
spec's parametrization with the spec's sampler, batches of ``--batch``) for ``--budget``
experiments, from no data. Reported: the true (noise-free) value of the best *measured*
device after n experiments, median and quartiles over seeds, and a PNG of the curves.

Run: ``python -m benchmarks.bench_fab_sim`` (options: --seeds, --budget, --batch,
--methods, --jobs, --out).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402
from xbar.training.fab.perovskite import SPEC_PATH  # noqa: E402
from xbar.training.fab.spec import load_spec  # noqa: E402
from xbar.training.search import DEFAULT_METHOD, METHODS, Search  # noqa: E402

from benchmarks.run_all import run_meta, write_results  # noqa: E402

NOISE = 0.01
MATERIAL = {"MAPbI3": 0.0, "MAPbBr3": -0.06, "FAPbI3": -0.08, "CsPbI3": -0.12}
CONTACT = {"carbon": 0.03, "probe": 0.0, "silver": -0.04}
CHECKPOINTS = (10, 20, 30, 50, 75, 100)


def true_value(v: dict[str, Any]) -> float:
    """The simulated fab's noise-free usability of a device made with values ``v``."""
    if v["aao_diameter"] < 20 and v["aao_length"] > 2.5:
        return 0.0  # the unknown infeasible region: pores do not fill
    bump = math.exp(-0.5 * (math.log(v["aao_diameter"] / 50) / 0.7) ** 2)
    bump *= math.exp(-0.5 * ((v["aao_length"] - 1.8) / 0.7) ** 2)
    etch = 1 - ((v["third_etch"] - 20) / 15) ** 2
    silver = 1 - 0.3 * ((v["ag_thickness"] - 200) / 400) ** 2
    best_voltage = 7 - 0.5 * (math.log10(v["compliance_current"]) + 5)  # 7 V … 5 V
    sweep = math.exp(-0.5 * ((v["sweep_voltage"] - best_voltage) / 1.5) ** 2)
    lead = 0.02 * math.log(v["pb_ed"]) * (v["aao_length"] - 1.5)
    pmma = 0.02 if v["pmma"] == "yes" and v["material"] == "FAPbI3" else 0.0
    value = 0.05 + 0.3 * bump * etch * silver * sweep + lead + pmma
    value += MATERIAL[v["material"]] + CONTACT[v["contact"]] - 0.005 * v["bt_time"] / 20
    return max(0.0, value)


def campaign(method: str, batch: int, seed: int, budget: int) -> tuple[list[float], float]:
    """Best true value after each experiment, and the CPU seconds it took."""
    warnings.filterwarnings("ignore")
    started = time.process_time()
    spec = load_spec(SPEC_PATH)
    rng = np.random.default_rng([seed, 99])
    search = Search(
        spec.parametrization(), method, seed=seed, budget=budget, batch=batch, sampler=spec.sample
    )
    best_measured, best_true, curve = -math.inf, 0.0, []
    while len(curve) < budget:
        for candidate in search.ask(min(batch, budget - len(curve))):
            truth = true_value(candidate.value)
            measured = truth + rng.normal(0, NOISE)
            search.tell(candidate, -measured)
            if measured > best_measured:
                best_measured, best_true = measured, truth
            curve.append(best_true)
    return curve, time.process_time() - started


def plot(results: list[dict], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = np.arange(1, budget + 1)
    for r in results:
        curves = np.array(r["curves"])
        q1, median, q3 = np.percentile(curves, [25, 50, 75], axis=0)
        (line,) = ax.plot(n, median, label=r["label"])
        ax.fill_between(n, q1, q3, color=line.get_color(), alpha=0.15)
    ax.set(
        xlabel="experiments",
        ylabel="true usability of the best measured device",
        title="Simulated fab: best so far (median, quartiles)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--methods",
        default="gp,gp@1,random,de,ngopt,metamodel",
        help="comma-separated; METHOD@K runs that method with batches of K",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    runs = []
    for item in args.methods.split(","):
        method, _, k = item.partition("@")
        if method not in METHODS:
            parser.error(f"unknown method {method!r}")
        runs.append((item, method, int(k) if k else args.batch))

    curves: dict[str, list[list[float]]] = {label: [[]] * args.seeds for label, _, _ in runs}
    cpu = dict.fromkeys(curves, 0.0)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(campaign, method, k, seed, args.budget): (label, seed)
            for label, method, k in runs
            for seed in range(args.seeds)
        }
        for future in tqdm(as_completed(futures), total=len(futures), desc="campaigns"):
            label, seed = futures[future]
            curves[label][seed], seconds = future.result()
            cpu[label] += seconds

    results = []
    for label, method, k in runs:
        array = np.array(curves[label])
        at = {
            n: [float(x) for x in np.percentile(array[:, n - 1], [25, 50, 75])]
            for n in CHECKPOINTS
            if n <= args.budget
        }
        results.append(
            {
                "label": f"{method} (batch {k})",
                "method": method,
                "batch": k,
                "at": at,
                "cpu_s": cpu[label],
                "curves": curves[label],
            }
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, args.budget, out / "bench_fab_sim.png")
    optimum = max_true_value()
    meta = run_meta("bench_fab_sim", args, parser)
    meta.update(noise=NOISE, optimum_estimate=optimum, default_method=DEFAULT_METHOD)
    checkpoints = [n for n in CHECKPOINTS if n <= args.budget]
    lines = [
        "## Fabrication campaign: simulated fab",
        "",
        "True (noise-free) usability of the best measured device after n experiments, median "
        f"(quartiles) over {args.seeds} seeds; the surface, its noise (σ = {NOISE}) and its "
        "infeasible regions are described in `benchmarks/bench_fab_sim.py`. Its best value, "
        f"from 200 000 random feasible samples plus local refinement, is ≈ {optimum:.3f}. "
        "Curves: [bench_fab_sim.png](benchmarks/results/bench_fab_sim.png).",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']}; {meta['date']}",
        "",
        "| method | " + " | ".join(f"n = {n}" for n in checkpoints) + " | CPU s (all seeds) |",
        "|---|" + "---:|" * (len(checkpoints) + 1),
    ]
    for r in results:
        cells = [
            f"{r['at'][n][1]:.3f} ({r['at'][n][0]:.3f}–{r['at'][n][2]:.3f})" for n in checkpoints
        ]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['cpu_s']:.0f} |")
    for r in results:
        del r["curves"][1:]  # keep one curve per method in the JSON: the table has the rest
    write_results("bench_fab_sim", meta, results, "\n".join(lines) + "\n", out)


def max_true_value(samples: int = 200_000) -> float:
    """The surface's optimum, estimated: best of random feasible samples, then refined by
    coordinate search on the continuous parameters."""
    spec = load_spec(SPEC_PATH)
    rng = np.random.default_rng(0)
    best, best_v = -1.0, None
    for _ in range(samples):
        v = spec.sample(rng)
        if spec.is_feasible(v):
            value = true_value(v)
            if value > best:
                best, best_v = value, v
    assert best_v is not None
    for _ in range(3):
        for p in spec.parameters:
            if p.low is None or p.high is None or p.kind == "int":
                continue
            grid = (
                np.geomspace(p.low, p.high, 400)
                if p.kind == "log"
                else np.linspace(p.low, p.high, 400)
            )
            for x in grid:
                trial = {**best_v, p.name: float(x)}
                if true_value(trial) > best:
                    best, best_v = true_value(trial), trial
    return best


if __name__ == "__main__":
    main()
