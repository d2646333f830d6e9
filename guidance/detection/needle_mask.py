"""The voxels a found needle shows in, to keep them out of the seed search.

A voxel is a needle's when its centre lies within the needle's radius, half the
voxel's diagonal (partial volume) and the reconstruction's edge blur of the
needle's axis, from its entry to its tip.

Given the scan (slices up to the seed search's reference thickness, 2 mm), a voxel beyond
the steel (the needle's radius plus half the smallest voxel side) that is brighter than the
needle itself shows at its distance from the axis, by more than the seed search's level, is
left out of the mask: something else lies there, most often a seed beside the needle.
Without it, a seed 2.4-3 mm from a needle's axis lost its core to the mask (the mask's
radius on 0.8 x 0.8 x 2 mm voxels is 2.8 mm). What goes on into the steel (a seed across
or against the needle, brightening it) stays masked, as a seed inside the needle does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from guidance.detection.candidates import thick_slices, threshold_level_hu
from guidance.detection.result import NeedleDetection, NeedleOptions, SeedOptions
from guidance.volume import Grid, Volume

__all__ = ["needle_mask", "needle_mask_radius_mm", "unexplained_by_needles"]

_HUB_MARGIN_MM = 60.0  # beyond the entry: the needle and its hub are outside the body
_PROFILE_BIN_MM = 0.25  # distance bins of a needle's radial profile
_PROFILE_QUANTILE = 95.0  # a needle's brightest voxels at a distance (partial volume varies along it)
_MIN_PROFILE_VOXELS = 10  # a bin with fewer voxels takes the profile of the bins inside it
_TIP_ZONE_MM = 3.0  # the last millimetres of a needle (a brighter tip, streaks) are left out of its profile


def needle_mask(
    detection: NeedleDetection,
    grid: Grid,
    *,
    radius_mm: float | None = None,
    options: NeedleOptions | None = None,
    ct: Volume | None = None,
    seed_level_hu: float | None = None,
) -> NDArray[np.bool_]:
    """Voxels of ``grid`` within ``radius_mm`` of a detected needle, from its tip to 60 mm past the entry.

    Beyond the entry the needle (and its hub) is outside the body, where no seed lies.
    Pass it to :func:`guidance.detection.detect_seeds` as ``exclude_mask``.

    Parameters
    ----------
    detection : NeedleDetection
    grid : Grid
        The scan's grid.
    radius_mm : float, optional
        Default :func:`needle_mask_radius_mm`: the needle and its blurred edge only, so that
        seeds a few millimetres beside it stay outside the mask.
    options : NeedleOptions, optional
        Its ``needle_diameter_mm`` and ``edge_blur_mm`` set the default radius.
    ct : Volume, optional
        The scan the needles were found in, on ``grid``. With it, on slices up to
        ``SeedOptions.reference_slice_mm``, voxels of a needle's blurred edge brighter than
        the needle explains there are left out of the mask (:func:`unexplained_by_needles`).
    seed_level_hu : float, optional
        How much brighter than the needle such a voxel is; default the seed search's level
        for this scan (:func:`guidance.detection.candidates.threshold_level_hu`).
    """
    radius = needle_mask_radius_mm(grid, options) if radius_mm is None else radius_mm
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"needle_mask radius_mm must be a finite number > 0; got {radius}")
    if ct is not None and ct.grid.shape != grid.shape:
        raise ValueError(f"needle_mask: ct's shape {ct.grid.shape} is not the grid's {grid.shape}")
    near = _near_needles(detection, grid, radius)
    mask = np.zeros(grid.shape, dtype=bool)
    for _, index, _, _ in near:
        mask[tuple(index.T)] = True
    # On thick slices a voxel's share of steel depends on where the needle crosses it, not
    # on its centre's distance: no profile bounds it there, and nothing is released.
    if ct is not None and detection.needles and not thick_slices(grid, SeedOptions()):
        level = threshold_level_hu(ct, SeedOptions()) if seed_level_hu is None else seed_level_hu
        steel = 0.5 * (options or NeedleOptions()).needle_diameter_mm + 0.5 * float(np.min(grid.spacing_mm))
        mask &= ~_unexplained(ct, near, radius, steel, level)
    return mask


def unexplained_by_needles(
    ct: Volume, detection: NeedleDetection, radius_mm: float, steel_mm: float, excess_hu: float
) -> NDArray[np.bool_]:
    """Voxels near a needle brighter than the needle shows at their distance from its axis.

    Each needle's radial profile is, per 0.25 mm of distance from its axis, the 95th
    percentile HU of its voxels more than 3 mm behind its tip (partial volume makes a
    needle's voxels at one distance vary along it; the tip and its streaks differ), made
    non-increasing outward (bins of fewer than 10 voxels take the value inside them). A
    voxel between ``steel_mm`` (the steel's own partial volume: never released) and
    ``radius_mm`` from some needle's axis is unexplained when it is above every covering
    needle's profile by more than ``excess_hu``, and its 26-connected group of such voxels
    does not touch a steel voxel (within ``steel_mm``) that is as much above the profile, or
    at the scan's top value where the profile is not: there the needle itself is brighter
    (a seed across it or against it, whose ends show beside it, or a brighter stretch of the
    needle: in a simulated procedure scan two such stretches, 0.5-0.7 mm from the axis, were
    otherwise taken for seeds), and the group is the needle's.
    """
    if not (0.0 <= steel_mm < radius_mm and np.isfinite(excess_hu)):
        raise ValueError(f"unexplained_by_needles needs 0 <= steel_mm < radius_mm and a finite excess; "
                         f"got {steel_mm}, {radius_mm}, {excess_hu}")  # fmt: skip
    return _unexplained(ct, _near_needles(detection, ct.grid, radius_mm), radius_mm, steel_mm, excess_hu)


_Near = tuple[float, NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]


def _near_needles(detection: NeedleDetection, grid: Grid, radius_mm: float) -> list[_Near]:
    """Per needle, the voxels within ``radius_mm`` of its painted segment (:func:`_near_segment`),
    with the segment's length: found once for both the mask and the profiles."""
    near = []
    for needle in detection.needles:
        reach = float(np.linalg.norm(needle.entry_mm - needle.tip_mm)) + _HUB_MARGIN_MM
        outer = needle.tip_mm - reach * needle.direction
        near.append((reach, *_near_segment(grid, outer, needle.tip_mm, radius_mm)))
    return near


def _unexplained(
    ct: Volume, near: list[_Near], radius_mm: float, steel_mm: float, excess_hu: float
) -> NDArray[np.bool_]:
    """:func:`unexplained_by_needles` on the needles' voxels found already."""
    grid = ct.grid
    image = np.asarray(ct.array)
    bright: list[NDArray[np.int64]] = []  # flat indices
    explained: list[NDArray[np.int64]] = []
    brighter_steel: list[NDArray[np.int64]] = []
    bins = int(radius_mm / _PROFILE_BIN_MM) + 1
    ceiling_hu = float(image.max())
    for length_mm, listed, listed_distance, listed_along in near:
        # Each voxel once (one near several of the segment's samples is listed more than once).
        flat, first = np.unique(np.ravel_multi_index(tuple(listed.T), grid.shape), return_index=True)
        distance_mm, along_mm = listed_distance[first], listed_along[first]
        values = image.ravel()[flat].astype(np.float64)
        where = np.minimum((distance_mm / _PROFILE_BIN_MM).astype(np.int64), bins - 1)
        shaft = along_mm < length_mm - _TIP_ZONE_MM
        profile = np.full(bins, np.inf)
        for k in np.unique(where[shaft]):
            members = values[shaft & (where == k)]
            if len(members) >= _MIN_PROFILE_VOXELS:
                profile[k] = np.percentile(members, _PROFILE_QUANTILE)
        profile = np.minimum.accumulate(profile)
        above = values > profile[where] + excess_hu
        edge = distance_mm > steel_mm
        bright.append(flat[above & edge])
        explained.append(flat[~(above & edge)])
        # The steel is brighter than its profile, or saturated (the scan's top value) where its
        # profile is not: a seed against or across the needle adds to it.
        saturated = (values >= ceiling_hu) & (profile[where] < ceiling_hu)
        brighter_steel.append(flat[(above | saturated) & ~edge])
    result = np.zeros(grid.shape, dtype=bool)
    if not bright:
        return result
    free = np.setdiff1d(np.concatenate(bright), np.concatenate(explained))
    kept = _apart_from(free, np.concatenate(brighter_steel), grid.shape)
    result.ravel()[kept] = True
    return result


def _apart_from(
    free: NDArray[np.int64], other: NDArray[np.int64], shape: tuple[int, ...]
) -> NDArray[np.int64]:
    """The voxels of ``free`` (flat indices) whose 26-connected group touches no voxel of ``other``.

    Labelled in the box of ``free`` grown by one voxel: the rest of the scan plays no part.
    """
    from scipy import ndimage

    if len(free) == 0:
        return free
    index = np.stack(np.unravel_index(free, shape), axis=1)
    low = np.maximum(index.min(axis=0) - 1, 0)
    high = np.minimum(index.max(axis=0) + 2, np.asarray(shape))
    box = tuple(high - low)
    inside = np.zeros(box, dtype=bool)
    inside[tuple((index - low).T)] = True
    near = np.zeros(box, dtype=bool)
    others = np.stack(np.unravel_index(other, shape), axis=1)
    others = others[np.all((others >= low) & (others < high), axis=1)] - low
    near[tuple(others.T)] = True
    cube = np.ones((3, 3, 3), dtype=bool)
    labels, count = ndimage.label(inside, structure=cube)
    touching = np.unique(labels[ndimage.binary_dilation(near, cube) & inside])
    kept = np.ones(count + 1, dtype=bool)
    kept[touching] = False
    result: NDArray[np.int64] = free[kept[labels[tuple((index - low).T)]]]
    return result


def needle_mask_radius_mm(grid: Grid, options: NeedleOptions | None = None) -> float:
    """Radius (mm) of the voxels a needle shows in: its own radius, half a voxel diagonal, the edge blur.

    Voxels whose centre lies within the needle's radius plus half the voxel diagonal hold
    some steel (partial volume); the reconstruction spreads the edge by ``edge_blur_mm``
    more. On 0.7 x 0.7 x 1 mm voxels an 18G needle's mask is 2.3 mm in radius: a seed
    4.5 mm from the needle's axis (its capsule 4.1 mm away) is outside it.
    """
    opts = options or NeedleOptions()
    half_diagonal = 0.5 * float(np.linalg.norm(grid.spacing_mm))
    return 0.5 * opts.needle_diameter_mm + half_diagonal + opts.edge_blur_mm


def _near_segment(
    grid: Grid, a: NDArray[np.float64], b: NDArray[np.float64], radius_mm: float
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """The voxels of ``grid`` within ``radius_mm`` of the segment a-b: their indices, their
    distances from it and how far along it from a they lie (mm). A voxel near several of the
    segment's samples is listed more than once."""
    length = float(np.linalg.norm(b - a))
    axis = (b - a) / max(length, 1e-9)
    step_mm = 3.0
    samples = a + np.arange(0.0, length + step_mm, step_mm)[:, None] * axis
    centres = np.rint(grid.patient_to_index(samples)).astype(np.int64)
    # A voxel within radius_mm of the segment is within hypot(radius, step / 2) of the sample
    # nearest its projection, and so within this reach of that sample's voxel centre.
    reach_mm = float(np.hypot(radius_mm, 0.5 * step_mm)) + 0.5 * float(np.linalg.norm(grid.spacing_mm))
    half = np.ceil(reach_mm / grid.spacing_mm).astype(np.int64)
    offsets = np.stack(np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[
        np.linalg.norm(grid.index_to_patient(offsets.astype(np.float64)) - grid.affine[:3, 3], axis=1)
        <= reach_mm
    ]
    # Distances through the affine's linear part: sample voxel centre plus offset, no index lists
    # to deduplicate.
    centre_mm = grid.index_to_patient(centres.astype(np.float64)) - a
    offset_mm = offsets.astype(np.float64) @ np.asarray(grid.affine)[:3, :3].T
    w = centre_mm[:, None, :] + offset_mm[None, :, :]
    along = np.clip(w @ axis, 0.0, length)
    w -= along[:, :, None] * axis
    squared = np.einsum("sok,sok->so", w, w)
    near = squared <= radius_mm**2
    index = (centres[:, None, :] + offsets[None, :, :])[near]
    distance, along = np.sqrt(squared[near]), along[near]
    inside = np.all((index >= 0) & (index < np.array(grid.shape)), axis=1)
    return index[inside], distance[inside], along[inside]
