"""The voxels a found needle shows in, to keep them out of the seed search.

A voxel is a needle's when its centre lies within the needle's radius, half the
voxel's diagonal (partial volume) and the reconstruction's edge blur of the
needle's axis, from its entry to its tip.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from guidance.detection.result import NeedleDetection, NeedleOptions
from guidance.volume import Grid

__all__ = ["needle_mask", "needle_mask_radius_mm"]

_HUB_MARGIN_MM = 60.0  # beyond the entry: the needle and its hub are outside the body


def needle_mask(
    detection: NeedleDetection,
    grid: Grid,
    *,
    radius_mm: float | None = None,
    options: NeedleOptions | None = None,
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
    """
    radius = needle_mask_radius_mm(grid, options) if radius_mm is None else radius_mm
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"needle_mask radius_mm must be a finite number > 0; got {radius}")
    mask = np.zeros(grid.shape, dtype=bool)
    for needle in detection.needles:
        reach = float(np.linalg.norm(needle.entry_mm - needle.tip_mm)) + _HUB_MARGIN_MM
        outer = needle.tip_mm - reach * needle.direction
        _paint_segment(mask, grid, outer, needle.tip_mm, radius)
    return mask


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


def _paint_segment(
    mask: NDArray[np.bool_], grid: Grid, a: NDArray[np.float64], b: NDArray[np.float64], radius_mm: float
) -> None:
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
    # to deduplicate (a voxel near several samples is painted more than once).
    centre_mm = grid.index_to_patient(centres.astype(np.float64)) - a
    offset_mm = offsets.astype(np.float64) @ np.asarray(grid.affine)[:3, :3].T
    w = centre_mm[:, None, :] + offset_mm[None, :, :]
    t = np.clip(w @ axis, 0.0, length)
    w -= t[:, :, None] * axis
    near = np.einsum("sok,sok->so", w, w) <= radius_mm**2
    candidates = (centres[:, None, :] + offsets[None, :, :])[near]
    candidates = candidates[np.all((candidates >= 0) & (candidates < np.array(grid.shape)), axis=1)]
    mask[tuple(candidates.T)] = True
