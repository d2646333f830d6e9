"""How a cluster of touching seeds lies: side by side, end to end, stacked, in a row or apart.

Step 4 of :mod:`guidance.detection.seeds`: a region holding 2 to ``max_cluster`` seeds is
split into parts; where the region is one seed long (side by side) or as long as its count
(end to end), the seeds are placed by that model from the whole region's principal axes
(:mod:`guidance.detection.clusters`). On thick slices a cluster one seed long by its 3-D
spread but longer in the slice plane than a seed is a row the slices hide; a cluster longer
in the slice plane than its seeds could be end to end along its axis holds seeds lying across
it, one over another; two steep seeds balanced across a slice boundary may lie either side by
side or end to end.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from guidance.detection.along_slices import in_plane_axis_mm, in_plane_variances
from guidance.detection.candidates import SEED_LENGTH_MM, thick_slices
from guidance.detection.clusters import (
    chain_pitch,
    end_to_end,
    in_plane_row,
    side_by_side,
    slice_indices,
    spread,
    stacked,
)
from guidance.detection.regions import Region
from guidance.detection.result import SeedOptions
from guidance.volume import Grid

__all__ = [
    "APART", "Layout", "chain_count", "cluster_layout", "count_by_length", "region_in_plane_axis_mm",
    "side_by_side_pairs",
]  # fmt: skip


# A chain's excess is at most this much longer in the slice plane than its seeds end to end
# along its axis (measured up to 1.35 x: blur and the slices' staircase); stacked seeds 2.1 x.
_STACKED = 1.7
# Two touching seeds this steep (at most this many seed lengths in-plane) and balanced across
# two slices may lie side by side or end to end (:func:`_side_or_chain`).
_SIDE_OR_CHAIN_IN_PLANE = 0.6
_SHARE_NOISE = 0.05


def chain_count(region: Region, elongation: float, grid: Grid) -> int:
    """Seeds end to end in a region, from its length: variance p^2 (n^2 - 1) / 12 + one seed's.

    ``elongation`` is one seed's largest minus second variance in this scan (its marker's
    length, blurred); the pitch p of touching seeds is their length.
    """
    return count_by_length(region.points_mm, region.excess, elongation, grid)


def count_by_length(
    points: NDArray[np.float64], weights: NDArray[np.float64], elongation: float, grid: Grid
) -> int:
    """Seeds end to end in these voxels (LPS mm) with these excess weights (see :func:`chain_count`)."""
    values = spread(points, weights, grid)
    excess = max(0.0, float(values[0] - values[1]) - elongation)
    return max(1, round(float(np.sqrt(1.0 + 12.0 * excess / SEED_LENGTH_MM**2))))


def side_by_side_pairs(
    positions: NDArray[np.float64], points: NDArray[np.float64], weights: NDArray[np.float64],
    labels: NDArray[np.int64], elongation: float, grid: Grid, opts: SeedOptions,
) -> NDArray[np.float64]:  # fmt: skip
    """The parts' positions (k, 3), each two parts together one seed long placed side by side.

    In a cluster of touching seeds in no single row ("mixed"), two seeds side by side are
    split like any other two, and on slices as thick as the pair is wide the split puts its
    parts up to a slice apart. Two parts at most a diameter and a voxel apart whose voxels
    together are one seed long (:func:`count_by_length`) are placed as touching seeds side by side are
    (:func:`guidance.detection.clusters.side_by_side`), each at the place nearer its part; the
    nearest two parts first.
    """
    placed = positions.copy()
    pairs = sorted(
        (float(np.linalg.norm(positions[i] - positions[j])), i, j)
        for i in range(len(positions))
        for j in range(i + 1, len(positions))
    )
    # Touching side by side, a diameter apart; the split may put their parts a voxel further.
    reach_mm = opts.seed_diameter_mm + float(np.max(grid.spacing_mm))
    done: set[int] = set()
    for distance_mm, i, j in pairs:  # the nearest parts first
        if i in done or j in done or distance_mm > reach_mm:
            continue
        pair = (labels == i) | (labels == j)
        if count_by_length(points[pair], weights[pair], elongation, grid) != 1:
            continue
        row = side_by_side(points[pair], weights[pair], 2, grid, opts.seed_diameter_mm)
        straight = np.linalg.norm(row - positions[[i, j]], axis=1).sum()
        crossed = np.linalg.norm(row[::-1] - positions[[i, j]], axis=1).sum()
        placed[[i, j]] = row if straight <= crossed else row[::-1]
        done.update((i, j))
    return placed


class Layout(NamedTuple):
    """How a cluster's seeds lie: ``kind``, and their places by its model (None: the split's parts stand)."""

    kind: str  # "side_by_side", "chain", "side_or_chain", "row" (in-plane), "stacked", "apart" or "mixed"
    positions: NDArray[np.float64] | None = None


APART = Layout("apart")


def cluster_layout(region: Region, count: int, elongation: float, grid: Grid, opts: SeedOptions) -> Layout:
    """Where a split cluster's touching seeds lie by their model, or why the split's parts stand.

    One seed long and several seeds heavy: side by side, a row a diameter apart, unless the
    excess is longer in the slice plane than a seed (by a fifth): thick slices can hide a
    chain's length along the slice axis, not in-plane (then "apart": the split's parts). As long
    as its count with a pitch of touching seeds (up to 1.15 seed lengths): a chain, evenly
    along its axis. Longer than that: "apart" (seeds apart, joined by blur or streaks: each
    part is one, with its own axis); shorter: "mixed" (touching, in no single row: the parts
    stand). Two steep seeds the thick slices show as well side by side as end to end
    (:func:`_side_or_chain`): between the two ("side_or_chain").
    """
    if count == 2 and thick_slices(grid, opts) and _side_or_chain(region, grid):
        # Between the two: half a seed length apart along the cluster's axis, a quarter of the
        # pitch from either's places (side by side: together; end to end: a seed length apart).
        half = end_to_end(region.points_mm, region.excess, count, grid, 0.5 * SEED_LENGTH_MM)
        return Layout("side_or_chain", half)
    by_length = chain_count(region, elongation, grid)
    if by_length == 1 and _in_plane_length(region, grid) > 1.2 * SEED_LENGTH_MM:
        # Longer in-plane than a seed: not side by side, whatever the slices show. On thick
        # slices their spread hides the row from the 3-D axes (and may turn a split across it).
        if thick_slices(grid, opts):
            return Layout("row", in_plane_row(region.points_mm, region.excess, count, grid))
        return APART
    if by_length == 1:
        row = side_by_side(region.points_mm, region.excess, count, grid, opts.seed_diameter_mm)
        return Layout("side_by_side", row)
    if by_length < count:
        return Layout("mixed")
    pitch = chain_pitch(region.points_mm, region.excess, count, grid, elongation)
    chain = end_to_end(region.points_mm, region.excess, count, grid, max(pitch, 0.9 * SEED_LENGTH_MM))
    across = region_in_plane_axis_mm(region, grid) > _STACKED * _chain_in_plane_mm(chain, grid)
    if across and thick_slices(grid, opts):
        # Longer in the slice plane than seeds end to end along its axis can be: the seeds lie
        # across it, one over another in consecutive slices (their pixels overlap in-plane).
        return Layout("stacked", stacked(region.points_mm, region.excess, count, grid))
    if by_length > count or pitch > 1.15 * SEED_LENGTH_MM:
        return APART
    return Layout("chain", chain)


def _side_or_chain(region: Region, grid: Grid) -> bool:
    """Whether two steep touching seeds may lie side by side or end to end: thick slices show either.

    Two slices next to each other hold the excess (90% of it), each showing one seed's worth.
    Side by side across their boundary, each slice sees half of both seeds; end to end
    across it, each sees one seed and the two halves of the in-plane picture are the same.
    Seeds end to end reach further along the slice axis, sqrt((2 L)^2 - l^2) for an in-plane
    length l: they show only these two slices while the larger share is at most a slice's
    thickness over that reach (plus 0.05 for the shares' noise). Only steep pairs (the region
    and each of its two slices at most 0.6 seed lengths in-plane): flatter ones are far
    likelier a chain, and seeds lying across the slices, stacked over one another, are long
    in-plane in their slice.
    """
    if region.slice_sums is None:
        return False
    index, amplitude, _ = region.slice_sums.amplitudes()
    shares = np.clip(amplitude, 0.0, None)
    if len(shares) < 2 or not shares.sum() > 0:
        return False
    top = np.argsort(shares)[::-1][:2]
    in_plane = region_in_plane_axis_mm(region, grid)
    steep_mm = _SIDE_OR_CHAIN_IN_PLANE * SEED_LENGTH_MM
    if abs(int(index[top[0]]) - int(index[top[1]])) != 1 or in_plane > steep_mm:
        return False
    if shares[top].sum() < 0.9 * shares.sum():
        return False
    slice_of = slice_indices(region.points_mm, grid)
    for k in index[top]:
        own = slice_of == k
        if not region.excess[own].sum() > 0:  # the slice's share is not the region's own pixels
            return False
        if in_plane_axis_mm(region.points_mm[own], region.excess[own], grid) > steep_mm:
            return False
    reach_mm = math.sqrt((2 * SEED_LENGTH_MM) ** 2 - in_plane**2)
    return bool(shares[top[0]] / shares.sum() <= float(grid.spacing_mm[0]) / reach_mm + _SHARE_NOISE)


def _chain_in_plane_mm(chain: NDArray[np.float64], grid: Grid) -> float:
    """How long (k, 3) seeds end to end from ``chain[0]`` to ``chain[-1]`` are in the slice plane, mm.

    k seed lengths times the sine of the chain's angle to the slice axis.
    """
    step = chain[-1] - chain[0]
    length = float(np.linalg.norm(step))
    if length == 0:
        return 0.0
    along = float(step @ np.asarray(grid.axes[0]))
    sine = math.sqrt(max(0.0, 1.0 - (along / length) ** 2))
    return len(chain) * SEED_LENGTH_MM * sine


def _in_plane_length(region: Region, grid: Grid) -> float:
    """The excess's length in the slice plane: sqrt(12 x its largest in-plane variance), mm.

    Each pixel's own extent is removed from the variance.

    In-plane pixels resolve what thick slices do not: side-by-side seeds are never longer
    in-plane than one seed, touching seeds end to end are unless their axis is steep.
    """
    return float(np.sqrt(12.0 * _in_plane_variances(region, grid)[-1]))


def region_in_plane_axis_mm(region: Region, grid: Grid) -> float:
    """The length of a seed's axis projected on the slice plane (:func:`in_plane_axis_mm`), mm."""
    return in_plane_axis_mm(region.points_mm, region.excess, grid)


def _in_plane_variances(region: Region, grid: Grid) -> NDArray[np.float64]:
    """The excess's variances in the slice plane (:func:`in_plane_variances`), mm^2."""
    return in_plane_variances(region.points_mm, region.excess, grid)
