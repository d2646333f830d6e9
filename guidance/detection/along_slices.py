"""Seeds on thick slices placed along the slice axis by how much of each seed every slice sees.

Helpers of :mod:`guidance.detection.seeds`. The excess-weighted centroid of a seed's voxels
pulls it towards its slice's centre (by up to the flat top of the slice profile):
:func:`guidance.detection.slice_profile.offset_in_slice_mm` inverts instead the centroid of
the slice seeing most of the seed and its two neighbours, each slice's share measured by a
filter matched to the seed's in-plane footprint, through the profiles a scanner may have.

A seed's extent along the slice axis comes from its axis' length in the slice plane against
that of a seed lying flat in the same scan: thick slices resolve it better than the 3-D axis.
The seeds of a cluster split into parts that stand on their own share its footprint: each
takes the pixels nearer to it than to the others.

Seeds of one strand (three or more end to end along their axes, in one region or several)
lie on their needle's straight track: their positions along the slice axis are fitted by a
line through their in-plane positions (:func:`chains`, :func:`on_strand_line`). A strand's
neighbours sit in the slices next to each of its seeds, where they disturb its share.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from guidance.detection.clusters import centroid
from guidance.detection.lines import principal_line
from guidance.detection.slice_profile import SliceStack, SliceSums, offset_in_slice_mm
from guidance.volume import Grid

__all__ = [
    "chains", "in_plane_axis", "in_plane_axis_mm", "in_plane_variances", "on_strand_line", "place_parts",
    "place_seed",
]  # fmt: skip

# A neighbouring slice's share of a seed that tails of other seeds, streaks and anatomy can
# fake (matched-filter amplitudes beside seeds in flat-top slices reach 0.05): the least
# tolerance of a slice centroid, in slice thicknesses.
_STRUCTURE_SHARE = 0.06
# Seeds of one strand: the angle between their in-plane step and their in-plane axes, at most
# degrees; their distance, at most seed lengths; their in-plane offset from the strand's line, mm.
_STRAND_ANGLE, _STRAND_STEP, _STRAND_LATERAL_MM = 20.0, 1.6, 1.0


def in_plane_variances(
    points_mm: NDArray[np.float64], weights: NDArray[np.float64], grid: Grid
) -> NDArray[np.float64]:
    """The weighted variances of (n, 3) points in the slice plane, mm^2.

    Ascending, each pixel's own extent (spacing^2 / 12) removed, at least 0. Plain variances
    where the weights are all zero.
    """
    covariance = _in_plane_covariance(points_mm, weights, grid)
    values: NDArray[np.float64] = np.maximum(np.linalg.eigvalsh(covariance), 0.0)
    return values


def _in_plane_covariance(
    points_mm: NDArray[np.float64], weights: NDArray[np.float64], grid: Grid
) -> NDArray[np.float64]:
    """The (2, 2) weighted covariance of the points along rows and columns, pixels' extent removed, mm^2."""
    plane = np.stack([grid.axes[1], grid.axes[2]]).astype(np.float64)
    w = weights if weights.sum() > 0 else np.ones(len(points_mm))
    offset = (points_mm - centroid(points_mm, weights)) @ plane.T
    covariance: NDArray[np.float64] = (offset * w[:, None]).T @ offset / w.sum()
    covariance -= np.diag(np.asarray(grid.spacing_mm[1:], dtype=np.float64) ** 2 / 12.0)
    return covariance


def in_plane_axis_mm(points_mm: NDArray[np.float64], weights: NDArray[np.float64], grid: Grid) -> float:
    """The length of a seed's axis projected on the slice plane, as the scan shows it, mm.

    sqrt(12 x the difference of its in-plane variances): the blur adds to both. The length of
    :func:`in_plane_axis`.
    """
    return float(np.linalg.norm(in_plane_axis(points_mm, weights, grid)))


def in_plane_axis(
    points_mm: NDArray[np.float64], weights: NDArray[np.float64], grid: Grid
) -> NDArray[np.float64]:
    """A seed's axis in the slice plane: its direction (LPS, sign arbitrary) times its length there, mm.

    The direction is the in-plane covariance's major axis; the length sqrt(12 x the difference
    of its in-plane variances) (:func:`in_plane_axis_mm`).
    """
    plane = np.stack([grid.axes[1], grid.axes[2]]).astype(np.float64)
    values, vectors = np.linalg.eigh(_in_plane_covariance(points_mm, weights, grid))
    values = np.maximum(values, 0.0)
    length = math.sqrt(12.0 * float(values[1] - values[0]))
    axis: NDArray[np.float64] = length * (vectors[:, 1] @ plane)
    return axis


def place_seed(
    position_mm: NDArray[np.float64], sums: SliceSums, *, axis_in_plane_mm: float, flat_mm: float,
    seed_length_mm: float, seed_diameter_mm: float, grid: Grid,
) -> tuple[NDArray[np.float64], float]:  # fmt: skip
    """One seed placed along the slice axis by how much of it each slice sees.

    Parameters
    ----------
    position_mm : ndarray of shape (3,)
        The seed's position (LPS mm); its in-plane part is kept.
    sums : SliceSums
        Each slice's matched sums over the seed's footprint.
    axis_in_plane_mm, flat_mm : float
        The seed's axis length in the slice plane (:func:`in_plane_axis_mm`), and that of a
        seed lying flat in this scan: their ratio is the sine of its angle to the slice axis.
    seed_length_mm, seed_diameter_mm : float
        The seed's capsule.
    grid : Grid
        The scan's grid (contiguous slices: the spacing is the thickness).

    Returns
    -------
    position_mm : ndarray of shape (3,)
    uncertainty_mm : float
        How far along the slice axis the seed may be from it, whichever the profile.
    """
    index, amplitude, sd = sums.amplitudes()
    if len(index) == 0 or not np.any(amplitude > 0):
        return position_mm, 0.0
    main = int(np.argmax(amplitude))
    near = np.abs(index - index[main]) == 1
    sides = {int(index[j] - index[main]): j for j in np.flatnonzero(near)}
    below, above = (max(float(amplitude[sides[k]]), 0.0) if k in sides else 0.0 for k in (-1, 1))
    total = float(amplitude[main]) + below + above
    thickness = float(grid.spacing_mm[0])
    centroid_mm = thickness * (above - below) / total
    noise = [float(sd[sides[k]]) ** 2 for k in (-1, 1) if k in sides]
    # Twice the noise of the centroid, and at least the slices' share of unmodelled structure.
    tolerance_mm = max(2.0 * thickness * math.sqrt(sum(noise)) / total, _STRUCTURE_SHARE * thickness)
    normal = np.asarray(grid.axes[0], dtype=np.float64)
    sine = min(1.0, axis_in_plane_mm / flat_mm) if flat_mm > 0 else 1.0
    cosine = math.sqrt(max(0.0, 1.0 - sine**2))
    offset, uncertainty_mm = offset_in_slice_mm(
        centroid_mm, tolerance_mm, thickness_mm=thickness, extent_mm=seed_length_mm * cosine,
        diameter_mm=seed_diameter_mm * sine,
    )  # fmt: skip
    centre_mm = float(grid.index_to_patient(np.array([[float(index[main]), 0.0, 0.0]]))[0] @ normal)
    result: NDArray[np.float64] = position_mm + normal * (centre_mm + offset - float(position_mm @ normal))
    return result, uncertainty_mm


def place_parts(
    positions_mm: NDArray[np.float64], stack: SliceStack, *, flat_mm: float, seed_length_mm: float,
    seed_diameter_mm: float, grid: Grid,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
    """The seeds of one region placed along the slice axis, each by the pixels nearest it in-plane.

    For touching seeds split into parts that stand on their own: a split of thick slices
    gives each part whole slices, and its centroid is a staircase along the slice axis. In
    the slice plane the pixels resolve the seeds: each pixel of the region's footprint goes
    to the seed nearest it there, and each seed is placed as one (:func:`place_seed`) by the
    slices' matched sums over its own pixels, its axis measured on them.

    Returns the (k, 3) positions and how far along the slice axis each may be (k,), mm. A
    seed without pixels of its own keeps its position (uncertainty 0).
    """
    rows, cols = stack.template.shape
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    first = np.asarray(stack.first_index, dtype=np.float64)
    index = np.stack([np.full(r.size, first[0]), r.ravel() + first[1], c.ravel() + first[2]], axis=1)
    pixels = grid.index_to_patient(index)
    plane = np.stack([grid.axes[1], grid.axes[2]]).astype(np.float64)
    nearest = np.argmin(
        np.linalg.norm((pixels @ plane.T)[:, None, :] - (positions_mm @ plane.T)[None, :, :], axis=2), axis=1
    )
    weights = stack.template.ravel()
    placed = np.array(positions_mm, dtype=np.float64)
    uncertainty = np.zeros(len(positions_mm))
    for j in range(len(positions_mm)):
        own = nearest == j
        if not weights[own].sum() > 0:
            continue
        placed[j], uncertainty[j] = place_seed(
            positions_mm[j], stack.sums(own.reshape(rows, cols)),
            axis_in_plane_mm=in_plane_axis_mm(pixels[own], weights[own], grid), flat_mm=flat_mm,
            seed_length_mm=seed_length_mm, seed_diameter_mm=seed_diameter_mm, grid=grid,
        )  # fmt: skip
    return placed, uncertainty


def chains(
    positions_mm: NDArray[np.float64], axes_mm: NDArray[np.float64], grid: Grid, *, flat_mm: float,
    seed_length_mm: float,
) -> list[NDArray[np.int64]]:  # fmt: skip
    """Runs of three or more seeds end to end along their axes (one strand), each in order.

    Parameters
    ----------
    positions_mm : ndarray of shape (n, 3)
        The seeds' positions (LPS mm).
    axes_mm : ndarray of shape (n, 3)
        Their axes in the slice plane (:func:`in_plane_axis`).
    grid : Grid
        The scan's grid.
    flat_mm, seed_length_mm : float
        How long a seed lying in the slice plane looks in this scan, and a seed's length.

    Two seeds are neighbours in a strand where their in-plane step is within ``_STRAND_ANGLE``
    of both their in-plane axes and each is the other's nearest such seed on that side, their
    distance within ``_STRAND_STEP`` of a seed length (touching seeds; the slice axis may be
    off by a slice's flat top), and their in-plane step at least half what their axes' tilt
    gives touching seeds. A seed whose in-plane axis is shorter than half ``flat_mm`` (within
    30 degrees of the slice axis) shows no in-plane direction and joins none. A run is kept
    where its seeds lie within ``_STRAND_LATERAL_MM`` of one line in the slice plane.
    """
    normal = np.asarray(grid.axes[0], dtype=np.float64)
    in_plane = positions_mm - np.outer(positions_mm @ normal, normal)
    lengths = np.linalg.norm(axes_mm, axis=1)
    shows = lengths >= 0.5 * flat_mm
    units = axes_mm / np.maximum(lengths, 1e-12)[:, None]
    sines = np.minimum(1.0, lengths / max(flat_mm, 1e-12))
    limit = math.cos(math.radians(_STRAND_ANGLE))
    nearest = np.full((len(positions_mm), 2), -1, dtype=np.int64)  # on either side along its axis
    for i in np.flatnonzero(shows):
        step = in_plane - in_plane[i]
        q = np.linalg.norm(step, axis=1)
        along_i = step @ units[i]
        distance = np.linalg.norm(positions_mm - positions_mm[i], axis=1)
        fits = (
            shows & (q > 0) & (distance <= _STRAND_STEP * seed_length_mm)
            & (q >= 0.5 * seed_length_mm * np.minimum(sines, sines[i]))
            & (np.abs(along_i) >= limit * q) & (np.abs(np.sum(step * units, axis=1)) >= limit * q)
        )  # fmt: skip
        for side, on_side in enumerate((along_i > 0, along_i < 0)):
            candidates = np.flatnonzero(fits & on_side)
            if len(candidates):
                nearest[i, side] = candidates[np.argmin(q[candidates])]
    neighbours = [{int(j) for j in pair if j >= 0 and i in nearest[j]} for i, pair in enumerate(nearest)]
    runs: list[NDArray[np.int64]] = []
    seen: set[int] = set()
    for start in range(len(positions_mm)):
        if start in seen or len(neighbours[start]) != 1:
            continue
        run = [start]
        while True:
            following = neighbours[run[-1]] - set(run)
            if len(following) != 1:
                break
            run.append(following.pop())
        seen.update(run)
        if len(run) >= 3 and _lateral_mm(in_plane[run]) <= _STRAND_LATERAL_MM:
            runs.append(np.array(run, dtype=np.int64))
    return runs


def on_strand_line(
    positions_mm: NDArray[np.float64], grid: Grid
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A strand's seeds moved along the slice axis onto one straight line, and how far each moved, mm.

    Seeds of one strand lie on their needle's straight track: their positions along the slice
    axis are a linear function of their in-plane position along the strand (least squares).
    In-plane positions are kept: thick slices place them to a tenth of a millimetre.
    """
    normal = np.asarray(grid.axes[0], dtype=np.float64)
    along = positions_mm @ normal
    in_plane = positions_mm - np.outer(along, normal)
    centre, _, vectors = principal_line(in_plane)
    design = np.stack([(in_plane - centre) @ vectors[:, 0], np.ones(len(positions_mm))], axis=1)
    line = design @ np.linalg.lstsq(design, along, rcond=None)[0]
    moved: NDArray[np.float64] = positions_mm + np.outer(line - along, normal)
    shift: NDArray[np.float64] = line - along
    return moved, shift


def _lateral_mm(points_mm: NDArray[np.float64]) -> float:
    """The largest distance of (n, 3) points from their principal line, mm."""
    centre, _, vectors = principal_line(points_mm)
    centred, direction = points_mm - centre, vectors[:, 0]
    return float(np.max(np.linalg.norm(centred - np.outer(centred @ direction, direction), axis=1)))
