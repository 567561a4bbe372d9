"""Train a network for a device, with BayesMulti or a baseline, and export it: the job of
`xbar train` (and of `xbar demo`'s loop), given as `TrainOptions`.

    xbar train --dataset digits --device pvk-median --method bayesmulti --budget 8
               [--scheduler tcp://HOST:PORT] [--workers 2] [--out train-out]

Writes to --out: ``model.xbar`` (the artifact: int8 TFLite reference + crossbar plan, for
MLPs), ``accuracy_vs_sigma.png`` (the trained model and the baselines under device noise),
``search.jsonl`` (every trial; rerun the same command to resume) and ``summary.json``.

By default only hidden widths the firmware runs are trained (their plan passes
``CrossbarModel.firmware_problem()`` on the task's board), so the artifact can be
programmed; ``--max-width`` opens wider networks for simulation-only studies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbar.training.errors import XbarError

SIGMA_GRID = (0.0, 0.3, 0.5, 0.8, 1.0, 1.3)
METHOD_NAMES = ("bayesmulti", "erm", "gaussian", "multinomial")


class TrainError(XbarError, ValueError):
    """Bad input to `xbar train` (dataset, device, budget, α file, log); one line."""


@dataclass
class TrainOptions:
    """What to train and where; the defaults are those of `xbar train`."""

    dataset: str = "digits"
    arch: str = "mlp"
    device: str = "pvk-median"
    method: str = "bayesmulti"
    budget: int = 8
    alpha: str | None = None
    width: int | None = None
    max_width: int | None = None
    epochs: int | None = None
    draws: int = 30
    seed: int = 0
    calibrate: bool = False
    strategy: str | None = None
    scheduler: str | None = None
    workers: int = 2
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    log: str | None = None
    no_baselines: bool = False
    out: str = "train-out"


def _checked(opts: TrainOptions) -> dict[str, Any]:
    """Every cheap check before any work: a bad option changes nothing."""
    from xbar.training.devices.device_model import DeviceModel, DeviceModelError
    from xbar.training.harness import Alpha
    from xbar.training.noise import NoiseConfigError
    from xbar.training.tasks import TaskError, load_task

    if opts.budget < 1:
        raise TrainError(f"--budget {opts.budget}: must be at least 1 trial")
    if opts.draws < 20:
        raise TrainError(f"--draws {opts.draws}: must be at least 20")
    for name in ("width", "max_width", "epochs", "workers"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise TrainError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    try:
        task = load_task(opts.dataset, opts.seed)
    except TaskError as exc:
        raise TrainError(f"--dataset: {exc}") from None
    if opts.arch == "cnn" and task.image_side is None:
        raise TrainError(f"--arch cnn: dataset {opts.dataset} has no images; use --arch mlp")
    try:
        device = DeviceModel.preset(opts.device)
    except DeviceModelError as exc:
        raise TrainError(f"--device: {exc}") from None
    alpha = None
    if opts.alpha:
        try:
            alpha = Alpha.from_dict(json.loads(Path(opts.alpha).read_text()))
        except (OSError, json.JSONDecodeError, NoiseConfigError, AttributeError) as exc:
            raise TrainError(f"--alpha {opts.alpha}: {exc}") from None
    widths, width = _widths(opts, task, alpha)
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out}: exists and is not a folder")
    return {
        "task": task,
        "device": device,
        "alpha": alpha,
        "out": out,
        "widths": widths,
        "width": width,
    }


def _widths(opts: TrainOptions, task: Any, alpha: Any) -> tuple[tuple[int, ...], int]:
    """The widths BayesMulti may search and the baselines' width: without --max-width only
    those the firmware runs (so the artifact can be programmed), else those <= it."""
    from xbar.training.tasks import firmware_problem

    depth = len(task.default_hidden)

    def refusal(width: int) -> str | None:
        if opts.max_width:
            return f"wider than --max-width {opts.max_width}" if width > opts.max_width else None
        problem = firmware_problem(
            [task.n_features, *(width,) * depth, task.n_classes], task.array_side
        )
        return problem and f"{problem}; add --max-width {width} to train it for simulation only"

    for option, width in (("--width", opts.width), ("--alpha width", alpha and alpha.width)):
        if width and refusal(width):
            raise TrainError(f"{option} {width}: {refusal(width)}")
    if opts.width:
        return (opts.width,), opts.width
    widths = tuple(w for w in task.widths if not refusal(w))
    if not widths:
        raise TrainError(
            f"--max-width {opts.max_width}: none of {task.name}'s widths "
            f"{', '.join(map(str, task.widths))} fits; give --width"
        )
    default = task.default_hidden[0]
    return widths, default if not refusal(default) else max(widths)


def train(opts: TrainOptions) -> None:
    """Check every option, then train, evaluate and export into ``opts.out``."""
    from xbar.training.bayesmulti import SearchLogError, TrialError
    from xbar.training.noise import NoiseConfigError

    checked = _checked(opts)
    try:
        _train(opts, **checked)
    except (SearchLogError, TrialError, NoiseConfigError) as exc:
        raise TrainError(str(exc)) from None


def _security(opts: TrainOptions) -> Any:
    if not (opts.tls_ca_file or opts.tls_cert or opts.tls_key):
        return None  # Dask's configured settings, if any
    from distributed import Security

    return Security(
        tls_ca_file=opts.tls_ca_file,
        tls_client_cert=opts.tls_cert,
        tls_client_key=opts.tls_key,
        require_encryption=True,
    )


def _search(opts: TrainOptions, settings: Any, log: Path) -> Any:
    from tqdm import tqdm
    from xbar.training.bayesmulti import SearchLog, open_client, run_search

    done = len(SearchLog(log, settings).trials)
    with (
        open_client(opts.scheduler, opts.workers, _security(opts)) as client,
        tqdm(
            total=opts.budget,
            initial=min(done, opts.budget),
            desc="BayesMulti trials",
            unit="trial",
        ) as bar,
    ):

        def tick(trial: Any) -> None:
            bar.set_postfix(val=f"{trial.result['val_accuracy']:.3f}")
            bar.update(1)

        return run_search(settings, opts.budget, log, client, progress=tick)


def _train(
    opts: TrainOptions,
    task: Any,
    device: Any,
    alpha: Any,
    out: Path,
    widths: tuple[int, ...],
    width: int,
) -> None:
    import torch
    from tqdm import tqdm
    from xbar.training.bayesmulti import DEFAULT_STRATEGY, SearchSettings, train_alpha
    from xbar.training.certificate import certify
    from xbar.training.harness import TrainConfig, method_spec, train_network
    from xbar.training.robustness import accuracy_vs_sigma, clean_accuracy, plot_accuracy_vs_sigma
    from xbar.training.tasks import firmware_problem

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    sigma = device.sigma_c2c
    config = TrainConfig(epochs=opts.epochs or task.default_epochs, seed=opts.seed)
    depth = len(task.default_hidden)
    settings = SearchSettings(
        task=task.name,
        arch=opts.arch,
        depth=depth,
        sigmas=(sigma,),
        draws=opts.draws,
        seed=opts.seed,
        split_seed=opts.seed,
        train=config,
        strategy=opts.strategy or DEFAULT_STRATEGY,
        widths=widths,
    )
    summary: dict[str, Any] = {
        "task": task.name,
        "arch": opts.arch,
        "target_device": device.name,
        "sigma": sigma,
        "method": opts.method,
    }
    if opts.method == "bayesmulti":
        if alpha is None:
            result = _search(opts, settings, Path(opts.log or out / "search.jsonl"))
            alpha = result.alpha
            summary["search"] = {
                "trials": len(result.trials),
                "wall_s": result.wall_s,
                "workers": result.workers,
                "strategy": settings.strategy,
                "best_val_accuracy": result.best.result["val_accuracy"],
            }
        summary["alpha"] = alpha.to_dict()
        print("training the chosen α …")
        model = train_alpha(settings, alpha)
        width = alpha.width
    else:
        spec = method_spec(opts.method, task, opts.arch, (width,) * depth, sigma)
        model = train_network(spec, task, config)
    models = {opts.method: model}
    if not opts.no_baselines:
        for name in tqdm(
            [m for m in ("erm", "gaussian", "multinomial") if m != opts.method],
            desc="baselines",
            unit="model",
        ):
            spec = method_spec(name, task, opts.arch, (width,) * depth, sigma)
            models[name] = train_network(spec, task, config)
    sigmas = sorted({*SIGMA_GRID, round(sigma, 4)})
    curves = {
        name: accuracy_vs_sigma(
            m, task.x_test, task.y_test, sigmas, opts.draws, calibrate=opts.calibrate
        )
        for name, m in models.items()
    }
    plot = out / "accuracy_vs_sigma.png"
    plot_accuracy_vs_sigma(
        curves,
        plot,
        f"{task.name} {opts.arch}, target {device.name} (σ = {sigma:.3f})",
        marks=[sigma],
    )
    mine = curves[opts.method]
    summary.update(
        {
            "width": width,
            "clean_test_accuracy": clean_accuracy(model, task.x_test, task.y_test),
            "test_accuracy_at_device": next(p.mean for p in mine if p.sigma == round(sigma, 4)),
            "accuracy_vs_sigma": {
                n: {f"{p.sigma:g}": p.mean for p in c} for n, c in curves.items()
            },
        }
    )
    summary["noise_calibration"] = _calibration_record(model, sigma, opts.calibrate)
    if any(m.active for m in getattr(model.spec, "multinomial", ())):
        summary["certificate"] = certify(model, task.x_test[:100], checks=4).to_dict()
    if opts.arch == "mlp":
        sizes = [task.n_features, *(width,) * depth, task.n_classes]
        summary["firmware_problem"] = firmware_problem(sizes, task.array_side)
        summary["artifact"] = str(_export(model, task, device, out / "model.xbar", summary))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{opts.method}: clean test accuracy {summary['clean_test_accuracy']:.4f}, "
        f"{summary['test_accuracy_at_device']:.4f} under {device.name} (σ = {sigma:.3f})"
    )
    print(
        f"wrote {plot}, {out / 'summary.json'}"
        + (f", {summary['artifact']}" if "artifact" in summary else "")
    )
    if summary.get("firmware_problem"):
        print(
            f"note: {summary['artifact']} is for simulation only; `xbar program` refuses it "
            f"({summary['firmware_problem']})"
        )


def _calibration_record(model: Any, sigma: float, used: bool) -> dict[str, Any]:
    """What the metadata says of the mean-gain calibration: whether the accuracies used it,
    the bias factors for the target device, and that the plan's biases do not carry them."""
    from xbar.training.noise import WeightNoiseConfig
    from xbar.training.robustness import gain_calibration

    return {
        "used_in_accuracies": used,
        "bias_factors_at_device": gain_calibration(model, WeightNoiseConfig("lognormal", sigma)),
        "in_plan": False,
        "why": "xbar program write-verifies every cell to its target, so the programmed "
        "weights carry no mean gain exp(σ²/2) for the biases to match",
    }


def _export(model: Any, task: Any, device: Any, path: Path, summary: dict[str, Any]) -> Path:
    from xbar.training.artifact import export_artifact
    from xbar.training.tasks import board_profile

    layers = model.export_layers()
    sizes = [layers[0][0].shape[0], *(w.shape[1] for w, _ in layers)]
    metadata = {k: v for k, v in summary.items() if k != "accuracy_vs_sigma"}
    metadata["name"] = f"{task.name}-{'-'.join(map(str, sizes))}"
    export_artifact(
        path,
        layers,
        task.x_train,
        input_scale=1 / 255,
        device=device,
        profile=board_profile(sizes, task.array_side),
        metadata=metadata,
        test=(task.x_test, task.y_test),
    )
    return path
