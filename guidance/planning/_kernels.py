# mypy: disable-error-code="no-untyped-def"
"""numba kernel of the greedy seed selection (private; called only through guidance.planning.greedy).

Compiled on first call (``njit`` without signatures; ``cache=True`` keeps the
machine code between sessions) and imported by the greedy selection only when
it scores candidates, so importing guidance.planning does no JIT work.
"""

from __future__ import annotations

import numba
import numpy as np

_BLOCK = 64  # candidate columns per parallel work item
_MOVE_BLOCK = 256  # relocation moves per parallel work item
_BINS = 400  # dose histogram bins of relocation_d90


@numba.njit(parallel=True, cache=True, error_model="numpy")
def column_scores(influence, dose, weights, rows, columns, p, w150, w200, gain, score):  # fmt: skip
    """Coverage gain and penalised score of each candidate column (see greedy._scores).

    ``influence`` (points, candidates) float32 in C order; ``rows`` the points
    whose dose is below the largest threshold that counts (P, or 1.5 P / 2 P
    when their weight is > 0); ``gain`` and ``score`` (len(columns)) are written.
    """
    n = columns.shape[0]
    for block in numba.prange((n + _BLOCK - 1) // _BLOCK):
        c0 = block * _BLOCK
        c1 = min(n, c0 + _BLOCK)
        g = np.zeros(c1 - c0)
        h150 = np.zeros(c1 - c0)
        h200 = np.zeros(c1 - c0)
        for r in range(rows.shape[0]):
            i = rows[r]
            d = dose[i]
            w = weights[i]
            for c in range(c0, c1):
                total = d + influence[i, columns[c]]
                if d < p:
                    g[c - c0] += w * (min(total, p) - d)
                if w150 > 0.0 and d < 1.5 * p and total >= 1.5 * p:
                    h150[c - c0] += w
                if w200 > 0.0 and d < 2.0 * p and total >= 2.0 * p:
                    h200[c - c0] += w
        for c in range(c0, c1):
            gain[c] = g[c - c0] / p
            score[c] = gain[c] - w150 * h150[c - c0] - w200 * h200[c - c0]


@numba.njit(parallel=True, cache=True, error_model="numpy")
def move_scores(influence, dose, weights, removed, added, thresholds, cover, ramp, hot150, hot200):
    """Target metrics after each relocation move (see improve._metrics): seed ``removed[m]`` -> ``added[m]``.

    ``influence`` (rows, candidates) float32 in C order, the rows of the first
    points of ``dose``/``weights``; ``thresholds`` = (goal, ramp low end, 1.5 P,
    2 P), increasing. Written per move over those rows: ``cover`` the weight
    with dose >= goal, ``ramp`` the weight x clip((dose - low) / (goal - low),
    0, 1), ``hot150`` / ``hot200`` the weight at or above 1.5 P / 2 P.
    """
    goal, low, h150, h200 = thresholds[0], thresholds[1], thresholds[2], thresholds[3]
    scale = 1.0 / (goal - low)
    n = removed.shape[0]
    for block in numba.prange((n + _MOVE_BLOCK - 1) // _MOVE_BLOCK):
        m0 = block * _MOVE_BLOCK
        m1 = min(n, m0 + _MOVE_BLOCK)
        for m in range(m0, m1):
            cover[m] = 0.0
            ramp[m] = 0.0
            hot150[m] = 0.0
            hot200[m] = 0.0
        for i in range(influence.shape[0]):
            d = dose[i]
            w = weights[i]
            for m in range(m0, m1):
                total = d - influence[i, removed[m]] + influence[i, added[m]]
                if total >= goal:
                    cover[m] += w
                    ramp[m] += w
                    if total >= h150:
                        hot150[m] += w
                        if total >= h200:
                            hot200[m] += w
                elif total > low:
                    ramp[m] += w * (total - low) * scale


@numba.njit(parallel=True, cache=True, error_model="numpy")
def relocation_d90(influence, base, weights, added, lo, hi, need, rest_above, out):
    """Sampled D90 after adding each candidate column ``added[m]`` to ``base`` (see exchange._d90_after).

    ``influence`` (rows, candidates) float32 in C order, the rows of the first
    points of ``base``/``weights``; ``rest_above`` the weight of the points
    after them (their dose is at or above ``hi``). The dose at which the weight
    at or above it first reaches ``need`` is found in a histogram of
    ``_BINS`` bins between ``lo`` and ``hi`` (lower bin edge); below ``lo``
    the result is ``lo`` x (weight at or above lo) / need, so that a move
    still ranks by how much it covers.
    """
    n = added.shape[0]
    rows = influence.shape[0]
    scale = _BINS / (hi - lo)
    for m in numba.prange(n):
        c = added[m]
        histogram = np.zeros(_BINS)
        above = rest_above
        below_lo = 0.0
        for i in range(rows):
            total = base[i] + influence[i, c]
            if total >= hi:
                above += weights[i]
            elif total >= lo:
                histogram[int((total - lo) * scale)] += weights[i]
            else:
                below_lo += weights[i]
        result = -1.0
        if above >= need:
            result = hi
        else:
            for b in range(_BINS - 1, -1, -1):
                above += histogram[b]
                if above >= need:
                    result = lo + b / scale
                    break
        if result < 0.0:
            result = lo * above / need
        out[m] = result
