"""Needle points and needle runs: metal that is not bone, straight runs that are steel rods.

Steps 1 and 2 of :mod:`guidance.detection.needles`: the candidate points (voxels above the
metal level that are not bone-like) and the tests a straight run of them must pass to be a
needle (not surrounded by bone, continuous metal rather than a row of separate seeds).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from guidance.detection.lines import LineRun
from guidance.detection.result import NeedleOptions
from guidance.volume import Volume

__all__ = ["candidate_points", "metal_level_hu", "needle_like", "sample", "surroundings", "thickness_ratio"]

logger = logging.getLogger(__name__)

_SEED_LENGTH_MM = 4.5  # I-125 seeds (6711, 6702, IAI-125A, ...): 4.5 mm x 0.8 mm


def thickness_ratio(ct: Volume, opts: NeedleOptions) -> float:
    """The slice thickness over ``reference_slice_mm``, at least 1."""
    return max(1.0, float(ct.spacing_mm[0]) / opts.reference_slice_mm)


def metal_level_hu(ct: Volume, opts: NeedleOptions) -> float:
    """``metal_hu`` scaled down by partial volume on slices thicker than ``reference_slice_mm``.

    A needle (1.3 mm across) fills a fraction of a thick slice inversely proportional to
    its thickness: on 5 mm slices it peaks near 1400 HU and runs at 600-1000 HU, below
    cortical bone's plateau (about 1200 HU). Bone that passes the lower level is told
    apart by its surroundings (:func:`_bone_like`).
    """
    thickness = float(ct.spacing_mm[0])
    return opts.metal_hu * min(1.0, opts.reference_slice_mm / thickness)


def _ring_offsets(ct: Volume, radius_mm: float, count: int) -> NDArray[np.int64]:
    """(count, 2) in-plane (row, column) index offsets of a ring of ``radius_mm``."""
    angles = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
    spacing = ct.spacing_mm
    offsets = np.stack([np.cos(angles) * radius_mm / spacing[1], np.sin(angles) * radius_mm / spacing[2]], 1)
    result: NDArray[np.int64] = np.rint(offsets).astype(np.int64)
    return result


def _bone_like(ct: Volume, index: NDArray[np.int64], opts: NeedleOptions) -> NDArray[np.bool_]:
    """True for voxels with bone-bright tissue ``ring_mm`` away both in-plane and across the slices.

    In-plane, a cortex voxel sees cortex along the bone's surface and cancellous bone inside:
    more than 3 of 8 directions above ``bone_hu``. So may a needle voxel: a needle lying in
    the slice shows in the two ring directions nearest its axis too (22.5 degrees off it they
    pass 1.2 mm from the axis, inside its blurred edge), and the streaks its own rays draw
    run beside it in its slice. Neither reaches the slices ``ring_mm`` above and below, where
    bone goes on (cortex is a surface, cancellous bone a volume): a voxel is bone-like when
    one of those is above ``bone_hu`` too. A needle steep across the slices reaches them,
    but it is a dot in-plane: its ring is tissue. On slices thicker than
    ``reference_slice_mm`` the in-plane ring decides alone: the next slice may hold the rest
    of a needle crossing between the two.
    """
    array = np.asarray(ct.array)
    offsets = _ring_offsets(ct, opts.ring_mm, 8)
    rows = np.clip(index[:, 1, None] + offsets[None, :, 0], 0, ct.shape[1] - 1)
    columns = np.clip(index[:, 2, None] + offsets[None, :, 1], 0, ct.shape[2] - 1)
    bright = np.count_nonzero(array[index[:, 0, None], rows, columns] > opts.bone_hu, axis=1)
    if thickness_ratio(ct, opts) > 1.0:
        result: NDArray[np.bool_] = bright > 3
        return result
    across = np.zeros(len(index), dtype=bool)
    for inside, values in _slices_away(ct, index, opts):  # beyond the scan: no bone seen
        across[inside] |= values > opts.bone_hu
    result = (bright > 3) & across
    return result


def _slices_away(
    ct: Volume, index: NDArray[np.int64], opts: NeedleOptions
) -> list[tuple[NDArray[np.bool_], NDArray[np.float64]]]:
    """At the same pixels ``ring_mm`` below and above (at least a slice): which lie in the scan, their HU."""
    step = max(1, round(opts.ring_mm / float(ct.spacing_mm[0])))
    array = np.asarray(ct.array)
    result = []
    for sign in (-1, 1):
        slices = index[:, 0] + sign * step
        inside = (slices >= 0) & (slices < ct.shape[0])
        values = array[slices[inside], index[inside, 1], index[inside, 2]].astype(np.float64)
        result.append((inside, values))
    return result


def candidate_points(
    ct: Volume, opts: NeedleOptions, *, below_hu: float | None = None, confined: bool = False
) -> NDArray[np.float64]:
    """Centres (LPS mm) of the voxels above the metal level (under ``below_hu``) that are not bone-like.

    ``confined``: only the voxels whose slices ``ring_mm`` above and below are both tissue
    (under ``bone_hu``), as a needle lying in a slice is; bone goes on across the slices.
    Where those slices lie beyond the scan it cannot be told, and the voxel is not taken.
    That test replaces the bone test, which it implies on thin slices; on thick ones the
    in-plane ring alone would take a needle beside seeds or its own streaks for bone.
    """
    array = np.asarray(ct.array).reshape(-1)
    above = array > metal_level_hu(ct, opts)
    if below_hu is not None:
        above &= array < below_hu
    flat = np.flatnonzero(above)
    index = np.stack(np.unravel_index(flat, ct.shape), axis=1).astype(np.int64)
    if len(index):
        index = index[_confined(ct, index, opts) if confined else ~_bone_like(ct, index, opts)]
    return ct.index_to_patient(index.astype(np.float64)) if len(index) else np.zeros((0, 3))


def _confined(ct: Volume, index: NDArray[np.int64], opts: NeedleOptions) -> NDArray[np.bool_]:
    """True for voxels whose slices ``ring_mm`` above and below both lie in the scan and are tissue."""
    clear = np.ones(len(index), dtype=bool)
    for inside, values in _slices_away(ct, index, opts):
        clear &= inside
        clear[inside] &= values <= opts.bone_hu
    return clear


def _ring(direction: NDArray[np.float64], radius_mm: float, count: int) -> NDArray[np.float64]:
    """(count, 3) offsets (mm) on a circle of ``radius_mm`` about ``direction``."""
    helper = np.eye(3)[int(np.argmin(np.abs(direction)))]
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u)
    v = np.cross(direction, u)
    angles = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
    ring: NDArray[np.float64] = radius_mm * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)
    return ring


def surroundings(ct: Volume, run: LineRun, opts: NeedleOptions) -> NDArray[np.float64]:
    """HU sampled ``ring_mm`` around the run's axis (12 directions, 30 places along it)."""
    along = np.linspace(run.start_mm, run.stop_mm, 30)
    points = run.centre_mm + along[:, None, None] * run.direction + _ring(run.direction, opts.ring_mm, 12)
    return sample(ct, points.reshape(-1, 3))


def _seed_row(ct: Volume, run: LineRun, tissue_hu: float, opts: NeedleOptions) -> str:
    """Non-empty when the run's metal is not continuous: separate objects in a row (seeds), not a rod.

    A needle is a continuous steel rod: along its axis the intensity (the largest over its
    cross-section, half the inlier distance about the fitted axis) stays above half-way
    between its plateau and the tissue around it, except where a dark streak crosses it.
    A row of separate seeds falls to the tissue between them: it is above the level over
    about seed length / pitch of its length (0.56 for 4.5 mm seeds 8 mm apart), and its
    gaps recur at the seed pitch.
    """
    step = 0.5 * float(np.min(ct.spacing_mm))
    t = np.arange(run.start_mm, run.stop_mm + 1e-9, step)
    section = np.vstack([np.zeros(3), _ring(run.direction, 0.5 * opts.inlier_mm, 8)])
    points = run.centre_mm + t[:, None, None] * run.direction + section[None, :, :]
    profile = sample(ct, points.reshape(-1, 3)).reshape(len(t), -1).max(axis=1)
    plateau = float(np.percentile(profile, 90))
    below = profile < 0.5 * (plateau + tissue_hu)
    continuity = 1.0 - float(np.mean(below))
    if continuity < opts.min_continuity:
        return f"intensity along it above half its plateau over {continuity:.0%} of its length"
    # Gaps: runs of samples below the level, inside the run and longer than a voxel.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], below.astype(np.int8), [0]])))
    starts, stops = edges[0::2], edges[1::2]
    voxel = float(np.max(ct.spacing_mm))
    long_enough = (stops - starts) * step >= voxel
    centres = 0.5 * (starts + stops)[long_enough] * step
    if len(centres) >= 3:
        pitch = np.diff(centres)
        if float(np.min(pitch)) >= _SEED_LENGTH_MM and float(np.ptp(pitch)) <= 0.25 * float(np.median(pitch)):
            return f"{len(centres)} gaps {float(np.median(pitch)):.1f} mm apart along it"
    return ""


def sample(ct: Volume, points_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    from scipy import ndimage

    index = ct.patient_to_index(points_mm).T
    # Interpolated into float32 from the stored dtype: no float copy of the whole volume.
    values: NDArray[np.float64] = ndimage.map_coordinates(
        np.asarray(ct.array), index, output=np.float32, order=1, mode="nearest"
    ).astype(np.float64)
    return values


def needle_like(ct: Volume, runs: list[LineRun], opts: NeedleOptions, notes: list[str]) -> list[LineRun]:
    """The runs that are needles: not surrounded by bone, and continuous metal (not a seed row)."""
    kept: list[LineRun] = []
    bone = rows = 0
    # Thick slices average bone with the tissue beside it: less of its ring passes bone_hu.
    max_ring = opts.max_ring_fraction / np.sqrt(thickness_ratio(ct, opts))
    for run in runs:
        around = surroundings(ct, run, opts)
        if float(np.mean(around > opts.bone_hu)) > max_ring:
            bone += 1
            continue
        reason = _seed_row(ct, run, float(np.median(around)), opts)
        if reason:
            rows += 1
            logger.debug("straight run of %.0f mm is not a needle: %s", run.length_mm, reason)
            continue
        kept.append(run)
    if bone:
        notes.append(f"{bone} straight runs rejected: surrounded by bone-bright tissue")
    if rows:
        notes.append(
            f"{rows} straight runs rejected: separate objects in a row (seeds), not a continuous rod"
        )
    return kept
