# mypy: disable-error-code="no-untyped-def"
"""numba kernels of the dose engine (private; called only through guidance.dose.engine).

Compiled on first call (``njit`` without signatures; ``cache=True`` keeps the
machine code between sessions) and imported by the engine only when a dose
is computed, so importing guidance.dose does no JIT work. fastmath is off.

Two kernels sum seed contributions:

- :func:`exact_dose_rate`: the TG-43U1 formalism per pair, the same
  arithmetic as :mod:`guidance.dose.tg43` (tested against it to 1e-6);
- :func:`table_dose_rate` / :func:`table_contributions`: coordinate transform
  plus bilinear look-up in the tables of :mod:`guidance.dose.lookup`.

All lengths in cm; ``strengths`` are already scaled to the wanted quantity
(U times decay and, for total dose, tau / 100); directions of 1D seeds are
ignored (``is_line`` False).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

_BLOCK = 2048  # points per parallel work item: one seed's look-ups stay local in the table


@numba.njit(cache=True, inline="always", error_model="numpy")
def _table_rate(dx, dy, dz, ux, uy, uz, line_seed, line, n_q, half_size, point, a0, inv_da, r_min,
                col_map):  # fmt: skip
    r = math.sqrt(dx * dx + dy * dy + dz * dz)
    inv_r = 1.0 / r if r > 0.0 else 0.0
    inv_rc = inv_r if r >= r_min else 1.0 / r_min
    r_c = max(r, r_min)
    n_a = point.size
    fa = min(max((math.sqrt(r_c) - a0) * inv_da, 0.0), n_a - 1.0)
    i = min(int(fa), n_a - 2)
    wa = fa - i
    if not line_seed:
        return (point[i] * (1.0 - wa) + point[i + 1] * wa) * (inv_rc * inv_rc)
    cos_t = (dx * ux + dy * uy + dz * uz) * inv_r
    base = i * n_q
    if cos_t < 0.0:
        base += half_size  # 0 for tables symmetric about 90 degrees
    n_bins = col_map.size - 1
    t = math.sqrt(max(1.0 - abs(cos_t), 0.0)) * n_bins
    b = min(int(t), n_bins - 1)
    fq = col_map[b] + (col_map[b + 1] - col_map[b]) * (t - b)
    j = min(int(fq), n_q - 2)
    wq = fq - j
    k = base + j
    h0 = line[k] * (1.0 - wq) + line[k + 1] * wq
    h1 = line[k + n_q] * (1.0 - wq) + line[k + n_q + 1] * wq
    return (h0 * (1.0 - wa) + h1 * wa) * (inv_rc * inv_rc)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def table_dose_rate(points, seeds, dirs, strengths, is_line, line, n_q, half_size, point, a0, inv_da, r_min,
                    col_map, out):  # fmt: skip
    """Add sum_k strengths[k] * rate_k(point) to ``out`` (n,) via the look-up tables.

    ``line`` is the 2D table flattened (C order, rows of ``n_q``); the half for
    cos theta < 0 starts at ``half_size`` (0 when symmetric).
    """
    n = points.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for blk in numba.prange(n_blocks):
        start = blk * _BLOCK
        stop = min(start + _BLOCK, n)
        for k in range(seeds.shape[0]):
            sx, sy, sz = seeds[k, 0], seeds[k, 1], seeds[k, 2]
            ux, uy, uz = dirs[k, 0], dirs[k, 1], dirs[k, 2]
            strength = strengths[k]
            for p in range(start, stop):
                out[p] += strength * _table_rate(
                    points[p, 0] - sx, points[p, 1] - sy, points[p, 2] - sz, ux, uy, uz, is_line[k], line,
                    n_q, half_size, point, a0, inv_da, r_min, col_map,
                )  # fmt: skip


@numba.njit(parallel=True, cache=True, error_model="numpy")
def table_dose_rate_grid(n_rows, n_cols, affine_cm, seeds, dirs, strengths, is_line, line, n_q, half_size,
                         point, a0, inv_da, r_min, col_map, out):  # fmt: skip
    """As :func:`table_dose_rate` on the voxel centres of a grid, computed from its affine.

    ``out`` is the flat (C order) dose array of a grid with rows of ``n_cols``
    and slices of ``n_rows * n_cols``; ``affine_cm`` (3, 4) maps (s, r, c, 1) to cm.
    """
    n = out.size
    per_slice = n_rows * n_cols
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for blk in numba.prange(n_blocks):
        start = blk * _BLOCK
        stop = min(start + _BLOCK, n)
        for k in range(seeds.shape[0]):
            ux, uy, uz = dirs[k, 0], dirs[k, 1], dirs[k, 2]
            ox = affine_cm[0, 3] - seeds[k, 0]
            oy = affine_cm[1, 3] - seeds[k, 1]
            oz = affine_cm[2, 3] - seeds[k, 2]
            sl = start // per_slice
            rw = (start - sl * per_slice) // n_cols
            cl = start - sl * per_slice - rw * n_cols
            for p in range(start, stop):
                dx = ox + affine_cm[0, 0] * sl + affine_cm[0, 1] * rw + affine_cm[0, 2] * cl
                dy = oy + affine_cm[1, 0] * sl + affine_cm[1, 1] * rw + affine_cm[1, 2] * cl
                dz = oz + affine_cm[2, 0] * sl + affine_cm[2, 1] * rw + affine_cm[2, 2] * cl
                cl += 1  # next voxel in C order, without integer division
                if cl == n_cols:
                    cl = 0
                    rw += 1
                    if rw == n_rows:
                        rw = 0
                        sl += 1
                out[p] += strengths[k] * _table_rate(
                    dx, dy, dz, ux, uy, uz, is_line[k], line, n_q, half_size, point, a0, inv_da, r_min,
                    col_map,
                )  # fmt: skip


@numba.njit(parallel=True, cache=True, error_model="numpy")
def table_contributions(points, seeds, dirs, strengths, is_line, line, n_q, half_size, point, a0, inv_da,
                        r_min, col_map, out):  # fmt: skip
    """Write strengths[k] * rate_k(point p) to ``out[p, k]`` (n, k), float32 or float64."""
    n = points.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for blk in numba.prange(n_blocks):
        start = blk * _BLOCK
        stop = min(start + _BLOCK, n)
        for k in range(seeds.shape[0]):
            for p in range(start, stop):
                out[p, k] = strengths[k] * _table_rate(
                    points[p, 0] - seeds[k, 0], points[p, 1] - seeds[k, 1], points[p, 2] - seeds[k, 2],
                    dirs[k, 0], dirs[k, 1], dirs[k, 2], is_line[k], line, n_q, half_size, point, a0, inv_da,
                    r_min, col_map,
                )  # fmt: skip


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


def warm_up() -> None:
    """Compile (or load from cache) every kernel on a tiny problem."""
    one = np.zeros((1, 3))
    flag = np.ones(1, dtype=np.bool_)
    table: NDArray[np.float64] = np.ones(4)
    args = (one, one + 1.0, np.array([[0.0, 0.0, 1.0]]), np.ones(1), flag, table, 2, 0, np.ones(2), 0.3,
            10.0, 0.1, np.array([0.0, 1.0]))  # fmt: skip
    table_dose_rate(*args, np.zeros(1))
    table_contributions(*args, np.zeros((1, 1), dtype=np.float32))
    table_dose_rate_grid(1, 1, np.eye(3, 4), *args[1:], np.zeros(1))
