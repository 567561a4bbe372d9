"""Train a network for a device, with BayesMulti or a baseline, and export it: the job of
`xbar train` (and of `xbar demo`'s loop), given as `TrainOptions`.

    xbar train --dataset digits --device pvk-median --method bayesmulti --budget 32
               [--program verify[:TOL] | open-loop | paper[:SIGMA]] [--seeds 3]
               [--scheduler tcp://HOST:PORT] [--workers 2] [--out train-out]

``--program`` names the noise model trained for and scored against
(:class:`~xbar.training.noise_model.NoiseModel`: the device, the mapping onto conductance
pairs, the programming scheme); it is stored in the artifact. Every accuracy printed and
stored carries its 95 % interval over noise draws (and training seeds with ``--seeds``),
and the artifact's metadata holds the statistical certificate: a one-sided 95 % lower
bound on the accuracy under that noise model (two-way bootstrap over draws × test inputs).

Writes to --out: ``model.xbar`` (the artifact: int8 TFLite reference + crossbar plan, for
MLPs), ``accuracy_vs_sigma.png`` (the trained model and the baselines under the paper's
w·exp(ε) against σ), ``search.jsonl`` (every trial; rerun the same command to resume) and
``summary.json``.

By default only hidden widths the firmware runs are trained (their plan passes
``CrossbarModel.firmware_problem()`` on the task's board), so the artifact can be
programmed; ``--max-width`` opens wider networks for simulation-only studies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
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
    program: str = "verify"
    budget: int = 32
    seeds: int = 1
    halving: bool = True
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
    for name in ("width", "max_width", "epochs", "workers", "seeds"):
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
    from xbar.training.noise_model import NoiseModel, NoiseModelError

    try:
        target = NoiseModel.for_device(device, opts.program)
    except NoiseModelError as exc:
        raise TrainError(f"--program: {exc}") from None
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
        "target": target,
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
            bar.set_postfix(val=f"{trial.result['val_accuracy']:.3f}", rung=trial.rung)
            if trial.rung == 0:
                bar.update(1)

        return run_search(settings, opts.budget, log, client, progress=tick)


def _train(
    opts: TrainOptions,
    task: Any,
    device: Any,
    target: Any,
    alpha: Any,
    out: Path,
    widths: tuple[int, ...],
    width: int,
) -> None:
    import torch
    from tqdm import tqdm
    from xbar.training.bayesmulti import DEFAULT_STRATEGY, ETA, SearchSettings, train_alpha
    from xbar.training.certificate import accuracy_certificate, certify
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
        sigmas=(target.sigma,),
        draws=opts.draws,
        seed=opts.seed,
        split_seed=opts.seed,
        train=config,
        strategy=opts.strategy or DEFAULT_STRATEGY,
        widths=widths,
        noise=target.to_dict(),
        eta=ETA if opts.halving else 1,
        default_width=width,
    )
    summary: dict[str, Any] = {
        "task": task.name,
        "arch": opts.arch,
        "target_device": device.name,
        "sigma": sigma,
        "method": opts.method,
        "program": _program_record(target),
    }

    def build(seed: int) -> Any:
        """The chosen method's network, trained with ``seed``."""
        if opts.method == "bayesmulti":
            seeded = SearchSettings(**{**vars(settings), "train": replace(config, seed=seed)})
            return train_alpha(seeded, alpha)
        spec = method_spec(opts.method, task, opts.arch, (width,) * depth, target.sigma)
        return train_network(spec, task, replace(config, seed=seed))

    if opts.method == "bayesmulti":
        if alpha is None:
            result = _search(opts, settings, Path(opts.log or out / "search.jsonl"))
            alpha = result.alpha
            summary["search"] = {
                "trials": len(result.trials),
                "first_rung_trials": sum(t.rung == 0 for t in result.trials),
                "rungs": settings.rungs(opts.budget),
                "wall_s": result.wall_s,
                "workers": result.workers,
                "strategy": settings.strategy,
                "best_val_accuracy": result.best.result["val_accuracy"],
            }
        summary["alpha"] = alpha.to_dict()
        print("training the chosen α …")
        width = alpha.width
    model = build(opts.seed)
    mapping = alpha.mapping if alpha is not None else None
    models = {opts.method: model}
    if not opts.no_baselines:
        for name in tqdm(
            [m for m in ("erm", "gaussian", "multinomial") if m != opts.method],
            desc="baselines",
            unit="model",
        ):
            spec = method_spec(name, task, opts.arch, (width,) * depth, target.sigma)
            models[name] = train_network(spec, task, config)
    seeded = {name: [m] for name, m in models.items()}
    for k in tqdm(range(1, opts.seeds), desc="more training seeds", unit="seed"):
        seeded[opts.method].append(build(opts.seed + k))
        for name in (n for n in models if n != opts.method):
            spec = method_spec(name, task, opts.arch, (width,) * depth, target.sigma)
            seeded[name].append(train_network(spec, task, replace(config, seed=opts.seed + k)))
    board = _board_accuracies(seeded, opts, task, target, mapping)
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
    at_device = next(p for p in mine if p.sigma == round(sigma, 4))
    chosen = target if mapping is None else target.with_mapping(mapping)
    summary.update(
        {
            "width": width,
            "clean_test_accuracy": clean_accuracy(model, task.x_test, task.y_test),
            "test_accuracy_at_device": at_device.mean,
            "test_accuracy_at_device_interval": at_device.interval.to_dict(),
            "accuracy_on_board": board,
            "accuracy_certificate": accuracy_certificate(
                model, task.x_test, task.y_test, chosen, draws=max(opts.draws, 100)
            ),
            "accuracy_vs_sigma": {
                n: {f"{p.sigma:g}": p.mean for p in c} for n, c in curves.items()
            },
            "accuracy_vs_sigma_interval": {
                n: {f"{p.sigma:g}": [p.interval.low, p.interval.high] for p in c}
                for n, c in curves.items()
            },
        }
    )
    summary["noise_calibration"] = _calibration_record(model, sigma, opts.calibrate)
    if any(m.active for m in getattr(model.spec, "multinomial", ())):
        summary["certificate"] = certify(model, task.x_test[:100], checks=4).to_dict()
    if opts.arch == "mlp":
        sizes = [task.n_features, *(width,) * depth, task.n_classes]
        summary["firmware_problem"] = firmware_problem(sizes, task.array_side)
        summary["artifact"] = str(
            _export(model, task, device, out / "model.xbar", summary, mapping)
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _report(opts, summary, device, sigma, board)
    print(
        f"wrote {plot}, {out / 'summary.json'}"
        + (f", {summary['artifact']}" if "artifact" in summary else "")
    )
    if summary.get("firmware_problem"):
        print(
            f"note: {summary['artifact']} is for simulation only; `xbar program` refuses it "
            f"({summary['firmware_problem']})"
        )


def _program_record(target: Any) -> dict[str, Any]:
    """The scheme the model was trained for, as the artifact stores it."""
    p = target.programming
    record: dict[str, Any] = {"scheme": p.name, "label": target.label}
    if p.scheme == "verify":
        record["tolerance_steps"] = p.tolerance
        record["residual_source"] = p.source
    record["noise_model"] = target.to_dict()
    return record


def _board_accuracies(
    seeded: dict[str, list[Any]],
    opts: TrainOptions,
    task: Any,
    target: Any,
    mapping: Any,
) -> dict[str, Any]:
    """Test accuracy of every method (one model per training seed) under the target noise
    model (the chosen model with its own mapping, the baselines with the default one):
    mean and 95 % interval over the draws, or over the training seeds when there are
    several."""
    from xbar.training.robustness import accuracy_under_noise
    from xbar.training.stats import seeds_interval

    out: dict[str, Any] = {"noise_model": target.label, "draws": opts.draws}
    for name, runs in seeded.items():
        noise = target.with_mapping(mapping) if name == opts.method and mapping else target
        accs = [
            accuracy_under_noise(r, task.x_test, task.y_test, noise, opts.draws, seed=1)
            for r in runs
        ]
        iv = seeds_interval([a.per_draw for a in accs])
        out[name] = {**iv.to_dict(), "seeds": len(runs)}
    return out


def _report(
    opts: TrainOptions, summary: dict[str, Any], device: Any, sigma: float, board: dict[str, Any]
) -> None:
    from xbar.training.stats import Interval, format_interval

    def text(d: dict[str, Any]) -> str:
        return format_interval(Interval(d["mean"], d["low"], d["high"], d["n"], d["unit"]))

    mine = board[opts.method]
    over = f"{mine['n']} {mine['unit']}"
    print(
        f"{opts.method}: clean test accuracy {summary['clean_test_accuracy']:.3f}; "
        f"{text(mine)} under {board['noise_model']} (95 % interval over {over}); "
        f"{text(summary['test_accuracy_at_device_interval'])} under the paper's "
        f"w·exp(ε) at σ = {sigma:.3f}"
    )
    cert = summary["accuracy_certificate"]
    print(
        f"certificate: accuracy >= {cert['lower_bound']:.3f} with 95 % confidence under "
        f"{board['noise_model']} ({cert['method']})"
    )
    for name in (n for n in ("erm", "gaussian", "multinomial") if n in board and n != opts.method):
        print(f"  baseline {name}: {text(board[name])}")


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


def _export(
    model: Any, task: Any, device: Any, path: Path, summary: dict[str, Any], mapping: Any
) -> Path:
    """The artifact, with α's mapping when searched: the weights clipped at its full scale
    (so the quantiser maps that to weight 127) and its share of the device window."""
    import numpy as np
    from xbar.training.artifact import WINDOW, export_artifact
    from xbar.training.tasks import board_profile

    layers = model.export_layers()
    if mapping is not None and mapping.clip < 1:
        layers = [
            (np.clip(w, -mapping.clip * np.abs(w).max(), mapping.clip * np.abs(w).max()), b)
            for w, b in layers
        ]
    sizes = [layers[0][0].shape[0], *(w.shape[1] for w, _ in layers)]
    metadata = {
        k: v
        for k, v in summary.items()
        if k not in ("accuracy_vs_sigma", "accuracy_vs_sigma_interval")
    }
    metadata["name"] = f"{task.name}-{'-'.join(map(str, sizes))}"
    export_artifact(
        path,
        layers,
        task.x_train,
        input_scale=1 / 255,
        device=device,
        profile=board_profile(sizes, task.array_side),
        metadata=metadata,
        window=mapping.window if mapping is not None else WINDOW,
        test=(task.x_test, task.y_test),
    )
    return path
