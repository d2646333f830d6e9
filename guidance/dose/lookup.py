"""Dense per-model look-up tables of the TG-43U1 dose rate, for the fast kernels.

The exact formalism costs two table searches, an arctangent and an arccosine
per seed-voxel pair. The fast path precomputes, once per seed model and
option set, the dose rate per unit air-kerma strength times r^2 (smooth: the
inverse square is taken out) on a grid in

- a = sqrt(r), r from the minimum radius to ``r_max_cm`` (fine steps near the
  seed where the line-source geometry changes fastest, coarser far away), and
- q = sqrt(1 - |cos theta|), which is proportional to theta near the seed
  axis (where F is tabulated every 5 degrees) and to cos theta near the
  transverse plane, so uniform steps in q resolve both;

the q columns are uniform between consecutive tabulated F angles, so every
F node falls on a column and the bilinear look-up never straddles a kink of
F (a first-order error otherwise: 1.3% for the 20-angle Pd-103 model 200).
The fractional column of a q is read, branch-free, from ``col_map``: that
piecewise-linear map sampled at 16384 uniform bins and interpolated linearly
(exact except inside the bins that hold an F node, where the column is off by
a small fraction of a bin). A kernel then only needs a coordinate transform
(three square roots and a division) and two linear look-ups per pair. Sources with F tabulated to 180
degrees get a second half for cos theta < 0. The 1D (point-source) form gets a
1D table over the same a grid.

Beyond ``r_max_cm`` the look-up keeps the value at r_max times (r_max / r)^2:
there g_L (extrapolated exponentially) makes the dose negligible (6711, 20 cm:
about 1e-5 cGy/h per U).

The table's accuracy against the exact formalism is measured by
:func:`lookup_error` (reported by the tests and bench/dose.py).

The numba kernels read the same table in another layout (:func:`kernel_table`):
float32 values (relative rounding 6e-8, far below the table's error) with rows
i and i + 1 interleaved, so that the four corners of a bilinear look-up are 16
consecutive bytes (one cache line, mostly) and the table takes 3 MB per half
instead of 6, and the column map as (column, increment) pairs.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.dose import tg43
from guidance.dose.source_data import SourceData

__all__ = [
    "KernelTable",
    "LookupTable",
    "build_lookup_table",
    "kernel_table",
    "lookup_dose_rate_per_u",
    "lookup_error",
]

_R_MAX_CM = 20.0
_A_STEP = 0.002  # in sqrt(cm): 0.02 mm steps at r = 2 mm, 0.18 mm at 20 cm
_COLS_PER_Q = 384  # about 385 columns in all
_BINS = 16384


@dataclass(frozen=True, eq=False)
class LookupTable:
    """r^2 x dose rate per U on the (a = sqrt r, q = sqrt(1 - |cos theta|)) grid.

    Parameters
    ----------
    line : ndarray of shape (halves, n_a, n_q), float64
        2D form; halves = 1 for F tabulated 0-90 deg, 2 for 0-180 (second half
        for cos theta < 0).
    point : ndarray of shape (n_a,), float64
        1D form.
    a0 : float
        The first a node (sqrt cm), at or just below sqrt(r_min); a = 1 is a
        node, so the reference point (1 cm, 90 deg) is looked up exactly.
    a_step : float
    r_min_cm : float
    q_nodes : ndarray of shape (segments + 1,)
        q of the tabulated F angles (folded to 0-90 deg), segment bounds.
    col_map : ndarray of shape (bins + 1,)
        Fractional column index at q = b / bins.
    """

    line: NDArray[np.float64]
    point: NDArray[np.float64]
    a0: float
    a_step: float
    r_min_cm: float
    q_nodes: NDArray[np.float64]
    col_map: NDArray[np.float64]


def _nodes(source: SourceData, options: tg43.Tg43Options) -> tuple[float, NDArray[np.float64]]:
    """(r_min, a nodes): a uniform from at or below sqrt(r_min), with a = 1 (r0 = 1 cm) a node."""
    r_min = tg43.minimum_radius_cm(source, options)
    below = int(np.ceil((1.0 - np.sqrt(r_min)) / _A_STEP))
    above = int(np.ceil((np.sqrt(_R_MAX_CM) - 1.0) / _A_STEP))
    nodes: NDArray[np.float64] = 1.0 + _A_STEP * np.arange(-below, above + 1, dtype=np.float64)
    return r_min, nodes


def _columns(source: SourceData) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Column positions q (piecewise uniform between F angle nodes), the nodes, and col_map."""
    theta = np.asarray(source.f_theta_deg)
    folded = np.unique(np.concatenate([np.minimum(theta, 180.0 - theta), [0.0, 90.0]]))
    q_nodes = np.sqrt(1.0 - np.cos(np.deg2rad(folded)))
    q_nodes = q_nodes / q_nodes[-1]  # exactly 0 .. 1
    widths = np.diff(q_nodes)
    counts = np.maximum(1, np.round(widths * _COLS_PER_Q).astype(np.int64))
    seg_col0 = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    q = np.concatenate(
        [q_nodes[k] + widths[k] * np.arange(counts[k]) / counts[k] for k in range(counts.size)]
        + [q_nodes[-1:]]
    )
    q_bins = np.arange(_BINS + 1) / _BINS
    seg = np.clip(np.searchsorted(q_nodes, q_bins, side="right") - 1, 0, counts.size - 1)
    col_map = seg_col0[seg] + (q_bins - q_nodes[seg]) * (counts / widths)[seg]
    return q, q_nodes, col_map


@functools.cache
def build_lookup_table(source: SourceData, options: tg43.Tg43Options) -> LookupTable:
    """The look-up table of ``source`` under ``options`` (built once, then cached)."""
    r_min, a = _nodes(source, options)
    r = a * a
    # The first node lies up to one step below r_min: tabulate the formalism
    # itself there (not the clamped value) so that interpolating between the
    # first two nodes at r_min gives the value at r_min.
    options = dataclasses.replace(options, min_radius_cm=min(float(r[0]), r_min))
    q, q_nodes, col_map = _columns(source)
    cos_theta = 1.0 - q * q
    sin_theta = np.sqrt(np.clip(1.0 - cos_theta * cos_theta, 0.0, None))
    halves = 1 if source.f_symmetric else 2
    line = np.empty((halves, r.size, q.size))
    for half in range(halves):
        sign = 1.0 if half == 0 else -1.0
        along = sign * r[:, np.newaxis] * cos_theta[np.newaxis, :]
        away = r[:, np.newaxis] * sin_theta[np.newaxis, :]
        line[half] = tg43.dose_rate_line_per_u(source, along, away, options) * (r * r)[:, np.newaxis]
    point = tg43.dose_rate_point_per_u(source, r, options) * r * r
    for array in (line, point, q_nodes, col_map):
        array.setflags(write=False)
    return LookupTable(
        line=line,
        point=point,
        a0=float(a[0]),
        a_step=_A_STEP,
        r_min_cm=r_min,
        q_nodes=q_nodes,
        col_map=col_map,
    )


@dataclass(frozen=True, eq=False)
class KernelTable:
    """A :class:`LookupTable` in the layout of the numba kernels (:func:`kernel_table`).

    Parameters
    ----------
    pairs : ndarray of shape (halves * (n_a - 1) * n_q * 2,), float32
        Element ``2 (n_q (h (n_a - 1) + i) + j)`` is ``line[h, i, j]``, the next
        one ``line[h, i + 1, j]``: a look-up in cell (i, j) reads 4 consecutive values.
    n_q : int
        Columns.
    half_offset : int
        Start of the second half (cos theta < 0) in ``pairs``; 0 if symmetric.
    point : ndarray of shape (n_a,), float64
    columns : ndarray of shape (bins, 2), float64
        Per bin of q: fractional column at the bin start, increment across the bin.
    a0, inv_a_step, r_min_cm : float
    """

    pairs: NDArray[np.float32]
    n_q: int
    half_offset: int
    point: NDArray[np.float64]
    columns: NDArray[np.float64]
    a0: float
    inv_a_step: float
    r_min_cm: float


@functools.cache
def kernel_table(table: LookupTable) -> KernelTable:
    """The kernel layout of ``table`` (built once per table, then cached)."""
    halves, n_a, n_q = table.line.shape
    pairs = np.stack([table.line[:, :-1, :], table.line[:, 1:, :]], axis=-1).astype(np.float32).reshape(-1)
    columns = np.stack([table.col_map[:-1], np.diff(table.col_map)], axis=-1)
    for array in (pairs, columns):
        array.setflags(write=False)
    return KernelTable(
        pairs=pairs,
        n_q=n_q,
        half_offset=(n_a - 1) * n_q * 2 if halves == 2 else 0,
        point=table.point,
        columns=columns,
        a0=table.a0,
        inv_a_step=1.0 / table.a_step,
        r_min_cm=table.r_min_cm,
    )


def lookup_dose_rate_per_u(
    table: LookupTable, along_cm: NDArray[np.float64], away_cm: NDArray[np.float64], *, line: bool = True
) -> NDArray[np.float64]:
    """Dose rate per U from the table (numpy; the kernels do the same per pair)."""
    r = np.hypot(along_cm, away_cm)
    r_c = np.maximum(r, table.r_min_cm)
    cos_theta = np.where(r > 0, along_cm / np.where(r > 0, r, 1.0), 0.0)
    fa = np.clip((np.sqrt(r_c) - table.a0) / table.a_step, 0.0, table.point.size - 1.0)
    i = np.minimum(fa.astype(np.int64), table.point.size - 2)
    wa = fa - i
    if not line:
        h = table.point[i] * (1 - wa) + table.point[i + 1] * wa
        result: NDArray[np.float64] = h / (r_c * r_c)
        return result
    half = np.where((cos_theta < 0) & (table.line.shape[0] == 2), 1, 0)
    n_q = table.line.shape[2]
    n_bins = table.col_map.size - 1
    t = np.sqrt(np.maximum(1.0 - np.abs(cos_theta), 0.0)) * n_bins
    b = np.minimum(t.astype(np.int64), n_bins - 1)
    fq = table.col_map[b] + (table.col_map[b + 1] - table.col_map[b]) * (t - b)
    j = np.minimum(fq.astype(np.int64), n_q - 2)
    wq = fq - j
    grid = table.line
    h = (grid[half, i, j] * (1 - wq) + grid[half, i, j + 1] * wq) * (1 - wa) + (
        grid[half, i + 1, j] * (1 - wq) + grid[half, i + 1, j + 1] * wq
    ) * wa
    result = h / (r_c * r_c)
    return result


def lookup_error(
    source: SourceData,
    options: tg43.Tg43Options,
    *,
    r_from_cm: float = 0.1,
    r_to_cm: float = 15.0,
    n: int = 200_000,
) -> float:
    """Largest relative error of the 2D table against the exact formalism at random points.

    Points are drawn uniformly in log r between ``r_from_cm`` and ``r_to_cm``
    and uniformly in cos theta (deterministic seed).
    """
    rng = np.random.default_rng(43)
    r = np.exp(rng.uniform(np.log(r_from_cm), np.log(r_to_cm), n))
    cos_theta = rng.uniform(-1.0, 1.0, n)
    along, away = r * cos_theta, r * np.sqrt(1.0 - cos_theta**2)
    exact = tg43.dose_rate_line_per_u(source, along, away, options)
    table = build_lookup_table(source, options)
    fast = lookup_dose_rate_per_u(table, along, away)
    return float(np.max(np.abs(fast / exact - 1.0)))
