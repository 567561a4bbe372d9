"""BayesMulti: the noise-injection specification α chosen by Bayesian optimisation.

α is the per-hidden-layer multinomial noise (p1, p2), the training weight-noise scale (a
multiple of the target σ), the weight-clipping bound and the hidden width. A trial trains
the network with α (:mod:`~xbar.training.harness`) and scores it by its **validation
accuracy under the target device's noise**: w·exp(ε), ε ~ N(0, σ²), averaged over ≥ 20
Monte Carlo draws with a fixed seed, so every trial is judged on the same draws.

Trials run as tasks on a ``dask.distributed`` cluster: a LocalCluster of one-thread
worker processes by default, or any running scheduler (``tcp://`` or ``tls://``) with the
same code. The optimiser is :class:`~xbar.training.search.Search` (ask a batch of as
many points as there are workers, tell each loss as its trial ends). Every finished trial
is appended to a JSON-lines log and flushed to disk before it is told, so a search
stopped by Ctrl-C, a crash or a dead worker resumes from the log without losing a trial.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nevergrad as ng
import numpy as np
from xbar.training.errors import XbarError

from .harness import Alpha, TrainConfig, method_spec, train_network
from .networks import NoisyCNN, NoisyMLP
from .noise import MultinomialConfig, WeightNoiseConfig
from .robustness import accuracy_under_noise, clean_accuracy
from .search import Search
from .tasks import load_task

LOG_FORMAT = "xbar-bayesmulti-log"
LOG_VERSION = 1
MIN_DRAWS = 20
# Chosen by the measured comparison in benchmarks/bench_robustness.py (docs/training.md).
DEFAULT_STRATEGY = "bo"
WIDTHS = (512, 1024, 2048, 4096)
# The box searched. Prototype runs (docs/training.md) found training without weight noise,
# or with activation noise above ~0.3, far from the targets: the box leaves them out.
P_MAX = 0.3  # each of p1, p2 is searched in [0, P_MAX]
NOISE_SCALE = (0.5, 1.5)  # training σ as a multiple of the largest target σ
CLIP = (0.5, 4.0)  # weight bound, in units of the He-init scale √(2/fan_in)
MAX_ATTEMPTS = 3  # a trial lost with its worker is resubmitted this many times


class SearchLogError(XbarError, ValueError):
    """A search log that is corrupt, foreign, or from a different search."""


class TrialError(XbarError, RuntimeError):
    """A trial that failed on every attempt."""


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search; a log resumes only the search it was made by."""

    task: str = "digits"
    arch: str = "mlp"
    depth: int = 1  # hidden layers of the MLP (the CNN adds its two conv blocks)
    sigmas: tuple[float, ...] = (0.59,)  # target σ (the objective averages over them)
    draws: int = 30
    eval_seed: int = 1234
    split_seed: int = 0
    seed: int = 0  # the optimiser's
    strategy: str = DEFAULT_STRATEGY
    widths: tuple[int, ...] = WIDTHS
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> SearchSettings:
        if self.draws < MIN_DRAWS:
            raise ValueError(f"search: draws = {self.draws} must be >= {MIN_DRAWS}")
        if not self.sigmas or any(not (math.isfinite(s) and s >= 0) for s in self.sigmas):
            raise ValueError(f"search: target sigmas {self.sigmas} must be finite and >= 0")
        if self.depth < 1 or not self.widths or min(self.widths) < 1:
            raise ValueError(f"search: depth {self.depth} and widths {self.widths} must be >= 1")
        self.train.validate()
        return self

    @property
    def sites(self) -> int:
        return self.depth + (2 if self.arch == "cnn" else 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sigmas"], d["widths"] = list(self.sigmas), list(self.widths)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSettings:
        data = dict(data)
        data["train"] = TrainConfig(**data["train"])
        data["sigmas"], data["widths"] = tuple(data["sigmas"]), tuple(data["widths"])
        return cls(**data)


def search_space(settings: SearchSettings) -> ng.p.Dict:
    """α as a Nevergrad parametrization (p1 + p2 <= 1 per layer, a cheap constraint)."""
    n = settings.sites
    space = ng.p.Dict(
        p1=ng.p.Array(shape=(n,), lower=0.0, upper=P_MAX),
        p2=ng.p.Array(shape=(n,), lower=0.0, upper=P_MAX),
        noise_scale=ng.p.Scalar(lower=NOISE_SCALE[0], upper=NOISE_SCALE[1]),
        clip=ng.p.Log(lower=CLIP[0], upper=CLIP[1]),
        width=ng.p.TransitionChoice(list(settings.widths)),
    )
    space.register_cheap_constraint(_p_sum_ok)
    return space


def _p_sum_ok(value: dict[str, Any]) -> bool:
    return bool(np.all(np.add(value["p1"], value["p2"]) <= 1.0))


def alpha_from_value(value: dict[str, Any]) -> Alpha:
    sites = tuple(
        MultinomialConfig(float(a), float(b)).validate(f"alpha layer {i + 1}")
        for i, (a, b) in enumerate(zip(value["p1"], value["p2"], strict=True))
    )
    return Alpha(sites, float(value["noise_scale"]), float(value["clip"]), int(value["width"]))


# -- one trial (runs on a worker) ---------------------------------------------------------
def train_alpha(settings: SearchSettings, alpha: Alpha) -> NoisyMLP | NoisyCNN:
    """The network BayesMulti trains for α (deterministic: same α, same weights)."""
    task = load_task(settings.task, settings.split_seed)
    hidden = (alpha.width,) * settings.depth
    spec = method_spec("bayesmulti", task, settings.arch, hidden, max(settings.sigmas), alpha)
    return train_network(spec, task, settings.train)


def evaluate_trial(settings_dict: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """Train with α = ``value`` and score it: 1 − mean validation accuracy under the target
    noise. Plain dicts in and out, so it runs unchanged on any Dask worker."""
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    settings = SearchSettings.from_dict(settings_dict)
    task = load_task(settings.task, settings.split_seed)
    model = train_alpha(settings, alpha_from_value(value))
    accs = [
        accuracy_under_noise(
            model,
            task.x_val,
            task.y_val,
            WeightNoiseConfig("lognormal", s),
            settings.draws,
            settings.eval_seed,
        ).mean
        for s in settings.sigmas
    ]
    val = float(np.mean(accs))
    return {
        "loss": 1.0 - val,
        "val_accuracy": val,
        "val_accuracy_per_sigma": accs,
        "clean_val_accuracy": clean_accuracy(model, task.x_val, task.y_val),
        "seconds": time.perf_counter() - start,
        "worker_pid": os.getpid(),
    }


# -- the log ------------------------------------------------------------------------------
@dataclass
class Trial:
    id: int
    value: dict[str, Any]
    result: dict[str, Any]


class SearchLog:
    """JSON lines: a header with the settings, then one line per finished trial."""

    def __init__(self, path: str | Path, settings: SearchSettings) -> None:
        self.path = Path(path)
        self.settings = settings
        self.trials: list[Trial] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            self._read()
        else:
            self._append(
                {
                    "kind": "header",
                    "format": LOG_FORMAT,
                    "version": LOG_VERSION,
                    "settings": settings.to_dict(),
                }
            )

    def _read(self) -> None:
        where = str(self.path)
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete = lines[:-1]  # a last line without its newline was cut mid-write
        if not complete:
            raise SearchLogError(f"{where}: no header line; not a BayesMulti search log")
        records = []
        for n, line in enumerate(complete, 1):
            try:
                records.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise SearchLogError(f"{where}:{n}: not JSON; the log is corrupt") from None
        head = records[0]
        if not isinstance(head, dict) or head.get("format") != LOG_FORMAT:
            raise SearchLogError(f"{where}:1: not a BayesMulti search log")
        if head.get("version") != LOG_VERSION:
            raise SearchLogError(
                f"{where}:1: log version {head.get('version')!r} is not {LOG_VERSION}"
            )
        if head.get("settings") != self.settings.to_dict():
            raise SearchLogError(
                f"{where}: written by a search with other settings "
                f"({head.get('settings')}); use a new --log or the same options"
            )
        for n, rec in enumerate(records[1:], 2):
            if not (
                isinstance(rec, dict)
                and rec.get("kind") == "trial"
                and {"id", "value", "result"} <= set(rec)
                and isinstance(rec["result"], dict)
                and "loss" in rec["result"]
            ):
                raise SearchLogError(f"{where}:{n}: not a trial record")
            self.trials.append(Trial(int(rec["id"]), rec["value"], rec["result"]))
        if lines[-1]:  # only once the rest is known good: drop it, its trial runs again
            with self.path.open("r+b") as f:
                f.truncate(len(raw) - len(lines[-1]))

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add(self, trial: Trial) -> None:
        self._append(
            {"kind": "trial", "id": trial.id, "value": trial.value, "result": trial.result}
        )
        self.trials.append(trial)


# -- the search ---------------------------------------------------------------------------
@dataclass
class SearchResult:
    settings: SearchSettings
    trials: list[Trial]
    best: Trial
    wall_s: float  # of this run (resumed trials cost nothing)
    workers: int

    @property
    def alpha(self) -> Alpha:
        return alpha_from_value(self.best.value)


def open_client(scheduler: str | None = None, workers: int = 2, security: Any = None) -> Any:
    """A Dask client: a LocalCluster of ``workers`` one-thread processes, or the running
    scheduler at ``scheduler`` (``tcp://HOST:PORT``, ``tls://…`` with ``security``, a
    ``distributed.Security``; by default Dask's configured TLS settings)."""
    import logging

    from distributed import Client

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO chatter: not ours
    if scheduler:
        return Client(scheduler, security=security, timeout="20s")
    # Started by the client itself, the LocalCluster closes with it (at the end of a `with`
    # block), not at interpreter exit with heartbeat errors from orphaned workers.
    return Client(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=40,
    )


def run_search(
    settings: SearchSettings,
    budget: int,
    log_path: str | Path,
    client: Any,
    progress: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Run (or resume) the search until ``budget`` trials have finished, in parallel on
    ``client``'s workers. Trials already in the log are replayed, not rerun."""
    from distributed import as_completed

    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"search: budget = {budget!r} must be an integer >= 1")
    settings.validate()
    log = SearchLog(log_path, settings)
    workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
    search = Search(
        search_space(settings), settings.strategy, seed=settings.seed, budget=budget, batch=workers
    )
    for trial in log.trials:
        search.tell(trial.value, trial.result["loss"])
    next_id = max((t.id for t in log.trials), default=-1) + 1
    start = time.perf_counter()
    sdict = settings.to_dict()
    attempts: dict[int, int] = {}
    run_token = uuid.uuid4().hex[:12]  # task keys unique to this run: no stale result reused
    pending: dict[Any, tuple[int, Any]] = {}  # future -> (trial id, candidate)
    queue = as_completed()

    def submit(trial_id: int, candidate: Any) -> None:
        attempts[trial_id] = attempts.get(trial_id, 0) + 1
        future = client.submit(
            evaluate_trial,
            sdict,
            candidate.value,
            pure=False,
            key=f"bayesmulti-{run_token}-{trial_id}-{attempts[trial_id]}",
        )
        pending[future] = (trial_id, candidate)
        queue.add(future)

    def fill() -> None:
        nonlocal next_id
        free = min(workers, budget - len(log.trials)) - len(pending)
        if free > 0:
            for candidate in search.ask(free):
                submit(next_id, candidate)
                next_id += 1

    try:
        fill()
        for future in queue:
            trial_id, candidate = pending.pop(future)
            if future.status != "finished":
                error = future.exception()
                if attempts[trial_id] >= MAX_ATTEMPTS:
                    raise TrialError(f"trial {trial_id} failed {MAX_ATTEMPTS} times: {error}")
                submit(trial_id, candidate)  # lost with its worker, or failed: again
                continue
            trial = Trial(trial_id, candidate.value, future.result())
            log.add(trial)  # on disk before the optimiser learns it
            search.tell(candidate, trial.result["loss"])
            if progress:
                progress(trial)
            fill()
    finally:
        for future in pending:
            future.cancel()
    best = min(log.trials, key=lambda t: t.result["loss"])
    return SearchResult(settings, log.trials, best, time.perf_counter() - start, workers)
