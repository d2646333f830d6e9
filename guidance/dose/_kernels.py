# mypy: disable-error-code="no-untyped-def"
"""numba kernels of the dose engine (private; called only through guidance.dose.engine).

Compiled on first call (``njit`` without signatures; ``cache=True`` keeps the
machine code between sessions) and imported by the engine only when a dose
is computed, so importing guidance.dose does no JIT work. fastmath is off,
except fused multiply-add in the table kernels (bench/dose.py measures them
against a plain-arithmetic build: within 1e-13).

Two kernels sum seed contributions:

- :func:`exact_dose_rate`: the TG-43U1 formalism per pair, the same
  arithmetic as :mod:`guidance.dose.tg43` (tested against it to 1e-6);
- :func:`table_dose_rate` / :func:`table_dose_rate_grid` /
  :func:`table_contributions`: coordinate transform plus bilinear look-up in
  the tables of :mod:`guidance.dose.lookup` (kernel layout,
  :class:`~guidance.dose.lookup.KernelTable`); call them through
  :func:`run_dynamic`.

All lengths in cm; ``strengths`` are already scaled to the wanted quantity
(U times decay and, for total dose, tau / 100); directions of 1D seeds are
ignored (``is_line`` False).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

# The table kernels run each seed over a short run of points at a time, in two
# passes: the first (square roots, a division, no table reads) is branch-free
# and compiles to SIMD code; the second does the table reads (gathers, which
# the compiler leaves scalar) and the interpolation. Callers hand the work
# items to the threads a few at a time (``parallel_chunks``), so a core that
# another process holds does not leave the other idle at the end.
_ROWS_PER_ITEM = 4  # grid rows per parallel work item
_POINTS_PER_ITEM = 128
CHUNK = 4  # work items per hand-out (numba.set_parallel_chunksize)
_FMA = {"contract"}  # fused multiply-add only: within 1e-14 of the plain arithmetic (bench/dose.py)
_ONE, _TWO, _THREE = np.uint64(1), np.uint64(2), np.uint64(3)


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_FMA)
def _line_coordinates(dx, dy, dz, ux, uy, uz, strength, n_q, half_offset, n_a, a0, inv_da, r_min, n_bins):
    """(cell, a weight, column bin, bin fraction, strength / r_c^2) of one seed-to-point vector."""
    r = math.sqrt(dx * dx + dy * dy + dz * dz)
    inv_r = 1.0 / r if r > 0.0 else 0.0
    inv_rc = inv_r if r >= r_min else 1.0 / r_min
    fa = min(max((math.sqrt(max(r, r_min)) - a0) * inv_da, 0.0), n_a - 1.0)
    i = min(int(fa), n_a - 2)
    cos_t = (dx * ux + dy * uy + dz * uz) * inv_r
    t = math.sqrt(max(1.0 - abs(cos_t), 0.0)) * n_bins
    b = min(int(t), n_bins - 1)
    cell = 2 * n_q * i + (half_offset if cos_t < 0.0 else 0)
    return cell, fa - i, b, t - b, strength * (inv_rc * inv_rc)


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_FMA)
def _point_coordinates(dx, dy, dz, strength, n_a, a0, inv_da, r_min):
    """(row, a weight, strength / r_c^2) in the 1D table."""
    r = math.sqrt(dx * dx + dy * dy + dz * dz)
    inv_rc = 1.0 / r if r >= r_min else 1.0 / r_min
    fa = min(max((math.sqrt(max(r, r_min)) - a0) * inv_da, 0.0), n_a - 1.0)
    i = min(int(fa), n_a - 2)
    return i, fa - i, strength * (inv_rc * inv_rc)


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_FMA)
def _grid_pass(n, ox, oy, oz, ex, ey, ez, k, dirs, strengths, is_line, tab, bufs):
    """First pass of seed k over n grid voxels, voxel c at (ox, oy, oz) + c (ex, ey, ez) from the seed."""
    cells, was, bins, tbs, scales = bufs
    _, n_q, half_offset, point, a0, inv_da, r_min, columns = tab
    n_a, n_bins, w = point.size, columns.shape[0], strengths[k]
    ux, uy, uz = dirs[k, 0], dirs[k, 1], dirs[k, 2]
    if is_line[k]:
        for c in range(n):
            cells[c], was[c], bins[c], tbs[c], scales[c] = _line_coordinates(
                ox + ex * c, oy + ey * c, oz + ez * c, ux, uy, uz, w, n_q, half_offset, n_a, a0, inv_da,
                r_min, n_bins,
            )  # fmt: skip
    else:
        for c in range(n):
            cells[c], was[c], scales[c] = _point_coordinates(
                ox + ex * c, oy + ey * c, oz + ez * c, w, n_a, a0, inv_da, r_min
            )


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_FMA)
def _points_pass(n, points, p0, k, seeds, dirs, strengths, is_line, tab, bufs):
    """First pass of seed k over points[p0:p0 + n]."""
    cells, was, bins, tbs, scales = bufs
    _, n_q, half_offset, point, a0, inv_da, r_min, columns = tab
    n_a, n_bins, w = point.size, columns.shape[0], strengths[k]
    sx, sy, sz = seeds[k, 0], seeds[k, 1], seeds[k, 2]
    ux, uy, uz = dirs[k, 0], dirs[k, 1], dirs[k, 2]
    if is_line[k]:
        for c in range(n):
            cells[c], was[c], bins[c], tbs[c], scales[c] = _line_coordinates(
                points[p0 + c, 0] - sx, points[p0 + c, 1] - sy, points[p0 + c, 2] - sz, ux, uy, uz, w, n_q,
                half_offset, n_a, a0, inv_da, r_min, n_bins,
            )  # fmt: skip
    else:
        for c in range(n):
            cells[c], was[c], scales[c] = _point_coordinates(
                points[p0 + c, 0] - sx, points[p0 + c, 1] - sy, points[p0 + c, 2] - sz, w, n_a, a0, inv_da,
                r_min,
            )  # fmt: skip


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_FMA)
def _line_value(c, tab, bufs):
    """Second pass at point c: bilinear look-up in pairs[cell + 2 j:][:4] (rows i, i + 1; cols j, j + 1)."""
    cells, was, bins, tbs, scales = bufs
    pairs, n_q, _, _, _, _, _, columns = tab
    b, wa = bins[c], was[c]
    fq = columns[b, 0] + columns[b, 1] * tbs[c]
    j = min(int(fq), n_q - 2)
    wq = fq - j
    k = cells[c] + np.uint64(2 * j)
    near = pairs[k] * (1.0 - wa) + pairs[k + _ONE] * wa
    far = pairs[k + _TWO] * (1.0 - wa) + pairs[k + _THREE] * wa
    return (near * (1.0 - wq) + far * wq) * scales[c]


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_FMA)
def _point_value(c, tab, bufs):
    """Second pass at point c for a 1D seed."""
    cells, was, _, _, scales = bufs
    point = tab[3]
    i, wa = cells[c], was[c]
    return (point[i] * (1.0 - wa) + point[i + _ONE] * wa) * scales[c]


@numba.njit(cache=True, inline="always", error_model="numpy")
def _buffers(n):
    """Scratch (cell or row, a weight, column bin, bin fraction, scale) arrays for n points."""
    return np.empty(n, np.uint64), np.empty(n), np.zeros(n, np.uint64), np.zeros(n), np.empty(n)


@numba.njit(parallel=True, cache=True, error_model="numpy", fastmath=_FMA)
def table_dose_rate(points, seeds, dirs, strengths, is_line, pairs, n_q, half_offset, point, a0, inv_da,
                    r_min, columns, out):  # fmt: skip
    """Add sum_k strengths[k] * rate_k(point) to ``out`` (n,) via the look-up tables.

    ``pairs`` is the 2D table in the kernel layout of
    :class:`guidance.dose.lookup.KernelTable` (its second half, for
    cos theta < 0, from ``half_offset``; 0 when symmetric).
    """
    tab = (pairs, n_q, half_offset, point, a0, inv_da, r_min, columns)
    n = points.shape[0]
    for item in numba.prange((n + _POINTS_PER_ITEM - 1) // _POINTS_PER_ITEM):
        p0 = item * _POINTS_PER_ITEM
        m = min(_POINTS_PER_ITEM, n - p0)
        bufs = _buffers(m)
        for k in range(seeds.shape[0]):
            _points_pass(m, points, p0, k, seeds, dirs, strengths, is_line, tab, bufs)
            if is_line[k]:
                for c in range(m):
                    out[p0 + c] += _line_value(c, tab, bufs)
            else:
                for c in range(m):
                    out[p0 + c] += _point_value(c, tab, bufs)


@numba.njit(parallel=True, cache=True, error_model="numpy", fastmath=_FMA)
def table_dose_rate_grid(n_rows, n_cols, affine_cm, seeds, dirs, strengths, is_line, pairs, n_q, half_offset,
                         point, a0, inv_da, r_min, columns, out):  # fmt: skip
    """As :func:`table_dose_rate` on the voxel centres of a grid, computed from its affine.

    ``out`` is the flat (C order) dose array of a grid with rows of ``n_cols``
    and slices of ``n_rows * n_cols``; ``affine_cm`` (3, 4) maps (s, r, c, 1) to cm.
    """
    tab = (pairs, n_q, half_offset, point, a0, inv_da, r_min, columns)
    n_lines = out.size // n_cols
    ex, ey, ez = affine_cm[0, 2], affine_cm[1, 2], affine_cm[2, 2]
    for item in numba.prange((n_lines + _ROWS_PER_ITEM - 1) // _ROWS_PER_ITEM):
        bufs = _buffers(n_cols)
        for line in range(item * _ROWS_PER_ITEM, min((item + 1) * _ROWS_PER_ITEM, n_lines)):
            s, rw = line // n_rows, line % n_rows
            x = affine_cm[0, 3] + affine_cm[0, 0] * s + affine_cm[0, 1] * rw
            y = affine_cm[1, 3] + affine_cm[1, 0] * s + affine_cm[1, 1] * rw
            z = affine_cm[2, 3] + affine_cm[2, 0] * s + affine_cm[2, 1] * rw
            for k in range(seeds.shape[0]):
                _grid_pass(n_cols, x - seeds[k, 0], y - seeds[k, 1], z - seeds[k, 2], ex, ey, ez, k, dirs,
                           strengths, is_line, tab, bufs)  # fmt: skip
                row = out[line * n_cols : (line + 1) * n_cols]
                if is_line[k]:
                    for c in range(n_cols):
                        row[c] += _line_value(c, tab, bufs)
                else:
                    for c in range(n_cols):
                        row[c] += _point_value(c, tab, bufs)


@numba.njit(parallel=True, cache=True, error_model="numpy", fastmath=_FMA)
def table_contributions(points, seeds, dirs, strengths, is_line, pairs, n_q, half_offset, point, a0, inv_da,
                        r_min, columns, out):  # fmt: skip
    """Write strengths[k] * rate_k(point p) to ``out[p, k]`` (n, k), float32 or float64."""
    tab = (pairs, n_q, half_offset, point, a0, inv_da, r_min, columns)
    n = points.shape[0]
    for item in numba.prange((n + _POINTS_PER_ITEM - 1) // _POINTS_PER_ITEM):
        p0 = item * _POINTS_PER_ITEM
        m = min(_POINTS_PER_ITEM, n - p0)
        bufs = _buffers(m)
        for k in range(seeds.shape[0]):
            _points_pass(m, points, p0, k, seeds, dirs, strengths, is_line, tab, bufs)
            if is_line[k]:
                for c in range(m):
                    out[p0 + c, k] = _line_value(c, tab, bufs)
            else:
                for c in range(m):
                    out[p0 + c, k] = _point_value(c, tab, bufs)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _interval(x, nodes):
    """Index i with nodes[i] <= x < nodes[i+1], clamped to 0 .. n-2 (binary search)."""
    lo, hi = 0, nodes.size - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if nodes[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo


@numba.njit(cache=True, inline="always", error_model="numpy")
def _radial(r, g_r, log_g, log_linear):
    n = g_r.size
    if r <= g_r[0]:
        return math.exp(log_g[0])
    if r > g_r[n - 1]:
        slope = (log_g[n - 1] - log_g[n - 2]) / (g_r[n - 1] - g_r[n - 2])
        return math.exp(log_g[n - 1] + slope * (r - g_r[n - 1]))
    i = _interval(r, g_r)
    w = (r - g_r[i]) / (g_r[i + 1] - g_r[i])
    if log_linear:
        return math.exp(log_g[i] * (1.0 - w) + log_g[i + 1] * w)
    return math.exp(log_g[i]) * (1.0 - w) + math.exp(log_g[i + 1]) * w


@numba.njit(cache=True, inline="always", error_model="numpy")
def _anisotropy(r, theta, f_r, f_theta, f_vals, linear_beyond):
    if f_theta[f_theta.size - 1] <= 90.0:
        theta = min(theta, 180.0 - theta)
    theta = min(max(theta, f_theta[0]), f_theta[f_theta.size - 1])
    j = _interval(theta, f_theta)
    wt = (theta - f_theta[j]) / (f_theta[j + 1] - f_theta[j])
    if not linear_beyond:
        r = min(r, f_r[f_r.size - 1])
    r = max(r, f_r[0])
    i = _interval(r, f_r) if r < f_r[f_r.size - 1] else f_r.size - 2
    wr = (r - f_r[i]) / (f_r[i + 1] - f_r[i])
    lower = f_vals[j, i] * (1.0 - wr) + f_vals[j, i + 1] * wr
    upper = f_vals[j + 1, i] * (1.0 - wr) + f_vals[j + 1, i + 1] * wr
    return lower * (1.0 - wt) + upper * wt


@numba.njit(cache=True, inline="always", error_model="numpy")
def _phi(r, phi_r, phi_v):
    n = phi_r.size
    if r <= phi_r[0]:
        return phi_v[0]
    if r >= phi_r[n - 1]:
        return phi_v[n - 1]
    i = _interval(r, phi_r)
    w = (r - phi_r[i]) / (phi_r[i + 1] - phi_r[i])
    return phi_v[i] * (1.0 - w) + phi_v[i + 1] * w


@numba.njit(cache=True, inline="always", error_model="numpy")
def _geometry(z, y, length):
    r2 = z * z + y * y
    denominator = r2 - 0.25 * length * length
    if y <= 1e-9 * math.sqrt(r2):
        return 1.0 / denominator
    return math.atan2(length * y, denominator) / (length * y)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def exact_dose_rate(points, seeds, dirs, strengths, is_line, length, lam_over_gref, r_min, g_r, log_g,
                    log_linear, f_r, f_theta, f_vals, f_linear_beyond, phi_r, phi_v, out):  # fmt: skip
    """Add sum_k strengths[k] * rate_k(point) to ``out`` (n,) with the exact TG-43U1 formalism."""
    for p in numba.prange(points.shape[0]):
        total = 0.0
        for k in range(seeds.shape[0]):
            dx = points[p, 0] - seeds[k, 0]
            dy = points[p, 1] - seeds[k, 1]
            dz = points[p, 2] - seeds[k, 2]
            r = math.sqrt(dx * dx + dy * dy + dz * dz)
            if not is_line[k]:
                rc = max(r, r_min)
                rate = (
                    _geometry(0.0, rc, length) * _radial(rc, g_r, log_g, log_linear) * _phi(rc, phi_r, phi_v)
                )
                total += strengths[k] * lam_over_gref * rate
                continue
            z = dx * dirs[k, 0] + dy * dirs[k, 1] + dz * dirs[k, 2]
            y = math.sqrt(max(r * r - z * z, 0.0))
            if r < r_min:
                if r > 0.0:
                    z, y = z * r_min / r, y * r_min / r
                else:
                    z, y = 0.0, r_min
                r = r_min
            theta = math.degrees(math.atan2(y, z))
            rate = (
                _geometry(z, y, length)
                * _radial(r, g_r, log_g, log_linear)
                * _anisotropy(r, theta, f_r, f_theta, f_vals, f_linear_beyond)
            )
            total += strengths[k] * lam_over_gref * rate
        out[p] += total


def run_dynamic(kernel: Any, *args: Any) -> None:
    """Call a table kernel with work items handed out ``CHUNK`` at a time (dynamic scheduling)."""
    previous = numba.set_parallel_chunksize(CHUNK)
    try:
        kernel(*args)
    finally:
        numba.set_parallel_chunksize(previous)


def warm_up() -> None:
    """Compile (or load from cache) every kernel on a tiny problem."""
    one = np.zeros((1, 3))
    flag = np.ones(1, dtype=np.bool_)
    pairs: NDArray[np.float32] = np.ones(4, dtype=np.float32)
    columns = np.array([[0.0, 1.0]])
    args = (one, one + 1.0, np.array([[0.0, 0.0, 1.0]]), np.ones(1), flag, pairs, 2, 0, np.ones(2), 0.3,
            10.0, 0.1, columns)  # fmt: skip
    table_dose_rate(*args, np.zeros(1))
    table_contributions(*args, np.zeros((1, 1), dtype=np.float32))
    table_dose_rate_grid(1, 1, np.eye(3, 4), *args[1:], np.zeros(1))
