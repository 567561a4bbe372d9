"""One noise model from device to board: what programming a network onto a crossbar does
to its weights, as one typed, validated spec that training, evaluation, the plan and the
emulator all read.

A :class:`NoiseModel` composes three parts:

- :class:`DeviceNoise`: the device's cycle-to-cycle σ (log-normal, per programming pulse),
  the cell-to-cell window spread (d2d), read noise, drift and stuck-at rate, and its
  conductance window, from a :class:`~xbar.training.devices.device_model.DeviceModel`;
  the board-level rates default to the emulator's default board.
- :class:`Mapping`: how a layer's weights become conductance pairs. With full scale
  F = clip·max|w| and g_unit = window·(g_max − g_min)/127 per weight step,
  G± = g_min + max(±w, 0)·(127/F)·g_unit; weights beyond F saturate. In units of the
  full-scale conductance window·(g_max − g_min) a cell holds ``o + max(±u, 0)`` with
  u = w/F and the offset ``o = g_min / (window·(g_max − g_min))``: for pvk-median
  (g_max/g_min ≈ 4.2, window 0.8) o ≈ 0.39, i.e. a zero weight sits on ≈ 50 steps of
  conductance, every one of which carries the device's variation.
- :class:`Programming`: the scheme.

  * ``paper``: the authors' model, every weight w·exp(ε), ε ~ N(0, σ²) (σ the device's,
    or given: ``paper:1.3``); no mapping.
  * ``open-loop``: one SET pulse per cell to its level, no read-back. A programmed cell
    holds D·clip(a·exp(σ·ε), o, o + 1/window) (the emulator's per-pulse variation, the
    cell's own window D·[g_min, g_max] with D = exp(d2d·ε′)); a cell whose target is g_min
    gets no pulse and keeps its pristine D·g_min; a stuck cell sits at its window's edge.
  * ``verify[:tol]``: write-verify to within ``tol`` weight steps (default 0.5, as
    ``xbar program``). A cell holds its target plus a residual: the converged cells' error
    and the fraction the firmware gave up on, with their error, **measured** by
    ``benchmarks/bench_write_verify.py`` on the emulated board for that device and stored
    in ``devices/data/write_verify.json``. For a device or tolerance not measured there, a
    placeholder (uniform within ±tol: σ = tol/√3, no misses), labelled as such in
    ``Programming.source``.

Read noise (relative σ per read of each cell, a fresh draw per evaluation draw) and drift
(the excess over g_min relaxing as (1 + age/t0)^−ν) apply to both board schemes.

The spec gives noisy weights two ways, from the same formulas: :meth:`NoiseModel.perturb`
draws them (evaluation, Monte Carlo) and :meth:`NoiseModel.weight_moments` gives each
weight's mean and variance in closed form (training's moment-matched injection), so a test
can check that the two agree, and another that the emulator's cells match the draws.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from xbar.training.errors import XbarError

from .devices.device_model import DeviceModel, write_verify_measurements

STEPS = 127  # weight steps of the plan: int8 |w| = 127 ↔ the top of the mapped window
SCHEMES = ("paper", "open-loop", "verify")
DEFAULT_SCHEME = "open-loop"
DEFAULT_TOLERANCE = 0.5  # weight steps: `xbar program`'s default (half a step)
# Board-level rates: the emulator's default board (emulator/board_profile.py NoiseConfig and
# emulator/cells.py CellPhysics read or are tested against these).
D2D_DEFAULT = 0.1  # σ of ln(window) across cells when the device model has no replicates
READ_SIGMA = 0.01  # relative σ of a cell's read current, per read
DRIFT_NU = 0.01  # power-law relaxation exponent of programmed states
DRIFT_T0 = 1.0  # s, drift time scale
STUCK_RATE = 0.01  # fraction of cells stuck (half at g_min, half at g_max)
WINDOW = 0.8  # share of the conductance window the weights use (training/artifact.py WINDOW)


class NoiseModelError(XbarError, ValueError):
    """A noise model out of range; the message names the field and the value."""


def _num(where: str, name: str, value: object, lo: float, hi: float = math.inf) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and math.isfinite(value) and lo <= value <= hi:  # type: ignore[arg-type,operator]
        return float(value)  # type: ignore[arg-type]
    span = f"[{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
    raise NoiseModelError(f"{where}.{name} = {value!r}: must be a finite number {span}")


def _from(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise NoiseModelError(f"{where}: expected an object, got {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise NoiseModelError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return cls(**data)


# -- the parts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceNoise:
    """The device and board variation a programmed cell sees (σ's are of ln G)."""

    name: str = "device"
    sigma_c2c: float = 0.0  # per programming pulse (the device's cycle-to-cycle σ)
    d2d_sigma: float = D2D_DEFAULT  # cell-to-cell window spread
    g_min: float = 1e-6  # S
    g_max: float = 4e-6  # S
    levels: int = 128  # programmable levels the device has
    # (g − g_min)/(g_max − g_min) of each programmable level (empty: any conductance)
    level_fractions: tuple[float, ...] = ()
    read_sigma: float = READ_SIGMA
    drift_nu: float = DRIFT_NU
    stuck_rate: float = STUCK_RATE

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_fractions", tuple(self.level_fractions))

    def validate(self, where: str = "device") -> DeviceNoise:
        for i, f in enumerate(self.level_fractions):
            _num(where, f"level_fractions[{i}]", f, 0, 1)
        _num(where, "sigma_c2c", self.sigma_c2c, 0, 5)
        _num(where, "d2d_sigma", self.d2d_sigma, 0, 5)
        _num(where, "g_min", self.g_min, 1e-15, 1)
        _num(where, "g_max", self.g_max, self.g_min * (1 + 1e-9), 1)
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise NoiseModelError(f"{where}.levels = {self.levels!r}: must be an integer >= 1")
        _num(where, "read_sigma", self.read_sigma, 0, 1)
        _num(where, "drift_nu", self.drift_nu, 0, 1)
        _num(where, "stuck_rate", self.stuck_rate, 0, 1)
        return self

    @classmethod
    def from_device(cls, device: DeviceModel, **board: Any) -> DeviceNoise:
        """The device's measured figures; ``board`` overrides the board-level rates."""
        d2d = device.d2d_sigma if device.d2d_sigma is not None else D2D_DEFAULT
        span = device.g_max - device.g_min
        fractions = sorted({(g - device.g_min) / span for g in device.level_conductances})
        return cls(
            name=device.name,
            sigma_c2c=float(device.sigma_c2c),
            d2d_sigma=float(d2d),
            g_min=float(device.g_min),
            g_max=float(device.g_max),
            levels=len(device.level_conductances),
            level_fractions=tuple(min(1.0, max(0.0, f)) for f in fractions),
            **board,
        ).validate(f"device {device.name}")


@dataclass(frozen=True)
class Mapping:
    """Weights → conductance pairs: full scale F = clip·max|w| of the layer maps to the top
    of ``window``·(g_max − g_min) above g_min; |w| > F saturates. ``quantize``: weights
    rounded to the plan's 127 steps and, where the device lists its levels, snapped to the
    steps nearest them (as ``export_artifact(snap_levels=True)`` does); a straight-through
    gradient in training."""

    window: float = WINDOW
    clip: float = 1.0
    quantize: bool = True

    def validate(self, where: str = "mapping") -> Mapping:
        _num(where, "window", self.window, 0.05, 1)
        _num(where, "clip", self.clip, 0.05, 1)
        return self

    def steps(self, device: DeviceNoise) -> torch.Tensor | None:
        """Allowed weight magnitudes (0…127) for this window, as the plan's
        ``level_steps``: 0, 127 and the step nearest each level below the window's top."""
        if not self.quantize:
            return None
        if not device.level_fractions:
            return torch.arange(STEPS + 1, dtype=torch.float32)
        frac = torch.tensor(device.level_fractions, dtype=torch.float64) / self.window
        steps = torch.round(frac * STEPS)
        steps = steps[(steps >= 0) & (steps <= STEPS)]
        ends = torch.tensor([0.0, float(STEPS)], dtype=torch.float64)
        return torch.unique(torch.cat([ends, steps])).to(torch.float32)

    def offset(self, device: DeviceNoise) -> float:
        """o = g_min / (window·(g_max − g_min)): g_min in full-scale units."""
        return device.g_min / (self.window * (device.g_max - device.g_min))


@dataclass(frozen=True)
class Programming:
    """How cells are written: ``paper``, ``open-loop`` or ``verify`` (see the module doc)."""

    scheme: str = DEFAULT_SCHEME
    sigma: float | None = None  # paper: σ of w·exp(ε) (None: the device's)
    tolerance: float = DEFAULT_TOLERANCE  # verify: weight steps
    residual_sigma: float = 0.0  # verify: σ of a converged cell's error, weight steps
    residual_mean: float = 0.0  # verify: its mean, weight steps
    miss_rate: float = 0.0  # verify: cells the firmware gave up on
    miss_sigma: float = 0.0  # verify: their error's σ, weight steps
    mean_pulses: float | None = None  # verify: pulses per cell (measured), open-loop: 1
    source: str = ""  # where the verify figures come from (measured / placeholder)

    def validate(self, where: str = "programming") -> Programming:
        if self.scheme not in SCHEMES:
            raise NoiseModelError(
                f"{where}.scheme = {self.scheme!r}: must be one of {', '.join(SCHEMES)}"
            )
        if self.sigma is not None:
            _num(where, "sigma", self.sigma, 0, 5)
        _num(where, "tolerance", self.tolerance, 0, STEPS)
        _num(where, "residual_sigma", self.residual_sigma, 0, STEPS)
        _num(where, "residual_mean", self.residual_mean, -STEPS, STEPS)
        _num(where, "miss_rate", self.miss_rate, 0, 1)
        _num(where, "miss_sigma", self.miss_sigma, 0, 10 * STEPS)
        if self.mean_pulses is not None:
            _num(where, "mean_pulses", self.mean_pulses, 0)
        return self

    @property
    def name(self) -> str:
        """The scheme as ``--program`` spells it."""
        if self.scheme == "verify":
            return f"verify:{self.tolerance:g}"
        if self.scheme == "paper" and self.sigma is not None:
            return f"paper:{self.sigma:g}"
        return self.scheme


# -- measured write-verify -----------------------------------------------------------------
def verify_programming(device: str, tolerance: float = DEFAULT_TOLERANCE) -> Programming:
    """The ``verify`` scheme for ``device`` at ``tolerance`` steps: the emulator's measured
    residual if stored, else the labelled placeholder (uniform within ±tol)."""
    entry = write_verify_measurements(device)
    row = entry.get("tolerances", {}).get(f"{tolerance:g}")
    if row is not None:
        return Programming(
            "verify",
            tolerance=tolerance,
            residual_sigma=row["residual_sigma_steps"],
            residual_mean=row["residual_mean_steps"],
            miss_rate=row["miss_rate"],
            miss_sigma=row["miss_sigma_steps"],
            mean_pulses=row["mean_pulses"],
            source=f"measured: {entry['command']} ({row['cells']} cells, {entry['measured']})",
        ).validate()
    return Programming(
        "verify",
        tolerance=tolerance,
        residual_sigma=tolerance / math.sqrt(3),
        source=f"placeholder: not measured for {device} at tol {tolerance:g}; uniform "
        "within ±tol assumed (σ = tol/√3, no misses)",
    ).validate()


def programming(device: str, scheme: str) -> Programming:
    """The named scheme (``paper[:σ]``, ``open-loop``, ``verify[:tol]``) for ``device``."""
    name, arg = parse_scheme(scheme)
    if name == "verify":
        return verify_programming(device, DEFAULT_TOLERANCE if arg is None else arg)
    if name == "paper":
        return Programming("paper", sigma=arg).validate()
    return Programming("open-loop", mean_pulses=1.0)


def parse_scheme(text: str) -> tuple[str, float | None]:
    """``paper[:σ]``, ``open-loop`` or ``verify[:tol]`` → (scheme, parameter)."""
    name, _, arg = str(text).partition(":")
    if name not in SCHEMES or (name == "open-loop" and arg):
        raise NoiseModelError(
            f"program scheme {text!r}: use paper[:SIGMA], open-loop or verify[:TOL_STEPS]"
        )
    if not arg:
        return name, None
    try:
        value = float(arg)
    except ValueError:
        raise NoiseModelError(f"program scheme {text!r}: {arg!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise NoiseModelError(f"program scheme {text!r}: {arg!r} must be a number >= 0")
    return name, value


# -- the model ------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseModel:
    """Device + mapping + programming scheme (+ the age at which the board is read)."""

    device: DeviceNoise = field(default_factory=DeviceNoise)
    mapping: Mapping = field(default_factory=Mapping)
    programming: Programming = field(default_factory=Programming)
    age_s: float = 0.0  # s since programming (drift)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def for_device(
        cls,
        device: DeviceModel,
        scheme: str = DEFAULT_SCHEME,
        mapping: Mapping | None = None,
        **board: Any,
    ) -> NoiseModel:
        """The named scheme (``paper[:σ]``, ``open-loop``, ``verify[:tol]``) for ``device``."""
        dev = DeviceNoise.from_device(device, **board)
        return cls(dev, mapping or Mapping(), programming(device.name, scheme)).validate()

    @classmethod
    def paper(cls, sigma: float) -> NoiseModel:
        """The authors' w·exp(ε) at σ (device figures irrelevant)."""
        return cls(programming=Programming("paper", sigma=sigma)).validate()

    def with_scheme(self, scheme: str) -> NoiseModel:
        """The same device and mapping under another scheme."""
        return replace(self, programming=programming(self.device.name, scheme)).validate()

    def with_mapping(self, mapping: Mapping) -> NoiseModel:
        return replace(self, mapping=mapping).validate()

    # -- validation and JSON ----------------------------------------------------------
    def validate(self, where: str = "noise model") -> NoiseModel:
        if not isinstance(self.device, DeviceNoise):
            raise NoiseModelError(f"{where}.device: expected a DeviceNoise")
        if not isinstance(self.mapping, Mapping):
            raise NoiseModelError(f"{where}.mapping: expected a Mapping")
        if not isinstance(self.programming, Programming):
            raise NoiseModelError(f"{where}.programming: expected a Programming")
        self.device.validate(f"{where}.device")
        self.mapping.validate(f"{where}.mapping")
        self.programming.validate(f"{where}.programming")
        _num(where, "age_s", self.age_s, 0)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, where: str = "noise model") -> NoiseModel:
        if not isinstance(data, dict):
            raise NoiseModelError(f"{where}: expected an object, got {data!r}")
        unknown = sorted(set(data) - {"device", "mapping", "programming", "age_s"})
        if unknown:
            raise NoiseModelError(f"{where}: unknown field(s) {', '.join(unknown)}")
        try:
            model = cls(
                _from(DeviceNoise, data.get("device", {}), f"{where}.device"),
                _from(Mapping, data.get("mapping", {}), f"{where}.mapping"),
                _from(Programming, data.get("programming", {}), f"{where}.programming"),
                data.get("age_s", 0.0),
            )
        except TypeError as exc:
            raise NoiseModelError(f"{where}: {exc}") from None
        return model.validate(where)

    @classmethod
    def from_json(cls, text: str) -> NoiseModel:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NoiseModelError(f"noise model: not JSON ({exc})") from None
        return cls.from_dict(data)

    # -- description ------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return self.programming.scheme

    @property
    def sigma(self) -> float:
        """The σ the scheme is labelled with: paper's σ, else the device's c2c σ."""
        p = self.programming
        if p.scheme == "paper" and p.sigma is not None:
            return p.sigma
        return self.device.sigma_c2c

    @property
    def label(self) -> str:
        p = self.programming
        if p.scheme == "paper":
            return f"paper w·exp(ε), σ {self.sigma:.3g}"
        base = f"{p.name} on {self.device.name} (σ {self.device.sigma_c2c:.3g})"
        if p.scheme == "verify":
            base += f", residual σ {p.residual_sigma:.2f} steps" + (
                ", placeholder" if p.source.startswith("placeholder") else ""
            )
        return base

    # -- the physics, in torch ----------------------------------------------------------
    def _paper(self) -> Any:
        from .noise import WeightNoiseConfig

        return WeightNoiseConfig("lognormal", self.sigma)

    def _scale(self, w: torch.Tensor) -> torch.Tensor:
        """Full scale F = clip·max|w| (no gradient through it, as the quantiser's)."""
        return (self.mapping.clip * w.detach().abs().max()).clamp_min(1e-30)

    def _targets(self, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """u = w/F in [−1, 1], on the allowed steps when the mapping quantises (the
        rounding passes the gradient straight through)."""
        u = (w / scale).clamp(-1.0, 1.0)
        steps = self.mapping.steps(self.device)
        if steps is None:
            return u
        mag = torch.round(u.detach().abs() * STEPS)  # the int8 weight, then its level
        steps = steps.to(u.dtype)
        hi = torch.searchsorted(steps, mag.contiguous()).clamp(0, len(steps) - 1)
        lo = (hi - 1).clamp_min(0)
        s_lo, s_hi = steps[lo], steps[hi]
        near = torch.where(mag - s_lo <= s_hi - mag, s_lo, s_hi)
        return u + (torch.sign(u.detach()) * near / STEPS - u).detach()

    def _drift(self) -> float:
        if self.age_s <= 0 or self.device.drift_nu <= 0:
            return 1.0
        return float((1.0 + self.age_s / DRIFT_T0) ** (-self.device.drift_nu))

    def perturb(self, w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of the programmed weights (independent per entry, also along a leading
        batch axis of draws). Differentiable in ``w`` where the physics is."""
        p = self.programming
        if p.scheme == "paper":
            return self._paper().perturb(w, generator)
        scale = self._scale(w)
        u = self._targets(w, scale)
        o = self.mapping.offset(self.device)
        top = o + 1.0 / self.mapping.window
        pair = [self._cell(o + torch.relu(s * u), o, top, generator) for s in (1.0, -1.0)]
        return (pair[0] - pair[1]) * scale

    def _randn(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype)

    def _cell(
        self, a: torch.Tensor, o: float, top: float, gen: torch.Generator | None
    ) -> torch.Tensor:
        """One draw of each cell's conductance (full-scale units) for targets ``a``."""
        d, p = self.device, self.programming
        step = 1.0 / (STEPS * self.mapping.window)  # one weight step, full-scale units
        if p.scheme == "open-loop":
            dd = torch.exp(d.d2d_sigma * self._randn(a, gen))
            pulsed = torch.clamp(a * torch.exp(d.sigma_c2c * self._randn(a, gen)), o, top)
            x = torch.where(a > o, pulsed, torch.full_like(a, o))
            x = o + (x - o) * self._drift()  # stuck cells do not drift
            u = torch.rand(a.shape, generator=gen, dtype=a.dtype)
            half = d.stuck_rate / 2
            g = dd * torch.where(u < half, o, torch.where(u < 2 * half, top, x))
        else:
            miss = torch.rand(a.shape, generator=gen, dtype=a.dtype) < p.miss_rate
            sd = torch.where(miss, p.miss_sigma, p.residual_sigma)
            mean = torch.where(miss, 0.0, p.residual_mean)
            g = a + (mean + sd * self._randn(a, gen)) * step
            g = o + (g - o) * self._drift()
        if d.read_sigma > 0:
            g = g * (1.0 + d.read_sigma * self._randn(a, gen))
        return g

    def weight_moments(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, Var) of each programmed weight, in closed form from the same physics as
        :meth:`perturb` (differentiable in ``w``): training's moment-matched injection."""
        p = self.programming
        if p.scheme == "paper":
            return self._paper().weight_moments(w)
        scale = self._scale(w)
        u = self._targets(w, scale)
        o = self.mapping.offset(self.device)
        top = o + 1.0 / self.mapping.window
        m1p, m2p = self._cell_moments(o + torch.relu(u), o, top)
        m1n, m2n = self._cell_moments(o + torch.relu(-u), o, top)
        mean = (m1p - m1n) * scale
        var = ((m2p - m1p**2) + (m2n - m1n**2)).clamp_min(0.0) * scale**2
        return mean, var

    def _cell_moments(
        self, a: torch.Tensor, o: float, top: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[g], E[g²]) of one cell for targets ``a`` (full-scale units)."""
        d, p = self.device, self.programming
        step = 1.0 / (STEPS * self.mapping.window)
        k = self._drift()
        if p.scheme == "open-loop":
            e1_d, e2_d = math.exp(d.d2d_sigma**2 / 2), math.exp(2 * d.d2d_sigma**2)
            x1, x2 = _clipped_lognormal(a, d.sigma_c2c, o, top)
            pulsed = a > o
            x1 = torch.where(pulsed, x1, torch.full_like(a, o))
            x2 = torch.where(pulsed, x2, torch.full_like(a, o * o))
            # Drift: the excess over the cell's g_min relaxes by k (stuck cells do not).
            y1 = o * (1 - k) + k * x1
            y2 = (o * (1 - k)) ** 2 + 2 * o * (1 - k) * k * x1 + k * k * x2
            h = d.stuck_rate / 2
            m1 = e1_d * ((1 - 2 * h) * y1 + h * o + h * top)
            m2 = e2_d * ((1 - 2 * h) * y2 + h * o * o + h * top * top)
        else:
            q = p.miss_rate
            r_mean = (1 - q) * p.residual_mean * step
            r_m2 = ((1 - q) * (p.residual_sigma**2 + p.residual_mean**2) + q * p.miss_sigma**2) * (
                step**2
            )
            m1 = o + (a - o + r_mean) * k
            m2 = (o + (a - o) * k) ** 2 + 2 * (o + (a - o) * k) * r_mean * k + r_m2 * k * k
        r2 = 1.0 + d.read_sigma**2
        return m1, m2 * r2


def scaled(model: NoiseModel, factor: float) -> NoiseModel:
    """``model`` with every spread (c2c, d2d, read, residuals, paper σ) times ``factor``:
    a training noise stronger or weaker than the target's, same physics."""
    d, p = model.device, model.programming
    dev = replace(
        d,
        sigma_c2c=d.sigma_c2c * factor,
        d2d_sigma=d.d2d_sigma * factor,
        read_sigma=min(1.0, d.read_sigma * factor),
    )
    prog = replace(
        p,
        sigma=None if p.sigma is None else p.sigma * factor,
        residual_sigma=p.residual_sigma * factor,
        miss_sigma=p.miss_sigma * factor,
    )
    if p.scheme == "paper" and p.sigma is None:
        prog = replace(prog, sigma=d.sigma_c2c * factor)
    return replace(model, device=dev, programming=prog).validate("scaled noise model")


def _clipped_lognormal(
    a: torch.Tensor, s: float, lo: float, hi: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[X], E[X²]) of X = clip(a·exp(s·Z), lo, hi), Z ~ N(0, 1)."""
    if s == 0:
        x = a.clamp(lo, hi)
        return x, x * x
    a = a.clamp_min(1e-30)
    alpha = (math.log(lo) - torch.log(a)) / s
    beta = (math.log(hi) - torch.log(a)) / s
    ndtr = torch.special.ndtr
    below, above = ndtr(alpha), 1.0 - ndtr(beta)
    m1 = a * math.exp(s * s / 2) * (ndtr(beta - s) - ndtr(alpha - s))
    m2 = a * a * math.exp(2 * s * s) * (ndtr(beta - 2 * s) - ndtr(alpha - 2 * s))
    return lo * below + hi * above + m1, lo * lo * below + hi * hi * above + m2
