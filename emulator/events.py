"""What the board's lines and cells saw: a per-event record (off unless asked for).

``BoardModel(..., record_events=True)`` (or an int: a ring buffer of that many events)
keeps one :class:`LineEvent` per array event — every time the board energises or releases
lines: a DAC load while a line's DAC switch is closed, a switch frame that changes a line's
state. Each event holds what the array's lines are driven to from then until the array's
next event (``end`` is ``None`` while it is the open one), so a line's voltage and how long
it was held are exact in virtual time. Per event the cost is O(lines) stored plus one
elementwise pass over the cells the model already solved::

    rec = board.events
    rec.events                  # the buffered LineEvents, oldest first
    rec.summary(read_limit=0.3) # EventSummary: max |line V|, max |V across a cell|,
                                #   longest hold above read_limit, max cell current,
                                #   each with the event it happened in
    rec.mark() / rec.since(m)   # the events recorded after a mark (one command's worth)

Running maxima (``rec.max_line_v`` …) cover every event since the record started, even
those a bounded buffer already dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LineEvent:
    """One interval of an array's line state, from ``start`` to ``end`` (cycles)."""

    index: int  # sequence number since the record started
    array: int
    cause: str  # "dac" (a load on a switched-in line), "switch" (a frame), "set" (test)
    start: int  # clock cycles
    hz: int  # cycles per second
    volts: np.ndarray  # (lines,) source voltage of each line (0: ground, TIA, floating)
    modes: np.ndarray  # (lines,) FLOAT / DRIVEN / TIA
    via_dac: np.ndarray  # (lines,) bool: the line's DAC switch is closed
    line_current: np.ndarray  # (lines,) A: memristor currents summed per line
    v_cell: float  # max |V across a conducting cell| (row line − column line, nominal)
    v_cell_at: tuple[int, int]  # (row, col) of that cell
    v_mem: float  # max |memristor voltage| as the network solved it (IR drop, sneaks)
    i_cell: float  # max |cell current| (A) = G × memristor voltage
    i_cell_at: tuple[int, int]
    i_at_v_cell: float  # |current| through the cell of v_cell (the selected cell)
    damaged: int = 0  # cells that broke down at this event
    end: int | None = None  # cycles; None while this is the array's open interval

    @property
    def max_line_v(self) -> float:
        return float(np.abs(self.volts).max()) if self.volts.size else 0.0

    def duration(self, now: int | None = None) -> float:
        """Seconds the state was held (up to ``now`` cycles if still open)."""
        end = self.end if self.end is not None else now
        return 0.0 if end is None else (end - self.start) / self.hz

    def energised(self) -> bool:
        """Some line is switched to a DAC at a nonzero voltage."""
        return bool(np.any(self.volts != 0.0))


@dataclass
class Extreme:
    value: float = 0.0
    event: LineEvent | None = None

    def offer(self, value: float, event: LineEvent) -> None:
        if value > self.value or self.event is None:
            self.value, self.event = value, event


@dataclass
class EventSummary:
    max_line_v: Extreme = field(default_factory=Extreme)
    max_cell_v: Extreme = field(default_factory=Extreme)
    max_mem_v: Extreme = field(default_factory=Extreme)
    max_cell_i: Extreme = field(default_factory=Extreme)
    longest_hold_s: Extreme = field(default_factory=Extreme)  # event: where the hold began
    damage_events: int = 0

    def describe(self) -> str:
        def at(e: Extreme) -> str:
            ev = e.event
            return (
                "-" if ev is None else f"event {ev.index} ({ev.cause}, t={ev.start / ev.hz:.6f} s)"
            )

        return (
            f"max |line V| {self.max_line_v.value:.4f} V at {at(self.max_line_v)}; "
            f"max |cell V| {self.max_cell_v.value:.4f} V at {at(self.max_cell_v)}; "
            f"max |memristor V| {self.max_mem_v.value:.4f} V; "
            f"max |cell I| {self.max_cell_i.value:.4g} A at {at(self.max_cell_i)}; "
            f"longest hold above the read limit {self.longest_hold_s.value * 1e6:.1f} us "
            f"from {at(self.longest_hold_s)}; damage {self.damage_events}"
        )


class EventRecord:
    """The buffered events of one board (see the module docstring)."""

    def __init__(self, maxlen: int | None = None) -> None:
        self.events: deque[LineEvent] = deque(maxlen=maxlen)
        self.count = 0
        self._open: dict[int, LineEvent] = {}
        self.max_line_v = Extreme()
        self.max_cell_v = Extreme()
        self.max_cell_i = Extreme()

    def clear(self) -> None:
        self.events.clear()

    def mark(self) -> int:
        return self.count

    def since(self, mark: int) -> list[LineEvent]:
        return [e for e in self.events if e.index >= mark]

    def open_event(self, array: int) -> LineEvent | None:
        return self._open.get(array)

    def add(
        self,
        *,
        array: int,
        cause: str,
        now: int,
        hz: int,
        rows: int,
        volts: np.ndarray,
        modes: np.ndarray,
        via_dac: np.ndarray,
        vmem: np.ndarray,
        g: np.ndarray,
        damaged: int,
    ) -> LineEvent:
        """Close the array's open interval at ``now`` and open a new one."""
        prev = self._open.get(array)
        if prev is not None:
            prev.end = now
        cols = volts.size - rows
        i = g * vmem  # (rows, cols)
        line_i = np.concatenate([i.sum(axis=1), -i.sum(axis=0)])
        # Nominal cell voltage from the lines: only cells whose lines are both held
        # (driven or TIA virtual ground) see a defined row − column voltage; 1T1R cells
        # of a floating row are off, passive ones float (their memristor voltage is v_mem).
        held = modes != 0
        v_cell, at = 0.0, (0, 0)
        if held[:rows].any() and held[rows:].any():
            vr = np.where(held[:rows], volts[:rows], np.nan)
            vc = np.where(held[rows:], volts[rows:], np.nan)
            diff = np.abs(vr[:, None] - vc[None, :])
            k = int(np.nanargmax(diff))
            v_cell, at = float(diff.flat[k]), divmod(k, cols)
        ai = np.abs(i)
        ki = int(ai.argmax()) if ai.size else 0
        ev = LineEvent(
            index=self.count,
            array=array,
            cause=cause,
            start=now,
            hz=hz,
            volts=volts.copy(),
            modes=modes.copy(),
            via_dac=via_dac.copy(),
            line_current=line_i,
            v_cell=v_cell,
            v_cell_at=(int(at[0]), int(at[1])),
            v_mem=float(np.abs(vmem).max()) if vmem.size else 0.0,
            i_cell=float(ai.flat[ki]) if ai.size else 0.0,
            i_cell_at=(int(ki // cols), int(ki % cols)),
            i_at_v_cell=float(ai[at]) if ai.size else 0.0,
            damaged=damaged,
        )
        self.count += 1
        self._open[array] = ev
        self.events.append(ev)
        self.max_line_v.offer(ev.max_line_v, ev)
        self.max_cell_v.offer(ev.v_cell, ev)
        self.max_cell_i.offer(ev.i_cell, ev)
        return ev

    def summary(
        self, read_limit: float, events: Iterable[LineEvent] | None = None, now: int | None = None
    ) -> EventSummary:
        """Extremes of ``events`` (default: the buffer); a hold is a run of one array's
        consecutive events with some line above ``read_limit`` (``now`` closes an open one)."""
        out = EventSummary()
        evs = list(self.events if events is None else events)
        for ev in evs:
            out.max_line_v.offer(ev.max_line_v, ev)
            out.max_cell_v.offer(ev.v_cell, ev)
            out.max_mem_v.offer(ev.v_mem, ev)
            out.max_cell_i.offer(ev.i_cell, ev)
            out.damage_events += ev.damaged
        for first, length in holds(evs, lambda e: e.max_line_v > read_limit, now):
            out.longest_hold_s.offer(length, first)
        return out


def holds(
    events: Iterable[LineEvent], above: Callable[[LineEvent], bool], now: int | None = None
) -> Iterator[tuple[LineEvent, float]]:
    """(first event, seconds) of each run of one array's consecutive events for which
    ``above(event)`` holds; the run ends at the array's first event that does not."""
    runs: dict[int, LineEvent] = {}
    last: dict[int, LineEvent] = {}
    for ev in events:
        a = ev.array
        if above(ev):
            runs.setdefault(a, ev)
        elif a in runs:
            first = runs.pop(a)
            yield first, (ev.start - first.start) / ev.hz
        last[a] = ev
    for a, first in runs.items():
        tail = last[a]
        end = tail.end if tail.end is not None else now
        if end is not None:
            yield first, (end - first.start) / first.hz
