"""One ask/tell search interface for every optimisation in xbar.

Fabrication campaigns (``xbar fab``) and the BayesMulti noise search both need the same
thing: propose k points of a mixed space, learn the measured losses (minimised), resume
after a restart, and do it reproducibly. :class:`Search` wraps a Nevergrad optimizer (or
the Gaussian-process strategy below, which behaves the same way) over an
``ng.p.Parameter`` and hides what differs between them:

- **Plain values.** A :class:`Candidate` carries a stable integer id and the plain-Python
  ``value`` of the parametrization; :meth:`Search.tell` also accepts a plain value, so a
  search resumes by replaying a stored log of ``(value, loss)`` pairs — nothing is pickled.
- **Batches.** Methods that are sequential by nature (Gaussian-process BO) get a batch of k
  by *constant-liar* fantasies: each point asked is told a fantasy loss (the mean of the
  real losses so far) before the next is asked, so the model's uncertainty collapses there
  and the next point goes elsewhere. Fantasies never reach the stored history: the engine
  is rebuilt from the real log before every batch.
- **Constraints and diversity.** Every suggestion satisfies the parametrization's cheap
  constraints and differs from every told, pending and same-batch point. Points are
  compared by their plain value (after ``canonical``, e.g. the lab's rounding), never by
  the optimizer's internal encoding: a category Nevergrad asked for and the same category
  told back as a value have different internal weights but are one point.
- **Finite pools.** With ``pool=`` the suggestions are restricted to a list of values (e.g.
  devices that exist): model-based methods score the unused pool members directly, the
  others are mapped to the nearest unused member in the encoded space (:meth:`encode`).

The methods are listed in :data:`METHODS`; :data:`DEFAULT_METHOD` is the one with the best
mean rank, by median experiments to the top 1 %, over the replay suite of
``benchmarks/bench_fab_suite.py`` (the 43 published devices and categorical, continuous,
mixed and integer pools; BENCHMARKS.md, docs/fab.md). It used to be ``metamodel``, tuned on
the published devices alone; on the other shapes it needed up to several times as many
experiments as ``gp``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from xbar.training.errors import XbarError

if TYPE_CHECKING:  # Nevergrad takes over a second to import: only its methods need it
    import nevergrad as ng


class SearchError(XbarError, ValueError):
    """A search that cannot go on: bad method, bad loss, unsatisfiable constraints."""


@dataclass(frozen=True)
class Method:
    """One choice of optimizer: how to build it and whether it needs fantasy batching."""

    doc: str
    nevergrad: Any = None  # a registered optimizer name, or a function building one; None: GP
    sequential: bool = False  # one point at a time by design: batches use constant liar
    gp: dict[str, Any] = field(default_factory=dict)  # options of the Gaussian process
    local: bool = False  # GP without a pool: options near the best points, besides samples


def _bo(kind: str) -> Callable[[], Any]:
    """Nevergrad's ParametrizedBO with this utility, built when first used."""

    def build() -> Any:
        import nevergrad as ng

        return ng.optimizers.ParametrizedBO(utility_kind=kind, init_budget=2)

    return build


METHODS: dict[str, Method] = {
    "gp": Method(
        "Gaussian process, Matérn 5/2 with one length scale and fitted noise, "
        "on the encoding rescaled to [0, 1] per dimension and the losses' normal scores "
        "(ranks); lower confidence bound (mean - std) within a trust region: over the 30 % "
        "of the pool nearest the best point (all of it after 5 points without progress), or "
        "over random feasible samples plus perturbations of the best points; once among the "
        "first 10 points, the option nearest the centre of the space; constant liar for "
        "batches",
        sequential=True,
        gp={"ard": False, "kappa": 1.0, "warp": True, "region": 0.3, "stall": 5, "centre": 10},
        local=True,
    ),
    "gp-ei": Method(
        "Gaussian process with one length scale per dimension (ARD), expected improvement on "
        "the losses themselves over the pool or random feasible samples",
        sequential=True,
        gp={"ard": True, "kappa": 0.0},
    ),
    "bo": Method("Nevergrad BO: bayes_opt GP with UCB (κ = 2.576)", _bo("ucb"), True),
    "bo-ei": Method("Nevergrad ParametrizedBO with expected improvement", _bo("ei"), True),
    "metamodel": Method(
        "Nevergrad MetaModel: CMA-ES, plus a quadratic surrogate once there are more "
        "points than its d(d-1)/2 + 2d + 1 coefficients (325 for the 24-dimensional "
        "perovskite encoding: a campaign of tens of runs is CMA-ES); batch-capable",
        "MetaModel",
    ),
    "rf-metamodel": Method("Nevergrad RFMetaModel: random-forest surrogate", "RFMetaModel"),
    "de": Method("Nevergrad DE: differential evolution (population-based)", "DE"),
    "ngopt": Method("Nevergrad NGOpt: its own choice of algorithm for the space", "NGOpt"),
    "random": Method("Nevergrad RandomSearch: uniform samples of the space", "RandomSearch"),
}
DEFAULT_METHOD = "gp"
_LIARS: dict[str, Callable[[np.ndarray], float]] = {
    "min": lambda y: float(np.min(y)),
    "mean": lambda y: float(np.mean(y)),
    "max": lambda y: float(np.max(y)),
}
_MAX_TRIES = 200  # re-asks for a point that is new and satisfies the constraints


def plain(value: Any) -> Any:
    """A parameter value with NumPy arrays and scalars turned into lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(plain(v) for v in value)
    return value


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_rounded(v) for v in value]
    return value


def value_key(value: Any) -> str:
    """Identity of a point in its own value space: equal plain values (to 12 significant
    digits) have equal keys, whatever the optimizer's internal encoding of them."""
    return json.dumps(_rounded(plain(value)), sort_keys=True, default=repr)


def _ranks(y: np.ndarray) -> np.ndarray:
    """Ranks 1…n of ``y``, ties sharing their mean rank (scipy.stats.rankdata without the
    0.5 s import of scipy.stats)."""
    ranks = np.empty(len(y))
    ranks[np.argsort(y, kind="stable")] = np.arange(1, len(y) + 1)
    _, tie, counts = np.unique(y, return_inverse=True, return_counts=True)
    return np.bincount(tie, ranks)[tie] / counts[tie]


def _towards(start: Any, end: Any, fraction: float) -> Any:
    """A coordinate moved part of the way from ``start`` to ``end``: numbers (integers
    stay integers), anything else (a category) jumps."""
    numbers = (int, float)
    if isinstance(start, bool) or not isinstance(start, numbers) or not isinstance(end, numbers):
        return end
    moved = start + fraction * (end - start)
    if isinstance(start, int) and isinstance(end, int):
        step = round(moved)
        return step if step != start or start == end else start + (1 if end > start else -1)
    return moved


@dataclass(frozen=True)
class Candidate:
    """One suggestion: ``id`` is unique within its search, ``value`` is plain Python."""

    id: int
    value: Any
    param: ng.p.Parameter | None = field(repr=False, compare=False)  # None: not built


def _unit_box(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Low end and width of every encoded dimension over the rows of ``arrays`` (a width
    of 0 counted as 1): ``(v - low) / span`` puts each dimension in [0, 1]."""
    rows = np.vstack(arrays)
    span = np.ptp(rows, axis=0)
    span[span == 0] = 1.0
    return rows.min(axis=0), span


class _GaussianProcess:
    """A Gaussian process (:mod:`xbar.training.gaussian_process`, the model scikit-learn's
    regressor fits, without its import) choosing among a finite set of encoded options.

    Chosen over Nevergrad's ``BO`` for its kernel choice (one length scale, or one per
    encoded dimension) and a fitted noise term: replicate devices differ, and a noise-free
    GP would chase that spread. One shared length scale overfits less on campaigns of tens
    of points in 10-30 encoded dimensions (on the replay suite ARD needed more experiments
    on the 43 devices and the integer valley).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        ard: bool = True,
        kappa: float = 0.0,
        unit: bool = True,
        warp: bool = False,
        region: float = 0.0,
        stall: int = 0,
        centre: int = 0,
    ) -> None:
        self.rng = rng
        self.unit = unit  # rescale every encoded dimension to [0, 1] over the data seen
        self.ard = ard  # one length scale per dimension, or one for all
        self.kappa = kappa  # 0: expected improvement; > 0: lower confidence bound mean - κ·std
        self.warp = warp  # model the losses' normal scores (ranks), not the losses
        self.region = region  # > 0: choose among this fraction of options nearest the best
        self.stall = stall  # ... until this many points in a row have not improved on it
        self.centre = centre  # below this many points: the option nearest the centre, once
        self.x: list[np.ndarray] = []
        self.y: list[float] = []
        self._kernel: Any = None  # the last fit's hyperparameters
        self.keep_kernel = False  # True for a batch's fantasy engine: fit once, then reuse

    def tell(self, x: np.ndarray, loss: float) -> None:
        self.x.append(x)
        self.y.append(loss)

    def choose(self, options: np.ndarray) -> int:
        """Index of the option with the best acquisition value (ties: at random)."""
        from scipy.special import ndtr

        if len(self.y) < 2:  # nothing to model yet
            return int(self.rng.integers(len(options)))
        mean, std, y = self._predict(options)
        if self.kappa > 0:
            gain = -(mean - self.kappa * std)
        else:  # expected improvement
            improvement = float(np.min(y)) - mean
            z = improvement / std
            gain = improvement * ndtr(z) + std * np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
        since_best = len(self.y) - 1 - int(np.argmin(self.y))
        keep = self._central(options) if len(self.y) < self.centre else None
        if keep is None and self.region > 0 and not (self.stall and since_best >= self.stall):
            keep = self._near(options)
        if keep is not None:
            gain = np.where(keep, gain, -np.inf)
        top = np.flatnonzero(gain >= gain.max() - 1e-12)
        return int(self.rng.choice(top))

    def _central(self, options: np.ndarray) -> np.ndarray | None:
        """The options nearest the centre of the space (each dimension scaled to [0, 1];
        a category's one-hot columns are equally far for every choice, so the acquisition
        picks among those), or None once a point at least as central has been measured.
        A design's centre point: a few random starts rarely land near it, and a trust
        region around the best of them never gets there when the optimum is inside (the
        integer valley of the replay suite: 12 experiments to its top 1 % without it, 6
        with it)."""
        x = np.array(self.x)
        low, span = _unit_box(x, options)
        to_centre = np.linalg.norm((options - low) / span - 0.5, axis=1)
        told = np.linalg.norm((x - low) / span - 0.5, axis=1)
        if to_centre.min() >= told.min() - 1e-9:
            return None
        return to_centre <= to_centre.min() + 1e-9

    def _near(self, options: np.ndarray) -> np.ndarray:
        """The trust region: the fraction ``region`` of the options nearest the best point
        (each dimension scaled to [0, 1])."""
        x = np.array(self.x)
        _, span = _unit_box(x, options)
        best = x[int(np.argmin(self.y))]
        distance = np.linalg.norm((options - best) / span, axis=1)
        keep = max(1, math.ceil(self.region * len(options)))
        return distance <= np.sort(distance)[keep - 1]

    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean and std of the model at ``x``, and the training losses as modelled."""
        train, y = self._training_set()
        if self.unit:
            low, span = _unit_box(train, x)
            train, x = (train - low) / span, (x - low) / span
        if self.warp:
            # Normal scores of the ranks: a loss spanning decades (a yield of 0 beside 90 %,
            # a valley 100x deeper than its floor) would otherwise make the GP fit the
            # worst points and call everything near the best alike.
            from scipy.special import ndtri

            y = np.asarray(ndtri((_ranks(y) - 0.5) / len(y)))
        return (*self._fit_predict(train, y, x), y)

    def _training_set(self) -> tuple[np.ndarray, np.ndarray]:
        """At most MAX_TRAIN points: all of a small campaign; of a large one the best half
        and a seeded random half of the rest. A GP fit costs O(n³); 1000 measured rows
        would take seconds per batch, and far-from-best rows add little to where the next
        best point is (300 points: a batch of 4 on a 1000-row store took up to 1.0 s of
        CPU; 200: up to 0.65 s)."""
        x, y = np.array(self.x), np.array(self.y)
        if len(y) <= self.MAX_TRAIN:
            return x, y
        order = np.argsort(y, kind="stable")
        best = order[: self.MAX_TRAIN // 2]
        rest = np.random.default_rng(len(y)).choice(
            order[self.MAX_TRAIN // 2 :], self.MAX_TRAIN - len(best), replace=False
        )
        keep = np.concatenate([best, rest])
        return x[keep], y[keep]

    MAX_TRAIN = 200

    def _fit_predict(
        self, train: np.ndarray, y: np.ndarray, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        from threadpoolctl import threadpool_limits
        from xbar.training.gaussian_process import Bounds, MaternGP

        scale = 1.0 if self.unit else 6.0  # the width of the encoded space
        seed = int(self.rng.integers(2**31))
        # The batch's later points (after constant-liar fantasies) reuse the first fit's
        # hyperparameters: one Cholesky each instead of a full fit.
        reuse = self.keep_kernel and self._kernel is not None
        gp = MaternGP(
            train.shape[1] if self.ard else 1,
            Bounds(length=(0.5 * scale, (0.05 * scale, 200.0 * scale))),
        )
        if reuse:
            gp.theta = self._kernel
        # One BLAS thread: the fit is many tiny solves, which threads only slow down (3x).
        with threadpool_limits(1):
            gp.fit(train, y, optimize=not reuse, restarts=1, seed=seed)
            mean, std = gp.predict(x)
        self._kernel = gp.theta
        return mean, np.maximum(std, 1e-12)


class _NevergradEngine:
    """A Nevergrad optimizer on its own copy of the parametrization."""

    def __init__(
        self, method: Method, parametrization: ng.p.Parameter, budget: int | None, workers: int
    ) -> None:
        import nevergrad as ng

        factory = method.nevergrad
        factory = ng.optimizers.registry[factory] if isinstance(factory, str) else factory()
        with warnings.catch_warnings():
            # ParametrizedBO warns on discrete spaces unless given a GP noise term; bayes_opt
            # already fits with alpha = 1e-6, and the measured comparisons used exactly that.
            warnings.simplefilter("ignore", ng.errors.InefficientSettingsWarning)
            self.optimizer = factory(parametrization, budget=budget, num_workers=workers)
        self.told: set[str] = set()

    def skip_initial_design(self) -> None:
        """bayes_opt queues random initial probes on first use; after a replayed history
        they would throw the model away, so they are dropped (nothing else is queued)."""
        queue = getattr(getattr(self.optimizer, "bo", None), "_queue", None)
        while queue is not None and len(queue):
            next(queue)


class Search:
    """Ask/tell minimisation over ``parametrization`` with the method ``method``.

    ``seed`` makes the suggestions reproducible; ``budget`` is the number of evaluations
    planned (some Nevergrad methods size themselves by it); ``batch`` the usual batch size;
    ``pool`` restricts suggestions to these values; ``liar`` the fantasy loss of pending
    points for sequential methods (``mean``, ``min`` or ``max`` of the losses so far);
    ``sampler`` draws one random *feasible* value of the space from a NumPy generator, a
    fast stand-in for Nevergrad's ``sample()`` and constraint check when the GP needs many
    options; ``canonical`` maps a plain value to the form it is used in (a lab rounds
    suggested conditions to its instruments' resolution): suggestions are returned in that
    form and compared with every other point in it, so rounding never makes a repeat;
    ``encoder`` maps a plain value to numbers for the Gaussian-process methods (any scaling:
    the GP rescales each dimension to [0, 1]) and must raise ValueError for a value outside
    the space: with it the GP methods never build a Nevergrad parameter per told point,
    which costs milliseconds each (seconds on a 1000-row campaign). ``feasible`` is the
    space's constraint check on a plain value. ``parametrization`` may be a function that
    builds it: with ``sampler``, ``encoder`` and ``feasible`` the GP methods never call it,
    so a campaign's ``suggest`` does not import Nevergrad (over a second of its CPU).
    """

    SAMPLES_FIRST, SAMPLES_PER_BATCH, SAMPLES_MAX = 256, 64, 512  # GP options without a pool
    LOCAL_CENTRES, SAMPLES_LOCAL = 4, 32  # and per batch, options near the best points

    def __init__(
        self,
        parametrization: ng.p.Parameter | Callable[[], ng.p.Parameter],
        method: str = DEFAULT_METHOD,
        *,
        seed: int = 0,
        budget: int | None = None,
        batch: int = 1,
        pool: Sequence[Any] | None = None,
        liar: str = "mean",
        sampler: Callable[[np.random.Generator], Any] | None = None,
        canonical: Callable[[Any], Any] | None = None,
        encoder: Callable[[Any], np.ndarray] | None = None,
        feasible: Callable[[Any], bool] | None = None,
    ) -> None:
        if method not in METHODS:
            raise SearchError(f"unknown search method {method!r}; choose from {', '.join(METHODS)}")
        if liar not in _LIARS:
            raise SearchError(f"unknown liar {liar!r}; choose from {', '.join(_LIARS)}")
        if pool is not None and not pool:
            raise SearchError("the pool of values to choose from is empty")
        self.method = method
        self.seed = seed
        self._space: ng.p.Parameter | None = None
        self._build_space = parametrization if callable(parametrization) else None
        if self._build_space is None:
            self._use_space(parametrization)
        self.budget = budget
        self.batch = max(1, batch)
        self.liar = liar
        self._spec = METHODS[method]
        self._told: list[tuple[Any, float]] = []  # (plain value, loss)
        self._pending: dict[int, Candidate] = {}
        self._next_id = 0
        self._engine: _GaussianProcess | _NevergradEngine | None = None
        self._live_asked: set[int] = set()  # ids the live engine asked itself
        # Finite option sets (the pool, or the GP's random samples): values and encodings.
        self._sampler = sampler
        self._canonical = canonical
        self._encoder = encoder if self._spec.nevergrad is None else None  # GP methods only
        self._feasible = feasible
        self._sample_rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
        self._pool = pool is not None
        self._options = [self._checked(v) for v in pool] if pool is not None else []
        self._options_x = self._encode_values(self._options)
        self._options_keys = [value_key(v) for v in self._options]
        self._used: Counter[str] = Counter()  # keys of told values
        self._local = self._spec.local

    # -- public interface ----------------------------------------------------------------
    @property
    def parametrization(self) -> ng.p.Parameter:
        """The Nevergrad search space (built on first use when given as a function)."""
        if self._space is None:
            assert self._build_space is not None
            self._use_space(self._build_space())
        assert self._space is not None
        return self._space

    def _use_space(self, space: ng.p.Parameter) -> None:
        space.random_state = np.random.RandomState(self.seed)  # its samples, too
        self._space = space
        self._scratch = space.spawn_child()  # re-used to encode values quickly

    @property
    def history(self) -> list[tuple[Any, float]]:
        """Every real ``(value, loss)`` told so far, in order (the log to resume from)."""
        return list(self._told)

    @property
    def pending(self) -> list[Candidate]:
        """Candidates asked but not told yet."""
        return list(self._pending.values())

    def encode(self, value: Any) -> np.ndarray:
        """The value in Nevergrad's standardized space: bounded scalars linear in ±3 (log
        scale for Log), a choice as one weight per option, an ordinal as one position."""
        return self._encode(self._child(value))

    def ask(self, k: int = 1) -> list[Candidate]:
        """k new, distinct suggestions that satisfy the constraints."""
        if k < 1:
            raise SearchError(f"batch size must be >= 1, got {k}")
        if self._pool and len(self._free_options([])) < k:
            left = len(self._free_options([]))
            raise SearchError(f"the pool has {left} value(s) left to suggest; cannot suggest {k}")
        fantasies = self._spec.sequential and (k > 1 or bool(self._pending))
        engine = self._fresh_engine(with_pending=True) if fantasies else self._live_engine()
        if fantasies and isinstance(engine, _GaussianProcess):
            engine.keep_kernel = True
        if isinstance(engine, _GaussianProcess) and not self._pool:
            self._refresh_samples()
        batch: list[Candidate] = []
        for _ in range(k):
            value, param = self._propose(engine, taken=[c.value for c in batch])
            if self._canonical is not None:
                value = self._canonical(value)
            candidate = Candidate(self._next_id, value, param)
            self._next_id += 1
            self._pending[candidate.id] = candidate
            batch.append(candidate)
            if fantasies:
                self._engine_tell(engine, value, self._lie(), param)
            elif not self._pool:
                self._live_asked.add(candidate.id)
        if fantasies:
            self._engine = None  # it has seen fantasies: rebuild from the real log next time
        return batch

    def tell(self, candidate: Candidate | Any, loss: float) -> None:
        """Record a measured loss for a candidate, or for a plain value (replay, or an
        experiment that was not suggested)."""
        loss = float(loss)
        if not math.isfinite(loss):
            raise SearchError(f"loss must be a finite number, got {loss!r}")
        asked_here = False
        param: ng.p.Parameter | None = None
        if isinstance(candidate, Candidate):
            self._pending.pop(candidate.id, None)
            asked_here = candidate.id in self._live_asked
            self._live_asked.discard(candidate.id)
            value, param = candidate.value, candidate.param
        else:
            value = self._checked(candidate)
        self._told.append((value, loss))
        self._used[self._key(value)] += 1
        if self._engine is not None:  # its own candidate as asked, or a copy of the value
            self._engine_tell(self._engine, value, loss, param if asked_here else None)

    def pend(self, value: Any) -> Candidate:
        """Register a point suggested earlier (e.g. by a previous process) whose loss is
        still awaited: new suggestions avoid it, and sequential methods fantasise its loss."""
        candidate = Candidate(self._next_id, self._checked(value), None)
        self._next_id += 1
        self._pending[candidate.id] = candidate
        return candidate

    def recommend(self) -> Any:
        """The best value measured so far (a lab trusts measurements, not the model)."""
        if not self._told:
            raise SearchError("nothing has been told yet: no recommendation")
        return min(self._told, key=lambda item: item[1])[0]

    # -- values ------------------------------------------------------------------------------
    def _child(self, value: Any) -> ng.p.Parameter:
        try:
            return self.parametrization.spawn_child(new_value=value)
        except (ValueError, TypeError, KeyError) as exc:
            raise SearchError(f"value {value!r} does not fit the search space: {exc}") from None

    def _satisfies(self, value: Any) -> bool:
        """The space's constraints hold for a plain value."""
        if self._feasible is not None:
            return bool(self._feasible(value))
        return bool(self._child(value).satisfies_constraints())

    def _checked(self, value: Any) -> Any:
        """A told or pending value, validated against the space, in plain form."""
        if self._encoder is None:
            return plain(self._child(value).value)
        try:
            self._encoder(value)
        except (ValueError, TypeError, KeyError) as exc:
            raise SearchError(f"value {value!r} does not fit the search space: {exc}") from None
        return plain(value)

    def _encode_value(self, value: Any) -> np.ndarray:
        if self._encoder is not None:
            return np.asarray(self._encoder(value), float)
        return self._encode(self._child(value))

    def _encode(self, param: ng.p.Parameter) -> np.ndarray:
        return np.asarray(param.get_standardized_data(reference=self.parametrization), float)

    def _encode_values(self, values: Sequence[Any]) -> np.ndarray:
        """Encodings of many values through one scratch child (4x faster than spawning)."""
        if self._encoder is not None:
            if not values:
                return np.zeros((0, 0))
            return np.array([self._encode_value(v) for v in values])
        dimension = self.parametrization.dimension  # built, and with it the scratch child
        rows = []
        for value in values:
            self._scratch.value = value
            rows.append(self._encode(self._scratch))
        return np.array(rows).reshape(len(values), dimension)

    def _key(self, value: Any) -> str:
        """Identity of a point: its plain value in canonical form (:func:`value_key`), not
        its encoding."""
        value = plain(value)
        return value_key(value if self._canonical is None else self._canonical(value))

    def _canonical_param(self, param: ng.p.Parameter) -> ng.p.Parameter:
        """The point in the form it is used (``canonical``), as a parameter."""
        if self._canonical is None:
            return param
        value = plain(param.value)
        used = self._canonical(value)
        return param if value_key(used) == value_key(value) else self._child(used)

    # -- engines -----------------------------------------------------------------------------
    def _new_engine(self) -> _GaussianProcess | _NevergradEngine:
        # Same seed and same log give the same engine: a replayed search continues alike.
        seeds = np.random.SeedSequence([self.seed, len(self._told), len(self._pending)])
        if self._spec.nevergrad is None:
            options = dict(self._spec.gp)
            if not self._pool:  # without a pool the local samples are the trust region
                options["region"] = 0.0
            return _GaussianProcess(np.random.default_rng(seeds), **options)
        parametrization = self.parametrization.copy()
        parametrization.random_state = np.random.RandomState(seeds.generate_state(1)[0])
        return _NevergradEngine(self._spec, parametrization, self.budget, self.batch)

    def _engine_tell(
        self,
        engine: _GaussianProcess | _NevergradEngine,
        value: Any,
        loss: float,
        param: ng.p.Parameter | None = None,
    ) -> None:
        """Tell an engine a value's loss (``param``: the engine's own candidate for it)."""
        if isinstance(engine, _GaussianProcess):
            engine.tell(self._encode_value(value), loss)
            return
        key = self._key(value)
        if key not in engine.told:  # a repeat is told once: bayes_opt refuses duplicates
            engine.told.add(key)
            engine.optimizer.tell(param if param is not None else self._child(value), loss)

    def _live_engine(self) -> _GaussianProcess | _NevergradEngine:
        if self._engine is None:
            self._engine = self._fresh_engine(with_pending=False)
            self._live_asked.clear()
        return self._engine

    def _fresh_engine(self, with_pending: bool) -> _GaussianProcess | _NevergradEngine:
        engine = self._new_engine()
        for value, loss in self._told:
            self._engine_tell(engine, value, loss)
        if with_pending:
            for candidate in self._pending.values():
                self._engine_tell(engine, candidate.value, self._lie())
        if self._told and isinstance(engine, _NevergradEngine):
            engine.skip_initial_design()
        return engine

    def _lie(self) -> float:
        if not self._told:
            return 0.0
        return _LIARS[self.liar](np.array([loss for _, loss in self._told]))

    # -- proposals ---------------------------------------------------------------------------
    def _refresh_samples(self) -> None:
        """The GP's options without a pool: random feasible samples, partly renewed per batch."""
        wanted = self.SAMPLES_PER_BATCH if self._options else self.SAMPLES_FIRST
        fresh: list[Any] = []
        known = set(self._options_keys)
        for _ in range(wanted * 20):
            if self._sampler is not None:
                value = self._sampler(self._sample_rng)
            else:
                value = self.parametrization.sample().value  # correct, but ~10 ms each
            # A sampler promises feasible values (Nevergrad's check costs ~10 ms a call);
            # the chosen option is checked anyway before it is suggested.
            if self._sampler is None:
                self._scratch.value = value
            if self._sampler is not None or self._scratch.satisfies_constraints():
                value = plain(value)
                if self._canonical is not None:
                    value = self._canonical(value)
                key = value_key(value)
                if key not in known:  # a finite space's samples repeat: each option once
                    known.add(key)
                    fresh.append(value)
                if len(fresh) == wanted:
                    break
        for value in self._local_samples(known):
            fresh.append(value)
        self._options = (self._options + fresh)[-self.SAMPLES_MAX :]
        self._options_x = self._encode_values(self._options)
        self._options_keys = [value_key(v) for v in self._options]

    def _local_samples(self, known: set[str]) -> list[Any]:
        """Options near the best points told so far (trust-region style): a random draw
        of the space supplies new coordinates for a few of a good point's conditions, a
        number moving only part of the way towards the draw. Global samples alone leave
        the GP few options close to the best, where the next best point usually is."""
        if not self._local or not self._told or not isinstance(self._told[0][0], dict):
            return []
        known |= set(self._used)
        ranked = sorted(self._told, key=lambda item: item[1])[: self.LOCAL_CENTRES]
        rng = self._sample_rng
        out: list[Any] = []
        for _ in range(self.SAMPLES_LOCAL * 4):
            centre = ranked[min(int(rng.exponential(1.0)), len(ranked) - 1)][0]
            if self._sampler is not None:
                draw = self._sampler(rng)
            else:
                draw = self.parametrization.sample().value
            names = list(centre)
            moved = {n for n in names if rng.random() < 2.0 / len(names)}
            moved.add(names[int(rng.integers(len(names)))])
            value = dict(centre)
            for name in (n for n in names if n in moved):  # spec order, not set order
                value[name] = _towards(centre[name], draw[name], float(rng.uniform(0.05, 0.4)))
            value = plain(value)
            if self._canonical is not None:
                value = self._canonical(value)
            key = value_key(value)
            if key in known:
                continue
            try:
                self._checked(value)
            except SearchError:
                continue  # e.g. an ordinal's number between two levels
            known.add(key)
            out.append(value)
            if len(out) == self.SAMPLES_LOCAL:
                break
        return out

    def _free_options(self, taken: list[Any]) -> list[int]:
        """Options not yet told, pending or taken; a value listed twice (replicates in a
        pool) stays free until it has been used twice."""
        busy = self._used.copy()
        busy.update(self._key(v) for v in taken + [c.value for c in self._pending.values()])
        free = []
        for i, key in enumerate(self._options_keys):
            if busy[key] > 0:
                busy[key] -= 1
            else:
                free.append(i)
        return free

    def _propose(
        self, engine: _GaussianProcess | _NevergradEngine, taken: list[Any]
    ) -> tuple[Any, ng.p.Parameter | None]:
        """A new point as a plain value, with the engine's own parameter for it if any."""
        if isinstance(engine, _GaussianProcess) or self._pool:
            free = self._free_options(taken)
            if not free:
                raise SearchError(
                    "the space is exhausted: every option is measured, pending or in this batch"
                    if self._pool
                    else "no unused option is left to suggest (the space may be exhausted)"
                )
            if isinstance(engine, _GaussianProcess):
                while free:
                    index = free[engine.choose(self._options_x[free])]
                    if self._satisfies(self._options[index]):
                        return self._options[index], None
                    free.remove(index)
                raise SearchError("no option left that satisfies the constraints")
            wanted = self._encode(engine.optimizer.ask())  # the nearest unused pool value
            distances = np.linalg.norm(self._options_x[free] - wanted, axis=1)
            return self._options[free[int(np.argmin(distances))]], None
        seen = set(self._used) | {self._key(v) for v in taken}
        seen |= {self._key(c.value) for c in self._pending.values()}
        for _ in range(_MAX_TRIES):
            param = self._canonical_param(engine.optimizer.ask())
            if param.satisfies_constraints() and self._key(param.value) not in seen:
                return plain(param.value), param  # a Log's value is exp(log(x)): see ask()
        for _ in range(_MAX_TRIES * 10):  # the optimizer is stuck: fall back to samples
            param = self._canonical_param(self.parametrization.sample())
            if param.satisfies_constraints() and self._key(param.value) not in seen:
                return plain(param.value), param
        raise SearchError(
            f"no new point satisfies the constraints after {_MAX_TRIES * 11} tries; "
            "the space may be exhausted or the constraints contradictory"
        )
