"""Touching seeds split apart: weighted k-means or equal-excess slabs, the most seed-like wins.

Helpers of :mod:`guidance.detection.seeds`: each region's voxels (LPS mm) carry their
excess HU over the local background as weights. Also a seed's long axis from them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from guidance.detection.lines import principal_line
from guidance.detection.result import SeedOptions
from guidance.volume import Grid

__all__ = [
    "centroid", "chain_pitch", "end_to_end", "in_plane_row", "long_axis", "side_by_side", "slice_indices",
    "split", "spread", "stacked",
]  # fmt: skip


def centroid(points: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weighted mean (mm) of (n, 3) points; the plain mean where the weights are all zero."""
    w = weights if weights.sum() > 0 else np.ones(len(weights))
    centre: NDArray[np.float64] = (points * w[:, None]).sum(axis=0) / w.sum()
    return centre


def long_axis(
    points: NDArray[np.float64], weights: NDArray[np.float64], grid: Grid, opts: SeedOptions
) -> NDArray[np.float64]:
    """A seed's unit long axis from its weighted points, or NaN when the geometry does not show it.

    The principal axis of the excess after removing each voxel's own extent (spacing^2 / 12
    per axis), when it stands out (``orientation_ratio``), the voxels cannot tilt it by more
    than ``max_orientation_uncertainty_deg`` and, on slices thicker than
    ``max_slice_for_axial_orientation_mm``, it lies away from the slice normal.
    """
    if weights.sum() <= 0 or len(points) < 4:
        return np.full(3, np.nan)
    centre = centroid(points, weights)
    offset = points - centre
    cov = (offset * weights[:, None]).T @ offset / weights.sum()
    axes = np.asarray(grid.affine)[:3, :3]
    cov = cov - axes @ np.diag(np.full(3, 1.0 / 12.0)) @ axes.T  # each voxel's own extent
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    if values[0] <= 0.25 or values[0] < opts.orientation_ratio * max(values[1], 1e-6):
        return np.full(3, np.nan)
    # The voxel-extent correction is exact only on average: its error, up to the largest
    # voxel side's variance d^2/12, tilts the axis by about atan(error / elongation).
    uncertainty = np.degrees(np.arctan(float(np.max(grid.spacing_mm)) ** 2 / 12.0 / (values[0] - values[1])))
    if uncertainty > opts.max_orientation_uncertainty_deg:
        return np.full(3, np.nan)
    direction = vectors[:, 0]
    slice_normal = grid.axes[0]
    if grid.spacing_mm[0] > opts.max_slice_for_axial_orientation_mm and abs(
        float(direction @ slice_normal)
    ) > np.cos(np.radians(45.0)):
        return np.full(3, np.nan)
    result: NDArray[np.float64] = direction if direction[np.argmax(np.abs(direction))] > 0 else -direction
    return result


def split(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, grid: Grid, elongation: float,
    *, one_seed_long: bool = False, one_apart: bool = False,
) -> tuple[NDArray[np.int64], float]:  # fmt: skip
    """Labels of the most seed-like partition: k-means, or equal-excess slabs across a principal axis.

    k-means prefers cutting side-by-side seeds across their length (the halves are more
    compact than the seeds), whatever its start; slabs across the second principal axis cut
    them apart. Each part of the right partition is one seed: its largest minus second
    variance is near ``elongation``, a single seed's in this scan. A cluster ``one_seed_long``
    (its length counts one seed) holds seeds beside one another: only slabs across its second
    and third axes are tried (a cut across its length makes halves of seeds, which streaks
    and blur can make look as seed-like). With ``one_apart`` (3 seeds or more), one seed set
    apart and the rest split on their own is a candidate too (:func:`_one_apart`). Returns the
    labels and the mean misfit of a part (mm^2).
    """
    _, _, vectors = principal_line(points, weights + 1e-9)
    best: tuple[float, NDArray[np.int64]] | None = None
    if one_seed_long:
        candidates = [_slabs(points, weights, k, vectors[:, axis]) for axis in (1, 2)]
    else:
        candidates = [_weighted_kmeans(points, weights, k, vectors[:, 0])]
        candidates += [_slabs(points, weights, k, vectors[:, axis]) for axis in range(3)]
        if one_apart and k >= 3:
            candidates += _one_apart(points, weights, k, grid, elongation, vectors[:, 0])
    for labels in candidates:
        misfit = 0.0
        for j in range(k):
            members = labels == j
            values = spread(points[members], weights[members], grid)
            misfit += abs(float(values[0] - values[1]) - elongation)
        if best is None or misfit < best[0] - 1e-9:
            best = (misfit, labels)
    assert best is not None
    return best[1], best[0] / k


def _one_apart(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, grid: Grid, elongation: float,
    axis: NDArray[np.float64],
) -> list[NDArray[np.int64]]:  # fmt: skip
    """The partition of a cluster into one seed apart (label 0) and the other ``k - 1`` split among
    themselves, or none where a half holds too few voxels.

    A pair of seeds side by side with a third one seed-length off holds three seeds over two
    seeds' length: cut into three at once (k-means, slabs across the whole cluster's axes) the
    pair is cut across its length, 1-1.6 mm off. Two means along the cluster's axis set one
    end apart, the half holding nearer one k-th of the excess; the rest is split as a cluster
    of its own, where side by side seeds are cut apart.
    """
    halves = _weighted_kmeans(points, weights, 2, axis)
    share = float(weights[halves == 0].sum()) / max(float(weights.sum()), 1e-12)
    rest = 1 if abs(share - 1.0 / k) <= abs(1.0 - share - 1.0 / k) else 0
    members = halves == rest
    if members.sum() < k or members.all():
        return []
    labels = np.zeros(len(points), dtype=np.int64)
    sub, _ = split(points[members], weights[members], k - 1, grid, elongation)
    labels[members] = sub + 1
    return [labels]


def spread(points: NDArray[np.float64], weights: NDArray[np.float64], grid: Grid) -> NDArray[np.float64]:
    """Variances (mm^2, descending) of the excess about its centroid, each voxel's own extent removed."""
    if weights.sum() <= 0 or len(points) < 2:
        return np.zeros(3)
    offset = points - centroid(points, weights)
    axes = np.asarray(grid.affine)[:3, :3]
    own = axes @ np.diag(np.full(3, 1.0 / 12.0)) @ axes.T
    values: NDArray[np.float64] = np.linalg.eigvalsh(
        (offset * weights[:, None]).T @ offset / weights.sum() - own
    )
    return values[::-1]


def _slabs(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, axis: NDArray[np.float64]
) -> NDArray[np.int64]:
    """Labels of k slabs across ``axis`` holding equal excess (seeds side by side, cut between them)."""
    along = points @ axis
    order = np.argsort(along)
    cumulative = np.cumsum(weights[order]) / max(float(weights.sum()), 1e-12)
    labels = np.empty(len(points), dtype=np.int64)
    labels[order] = np.minimum((cumulative * k - 1e-9).astype(np.int64), k - 1)
    return labels


def _weighted_kmeans(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, start_axis: NDArray[np.float64]
) -> NDArray[np.int64]:
    """Labels of a weighted k-means (Lloyd) started at weight quantiles along ``start_axis``."""
    centre = centroid(points, weights)
    along = (points - centre) @ start_axis
    order = np.argsort(along)
    cumulative = np.cumsum(weights[order]) / max(weights.sum(), 1e-12)
    starts = [order[min(len(order) - 1, int(np.searchsorted(cumulative, (i + 0.5) / k)))] for i in range(k)]
    centres = points[starts].copy()
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(30):
        distance = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)
        new = np.argmin(distance, axis=1).astype(np.int64)
        for j in range(k):
            members = new == j
            if weights[members].sum() > 0:
                centres[j] = centroid(points[members], weights[members])
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _principal_axes(
    points: NDArray[np.float64], weights: NDArray[np.float64], grid: Grid
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Centroid, variances (ascending) and axes (columns) of the excess, voxel extent removed."""
    centre = centroid(points, weights)
    offset = points - centre
    w = weights if weights.sum() > 0 else np.ones(len(weights))
    axes = np.asarray(grid.affine)[:3, :3]
    covariance = (offset * w[:, None]).T @ offset / w.sum() - axes @ np.diag(np.full(3, 1.0 / 12.0)) @ axes.T
    values, vectors = np.linalg.eigh(covariance)
    return centre, values, vectors


def chain_pitch(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, grid: Grid, elongation: float
) -> float:
    """Centre-to-centre distance (mm) of k seeds evenly along the excess's longest axis.

    From the chain's length: its variance along the axis less one seed's is
    pitch^2 (k^2 - 1) / 12 (``elongation``: one seed's largest minus second variance).
    """
    _, values, _ = _principal_axes(points, weights, grid)
    excess = max(0.0, float(values[-1] - values[-2]) - elongation)
    return float(np.sqrt(12.0 * excess / (k * k - 1)))


def end_to_end(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, grid: Grid, pitch_mm: float
) -> NDArray[np.float64]:
    """Centres (k, 3) of k seeds in a chain: ``pitch_mm`` apart along the excess's longest axis.

    The axis, measured over the whole chain about its centroid, places each seed along
    the slice axis better than its part of a split, whose voxels are whole thick slices.
    """
    centre, _, vectors = _principal_axes(points, weights, grid)
    placed: NDArray[np.float64] = centre + np.outer((np.arange(k) - (k - 1) / 2.0) * pitch_mm, vectors[:, -1])
    return placed


def side_by_side(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, grid: Grid, pitch_mm: float
) -> NDArray[np.float64]:
    """Centres (k, 3) of k seeds lying side by side, touching: a row across their common axis.

    The seeds' common axis is the excess's longest principal axis and the row runs along
    the second (each voxel's own extent removed), through the centroid, ``pitch_mm``
    (a seed's diameter) from centre to centre. Within a thick slice a split cannot tell
    how such seeds are stacked along the slice axis and puts its parts up to a slice
    apart; this places them as touching seeds are, off by at most the row's length.
    """
    centre, _, vectors = _principal_axes(points, weights, grid)
    row = vectors[:, -2]
    steps = (np.arange(k) - (k - 1) / 2.0) * pitch_mm
    placed: NDArray[np.float64] = centre + np.outer(steps, row)
    return placed


def in_plane_row(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, grid: Grid
) -> NDArray[np.float64]:
    """Centres (k, 3) of k seeds in a row along the excess's longest in-plane axis: equal-excess slabs.

    For seeds longer together in the slice plane than one seed, on slices thick enough to
    hide their extent along the slice axis: the slices' spread makes the 3-D axes (and the
    length they count) unreliable, and a split may cut such seeds across their width. The
    pixels resolve the row; each slab's centroid places its seed, along the slice axis too.
    """
    plane = np.stack([grid.axes[1], grid.axes[2]]).astype(np.float64)
    offset = (points - centroid(points, weights)) @ plane.T
    w = weights if weights.sum() > 0 else np.ones(len(weights))
    _, vectors = np.linalg.eigh((offset * w[:, None]).T @ offset / w.sum())
    along = offset @ vectors[:, -1]
    order = np.argsort(along, kind="stable")
    cumulative = np.cumsum(w[order]) / w.sum()
    labels = np.empty(len(points), dtype=np.int64)
    labels[order] = np.minimum((cumulative * k - 1e-9).astype(np.int64), k - 1)
    return np.array([centroid(points[labels == j], w[labels == j]) for j in range(k)])


def stacked(
    points: NDArray[np.float64], weights: NDArray[np.float64], k: int, grid: Grid
) -> NDArray[np.float64]:
    """Centres (k, 3) of k seeds one above another along the slice axis: whole slices each.

    For seeds lying across the slice axis in consecutive thick slices, one over another: their
    pixels overlap in the slice plane, and neither k-means nor slabs across a 3-D axis part
    them by slice. Each slice goes to one seed, in order along the slice axis, by where the
    middle of its excess falls in the region's (k equal shares); each seed is the centroid
    of its slices.
    """
    slices = slice_indices(points, grid)
    w = weights if weights.sum() > 0 else np.ones(len(weights))
    index, inverse = np.unique(slices, return_inverse=True)
    per_slice = np.bincount(inverse, weights=w, minlength=len(index))
    middle = (np.cumsum(per_slice) - per_slice / 2.0) / per_slice.sum()
    labels = np.minimum((middle * k).astype(np.int64), k - 1)[inverse]
    return np.array([centroid(points[labels == j], w[labels == j]) if np.any(labels == j)
                     else centroid(points, w) for j in range(k)])  # fmt: skip


def slice_indices(points: NDArray[np.float64], grid: Grid) -> NDArray[np.int64]:
    """The slice of the volume each of (n, 3) voxel centres (LPS mm) lies in (n,)."""
    slices: NDArray[np.int64] = np.rint(grid.patient_to_index(points)[:, 0]).astype(np.int64)
    return slices
