"""Quality of a rigid registration: overlap, bone residual and the verdict.

The thresholds are options (:class:`guidance.registration.result.RegistrationOptions`);
the rules are listed in the docstring of :mod:`guidance.registration.result`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from guidance.registration.pyramid import Level
from guidance.registration.result import RegistrationOptions, Verdict
from guidance.volume import Grid

__all__ = ["bone_surface_distance_mm", "overlap_fraction", "verdict"]


def overlap_fraction(
    fixed: Grid, moving_body_mm: NDArray[np.float64], moving_to_fixed: NDArray[np.float64]
) -> float:
    """Fraction of the moving body points that map within the fixed grid's extent."""
    if len(moving_body_mm) == 0:
        return 0.0
    mapped = moving_body_mm @ moving_to_fixed[:3, :3].T + moving_to_fixed[:3, 3]
    return float(np.mean(fixed.contains_index(fixed.patient_to_index(mapped))))


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Voxels of ``mask`` with a 6-neighbour outside it (the image border does not count as outside)."""
    inner = mask.copy()
    for axis in range(mask.ndim):
        lead = [slice(None)] * mask.ndim
        trail = [slice(None)] * mask.ndim
        lead[axis], trail[axis] = slice(1, None), slice(None, -1)
        inner[tuple(lead)] &= mask[tuple(trail)]
        inner[tuple(trail)] &= mask[tuple(lead)]
    surface: NDArray[np.bool_] = mask & ~inner
    return surface


def _thinned(level: Level) -> Level:
    """Every k-th row and column (about 1.4 mm apart): the distance transform costs ~k^2 less."""
    stride = max(1, int(1.5 / float(min(level.spacing_mm[1:]))))
    if stride == 1:
        return level
    affine = np.array(level.affine)
    affine[:3, 1:3] *= stride
    cut = (slice(None), slice(None, None, stride), slice(None, None, stride))
    return Level(level.image[cut], affine, level.metal[cut], level.body[cut])


def bone_surface_distance_mm(
    fixed: Level, moving: Level, moving_to_fixed: NDArray[np.float64], bone_hu: float
) -> tuple[float, int]:
    """Median distance (mm) from the moving bone surface, mapped, to the fixed bone surface, and the count.

    Bone is level HU above ``bone_hu`` within the body, outside the metal zone. Moving
    surface voxels that map outside the fixed level or into its metal zone are not counted.
    The median, not the mean: bright metal streaks beyond the metal margin look like
    bone in one image only and would dominate a mean.
    """
    from scipy.spatial import cKDTree

    fixed, moving = _thinned(fixed), _thinned(moving)
    fixed_bone = (fixed.image > bone_hu) & fixed.body & ~fixed.metal
    moving_bone = (moving.image > bone_hu) & moving.body & ~moving.metal
    if not fixed_bone.any() or not moving_bone.any():
        return math.nan, 0
    # Distances between voxel centres on the level's axes (mm), as a distance transform would give.
    tree = cKDTree(np.argwhere(_surface(fixed_bone)) * fixed.spacing_mm)
    index = np.argwhere(_surface(moving_bone)).astype(np.float64)
    points = index @ moving.affine[:3, :3].T + moving.affine[:3, 3]
    to_index = np.linalg.inv(fixed.affine) @ moving_to_fixed
    nearest = np.rint(points @ to_index[:3, :3].T + to_index[:3, 3]).astype(np.int64)
    inside = np.all((nearest >= 0) & (nearest < np.asarray(fixed.image.shape)), axis=1)
    nearest = nearest[inside]
    keep = ~fixed.metal[nearest[:, 0], nearest[:, 1], nearest[:, 2]]
    nearest = nearest[keep]
    if len(nearest) == 0:
        return math.nan, 0
    distance, _ = tree.query(nearest * fixed.spacing_mm)
    return float(np.median(distance)), len(nearest)


def verdict(
    options: RegistrationOptions,
    *,
    ncc: float,
    overlap: float,
    bone_mm: float,
    bone_points: int,
    at_bound: bool,
) -> tuple[Verdict, tuple[str, ...]]:
    """PASS, DOUBT or FAIL and the reasons, from the quality figures."""
    fail: list[str] = []
    doubt: list[str] = []
    if overlap < options.fail_overlap:
        fail.append(
            f"only {overlap:.0%} of the scan's body lies in the planning CT (< {options.fail_overlap:.0%})"
        )
    elif overlap < options.pass_overlap:
        doubt.append(
            f"{overlap:.0%} of the scan's body lies in the planning CT (< {options.pass_overlap:.0%})"
        )
    if not ncc >= options.fail_ncc:
        fail.append(f"images do not match: NCC {ncc:.2f} < {options.fail_ncc}")
    elif ncc < options.pass_ncc:
        doubt.append(f"weak image match: NCC {ncc:.2f} < {options.pass_ncc}")
    if bone_points < options.min_bone_points or math.isnan(bone_mm):
        doubt.append(f"too little bone to check the match ({bone_points} bone-surface samples)")
    elif bone_mm > options.fail_bone_mm:
        fail.append(f"bone surfaces {bone_mm:.1f} mm apart (median) (> {options.fail_bone_mm} mm)")
    elif bone_mm > options.pass_bone_mm:
        doubt.append(f"bone surfaces {bone_mm:.1f} mm apart (median) (> {options.pass_bone_mm} mm)")
    if at_bound:
        doubt.append("the optimiser stopped at the limit of the allowed motion")
    if fail:
        return Verdict.FAIL, tuple(fail + doubt)
    if doubt:
        return Verdict.DOUBT, tuple(doubt)
    return Verdict.PASS, ()
