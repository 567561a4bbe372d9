"""Campaign specs: the fabrication parameters, their units and bounds, what may not be
combined, and what the campaign optimises — read from and written back to TOML.

A spec is validated as a whole when it is read, so a campaign never starts on a typo;
every value that later enters the store (suggested or reported by the lab) goes through
:meth:`Spec.check_values`, which names the parameter and the offending value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from xbar.training.nesting import nesting_depth

from .errors import FabError
from .units import UnitError, convert

if TYPE_CHECKING:  # nevergrad takes most of a second to import: only suggest needs it
    import nevergrad as ng

KINDS = ("float", "int", "log", "ordinal", "categorical")
# Built-in metrics, derived from a device's I–V file by training.devices.usability.analyse:
# name -> (sense, lowest, highest). Usability = monotonicity·exp(−σ) lies in [0, 1].
DERIVED: dict[str, tuple[str, float | None, float | None]] = {
    "usability": ("max", 0.0, 1.0),
    "sigma": ("min", 0.0, None),
    "monotonicity": ("max", 0.0, None),
}
METRICS = {name: sense for name, (sense, _, _) in DERIVED.items()}
GOALS = {"max": "max", "maximise": "max", "maximize": "max",
         "min": "min", "minimise": "min", "minimize": "min"}  # fmt: skip
# Columns of a results sheet that are neither parameters nor objectives.
RESERVED = ("experiment", "iv_file", "notes", "status", "reason")
METRIC_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
BOUND_SLACK = 1e-12  # relative to the range: a bound reached through exp(log(x)) still counts
LOG_DIGITS = 2  # significant digits of a suggested log-scaled condition without a step
LINEAR_STEPS = 100  # a float condition without a step: about 1/100 of its range, rounded
MAX_DEPTH = 16  # nesting of tables and arrays in a spec (a spec needs 4)
MAX_SEED = 2**32 - 1  # numpy's seeds
MAX_BOUND = 1e300  # bounds: their difference and the optimizer's scaling stay finite
MAX_INT_BOUND = 2**53  # integer parameters: exact as floats, drawable by numpy
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A campaign name: it names the sheet and report files, so one safe file-name stem (no
path separators, no "..", at most 64 characters)."""


class SpecError(FabError):
    """A campaign spec (or a value checked against it) that cannot be used."""


def _quantity(value: Any, unit: str, to: str, where: str, name: str = "") -> float:
    """``value`` as a finite number in the unit ``to`` (see :func:`units.convert`), or a
    SpecError naming ``where`` and the parameter ``name``."""
    shown = f"{name} = {value!r}" if name else repr(value)
    try:
        number = convert(value, unit, to, f"{where}: {name}" if name else where)
    except UnitError as exc:
        raise SpecError(str(exc)) from None
    except (TypeError, ValueError):
        raise SpecError(f"{where}: {shown} is not a number") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise SpecError(f"{where}: {shown} is not a finite number")
    return number


@dataclass(frozen=True)
class Parameter:
    """One fabrication or measurement condition."""

    name: str
    kind: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    description: str = ""
    step: float | None = None  # suggestions are low + a multiple of step
    decimals: int | None = None  # or rounded to this many decimals

    def check(self, value: Any, where: str, unit: str = "") -> Any:
        """The value in this parameter's type and unit, or a SpecError naming it and
        ``where``. ``unit``: the unit of a bare number (a header such as ``Voltage (V)``);
        text may carry its own (``2.1 um``)."""
        if self.kind in ("ordinal", "categorical"):
            return self._choice(value, where)
        number = _quantity(value, unit, self.unit, where, self.name)
        assert self.low is not None and self.high is not None
        slack = BOUND_SLACK * (self.high - self.low)  # float round-off of log/linear maps
        if self.low - slack <= number <= self.high + slack:
            number = min(max(number, self.low), self.high)
        if not self.low <= number <= self.high:
            raise SpecError(
                f"{where}: {self.name} = {value!r} is outside [{self.low:g}, {self.high:g}]"
                f"{' ' + self.unit if self.unit else ''}"
            )
        if self.kind == "int":
            if number != round(number):
                raise SpecError(f"{where}: {self.name} = {value!r} is not an integer")
            return round(number)
        return number

    def _choice(self, value: Any, where: str) -> Any:
        """The choice ``value`` names: by equality, by text ("180C" from a CSV matches
        180C), or by numeric value (6.0 matches 6)."""
        text = str(value).strip()
        for choice in self.choices:
            if value == choice or text == str(choice):
                return choice
        try:
            number = float(text.replace(",", ".", 1)) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        for choice in self.choices:
            if (
                not isinstance(choice, bool)
                and isinstance(choice, int | float)
                and number == choice
            ):
                return choice
        raise SpecError(f"{where}: {self.name} = {value!r} is not one of {list(self.choices)}")

    def resolution(self, value: float) -> float:
        """The step a suggestion near ``value`` is rounded to."""
        assert self.low is not None and self.high is not None
        if self.step is not None:
            return self.step
        if self.decimals is not None:
            return 10.0**-self.decimals
        if self.kind == "log":
            return 10.0 ** (math.floor(math.log10(abs(value))) - LOG_DIGITS + 1)
        return 10.0 ** math.floor(math.log10((self.high - self.low) / LINEAR_STEPS))

    def grid(self, limit: int) -> list[float] | None:
        """Every value a ``step`` or ``decimals`` float can be suggested at (at most
        ``limit``), None for one without either or with more values."""
        assert self.low is not None and self.high is not None
        if self.step is not None:
            count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            values = (self.low + i * self.step for i in range(count))
        elif self.decimals is not None:
            unit = 10.0**-self.decimals
            first, last = math.ceil(self.low / unit - 1e-9), math.floor(self.high / unit + 1e-9)
            count = last - first + 1
            values = (i * unit for i in range(first, last + 1))
        else:
            return None
        if count > limit:
            return None
        return sorted({self.for_lab(float(v)) for v in values})

    def for_lab(self, value: Any) -> Any:
        """A suggested value as the lab can set it: rounded to the parameter's ``step`` or
        ``decimals``, else to about 1/100 of its range (2 significant digits on a log
        scale) — a furnace is not set to 1.8812355 µm — and kept within the bounds."""
        if self.kind not in ("float", "log") or not isinstance(value, float) or value == 0:
            return value
        assert self.low is not None and self.high is not None
        step = self.resolution(value)
        origin = self.low if self.step is not None else 0.0
        rounded = origin + round((value - origin) / step) * step
        places = max(0, 1 - math.floor(math.log10(step)))  # no 0.30000000000000004
        rounded = round(rounded, places)
        while rounded > self.high:
            rounded = round(rounded - step, places)
        while rounded < self.low:
            rounded = round(rounded + step, places)
        return float(min(max(rounded, self.low), self.high))

    def parameter(self) -> ng.p.Parameter:
        import nevergrad as ng

        if self.kind == "categorical":
            return ng.p.Choice(list(self.choices))
        if self.kind == "ordinal":
            return ng.p.TransitionChoice(list(self.choices))
        assert self.low is not None and self.high is not None
        if self.kind == "log":
            return ng.p.Log(lower=self.low, upper=self.high)
        scalar = ng.p.Scalar(lower=self.low, upper=self.high)
        return scalar.set_integer_casting() if self.kind == "int" else scalar

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.unit:
            out["unit"] = self.unit
        if self.kind in ("ordinal", "categorical"):
            out["choices"] = list(self.choices)
        else:
            out["low"], out["high"] = self.low, self.high
        if self.step is not None:
            out["step"] = self.step
        if self.decimals is not None:
            out["decimals"] = self.decimals
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Infeasible:
    """A combination known not to work: every listed parameter matches (a value, or any
    of a list of values)."""

    when: dict[str, list[Any]]
    reason: str = ""

    def matches(self, values: dict[str, Any]) -> bool:
        return all(values.get(name) in options for name, options in self.when.items())


@dataclass(frozen=True)
class Objective:
    """One measured outcome, maximised or minimised, with a weight: a number (optionally
    with a unit and bounds; values outside are refused), or an ordinal outcome whose
    ``levels`` run from worst to best (its number is the level's position)."""

    metric: str
    goal: str
    weight: float = 1.0
    unit: str = ""
    low: float | None = None
    high: float | None = None
    levels: tuple[str, ...] = ()

    @property
    def derived(self) -> bool:
        """A built-in metric computed from an I–V file (usability, sigma, monotonicity)."""
        return self.metric in DERIVED

    @property
    def label(self) -> str:
        """How plots and status name it: ``hse_gap (eV, minimised)``."""
        unit = f"{self.unit}, " if self.unit else ""
        return f"{self.metric} ({unit}{'maximised' if self.goal == 'max' else 'minimised'})"

    def parse(self, value: Any, where: str, unit: str = "") -> float | str:
        """A reported outcome: a level name for an ordinal, else a number in the stated
        unit and bounds; a SpecError names ``where`` otherwise."""
        if self.levels:
            text = str(value).strip()
            for level in self.levels:
                if text.casefold() == level.casefold():
                    return level
            raise SpecError(f"{where}: {value!r} is not one of the levels {list(self.levels)}")
        number = _quantity(value, unit, self.unit, where)
        low, high = self.bounds
        if (low is not None and number < low) or (high is not None and number > high):
            shown = ("-inf" if low is None else f"{low:g}", "inf" if high is None else f"{high:g}")
            span = f"[{shown[0]}, {shown[1]}]"
            raise SpecError(f"{where}: {value!r} is outside {span} of {self.metric}")
        return number

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """The stated bounds; a built-in metric's own where none is stated (usability
        lies in [0, 1], σ and monotonicity are >= 0)."""
        _, low, high = DERIVED.get(self.metric, ("", None, None))
        return (
            self.low if self.low is not None else low,
            self.high if self.high is not None else high,
        )

    def number(self, value: float | str) -> float:
        """The stored outcome as a number (an ordinal level: its position)."""
        if self.levels:
            return float(self.levels.index(str(value)))
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, "goal": self.goal, "weight": self.weight}
        if self.unit:
            out["unit"] = self.unit
        if self.levels:
            out["levels"] = list(self.levels)
        for key in ("low", "high"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Spec:
    """A whole campaign: parameters, fixed values, infeasible sets, objectives, defaults."""

    name: str
    parameters: tuple[Parameter, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    infeasible: tuple[Infeasible, ...] = ()
    objectives: tuple[Objective, ...] = (Objective("usability", "max"),)
    pareto: bool = False  # several objectives: keep the Pareto front (else weighted sum)
    batch: int = 4
    budget: int = 60
    method: str | None = None  # None: the optimizer default (training.search)
    seed: int = 0
    description: str = ""

    # -- reading and writing -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "spec") -> Spec:
        """Build and validate a spec; the error names the section and key."""
        data = dict(data)
        campaign = dict(_table(data.pop("campaign", {}), source, "[campaign]"))
        params_in = _table(data.pop("parameters", None), source, "[parameters]")
        fixed = dict(_table(data.pop("fixed", {}), source, "[fixed]"))
        infeasible_in = data.pop("infeasible", [])
        objectives_in = data.pop("objectives", [{"metric": "usability", "goal": "max"}])
        if data:
            raise SpecError(f"{source}: unknown section(s) {sorted(data)}")
        parameters = tuple(_parameter(n, p, source) for n, p in params_in.items())
        if not parameters:
            raise SpecError(f"{source}: [parameters] is empty: nothing to optimise")
        names = {p.name for p in parameters}
        for name in fixed:
            if name in names:
                raise SpecError(f"{source}: [fixed] {name} is also a free parameter")
        spec = cls(
            name=_campaign_name(
                campaign.pop("name", re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).stem)), source
            ),
            parameters=parameters,
            fixed=fixed,
            infeasible=tuple(
                _infeasible(i, e, parameters, source)
                for i, e in enumerate(_list(infeasible_in, source, "infeasible"))
            ),
            objectives=tuple(
                _objective(i, o, source)
                for i, o in enumerate(_list(objectives_in, source, "objectives"))
            ),
            pareto=bool(campaign.pop("pareto", False)),
            batch=_positive_int(campaign.pop("batch", 4), source, "[campaign] batch"),
            budget=_positive_int(campaign.pop("budget", 60), source, "[campaign] budget"),
            method=campaign.pop("method", None),
            seed=_seed(campaign.pop("seed", 0), source),
            description=str(campaign.pop("description", "")),
        )
        if campaign:
            raise SpecError(f"{source}: unknown key(s) in [campaign]: {sorted(campaign)}")
        if not spec.objectives:
            raise SpecError(f"{source}: [[objectives]] is empty")
        metrics = [o.metric for o in spec.objectives]
        if len(set(metrics)) != len(metrics):
            raise SpecError(f"{source}: [[objectives]] name a metric twice")
        for metric in metrics:
            if metric in names:
                raise SpecError(f"{source}: objective {metric!r} is also a parameter")
        for name in names:
            if name in RESERVED:
                raise SpecError(f"{source}: [parameters.{name}]: {name!r} is a reserved column")
        if spec.pareto and len(spec.objectives) < 2:
            raise SpecError(f"{source}: pareto = true needs at least two [[objectives]]")
        if spec.method is not None:
            from xbar.training.search import METHODS

            if spec.method not in METHODS:
                raise SpecError(
                    f"{source}: [campaign] method {spec.method!r} is not one of {list(METHODS)}"
                )
        return spec

    def to_dict(self) -> dict[str, Any]:
        campaign: dict[str, Any] = {"name": self.name}
        if self.description:
            campaign["description"] = self.description
        campaign.update(batch=self.batch, budget=self.budget, seed=self.seed, pareto=self.pareto)
        if self.method is not None:
            campaign["method"] = self.method
        out: dict[str, Any] = {
            "campaign": campaign,
            "parameters": {p.name: p.to_dict() for p in self.parameters},
        }
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        if self.infeasible:
            out["infeasible"] = [
                {
                    "when": {k: list(v) for k, v in i.when.items()},
                    **({"reason": i.reason} if i.reason else {}),
                }
                for i in self.infeasible
            ]
        out["objectives"] = [o.to_dict() for o in self.objectives]
        return out

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def fingerprint(self) -> str:
        """Hash of the spec's meaning (not its formatting): a changed spec is noticed."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    # -- values ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def parametrization(self) -> ng.p.Dict:
        """The Nevergrad search space, with the infeasible combinations as constraints."""
        import nevergrad as ng

        space = ng.p.Dict(**{p.name: p.parameter() for p in self.parameters})
        space.register_cheap_constraint(self.is_feasible)
        return space

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A random feasible point: per parameter uniform, log-uniform or uniform over the
        choices, drawn again while the combination is infeasible."""
        for _ in range(10_000):
            values = self._draw(rng)
            if self.is_feasible(values):
                return values
        raise SpecError(f"spec {self.name!r}: no feasible point in 10 000 random draws")

    def _draw(self, rng: np.random.Generator) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.parameters:
            if p.kind in ("ordinal", "categorical"):
                out[p.name] = p.choices[int(rng.integers(len(p.choices)))]
                continue
            assert p.low is not None and p.high is not None
            if p.kind == "log":
                out[p.name] = float(np.exp(rng.uniform(np.log(p.low), np.log(p.high))))
            elif p.kind == "int":
                out[p.name] = int(rng.integers(int(p.low), int(p.high) + 1))
            else:
                out[p.name] = float(rng.uniform(p.low, p.high))
        return out

    def encode(self, values: dict[str, Any]) -> np.ndarray:
        """A point as numbers for a surrogate model, without Nevergrad: a scalar scaled to
        [0, 1] (log-scaled for ``log``), an ordinal as its position, a categorical one-hot.
        A value outside the space is a ValueError."""
        out: list[float] = []
        for p in self.parameters:
            v = values[p.name]
            if p.kind == "categorical":
                index = p.choices.index(v)
                out.extend(1.0 if i == index else 0.0 for i in range(len(p.choices)))
            elif p.kind == "ordinal":
                out.append(p.choices.index(v) / (len(p.choices) - 1))
            else:
                assert p.low is not None and p.high is not None
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ValueError(f"{p.name} = {v!r} is not a number")
                if p.kind == "log":
                    out.append(math.log(v / p.low) / math.log(p.high / p.low))
                else:
                    out.append((v - p.low) / (p.high - p.low))
        return np.array(out)

    def is_feasible(self, values: dict[str, Any]) -> bool:
        return not any(rule.matches(values) for rule in self.infeasible)

    def for_lab(self, values: dict[str, Any]) -> dict[str, Any]:
        """Suggested values rounded as the lab's sheet shows them (Parameter.for_lab)."""
        by_name = {p.name: p for p in self.parameters}
        return {k: by_name[k].for_lab(v) if k in by_name else v for k, v in values.items()}

    def check_values(self, values: dict[str, Any], where: str) -> dict[str, Any]:
        """All free parameters present, typed and in range, and the combination feasible."""
        out = {}
        for p in self.parameters:
            if p.name not in values or values[p.name] in (None, ""):
                raise SpecError(f"{where}: {p.name} is missing")
            out[p.name] = p.check(values[p.name], where)
        for rule in self.infeasible:
            if rule.matches(out):
                why = f" ({rule.reason})" if rule.reason else ""
                raise SpecError(f"{where}: the combination {rule.when} is infeasible{why}")
        return out

    def finite_points(self, limit: int = 20_000) -> list[dict[str, Any]] | None:
        """Every feasible point of a space of choices and integers, in a fixed order; None
        for a space with a continuous parameter or more than ``limit`` points."""
        import itertools

        axes = []
        size = 1
        for p in self.parameters:
            if p.kind in ("float", "log"):
                grid = p.grid(limit)
                if grid is None:
                    return None
                axis: list[Any] = grid
            elif p.kind == "int":
                assert p.low is not None and p.high is not None
                axis = list(range(int(p.low), int(p.high) + 1))
            else:
                axis = list(p.choices)
            size *= len(axis)
            if size > limit:
                return None
            axes.append(axis)
        points = (dict(zip(self.names, combo, strict=True)) for combo in itertools.product(*axes))
        return [v for v in points if self.is_feasible(v)]

    # -- objectives -----------------------------------------------------------------------
    def loss(self, metrics: dict[str, Any], weights: list[float] | None = None) -> float:
        """What the optimizer minimises: minus the weighted sum of the objectives, each
        oriented so that larger is better (``weights`` overrides the spec's)."""
        total = 0.0
        for objective, weight in zip(
            self.objectives, weights or [o.weight for o in self.objectives], strict=True
        ):
            value = objective.number(metrics[objective.metric])
            total += weight * (value if objective.goal == "max" else -value)
        return -total

    def score(self, metrics: dict[str, Any]) -> float:
        """The campaign's single figure of merit: the objective itself when there is one
        (in its own sense: the best hse_gap of a minimised one is the lowest), else the
        weighted sum with every objective oriented so that larger is better."""
        if len(self.objectives) == 1:
            return self.objectives[0].number(metrics[self.objectives[0].metric])
        return -self.loss(metrics)

    def better(self, a: float, b: float) -> bool:
        """Score ``a`` beats ``b`` (a single minimised objective: lower is better)."""
        minimised = len(self.objectives) == 1 and self.objectives[0].goal == "min"
        return a < b if minimised else a > b

    @property
    def score_label(self) -> str:
        if len(self.objectives) == 1:
            return self.objectives[0].label
        return "weighted score: " + " + ".join(
            f"{o.weight:g}·{'' if o.goal == 'max' else '−'}{o.metric}" for o in self.objectives
        )


def load_spec(path: str | Path) -> Spec:
    """Read and validate a TOML campaign spec."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if nesting_depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise SpecError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)")
    return Spec.from_dict(data, source=str(path))


def _campaign_name(value: Any, source: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise SpecError(
            f"{source}: [campaign] name = {value!r} must be a file-name stem (letters, digits, "
            "'.', '_', '-', at most 64, no '..'): it names the sheet and report files"
        )
    return value


def _seed(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise SpecError(
            f"{source}: [campaign] seed = {value!r} must be an integer in 0..{MAX_SEED}"
        )
    return value


# -- validation helpers ----------------------------------------------------------------------
def _table(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{source}: {where} must be a table")
    return value


def _list(value: Any, source: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"{source}: [[{where}]] must be an array of tables")
    return value


def _positive_int(value: Any, source: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{source}: {where} = {value!r} must be a positive integer")
    return value


def _parameter(name: str, entry: Any, source: str) -> Parameter:
    where = f"{source}: [parameters.{name}]"
    entry = dict(_table(entry, source, f"[parameters.{name}]"))
    kind = entry.pop("type", None)
    if kind not in KINDS:
        raise SpecError(f"{where} type = {kind!r} must be one of {list(KINDS)}")
    unit, description = str(entry.pop("unit", "")), str(entry.pop("description", ""))
    if kind in ("ordinal", "categorical"):
        choices = entry.pop("choices", None)
        if not isinstance(choices, list) or len(choices) < 2:
            raise SpecError(f"{where} choices must list at least two values")
        if not all(
            isinstance(c, str) or (isinstance(c, int | float) and math.isfinite(c)) for c in choices
        ):
            raise SpecError(f"{where} choices must be strings or finite numbers")
        if len({str(c) for c in choices}) != len(choices):
            raise SpecError(f"{where} choices {choices} repeat a value")
        param = Parameter(name, kind, unit, choices=tuple(choices), description=description)
    else:
        low, high = entry.pop("low", None), entry.pop("high", None)
        for key, bound in (("low", low), ("high", high)):
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise SpecError(f"{where} {key} = {bound!r} must be a number")
            if not math.isfinite(bound) or abs(bound) > MAX_BOUND:
                raise SpecError(f"{where} {key} = {bound!r} must be a finite number, |x| <= 1e300")
            if kind == "int" and abs(bound) > MAX_INT_BOUND:
                raise SpecError(f"{where} {key} = {bound!r} must lie within ±2^53")
        assert low is not None and high is not None
        if not low < high:
            raise SpecError(f"{where} low = {low} must be below high = {high}")
        if kind == "log" and low <= 0:
            raise SpecError(f"{where} low = {low} must be > 0 for a log-scaled parameter")
        if kind == "int" and (low != int(low) or high != int(high)):
            raise SpecError(f"{where} bounds of an integer parameter must be integers")
        step, decimals = entry.pop("step", None), entry.pop("decimals", None)
        if step is not None:
            if kind not in ("float", "log"):
                raise SpecError(f"{where} step applies to float and log parameters only")
            if (
                isinstance(step, bool)
                or not isinstance(step, int | float)
                or not 0 < step <= high - low
            ):
                raise SpecError(f"{where} step = {step!r} must be a number in (0, high - low]")
            step = float(step)
        if decimals is not None:
            if kind not in ("float", "log") or step is not None:
                raise SpecError(
                    f"{where} decimals applies to float and log parameters without step"
                )
            if (
                isinstance(decimals, bool)
                or not isinstance(decimals, int)
                or not 0 <= decimals <= 12
            ):
                raise SpecError(f"{where} decimals = {decimals!r} must be an integer in 0..12")
        param = Parameter(
            name,
            kind,
            unit,
            float(low),
            float(high),
            description=description,
            step=step,
            decimals=decimals,
        )
    if entry:
        raise SpecError(f"{where}: unknown key(s) {sorted(entry)}")
    return param


def _infeasible(
    index: int, entry: Any, parameters: tuple[Parameter, ...], source: str
) -> Infeasible:
    where = f"{source}: [[infeasible]] #{index + 1}"
    entry = dict(_table(entry, source, f"[[infeasible]] #{index + 1}"))
    when = _table(entry.pop("when", None), source, f"[[infeasible]] #{index + 1} when")
    reason = str(entry.pop("reason", ""))
    if entry:
        raise SpecError(f"{where}: unknown key(s) {sorted(entry)}")
    by_name = {p.name: p for p in parameters}
    checked: dict[str, list[Any]] = {}
    for name, options in when.items():
        if name not in by_name:
            raise SpecError(f"{where}: {name!r} is not a parameter")
        listed = options if isinstance(options, list) else [options]
        checked[name] = [by_name[name].check(v, where) for v in listed]
    if not checked:
        raise SpecError(f"{where}: `when` names no parameter")
    return Infeasible(checked, reason)


def _objective(index: int, entry: Any, source: str) -> Objective:
    where = f"{source}: [[objectives]] #{index + 1}"
    entry = dict(_table(entry, source, f"[[objectives]] #{index + 1}"))
    metric = entry.pop("metric", None)
    if not isinstance(metric, str) or not METRIC_PATTERN.fullmatch(metric):
        raise SpecError(
            f"{where} metric = {metric!r} must name a column (letters, digits, '_', '.', '-'; "
            f"built in, from I–V files: {', '.join(DERIVED)})"
        )
    if metric in RESERVED:
        raise SpecError(f"{where} metric = {metric!r} is a reserved column name")
    sense = METRICS.get(metric)
    low = high = None
    goal = entry.pop("goal", sense)
    if goal not in GOALS:
        raise SpecError(
            f"{where} goal = {goal!r} must be 'max' or 'min' (or maximise/minimise)"
            + ("" if sense else f": {metric} is not built in, so say which")
        )
    goal = GOALS[goal]
    unit = entry.pop("unit", "")
    if not isinstance(unit, str):
        raise SpecError(f"{where} unit = {unit!r} must be a string")
    levels = entry.pop("levels", None)
    if levels is not None:
        if metric in DERIVED:
            raise SpecError(f"{where} {metric} is a number, not an ordinal outcome")
        if (
            not isinstance(levels, list)
            or len(levels) < 2
            or not all(isinstance(v, str) and v.strip() for v in levels)
            or len({v.strip().casefold() for v in levels}) != len(levels)
        ):
            raise SpecError(f"{where} levels must list at least two distinct names, worst first")
    for key in ("low", "high"):
        bound = entry.pop(key, None)
        if bound is None:
            continue
        if (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or not math.isfinite(bound)
        ):
            raise SpecError(f"{where} {key} = {bound!r} must be a finite number")
        if levels is not None:
            raise SpecError(f"{where} {key}: an ordinal outcome has levels, not bounds")
        if key == "low":
            low = float(bound)
        else:
            high = float(bound)
    if low is not None and high is not None and not low < high:
        raise SpecError(f"{where} low = {low:g} must be below high = {high:g}")
    weight = entry.pop("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not (math.isfinite(weight) and weight > 0)
    ):
        raise SpecError(f"{where} weight = {weight!r} must be a positive number")
    if entry:
        raise SpecError(f"{where}: unknown key(s) {sorted(entry)}")
    return Objective(
        metric, goal, float(weight), unit, low, high, tuple(v.strip() for v in levels or ())
    )
