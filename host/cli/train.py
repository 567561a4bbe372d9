"""`xbar train`: train a network for a device, with BayesMulti or a baseline, and export it.

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

import argparse
import json
from pathlib import Path
from typing import Any

EXIT_OK = 0
SIGMA_GRID = (0.0, 0.3, 0.5, 0.8, 1.0, 1.3)
METHOD_NAMES = ("bayesmulti", "erm", "gaussian", "multinomial")


class TrainError(ValueError):
    """Bad input to `xbar train` (dataset, device, budget, α file, log); one line."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `train` on the `xbar` command's subparsers."""
    p = commands.add_parser(
        "train",
        help="noise-robust training (BayesMulti or a baseline) and model export",
        description="Train a network that keeps its accuracy under a device's noise: BayesMulti "
        "searches the noise injection α with Bayesian optimisation on a Dask cluster.",
    )
    p.add_argument("--dataset", default="digits", help="digits or iris (default: digits)")
    p.add_argument(
        "--arch",
        choices=["mlp", "cnn"],
        default="mlp",
        help="network family (cnn: digits only; no artifact, the exporter takes MLPs)",
    )
    p.add_argument("--device", default="pvk-median", help="device preset whose σ is the target")
    p.add_argument("--method", choices=METHOD_NAMES, default="bayesmulti")
    p.add_argument("--budget", type=int, default=8, help="BayesMulti trials (default: 8)")
    p.add_argument("--alpha", help="JSON file with α: skip the search and train with it")
    p.add_argument("--width", type=int, help="hidden width (baselines and non-searched methods)")
    p.add_argument(
        "--max-width",
        type=int,
        help="widest hidden layer to train (default: the widest the firmware runs on the "
        "task's board, 512 for digits; wider: simulation only, `xbar program` refuses it)",
    )
    p.add_argument("--epochs", type=int, help="training epochs (default: the task's)")
    p.add_argument("--draws", type=int, default=30, help="noise draws per evaluation (>= 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search and the training")
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="evaluate with the mean-gain calibration of the biases (docs/training.md; "
        "default: off, it did not measurably help; never in the artifact's plan)",
    )
    # The default named here is bayesmulti.DEFAULT_STRATEGY (a test keeps them equal; that
    # module is not imported to build the parser).
    p.add_argument("--strategy", help="search strategy (a training.optimize method; default bo)")
    p.add_argument("--scheduler", help="run trials on this Dask scheduler (tcp:// or tls://)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default: 2)")
    p.add_argument("--tls-ca-file", help="tls://: CA certificate (else Dask's TLS config)")
    p.add_argument("--tls-cert", help="tls://: client certificate")
    p.add_argument("--tls-key", help="tls://: client key")
    p.add_argument("--log", help="search log to write or resume (default: OUT/search.jsonl)")
    p.add_argument("--no-baselines", action="store_true", help="skip ERM and fixed-noise runs")
    p.add_argument("--out", default="train-out", help="output folder (default: train-out)")
    p.set_defaults(func=run)


def _checked(args: argparse.Namespace) -> dict[str, Any]:
    """Every cheap check before any work: a bad option changes nothing."""
    from xbar.training.devices.model import DeviceModel, DeviceModelError
    from xbar.training.harness import Alpha
    from xbar.training.noise import NoiseConfigError
    from xbar.training.tasks import TaskError, load_task

    if args.budget < 1:
        raise TrainError(f"--budget {args.budget}: must be at least 1 trial")
    if args.draws < 20:
        raise TrainError(f"--draws {args.draws}: must be at least 20")
    for name in ("width", "max_width", "epochs", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise TrainError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    try:
        task = load_task(args.dataset, args.seed)
    except TaskError as exc:
        raise TrainError(f"--dataset: {exc}") from None
    if args.arch == "cnn" and task.image_side is None:
        raise TrainError(f"--arch cnn: dataset {args.dataset} has no images; use --arch mlp")
    try:
        device = DeviceModel.preset(args.device)
    except DeviceModelError as exc:
        raise TrainError(f"--device: {exc}") from None
    alpha = None
    if args.alpha:
        try:
            alpha = Alpha.from_dict(json.loads(Path(args.alpha).read_text()))
        except (OSError, json.JSONDecodeError, NoiseConfigError, AttributeError) as exc:
            raise TrainError(f"--alpha {args.alpha}: {exc}") from None
    widths, width = _widths(args, task, alpha)
    out = Path(args.out)
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


def _widths(args: argparse.Namespace, task: Any, alpha: Any) -> tuple[tuple[int, ...], int]:
    """The widths BayesMulti may search and the baselines' width: without --max-width only
    those the firmware runs (so the artifact can be programmed), else those <= it."""
    from xbar.training.tasks import firmware_problem

    depth = len(task.default_hidden)

    def refusal(width: int) -> str | None:
        if args.max_width:
            return f"wider than --max-width {args.max_width}" if width > args.max_width else None
        problem = firmware_problem(
            [task.n_features, *(width,) * depth, task.n_classes], task.array_side
        )
        return problem and f"{problem}; add --max-width {width} to train it for simulation only"

    for option, width in (("--width", args.width), ("--alpha width", alpha and alpha.width)):
        if width and refusal(width):
            raise TrainError(f"{option} {width}: {refusal(width)}")
    if args.width:
        return (args.width,), args.width
    widths = tuple(w for w in task.widths if not refusal(w))
    if not widths:
        raise TrainError(
            f"--max-width {args.max_width}: none of {task.name}'s widths "
            f"{', '.join(map(str, task.widths))} fits; give --width"
        )
    default = task.default_hidden[0]
    return widths, default if not refusal(default) else max(widths)


def run(args: argparse.Namespace) -> int:
    from xbar.training.bayesmulti import SearchLogError, TrialError
    from xbar.training.noise import NoiseConfigError

    checked = _checked(args)
    try:
        return _train(args, **checked)
    except (SearchLogError, TrialError, NoiseConfigError) as exc:
        raise TrainError(str(exc)) from None


def _security(args: argparse.Namespace) -> Any:
    if not (args.tls_ca_file or args.tls_cert or args.tls_key):
        return None  # Dask's configured settings, if any
    from distributed import Security

    return Security(
        tls_ca_file=args.tls_ca_file,
        tls_client_cert=args.tls_cert,
        tls_client_key=args.tls_key,
        require_encryption=True,
    )


def _search(args: argparse.Namespace, settings: Any, log: Path) -> Any:
    from tqdm import tqdm
    from xbar.training.bayesmulti import SearchLog, open_client, run_search

    done = len(SearchLog(log, settings).trials)
    with (
        open_client(args.scheduler, args.workers, _security(args)) as client,
        tqdm(
            total=args.budget,
            initial=min(done, args.budget),
            desc="BayesMulti trials",
            unit="trial",
        ) as bar,
    ):

        def tick(trial: Any) -> None:
            bar.set_postfix(val=f"{trial.result['val_accuracy']:.3f}")
            bar.update(1)

        return run_search(settings, args.budget, log, client, progress=tick)


def _train(
    args: argparse.Namespace,
    task: Any,
    device: Any,
    alpha: Any,
    out: Path,
    widths: tuple[int, ...],
    width: int,
) -> int:
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
    config = TrainConfig(epochs=args.epochs or task.default_epochs, seed=args.seed)
    depth = len(task.default_hidden)
    settings = SearchSettings(
        task=task.name,
        arch=args.arch,
        depth=depth,
        sigmas=(sigma,),
        draws=args.draws,
        seed=args.seed,
        split_seed=args.seed,
        train=config,
        strategy=args.strategy or DEFAULT_STRATEGY,
        widths=widths,
    )
    summary: dict[str, Any] = {
        "task": task.name,
        "arch": args.arch,
        "target_device": device.name,
        "sigma": sigma,
        "method": args.method,
    }
    if args.method == "bayesmulti":
        if alpha is None:
            result = _search(args, settings, Path(args.log or out / "search.jsonl"))
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
        spec = method_spec(args.method, task, args.arch, (width,) * depth, sigma)
        model = train_network(spec, task, config)
    models = {args.method: model}
    if not args.no_baselines:
        for name in tqdm(
            [m for m in ("erm", "gaussian", "multinomial") if m != args.method],
            desc="baselines",
            unit="model",
        ):
            spec = method_spec(name, task, args.arch, (width,) * depth, sigma)
            models[name] = train_network(spec, task, config)
    sigmas = sorted({*SIGMA_GRID, round(sigma, 4)})
    curves = {
        name: accuracy_vs_sigma(
            m, task.x_test, task.y_test, sigmas, args.draws, calibrate=args.calibrate
        )
        for name, m in models.items()
    }
    plot = out / "accuracy_vs_sigma.png"
    plot_accuracy_vs_sigma(
        curves,
        plot,
        f"{task.name} {args.arch}, target {device.name} (σ = {sigma:.3f})",
        marks=[sigma],
    )
    mine = curves[args.method]
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
    summary["noise_calibration"] = _calibration_record(model, sigma, args.calibrate)
    if any(m.active for m in getattr(model.spec, "multinomial", ())):
        summary["certificate"] = certify(model, task.x_test[:100], checks=4).to_dict()
    if args.arch == "mlp":
        sizes = [task.n_features, *(width,) * depth, task.n_classes]
        summary["firmware_problem"] = firmware_problem(sizes, task.array_side)
        summary["artifact"] = str(_export(model, task, device, out / "model.xbar", summary))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.method}: clean test accuracy {summary['clean_test_accuracy']:.4f}, "
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
    return EXIT_OK


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
