"""Needles in an intra-procedure CT: straight metal runs, their tip and skin entry.

Method:

1. Candidate points (:mod:`guidance.detection.needle_points`): voxels above ``metal_hu``,
   lowered in proportion on slices thicker than ``reference_slice_mm`` (partial volume),
   whose in-plane ring ``ring_mm`` away is not mostly brighter than ``bone_hu`` or, on
   thinner slices, whose slices ``ring_mm`` above and below are not (cortex, not metal: a
   needle lying in a slice brightens its ring there, bone goes on across the slices).
   Needles fall in and out of the level where they cross slices or dark streaks; gaps up
   to ``max_gap_mm`` are bridged.
2. Lines: :func:`guidance.detection.lines.find_line_runs` (RANSAC on the points in
   LPS mm, refined by principal axes, cut at gaps; needles a few millimetres apart
   stay apart because inliers lie within ``inlier_mm`` of the axis).
   A run whose surroundings are bone-bright (more than ``max_ring_fraction`` of samples
   ``ring_mm`` around its axis above ``bone_hu``) is bone, not a needle. On slices thicker
   than ``reference_slice_mm`` (ratio r) a run needs metal over 0.6 / sqrt(r) of its length
   (a needle crossing thick slices falls below the level between them) and the bone
   fraction is max_ring_fraction / sqrt(r) (bone is averaged with the tissue beside it). A run whose
   intensity along its axis is not continuous (above half-way between its plateau and the
   tissue over less than ``min_continuity`` of its length, or falling to the tissue at a
   regular pitch) is a row of separate seeds, not a steel rod.
   Needles lying in a slice darken themselves (the rays along them are starved and
   hardened): the points no needle explains are searched again from ``dimmed_fraction`` of
   the metal level, among those confined to their slice (:func:`_darkened`). Each run's
   axis is then refitted (:mod:`guidance.detection.needle_axis`): along the slice axis from
   how the needle shares itself between neighbouring slices, where the slices are about as
   thick as its path through them (the voxel fit is a slice coarse there), and across it
   in-plane from the centroids of its profile (the voxel fit follows which voxels pass the
   level, and bright spots beside the needle).
3. Which end is the tip: the body is the largest connected region above ``body_hu``
   (holes such as the airway filled, slice by slice); the end whose extension leaves
   the body sooner is the entry side.
4. Tip: along the axis, where the HU profile falls to half-way between the needle's
   plateau and the tissue beyond (the half-maximum of a blurred edge lies on the edge).
   A run that reaches the first or last slice is flagged ``tip_outside_scan``: its tip may
   lie in the outermost slice or beyond. It is placed the same way, the profile beyond the
   range taken from the outermost slice (where the needle ends in that slice, its image there
   ends too), and no further than the range's edge, half a slice past the outermost centre.
5. Entry: walking from the tip towards the hub, the first point outside the body.
6. Needles inserted less than ``min_length_mm``: among the metal points no needle
   explains, shorter runs (from ``min_entering_mm``) passing the same tests whose outer
   end is within ``skin_reach_mm`` of the skin or in the outermost slice (deep in the
   body, a run that short may be a chain of touching seeds).

Everything is measured in LPS mm through the CT's affine: any slice orientation,
spacing or direction works.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from guidance import __version__
from guidance.detection.lines import LineRun, bridge_runs, find_line_runs, near_run, refit_on
from guidance.detection.needle_axis import along_slices, in_plane
from guidance.detection.needle_points import (
    candidate_points,
    metal_level_hu,
    needle_like,
    sample,
    surroundings,
    thickness_ratio,
)
from guidance.detection.result import NEEDLE_STAGE, DetectedNeedle, NeedleDetection, NeedleOptions
from guidance.provenance import Provenance
from guidance.volume import Grid, Volume

__all__ = ["body_mask", "detect_needles", "metal_level_hu"]

logger = logging.getLogger(__name__)

_BODY_PIXEL_MM = 2.0
_STEP_MM = 0.25
_PROFILE_REACH_MM = 12.0
_DIMMED_MAX_RATIO = 1.5  # the second search's thickest slices, in reference_slice_mm (see _darkened)


def body_mask(ct: Volume, *, body_hu: float = -400.0) -> tuple[NDArray[np.bool_], tuple[int, int]]:
    """Coarse body mask (largest region above ``body_hu``, opened and holes filled per slice).

    Returns the mask on the CT's slices with rows and columns taken every ``step``
    voxels (about 2 mm) and the (row, column) step.
    """
    from scipy import ndimage

    spacing = ct.spacing_mm
    step_r = max(1, round(float(_BODY_PIXEL_MM / spacing[1])))
    step_c = max(1, round(float(_BODY_PIXEL_MM / spacing[2])))
    coarse = np.asarray(ct.array[:, ::step_r, ::step_c]) > body_hu
    # An in-plane opening cuts thin things off the skin: needles outside the body, couch shells.
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = True
    coarse = ndimage.binary_opening(coarse, structure=in_plane)
    labels, count = ndimage.label(coarse)
    if count == 0:
        return coarse, (step_r, step_c)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    # Holes filled slice by slice: with an in-plane structure the fill does not cross slices.
    filled: NDArray[np.bool_] = ndimage.binary_fill_holes(body, structure=in_plane)
    return filled, (step_r, step_c)


def _inside(
    grid: Grid, points_mm: NDArray[np.float64], body: NDArray[np.bool_], steps: tuple[int, int]
) -> NDArray[np.bool_]:
    index = np.rint(grid.patient_to_index(points_mm) / np.array([1.0, steps[0], steps[1]])).astype(np.int64)
    ok = np.all((index >= 0) & (index < np.array(body.shape)), axis=1)
    inside = np.zeros(len(points_mm), dtype=bool)
    inside[ok] = body[tuple(index[ok].T)]
    return inside


def _exit_distance(
    grid: Grid,
    origin: NDArray[np.float64],
    direction: NDArray[np.float64],
    body: NDArray[np.bool_],
    steps: tuple[int, int],
    reach_mm: float,
) -> float:
    """Distance from ``origin`` along ``direction`` to where the line leaves the body for good.

    Air inside the body along the way (airway, sinus open to a slice edge) does not count:
    the skin is the last crossing. Infinite when the line is still in the body where it
    leaves the scan.
    """
    t = np.arange(0.0, reach_mm, 1.0)
    points = origin + t[:, None] * direction
    in_grid = grid.contains_index(grid.patient_to_index(points))
    if not in_grid.any():
        return float("inf")
    last = int(np.flatnonzero(in_grid)[-1]) if in_grid[0] else 0
    inside = _inside(grid, points[: last + 1], body, steps)
    if inside[-1] and last + 1 < len(t):
        return float("inf")
    hits = np.flatnonzero(inside)
    return float(t[hits[-1]] + 1.0) if len(hits) else 0.0


def _half_level_edge(
    ct: Volume, origin: NDArray[np.float64], direction: NDArray[np.float64], blur_mm: float
) -> tuple[float, float]:
    """Offset (mm, along ``direction`` from ``origin``) where the profile falls to half, and the contrast.

    The plateau is the level just outside the edge's blur (1.5 to 4 ``blur_mm`` before
    the end): where the tip lies split between two slices, that is its partial-volume level.
    """
    t = np.arange(-_PROFILE_REACH_MM, _PROFILE_REACH_MM + 1e-9, _STEP_MM)
    profile = sample(ct, origin + t[:, None] * direction)
    plateau = float(np.median(profile[(t >= -4.0 * blur_mm) & (t <= -1.5 * blur_mm)]))
    beyond = float(np.median(profile[t >= 5.0]))
    half = 0.5 * (plateau + beyond)
    start = int(np.searchsorted(t, -1.5 * blur_mm))
    below = np.flatnonzero(profile[start:] < half)
    if len(below) == 0 or plateau <= beyond:
        return 0.0, plateau - beyond
    i = start + int(below[0])
    # Linear interpolation between the last sample above and the first below the half level.
    a, b = profile[i - 1], profile[i]
    frac = (a - half) / (a - b) if a != b else 0.0
    return float(t[i - 1] + frac * _STEP_MM), plateau - beyond


def _within_range(
    grid: Grid, inside_mm: NDArray[np.float64], point_mm: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``point_mm``, or where the segment from ``inside_mm`` to it leaves the scanned range (half a
    voxel beyond the outermost centres)."""
    a, b = grid.patient_to_index(np.stack([inside_mm, point_mm]))
    upper = np.asarray(grid.shape, dtype=np.float64) - 0.5
    step = b - a
    fraction = 1.0
    for axis in range(3):
        if b[axis] > upper[axis] and step[axis] > 0:
            fraction = min(fraction, max(0.0, (upper[axis] - a[axis]) / step[axis]))
        if b[axis] < -0.5 and step[axis] < 0:
            fraction = min(fraction, max(0.0, (-0.5 - a[axis]) / step[axis]))
    result: NDArray[np.float64] = inside_mm + fraction * (point_mm - inside_mm)
    return result


def _at_slice_edge(grid: Grid, point_mm: NDArray[np.float64], margin: float = 1.0) -> bool:
    index = grid.patient_to_index(point_mm)[0]
    upper = np.asarray(grid.shape, dtype=np.float64) - 1.0
    return bool(np.any(index <= margin) or np.any(index >= upper - margin))


def _measure(
    ct: Volume, run: LineRun, body: NDArray[np.bool_], steps: tuple[int, int], opts: NeedleOptions
) -> DetectedNeedle:
    grid = ct.grid
    ends = [run.centre_mm + run.start_mm * run.direction, run.centre_mm + run.stop_mm * run.direction]
    exits = [_exit_distance(grid, ends[0], -run.direction, body, steps, 200.0),
             _exit_distance(grid, ends[1], run.direction, body, steps, 200.0)]  # fmt: skip
    tip_side = 1 if exits[0] <= exits[1] else 0
    edge = [_at_slice_edge(grid, end[None, :]) for end in ends]
    if edge[0] != edge[1] and not np.isfinite(exits[0 if edge[0] else 1]):
        # One end runs on out of the scan, the other is not at the skin: the needle comes
        # in from beyond the scanned range and the inner end is its tip.
        inner = 1 if edge[0] else 0
        if exits[inner] > opts.skin_reach_mm:
            tip_side = inner
    if exits[0] == exits[1]:
        # Both ends still in the body where the scan stops: a needle comes in from outside
        # the field, so the end at the scan's edge is the hub side.
        tip_side = 0 if _at_slice_edge(grid, ends[1]) and not _at_slice_edge(grid, ends[0]) else 1
    direction = run.direction if tip_side == 1 else -run.direction
    hub_end, tip_end = ends[1 - tip_side], ends[tip_side]
    reasons: list[str] = []
    tip_outside = _at_slice_edge(grid, tip_end)
    offset, contrast = _half_level_edge(ct, tip_end, direction, opts.edge_blur_mm)
    if tip_outside:
        tip = _within_range(grid, tip_end, tip_end + offset * direction)
        reasons.append("tip outside the scanned range")
    else:
        tip = tip_end + offset * direction
        if contrast < 0.5 * (opts.metal_hu - opts.body_hu):
            reasons.append(f"low contrast at the tip ({contrast:.0f} HU)")
    exit_mm = _exit_distance(grid, tip, -direction, body, steps, 400.0)
    entry_in_scan = np.isfinite(exit_mm)
    entry = tip - (exit_mm - 0.5) * direction if entry_in_scan else hub_end
    if not entry_in_scan:
        reasons.append("skin entry not in the scan: entry is the last needle point seen")
    confidence = _confidence(run, reasons, opts)
    return DetectedNeedle(
        entry, tip, direction, float(np.linalg.norm(tip - entry)), confidence, tuple(reasons),
        tip_outside, bool(entry_in_scan), run.points_mm,
    )  # fmt: skip


def _confidence(run: LineRun, reasons: list[str], opts: NeedleOptions) -> float:
    confidence = 1.0
    if run.length_mm < 1.5 * opts.min_length_mm:
        reasons.append(f"short run ({run.length_mm:.0f} mm)")
        confidence *= 0.7
    if run.rms_mm > 0.5 * opts.inlier_mm:
        reasons.append(f"points spread about the axis (rms {run.rms_mm:.2f} mm): bent or not a needle")
        confidence *= 0.7
    if run.shell_ratio > 0.5:
        reasons.append("metal all around the axis: may be a plate or bone, not a needle")
        confidence *= 0.5
    if any(r.startswith(("tip outside", "skin entry", "low contrast")) for r in reasons):
        confidence *= 0.8
    return confidence


def detect_needles(ct: Volume, *, options: NeedleOptions | None = None) -> NeedleDetection:
    """Find the needles in a CT scan.

    Parameters
    ----------
    ct : Volume
        The intra-procedure CT in HU, array (slice, row, column), any orientation.
    options : NeedleOptions, optional

    Returns
    -------
    NeedleDetection
        Needles in LPS mm of the scan frame, longest support first, with confidence.

    Raises
    ------
    ValueError
        If ``ct`` is not a 3-D volume of finite HU.
    """
    opts = options or NeedleOptions()
    started = time.perf_counter()
    _validate_ct(ct)
    points = candidate_points(ct, opts)
    # Where a nearly in-plane needle crosses from one thick slice to the next it is split
    # between them and falls below the level over a length growing with the thickness.
    ratio = thickness_ratio(ct, opts)
    max_gap_mm = opts.max_gap_mm * ratio
    # Thick slices leave a needle few, scattered points: more proposals fail before each hits
    # (5 mm slices with 8 needles: 2 found after 5 failures, 5 after 25), and less of a run
    # holds metal (4 of 8 with 60 % of its millimetres required, 7 of 8 with 38 %).
    runs = find_line_runs(
        points, min_length_mm=opts.min_length_mm, inlier_mm=opts.inlier_mm, max_gap_mm=max_gap_mm,
        trials=opts.ransac_trials, random_seed=opts.random_seed, max_lines=opts.max_needles,
        max_failures=round(5 * ratio**2), min_coverage=0.6 / np.sqrt(ratio),
    ) if len(points) else []  # fmt: skip
    notes: list[str] = []
    runs = needle_like(ct, runs, opts, notes)
    runs = _bridged(ct, runs, opts, max_gap_mm)
    runs += _darkened(ct, runs, opts, max_gap_mm, notes)
    needles: tuple[DetectedNeedle, ...] = ()
    if runs or len(points) >= 6:  # fewer make no line: a scan without metal needs no body mask
        body, steps = body_mask(ct, body_hu=opts.body_hu)
        runs += _entering(ct, points, runs, (body, steps), opts, max_gap_mm, notes)
        if runs and not body.any():
            notes.append(f"no body above {opts.body_hu} HU: entries are the needles' outer ends")
        runs = [in_plane(ct, along_slices(ct, run, opts.needle_diameter_mm)) for run in runs]
        needles = tuple(_measure(ct, run, body, steps, opts) for run in runs)
    seconds = time.perf_counter() - started
    logger.info("found %d needles in %.2f s (%d metal points)", len(needles), seconds, len(points))
    return NeedleDetection(
        needles, tuple(notes), Provenance(NEEDLE_STAGE, opts.to_dict(), __version__, seconds)
    )


def _unexplained(
    points: NDArray[np.float64], runs: list[LineRun], opts: NeedleOptions, max_gap_mm: float
) -> NDArray[np.bool_]:
    """The points no run explains: beyond twice the inlier distance from each, or past its ends and gaps."""
    leftover = np.ones(len(points), dtype=bool)
    for run in runs:
        leftover &= ~near_run(run, points, reach_mm=2.0 * opts.inlier_mm, margin_mm=max_gap_mm)
    return leftover


def _darkened(
    ct: Volume, runs: list[LineRun], opts: NeedleOptions, max_gap_mm: float, notes: list[str]
) -> list[LineRun]:
    """Needles darkened by their own streaks: searched again from a lower level, among what is left.

    A needle lying in a slice, or nearly, darkens itself: the rays along it cross 20 mm of
    steel or more, are starved of photons and hardened, and their deficit is back-projected
    along its own line (in simulated low-dose scans it runs at 1000-1500 HU where a needle
    crossing the slices saturates; on 3 mm slices, where partial volume lowers the level to
    1000 HU, at 800-1000 HU). The candidate points from ``dimmed_fraction`` of the metal
    level that no needle found explains, and whose slices ``ring_mm`` above and below are
    tissue (``confined``: bone at that level goes on across the slices; that test stands in
    for the in-plane bone test, which on thick slices takes a needle beside seeds or its own
    streaks for cortex), are searched again. The search runs on those under the metal level
    (the others are mostly seeds, whose cores pull a line through a row of them), each line
    is then fitted to all its points, and it must lie in one slice over at least half
    ``min_length_mm`` (only such needles darken themselves) and pass the same tests (no bone
    around, continuous steel, not a row of seeds). The first search keeps its own level:
    from the lower one, the halos of seeds beside a needle pulled lines off (one came out 50
    degrees off). On slices up to 1.5 ``reference_slice_mm`` (3 mm): on 5 mm slices the lower
    level falls to 360 HU, where the streak a needle draws along its own line beyond its tip
    passed as a needle (23 mm long, in the 5 mm timing scan of ``bench/detection.py``).
    """
    if opts.dimmed_fraction >= 1.0 or len(runs) >= opts.max_needles:
        return []
    if thickness_ratio(ct, opts) > _DIMMED_MAX_RATIO:
        return []
    lower = replace(opts, metal_hu=opts.dimmed_fraction * opts.metal_hu)

    def left(points: NDArray[np.float64]) -> NDArray[np.float64]:
        return points[_unexplained(points, runs, opts, max_gap_mm)]

    dimmed = left(candidate_points(ct, lower, below_hu=metal_level_hu(ct, opts), confined=True))
    if len(dimmed) < 6:
        return []
    found = find_line_runs(
        dimmed, min_length_mm=opts.min_length_mm, inlier_mm=opts.inlier_mm, max_gap_mm=max_gap_mm,
        trials=opts.ransac_trials, random_seed=opts.random_seed, max_lines=opts.max_needles - len(runs),
    )  # fmt: skip
    if not found:
        return []
    points = left(candidate_points(ct, lower, confined=True))
    found = [refit_on(run, points, opts.inlier_mm) for run in found]
    normal = np.asarray(ct.grid.axes[0], dtype=np.float64)
    in_slice = [r for r in found if abs(float(r.direction @ normal)) * 0.5 * opts.min_length_mm
                <= float(ct.spacing_mm[0])]  # fmt: skip
    found = _bridged(ct, needle_like(ct, in_slice, opts, []), opts, max_gap_mm)
    if found:
        level = metal_level_hu(ct, lower)
        notes.append(f"{len(found)} needle(s) darkened by their own streaks, found from {level:.0f} HU")
    return found


def _entering(
    ct: Volume, points: NDArray[np.float64], runs: list[LineRun],
    body: tuple[NDArray[np.bool_], tuple[int, int]], opts: NeedleOptions, max_gap_mm: float, notes: list[str],
) -> list[LineRun]:
    """Needles inserted less than ``min_length_mm``: shorter straight runs that reach the skin.

    Deep in the body a run that short may be a chain of touching seeds (four are 18 mm
    long); a needle comes in through the skin. Among the metal points no found needle
    explains, runs of at least ``min_entering_mm`` that pass the same tests (no bone
    around, continuous) and whose outer end lies within ``skin_reach_mm`` of where
    their line leaves the body are needles being inserted; so are those that run on
    out of the scanned range (an end in the outermost slice or column): the rest of the
    needle lies beyond it.
    """
    if not body[0].any() or len(runs) >= opts.max_needles:
        return []
    leftover = _unexplained(points, runs, opts, max_gap_mm)
    if np.count_nonzero(leftover) < 6:
        return []
    short = find_line_runs(
        points[leftover], min_length_mm=opts.min_entering_mm, inlier_mm=opts.inlier_mm, max_gap_mm=max_gap_mm,
        trials=opts.ransac_trials, random_seed=opts.random_seed, max_lines=opts.max_needles - len(runs),
    )  # fmt: skip
    short = _bridged(ct, needle_like(ct, short, opts, []), opts, max_gap_mm)
    grid, (mask, steps) = ct.grid, body
    kept = []
    for run in short:
        ends = (run.centre_mm + run.start_mm * run.direction, run.centre_mm + run.stop_mm * run.direction)
        to_skin = min(_exit_distance(grid, ends[0], -run.direction, mask, steps, 50.0),
                      _exit_distance(grid, ends[1], run.direction, mask, steps, 50.0))  # fmt: skip
        if to_skin <= opts.skin_reach_mm or any(_at_slice_edge(grid, end[None, :], 0.5) for end in ends):
            kept.append(run)
    if kept:
        notes.append(f"{len(kept)} needle(s) in less than {opts.min_length_mm:.0f} mm, found from the skin")
    return kept


def _slab_profile(ct: Volume, opts: NeedleOptions, points_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """HU at the points, partial-volume aware: the larger of the two nearest slices' values.

    Each slice is sampled in-plane (bilinear) at the point and on a circle half the inlier
    distance about it; outside the scan the value is -inf.
    """
    from scipy import ndimage

    index = ct.patient_to_index(points_mm)
    inside = ct.grid.contains_index(index)
    offsets = np.vstack([np.zeros(2), _ring_offsets_mm(0.5 * opts.inlier_mm, 8) / ct.spacing_mm[1:]])
    best = np.full(len(index), -np.inf)
    for slice_index in (np.floor(index[:, 0]), np.floor(index[:, 0]) + 1.0):
        coords = np.stack([
            np.repeat(np.clip(slice_index, 0, ct.shape[0] - 1)[:, None], len(offsets), 1),
            index[:, 1, None] + offsets[None, :, 0], index[:, 2, None] + offsets[None, :, 1],
        ]).reshape(3, -1)  # fmt: skip
        values = ndimage.map_coordinates(
            np.asarray(ct.array), coords, output=np.float32, order=1, mode="nearest"
        )
        best = np.maximum(best, values.reshape(len(index), -1).max(axis=1))
    best[~inside] = -np.inf
    return best


def _ring_offsets_mm(radius_mm: float, count: int) -> NDArray[np.float64]:
    angles = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
    ring: NDArray[np.float64] = radius_mm * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return ring


def _bridged(ct: Volume, runs: list[LineRun], opts: NeedleOptions, max_gap_mm: float) -> list[LineRun]:
    """Needle pieces carried along their axis where the steel is split between two slices, then merged.

    A rod split evenly over two slices shows half its in-slice contrast in each; a run is
    lengthened while the larger of the two nearest slices (:func:`_slab_profile`) stays
    above half that, a quarter of the way from the tissue around the run to its plateau
    (the 90th percentile of the same profile along it), across dips no longer than the
    gaps bridged between metal points. Tips and the gaps between seeds fall to the tissue.
    """
    if not runs:
        return runs
    step = 0.5 * float(np.min(ct.spacing_mm))
    levels: list[float] = []
    for run in runs:
        tissue = float(np.median(surroundings(ct, run, opts)))
        t = np.arange(run.start_mm, run.stop_mm + 1e-9, step)
        plateau = float(
            np.percentile(_slab_profile(ct, opts, run.centre_mm + t[:, None] * run.direction), 90)
        )
        levels.append(tissue + 0.25 * (plateau - tissue))
    reach = float(np.linalg.norm(np.asarray(ct.shape) * ct.spacing_mm))
    return bridge_runs(
        runs, lambda points: _slab_profile(ct, opts, points), levels,
        inlier_mm=opts.inlier_mm, max_gap_mm=max_gap_mm, step_mm=step, reach_mm=reach,
    )  # fmt: skip


def _validate_ct(ct: Volume) -> None:
    if not isinstance(ct, Volume):
        raise TypeError(f"ct must be a guidance.volume.Volume; got {type(ct).__name__}")
    if not np.issubdtype(ct.array.dtype, np.number) or np.issubdtype(ct.array.dtype, np.complexfloating):
        raise ValueError(f"ct array must hold real HU values; got dtype {ct.array.dtype}")
