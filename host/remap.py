"""Fault-aware placement: move hidden units away from cells that cannot be programmed.

A hidden unit u of layer l is one column pair of layer l's tiles (its output) and one row
of layer l+1's tiles (its input). Permuting the hidden units permutes those pairs and rows
together and leaves the network's function unchanged (the requantisation is per layer).
So when a cell is stuck, the unit whose weights it would spoil least can be put there:
a stuck-low G+ cell does no harm under a weight ≤ 0, a stuck-high one is made up for by
its partner only while the partner can reach far enough.

`best_permutations` chooses, for every hidden layer, the permutation that minimises the
weight error the faulty cells leave after pair compensation (a linear assignment:
`scipy.optimize.linear_sum_assignment`), from the cells' measured conductances;
`permute` applies it to a plan. The output layer's units (the classes) stay in place.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from xbar.training.plan import CrossbarModel, Tile

Cell = tuple[int, int, int]  # (array, row, col)


def _residual(want: np.ndarray, g_fixed: float, lo: float, hi: float, sign: int) -> np.ndarray:
    """|weight difference error| (S) when one cell of the pair sits at g_fixed and the other
    can be placed anywhere in [lo, hi]; `want` the wanted G+ − G−, `sign` +1 if the fixed
    cell is G+."""
    if sign > 0:  # D = g_fixed − g_other, g_other ∈ [lo, hi]
        d_lo, d_hi = g_fixed - hi, g_fixed - lo
    else:  # D = g_other − g_fixed
        d_lo, d_hi = lo - g_fixed, hi - g_fixed
    return np.maximum(d_lo - want, 0.0) + np.maximum(want - d_hi, 0.0)


def _pair_costs(
    layer_w: np.ndarray,
    tiles: list[Tile],
    g_unit: float,
    faults: dict[Cell, float],
    lo: float,
    hi: float,
    axis: str,
) -> np.ndarray:
    """cost[u, s]: weight error (in steps) the faulty cells of slot s leave if unit u sits
    there. axis "out": slots are the layer's outputs (column pairs); "in": its inputs
    (rows)."""
    n_out, n_in = layer_w.shape
    n = n_out if axis == "out" else n_in
    cost = np.zeros((n, n))
    for t in tiles:
        for (a, r, c), g in faults.items():
            if a != t.array or not (t.row0 <= r < t.row0 + t.in_len):
                continue
            if not (t.col0 <= c < t.col0 + 2 * t.out_len):
                continue
            i = t.in_start + r - t.row0
            j = t.out_start + (c - t.col0) // 2
            sign = 1 if (c - t.col0) % 2 == 0 else -1
            partner = (a, r, c + 1 if sign > 0 else c - 1)
            p_lo, p_hi = (faults[partner], faults[partner]) if partner in faults else (lo, hi)
            if axis == "out":  # slot j holds unit u: wanted weights W[u, i] for every u
                want = layer_w[:, i].astype(float) * g_unit
                cost[:, j] += _residual(want, g, p_lo, p_hi, sign) / g_unit
            else:  # slot i holds unit u: wanted weights W[j, u]
                want = layer_w[j, :].astype(float) * g_unit
                cost[:, i] += _residual(want, g, p_lo, p_hi, sign) / g_unit
    return cost


def best_permutations(
    plan: CrossbarModel, faults: dict[Cell, float], g_limit: float
) -> tuple[list[np.ndarray], float, float]:
    """Per hidden layer (every layer but the last), `perm` with slot s holding unit
    perm[s]; and the faulty cells' total weight error (steps) before and after."""
    from scipy.optimize import linear_sum_assignment

    perms: list[np.ndarray] = []
    before = after = 0.0
    for li in range(len(plan.layers) - 1):
        # Boundaries one after the other: layer li's inputs already in their new order.
        lay, nxt = permute(plan, perms).layers[li : li + 2]
        cost = _pair_costs(lay.weights, lay.tiles, lay.g_unit, faults, plan.g_min, g_limit, "out")
        cost += _pair_costs(nxt.weights, nxt.tiles, nxt.g_unit, faults, plan.g_min, g_limit, "in")
        units, slots = linear_sum_assignment(cost)  # cost[unit, slot]
        perm = np.empty(len(units), dtype=np.int64)
        perm[slots] = units
        before += float(np.trace(cost))
        after += float(cost[perm, np.arange(len(perm))].sum())
        perms.append(perm)
    return perms, before, after


def permute(plan: CrossbarModel, perms: list[np.ndarray]) -> CrossbarModel:
    """The same network with layer l's outputs (and layer l+1's inputs) in the order
    perms[l]: slot s holds what was unit perms[l][s]. Tiles stay where they are."""
    layers = list(plan.layers)
    for li, perm in enumerate(perms):  # each in terms of the order the previous left
        lay, nxt = layers[li], layers[li + 1]
        layers[li] = replace(lay, weights=lay.weights[perm], bias=lay.bias[perm])
        layers[li + 1] = replace(nxt, weights=nxt.weights[:, perm])
    return CrossbarModel(layers, plan.g_min)
