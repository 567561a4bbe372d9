"""An MVM schedule and its data-independent facts, probed once per array.

A schedule is a list of steps per inference: :class:`MvmStep` (one reference MVM on an
array) and :class:`ChargeStep` (firmware computation). Timing on the board model does not
depend on data, so one probe run of the reference MVM on a scratch board (noise off) gives
its cycles, its non-array energy per component, its diagnostics and the cycle offsets of
its LDAC edge and of every ADC sample (:func:`plan_mvm`). The batch path
(``emulator.batch``) evaluates a schedule from these plans; :func:`run_bytes` runs the same
schedule frame by frame through ``MvmDriver``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .board_model import BoardModel
from .board_profile import NoiseConfig
from .mvm_driver import MvmDriver
from .parts import DAC_MID

PLAN_DIAG_EXCLUDE = ("operator_solves", "tia_saturations", "cells_programmed", "damage_events")


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
