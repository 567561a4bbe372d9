"""Accuracy against programming effort: how many pulses per cell a model needs on a device.

For pvk-median, the programming schemes from open loop (one pulse per cell) through
write-verify at tolerances of 4 … 0.5 weight steps, each with its **measured** mean pulses
per cell and residual (``training/devices/data/write_verify.json``, written by
``benchmarks/bench_write_verify.py``: the firmware's write-verify on emulated boards). For
each scheme, the test accuracy of two digits 64-512-10 models under that scheme's noise
model, over D draws and S training seeds (mean, 95 % interval over seeds):

- ERM (no noise in training);
- BayesMulti's α for open loop: the α the ``open-loop`` row of ``bench_robustness`` found
  (read from ``benchmarks/results/bench_robustness.json``), retrained per seed.

The accuracies are the noise model's prediction from the measured residuals, not boards
programmed end to end (``bench_board_loop`` compares the two on iris). The effort target:
BayesMulti reaches ERM's best accuracy with at most half the pulses per cell.

    python -m benchmarks.bench_effort --seeds 3 --draws 200
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.run_all import run_meta, write_results

DEVICE = "pvk-median"
RESULTS = Path(__file__).parent / "results"


def schemes() -> list[tuple[str, float]]:
    """(scheme, mean pulses per cell): open loop, then every measured tolerance."""
    from xbar.training.devices.device_model import WRITE_VERIFY_FILE

    table = json.loads(Path(WRITE_VERIFY_FILE).read_text()).get(DEVICE, {})
    rows = [("open-loop", 1.0)]
    for tol, row in sorted(table.get("tolerances", {}).items(), key=lambda kv: -float(kv[0])):
        rows.append((f"verify:{tol}", float(row["mean_pulses"])))
    return rows


def open_loop_alpha() -> dict[str, Any]:
    data = json.loads((RESULTS / "bench_robustness.json").read_text())
    for row in data["results"][0]["rows"]:
        if row["scheme"] == "open-loop":
            return dict(row["summary"]["alpha"])
    raise RuntimeError("bench_robustness.json has no open-loop row: run bench_robustness first")


def main(argv: list[str] | None = None) -> None:
    from xbar.training.devices.device_model import DeviceModel
    from xbar.training.harness import Alpha, TrainConfig, method_spec, train_network
    from xbar.training.noise_model import NoiseModel
    from xbar.training.robustness import accuracy_under_noise
    from xbar.training.stats import Interval, format_interval, seeds_interval
    from xbar.training.tasks import load_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = load_task("digits")
    device = DeviceModel.preset(DEVICE)
    target = NoiseModel.for_device(device, "open-loop")
    alpha = Alpha.from_dict(open_loop_alpha())
    config = TrainConfig(epochs=task.default_epochs)
    specs = {
        "erm": (method_spec("erm", task, "mlp", (alpha.width,), target.sigma), None),
        "bayesmulti": (
            method_spec("bayesmulti", task, "mlp", (512,), target.sigma, alpha, target),
            alpha.mapping,
        ),
    }
    models = {
        name: [train_network(spec, task, replace(config, seed=s)) for s in range(args.seeds)]
        for name, (spec, _) in tqdm(specs.items(), desc="training")
    }
    rows = []
    for scheme, pulses in tqdm(schemes(), desc="schemes"):
        row: dict[str, Any] = {"scheme": scheme, "mean_pulses": pulses}
        for name, runs in models.items():
            noise = target.with_scheme(scheme)
            mapping = specs[name][1]
            if mapping is not None:
                noise = noise.with_mapping(mapping)
            accs = [
                accuracy_under_noise(m, task.x_test, task.y_test, noise, args.draws, seed=5)
                for m in runs
            ]
            row[name] = seeds_interval([a.per_draw for a in accs]).to_dict()
            row["source"] = noise.programming.source
        rows.append(row)
    meta = run_meta("bench_effort", args, parser)
    erm_best = max(r["erm"]["mean"] for r in rows)
    reach = [r for r in rows if r["bayesmulti"]["low"] >= erm_best - 1e-12]
    pulses_erm = min(r["mean_pulses"] for r in rows if r["erm"]["mean"] >= erm_best - 1e-12)
    pulses_bm = min((r["mean_pulses"] for r in reach), default=None)
    md = [
        "# Accuracy against programming effort (pvk-median, digits 64-512-10)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, date {meta['date']}.  ",
        f"Accuracy predicted by the noise model from the measured write-verify residuals "
        f"(`bench_write_verify`), {args.draws} draws × {args.seeds} training seeds, mean ± "
        "95 % interval over seeds; not boards programmed end to end. BayesMulti: the α of "
        "bench_robustness's open-loop row, retrained per seed.",
        "",
        "| scheme | mean pulses/cell | ERM | BayesMulti (open-loop α) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            format_interval(Interval(**{k: r[n][k] for k in ("mean", "low", "high", "n", "unit")}))
            for n in ("erm", "bayesmulti")
        ]
        md.append(f"| `{r['scheme']}` | {r['mean_pulses']:.1f} | {cells[0]} | {cells[1]} |")
    md += [
        "",
        f"ERM's best mean accuracy {erm_best:.3f} needs {pulses_erm:.1f} pulses per cell; "
        + (
            f"BayesMulti's interval reaches it at {pulses_bm:.1f} "
            f"({pulses_bm / pulses_erm:.2f}× ERM's; target ≤ 0.5×: "
            f"{'met' if pulses_bm <= 0.5 * pulses_erm else 'missed'})."
            if pulses_bm is not None
            else "BayesMulti's interval does not reach it at any effort measured (target missed)."
        ),
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "bench_effort.png")
    write_results("bench_effort", meta, rows, "\n".join(md) + "\n", out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = np.array([r["mean_pulses"] for r in rows])
    for name in ("erm", "bayesmulti"):
        m = np.array([r[name]["mean"] for r in rows])
        lo = np.array([r[name]["low"] for r in rows])
        hi = np.array([r[name]["high"] for r in rows])
        ax.errorbar(x, m, yerr=[m - lo, hi - m], marker="o", ms=4, capsize=3, label=name)
    for r in rows:
        ax.annotate(r["scheme"], (r["mean_pulses"], r["erm"]["mean"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("mean programming pulses per cell (measured, log scale)")
    ax.set_ylabel("test accuracy (noise model, 95 % interval)")
    ax.set_title("pvk-median, digits 64-512-10: accuracy against programming effort")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
