"""A single seed's in-plane direction from the mirror symmetry of its image.

A seed is a cylinder: its image is mirror-symmetric about every plane through its axis. The
plane through its axis and the slice normal is also a symmetry of how a scanner shows it: the
in-plane blur is the same in every in-plane direction, the slice profile lies along the normal,
and a point and its mirror image lie at the same height, between the same two slices. So the
azimuth (the axis turned about the slice normal) about which the seed's voxels are most
mirror-symmetric is the seed's, whatever the blur and the slice profile; the tilt to the slice
plane stays the principal axis's.

Why it is needed: streaks are straight lines in the slice. One crossing a seed tilts the
principal axis of its excess, which weights each voxel by its squared distance from the centre.
In simulated scans with needles lying in the seeds' 1 mm slices, a dark band of about -300 HU,
2 mm wide, crosses a seed 20-30 degrees off its axis: the principal axes were up to 14.0 degrees
off. The mirror compares the seed's values pairwise and is decided mostly by the seed's steep
sides, where such a band is small against thousands of HU per mm: at most 7.6 degrees there. The
band is not symmetric about the seed's axis either, so it still pulls, about half as far.

Where it is not used: seeds steeper than ``max_mirror_tilt_deg`` to the slice plane, whose slices
each show a short stretch of a few pixels: their interpolated mirror images decide the azimuth
more than the seed does (the second renderer's 1 mm pixels: up to 10.1 degrees, mean 4.8, where
the principal axes give 5.2, mean 2.8). Clusters keep their principal axes: a neighbour breaks
the symmetry.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from guidance.detection.candidates import SEED_LENGTH_MM
from guidance.detection.clusters import centroid
from guidance.detection.result import SeedOptions
from guidance.volume import Grid

__all__ = ["mirror_azimuth"]

_COARSE_DEG = 5.0  # azimuths tried this far apart first, then a degree either side of the best
_MIN_PAIRS = 20  # sample pairs within the seed's voxels for an azimuth to be compared


def mirror_azimuth(
    image: NDArray[np.generic], grid: Grid, points_mm: NDArray[np.float64], weights: NDArray[np.float64],
    direction: NDArray[np.float64], opts: SeedOptions,
) -> NDArray[np.float64]:  # fmt: skip
    """``direction`` turned about the slice normal to the azimuth of best mirror symmetry.

    Parameters
    ----------
    image : ndarray, shape (S, R, C)
        The scan's HU.
    grid : Grid
        The scan's geometry.
    points_mm, weights : ndarray, shapes (n, 3) and (n,)
        One seed's voxels (LPS mm) and their excess HU. Only values within these voxels are
        compared (not a needle's or a neighbour's); the weights give the centre.
    direction : ndarray, shape (3,)
        The seed's unit long axis (its principal axis), or NaN.
    opts : SeedOptions
        The sample pairs fill a cylinder about the axis: half a seed's length (4.5 mm) plus
        ``integration_margin_mm`` along it, twice ``seed_diameter_mm`` in radius, every half
        diameter. Azimuths within ``mirror_span_deg`` of the principal axis's are tried; a seed
        steeper than ``max_mirror_tilt_deg`` to the slice plane keeps ``direction``.

    Returns
    -------
    ndarray, shape (3,)
        The unit axis (largest component positive), or ``direction`` where it is NaN, too
        steep, or the best azimuth lies at the span's edge (the symmetry does not decide it).
    """
    normal = np.asarray(grid.axes[0], dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    if not np.all(np.isfinite(direction)) or abs(float(direction @ normal)) > np.sin(
        np.radians(opts.max_mirror_tilt_deg)
    ):
        return direction
    box, corner = _seed_box(image, grid, points_mm)
    centre = centroid(points_mm, weights)
    here, there = _mirror_pairs(direction, normal, opts)
    # The pairs turn about the slice normal with the axis: each azimuth is one rotation of them.
    to_index = np.linalg.inv(np.asarray(grid.affine, dtype=np.float64))[:3, :3]
    centre_index = grid.patient_to_index(centre[None])[0] - corner

    def costs(angles_deg: NDArray[np.float64]) -> NDArray[np.float64]:
        turn = to_index @ _rotations(normal, np.radians(angles_deg))
        return _mirror_costs(box, centre_index + here @ turn.transpose(0, 2, 1),
                             centre_index + there @ turn.transpose(0, 2, 1))  # fmt: skip

    coarse = np.arange(-opts.mirror_span_deg, opts.mirror_span_deg + 1e-9, _COARSE_DEG)
    first = costs(coarse)
    best = int(np.argmin(first))
    if not np.isfinite(first[best]) or best in (0, len(coarse) - 1):
        return direction
    fine = _vertex(coarse, first, best) + np.array([-1.0, 0.0, 1.0])
    angle = _vertex(fine, costs(fine), 1)
    axis = _rotations(normal, np.radians(np.array([angle])))[0] @ direction
    axis = axis / np.linalg.norm(axis)
    result: NDArray[np.float64] = axis if axis[np.argmax(np.abs(axis))] > 0 else -axis
    return result


def _mirror_pairs(
    direction: NDArray[np.float64], normal: NDArray[np.float64], opts: SeedOptions
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sample offsets (m, 3, LPS mm) filling one half of a cylinder about ``direction``, and their
    mirror images about the plane through ``direction`` and ``normal`` (the other half)."""
    step_mm = opts.seed_diameter_mm / 2.0
    half_length_mm = SEED_LENGTH_MM / 2.0 + opts.integration_margin_mm
    radius_mm = 2.0 * opts.seed_diameter_mm
    along = np.arange(-half_length_mm, half_length_mm + 1e-9, step_mm)
    across = np.arange(step_mm / 2.0, radius_mm, step_mm)
    height = np.arange(-radius_mm + step_mm / 2.0, radius_mm, step_mm)
    t, u, v = (each.ravel() for each in np.meshgrid(along, across, height, indexing="ij"))
    keep = u**2 + v**2 <= radius_mm**2
    side = np.cross(normal, direction)
    side = side / np.linalg.norm(side)
    third = np.cross(direction, side)
    base = t[keep, None] * direction + v[keep, None] * third
    offset = u[keep, None] * side
    return base + offset, base - offset


def _rotations(normal: NDArray[np.float64], angles: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation matrices (k, 3, 3) by each of ``angles`` (radians) about the unit ``normal``."""
    x, y, z = normal
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    rotations: NDArray[np.float64] = cos * np.eye(3) + sin * cross + (1.0 - cos) * np.outer(normal, normal)
    return rotations


def _vertex(angles: NDArray[np.float64], costs: NDArray[np.float64], k: int) -> float:
    """The vertex of the parabola through the costs at ``angles[k - 1 : k + 2]`` (evenly spaced),
    kept within one spacing of ``angles[k]``; ``angles[k]`` where the costs do not curve up."""
    below, at, above = costs[k - 1 : k + 2]
    curvature = below - 2.0 * at + above
    if not (np.isfinite(curvature) and curvature > 0):
        return float(angles[k])
    shift = float(np.clip(0.5 * (below - above) / curvature, -1.0, 1.0))
    return float(angles[k]) + shift * float(angles[1] - angles[0])


def _seed_box(
    image: NDArray[np.generic], grid: Grid, points_mm: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The seed's voxels' HU in a box one voxel larger all round, NaN elsewhere (a needle's or a
    neighbour's voxels, and the margin), and the box's first corner (index)."""
    index = np.rint(grid.patient_to_index(points_mm)).astype(np.int64)
    corner = index.min(axis=0) - 1
    box = np.full(tuple(index.max(axis=0) - corner + 2), np.nan)
    box[tuple((index - corner).T)] = image[tuple(index.T)]
    return box, corner


def _mirror_costs(
    box: NDArray[np.float64], here: NDArray[np.float64], there: NDArray[np.float64]
) -> NDArray[np.float64]:
    """For each row of ``here`` and ``there`` (k, m, 3: box indices of the sample points and their
    mirror images): the mean squared HU difference over the pairs whose interpolation stays
    within the seed's voxels, or inf where fewer than ``_MIN_PAIRS`` do."""
    a, b = (
        ndimage.map_coordinates(box, points.reshape(-1, 3).T, order=1, mode="constant", cval=np.nan)
        for points in (here, there)
    )
    squared = ((a - b) ** 2).reshape(here.shape[:2])
    pairs = np.isfinite(squared).sum(axis=1)
    mean = np.nansum(squared, axis=1) / np.maximum(pairs, 1)
    costs: NDArray[np.float64] = np.where(pairs >= _MIN_PAIRS, mean, np.inf)
    return costs
