"""A needle's axis refitted from its voxel values: along the slice axis, and across it in-plane.

The line search fits a needle to the centres of its voxels above the metal level. In-plane
those centres are a pixel apart and the fit is sub-pixel; along the slice axis they are a
slice apart (2-5 mm), and which slice a voxel passes the level in depends on noise and
streaks: a needle 35 mm long lying within a slice or two came out 1.5-3.3 degrees off its
axis, nearly all of it across the slices.

Partial volume places it better. Where a needle crosses between two slices, each slice
sees the part of the steel within it: the brighter slice and the share of its brighter
neighbour place the needle between their centres. Along a needle within 45 degrees of the
slice plane, every half millimetre (away from its ends, where the tip's blur and streaks
fan out), the column through the axis across the slices is sampled, less each slice's own
background there (the median of four samples 2.5 and 3.5 mm either side of the needle in
that slice: streaks are drawn slice by slice). The station lies at the brightest slice
moved towards its brighter neighbour by that neighbour's share of the two. A line is
fitted to the stations (distance along the axis against offset along the slice axis), twice
dropping stations beyond three robust sds (and at least a sixth of a slice) from it:
the bright flank of a streak, a seed beside the needle. The refit is kept when at least
eight stations remain and it turns the axis by less than atan(2 T / L) (T the slice
thickness, L the run's length): twice the tilt a slice's quantisation allows the voxel fit.

The share maps onto a slice's width where the needle's way from one slice into the next
(a column's path through the steel, diameter / cos(tilt), widened by the slice profile's
edges) spans about a slice: on slices from that path to twice it (2 mm for an 18G needle).
On thinner slices the needle spans two or three at once and the voxel fit samples it
finely; on thicker ones it lies within one slice over most of its length, where the share
says nothing, and crosses to the next over a fraction of a slice: the offsets are a
staircase, and a line through one or two of its steps is biased (on 3 mm slices a needle
4 degrees to them came out 0.75 degrees off; procedure scans on 5 mm slices went both ways).
A needle steeper than 45 degrees to the slice plane is a dot in each slice, placed in-plane
sub-pixel by the voxel fit already. Those keep their axis.

In-plane (:func:`in_plane`), the voxel fit weighs a voxel above the metal level as any
other: a needle lying in a slice, darkened by its own streaks to near the level, is drawn
by which of its voxels pass it, and a bright spot beside it (a seed, a streak's flank) pulls
the line. The same stations, within 45 degrees of the slice plane, take the centroid of the
needle's profile across it in the slice plane (less its background), and the same robust
line through them (a sixth of a pixel at least) replaces the axis across it when it turns
it by less than atan(2 p / L) (p the pixel size). The robust line starts from the
Theil-Sen line: a run of stations pulled by a bright spot along one end would tilt a first
least-squares fit enough to keep them. A needle lying in a 2 mm slice of a low-dose scan
came out 1.15 degrees off (1.06 of it in-plane), 0.49 after; over the procedure scans on
2 mm slices the largest angle error went from 1.15 to 0.81 degrees.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from guidance.detection.lines import LineRun
from guidance.volume import Volume

__all__ = ["along_slices", "in_plane"]

_STEP_MM = 0.5
_END_MARGIN_MM = 3.0
_BACKGROUND_MM = np.array([-3.5, -2.5, 2.5, 3.5])
_REACH = 2  # slices either side of the axis sampled
_MIN_STATIONS = 8
_MAX_TILT_DEG = 45.0


def along_slices(ct: Volume, run: LineRun, diameter_mm: float) -> LineRun:
    """The run with its axis refitted along the slice axis from partial volume (see the module)."""
    grid = ct.grid
    stepping = np.asarray(grid.axes[0], dtype=np.float64)  # one slice's step, unit
    normal = np.cross(grid.axes[1], grid.axes[2])
    normal /= np.linalg.norm(normal)
    direction = run.direction
    sine = abs(float(direction @ normal))
    thickness_mm = float(ct.spacing_mm[0])
    if sine > np.sin(np.radians(_MAX_TILT_DEG)):
        return run
    steel_mm = diameter_mm / np.sqrt(1.0 - sine**2)  # a column's path through the steel
    if not steel_mm <= thickness_mm <= 2.0 * steel_mm:
        return run
    t = _stations_mm(run)
    if t is None:
        return run
    offsets_mm = _station_offsets_mm(ct, run.centre_mm + t[:, None] * direction, direction, normal)
    return _refitted(run, t, offsets_mm, stepping, thickness_mm)


def _station_offsets_mm(
    ct: Volume, stations_mm: NDArray[np.float64], direction: NDArray[np.float64], normal: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Offset (mm, along the slice step) of the needle from each station; NaN where it cannot be told."""
    from scipy import ndimage

    array = np.asarray(ct.array)
    thickness_mm = float(ct.spacing_mm[0])
    index = ct.patient_to_index(stations_mm)
    nearest = np.rint(index[:, 0])
    slices = nearest[:, None] + np.arange(-_REACH, _REACH + 1)[None, :]
    inside = (slices >= 0) & (slices <= ct.shape[0] - 1)
    clipped = np.clip(slices, 0, ct.shape[0] - 1)
    across = np.cross(normal, direction)
    across /= np.linalg.norm(across)
    beside = (stations_mm[:, None, :] + _BACKGROUND_MM[None, :, None] * across).reshape(-1, 3)
    beside_index = ct.patient_to_index(beside).reshape(len(stations_mm), len(_BACKGROUND_MM), 3)
    excess = np.zeros(slices.shape)
    for j in range(slices.shape[1]):
        column = ndimage.map_coordinates(array, np.stack([clipped[:, j], index[:, 1], index[:, 2]]),
                                         output=np.float32, order=1, mode="nearest")  # fmt: skip
        coords = np.stack([np.repeat(clipped[:, j, None], len(_BACKGROUND_MM), axis=1), beside_index[..., 1],
                           beside_index[..., 2]]).reshape(3, -1)  # fmt: skip
        ring = ndimage.map_coordinates(array, coords, output=np.float32, order=1, mode="nearest")
        ring = ring.reshape(len(stations_mm), -1)
        background = np.median(ring, axis=1)
        excess[:, j] = np.clip(column - background, 0.0, None)
    rows = np.arange(len(stations_mm))
    peak = np.argmax(excess, axis=1)
    lower, upper = np.clip(peak - 1, 0, 2 * _REACH), np.clip(peak + 1, 0, 2 * _REACH)
    # The brightest slice within one of the axis, with both neighbours sampled in the scan.
    usable = (np.abs(peak - _REACH) <= 1) & inside[rows, lower] & inside[rows, upper]
    usable &= excess[rows, peak] > 0
    below, above = excess[rows, lower], excess[rows, upper]
    side = np.where(above >= below, 1.0, -1.0)
    neighbour = np.maximum(above, below)
    share = neighbour / np.maximum(excess[rows, peak] + neighbour, 1e-9)
    offsets = (slices[rows, peak] + side * share - index[:, 0]) * thickness_mm
    return np.where(usable, offsets, np.nan)


def _robust_line(
    t: NDArray[np.float64], offsets_mm: NDArray[np.float64], *, floor_mm: float
) -> tuple[float, float] | None:
    """Intercept and slope of offset against t: the Theil-Sen line (median of the pairwise slopes,
    robust to a run of biased stations along one end), then twice refitted by least squares
    without the stations beyond 3 robust sds of the last line (and at least ``floor_mm``)."""
    from scipy.stats import theilslopes

    if len(t) < _MIN_STATIONS or np.ptp(t) <= 0:
        return None
    slope, intercept, _, _ = (float(c) for c in theilslopes(offsets_mm, t, method="joint"))
    for _ in range(2):
        residual = offsets_mm - (intercept + slope * t)
        spread = 1.4826 * float(np.median(np.abs(residual)))
        keep = np.abs(residual) <= max(floor_mm, 3.0 * spread)
        if np.count_nonzero(keep) < _MIN_STATIONS or np.ptp(t[keep]) <= 0:
            return None
        slope, intercept = (float(c) for c in np.polyfit(t[keep], offsets_mm[keep], 1))
    return intercept, slope


_PROFILE_MM = np.arange(-3.5, 3.5 + 1e-9, 0.25)
_CORE_MM = 1.5  # the needle's radius and its blur: the part of the profile its centroid is taken over


def in_plane(ct: Volume, run: LineRun) -> LineRun:
    """The run with its axis refitted across it in the slice plane from profile centroids (see the module)."""
    grid = ct.grid
    normal = np.cross(grid.axes[1], grid.axes[2])
    normal /= np.linalg.norm(normal)
    direction = run.direction
    sine = abs(float(direction @ normal))
    if sine > np.sin(np.radians(_MAX_TILT_DEG)):
        return run
    across = np.cross(normal, direction)
    across /= np.linalg.norm(across)
    t = _stations_mm(run)
    if t is None:
        return run
    offsets_mm = _centroid_offsets_mm(ct, run.centre_mm + t[:, None] * direction, across)
    return _refitted(run, t, offsets_mm, across, float(np.min(ct.spacing_mm[1:])))


def _stations_mm(run: LineRun) -> NDArray[np.float64] | None:
    """Distances along the run every half millimetre, 3 mm clear of its ends; None when too few."""
    t = np.arange(run.start_mm + _END_MARGIN_MM, run.stop_mm - _END_MARGIN_MM + 1e-9, _STEP_MM)
    return t if len(t) >= _MIN_STATIONS else None


def _refitted(
    run: LineRun, t: NDArray[np.float64], offsets_mm: NDArray[np.float64], shift: NDArray[np.float64],
    spacing_mm: float,
) -> LineRun:  # fmt: skip
    """The run moved along the unit ``shift`` by the robust line through its stations' offsets.

    Kept when at least eight stations hold an offset and it turns the axis by less than
    atan(2 spacing / length); otherwise the run as it was.
    """
    valid = np.isfinite(offsets_mm)
    if np.count_nonzero(valid) < _MIN_STATIONS:
        return run
    fit = _robust_line(t[valid], offsets_mm[valid], floor_mm=spacing_mm / 6.0)
    if fit is None:
        return run
    intercept_mm, slope = fit
    refitted = run.direction + slope * shift
    scale = float(np.linalg.norm(refitted))
    refitted /= scale
    turn_deg = np.degrees(np.arccos(min(1.0, abs(float(refitted @ run.direction)))))
    if turn_deg > np.degrees(np.arctan(2.0 * spacing_mm / max(run.length_mm, 1e-6))):
        return run
    # A point t along the old axis moves to t * scale along the new one (same place across it).
    return replace(
        run, centre_mm=run.centre_mm + intercept_mm * shift, direction=refitted,
        start_mm=run.start_mm * scale, stop_mm=run.stop_mm * scale,
    )  # fmt: skip


def _centroid_offsets_mm(
    ct: Volume, stations_mm: NDArray[np.float64], across: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Offset (mm, along ``across``) of the needle's centroid from each station; NaN where nothing shows.

    The profile across the needle in the slice plane, every 0.25 mm to 3.5 mm either side,
    less its background (the median beyond 2.5 mm); the centroid of the excess within 1.5 mm
    (the needle's radius and its edge blur).
    """
    from scipy import ndimage

    array = np.asarray(ct.array)
    points = stations_mm[:, None, :] + _PROFILE_MM[None, :, None] * across
    index = ct.patient_to_index(points.reshape(-1, 3))
    values = ndimage.map_coordinates(array, index.T, output=np.float32, order=1, mode="nearest")
    values = values.reshape(len(stations_mm), len(_PROFILE_MM)).astype(np.float64)
    outer = np.abs(_PROFILE_MM) >= 2.5
    background = np.median(values[:, outer], axis=1)
    core = np.abs(_PROFILE_MM) <= _CORE_MM
    excess = np.clip(values[:, core] - background[:, None], 0.0, None)
    total = excess.sum(axis=1)
    centroid = (excess * _PROFILE_MM[core]).sum(axis=1) / np.maximum(total, 1e-9)
    return np.where(total > 0, centroid, np.nan)
