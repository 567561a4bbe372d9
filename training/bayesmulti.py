"""BayesMulti: the noise-injection specification α chosen by Bayesian optimisation.

α is the per-hidden-layer multinomial noise (p1, p2), the training weight-noise scale (a
multiple of the target σ, 0 allowed) and kind (the target's own noise model, or Gaussian),
the weight-clipping bound (or none), the hidden width, and the mapping onto conductance
pairs (window share, full scale). The fixed baselines (ERM, Gaussian, multinomial) are
points of this space and are tried first when the budget allows, so the search can only
improve on them. A trial trains the network with α (:mod:`~xbar.training.harness`) and
scores it by its **validation accuracy under the target noise model** — the board's
(:class:`~xbar.training.noise_model.NoiseModel`: device, α's mapping, the programming
scheme) or the paper's w·exp(ε) at the target σ's — averaged over ≥ 20 Monte Carlo draws
with a fixed seed, so every trial is judged on the same draws.

**Successive halving** (``eta`` > 1): the budget counts first-rung trials, trained for
epochs/eta^R; the best 1/eta of each rung are trained again for eta times the epochs, up
to the full schedule at rung R, where the baselines always run too (short schedules favour
noise-free training, which learns fastest, so a baseline could otherwise be dropped early)
in place of as many promoted trials, at least one. With eta = 4 and 32 trials:
32/16 + 8/4 + (1 + 3 baselines) = 8 full trainings, as 8 plain trials. The optimiser
learns from the first rung only (all at one fidelity); the answer is the best trial of
the last rung.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import nevergrad as ng
import numpy as np
from xbar.training.errors import XbarError

from .harness import FIXED_MULTINOMIAL, Alpha, TrainConfig, method_spec, train_network
from .networks import NoisyCNN, NoisyMLP
from .noise import MultinomialConfig, WeightNoise, WeightNoiseConfig
from .noise_model import WINDOW, NoiseModel
from .robustness import accuracy_under_noise, clean_accuracy
from .search import Search, plain
from .tasks import load_task

LOG_FORMAT = "xbar-bayesmulti-log"
LOG_VERSION = 2
MIN_DRAWS = 20
# Chosen by the measured comparison in benchmarks/bench_robustness.py (docs/training.md).
DEFAULT_STRATEGY = "bo"
WIDTHS = (512, 1024, 2048, 4096)
# The box searched. Prototype runs (docs/training.md) found training without weight noise,
# or with activation noise above ~0.3, far from the targets: the box leaves them out.
P_MAX = 0.3  # each of p1, p2 is searched in [0, P_MAX]
NOISE_SCALE = (0.0, 1.5)  # training σ as a multiple of the target's (0: no weight noise)
CLIPS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, None)  # weight bound (He-init units), or none
WINDOWS = (0.5, 1.0)  # share of the device window the weights use
FULL_SCALE = (0.5, 1.0)  # share of max|w| mapped to the top of the window
ETA = 4  # successive halving: keep the best 1/ETA of a rung
MAX_RUNGS = 2  # rungs above the first
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
    noise: dict[str, Any] | None = None  # the target NoiseModel (None: paper at sigmas)
    eta: int = ETA  # successive halving (1: every trial trains the full schedule)
    default_width: int | None = None  # the baselines' width (None: the first of widths)

    def target(self) -> NoiseModel | None:
        return None if self.noise is None else NoiseModel.from_dict(self.noise)

    def rungs(self, budget: int) -> list[tuple[int, int]]:
        """(trials, epochs) per rung for a first rung of ``budget`` trials."""
        if self.eta <= 1:
            return [(budget, self.train.epochs)]
        top = 0
        while top < MAX_RUNGS and budget // self.eta ** (top + 1) >= 1:
            top += 1
        return [
            (max(1, budget // self.eta**r), max(1, self.train.epochs // self.eta ** (top - r)))
            for r in range(top + 1)
        ]

    def validate(self) -> SearchSettings:
        if self.draws < MIN_DRAWS:
            raise ValueError(f"search: draws = {self.draws} must be >= {MIN_DRAWS}")
        if not self.sigmas or any(not (math.isfinite(s) and s >= 0) for s in self.sigmas):
            raise ValueError(f"search: target sigmas {self.sigmas} must be finite and >= 0")
        if self.depth < 1 or not self.widths or min(self.widths) < 1:
            raise ValueError(f"search: depth {self.depth} and widths {self.widths} must be >= 1")
        if self.eta < 1:
            raise ValueError(f"search: eta = {self.eta} must be >= 1")
        self.train.validate()
        self.target()
        return self

    @property
    def sites(self) -> int:
        return self.depth + (2 if self.arch == "cnn" else 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sigmas"], d["widths"] = list(self.sigmas), list(self.widths)
        return dict(json.loads(json.dumps(d)))  # as the log stores it (lists, not tuples)

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
        injection=ng.p.Choice(["board", "gaussian"]),
        clip=ng.p.TransitionChoice(list(CLIPS)),
        width=ng.p.TransitionChoice(list(settings.widths)),
        window=ng.p.Scalar(lower=WINDOWS[0], upper=WINDOWS[1]),
        full_scale=ng.p.Scalar(lower=FULL_SCALE[0], upper=FULL_SCALE[1]),
    )
    space.register_cheap_constraint(_p_sum_ok)
    return space


def baseline_points(settings: SearchSettings) -> dict[str, dict[str, Any]]:
    """The fixed baselines as points of the search space (harness.method_spec's)."""
    n = settings.sites
    width = settings.default_width or settings.widths[0]
    plain: dict[str, Any] = {
        "p1": [0.0] * n,
        "p2": [0.0] * n,
        "noise_scale": 0.0,
        "injection": "board",
        "clip": None,
        "width": width,
        "window": WINDOW,
        "full_scale": 1.0,
    }
    fm = FIXED_MULTINOMIAL
    return {
        "erm": plain,
        "gaussian": {**plain, "injection": "gaussian", "noise_scale": 1.0},
        "multinomial": {**plain, "p1": [fm.p1] * n, "p2": [fm.p2] * n},
    }


def _p_sum_ok(value: dict[str, Any]) -> bool:
    return bool(np.all(np.add(value["p1"], value["p2"]) <= 1.0))


def value_key(value: Any) -> str:
    """A value's identity in the log (JSON, keys sorted)."""
    return json.dumps(plain(value), sort_keys=True)


def alpha_from_value(value: dict[str, Any]) -> Alpha:
    sites = tuple(
        MultinomialConfig(float(a), float(b)).validate(f"alpha layer {i + 1}")
        for i, (a, b) in enumerate(zip(value["p1"], value["p2"], strict=True))
    )
    clip = value.get("clip")
    return Alpha(
        sites,
        float(value["noise_scale"]),
        None if clip is None else float(clip),
        int(value["width"]),
        str(value.get("injection", "board")),
        float(value.get("window", WINDOW)),
        float(value.get("full_scale", 1.0)),
    )


# -- one trial (runs on a worker) ---------------------------------------------------------
def train_alpha(
    settings: SearchSettings, alpha: Alpha, epochs: int | None = None
) -> NoisyMLP | NoisyCNN:
    """The network BayesMulti trains for α (deterministic: same α, same weights);
    ``epochs``: a shorter schedule (successive halving's lower rungs)."""
    task = load_task(settings.task, settings.split_seed)
    hidden = (alpha.width,) * settings.depth
    spec = method_spec(
        "bayesmulti",
        task,
        settings.arch,
        hidden,
        max(settings.sigmas),
        alpha,
        settings.target(),
    )
    config = settings.train if epochs is None else replace(settings.train, epochs=epochs)
    return train_network(spec, task, config)


def target_noises(settings: SearchSettings, alpha: Alpha) -> list[WeightNoise]:
    """What a trial is scored under: the target noise model with α's mapping (a board
    scheme), or the paper's w·exp(ε) at each target σ."""
    target = settings.target()
    if target is not None and target.scheme != "paper":
        return [target.with_mapping(alpha.mapping)]
    if target is not None:
        return [target]
    return [WeightNoiseConfig("lognormal", s) for s in settings.sigmas]


def evaluate_trial(
    settings_dict: dict[str, Any], value: dict[str, Any], epochs: int | None = None
) -> dict[str, Any]:
    """Train with α = ``value`` (for ``epochs``, default the full schedule) and score it:
    1 − mean validation accuracy under the target noise. Plain dicts in and out, so it runs
    unchanged on any Dask worker."""
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    settings = SearchSettings.from_dict(settings_dict)
    task = load_task(settings.task, settings.split_seed)
    alpha = alpha_from_value(value)
    model = train_alpha(settings, alpha, epochs)
    accs = [
        accuracy_under_noise(
            model, task.x_val, task.y_val, noise, settings.draws, settings.eval_seed
        ).mean
        for noise in target_noises(settings, alpha)
    ]
    val = float(np.mean(accs))
    return {
        "loss": 1.0 - val,
        "val_accuracy": val,
        "val_accuracy_per_sigma": accs,
        "clean_val_accuracy": clean_accuracy(model, task.x_val, task.y_val),
        "epochs": epochs or settings.train.epochs,
        "seconds": time.perf_counter() - start,
        "worker_pid": os.getpid(),
    }


# -- the log ------------------------------------------------------------------------------
@dataclass
class Trial:
    id: int
    value: dict[str, Any]
    result: dict[str, Any]
    rung: int = 0  # successive halving: 0 the shortest schedule


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
        theirs, ours = head.get("settings"), self.settings.to_dict()
        if theirs != ours:
            differ = sorted(
                k
                for k in set(ours) | set(theirs if isinstance(theirs, dict) else {})
                if not isinstance(theirs, dict) or theirs.get(k) != ours.get(k)
            )
            raise SearchLogError(
                f"{where}: written by a search with other settings (differing: "
                f"{', '.join(differ)}); use a new --log or the same options"
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
            rung = rec.get("rung", 0)
            self.trials.append(Trial(int(rec["id"]), rec["value"], rec["result"], int(rung)))
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
            {
                "kind": "trial",
                "id": trial.id,
                "rung": trial.rung,
                "value": trial.value,
                "result": trial.result,
            }
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
    """Run (or resume) the search: ``budget`` first-rung trials (the baselines first),
    then successive halving up to the full schedule, in parallel on ``client``'s workers.
    Trials already in the log are replayed, not rerun."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"search: budget = {budget!r} must be an integer >= 1")
    settings.validate()
    log = SearchLog(log_path, settings)
    workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
    search = Search(
        search_space(settings), settings.strategy, seed=settings.seed, budget=budget, batch=workers
    )
    for trial in log.trials:
        if trial.rung == 0:
            search.tell(trial.value, trial.result["loss"])
    start = time.perf_counter()
    rungs = settings.rungs(budget)
    runner = _Runner(client, settings, log, workers, progress)
    # Rung 0: the baselines that fit the space, then the optimiser's suggestions.
    done0 = {value_key(t.value) for t in log.trials if t.rung == 0}
    base = [v for v in baseline_points(settings).values() if v["width"] in settings.widths]
    base_keys = {value_key(v) for v in base}
    seeds = [v for v in base if value_key(v) not in done0]
    n0, epochs0 = rungs[0]

    def ask(free: int) -> list[tuple[Any, Any]]:
        left = n0 - sum(t.rung == 0 for t in log.trials) - runner.pending_in(0)
        out = []
        for _ in range(max(0, min(free, left))):
            cand = search.pend(seeds.pop(0)) if seeds else search.ask(1)[0]
            out.append((cand.value, cand))
        return out

    runner.run(0, epochs0, ask, lambda cand, loss: search.tell(cand, loss))
    top = len(rungs) - 1
    for rung, (n, epochs) in enumerate(rungs[1:], 1):
        below = sorted(
            (t for t in log.trials if t.rung == rung - 1), key=lambda t: (t.result["loss"], t.id)
        )
        chosen = [t.value for t in below][:n]
        if rung == top:  # the baselines always reach the full schedule, in place of others
            searched = [t.value for t in below if value_key(t.value) not in base_keys]
            chosen = searched[: max(1, n - len(base))] + base
        have = {value_key(t.value) for t in log.trials if t.rung == rung}
        todo = [v for v in chosen if value_key(v) not in have]

        def promote(free: int, todo: list[Any] = todo) -> list[tuple[Any, Any]]:
            return [(todo.pop(0), None) for _ in range(min(free, len(todo)))]

        runner.run(rung, epochs, promote, None)
    best = min((t for t in log.trials if t.rung == top), key=lambda t: (t.result["loss"], t.id))
    return SearchResult(settings, log.trials, best, time.perf_counter() - start, workers)


class _Runner:
    """Keeps every worker busy with trials of one rung; logs each before it is told."""

    def __init__(
        self,
        client: Any,
        settings: SearchSettings,
        log: SearchLog,
        workers: int,
        progress: Callable[[Trial], None] | None,
    ) -> None:
        self.client, self.log, self.workers, self.progress = client, log, workers, progress
        self.sdict = settings.to_dict()
        self.token = uuid.uuid4().hex[:12]  # task keys unique to this run
        self.next_id = max((t.id for t in log.trials), default=-1) + 1
        self.pending: dict[Any, tuple[int, int, Any, Any]] = {}
        self.attempts: dict[int, int] = {}

    def pending_in(self, rung: int) -> int:
        return sum(1 for p in self.pending.values() if p[1] == rung)

    def run(
        self,
        rung: int,
        epochs: int,
        next_jobs: Callable[[int], list[tuple[Any, Any]]],
        tell: Callable[[Any, float], None] | None,
    ) -> None:
        from distributed import as_completed

        queue = as_completed()

        def submit(trial_id: int, value: Any, cand: Any) -> None:
            self.attempts[trial_id] = self.attempts.get(trial_id, 0) + 1
            future = self.client.submit(
                evaluate_trial,
                self.sdict,
                value,
                epochs,
                pure=False,
                key=f"bayesmulti-{self.token}-{trial_id}-{self.attempts[trial_id]}",
            )
            self.pending[future] = (trial_id, rung, value, cand)
            queue.add(future)

        def fill() -> None:
            free = self.workers - len(self.pending)
            if free > 0:
                for value, cand in next_jobs(free):
                    submit(self.next_id, value, cand)
                    self.next_id += 1

        try:
            fill()
            for future in queue:
                trial_id, _, value, cand = self.pending.pop(future)
                if future.status != "finished":
                    error = future.exception()
                    if self.attempts[trial_id] >= MAX_ATTEMPTS:
                        raise TrialError(f"trial {trial_id} failed {MAX_ATTEMPTS} times: {error}")
                    submit(trial_id, value, cand)  # lost with its worker, or failed: again
                    continue
                trial = Trial(trial_id, value, future.result(), rung)
                self.log.add(trial)  # on disk before the optimiser learns it
                if tell is not None:
                    tell(cand, trial.result["loss"])
                if self.progress:
                    self.progress(trial)
                fill()
        finally:
            for future in self.pending:
                future.cancel()
            self.pending.clear()
