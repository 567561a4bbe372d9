"""Vectorised evaluation of N MVMs / inferences, identical to the byte-level path.

The byte-level path is the board model driven frame by frame (``MvmDriver`` below is the
reference sequence, exactly the documented byte formats). The batch path computes the
same N inferences at once with numpy and leaves the board in the same state: the same ADC
codes, the same cycle count, the same energy per ledger component (to float rounding) and
the same diagnostics. Three properties of the board model make that possible:

* **timing is data-independent**: every frame has a fixed length and every MicroPython
  call a fixed cost, so one *probe* run of the sequence on a scratch board (noise off)
  gives each MVM's cycles, its per-component non-array energy, the cycle offset of its
  LDAC edge and of every ADC sample (``plan_mvm``);
* **the array is linear** between LDAC edges: the column currents and the array power of
  inference i are matrix products of its line voltages with the cached operator;
* **read noise is counter-based**: the noise of ADC chip k's n-th sample is a pure
  function of (seed, k, n) (``board.sample_normals``), and the sample counts per chip are
  data-independent, so the batch path computes the noise of exactly the conversions it
  needs.

A schedule is a list of steps per inference — :class:`MvmStep` (one reference MVM on an
array) and :class:`ChargeStep` (firmware computation) — run by :class:`BatchSession`:
declare the schedule, call :meth:`BatchSession.mvm` for each MVM step in order with the
``(N, rows)`` DAC codes (they may depend on earlier steps' outputs: a layer's input is the
previous layer's output), or :meth:`BatchSession.mvms` for several steps whose inputs are
known together (steps passed the same input array are evaluated as one matrix product),
then :meth:`BatchSession.finish` commits time, energy and state to the board.
:func:`run_bytes` runs the same schedule frame by frame.

``exact=True`` reduces each column current exactly as the byte path does (elementwise
product summed along the line axis), so codes match bit for bit; the default uses matrix
products over the row lines, which differ from it only in floating-point rounding (a code
can differ by one LSB when a current falls within ~1e-16 of a code boundary). With drift
on, conversions are grouped by drift epoch (one operator each).

Not reproduced by the batch path: the ``tia_saturations`` diagnostic of samples taken for
other arrays' columns sharing an ADC chain, the stale bits left in the DAC shift registers,
and pulses (inputs must stay below the cells' disturb floor; the session raises otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .board_model import BoardModel, convert, sample_normals, settle_alpha
from .board_profile import NoiseConfig
from .cells import SHORTED
from .crossbar import DRIVEN, TIA, Operator
from .parts import (
    ADC_BAUD,
    ADC_RST,
    ADC_STDBY,
    DAC_BAUD,
    DAC_MID,
    DAC_RESET_KEY,
    REG_RANGE0,
    adc_command_frame,
    adc_results,
    dac_frame,
    dac_word,
    line_volts,
    man_ch,
    mvm_switches,
    program_write,
    switch_frame,
)

CHUNK = 1024  # inferences per block of elementwise work in the grouped batch path
PLAN_DIAG_EXCLUDE = ("operator_solves", "tia_saturations", "cells_programmed", "damage_events")


class MvmDriver:
    """The reference byte-level MVM sequence (module docstring) on one board."""

    def __init__(self, board: BoardModel, gain: int = 3) -> None:
        self.board = board
        self.p = board.profile
        self.gain = gain

    # -- primitives --------------------------------------------------------------
    def _frame(self, cs: int, bus: int, data: bytes, baud: int) -> bytes:
        b = self.board
        b.charge("pin")
        b.pin_write(cs, 0)
        b.charge("spi_call")
        rx = b.spi_transfer(bus, data, baud)
        b.charge("pin")
        b.pin_write(cs, 1)
        return rx

    def _chain_len(self, kind: str, s: int) -> int:
        p = self.p
        if kind == "dac":
            return min(p.dac_chain, p.dac_chips - s * p.dac_chain)
        return min(p.adc_chain, p.adc_chips - s * p.adc_chain)

    def dac(self, s: int, words: dict[int, int]) -> None:
        frame = dac_frame(self._chain_len("dac", s), words)
        self._frame(self.p.pin_cs_dac[s], self.p.bus_dac, frame, DAC_BAUD)

    def adc(self, s: int, command: int) -> list[int]:
        n = self._chain_len("adc", s)
        rx = self._frame(
            self.p.pin_cs_adc[s], self.p.bus_adc, adc_command_frame(n, command), ADC_BAUD
        )
        return adc_results(rx, n)

    def switches(self, closed: np.ndarray) -> None:
        self._frame(
            self.p.pin_cs_sw, self.p.bus_dac, switch_frame(self.p.sw_chips, closed), DAC_BAUD
        )

    # -- set-up ------------------------------------------------------------------
    def setup(self, arrays: list[int] | None = None) -> None:
        """Reset and chain the DACs, park every line at 0 V, switch the arrays in for
        reading, reset the ADCs to ±10.24 V, select the TIA gain."""
        p, b = self.p, self.board
        arrays = list(range(p.arrays)) if arrays is None else arrays
        for s in range(p.dac_selects):
            n = self._chain_len("dac", s)
            self.dac(s, {0: dac_word(0x6, 0, DAC_RESET_KEY)})  # reaches chip 0 (standalone)
            for k in range(n - 1):  # enable forwarding one chip at a time
                self.dac(s, {k: dac_word(0x8, 0, 1)})
            self.dac(s, {q: dac_word(0xB, 0, DAC_MID) for q in range(n)})  # all to 0 V
        self.switches(mvm_switches(p, arrays))
        for s in range(p.adc_selects):
            self.adc(s, ADC_RST)
            for ch in range(8):
                self.adc(s, program_write(REG_RANGE0 + ch, 0x00))
        b.pin_write(p.pin_gain[0], self.gain & 1)
        b.pin_write(p.pin_gain[1], (self.gain >> 1) & 1)

    def load_lines(self, codes: dict[int, int]) -> None:
        """Write DAC codes to lines ({global line: code}), one frame per chip select and
        channel, then load them together on an LDAC edge."""
        p, b = self.p, self.board
        groups: dict[tuple[int, int], dict[int, int]] = {}
        for line, code in codes.items():
            chip, ch = divmod(line, 8)
            s, pos = divmod(chip, p.dac_chain)
            groups.setdefault((s, ch), {})[pos] = dac_word(0x1, ch, int(code))
        for (s, _ch), words in sorted(groups.items()):
            self.dac(s, words)
        b.charge("pin")
        b.pin_write(p.pin_ldac, 0)
        b.charge("pin")
        b.pin_write(p.pin_ldac, 1)

    # -- one MVM -----------------------------------------------------------------
    def mvm(self, array: int, codes: np.ndarray) -> np.ndarray:
        """Apply DAC ``codes`` (rows,) to the array's rows; the columns' ADC codes."""
        p, b = self.p, self.board
        codes = np.asarray(codes, dtype=np.int64)
        self.load_lines({p.row_line(array, r): int(codes[r]) for r in range(p.rows)})
        b.sleep_us(5)
        out = np.zeros(p.cols, dtype=np.int64)
        wanted: dict[int, dict[int, list[tuple[int, int]]]] = {}
        for c in range(p.cols):
            chip, ch = divmod(array * p.cols + c, 8)
            s, pos = divmod(chip, p.adc_chain)
            wanted.setdefault(s, {}).setdefault(ch, []).append((pos, c))
        for s in sorted(wanted):
            channels = sorted(wanted[s])
            for j, command in enumerate([*map(man_ch, channels), ADC_STDBY]):
                results = self.adc(s, command)
                if j:
                    for pos, c in wanted[s][channels[j - 1]]:
                        out[c] = results[pos]
        return out


@dataclass(frozen=True)
class MvmStep:
    """One reference MVM on ``array`` (inputs given to :meth:`BatchSession.mvm`)."""

    array: int


@dataclass(frozen=True)
class ChargeStep:
    """Firmware computation: ``count`` × the cycle cost of ``op``."""

    op: str
    count: int = 1


Step = MvmStep | ChargeStep


@dataclass(frozen=True)
class MvmPlan:
    """Data-independent facts of one reference MVM on one array (from a probe run)."""

    array: int
    cycles: int
    idle_cycles: int
    energy: dict[str, float]  # J per MVM, every component but the array's
    diag: dict[str, int]  # diagnostics per MVM
    ldac: int  # cycle offset of the LDAC edge
    sample_offsets: np.ndarray  # (K,) cycle offsets of the ADC samples, in order
    sample_chips: np.ndarray  # (K,)
    sample_channels: np.ndarray  # (K,)
    sample_cols: np.ndarray  # (K,) the array's column sampled, or -1 (another column)
    sample_ordinal: np.ndarray  # (K,) earlier samples of the same chip in this MVM
    chip_samples: np.ndarray  # (adc_chips,) samples per chip in this MVM
    last_sample: dict[int, int]  # ADC select -> offset of its last sample (selects used)


def _probe_board(board: BoardModel) -> BoardModel:
    return BoardModel(
        board.profile,
        seed=0,
        device=board.device,
        noise=NoiseConfig.off(),
        physics=board.physics,
        power=board.power,
        cycle_costs=board.cycle_costs,
    )


def plan_mvm(board: BoardModel, array: int) -> MvmPlan:
    """Probe the reference MVM on ``array`` once (cached on the board)."""
    return plan_mvms(board, [array])[array]


def plan_mvms(board: BoardModel, arrays: list[int]) -> dict[int, MvmPlan]:
    """Plans for several arrays, probing the missing ones on one scratch board."""
    costs = tuple(sorted(board.cycle_costs.items()))
    plans = {a: board.batch_cache.get(("mvm", a, costs)) for a in arrays}
    missing = sorted(a for a, plan in plans.items() if plan is None)
    if missing:
        probe = _probe_board(board)
        probe.sample_values = False  # the probe needs when samples happen, not their values
        driver = MvmDriver(probe)
        driver.setup(missing)
        for a in missing:
            plan = _probe_mvm(probe, driver, a)
            board.batch_cache[("mvm", a, costs)] = plans[a] = plan
    return {a: plan for a, plan in plans.items() if plan is not None}


def _probe_mvm(probe: BoardModel, driver: MvmDriver, array: int) -> MvmPlan:
    p = probe.profile
    mid = np.full(p.rows, DAC_MID)
    driver.mvm(array, mid)
    c0, idle0 = probe.clock.cycles, probe.clock.idle_cycles
    mark = probe.ledger.mark()
    diag0 = dict(probe.diagnostics)
    probe.trace = []
    driver.mvm(array, mid + 1)
    trace, probe.trace = probe.trace, None
    ldac = [t - c0 for kind, t, *rest in trace if kind == "array" and rest == [array]]
    if len(ldac) != 1:
        raise RuntimeError(f"reference MVM on array {array}: {len(ldac)} array events, not 1")
    samples = [
        (t - c0, chip, ch) for kind, t, *rest in trace if kind == "sample" for chip, ch in [rest]
    ]
    offsets = np.array([s[0] for s in samples], dtype=np.int64)
    chips = np.array([s[1] for s in samples], dtype=np.int64)
    channels = np.array([s[2] for s in samples], dtype=np.int64)
    gcol = 8 * chips + channels
    mine = (gcol // p.cols == array) & (gcol < p.columns)
    cols = np.where(mine, gcol % p.cols, -1)
    last = {int(chip) // p.adc_chain: int(off) for off, chip in zip(offsets, chips, strict=True)}
    energy = {
        k: v for k, v in probe.ledger.since(mark).items() if k not in ("array", "array_wiring")
    }
    diag = {
        k: v - diag0.get(k, 0)
        for k, v in probe.diagnostics.items()
        if k not in PLAN_DIAG_EXCLUDE and v != diag0.get(k, 0)
    }
    seen: dict[int, int] = {}
    ordinal = np.zeros(chips.size, dtype=np.int64)
    for j, chip in enumerate(chips.tolist()):
        ordinal[j] = seen.get(chip, 0)
        seen[chip] = ordinal[j] + 1
    return MvmPlan(
        array=array,
        cycles=probe.clock.cycles - c0,
        idle_cycles=probe.clock.idle_cycles - idle0,
        energy=energy,
        diag=diag,
        ldac=ldac[0],
        sample_offsets=offsets,
        sample_chips=chips,
        sample_channels=channels,
        sample_cols=cols,
        sample_ordinal=ordinal,
        chip_samples=np.bincount(chips, minlength=p.adc_chips),
        last_sample=last,
    )


@dataclass
class _ArrayLog:
    """LDAC edges of one array in each inference: cycle offsets in the inference and the
    array power from each edge, per inference."""

    offsets: list[int]
    p_cells: list[np.ndarray]
    p_wire: list[np.ndarray]
    last_v: np.ndarray  # line voltages after the latest edge (lines_per_array,)


class BatchSession:
    """N inferences of a fixed schedule, evaluated step by step over all N at once."""

    def __init__(self, board: BoardModel, steps: list[Step], n: int, exact: bool = False) -> None:
        if n < 1:
            raise ValueError(f"a batch needs n >= 1 inferences, got {n}")
        self.board, self.steps, self.n, self.exact = board, list(steps), int(n), exact
        p = board.profile
        self.plans: list[MvmPlan | None] = []
        self.offsets: list[int] = []
        self.ordinals: list[np.ndarray] = []  # per step: each sample's ordinal for its chip
        per_chip = np.zeros(p.adc_chips, dtype=np.int64)  # samples per chip per inference
        plan_mvms(
            board,
            sorted(
                {s.array for s in self.steps if isinstance(s, MvmStep) and 0 <= s.array < p.arrays}
            ),
        )
        t = 0
        for step in self.steps:
            self.offsets.append(t)
            if isinstance(step, MvmStep):
                if not 0 <= step.array < p.arrays:
                    raise ValueError(f"MvmStep array {step.array} not in 0…{p.arrays - 1}")
                plan = plan_mvm(board, step.array)
                t += plan.cycles
                self.ordinals.append(per_chip[plan.sample_chips] + plan.sample_ordinal)
                per_chip += plan.chip_samples
                self.plans.append(plan)
            elif isinstance(step, ChargeStep):
                if step.op not in board.cycle_costs or step.count < 0:
                    raise ValueError(
                        f"ChargeStep({step.op!r}, {step.count}): unknown op or negative count"
                    )
                t += board.cycle_costs[step.op] * step.count
                self.ordinals.append(np.zeros(0, dtype=np.int64))
                self.plans.append(None)
            else:
                raise TypeError(f"not a batch step: {step!r}")
        self.period = t
        self.per_chip = per_chip
        self.counts0 = board.adc_samples.copy()
        board.ledger.settle()
        self.t0 = board.clock.cycles
        self._next = 0
        self._logs: dict[int, _ArrayLog] = {}
        self._dac_codes: dict[int, np.ndarray] = {}  # array -> (n, rows) codes, last step
        self._dac_offsets: dict[int, int] = {}  # array -> LDAC offset of its last step
        self._adc_last: dict[int, int] = {}
        self._saturations = 0
        self._finished = False
        self._ready: set[int] = set()  # arrays checked ready (the board is frozen meanwhile)
        self._reach = [chain._reach() for chain in board.dacs]  # chips each DAC chain reaches
        self._consts: dict[int, tuple[Operator, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    # -- checks --------------------------------------------------------------------
    def _check_ready(self, array: int, plan: MvmPlan) -> None:
        b, p = self.board, self.board.profile
        modes = b.line_modes(array)
        lines = np.arange(p.lines_per_array) + array * p.lines_per_array
        rows_ok = (modes[: p.rows] == DRIVEN).all() and b._via_dac[lines[: p.rows]].all()
        cols_ok = (modes[p.rows :] == TIA).all() and not b._contention[lines].any()
        if not (rows_ok and cols_ok):
            raise RuntimeError(
                f"array {array} is not switched for reading (rows to DACs, columns to TIAs); "
                "run MvmDriver.setup first"
            )
        if b.pin_read(p.pin_ldac) != 1 or any(b.pin_read(pin) != 1 for pin in b._cs):
            raise RuntimeError("LDAC and every chip select must be high between MVMs")
        for s in plan.last_sample:
            if not b.adcs[s].powered or b.adcs[s].pending is not None:
                raise RuntimeError(f"ADC select {s} is not idle (powered, nothing pending)")
        reach = self._reach
        for r in range(p.rows):
            chip, ch = divmod(p.row_line(array, r), 8)
            s, pos = divmod(chip, p.dac_chain)
            chain = b.dacs[s]
            if reach[s] <= pos or (int(chain.ldac_mask[pos]) >> ch) & 1:
                raise RuntimeError(
                    f"row {r} of array {array}: its DAC is not reachable "
                    "through the chain or ignores LDAC"
                )
        if b._pulsing[array]:
            raise RuntimeError(f"array {array} is being pulsed; finish the pulse first")

    # -- MVM steps -------------------------------------------------------------------
    def mvm(self, codes: np.ndarray) -> np.ndarray:
        """The next MVM step for all N inferences: (N, rows) DAC codes -> (N, cols) ADC codes."""
        return self.mvms([codes])[0]

    def mvms(self, codes_list: list[np.ndarray]) -> list[np.ndarray]:
        """The next ``len(codes_list)`` MVM steps at once (their inputs known up front).

        Same results as calling :meth:`mvm` for each; steps that share one input array
        (a layer's tiles over the same input slice) are evaluated as one matrix product.
        """
        taken = []
        checked: dict[int, np.ndarray] = {}  # input arrays validated once
        for codes in codes_list:
            while self._next < len(self.steps) and isinstance(self.steps[self._next], ChargeStep):
                self._next += 1
            if self._finished or self._next >= len(self.steps):
                raise RuntimeError("no MVM step left in this batch schedule")
            j = self._next
            if id(codes) not in checked:
                checked[id(codes)] = self._prepare(j, codes)
            self._check_step(j)
            taken.append((j, checked[id(codes)]))
            self._next += 1
        if self.exact or self.board.noise.drift_nu > 0:
            return [self._evaluate_general(j, codes) for j, codes in taken]
        return self._evaluate_grouped(taken, codes_list)

    def _check_step(self, j: int) -> None:
        """The board is ready for step j (checked once per array and session)."""
        step, plan = self.steps[j], self.plans[j]
        assert isinstance(step, MvmStep) and plan is not None
        if step.array not in self._ready:
            self._check_ready(step.array, plan)
            hz = self.board.clock.mcu_hz
            if (settle_alpha((plan.sample_offsets - plan.ldac) / hz) != 0).any():
                raise NotImplementedError("samples before the DAC settles are byte-level only")
            self._ready.add(step.array)

    def _prepare(self, j: int, codes: np.ndarray) -> np.ndarray:
        """Validate the codes given for step j; the codes as int64."""
        b, p, n = self.board, self.board.profile, self.n
        codes = np.asarray(codes)
        if codes.shape != (n, p.rows) or codes.min() < 0 or codes.max() > 0xFFFF:
            raise ValueError(
                f"MVM step {j}: codes must be ({n}, {p.rows}) ints in 0…65535, "
                f"got shape {codes.shape}"
            )
        peak = max(abs(int(codes.max()) - DAC_MID), abs(int(codes.min()) - DAC_MID))
        if float(line_volts(DAC_MID + peak)) >= b.cells.v_floor:
            raise ValueError(
                f"MVM step {j}: inputs up to {float(line_volts(DAC_MID + peak)):.3f} V reach "
                f"the cells' disturb floor ({b.cells.v_floor:.3f} V); pulses need the "
                "byte-level path"
            )
        return codes.astype(np.int64, copy=False)

    def _times(self, j: int) -> np.ndarray:
        """Cycle at which step j of each inference starts."""
        return self.t0 + np.arange(self.n, dtype=np.int64) * self.period + self.offsets[j]

    def _ranges(self, plan: MvmPlan, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, p = self.board, self.board.profile
        ranges = [
            b.adcs[int(c) // p.adc_chain].range_of(int(c) % p.adc_chain, int(ch))
            for c, ch in zip(plan.sample_chips[ks], plan.sample_channels[ks], strict=True)
        ]
        return np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])

    def _counters(
        self, samples: list[tuple[int, MvmPlan, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For samples ``ks`` of steps ``j``: their chips, their sample counters in the
        first inference, and the counter stride from one inference to the next."""
        chips = np.concatenate([plan.sample_chips[ks] for _, plan, ks in samples])
        first = np.concatenate(
            [self.counts0[plan.sample_chips[ks]] + self.ordinals[j][ks] for j, plan, ks in samples]
        )
        return chips, first, self.per_chip[chips]

    def _normals(
        self, chips: np.ndarray, first: np.ndarray, stride: np.ndarray, start: int, stop: int
    ) -> np.ndarray:
        """Read-noise normals of those samples for inferences start…stop-1."""
        inferences = np.arange(start, stop, dtype=np.int64)
        counts = first[None, :] + inferences[:, None] * stride[None, :]
        return sample_normals(self.board.noise_key, chips, counts)

    def _noise(self, j: int, plan: MvmPlan, ks: np.ndarray) -> np.ndarray:
        """Standard normals of step j's samples ks for every inference (n, len(ks))."""
        return self._normals(*self._counters([(j, plan, ks)]), 0, self.n)

    def _finish_step(self, j: int, codes: np.ndarray, plan: MvmPlan) -> None:
        step = self.steps[j]
        assert isinstance(step, MvmStep)
        last_start = self.t0 + (self.n - 1) * self.period + self.offsets[j]
        self._dac_codes[step.array] = codes
        self._dac_offsets[step.array] = self.offsets[j] + plan.ldac
        for s, off in plan.last_sample.items():
            self._adc_last[s] = last_start + off

    def _evaluate_general(self, j: int, codes: np.ndarray) -> np.ndarray:
        """One step, any drift epochs; ``exact`` reduces currents as the byte path does."""
        b, p, n = self.board, self.board.profile, self.n
        step, plan = self.steps[j], self.plans[j]
        assert isinstance(step, MvmStep) and plan is not None
        a = step.array
        volts = np.zeros((n, p.lines_per_array))
        volts[:] = b.line_voltages(a)
        volts[:, : p.rows] = line_volts(codes)
        base = self._times(j)
        out = np.full((n, p.cols), -1, dtype=np.int64)
        # Only the samples of this array's columns matter; the others (other arrays'
        # columns on shared ADC chains) advance the chips' noise counters, nothing else.
        ks = np.flatnonzero(plan.sample_cols >= 0)
        col_lines = p.rows + plan.sample_cols[ks]
        current = np.zeros((n, ks.size))
        sumsq = np.zeros((n, ks.size))
        samp_epochs = self._epochs(base[:, None] + plan.sample_offsets[ks][None, :])
        for e in np.unique(samp_epochs):
            tia = b.operator_at(a, int(e)).tia[col_lines]  # (K', lines)
            sel = samp_epochs == e
            if self.exact:
                for i_k in range(ks.size):
                    rows_i = np.flatnonzero(sel[:, i_k])
                    contrib = volts[rows_i] * tia[i_k]
                    current[rows_i, i_k] = contrib.sum(axis=1)
                    sumsq[rows_i, i_k] = (contrib * contrib).sum(axis=1)
            else:
                current = np.where(sel, volts @ tia.T, current)
                sumsq = np.where(sel, (volts * volts) @ (tia * tia).T, sumsq)
        low, high = self._ranges(plan, ks)
        eps = self._noise(j, plan, ks) if b.noise.read_noise_on else None
        conv, saturated = convert(current, sumsq, eps, b.tia_rf, low, high, b.noise)
        self._saturations += saturated
        out[:, plan.sample_cols[ks]] = conv
        t_ldac = base + plan.ldac
        epochs = self._epochs(t_ldac)
        p_cells, p_src = np.zeros(n), np.zeros(n)
        for e in np.unique(epochs):
            rows_i = np.flatnonzero(epochs == e)
            pc, ps = self._powers(a, b.operator_at(a, int(e)), volts[rows_i], p.lines_per_array)
            p_cells[rows_i], p_src[rows_i] = pc, ps
        self._log_array(a, self.offsets[j] + plan.ldac, volts[-1], p_cells, p_src)
        self._finish_step(j, codes, plan)
        return out

    def _evaluate_grouped(
        self, taken: list[tuple[int, np.ndarray]], originals: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Steps without drift, matrix products over the row lines only (columns sit at
        virtual ground), one product per group of steps sharing an input array."""
        b, p, n = self.board, self.board.profile, self.n
        rf, noise = b.tia_rf, b.noise
        outs: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(taken)
        groups: dict[int, list[int]] = {}
        for m, original in enumerate(originals):
            groups.setdefault(id(original), []).append(m)
        for members in groups.values():
            codes = taken[members[0]][1]
            volts = line_volts(codes)  # (n, rows)
            tias, quads, srcs, lows, highs, ks_list, noise_of = [], [], [], [], [], [], []
            for m in members:
                j = taken[m][0]
                step, plan = self.steps[j], self.plans[j]
                assert isinstance(step, MvmStep) and plan is not None
                op = b.operator_at(step.array, 0)
                ks = np.flatnonzero(plan.sample_cols >= 0)
                consts = self._row_constants(step.array, op)
                tias.append(consts[0][plan.sample_cols[ks]])
                quads.append(consts[1])
                srcs.append(consts[2])
                low, high = self._ranges(plan, ks)
                lows.append(low)
                highs.append(high)
                ks_list.append(ks)
                noise_of.append((j, plan, ks))
            tia = np.concatenate(tias)  # (K, rows)
            tia_t, tia_sq_t = tia.T.copy(), (tia * tia).T.copy()
            low, high = np.concatenate(lows), np.concatenate(highs)
            chips, first, stride = self._counters(noise_of)
            conv = np.empty((n, tia.shape[0]), dtype=np.int64)
            # Row blocks keep the elementwise conversion work in cache.
            for r0 in range(0, n, CHUNK):
                r1 = min(n, r0 + CHUNK)
                v = volts[r0:r1]
                current = v @ tia_t
                sumsq = (v * v) @ tia_sq_t if noise.read_sigma > 0 else np.zeros(1)
                eps = None
                if noise.read_noise_on:
                    eps = self._normals(chips, first, stride, r0, r1)
                conv[r0:r1], saturated = convert(current, sumsq, eps, rf, low, high, noise)
                self._saturations += saturated
            # Quadratic forms v·Q_s·v for every step s at once: the outer products v vᵀ
            # (flattened) times the flattened forms [Q_1 … Q_S].
            outer = (volts[:, :, None] * volts[:, None, :]).reshape(n, p.rows * p.rows)
            forms = [quads] + ([srcs] if noise.ir_drop else [])
            powers = [outer @ np.stack([q.ravel() for q in form], axis=1) for form in forms]
            p_cells = powers[0]
            p_src = powers[-1]
            full = np.zeros(p.lines_per_array)
            start = 0
            for i_m, m in enumerate(members):
                j = taken[m][0]
                step, plan = self.steps[j], self.plans[j]
                assert isinstance(step, MvmStep) and plan is not None
                ks = ks_list[i_m]
                block = conv[:, start : start + ks.size]
                start += ks.size
                if np.array_equal(plan.sample_cols[ks], np.arange(p.cols)):
                    outs[m] = block  # columns sampled in order: no reordering needed
                else:
                    out = np.full((n, p.cols), -1, dtype=np.int64)
                    out[:, plan.sample_cols[ks]] = block
                    outs[m] = out
                full[: p.rows] = volts[-1]
                self._log_array(
                    step.array,
                    self.offsets[j] + plan.ldac,
                    full.copy(),
                    p_cells[:, i_m],
                    p_src[:, i_m],
                )
                self._finish_step(j, codes, plan)
        return outs

    def _row_constants(self, a: int, op: Operator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per operator: TIA rows (cols, rows), cell-power and source-power forms
        restricted to the row lines, after a one-off check that reads are safe."""
        key = id(op)
        hit = self._consts.get(key)
        if hit is not None and hit[0] is op:
            return hit[1]
        p = self.board.profile
        self._check_safe(a, op, p.rows)
        rows = slice(0, p.rows)
        quad = ((op.cell_v.T * op.g) @ op.cell_v)[rows, rows]
        consts = (op.tia[p.rows :, rows], quad, op.src[rows, rows].T)
        self._consts[key] = (op, consts)
        return consts

    def _check_safe(self, a: int, op: Operator, n_lines: int) -> None:
        """Refuse inputs that could damage cells (the batch path never pulses)."""
        b, p = self.board, self.board.profile
        v_max = b.cells.v_floor  # inputs are checked to stay below it
        bound = np.abs(op.cell_v[:, :n_lines]).sum(axis=1).max() * v_max
        passive = p.cell == "0T1R"
        limit = b.physics.compliance_margin * b.device.compliance_current
        healthy = b.cells.stuck[a].ravel() != SHORTED
        if bound > b.cells.v_breakdown or (
            passive and bound * op.g[healthy].max(initial=0.0) > limit
        ):
            raise ValueError(f"array {a}: read inputs could damage cells; use the byte path")

    def _powers(
        self, a: int, op: Operator, volts: np.ndarray, n_lines: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cell and source power of each row of ``volts`` (first n_lines lines)."""
        self._check_safe(a, op, n_lines)
        quad = (op.cell_v.T * op.g) @ op.cell_v
        p_cells = ((volts @ quad) * volts).sum(axis=1)
        p_src = ((volts @ op.src.T) * volts).sum(axis=1)
        return p_cells, p_src

    def _epochs(self, cycles: np.ndarray) -> np.ndarray:
        b = self.board
        if b.noise.drift_nu <= 0:
            return np.zeros(cycles.shape, dtype=np.int64)
        seconds = cycles / b.clock.mcu_hz
        return np.floor_divide(seconds, b.physics.drift_quantum).astype(np.int64)

    def _log_array(
        self, a: int, offset: int, last_v: np.ndarray, p_cells: np.ndarray, p_src: np.ndarray
    ) -> None:
        """Record an LDAC edge of array ``a`` at ``offset`` cycles into every inference and
        the array power from it (ideal wiring dissipates nothing)."""
        b = self.board
        p_wire = np.maximum(0.0, p_src - p_cells) if b.noise.ir_drop else np.zeros(self.n)
        log = self._logs.setdefault(a, _ArrayLog([], [], [], last_v))
        log.offsets.append(offset)
        log.p_cells.append(p_cells)
        log.p_wire.append(p_wire)
        if offset >= max(log.offsets):
            log.last_v = last_v

    def _array_energy(self, a: int, log: _ArrayLog) -> tuple[float, float]:
        """Joules (cells, wiring) of array ``a`` over the batch: each power holds from its
        edge to the next edge of the same array (the first from the board's state)."""
        b, n, hz = self.board, self.n, self.board.clock.mcu_hz
        order = np.argsort(log.offsets, kind="stable")
        offs = np.asarray(log.offsets, dtype=np.int64)[order]
        hold = np.empty(offs.size)  # cycles each edge's power holds (but the very last)
        hold[:-1] = np.diff(offs)
        hold[-1] = self.period - offs[-1] + offs[0]
        out = []
        for before, powers in ((b._p_cells[a], log.p_cells), (b._p_wire[a], log.p_wire)):
            stacked = np.stack([powers[k] for k in order])  # (edges, n)
            joules = before * offs[0] + float(np.dot(stacked.sum(axis=1), hold))
            joules -= stacked[-1, n - 1] * offs[0]  # the last edge holds to the batch end
            out.append(joules / hz)
        return out[0], out[1]

    # -- commit ----------------------------------------------------------------------
    def finish(self) -> None:
        """Advance the board's clock, ledger, diagnostics and part state over the batch."""
        if self._finished:
            return
        while self._next < len(self.steps) and isinstance(self.steps[self._next], ChargeStep):
            self._next += 1
        if self._next != len(self.steps):
            raise RuntimeError(f"batch finished after {self._next} of {len(self.steps)} steps")
        self._finished = True
        b, p, n = self.board, self.board.profile, self.n
        hz = b.clock.mcu_hz
        span = n * self.period
        idle = n * sum(plan.idle_cycles for plan in self.plans if plan is not None)
        energy: dict[str, float] = {}
        powers = {
            c: b.ledger.power(c) for c in b.ledger.breakdown() if c not in ("array", "array_wiring")
        }
        for step, plan in zip(self.steps, self.plans, strict=True):
            if plan is not None:
                for comp, joules in plan.energy.items():
                    energy[comp] = energy.get(comp, 0.0) + n * joules
                for key, count in plan.diag.items():
                    b.diagnostics[key] += n * count
            else:
                assert isinstance(step, ChargeStep)
                cycles = n * b.cycle_costs[step.op] * step.count
                b.diagnostics["charge_cycles"] += cycles
                for comp, watts in powers.items():
                    energy[comp] = energy.get(comp, 0.0) + watts * cycles / hz
        b.diagnostics["tia_saturations"] += self._saturations
        e_cells = e_wire = 0.0
        for a in range(p.arrays):
            log = self._logs.get(a)
            if log is None:
                e_cells += b._p_cells[a] * span / hz
                e_wire += b._p_wire[a] * span / hz
                continue
            cells_j, wire_j = self._array_energy(a, log)
            e_cells += cells_j
            e_wire += wire_j
            last = int(np.argmax(log.offsets))
            b._p_cells[a], b._p_wire[a] = log.p_cells[last][-1], log.p_wire[last][-1]
            last_time = self.t0 + (n - 1) * self.period + log.offsets[last]
            op = b.operator_at(a, int(self._epochs(np.array([last_time]))[0]))
            b._vcell[a] = (op.cell_v @ log.last_v).reshape(p.rows, p.cols)
            b._t_start[a] = last_time
        energy["array"] = energy.get("array", 0.0) + e_cells
        energy["array_wiring"] = energy.get("array_wiring", 0.0) + e_wire
        b.clock.advance(span - idle)
        b.clock.advance(idle, idle=True)
        b.ledger.absorb(energy)
        b._publish_array_power()
        b.adc_samples += n * self.per_chip
        self._commit_dacs()
        for s, t in self._adc_last.items():
            b.adcs[s].last_sample_s = t / hz

    def _commit_dacs(self) -> None:
        """Leave the row DACs as the last inference left them (registers, settling)."""
        b, p, n = self.board, self.board.profile, self.n
        for a, codes in self._dac_codes.items():
            lines = np.array([p.row_line(a, r) for r in range(p.rows)])
            chips, channels = np.divmod(lines, 8)
            selects, positions = np.divmod(chips, p.dac_chain)
            before = np.array(
                [
                    b.dacs[s].output[q, c]
                    for s, q, c in zip(selects, positions, channels, strict=True)
                ]
            )
            history = np.vstack([before, codes])  # (n + 1, rows)
            changed = history[1:] != history[:-1]
            last = n - 1 - np.argmax(changed[::-1], axis=0)  # last inference that changed it
            t_last = self.t0 + last * self.period + self._dac_offsets[a]
            for r in range(p.rows):
                chain = b.dacs[int(selects[r])]
                chain.input[positions[r], channels[r]] = codes[-1, r]
                chain.output[positions[r], channels[r]] = codes[-1, r]
                line = int(lines[r])
                b._dac_v[line] = float(line_volts(int(codes[-1, r])))
                if changed[:, r].any():
                    b._dac_prev_v[line] = float(line_volts(int(history[last[r], r])))
                    b._dac_t[line] = int(t_last[r])


def batch_mvm(board: BoardModel, array: int, codes: np.ndarray, exact: bool = False) -> np.ndarray:
    """N reference MVMs on one array: (N, rows) DAC codes -> (N, cols) ADC codes."""
    codes = np.asarray(codes)
    session = BatchSession(board, [MvmStep(array)], codes.shape[0], exact=exact)
    out = session.mvm(codes)
    session.finish()
    return out


def run_bytes(board: BoardModel, steps: list[Step], inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The byte-level counterpart of a batch: ``inputs[m]`` (N, rows) for the m-th MVM step.

    Runs inference by inference, step by step, through ``MvmDriver``; returns the
    (N, cols) ADC codes of each MVM step.
    """
    driver = MvmDriver(board)
    mvm_steps = [s for s in steps if isinstance(s, MvmStep)]
    if len(inputs) != len(mvm_steps):
        raise ValueError(f"{len(mvm_steps)} MVM steps but {len(inputs)} input arrays")
    n = inputs[0].shape[0] if inputs else 0
    outs = [np.zeros((n, board.profile.cols), dtype=np.int64) for _ in mvm_steps]
    for i in range(n):
        m = 0
        for step in steps:
            if isinstance(step, MvmStep):
                outs[m][i] = driver.mvm(step.array, inputs[m][i])
                m += 1
            else:
                board.charge(step.op, step.count)
    return outs
