"""The emulated board: pins and SPI buses in, device physics, cycles and joules out.

This is the contract the emulator runtime (emulated ``machine``/``time``, firmware
loader, link) builds on. The firmware runs in one thread and calls these methods in
program order; a board is not shared between threads, so there is no locking::

    board = BoardModel("xbar-10x10", seed=0, device="pvk-median", noise=NoiseConfig())
    board.clock             # Clock: .cycles (int, at profile.mcu_hz = 125 MHz), .seconds,
                            #   .advance(cycles), .advance_seconds(s)
    board.ledger            # EnergyLedger: .total(), .breakdown() -> {component: J},
                            #   .mark() / .since(mark) for per-command deltas
    board.pin_write(pin, value)   # GPIO output; CS rising edges latch parts, LDAC falling
                                  # edge loads the DACs, GAIN0/1 pick the TIA gain,
                                  # ADC_RST low powers the ADCs down
    board.pin_read(pin) -> int
    board.spi_transfer(bus, tx, baudrate) -> bytes   # full duplex to the selected parts;
                                  # the clock advances ceil(8·len(tx)·mcu_hz / baudrate)
    board.charge(op, count=1)     # firmware computation, cycles from board.cycle_costs
                                  # (CYCLE_COSTS by default; load_cycle_costs(path) for JSON)
    board.sleep_us(us)            # MCU idle wait in virtual time (idle power)
    board.link(nbytes)            # host link traffic (energy per byte)
    board.diagnostics             # dict[str, int]: malformed frames, refused shorts, damage…

``pin_write`` and ``spi_transfer`` never raise for anything firmware could send (bad
pins, values, buses, baud rates, truncated or garbage frames): the parts ignore or latch
what the datasheets say, and the event is counted in ``diagnostics``.

Randomness comes from ``seed`` in two forms. Device variation and faults (drawn once, at
construction) and programming pulses (c2c noise, in pulse order) use numpy generators
spawned from ``SeedSequence(seed)``. Read noise is *counter-based*: the noise of ADC chip
k's n-th sample is a pure function :func:`sample_normals` of (seed, k, n), so any path can
regenerate the noise of any conversion without replaying the others. Every per-conversion
Gaussian source (cell read noise, TIA noise, ADC transition noise referred to the TIA
input) is independent and summed, so one normal of their combined σ per conversion is the
same distribution. That is what lets the batch path (``emulator.batch``) reproduce the
byte-level path's numbers for N inferences at once, touching only the conversions it needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from .board_profile import BoardProfile, NoiseConfig, get_profile
from .cells import CellArray, CellPhysics, DeviceLike, resolve_device
from .clock import CYCLE_COSTS, Clock
from .crossbar import DRIVEN, FLOAT, TIA, ArrayNetwork, NetworkState, Operator
from .energy import EnergyLedger, PowerFigures
from .events import EventRecord
from .parts import (
    ADC_MAX_SCLK,
    DAC_MAX_SCLK,
    DAC_SETTLE_S,
    SW_DAC,
    SW_GND,
    SW_MAX_SCLK,
    SW_TIA,
    TIA_RF,
    TIA_SAT_V,
    AD5676Chain,
    ADG714Chain,
    ADS8688Chain,
    adc_codes,
    line_volts,
)

# First-order DAC settling: t_settle (±2 LSB of a half-scale step) is ln(2^14) time
# constants; after t_settle the output is taken as exactly final.
DAC_TAU_S = DAC_SETTLE_S / math.log(2**14)

DIAGNOSTIC_KEYS = (
    "spi_bytes",
    "spi_bad_bus",
    "spi_bad_baudrate",
    "spi_overspeed",
    "spi_unselected_bytes",
    "spi_bad_data",
    "miso_contention",
    "pin_bad_args",
    "dac_words",
    "dac_partial_frames",
    "dac_bad_address",
    "dac_bad_command",
    "dac_reset_bad_key",
    "dac_readback_unwired",
    "switch_frames",
    "switch_bad_frames",
    "switch_short_frames",
    "shorted_lines_refused",
    "row_tia_switch",
    "dac_tia_contention",
    "adc_conversions",
    "adc_truncated_frames",
    "adc_short_frames",
    "adc_bad_command",
    "adc_bad_range",
    "adc_rate_violations",
    "adc_frames_powered_down",
    "adc_unsettled_conversions",
    "adc_wake_violations",
    "tia_saturations",
    "cells_programmed",
    "damage_events",
    "operator_solves",
    "charge_cycles",
    "line_wait_cycles",  # the MCU waiting for host bytes still on the wire (paced link)
    # Ratings (PowerFigures): a part driven outside its rated range or state. The total
    # is rating_errors; per part: a line beyond its switches' signal range or its
    # driver's output swing, a line switched to a shut-down driver or a column to a
    # shut-down TIA, an SPI clock above a part's maximum, TIA rails beyond the ADC inputs.
    "rating_errors",
    "rating_switch",
    "rating_driver",
    "rating_driver_off",
    "rating_tia_off",
    "rating_spi",
    "rating_adc_input",
)

RATING_KEYS = tuple(k for k in DIAGNOSTIC_KEYS if k.startswith("rating_") and k != "rating_errors")


class Diagnostics(dict[str, int]):
    """Event counters; a key never seen reads as 0."""

    def __missing__(self, key: str) -> int:
        return 0


_T = TypeVar("_T")

_M1, _M2, _GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15


def _mix(x: np.ndarray, owned: bool = False, tmp: np.ndarray | None = None) -> np.ndarray:
    """SplitMix64 finaliser (uint64 in, uint64 out; wrapping arithmetic). ``owned``: ``x``
    is a temporary of the caller's and is worked on in place (integer arithmetic: the same
    values either way); ``tmp``: a uint64 scratch array shaped like ``x``."""
    if owned:
        x += np.uint64(_GOLDEN)
    else:
        x = x + np.uint64(_GOLDEN)
    t = np.right_shift(x, np.uint64(30), out=tmp)
    x ^= t
    x *= np.uint64(_M1)
    np.right_shift(x, np.uint64(27), out=t)
    x ^= t
    x *= np.uint64(_M2)
    np.right_shift(x, np.uint64(31), out=t)
    x ^= t
    return x


def chip_keys(key: int, chip: np.ndarray | int) -> np.ndarray:
    """The per-chip stream keys of :func:`sample_normals` (uint64, one per ``chip``)."""
    return _mix(np.uint64(key) ^ np.atleast_1d(np.asarray(chip, dtype=np.uint64)), True)


def hashed_normals(
    h: np.ndarray,
    out: np.ndarray | None = None,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Float32 standard normals of hash inputs ``h = chip_key ^ count`` (uint64, a
    temporary of the caller's: it is worked on in place). ``out`` (float32) and ``work``
    (uint64 and float32 scratch) shaped like ``h`` spare the batch path fresh arrays per
    block; ``work``'s two arrays may share memory (the float32 one is used once the
    uint64 one is done with)."""
    tmp, u2 = work if work is not None else (np.empty_like(h), np.empty(h.shape, np.float32))
    u1 = np.empty(h.shape, np.float32) if out is None else out
    h = _mix(h, True, tmp)
    # Two 24-bit fields.
    _float32_of(np.right_shift(h, np.uint64(40), out=tmp), u1)
    u1 += np.float32(0.5)
    u1 *= np.float32(2.0**-24)
    h &= np.uint64(0xFFFFFF)
    _float32_of(h, u2)
    u2 *= np.float32(2.0 * np.pi * 2.0**-24)
    np.log(u1, out=u1)
    u1 *= np.float32(-2.0)
    np.sqrt(u1, out=u1)
    np.cos(u2, out=u2)
    u1 *= u2
    return u1


def _float32_of(x: np.ndarray, out: np.ndarray) -> None:
    """``out`` (float32) = ``x`` (uint64 below 2**24, so exact), converted by way of int32
    in ``out``'s own memory: two casts that numpy runs faster than one from uint64 or
    int64."""
    as_int = out.view(np.int32)
    np.copyto(as_int, x.view(np.int64), casting="unsafe")
    np.copyto(out, as_int, casting="unsafe")


# The largest |hashed_normals|: sqrt(−2 ln 2⁻²⁵) = 5.887 (the smallest uniform is 2⁻²⁵),
# with room for float32 rounding.
NORMAL_MAX = 5.9


def sample_normals(key: int, chip: np.ndarray | int, count: np.ndarray | int) -> np.ndarray:
    """Standard normals for ADC samples (chip, count): counter-based, Box–Muller.

    One SplitMix64 hash per sample gives two 24-bit uniforms, transformed in float32 (the
    tails reach 5.9 σ; ample for read noise, and 3–4× faster than float64). A pure
    elementwise function (``chip`` and ``count`` broadcast), so the byte-level path (one
    sample at a time) and the batch path (arrays of samples) get bit-identical values.
    """
    h = chip_keys(key, chip) ^ np.atleast_1d(np.asarray(count, dtype=np.uint64))
    return hashed_normals(h).astype(np.float64)


def settle_alpha(dt_s: float | np.ndarray) -> np.ndarray:
    """Fraction of a DAC step still missing ``dt_s`` after the update (0 once settled)."""
    dt = np.asarray(dt_s, dtype=float)
    return np.where(dt >= DAC_SETTLE_S, 0.0, np.exp(-np.maximum(dt, 0.0) / DAC_TAU_S))


def convert(
    current: np.ndarray,
    sumsq: np.ndarray,
    eps: np.ndarray | None,
    rf: float,
    low: float | np.ndarray,
    high: float | np.ndarray,
    noise: NoiseConfig,
    out: np.ndarray | None = None,
    owned: bool = False,
    inside: bool = False,
) -> tuple[np.ndarray, int]:
    """TIA and ADC of one or many conversions: (codes, number of TIA saturations).

    ``current`` is the noiseless current into the TIA, ``sumsq`` Σ (per-line current
    contribution)² for the cell read noise, ``eps`` the conversions' standard normals (None
    with read noise off). The byte-level path and the batch path both call this, so their
    quantisation is the same code. For the batch path's blocks: ``out`` (int64) receives
    the codes, and ``owned`` says ``current`` and ``sumsq`` are float64 temporaries of the
    caller's, both of the conversions' shape, to be worked on in place (the same IEEE
    operations in the same order, without fresh arrays: the batch path converts millions
    of samples per call); ``inside`` says the caller has shown that every TIA voltage
    lies within the TIA's rails and the ADC's range (nothing to count or clamp).
    """
    current = np.asarray(current, dtype=float)
    if eps is not None:
        lsb_v = (high - low) / 65536.0
        adc_var = (noise.adc_noise_lsb * lsb_v / rf) ** 2
        if owned:
            var = np.multiply(sumsq, noise.read_sigma**2, out=sumsq)
            var += noise.tia_noise**2
            var += adc_var
            volts = np.sqrt(var, out=var)
        else:
            volts = np.sqrt(noise.read_sigma**2 * np.asarray(sumsq) + noise.tia_noise**2 + adc_var)
        # current + σ·ε, worked on in place from here: the same IEEE operations in the same
        # order as written out, with fewer temporaries.
        volts = np.asarray(np.multiply(volts, eps, out=volts if owned else None, dtype=float))
        volts += current
        volts *= -rf
    else:
        volts = current if owned else np.array(current, dtype=float)
        volts *= -rf  # tia_volts before clipping
    saturated = 0
    clamp = not inside  # the ADC's clamp to 0…65535 (a no-op unless volts pass its range)
    if volts.size and not inside:
        top, bottom = float(volts.max()), float(volts.min())
        if top > TIA_SAT_V or bottom < -TIA_SAT_V:
            saturated = int(
                np.count_nonzero(volts > TIA_SAT_V) + np.count_nonzero(volts < -TIA_SAT_V)
            )
            np.clip(volts, -TIA_SAT_V, TIA_SAT_V, out=volts)
            top, bottom = min(top, TIA_SAT_V), max(bottom, -TIA_SAT_V)
        # Each step of the code arithmetic is monotonic, so the extremes bound every code.
        lsb = (high - low) / 65536.0
        fits = (lsb > 0) & ((top - low) / lsb + 0.5 < 65536.0) & ((bottom - low) / lsb + 0.5 >= 0)
        clamp = not bool(np.all(fits))
    return adc_codes(volts, low, high, in_place=True, out=out, clamp=clamp), saturated


class BoardModel:
    """One emulated board (see the module docstring for the contract)."""

    def __init__(
        self,
        profile: str | BoardProfile = "xbar-10x10",
        seed: int = 0,
        device: DeviceLike | str | None = None,
        noise: NoiseConfig | None = None,
        *,
        physics: CellPhysics | None = None,
        power: PowerFigures | None = None,
        cycle_costs: dict[str, int] | None = None,
        record_events: bool | int = False,
    ) -> None:
        self.profile = p = get_profile(profile)
        self.seed = int(seed)
        self.noise = noise if noise is not None else NoiseConfig()
        self.device = resolve_device(device)
        self.physics = physics or CellPhysics()
        self.power = power or PowerFigures()
        self.cycle_costs: dict[str, int] = dict(cycle_costs or CYCLE_COSTS)
        self.clock = Clock(p.mcu_hz)
        self.ledger = EnergyLedger(self.clock)
        self.diagnostics: dict[str, int] = Diagnostics.fromkeys(DIAGNOSTIC_KEYS, 0)
        self.trace: list[tuple[Any, ...]] | None = None  # event log for the batch probe
        # What the lines and cells saw, per array event (emulator.events); True: every
        # event, an int: a ring buffer of that many. Off (None) by default.
        self.events: EventRecord | None = None
        if record_events is not False:
            self.events = EventRecord(None if record_events is True else int(record_events))
        self._event_cause = "set"
        self.batch_cache: dict[Any, Any] = {}  # batch-path plans (emulator.mvm_schedule)
        self.sample_values = True  # False: conversions return 0 (batch probes time only)
        streams = np.random.SeedSequence(self.seed).spawn(3)
        rng_variation, rng_pulse = (np.random.default_rng(s) for s in streams[:2])
        self.noise_key = int(streams[2].generate_state(1, np.uint64)[0])
        self.adc_samples = np.zeros(p.adc_chips, dtype=np.int64)  # per-chip sample counters
        self.cells = CellArray(
            (p.arrays, p.rows, p.cols),
            self.device,
            self.noise,
            self.physics,
            rng_variation,
            rng_pulse,
        )
        ideal = not self.noise.ir_drop
        self.network = ArrayNetwork(
            p.rows,
            p.cols,
            passive=p.cell == "0T1R",
            r_wire=0.0 if ideal else p.r_wire,
            r_switch=0.0 if ideal else p.r_switch,
            r_access=0.0 if ideal else p.r_access,
            g_leak=p.g_leak,
            cache_size=max(32, 4 * p.arrays),
            state_cache_size=max(8, p.arrays + 4),
        )
        # Parts, one chain per chip select.
        diag = self.diagnostics
        self.dacs = [
            AD5676Chain(min(p.dac_chain, p.dac_chips - s * p.dac_chain), diag)
            for s in range(p.dac_selects)
        ]
        self.switches = ADG714Chain(p.sw_chips, diag)
        self.adcs = [
            ADS8688Chain(
                min(p.adc_chain, p.adc_chips - s * p.adc_chain),
                s * p.adc_chain,
                self._sample,
                diag,
            )
            for s in range(p.adc_selects)
        ]
        self._cs: dict[int, tuple[str, int]] = {}
        for s in range(p.dac_selects):
            self._cs[p.pin_cs_dac[s]] = ("dac", s)
        self._cs[p.pin_cs_sw] = ("sw", 0)
        for s in range(p.adc_selects):
            self._cs[p.pin_cs_adc[s]] = ("adc", s)
        self._pins: dict[int, int] = {pin: 1 for pin in self._cs}
        self._pins[p.pin_ldac] = 1
        self._pins[p.pin_adc_rst] = 1
        # Lines: DAC output voltage, previous value and update time (settling), switches.
        n = p.lines
        self._dac_v = np.full(n, float(line_volts(0)))
        self._dac_prev_v = self._dac_v.copy()
        self._dac_t = np.full(n, -(10**12), dtype=np.int64)
        self._sw = np.zeros(3 * n, dtype=bool)
        self._modes = np.full((p.arrays, p.lines_per_array), FLOAT, dtype=np.int8)
        self._via_dac = np.zeros(n, dtype=bool)
        self._contention = np.zeros(n, dtype=bool)
        # Per-array interval state: memristor voltages, start cycle, programming flag.
        self._vcell = np.zeros((p.arrays, p.rows, p.cols))
        self._t_start = np.zeros(p.arrays, dtype=np.int64)
        self._pulsing = np.zeros(p.arrays, dtype=bool)
        self._p_cells = np.zeros(p.arrays)
        self._p_wire = np.zeros(p.arrays)
        # Power gates (rev B): SHDN pulled low, so the drivers and TIAs are on from power-up
        # until the firmware shuts them down. Rev A has no gates (always on).
        pw = self.power
        self._shdn = {pin: g for g, pin in enumerate(p.pin_shdn[: p.gates])}
        self._gate_on = np.ones(p.gates, dtype=bool)
        gate_of_array = np.array([p.gate_of(a) for a in range(p.arrays)], dtype=np.int64)
        self._line_gate = np.repeat(gate_of_array, p.lines_per_array)
        self._col_gate = np.repeat(gate_of_array, p.cols)
        self._is_col = (np.arange(n) % p.lines_per_array) >= p.rows
        for chain in self.adcs:
            chain.wake_s = pw.adc_wake_s
        # Line voltages the DACs can set: checked against the drivers and switches only
        # if some code could leave their rated range (never on rev B).
        reach = (float(line_volts(0)), float(line_volts(65535)))
        self._check_lines = not all(
            lo <= reach[0] and reach[1] <= hi for lo, hi in (pw.driver_out_v, pw.sw_signal_v)
        )
        if max(abs(v) for v in pw.adc_in_v) < TIA_SAT_V:  # TIA rails beyond the ADC's inputs
            self._rating("rating_adc_input")
        # Static powers (W), charged while each part is on.
        self.ledger.set_power("mcu", pw.mcu_active_w)
        self._publish_part_power()
        self._check_line_ratings(np.arange(n))  # power-on: every DAC at zero scale
        self.ledger.set_power("array", 0.0)
        self.ledger.set_power("array_wiring", 0.0)
        self.ledger.add("link", 0.0)

    # -- GPIO -------------------------------------------------------------------------
    def pin_read(self, pin: int) -> int:
        try:
            return self._pins.get(int(pin), 0)
        except (TypeError, ValueError):
            self.diagnostics["pin_bad_args"] += 1
            return 0

    def pin_write(self, pin: int, value: int) -> None:
        try:
            pin, level = int(pin), 1 if value else 0
        except (TypeError, ValueError):
            self.diagnostics["pin_bad_args"] += 1
            return
        old = self._pins.get(pin, 0)
        self._pins[pin] = level
        if old == level:
            return
        p = self.profile
        if pin in self._cs:
            kind, s = self._cs[pin]
            if level == 0:
                self._select(kind, s)
            else:
                self._deselect(kind, s)
        elif pin == p.pin_ldac and level == 0:
            lines = []
            for s, chain in enumerate(self.dacs):
                chips, channels = np.nonzero(chain.ldac_fall())
                lines.append(8 * (s * p.dac_chain + chips) + channels)
            self._dac_loaded(np.concatenate(lines))
        elif pin == p.pin_adc_rst:
            for adc in self.adcs:
                adc.power(bool(level))
            self._publish_part_power()
        elif pin in self._shdn:
            self._set_gate(self._shdn[pin], not level)

    # -- power states and ratings -------------------------------------------------------
    def _rating(self, key: str, count: int = 1) -> None:
        """A part driven outside its rating (``key`` names the part and kind)."""
        self.diagnostics[key] += count
        self.diagnostics["rating_errors"] += count

    def _gated(self) -> np.ndarray:
        """Per gate: the drivers and TIAs are on (always, on a board without gates)."""
        return self._gate_on if self.power.gated else np.ones_like(self._gate_on)

    def _set_gate(self, gate: int, on: bool) -> None:
        if bool(self._gate_on[gate]) == on:
            return
        self._gate_on[gate] = on
        self._publish_part_power()
        mine = self._line_gate == gate
        if self.power.gated:
            self._dac_loaded(np.flatnonzero(mine), update=False)  # checks ratings too
            if not on:
                self._check_unpowered(mine)

    def _check_unpowered(self, lines: np.ndarray) -> None:
        """Lines (mask) switched to a driver or TIA whose gate is shut down."""
        sw = self._sw.reshape(-1, 3)
        off = ~self._gated()[self._line_gate] & lines
        n_drv = int(np.count_nonzero(off & sw[:, SW_DAC]))
        n_tia = int(np.count_nonzero(off & sw[:, SW_TIA] & self._is_col))
        if n_drv:
            self._rating("rating_driver_off", n_drv)
        if n_tia:
            self._rating("rating_tia_off", n_tia)

    def _check_line_ratings(self, lines: np.ndarray) -> None:
        """Driver outputs (the lines' DAC-set voltages, while their gate is on) against the
        driver's output swing and the switches' signal range."""
        if not self._check_lines or lines.size == 0:
            return
        lines = lines[self._gated()[self._line_gate[lines]]]
        v = self._dac_v[lines]
        pw = self.power
        for key, (lo, hi) in (
            ("rating_driver", pw.driver_out_v),
            ("rating_switch", pw.sw_signal_v),
        ):
            bad = int(np.count_nonzero((v < lo) | (v > hi)))
            if bad:
                self._rating(key, bad)

    def _publish_part_power(self) -> None:
        """Static power of every part in its present state (on, shut down, standby)."""
        p, pw, ledger = self.profile, self.power, self.ledger
        on = self._gated()
        lines_on = int(on[self._line_gate].sum())
        cols_on = int(on[self._col_gate].sum())
        ledger.set_power(
            "line_drivers",
            lines_on * pw.driver_static_w + (p.lines - lines_on) * pw.driver_shutdown_w,
        )
        ledger.set_power(
            "tia", cols_on * pw.tia_static_w + (p.columns - cols_on) * pw.tia_shutdown_w
        )
        dac_on = sum(int((~chain.powered_down).any(axis=1).sum()) for chain in self.dacs)
        for chain in self.dacs:
            chain.power_changed = False
        ledger.set_power(
            "dac", dac_on * pw.dac_static_w + (p.dac_chips - dac_on) * pw.dac_powerdown_w
        )
        ledger.set_power("switches", p.sw_chips * pw.sw_static_w)
        adc_w = 0.0
        for adc in self.adcs:
            adc.power_changed = False
            if not adc.powered:
                watts = pw.adc_powerdown_w
            elif adc.standby:
                watts = pw.adc_standby_w
            else:
                watts = pw.adc_static_w
            adc_w += adc.n * watts
        ledger.set_power("adc", adc_w)

    def _select(self, kind: str, s: int) -> None:
        if kind == "dac":
            self.dacs[s].begin()
        elif kind == "sw":
            self.switches.begin()
        else:
            if self.trace is not None:
                self.trace.append(("adc_cs", self.clock.cycles, s))
            self.adcs[s].begin(self.clock.seconds)

    def _deselect(self, kind: str, s: int) -> None:
        if kind == "dac":
            ldac_low = self._pins.get(self.profile.pin_ldac, 1) == 0
            chain = self.profile.dac_chain
            loaded = self.dacs[s].end(ldac_low)
            if self.dacs[s].power_changed:
                self._publish_part_power()
            self._dac_loaded(
                np.array([8 * (s * chain + chip) + ch for chip, ch in loaded], dtype=np.int64)
            )
        elif kind == "sw":
            state = self.switches.end()
            if state is not None:
                self.diagnostics["switch_frames"] += 1
                self._latch_switches(state)
        else:
            self.adcs[s].end()
            if self.adcs[s].power_changed:
                self._publish_part_power()

    @property
    def tia_rf(self) -> float:
        g0, g1 = self.profile.pin_gain
        return TIA_RF[2 * self._pins.get(g1, 0) + self._pins.get(g0, 0)]

    # -- SPI --------------------------------------------------------------------------
    def spi_transfer(self, bus: int, tx: bytes, baudrate: int) -> bytes:
        try:
            data = bytes(tx)
        except (TypeError, ValueError):
            self.diagnostics["spi_bad_data"] += 1
            return b""
        n = len(data)
        try:
            baud = int(baudrate)
        except (TypeError, ValueError):
            baud = 0
        if baud <= 0:
            self.diagnostics["spi_bad_baudrate"] += 1
            baud = 1_000_000
        self.clock.advance(self.clock.spi_cycles(n, baud))
        self.diagnostics["spi_bytes"] += n
        p = self.profile
        if bus not in (p.bus_dac, p.bus_adc):
            self.diagnostics["spi_bad_bus"] += 1
            return bytes(n)
        rx = bytearray(n)
        selected = [
            self._cs[pin] for pin, level in self._pins.items() if level == 0 and pin in self._cs
        ]
        targets = [(k, s) for k, s in selected if (k == "adc") == (bus == p.bus_adc)]
        if not targets:
            self.diagnostics["spi_unselected_bytes"] += n
            return bytes(n)
        if sum(k == "adc" for k, _ in targets) > 1:
            self.diagnostics["miso_contention"] += 1
        for kind, s in targets:
            if kind == "dac":
                out, limit = self.dacs[s].shift(data), DAC_MAX_SCLK
            elif kind == "sw":
                out, limit = self.switches.shift(data), SW_MAX_SCLK
            else:
                out, limit = self.adcs[s].shift(data), ADC_MAX_SCLK
            if baud > limit:
                self.diagnostics["spi_overspeed"] += 1
                self._rating("rating_spi")
            for i, byte in enumerate(out):
                rx[i] |= byte
        return bytes(rx)

    # -- time and computation ----------------------------------------------------------
    def charge(self, op: str, count: int = 1) -> None:
        """Charge ``count`` × the cycle cost of firmware operation ``op``."""
        try:
            cost = self.cycle_costs[op]
        except KeyError:
            raise ValueError(
                f"unknown cycle-cost op {op!r}; known: {', '.join(sorted(self.cycle_costs))}"
            ) from None
        cycles = cost * int(count)
        self.diagnostics["charge_cycles"] += cycles
        self.clock.advance(cycles)

    def sleep_us(self, us: int) -> None:
        """MCU idles ``us`` µs of virtual time (DAC settling, pulse widths, delays)."""
        if not us or us <= 0:
            return
        self.ledger.set_power("mcu", self.power.mcu_idle_w)
        self.clock.advance_seconds(us * 1e-6, idle=True)
        self.ledger.set_power("mcu", self.power.mcu_active_w)

    def link(self, nbytes: int) -> None:
        """Energy of ``nbytes`` crossing the host link (either direction)."""
        self.ledger.add("link", max(0, int(nbytes)) * self.power.link_byte_j)

    # -- lines -------------------------------------------------------------------------
    def _dac_loaded(self, lines: np.ndarray, update: bool = True) -> None:
        """DAC registers loaded (global channel numbers): line voltages, energy, events.
        ``update=False``: the lines' drivers were switched on or off (no DAC energy).

        A line's source is its driver: 4·V_DAC − 10 V (a powered-down DAC channel gives
        0 V, hence −10 V), or 0 V while the driver is shut down (its output is high
        impedance; the line is then whatever its switches connect it to)."""
        if lines.size == 0:
            return
        self._event_cause = "dac"
        p = self.profile
        if update:
            self.ledger.add("dac", lines.size * self.power.dac_update_j)
        lines = lines[lines < p.lines]
        codes = np.concatenate([chain.output.ravel() for chain in self.dacs])[lines]
        down = np.concatenate([chain.powered_down.ravel() for chain in self.dacs])[lines]
        volts = line_volts(np.where(down, 0, codes))
        if self.power.gated:
            volts = np.where(self._gate_on[self._line_gate[lines]], volts, 0.0)
        now = self.clock.cycles
        moved = volts != self._dac_v[lines]
        if moved.any():
            changed = lines[moved]
            dt = (now - self._dac_t[changed]) / self.clock.mcu_hz
            old = self._dac_v[changed]
            self._dac_prev_v[changed] = old + (self._dac_prev_v[changed] - old) * settle_alpha(dt)
            self._dac_v[changed] = volts[moved]
            self._dac_t[changed] = now
            self._check_line_ratings(changed)
        # Every load of a switched-in line opens a new interval (even at the same voltage),
        # so interval boundaries depend on the sequence, not the data.
        for a in np.unique(lines[self._via_dac[lines]] // p.lines_per_array):
            self._array_event(int(a))

    def _latch_switches(self, state: np.ndarray) -> None:
        p = self.profile
        new = state[: 3 * p.lines].copy()
        per_line = new.reshape(p.lines, 3)
        short = per_line[:, SW_DAC] & per_line[:, SW_GND]
        if short.any():
            self.diagnostics["shorted_lines_refused"] += int(short.sum())
            per_line[short] = self._sw.reshape(p.lines, 3)[short]
        toggles = int(np.count_nonzero(new != self._sw))
        self.ledger.add("switches", toggles * self.power.sw_toggle_j)
        old_sw = self._sw
        old_modes = self._modes.copy()
        old_dac = self._via_dac.copy()
        self._sw = new
        local = np.arange(p.lines) % p.lines_per_array
        is_row = local < p.rows
        dac, tia, gnd = per_line[:, SW_DAC], per_line[:, SW_TIA], per_line[:, SW_GND]
        self.diagnostics["row_tia_switch"] += int(np.count_nonzero(tia & is_row))
        col_tia = tia & ~is_row
        self._contention = dac & col_tia
        self.diagnostics["dac_tia_contention"] += int(self._contention.sum())
        modes = np.full(p.lines, FLOAT, dtype=np.int8)
        modes[col_tia] = TIA
        modes[dac | gnd] = DRIVEN
        self._via_dac = dac
        if self.power.gated and not self._gate_on.all():
            newly = (dac & ~old_dac) | (tia & ~old_sw.reshape(p.lines, 3)[:, SW_TIA])
            self._check_unpowered(newly)
        self._modes = modes.reshape(p.arrays, p.lines_per_array)
        changed = (self._modes != old_modes).any(axis=1)
        changed |= (self._via_dac != old_dac).reshape(p.arrays, -1).any(axis=1)
        self._event_cause = "switch"
        for a in np.flatnonzero(changed):
            self._array_event(int(a))

    def line_voltages(self, array: int, settled: bool = True) -> np.ndarray:
        """Source voltage of each of the array's lines (0 for ground, TIA and floating)."""
        p = self.profile
        sl = slice(array * p.lines_per_array, (array + 1) * p.lines_per_array)
        if settled:
            dac = self._dac_v[sl]
        else:
            now = self.clock.cycles
            dt = (now - self._dac_t[sl]) / self.clock.mcu_hz
            dac = self._dac_v[sl] + (self._dac_prev_v[sl] - self._dac_v[sl]) * settle_alpha(dt)
        return np.where(self._via_dac[sl], dac, 0.0)

    def line_modes(self, array: int) -> np.ndarray:
        return self._modes[array].copy()

    def operator(self, array: int) -> Operator:
        """The array's current electrical operator (cached per state)."""
        return self.operator_at(array, self.cells.drift_epoch(self.clock.seconds))

    def operator_at(self, array: int, epoch: int) -> Operator:
        """The array's operator for its present line states at drift ``epoch``."""
        return self._solved(self.network.operator, array, epoch)

    def network_state(self, array: int) -> NetworkState:
        """The array's present network state (see :meth:`ArrayNetwork.state`): what an
        event or a conversion applies its line voltages to. ``diagnostics
        ["operator_solves"]`` counts the network factorisations this needs: one per
        (array, conductance version, drift epoch, line modes) state, while it is cached."""
        return self._solved(self.network.state, array, self.cells.drift_epoch(self.clock.seconds))

    def _solved(self, build: Callable[..., _T], array: int, epoch: int) -> _T:
        """``build`` (the network's operator or state) for the array's conductances at
        ``epoch`` and its present line modes, cached per (array, version, epoch); the
        factorisations it took are counted in ``diagnostics["operator_solves"]``."""
        before = self.network.solves
        out = build(
            self.cells.conductance(array, epoch),
            self._modes[array],
            key=(array, int(self.cells.versions[array]), epoch),
        )
        self.diagnostics["operator_solves"] += self.network.solves - before
        return out

    def _cell_voltages(self, a: int, v: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Memristor voltages (rows, cols), cell and source power for line voltages v.
        With every line at 0 V nothing flows: no network is solved (unless the network's
        ``fast`` is off, which reproduces the previous behaviour for benchmarks)."""
        p = self.profile
        if self.network.fast and not v.any():
            return np.zeros((p.rows, p.cols)), 0.0, 0.0
        vcell, p_cells, p_source = self.network_state(a).apply(v)
        return vcell.reshape(p.rows, p.cols), p_cells, p_source

    def _array_event(self, a: int) -> None:
        """The array's line state changed: close the old interval, open the new one."""
        p = self.profile
        now = self.clock.cycles
        if self.trace is not None:
            self.trace.append(("array", now, a))
        if not self.sample_values:
            return  # a timing probe: no physics
        if self._pulsing[a]:
            width = (now - int(self._t_start[a])) / self.clock.mcu_hz
            limit = None if p.cell == "0T1R" else self.device.compliance_current
            moved = self.cells.apply_pulse(a, self._vcell[a], width, self.clock.seconds, limit)
            self.diagnostics["cells_programmed"] += moved
        v = self.line_voltages(a)
        vcell, p_cells, p_source = self._cell_voltages(a, v)
        damaged = self.cells.check_damage(a, vcell, passive=p.cell == "0T1R")
        if self.events is not None:
            self._record(a, now, v, vcell, damaged)
        if damaged:
            self.diagnostics["damage_events"] += damaged
            vcell, p_cells, p_source = self._cell_voltages(a, v)
        self._set_array_power(a, p_cells, p_source)
        self._vcell[a] = vcell
        self._pulsing[a] = bool(np.abs(vcell).max() >= self.cells.v_floor)
        self._t_start[a] = now

    def _record(self, a: int, now: int, v: np.ndarray, vcell: np.ndarray, damaged: int) -> None:
        """Add the array's new interval to ``self.events`` (what the cells saw before any
        breakdown this event caused)."""
        assert self.events is not None
        p = self.profile
        sl = slice(a * p.lines_per_array, (a + 1) * p.lines_per_array)
        self.events.add(
            array=a,
            cause=self._event_cause,
            now=now,
            hz=self.clock.mcu_hz,
            rows=p.rows,
            volts=v,
            modes=self._modes[a],
            via_dac=self._via_dac[sl],
            vmem=vcell,
            g=self.cells.conductance(a, self.cells.drift_epoch(self.clock.seconds)),
            damaged=damaged,
        )

    def lines_grounded(self) -> bool:
        """The safe state: every line on its ground switch alone, every DAC output at 0 V."""
        per_line = self._sw.reshape(-1, 3)
        only_gnd = per_line[:, SW_GND] & ~per_line[:, SW_DAC] & ~per_line[:, SW_TIA]
        return bool(only_gnd.all() and not self._dac_v.any())

    def _set_array_power(self, a: int, p_cells: float, p_source: float) -> None:
        self._p_cells[a] = p_cells
        # Ideal wiring dissipates nothing; the difference would be rounding residue.
        self._p_wire[a] = max(0.0, p_source - p_cells) if self.noise.ir_drop else 0.0
        self._publish_array_power()

    def _publish_array_power(self) -> None:
        self.ledger.set_power("array", float(self._p_cells.sum()))
        self.ledger.set_power("array_wiring", float(self._p_wire.sum()))

    def set_conductances(self, array: int, g: np.ndarray) -> None:
        """Place conductances directly (no pulses): test set-up and fast programming."""
        self.cells.set_conductance(array, g, self.clock.seconds)
        self._event_cause = "set"
        self._array_event(array)

    def place(self, targets: dict[int, dict[tuple[int, int], float]]) -> None:
        """Put cells straight at target conductances ({array: {(row, col): S}}, as a
        crossbar plan's `targets()` gives them): a perfect write-verify, for set-ups that
        measure inference, not programming."""
        for array, cells in targets.items():
            g = self.conductances(array)
            for (row, col), value in cells.items():
                g[row, col] = value
            self.set_conductances(array, g)

    def conductances(self, array: int) -> np.ndarray:
        return self.cells.conductance(array, self.cells.drift_epoch(self.clock.seconds)).copy()

    # -- conversions -------------------------------------------------------------------
    def _sample(self, chip: int, channel: int) -> int:
        """ADC ``chip`` samples ``channel`` now: TIA output, noise, quantisation."""
        p = self.profile
        if self.trace is not None:
            self.trace.append(("sample", self.clock.cycles, chip, channel))
        count = int(self.adc_samples[chip])
        self.adc_samples[chip] += 1
        self.diagnostics["adc_conversions"] += 1
        self.ledger.add("adc", self.power.adc_conversion_j)
        if not self.sample_values:
            return 0
        chain = self.adcs[chip // p.adc_chain]
        low, high = chain.range_of(chip % p.adc_chain, channel)
        rf = self.tia_rf
        gc = 8 * chip + channel
        current, sumsq, forced = 0.0, 0.0, None
        if gc < p.columns:
            a, c = divmod(gc, p.cols)
            line = p.rows + c
            gline = a * p.lines_per_array + line
            if self._contention[gline]:
                forced = -math.copysign(TIA_SAT_V, self._dac_v[gline] or 1.0)
            elif self._modes[a, line] == TIA:
                v = self.line_voltages(a, settled=False)
                if not np.array_equal(v, self.line_voltages(a)):
                    self.diagnostics["adc_unsettled_conversions"] += 1
                if v.any() or not self.network.fast:  # else nothing flows: 0 A
                    contrib = self.network_state(a).tia_row(line, v) * v
                    current = float(contrib.sum())
                    sumsq = float((contrib * contrib).sum())
        eps = sample_normals(self.noise_key, chip, count)[0] if self.noise.read_noise_on else None
        if forced is not None:
            self.diagnostics["tia_saturations"] += 1
            return int(adc_codes(np.asarray(forced), low, high))
        codes, saturated = convert(
            np.asarray(current),
            np.asarray(sumsq),
            None if eps is None else np.asarray(eps),
            rf,
            low,
            high,
            self.noise,
        )
        self.diagnostics["tia_saturations"] += saturated
        return int(codes)
