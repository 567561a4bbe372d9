"""Vectorised evaluation of N MVMs / inferences, identical to the byte-level path.

The byte-level path is the board model driven frame by frame (``emulator.mvm_driver``
holds the reference sequence, exactly the documented byte formats). The batch path
computes the same N inferences at once with numpy and leaves the board in the same state:
the same ADC codes, the same cycle count, the same energy per ledger component (to float
rounding) and the same diagnostics. Three properties of the board model make that possible:

* **timing is data-independent**: every frame has a fixed length and every MicroPython
  call a fixed cost, so one *probe* run of the sequence on a scratch board (noise off)
  gives each MVM's cycles, its per-component non-array energy, the cycle offset of its
  LDAC edge and of every ADC sample (``emulator.mvm_schedule.plan_mvm``);
* **the array is linear** between LDAC edges: the column currents and the array power of
  inference i are matrix products of its line voltages with the cached operator;
* **read noise is counter-based**: the noise of ADC chip k's n-th sample is a pure
  function of (seed, k, n) (``board.sample_normals``), and the sample counts per chip are
  data-independent, so the batch path computes the noise of exactly the conversions it
  needs.

A schedule (``emulator.mvm_schedule``) is a list of steps per inference — ``MvmStep``
(one reference MVM on an array) and ``ChargeStep`` (firmware computation) — run by
:class:`BatchSession`: declare the schedule, call :meth:`BatchSession.mvm` for each MVM
step in order with the ``(N, rows)`` DAC codes (they may depend on earlier steps' outputs:
a layer's input is the previous layer's output), or :meth:`BatchSession.mvms` for several
steps whose inputs are known together (steps passed the same input array are evaluated as
one matrix product), then :meth:`BatchSession.finish` commits time, energy and state to
the board (the accounting lives in ``emulator.batch_ledger``).
``emulator.mvm_schedule.run_bytes`` runs the same schedule frame by frame.

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

import numpy as np

from .batch_ledger import BatchLedger, drift_epochs
from .board_model import (
    NORMAL_MAX,
    BoardModel,
    chip_keys,
    convert,
    hashed_normals,
    sample_normals,
    settle_alpha,
)
from .cells import SHORTED
from .crossbar import DRIVEN, TIA, Operator
from .mvm_schedule import ChargeStep, MvmPlan, MvmStep, Step, plan_mvm, plan_mvms
from .parts import DAC_MID, TIA_SAT_V, line_volts

BLOCK = 65536  # samples per block of elementwise work in the grouped batch path


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
        self.ledger = BatchLedger(
            board, self.steps, self.plans, self.offsets, self.n, t, per_chip, self.t0
        )
        self._next = 0
        self._finished = False
        self._ready: set[int] = set()  # arrays checked ready (the board is frozen meanwhile)
        self._reach = [chain._reach() for chain in board.dacs]  # chips each DAC chain reaches
        self._consts: dict[int, tuple[Operator, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._scratch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # _buffers

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
        samp_epochs = drift_epochs(b, base[:, None] + plan.sample_offsets[ks][None, :])
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
        self.ledger.saturations += saturated
        out[:, plan.sample_cols[ks]] = conv
        t_ldac = base + plan.ldac
        epochs = drift_epochs(b, t_ldac)
        p_cells, p_src = np.zeros(n), np.zeros(n)
        for e in np.unique(epochs):
            rows_i = np.flatnonzero(epochs == e)
            pc, ps = self._powers(a, b.operator_at(a, int(e)), volts[rows_i], p.lines_per_array)
            p_cells[rows_i], p_src[rows_i] = pc, ps
        self.ledger.log_array(
            a,
            self.offsets[j] + plan.ldac,
            volts[-1],
            (float(p_cells.sum()), float(p_cells[-1])),
            (float(p_src.sum()), float(p_src[-1])),
        )
        self.ledger.record_step(j, codes, plan)
        return out

    def _evaluate_grouped(
        self, taken: list[tuple[int, np.ndarray]], originals: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Steps without drift, matrix products over the row lines only (columns sit at
        virtual ground), one product per group of steps sharing an input array."""
        b, p, n = self.board, self.board.profile, self.n
        outs: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(taken)
        groups: dict[int, list[int]] = {}
        for m, original in enumerate(originals):
            groups.setdefault(id(original), []).append(m)
        for members in groups.values():
            codes = taken[members[0]][1]
            volts = line_volts(codes)  # (n, rows)
            tias, quads, srcs, lows, highs, ks_list, noise_of = [], [], [], [], [], [], []
            sampled = []  # each step's sample columns
            for m in members:
                j = taken[m][0]
                step, plan = self.steps[j], self.plans[j]
                assert isinstance(step, MvmStep) and plan is not None
                op = b.operator_at(step.array, 0)
                ks = np.flatnonzero(plan.sample_cols >= 0)
                ks = ks[np.argsort(plan.sample_cols[ks], kind="stable")]  # in column order
                consts = self._row_constants(step.array, op)
                tias.append(consts[0][plan.sample_cols[ks]])
                quads.append(consts[1])
                srcs.append(consts[2])
                low, high = self._ranges(plan, ks)
                lows.append(low)
                highs.append(high)
                ks_list.append(ks)
                sampled.append(plan.sample_cols)
                noise_of.append((j, plan, ks))
            # Tiles that sample every column once get an (n, cols) array each.
            regular = all(
                np.array_equal(cols[ks], np.arange(p.cols))
                for cols, ks in zip(sampled, ks_list, strict=True)
            )
            conv = self._convert_group(
                volts,
                np.concatenate(tias),
                np.concatenate(lows),
                np.concatenate(highs),
                noise_of,
                len(members) if regular else 1,
            )
            # Quadratic forms v·Q·v summed over the inferences are Σ_ij Q_ij (VᵀV)_ij: one
            # small Gram matrix for the group instead of a form per inference (the ledger
            # needs only the sum and the last inference's power, batch_ledger._ArrayLog).
            gram, last = volts.T @ volts, volts[-1]
            full = np.zeros(p.lines_per_array)
            start = 0
            for i_m, m in enumerate(members):
                j = taken[m][0]
                step, plan = self.steps[j], self.plans[j]
                assert isinstance(step, MvmStep) and plan is not None
                ks = ks_list[i_m]
                if regular:
                    outs[m] = conv[i_m]
                else:
                    out = np.full((n, p.cols), -1, dtype=np.int64)
                    out[:, plan.sample_cols[ks]] = conv[0][:, start : start + ks.size]
                    outs[m] = out
                start += ks.size
                full[: p.rows] = volts[-1]
                cells = _summed_power(quads[i_m], gram, last)
                self.ledger.log_array(
                    step.array,
                    self.offsets[j] + plan.ldac,
                    full.copy(),
                    cells,
                    _summed_power(srcs[i_m], gram, last) if b.noise.ir_drop else cells,
                )
                self.ledger.record_step(j, codes, plan)
        return outs

    def _convert_group(
        self,
        volts: np.ndarray,
        tia: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
        noise_of: list[tuple[int, MvmPlan, np.ndarray]],
        parts: int,
    ) -> np.ndarray:
        """ADC codes of K samples whose TIA rows over the row lines are ``tia`` (K, rows),
        for line voltages ``volts`` (n, rows); ``noise_of``: their (step, plan, samples),
        in the same order. Returned as (parts, n, K / parts): one contiguous array for
        each run of K / parts samples.

        Worked in blocks of rows small enough for the cache, each through the same
        buffers (fresh arrays of this size cost page faults, more than the arithmetic).
        """
        b, n, k = self.board, self.n, tia.shape[0]
        rf, noise = b.tia_rf, b.noise
        shape = (parts, k // parts)
        tia_t, tia_sq_t = tia.T.copy(), (tia * tia).T.copy()
        squares = volts * volts if noise.read_sigma > 0 else None
        rows = max(1, min(n, BLOCK // max(k, 1)))
        # Two 8-byte buffers and a 4-byte one, each holding in turn what the next stage
        # needs: the hash and its scratch, then the currents and Σ contribution².
        grid = (rows, k)
        wide, wide2, narrow = self._buffers(rows * k)
        h, tmp, u1 = wide.reshape(grid), wide2.reshape(grid), narrow.reshape(grid)
        u2 = wide2.view(np.float32)[: rows * k].reshape(grid)
        current, sumsq = tmp.view(np.float64), h.view(np.float64)
        conv = np.empty((parts, n, k // parts), dtype=np.int64)
        # The same ADC range on every column (the usual case): scalars, which numpy
        # broadcasts faster than a row of K.
        lo: float | np.ndarray = low.reshape(shape)
        hi: float | np.ndarray = high.reshape(shape)
        if (low == low[0]).all() and (high == high[0]).all():
            lo, hi = float(low[0]), float(high[0])
        inside = self._inside(volts, tia, low, high)
        if noise.read_noise_on:
            chips, first, stride = self._counters(noise_of)
            # Sample counters of the block's rows (first[c] + i · stride[c]), advanced a
            # block at a time, and the chips' keys: whole blocks, so the hash's first
            # steps are plain elementwise operations.
            counts = (np.arange(rows)[:, None] * stride + first).astype(np.uint64)
            advance = np.broadcast_to((rows * stride).astype(np.uint64), grid).copy()
            keys = np.broadcast_to(chip_keys(b.noise_key, chips), grid).copy()
        for r0 in range(0, n, rows):
            r = min(n, r0 + rows) - r0
            eps = None
            if noise.read_noise_on:
                np.bitwise_xor(counts[:r], keys[:r], out=h[:r])
                counts += advance
                eps = hashed_normals(h[:r], out=u1[:r], work=(tmp[:r], u2[:r]))
                eps = eps.reshape(r, *shape)
            np.matmul(volts[r0 : r0 + r], tia_t, out=current[:r])
            if squares is not None:
                np.matmul(squares[r0 : r0 + r], tia_sq_t, out=sumsq[:r])
            else:
                sumsq[:r] = 0.0
            _, saturated = convert(
                current[:r].reshape(r, *shape),
                sumsq[:r].reshape(r, *shape),
                eps,
                rf,
                lo,
                hi,
                noise,
                out=conv[:, r0 : r0 + r].transpose(1, 0, 2),
                owned=True,
                inside=inside,
            )
            self.ledger.saturations += saturated
        return conv

    def _inside(
        self,
        volts: np.ndarray,
        tia: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
    ) -> bool:
        """Whether every conversion of a group stays within the TIA's rails and the ADC's
        range, by a bound from the largest line voltage: then no block needs the
        saturation count or the clamp. The margin covers the rounding of the sums."""
        b, noise = self.board, self.board.noise
        peak = max(float(volts.max()), -float(volts.min()))  # volts on any row line
        bound = peak * np.abs(tia).sum(axis=1)  # (K,) amperes
        lsb = (high - low) / 65536.0
        if noise.read_noise_on:
            var = (
                noise.read_sigma**2 * (peak * peak * (tia * tia).sum(axis=1))
                + noise.tia_noise**2
                + (noise.adc_noise_lsb * lsb / b.tia_rf) ** 2
            )
            bound = bound + NORMAL_MAX * np.sqrt(var)
        bound = (b.tia_rf * (1 + 1e-6)) * bound  # volts
        ok = (
            (bound < TIA_SAT_V)
            & (lsb > 0)
            & ((bound - low) / lsb + 0.5 < 65536.0)
            & ((-bound - low) / lsb + 0.5 >= 0)
        )
        return bool(np.all(ok))

    def _buffers(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat scratch arrays of at least ``size`` elements (two uint64, one float32),
        kept for the session."""
        if self._scratch is None or self._scratch[0].size < size:
            u8, f4 = np.uint64, np.float32
            self._scratch = (np.empty(size, u8), np.empty(size, u8), np.empty(size, f4))
        return self._scratch[0][:size], self._scratch[1][:size], self._scratch[2][:size]

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
        self.ledger.commit()


def _summed_power(q: np.ndarray, gram: np.ndarray, last: np.ndarray) -> tuple[float, float]:
    """A quadratic-form power v·Q·v summed over a batch (from the batch's Gram matrix VᵀV)
    and for its last inference ``last``."""
    return float(np.sum(q * gram)), float(last @ q @ last)


def batch_mvm(board: BoardModel, array: int, codes: np.ndarray, exact: bool = False) -> np.ndarray:
    """N reference MVMs on one array: (N, rows) DAC codes -> (N, cols) ADC codes."""
    codes = np.asarray(codes)
    session = BatchSession(board, [MvmStep(array)], codes.shape[0], exact=exact)
    out = session.mvm(codes)
    session.finish()
    return out
