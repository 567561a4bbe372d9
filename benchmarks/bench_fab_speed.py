"""Campaign commands on a large store, and duplicate suggestions over random spaces.

Speed: a store of the bundled perovskite spec with 1000 measured experiments (random
feasible conditions on the lab's grid, random usability); CPU seconds of ``suggest`` (a
batch of 4, the default method) and of ``status``, both in process (the library call, the
figure the targets name: suggest <= 1 s, status <= 0.3 s) and as the ``xbar fab``
command (a fresh interpreter: imports included), repeated; median and range reported.

Duplicates: campaigns on random mixed spaces (categorical, ordinal, integer, stepped float
and log parameters; 1 to 3 of them), every method in turn, batches of 1 to 4 through the
store exactly as ``xbar fab suggest`` makes them, half of them measured before the next:
every suggestion is compared with every other point of its campaign in the spec's value
space. Target: 0 repeats in 10,000 suggestions; an exhausted space must say so.

Run: ``python -m benchmarks.bench_fab_speed`` (options: --rows, --repeats, --suggestions,
--jobs, --out).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402
from xbar.training.fab import campaign  # noqa: E402
from xbar.training.fab.campaign import CampaignError  # noqa: E402
from xbar.training.fab.perovskite import SPEC_PATH  # noqa: E402
from xbar.training.fab.spec import Parameter, Spec, load_spec  # noqa: E402
from xbar.training.fab.store import CampaignStore  # noqa: E402
from xbar.training.search import DEFAULT_METHOD, value_key  # noqa: E402

from benchmarks.run_all import run_meta, write_results  # noqa: E402

METHODS = ("gp", "metamodel", "random", "de", "gp-ei")


def big_store(path: Path, rows: int) -> Path:
    spec = dataclasses.replace(load_spec(SPEC_PATH), budget=rows + 1000)
    rng = np.random.default_rng(0)
    with CampaignStore.create(path, spec, spec.to_toml(), "none") as store, store.transaction():
        for _ in range(rows):
            ident = store.add_external(spec.for_lab(spec.sample(rng)))
            store.add_measurement(ident, None, {"usability": float(rng.uniform())}, None)
    return path


def cli_cpu(args: list[str]) -> float:
    """CPU seconds (user + system) of one `xbar fab` command in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-m", "xbar.host.cli.main", "fab", *args],
        check=True,
        capture_output=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def speed(rows: int, repeats: int) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as folder:
        path = big_store(Path(folder) / "big.sqlite", rows)
        timings: dict[str, list[float]] = {k: [] for k in ("suggest", "status")}
        with CampaignStore.open(path) as store:
            campaign.suggest(store, 4)  # imports (Nevergrad, scikit-learn) paid once
            for _ in tqdm(range(repeats), desc="in process"):
                started = time.process_time()
                campaign.suggest(store, 4)
                timings["suggest"].append(time.process_time() - started)
                started = time.process_time()
                campaign.status(store)
                timings["status"].append(time.process_time() - started)
        cli = {
            "suggest": [
                cli_cpu(["suggest", "--store", str(path), "--batch", "4", "--out", folder])
                for _ in range(max(1, repeats // 2))
            ],
            "status": [cli_cpu(["status", "--store", str(path)]) for _ in range(repeats)],
        }
    targets = {"suggest": 1.0, "status": 0.3}
    for where, table in (("in process", timings), ("command", cli)):
        for name, values in table.items():
            out.append(
                {
                    "what": name,
                    "where": where,
                    "rows": rows,
                    "median_s": float(np.median(values)),
                    "min_s": float(min(values)),
                    "max_s": float(max(values)),
                    "n": len(values),
                    "target_s": targets[name],
                    "met": float(max(values)) <= targets[name],
                }
            )
    return out


def random_spec(rng: np.random.Generator, method: str, index: int) -> Spec:
    params = []
    for i in range(int(rng.integers(1, 4))):
        kind = ["categorical", "ordinal", "int", "float", "log"][int(rng.integers(5))]
        if kind == "categorical":
            params.append(Parameter(f"p{i}", kind, choices=tuple("abcd"[: rng.integers(2, 5)])))
        elif kind == "ordinal":
            params.append(Parameter(f"p{i}", kind, choices=(2, 4, 6, 8)[: rng.integers(2, 5)]))
        elif kind == "int":
            params.append(Parameter(f"p{i}", "int", low=0.0, high=float(rng.integers(1, 6))))
        elif kind == "float":
            params.append(Parameter(f"p{i}", "float", low=0.0, high=1.0, step=0.1))
        else:
            params.append(Parameter(f"p{i}", "log", low=1.0, high=100.0))
    return Spec(name=f"r{index}", parameters=tuple(params), budget=10**6, method=method, seed=index)


def one_campaign(index: int) -> tuple[int, int, int, int]:
    """One campaign on a random space: suggestions made, repeats among its points,
    whether it was told its space is exhausted, and whether that was wrong."""
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng([1, index])
    spec = random_spec(rng, METHODS[index % len(METHODS)], index)
    finite = spec.finite_points()
    made = repeats = exhausted = wrong = 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.sqlite"
        with CampaignStore.create(path, spec, spec.to_toml(), "none") as store:
            for round_ in range(12):
                k = int(rng.integers(1, 5))
                try:
                    batch = campaign.suggest(store, k)
                except CampaignError as exc:
                    exhausted = 1
                    left = None if finite is None else len(finite) - len(store.experiments())
                    wrong = int(left is None or left >= k or "exhausted" not in str(exc))
                    break
                made += len(batch.experiments)
                keys = [value_key(e.params) for e in store.experiments()]
                repeats += len(keys) - len(set(keys))
                if round_ % 2:
                    with store.transaction():
                        for e in store.experiments():
                            if e.state == "pending":
                                loss = {"usability": float(rng.uniform())}
                                store.add_measurement(e.id, None, loss, None)
    return made, repeats, exhausted, wrong


def duplicates(total: int, jobs: int) -> dict:
    """Campaigns (in ``jobs`` processes) until ``total`` suggestions are made."""
    made = repeats = exhausted = wrong = campaigns = 0
    progress = tqdm(total=total, desc="suggestions")
    with ProcessPoolExecutor(jobs) as pool:
        while made < total:
            wave = range(campaigns, campaigns + 4 * jobs)
            campaigns += len(wave)
            for m, r, e, w in pool.map(one_campaign, wave):
                made, repeats, exhausted, wrong = made + m, repeats + r, exhausted + e, wrong + w
                progress.update(m)
    progress.close()
    return {
        "suggestions": made,
        "campaigns": campaigns,
        "repeats": repeats,
        "exhausted_said": exhausted,
        "exhausted_wrongly": wrong,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--suggestions", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=2, help="processes for the duplicates")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    rows = speed(args.rows, args.repeats)
    dupes = duplicates(args.suggestions, args.jobs)
    meta = run_meta("bench_fab_speed", args, parser)
    meta.update(default=DEFAULT_METHOD, duplicates=dupes)
    write_results("bench_fab_speed", meta, rows, render(meta, rows), args.out)


def render(meta: dict, rows: list[dict]) -> str:
    d = meta["duplicates"]
    lines = [
        "## Fabrication campaign: command speed on a 1000-row store, and duplicates",
        "",
        f"CPU seconds (user + system) on a store of {rows[0]['rows']} measured experiments "
        f"(the perovskite spec's 14 conditions), default method `{meta['default']}`, batch 4. "
        "In process: the library call after a first warm-up call (the targets: suggest ≤ 1 s, "
        "status ≤ 0.3 s); command: a fresh `xbar fab` interpreter, imports included.",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']}; {meta['date']}",
        "",
        "| command | where | median s | min–max s | runs | target s | met (max) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['where']} | {r['median_s']:.3f} | {r['min_s']:.3f}–"
            f"{r['max_s']:.3f} | {r['n']} | {r['target_s']} | {'yes' if r['met'] else 'no'} |"
        )
    lines += [
        "",
        f"Duplicates: {d['suggestions']} suggestions in {d['campaigns']} campaigns on random "
        f"mixed spaces ({', '.join(METHODS)} in turn): **{d['repeats']} repeats** (target 0); "
        f"{d['exhausted_said']} campaigns used up their space and were told so "
        f"({d['exhausted_wrongly']} refusals while points were left).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
