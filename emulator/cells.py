"""Memristor physics of every cell on the board, vectorised over ``(arrays, rows, cols)``.

The cells are numpy arrays, never per-cell objects, so a 4 × 64 × 64 board updates in one
array operation. The model is parametrised by a
:class:`~xbar.training.devices.device_model.DeviceModel` (measured window, SET levels,
cycle-to-cycle σ, replicate spread, voltages, compliance) and by :class:`CellPhysics`
(rates and lifetimes the published sweeps do not determine).

State and response
    Each cell holds a conductance ``g``. A pulse of amplitude ``V`` across the memristor,
    held ``w`` seconds, moves it by a fraction ``f = 1 − exp(−w · rate(V))``:

    * SET (V > 0) moves g *up* toward ``level(V)``, the device's mean conductance at that
      SET amplitude (the rising-sweep levels of the DeviceModel, mapped onto the cell's own
      window), never down: partial SET pulses are how intermediate levels are written;
    * RESET (V < 0) moves g *down* toward the cell's ``g_min``;
    * ``rate(V) = exp((|V| − V_th) / v_slope) / tau`` with ``V_th`` = ``v_set`` or ``|v_reset|``
      and a slower RESET (``tau_reset > tau_set``): nonlinear in amplitude, asymmetric, and
      saturating at the window edges because the step is a fraction of the distance left.

    Below ``disturb_floor · level_voltages[0]`` nothing moves (reads never disturb). With
    ``NoiseConfig.half_select`` off, only the cells that see at least ``select_ratio`` of the
    largest cell voltage of the interval respond, i.e. V/2 half-selected cells are immune.

Noise and variation (each switchable in :class:`~.profiles.NoiseConfig`; the σ's and
defaults are those of the training's noise model, :mod:`xbar.training.noise_model`, whose
``open-loop`` scheme draws what one full pulse does here — a test compares the two)
    * cycle-to-cycle: every pulse multiplies the new g by ``exp(σ·sqrt(f)·ε)``, σ =
      ``sigma_c2c`` (the authors' log-normal weight noise, scaled by how far the pulse moved);
    * device-to-device: each cell's window and rate are scaled by ``exp(d2d_sigma · ε)``;
    * stuck-at faults: a seeded fraction of cells is stuck at g_min or g_max forever;
    * drift: the programmed excess over g_min relaxes as ``(1 + Δt/t0)^(−ν)``, evaluated at
      ``drift_quantum`` steps of virtual time so the array operator can be cached;
    * wear: the window shrinks as ``1 / (1 + pulses / endurance)``;
    * damage: a cell whose voltage exceeds ``breakdown_factor · max(v_set, |v_reset|)``, or
      (passive arrays, no access transistor to limit it) whose current exceeds
      ``compliance_margin · compliance_current``, breaks down to a permanent short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from xbar.training.noise_model import D2D_DEFAULT, DRIFT_T0

from .board_profile import NoiseConfig

STUCK_NONE, STUCK_LOW, STUCK_HIGH, SHORTED = 0, 1, 2, 3


class DeviceLike(Protocol):
    """The DeviceModel fields the cells use (`device_model.DeviceModel` has them all)."""

    name: str
    g_min: float
    g_max: float
    sigma_c2c: float
    level_voltages: list[float]
    level_conductances: list[float]
    d2d_sigma: float | None
    read_voltage: float
    v_set: float
    v_reset: float
    compliance_current: float


def resolve_device(device: DeviceLike | str | None) -> DeviceLike:
    """A DeviceModel from a preset name, or the median published device by default."""
    if device is None or isinstance(device, str):
        from xbar.training.devices.device_model import DeviceModel

        return DeviceModel.preset(device or "pvk-median")
    return device


@dataclass(frozen=True)
class CellPhysics:
    """Rates and lifetimes of the cell model (the sweeps fix the levels, not these)."""

    tau_set: float = 10e-6  # s, SET time constant at v_set
    tau_reset: float = 20e-6  # s, RESET is slower: asymmetric response
    v_slope: float = 0.5  # V per e-fold of switching rate
    disturb_floor: float = 0.25  # × first level voltage: below it nothing ever moves
    select_ratio: float = 0.75  # half_select off: only cells >= this × max |V| respond
    d2d_default: float = D2D_DEFAULT  # d2d σ when the device model has no replicates
    endurance: float = 1e5  # pulses that halve the window
    drift_t0: float = DRIFT_T0  # s, drift time scale
    drift_quantum: float = 0.1  # s, drift is re-evaluated at this virtual-time step
    breakdown_factor: float = 1.6  # × max(v_set, |v_reset|): hard breakdown voltage
    compliance_margin: float = 2.0  # × compliance_current: passive-array damage current
    short_factor: float = 100.0  # a broken-down cell conducts short_factor × g_max


class CellArray:
    """Conductance state of all cells; ``versions[a]`` changes whenever array a's ``g`` does."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        device: DeviceLike,
        noise: NoiseConfig,
        physics: CellPhysics,
        rng_variation: np.random.Generator,
        rng_pulse: np.random.Generator,
    ) -> None:
        self.shape = shape
        self.device = device
        self.noise = noise
        self.physics = physics
        self.rng_pulse = rng_pulse
        self.versions = np.zeros(shape[0], dtype=np.int64)  # per array
        levels_v = np.asarray(device.level_voltages, dtype=float)
        order = np.argsort(levels_v)
        self._level_v = levels_v[order]
        self._level_g = np.asarray(device.level_conductances, dtype=float)[order]
        span = max(device.g_max - device.g_min, 1e-30)
        # Level curve as a fraction of the device window, so it maps onto each cell's window.
        self._level_frac = np.clip((self._level_g - device.g_min) / span, 0.0, 1.0)
        # Device-to-device variation (seeded, drawn once in a fixed order).
        d2d = device.d2d_sigma if device.d2d_sigma is not None else physics.d2d_default
        d2d = d2d if noise.d2d else 0.0
        scale = np.exp(d2d * rng_variation.standard_normal(shape))
        self.g_min = device.g_min * scale
        self.g_max = device.g_max * scale
        self.rate_scale = np.exp(d2d * rng_variation.standard_normal(shape))
        self.drift_nu = noise.drift_nu * np.exp(d2d * rng_variation.standard_normal(shape))
        # Stuck-at faults.
        u = rng_variation.random(shape)
        self.stuck = np.full(shape, STUCK_NONE, dtype=np.int8)
        self.stuck[u < noise.stuck_rate / 2] = STUCK_LOW
        self.stuck[(u >= noise.stuck_rate / 2) & (u < noise.stuck_rate)] = STUCK_HIGH
        self.pulses = np.zeros(shape, dtype=np.int64)
        # Pristine cells start in their high-resistance state.
        self.g_prog = self.g_min.copy()
        self.t_prog = np.zeros(shape)
        self._apply_stuck()
        self.v_breakdown = physics.breakdown_factor * max(device.v_set, abs(device.v_reset))
        self.v_floor = physics.disturb_floor * float(self._level_v[0])

    # -- state ---------------------------------------------------------------------
    def _apply_stuck(self) -> None:
        self.g_prog = np.where(self.stuck == STUCK_LOW, self.g_min, self.g_prog)
        self.g_prog = np.where(self.stuck == STUCK_HIGH, self.g_max, self.g_prog)
        short = self.physics.short_factor * self.g_max
        self.g_prog = np.where(self.stuck == SHORTED, short, self.g_prog)

    def window_max(self) -> np.ndarray:
        """Each cell's current upper window edge (shrinks with wear)."""
        if not self.noise.wear:
            return self.g_max
        return self.g_min + (self.g_max - self.g_min) / (1.0 + self.pulses / self.physics.endurance)

    def drift_epoch(self, seconds: float) -> int:
        """Index of the drift step containing ``seconds`` (0 when drift is off)."""
        if self.noise.drift_nu <= 0:
            return 0
        return int(seconds // self.physics.drift_quantum)

    def conductance(self, array: int, epoch: int = 0) -> np.ndarray:
        """Conductances (rows, cols) of one array at a drift epoch (see drift_epoch)."""
        g = self.g_prog[array]
        if self.noise.drift_nu <= 0 or epoch <= 0:
            return g
        t = epoch * self.physics.drift_quantum
        age = np.maximum(t - self.t_prog[array], 0.0)
        relax = (1.0 + age / self.physics.drift_t0) ** (-self.drift_nu[array])
        g_lo = self.g_min[array]
        drifted = g_lo + (g - g_lo) * relax
        return np.where(self.stuck[array] == STUCK_NONE, drifted, g)

    def set_conductance(self, array: int, g: np.ndarray, seconds: float = 0.0) -> None:
        """Place a state directly (tests, fast programming); stuck cells stay stuck."""
        g = np.asarray(g, dtype=float)
        if g.shape != self.shape[1:]:
            raise ValueError(f"conductance shape {g.shape} is not the array's {self.shape[1:]}")
        self.g_prog[array] = np.clip(g, self.g_min[array], self.window_max()[array])
        self.t_prog[array] = seconds
        self._apply_stuck()
        self.versions[array] += 1

    # -- pulses --------------------------------------------------------------------
    def level_target(self, array: int, volts: np.ndarray) -> np.ndarray:
        """SET target conductance of each cell for amplitude ``volts`` (its own window)."""
        frac = np.interp(volts, self._level_v, self._level_frac)
        g_lo = self.g_min[array]
        return g_lo + frac * (self.window_max()[array] - g_lo)

    def apply_pulse(
        self,
        array: int,
        volts: np.ndarray,
        width: float,
        seconds: float,
        current_limit: float | None,
    ) -> int:
        """Apply ``volts`` (rows, cols) across the memristors for ``width`` seconds.

        ``current_limit`` is the access transistor's compliance (1T1R), which caps the SET
        target at ``I_c / V``. Returns the number of cells that moved.
        """
        mag = np.abs(volts)
        active = mag >= self.v_floor
        if not self.noise.half_select and active.any():
            active &= mag >= self.physics.select_ratio * mag.max()
        active &= self.stuck[array] == STUCK_NONE
        if width <= 0 or not active.any():
            return 0
        p = self.physics
        dev = self.device
        g = self.g_prog[array]
        g_lo = self.g_min[array]
        g_hi = self.window_max()[array]
        setting = active & (volts > 0)
        resetting = active & (volts < 0)
        v_th = np.where(volts > 0, dev.v_set, abs(dev.v_reset))
        tau = np.where(volts > 0, p.tau_set, p.tau_reset) / self.rate_scale[array]
        with np.errstate(over="ignore"):
            rate = np.exp((mag - v_th) / p.v_slope) / tau
        frac = -np.expm1(-width * rate)
        target = self.level_target(array, mag)
        if current_limit is not None:
            target = np.minimum(target, current_limit / np.maximum(mag, 1e-12))
        new = g.copy()
        up = setting & (target > g)
        new[up] = g[up] + (target[up] - g[up]) * frac[up]
        new[resetting] = g[resetting] - (g[resetting] - g_lo[resetting]) * frac[resetting]
        moved = up | resetting
        if self.noise.c2c and dev.sigma_c2c > 0 and moved.any():
            eps = self.rng_pulse.standard_normal(int(moved.sum()))
            new[moved] *= np.exp(dev.sigma_c2c * np.sqrt(frac[moved]) * eps)
        new[moved] = np.clip(new[moved], g_lo[moved], g_hi[moved])
        self.pulses[array][moved] += 1
        self.g_prog[array] = new
        self.t_prog[array][moved] = seconds
        self.versions[array] += 1
        return int(moved.sum())

    def check_damage(self, array: int, volts: np.ndarray, passive: bool) -> int:
        """Break down cells over voltage (or, passive arrays, over current); returns count."""
        if not self.noise.damage:
            return 0
        mag = np.abs(volts)
        over = mag > self.v_breakdown
        if passive:
            limit = self.physics.compliance_margin * self.device.compliance_current
            over |= mag * self.g_prog[array] > limit
        over &= self.stuck[array] != SHORTED
        n = int(over.sum())
        if n:
            self.stuck[array][over] = SHORTED
            self._apply_stuck()
            self.versions[array] += 1
        return n
