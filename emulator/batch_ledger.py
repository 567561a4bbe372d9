"""The time and energy accounting of a batch, apart from its numeric evaluation.

``BatchSession`` (``emulator.batch``) evaluates N inferences step by step over all N at
once, not in time order. :class:`BatchLedger` keeps what those steps leave behind (the
array power from each LDAC edge, the DAC codes of each array's last step, the ADC sample
times, the saturation count) and at the end commits it to the board as if the N
inferences had run one after another: clock, energy ledger, diagnostics, array and DAC/ADC
state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .board_model import BoardModel
from .mvm_schedule import ChargeStep, MvmPlan, MvmStep, Step
from .parts import line_volts


@dataclass
class _ArrayLog:
    """LDAC edges of one array in each inference: cycle offsets in the inference and the
    array power from each edge as (sum over the batch's inferences, the last inference's):
    all the energy integral needs, since every inference holds each edge equally long."""

    offsets: list[int]
    p_cells: list[tuple[float, float]]
    p_wire: list[tuple[float, float]]
    last_v: np.ndarray  # line voltages after the latest edge (lines_per_array,)


def drift_epochs(board: BoardModel, cycles: np.ndarray) -> np.ndarray:
    """The drift epoch (one operator each) of the board at each of ``cycles``."""
    b = board
    if b.noise.drift_nu <= 0:
        return np.zeros(cycles.shape, dtype=np.int64)
    seconds = cycles / b.clock.mcu_hz
    return np.floor_divide(seconds, b.physics.drift_quantum).astype(np.int64)


class BatchLedger:
    """What N inferences of a schedule leave on the board: step offsets ``offsets`` and
    ``period`` cycles per inference, the first starting at cycle ``t0``."""

    def __init__(
        self,
        board: BoardModel,
        steps: list[Step],
        plans: list[MvmPlan | None],
        offsets: list[int],
        n: int,
        period: int,
        per_chip: np.ndarray,
        t0: int,
    ) -> None:
        self.board, self.steps, self.plans, self.offsets = board, steps, plans, offsets
        self.n, self.period, self.per_chip, self.t0 = n, period, per_chip, t0
        self.saturations = 0  # TIA saturations over the batch
        self._logs: dict[int, _ArrayLog] = {}
        self._dac_codes: dict[int, np.ndarray] = {}  # array -> (n, rows) codes, last step
        self._dac_offsets: dict[int, int] = {}  # array -> LDAC offset of its last step
        self._adc_last: dict[int, int] = {}

    def log_array(
        self,
        a: int,
        offset: int,
        last_v: np.ndarray,
        p_cells: tuple[float, float],
        p_src: tuple[float, float],
    ) -> None:
        """Record an LDAC edge of array ``a`` at ``offset`` cycles into every inference and
        the array power from it: cell and source power, each as (sum over the batch's
        inferences, the last inference's). The wiring dissipates the difference (nothing
        with ideal wiring)."""
        b = self.board
        p_wire = (0.0, 0.0)
        if b.noise.ir_drop:
            p_wire = (max(0.0, p_src[0] - p_cells[0]), max(0.0, p_src[1] - p_cells[1]))
        log = self._logs.setdefault(a, _ArrayLog([], [], [], last_v))
        log.offsets.append(offset)
        log.p_cells.append(p_cells)
        log.p_wire.append(p_wire)
        if offset >= max(log.offsets):
            log.last_v = last_v

    def record_step(self, j: int, codes: np.ndarray, plan: MvmPlan) -> None:
        """Step j ran with DAC ``codes`` (n, rows): the state it leaves for the commit."""
        step = self.steps[j]
        assert isinstance(step, MvmStep)
        last_start = self.t0 + (self.n - 1) * self.period + self.offsets[j]
        self._dac_codes[step.array] = codes
        self._dac_offsets[step.array] = self.offsets[j] + plan.ldac
        for s, off in plan.last_sample.items():
            self._adc_last[s] = last_start + off

    def _array_energy(self, a: int, log: _ArrayLog) -> tuple[float, float]:
        """Joules (cells, wiring) of array ``a`` over the batch: each power holds from its
        edge to the next edge of the same array (the first from the board's state)."""
        b, hz = self.board, self.board.clock.mcu_hz
        order = np.argsort(log.offsets, kind="stable")
        offs = np.asarray(log.offsets, dtype=np.int64)[order]
        hold = np.empty(offs.size)  # cycles each edge's power holds (but the very last)
        hold[:-1] = np.diff(offs)
        hold[-1] = self.period - offs[-1] + offs[0]
        out = []
        for before, powers in ((b._p_cells[a], log.p_cells), (b._p_wire[a], log.p_wire)):
            sums = np.array([powers[k][0] for k in order])  # (edges,) over the inferences
            joules = before * offs[0] + float(np.dot(sums, hold))
            joules -= powers[order[-1]][1] * offs[0]  # the last edge holds to the batch end
            out.append(joules / hz)
        return out[0], out[1]

    # -- commit ----------------------------------------------------------------------
    def commit(self) -> None:
        """Advance the board's clock, ledger, diagnostics and part state over the batch."""
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
        b.diagnostics["tia_saturations"] += self.saturations
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
            b._p_cells[a], b._p_wire[a] = log.p_cells[last][1], log.p_wire[last][1]
            last_time = self.t0 + (n - 1) * self.period + log.offsets[last]
            op = b.operator_at(a, int(drift_epochs(b, np.array([last_time]))[0]))
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
        b, p = self.board, self.board.profile
        changes: dict[tuple[int, bytes], np.ndarray] = {}  # arrays fed the same codes
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
            key = (id(codes), before.tobytes())
            if key not in changes:
                changes[key] = _last_changes(before, codes)
            last = changes[key]  # the last inference that changed each row
            t_last = self.t0 + last * self.period + self._dac_offsets[a]
            for r in range(p.rows):
                chain = b.dacs[int(selects[r])]
                chain.input[positions[r], channels[r]] = codes[-1, r]
                chain.output[positions[r], channels[r]] = codes[-1, r]
                line = int(lines[r])
                b._dac_v[line] = float(line_volts(int(codes[-1, r])))
                if last[r] >= 0:
                    prev = codes[last[r] - 1, r] if last[r] > 0 else before[r]
                    b._dac_prev_v[line] = float(line_volts(int(prev)))
                    b._dac_t[line] = int(t_last[r])


def _last_changes(before: np.ndarray, codes: np.ndarray, tail: int = 64) -> np.ndarray:
    """For each column of ``codes`` (n, rows), the last row whose value differs from the
    row before it (``before`` before row 0); -1 where none does. The last ``tail`` rows
    settle most columns (inputs change from one inference to the next); only the others
    are scanned in full."""
    n = codes.shape[0]
    last = np.full(codes.shape[1], -1, dtype=np.int64)
    todo = np.arange(codes.shape[1])
    for start in (max(0, n - tail), 0):
        if todo.size == 0:
            break
        window = codes[start:, todo]
        prev = np.vstack([before[todo] if start == 0 else codes[start - 1, todo], window[:-1]])
        changed = window != prev
        hit = changed.any(axis=0)
        last[todo[hit]] = start + window.shape[0] - 1 - np.argmax(changed[::-1, hit], axis=0)
        todo = todo[~hit]
    return last
