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
solves it once — dense for small networks, sparse LU for large — and returns an
:class:`Operator` of three matrices, cached per (conductance version, drift epoch, line
states); every later read is then a mat-vec:

* ``cell_v @ v``: the voltage across each memristor (rows·cols,);
* ``tia @ v``: the current flowing into each TIA line (0 on other lines);
* ``src @ v``: the current each driven line's source delivers (power ``v · src @ v``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

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


class ArrayNetwork:
    """Geometry and wiring of one array; builds and caches :class:`Operator` objects."""

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
    ) -> None:
        self.rows, self.cols = rows, cols
        self.lines = rows + cols
        self.passive = passive
        self.r_wire, self.r_switch, self.r_access = r_wire, r_switch, r_access
        self.g_leak = g_leak
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[object, ...], Operator] = OrderedDict()
        self.solves = 0  # operator builds (cache misses), for diagnostics

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
        op = self._solve(np.asarray(g, dtype=float), np.asarray(modes))
        self.solves += 1
        if full_key is not None:
            self._cache[full_key] = op
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return op

    # -- network construction --------------------------------------------------------
    def _solve(self, g: np.ndarray, modes: np.ndarray) -> Operator:
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
            (np.concatenate([w, w, -w, -w]),
             (np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a]))),
            shape=(n_all, n_all),
        ).tocsr()  # fmt: skip
        known_lines = np.flatnonzero(sourced)
        known = known_node[known_lines]
        is_known = np.zeros(n_all, dtype=bool)
        is_known[known] = True
        unknown = np.flatnonzero(~is_known)
        # Leakage to ground on every unknown node.
        lap_uu = lap[unknown][:, unknown] + scipy.sparse.identity(unknown.size) * self.g_leak
        lap_uk = lap[unknown][:, known]
        # Node voltages as a linear map of the line voltages: x = N @ v.
        sel = np.zeros((known.size, L))
        sel[np.arange(known.size), known_lines] = 1.0
        rhs = -(lap_uk @ sel)
        if unknown.size == 0:
            x_u = np.zeros((0, L))
        elif unknown.size <= DENSE_LIMIT:
            # numpy's LAPACK: scipy.linalg.solve is ~100x slower on these small systems
            # with scipy's bundled OpenBLAS threading on few cores.
            x_u = np.linalg.solve(lap_uu.toarray(), np.asarray(rhs))
        else:
            x_u = _sparse_solve(lap_uu.tocsc(), np.asarray(rhs))
        node_map = np.zeros((n_all, L))
        node_map[unknown] = x_u
        node_map[known] = sel
        vdrop = node_map[row_node.ravel()] - node_map[col_node.ravel()]
        # Share of the cell voltage across the memristor (the rest is on its transistor).
        share = np.divide(g_cell, g_mem, out=np.zeros_like(g_cell), where=g_mem > 0).ravel()
        cell_v = vdrop * share[:, None]
        # Current each known node injects into the network, as a map of v.
        injected = np.asarray(lap[known] @ node_map)
        src = np.zeros((L, L))
        src[known_lines] = injected
        tia = np.zeros((L, L))
        tia_lines = np.flatnonzero(modes == TIA)
        tia[tia_lines] = -src[tia_lines]
        return Operator(cell_v=cell_v, g=g_mem.ravel(), tia=tia, src=src)


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

