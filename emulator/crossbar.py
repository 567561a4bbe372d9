"""Electrics of one crossbar array: a linear resistive network solved exactly.

Every line (row or column) is in one of three states set by its switches: **driven** (its
DAC, or ground, through the switch), **TIA** (a column held at virtual ground by its
transimpedance amplifier, whose current is measured) or **floating** (all switches open).
Cells are conductances between their row and column. With line resistance on, each line
is a ladder of ``r_wire`` segments (rows fed from column 0's end, columns from the last
row's end) through the switch's ``r_switch``; 1T1R cells add ``r_access`` in series and
conduct only while their row is driven (the row's switch gates the access transistors).
Passive (0T1R) arrays keep every cell in circuit, so floating lines carry sneak currents
and half-selected cells see partial voltages. Every node also leaks ``g_leak`` to ground,
so isolated floating nets have a defined (zero) potential.

For fixed conductances and line states the network is linear in the applied line
voltages ``v`` (one per line, 0 for grounded and TIA lines). :meth:`ArrayNetwork.operator`
solves it for every line — dense for small networks, sparse LU for large — and returns
an :class:`Operator` of three matrices, cached per (conductance version, drift epoch, line
states); every later read is then a mat-vec:

* ``cell_v @ v``: the voltage across each memristor (rows·cols,);
* ``tia @ v``: the current flowing into each TIA line (0 on other lines);
* ``src @ v``: the current each driven line's source delivers (power ``v · src @ v``).

The byte-level board does not need all of that: after every write pulse the conductances
change, and the next event or ADC sample meets a new state. :meth:`ArrayNetwork.state`
gives what it applies its voltages to. A large network (sparse LU) becomes a
:class:`SparseState`: factorised once, then an event (cell voltages and powers) is one
solve for the applied ``v``, and an ADC sample needs the unit responses of the lines
actually driven (one solve each, kept). The full operator of the same state is
assembled from those same unit responses, so the batch path (``emulator.batch``, which
uses :class:`Operator`) and the byte-level samples read identical numbers. Small
networks keep the full operator (:class:`FullState`): solving them whole is cheap.
Both paths agree to rounding (cell voltages ~1e-15 relative; TIA and source currents,
differences of nearly equal potentials across a few ohms, ~1e-11).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

FLOAT, DRIVEN, TIA = 0, 1, 2
DENSE_LIMIT = 600  # unknown nodes up to which a dense solve beats sparse LU


@dataclass(frozen=True)
class Operator:
    """Linear maps from the line voltage vector (lines,) of one array state."""

    cell_v: np.ndarray  # (rows·cols, lines): memristor voltage (row side minus column side)
    g: np.ndarray  # (rows·cols,): memristor conductances in circuit (0 if gated off)
    tia: np.ndarray  # (lines, lines): current into each TIA line
    src: np.ndarray  # (lines, lines): current delivered by each line's source

    def cell_power(self, v: np.ndarray) -> float:
        """Σ G·V² over the memristors: the array's dissipation for line voltages v."""
        vc = self.cell_v @ v
        return float(np.dot(self.g, vc * vc))

    def source_power(self, v: np.ndarray) -> float:
        return float(np.dot(v, self.src @ v))


class NetworkState(Protocol):
    """One array state (conductances and line modes) ready to be applied to voltages."""

    def apply(self, v: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(memristor voltages (rows·cols,), cell power, source power) for line voltages v."""
        ...

    def tia_row(self, line: int, v: np.ndarray) -> np.ndarray:
        """Row ``line`` of the TIA map (lines,), exact wherever ``v`` is nonzero."""
        ...


class FullState:
    """A state served by its full :class:`Operator` (small networks, or ``fast`` off)."""

    def __init__(self, op: Operator) -> None:
        self.op = op

    def apply(self, v: np.ndarray) -> tuple[np.ndarray, float, float]:
        op = self.op
        return op.cell_v @ v, op.cell_power(v), op.source_power(v)

    def tia_row(self, line: int, v: np.ndarray) -> np.ndarray:
        row: np.ndarray = self.op.tia[line]
        return row


@dataclass(frozen=True)
class _System:
    """The nodal equations of one state: Laplacian, known (sourced) and unknown nodes."""

    lap: scipy.sparse.csr_matrix  # (n_all, n_all) conductance Laplacian, no leakage
    lap_uu: scipy.sparse.csr_matrix  # unknown × unknown, leakage on the diagonal
    lap_uk: scipy.sparse.csr_matrix  # unknown × known
    known: np.ndarray  # node index of each sourced line's known potential
    known_lines: np.ndarray  # the sourced lines (same order)
    unknown: np.ndarray  # node indices solved for
    row_node: np.ndarray  # (rows, cols): row-side node of each cell
    col_node: np.ndarray  # (rows, cols): column-side node of each cell
    g_mem: np.ndarray  # (rows, cols): memristor conductances in circuit
    g_cell: np.ndarray  # (rows, cols): cell conductances (with the access transistor)
    n_all: int
    tia_lines: np.ndarray

    @property
    def share(self) -> np.ndarray:
        """Share of each cell's voltage across its memristor (rows·cols,)."""
        g_cell, g_mem = self.g_cell, self.g_mem
        return np.divide(g_cell, g_mem, out=np.zeros_like(g_cell), where=g_mem > 0).ravel()


class SparseState:
    """A large network state: one sparse LU, then single right-hand-side solves.

    :meth:`apply` solves once for the applied voltages. :meth:`tia_row` and
    :meth:`operator` use the state's unit responses, one line at a time (each a
    single-RHS solve, kept once computed), so an ADC sample and the full operator's
    ``tia`` read the very same numbers: the byte-level and batch paths agree bit for bit.
    """

    def __init__(self, net: ArrayNetwork, system: _System) -> None:
        self.net = net
        self.sys = system
        # Minimum-degree ordering of A + Aᵀ suits these symmetric networks.
        self.lu = scipy.sparse.linalg.splu(system.lap_uu.tocsc(), permc_spec="MMD_AT_PLUS_A")
        self.lap_known = system.lap[system.known]  # rows of the known nodes (csr)
        L = net.lines
        self._index = np.full(L, -1)  # line -> position among the known lines
        self._index[system.known_lines] = np.arange(system.known_lines.size)
        self._is_tia = np.zeros(L, dtype=bool)
        self._is_tia[system.tia_lines] = True
        self._lap_uk = system.lap_uk.tocsc()  # columns: one per known line
        self._src = np.zeros((L, L))  # column j: current each line's source delivers, v = e_j
        self._have = np.zeros(L, dtype=bool)  # columns of _src computed (or zero)
        self._have[self._index < 0] = True  # floating lines: no response
        self._nodes: dict[int, np.ndarray] = {}  # line -> node potentials for v = e_line
        self._row_node = system.row_node.ravel()
        self._col_node = system.col_node.ravel()
        self._share = system.share

    def _solve(self, rhs: np.ndarray) -> np.ndarray:
        self.net.rhs_solves += 1
        x: np.ndarray = self.lu.solve(rhs)
        return x

    def _unit(self, line: int) -> None:
        """Node potentials and source currents for 1 V on ``line`` (a sourced line)."""
        s = self.sys
        i = int(self._index[line])
        x = np.zeros(s.n_all)
        x[s.known[i]] = 1.0
        x[s.unknown] = self._solve(-self._lap_uk[:, [i]].toarray().ravel())
        self._nodes[line] = x
        self._src[s.known_lines, line] = self.lap_known @ x
        self._have[line] = True

    def apply(self, v: np.ndarray) -> tuple[np.ndarray, float, float]:
        s = self.sys
        vk = np.asarray(v, dtype=float)[s.known_lines]
        x = np.zeros(s.n_all)
        x[s.known] = vk
        x[s.unknown] = self._solve(-(s.lap_uk @ vk))
        vcell = (x[self._row_node] - x[self._col_node]) * self._share
        p_cells = float(np.dot(s.g_mem.ravel(), vcell * vcell))
        p_source = float(np.dot(vk, self.lap_known @ x))
        return vcell, p_cells, p_source

    def tia_row(self, line: int, v: np.ndarray) -> np.ndarray:
        for j in np.flatnonzero((np.asarray(v) != 0) & ~self._have):
            self._unit(int(j))
        if not self._is_tia[line]:
            return np.zeros(self.net.lines)
        row: np.ndarray = -self._src[line]
        return row

    def operator(self) -> Operator:
        """The full operator, assembled from every sourced line's unit response."""
        s = self.sys
        for j in np.flatnonzero(~self._have):
            self._unit(int(j))
        node_map = np.zeros((s.n_all, self.net.lines))
        for j, x in self._nodes.items():
            node_map[:, j] = x
        cell_v = (node_map[self._row_node] - node_map[self._col_node]) * self._share[:, None]
        src = self._src.copy()
        tia = np.zeros_like(src)
        tia[s.tia_lines] = -src[s.tia_lines]
        return Operator(cell_v=cell_v, g=s.g_mem.ravel(), tia=tia, src=src)


class ArrayNetwork:
    """Geometry and wiring of one array; builds and caches states and :class:`Operator` s.

    ``solves`` counts network factorisations: a sparse LU of a large state, or the full
    dense solve of a small one (each state met is solved once while cached);
    ``rhs_solves`` counts the right-hand sides solved on sparse LUs (one per event or
    unit response on the fast path, one per line in a full reference build).
    ``fast = False`` serves every state by its full operator (the previous behaviour).
    """

    def __init__(
        self,
        rows: int,
        cols: int,
        passive: bool,
        r_wire: float,
        r_switch: float,
        r_access: float,
        g_leak: float,
        cache_size: int = 32,
        state_cache_size: int = 8,
    ) -> None:
        self.rows, self.cols = rows, cols
        self.lines = rows + cols
        self.passive = passive
        self.r_wire, self.r_switch, self.r_access = r_wire, r_switch, r_access
        self.g_leak = g_leak
        self.cache_size = cache_size
        self.state_cache_size = state_cache_size
        self.fast = True
        self._cache: OrderedDict[tuple[object, ...], Operator] = OrderedDict()
        self._states: OrderedDict[tuple[object, ...], SparseState] = OrderedDict()
        self.solves = 0  # factorisations (see the class docstring), for diagnostics
        self.rhs_solves = 0

    def state(
        self, g: np.ndarray, modes: np.ndarray, key: tuple[object, ...] | None = None
    ) -> NetworkState:
        """The state for conductances ``g`` and line ``modes``, ready for :meth:`apply`.

        Large networks (sparse LU) get a :class:`SparseState`: factorised once, then
        solved only for the voltages applied. Small ones, or any with ``fast`` off, are
        served by their full operator (:class:`FullState`). ``key`` as for :meth:`operator`.
        """
        full_key = None if key is None else (*key, modes.tobytes())
        modes = np.asarray(modes)
        if not (self.fast and self._sparse(modes)):
            return FullState(self.operator(g, modes, key))
        if full_key is not None and full_key in self._states:
            self._states.move_to_end(full_key)
            return self._states[full_key]
        state = SparseState(self, self._system(np.asarray(g, dtype=float), modes))
        self.solves += 1
        if full_key is not None:
            self._states[full_key] = state
            if len(self._states) > self.state_cache_size:
                self._states.popitem(last=False)
        return state

    def _sparse(self, modes: np.ndarray) -> bool:
        """Whether a state with these line modes is solved by sparse LU (many nodes)."""
        n_nodes = 2 * self.rows * self.cols if self.r_wire > 0 else self.lines
        r_src = (self.r_wire + self.r_switch) if self.r_wire > 0 else self.r_switch
        sourced = int(np.count_nonzero(modes != FLOAT))
        unknown = n_nodes + self.lines - sourced if r_src > 0 else n_nodes - sourced
        return unknown > DENSE_LIMIT

    def operator(
        self, g: np.ndarray, modes: np.ndarray, key: tuple[object, ...] | None = None
    ) -> Operator:
        """The operator for conductances ``g`` (rows, cols) and line ``modes`` (lines,).

        ``key`` identifies ``g`` (e.g. (array, version, epoch)); with it results are cached.
        """
        full_key = None if key is None else (*key, modes.tobytes())
        if full_key is not None and full_key in self._cache:
            self._cache.move_to_end(full_key)
            return self._cache[full_key]
        modes = np.asarray(modes)
        if self.fast and self._sparse(modes):
            state = self.state(g, modes, key)
            assert isinstance(state, SparseState)
            return self._store(full_key, state.operator())
        op = self._solve(self._system(np.asarray(g, dtype=float), modes))
        return self._store(full_key, op)

    def _store(self, full_key: tuple[object, ...] | None, op: Operator) -> Operator:
        if full_key is not None:
            self._cache[full_key] = op
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return op

    # -- network construction --------------------------------------------------------
    def _system(self, g: np.ndarray, modes: np.ndarray) -> _System:
        R, C, L = self.rows, self.cols, self.lines
        ladder = self.r_wire > 0
        # Node numbering: with ladders, row node (r, c) = r*C + c and column node
        # (r, c) = R*C + r*C + c; ideal lines have one node each (row r, column R + c).
        if ladder:
            n_nodes = 2 * R * C
            row_node = np.arange(R * C).reshape(R, C)
            col_node = R * C + np.arange(R * C).reshape(R, C)
            ends = np.concatenate([row_node[:, 0], col_node[R - 1, :]])
        else:
            n_nodes = L
            row_node = np.repeat(np.arange(R)[:, None], C, axis=1)
            col_node = np.repeat(R + np.arange(C)[None, :], R, axis=0)
            ends = np.arange(L)
        # Memristor conductances in circuit; 1T1R cells need their row driven.
        g_mem = g.copy()
        if not self.passive:
            g_mem[modes[:R] == FLOAT, :] = 0.0
        series = not self.passive and self.r_access > 0
        g_cell = g_mem / (1 + g_mem * self.r_access) if series else g_mem
        a_idx = [row_node.ravel()]
        b_idx = [col_node.ravel()]
        cond = [g_cell.ravel()]
        if ladder:
            gw = 1.0 / self.r_wire
            a_idx += [row_node[:, :-1].ravel(), col_node[:-1, :].ravel()]
            b_idx += [row_node[:, 1:].ravel(), col_node[1:, :].ravel()]
            cond += [np.full(R * (C - 1), gw), np.full((R - 1) * C, gw)]
        sourced = modes != FLOAT
        r_src = (self.r_wire + self.r_switch) if ladder else self.r_switch
        # Known potentials: source terminals (one per sourced line) when the source has a
        # resistance; otherwise the line's end node itself.
        if r_src > 0:
            terminals = n_nodes + np.arange(L)
            n_all = n_nodes + L
            line_lines = np.flatnonzero(sourced)
            a_idx.append(ends[line_lines])
            b_idx.append(terminals[line_lines])
            cond.append(np.full(line_lines.size, 1.0 / r_src))
            known_node = terminals
        else:
            n_all = n_nodes
            known_node = ends
        a = np.concatenate(a_idx)
        b = np.concatenate(b_idx)
        w = np.concatenate(cond)
        lap = scipy.sparse.coo_matrix(
            (
                np.concatenate([w, w, -w, -w]),
                (np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a])),
            ),
            shape=(n_all, n_all),
        ).tocsr()
        known_lines = np.flatnonzero(sourced)
        known = known_node[known_lines]
        is_known = np.zeros(n_all, dtype=bool)
        is_known[known] = True
        unknown = np.flatnonzero(~is_known)
        # Leakage to ground on every unknown node.
        lap_u = lap[unknown]
        lap_uu = lap_u[:, unknown] + scipy.sparse.identity(unknown.size) * self.g_leak
        lap_uk = lap_u[:, known]
        return _System(
            lap=lap,
            lap_uu=lap_uu,
            lap_uk=lap_uk,
            known=known,
            known_lines=known_lines,
            unknown=unknown,
            row_node=row_node,
            col_node=col_node,
            g_mem=g_mem,
            g_cell=g_cell,
            n_all=n_all,
            tia_lines=np.flatnonzero(modes == TIA),
        )

    def _solve(self, s: _System) -> Operator:
        """The full operator of a state: every sourced line's response at once."""
        L = self.lines
        self.solves += 1
        # Node voltages as a linear map of the line voltages: x = N @ v.
        sel = np.zeros((s.known.size, L))
        sel[np.arange(s.known.size), s.known_lines] = 1.0
        rhs = -(s.lap_uk @ sel)
        if s.unknown.size == 0:
            x_u = np.zeros((0, L))
        elif s.unknown.size <= DENSE_LIMIT:
            # numpy's LAPACK: scipy.linalg.solve is ~100x slower on these small systems
            # with scipy's bundled OpenBLAS threading on few cores.
            x_u = np.linalg.solve(s.lap_uu.toarray(), np.asarray(rhs))
        else:
            self.rhs_solves += L
            x_u = _sparse_solve(s.lap_uu.tocsc(), np.asarray(rhs))
        node_map = np.zeros((s.n_all, L))
        node_map[s.unknown] = x_u
        node_map[s.known] = sel
        vdrop = node_map[s.row_node.ravel()] - node_map[s.col_node.ravel()]
        cell_v = vdrop * s.share[:, None]
        # Current each known node injects into the network, as a map of v.
        injected = np.asarray(s.lap[s.known] @ node_map)
        src = np.zeros((L, L))
        src[s.known_lines] = injected
        tia = np.zeros((L, L))
        tia[s.tia_lines] = -src[s.tia_lines]
        return Operator(cell_v=cell_v, g=s.g_mem.ravel(), tia=tia, src=src)


def _sparse_solve(a: scipy.sparse.csc_matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve a x = rhs for many right-hand sides with one sparse LU.

    SuperLU's own multi-RHS solve is several times slower than two sparse triangular
    solves on its factors; the minimum-degree ordering of A + Aᵀ suits these symmetric
    networks (Pr·A·Pc = L·U, so x = Pc · U⁻¹ · L⁻¹ · Pr · rhs).
    """
    lu = scipy.sparse.linalg.splu(a, permc_spec="MMD_AT_PLUS_A")
    b = np.empty_like(rhs)
    b[lu.perm_r] = rhs
    y = scipy.sparse.linalg.spsolve_triangular(lu.L.tocsr(), b, lower=True, unit_diagonal=True)
    z = scipy.sparse.linalg.spsolve_triangular(lu.U.tocsr(), y, lower=False)
    x: np.ndarray = z[lu.perm_c]
    return x
