"""Straight runs of metal points: a random-sample (RANSAC) line search in millimetres.

Each trial draws two points between half and three times the minimum length apart
(scored on a random subset of the points, which keeps a trial cheap; the trials are
evaluated in batches as arrays).
The best line is refined by principal axes on its inliers, cut at gaps,
and its points are removed before the next search.

References
----------
M. A. Fischler and R. C. Bolles, "Random sample consensus", Commun. ACM 24 (1981) 381-395.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

__all__ = ["LineRun", "bridge_runs", "find_line_runs", "near_run", "principal_line", "refit_on"]

_SCORE_POINTS = 1500
_BATCH = 50


@dataclass(frozen=True, eq=False)
class LineRun:
    """A straight run of points: centre, unit direction, extent along it and its points (mm)."""

    centre_mm: NDArray[np.float64]
    direction: NDArray[np.float64]
    start_mm: float
    stop_mm: float
    rms_mm: float
    points_mm: NDArray[np.float64]
    shell_ratio: float

    @property
    def length_mm(self) -> float:
        return self.stop_mm - self.start_mm


def principal_line(
    points_mm: NDArray[np.float64], weights: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Weighted centroid, eigenvalues (descending, mm^2) and eigenvectors (columns) of the points."""
    w = np.ones(len(points_mm)) if weights is None else weights
    centre = (points_mm * w[:, None]).sum(axis=0) / w.sum()
    offset = points_mm - centre
    cov = (offset * w[:, None]).T @ offset / w.sum()
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return centre, values[order], vectors[:, order]


def _distance_to_line(
    points: NDArray[np.float64], centre: NDArray[np.float64], direction: NDArray[np.float64]
) -> NDArray[np.float64]:
    offset = points - centre
    along = offset @ direction
    distance: NDArray[np.float64] = np.linalg.norm(offset - along[:, None] * direction, axis=1)
    return distance


def _propose(
    points: NDArray[np.float64],
    rng: np.random.Generator,
    trials: int,
    inlier_mm: float,
    reach_mm: tuple[float, float],
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Best line of ``trials`` two-point proposals (a pair ``reach_mm`` apart), scored on a subset.

    The trials are evaluated together, ``_BATCH`` at a time: for each, the squared
    distance of every scoring point from the first point of the pair, a random partner
    among the points in reach, and the count of points within ``inlier_mm`` of the line.
    """
    score_pts = points[rng.choice(len(points), size=min(len(points), _SCORE_POINTS), replace=False)]
    best: tuple[int, NDArray[np.float64], NDArray[np.float64]] | None = None
    lo_sq, hi_sq, inlier_sq = reach_mm[0] ** 2, reach_mm[1] ** 2, inlier_mm**2
    for first in range(0, trials, _BATCH):
        count = min(_BATCH, trials - first)
        a = score_pts[rng.integers(len(score_pts), size=count)]
        offset = score_pts[None, :, :] - a[:, None, :]
        distance_sq = np.einsum("tnk,tnk->tn", offset, offset)
        reachable = (distance_sq >= lo_sq) & (distance_sq <= hi_sq)
        keys = rng.random(reachable.shape)
        keys[~reachable] = -1.0
        partner = np.argmax(keys, axis=1)
        rows = np.arange(count)
        usable = reachable[rows, partner]
        if not usable.any():
            continue
        direction = score_pts[partner] - a
        direction /= np.maximum(np.linalg.norm(direction, axis=1), 1e-12)[:, None]
        along = np.einsum("tnk,tk->tn", offset, direction)
        scores = np.count_nonzero(distance_sq - along**2 <= inlier_sq, axis=1)
        scores[~usable] = -1
        k = int(np.argmax(scores))
        if best is None or int(scores[k]) > best[0]:
            best = (int(scores[k]), a[k], direction[k])
    return None if best is None else (best[1], best[2])


def _coverage(along: NDArray[np.float64], start: float, stop: float) -> float:
    """Fraction of 1 mm bins between start and stop that hold a point."""
    bins = np.unique(np.floor(along[(along >= start) & (along <= stop)] - start).astype(np.int64))
    return float(len(bins)) / max(1.0, float(np.ceil(stop - start)))


def _refine(
    points: NDArray[np.float64],
    centre: NDArray[np.float64],
    direction: NDArray[np.float64],
    inlier_mm: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    inliers = _distance_to_line(points, centre, direction) <= inlier_mm
    for _ in range(3):
        if np.count_nonzero(inliers) < 3:
            break
        centre, _, vectors = principal_line(points[inliers])
        direction = vectors[:, 0]
        inliers = _distance_to_line(points, centre, direction) <= inlier_mm
    return centre, direction, inliers


def _longest_run(along: NDArray[np.float64], max_gap_mm: float) -> tuple[float, float]:
    values = np.sort(along)
    cuts = np.flatnonzero(np.diff(values) > max_gap_mm)
    starts = np.concatenate([[0], cuts + 1])
    stops = np.concatenate([cuts, [len(values) - 1]])
    best = int(np.argmax(values[stops] - values[starts]))
    return float(values[starts[best]]), float(values[stops[best]])


def find_line_runs(
    points_mm: NDArray[np.float64],
    *,
    min_length_mm: float,
    inlier_mm: float,
    max_gap_mm: float,
    trials: int,
    random_seed: int,
    max_lines: int,
    min_coverage: float = 0.6,
    max_failures: int = 5,
) -> list[LineRun]:
    """Straight runs at least ``min_length_mm`` long, best supported first.

    Parameters
    ----------
    points_mm : ndarray of shape (n, 3)
        Metal points, LPS mm.
    min_coverage : float
        Fraction of the run (1 mm bins) that must hold points (a row of separate
        seeds is not a needle).
    max_failures : int
        Stop after this many proposals that made no run (their points are set aside
        each time).
    """
    rng = np.random.default_rng(random_seed)
    remaining = np.ones(len(points_mm), dtype=bool)
    runs: list[LineRun] = []
    failures = 0
    while len(runs) < max_lines and failures < max_failures and np.count_nonzero(remaining) >= 6:
        pts = points_mm[remaining]
        proposal = _propose(pts, rng, trials, inlier_mm, (0.5 * min_length_mm, 3.0 * min_length_mm))
        if proposal is None:
            break
        centre, direction, inliers = _refine(pts, *proposal, inlier_mm)
        along = (pts - centre) @ direction
        start, stop = _longest_run(along[inliers], max_gap_mm)
        in_run = inliers & (along >= start) & (along <= stop)
        indices = np.flatnonzero(remaining)
        if stop - start < min_length_mm or _coverage(along[inliers], start, stop) < min_coverage:
            failures += 1
            remaining[indices[in_run]] = False
            continue
        distance = _distance_to_line(pts, centre, direction)
        near = (along >= start) & (along <= stop)
        shell = np.count_nonzero(near & (distance > inlier_mm) & (distance <= 2.0 * inlier_mm))
        rms = float(np.sqrt(np.mean(distance[in_run] ** 2)))
        ratio = float(shell) / float(max(1, int(np.count_nonzero(in_run))))
        runs.append(LineRun(centre, direction, start, stop, rms, pts[in_run], ratio))
        # The needle's halo (beyond the inlier radius) goes with it, or it would seed a ghost line.
        remaining[indices[near & (distance <= 2.0 * inlier_mm)]] = False
    return _merge_collinear(runs, inlier_mm, 3.0 * max_gap_mm)


def _run_from_points(points: NDArray[np.float64], shell_ratio: float) -> LineRun:
    centre, _, vectors = principal_line(points)
    direction = vectors[:, 0]
    along = (points - centre) @ direction
    rms = float(np.sqrt(np.mean(_distance_to_line(points, centre, direction) ** 2)))
    return LineRun(centre, direction, float(along.min()), float(along.max()), rms, points, shell_ratio)


def _merge_collinear(runs: list[LineRun], inlier_mm: float, max_gap_mm: float) -> list[LineRun]:
    """Join runs on one axis separated by a short gap (a needle interrupted by a dark streak)."""
    merged = True
    while merged:
        merged = False
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                a, b = runs[i], runs[j]
                if abs(float(a.direction @ b.direction)) < np.cos(np.radians(4.0)):
                    continue
                joined = _run_from_points(
                    np.vstack([a.points_mm, b.points_mm]), max(a.shell_ratio, b.shell_ratio)
                )
                along_a = (a.points_mm - joined.centre_mm) @ joined.direction
                along_b = (b.points_mm - joined.centre_mm) @ joined.direction
                gap = max(along_b.min() - along_a.max(), along_a.min() - along_b.max())
                if joined.rms_mm <= 0.6 * inlier_mm and 0.0 <= gap <= max_gap_mm:
                    runs = [r for k, r in enumerate(runs) if k not in (i, j)] + [joined]
                    merged = True
                    break
            if merged:
                break
    return sorted(runs, key=lambda r: -r.length_mm)


def _extended(run: LineRun, profile: Callable[[NDArray[np.float64]], NDArray[np.float64]], level: float,
              step_mm: float, reach_mm: float, max_gap_mm: float) -> LineRun:  # fmt: skip
    """The run lengthened at each end along its axis while ``profile`` stays at ``level``."""
    t = np.arange(step_mm, reach_mm, step_mm)
    ends = [run.start_mm, run.stop_mm]
    for k, sign in ((0, -1.0), (1, 1.0)):
        values = profile(run.centre_mm + (ends[k] + sign * t)[:, None] * run.direction)
        above = np.concatenate([[0.0], t[values >= level]])
        cuts = np.flatnonzero(np.diff(above) > max_gap_mm)
        ends[k] += sign * float(above[cuts[0]] if len(cuts) else above[-1])
    return replace(run, start_mm=ends[0], stop_mm=ends[1])


def bridge_runs(
    runs: list[LineRun],
    profile: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    levels: list[float],
    *,
    inlier_mm: float,
    max_gap_mm: float,
    step_mm: float,
    reach_mm: float,
    max_angle_deg: float = 1.0,
) -> list[LineRun]:
    """Runs carried along their axis over stretches where ``profile`` stays at their level, then merged.

    A needle that falls below the point level where it straddles two thick slices is found
    as pieces; each piece is lengthened while the intensity on its axis stays at
    ``levels[i]`` (``profile`` maps points (n, 3) in mm to values), across dips shorter
    than ``max_gap_mm`` (a dark streak, as between points of a run). A run then lying along a
    longer one (most of its points within ``inlier_mm`` of that one's segment) is the same
    needle: it is dropped, and its points join the longer run's fit when the two are
    within ``max_angle_deg``.
    """
    extended = sorted(
        (
            _extended(run, profile, level, step_mm, reach_mm, max_gap_mm)
            for run, level in zip(runs, levels, strict=True)
        ),
        key=lambda r: -r.length_mm,
    )
    kept: list[LineRun] = []
    for run in extended:
        for i, other in enumerate(kept):
            if np.mean(near_run(other, run.points_mm, reach_mm=inlier_mm, margin_mm=inlier_mm)) < 0.5:
                continue
            if abs(float(run.direction @ other.direction)) >= np.cos(np.radians(max_angle_deg)):
                kept[i] = _refit(other, run.points_mm)
            break
        else:
            kept.append(run)
    return kept


def _refit(run: LineRun, points_mm: NDArray[np.float64]) -> LineRun:
    """``run`` refitted on its points and ``points_mm``, over its own extent and theirs."""
    points = np.vstack([run.points_mm, points_mm])
    ends = run.centre_mm + np.outer([run.start_mm, run.stop_mm], run.direction)
    centre, _, vectors = principal_line(points)
    direction = vectors[:, 0] if float(vectors[:, 0] @ run.direction) >= 0.0 else -vectors[:, 0]
    along = np.concatenate([(points - centre) @ direction, (ends - centre) @ direction])
    rms = float(np.sqrt(np.mean(_distance_to_line(points, centre, direction) ** 2)))
    return LineRun(centre, direction, float(along.min()), float(along.max()), rms, points, run.shell_ratio)


def near_run(
    run: LineRun, points_mm: NDArray[np.float64], *, reach_mm: float, margin_mm: float = 0.0
) -> NDArray[np.bool_]:
    """Which points lie within ``reach_mm`` of the run's axis, between its ends (``margin_mm`` beyond)."""
    along = (points_mm - run.centre_mm) @ run.direction
    near: NDArray[np.bool_] = (
        (_distance_to_line(points_mm, run.centre_mm, run.direction) <= reach_mm)
        & (along >= run.start_mm - margin_mm)
        & (along <= run.stop_mm + margin_mm)
    )
    return near


def refit_on(run: LineRun, points_mm: NDArray[np.float64], inlier_mm: float) -> LineRun:
    """``run`` refitted on those of ``points_mm`` within ``inlier_mm`` of its segment."""
    near = near_run(run, points_mm, reach_mm=inlier_mm)
    if np.count_nonzero(near) < 3:
        return run
    return _refit(replace(run, points_mm=points_mm[near]), np.zeros((0, 3)))
