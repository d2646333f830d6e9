"""Matching what was found in a scan to what was planned, after registration.

Frames: detections are LPS mm in the scan's frame (the moving image of the
registration); the plan is LPS mm in the planning frame (the fixed image).
:func:`match_to_plan` takes ``scan_to_plan``, the rigid 4x4 that maps a scan point
into the planning frame (``RegistrationResult.moving_to_fixed``), maps the detections
with it, and reports every position, displacement and direction **in the planning
frame** (where the plan, the structures and the dose live). A rigid map keeps
distances and angles, so the distances and angles are the same in either frame.

Method:

- Seeds: minimum-total-distance one-to-one assignment (Hungarian algorithm,
  :func:`scipy.optimize.linear_sum_assignment`) of planned to found seeds, pairs
  farther apart than ``seed_gate_mm`` forbidden. Planned seeds without a partner are
  *missing*, found seeds without one are *extra*.
- Needles: the same assignment with, as cost, the mean distance of the found
  needle's in-body segment (11 points, entry to tip) from the planned needle's axis
  (the infinite line: a needle short of its planned depth is still on its track);
  pairs farther than ``needle_gate_mm`` or more than ``max_angle_deg`` apart are
  forbidden. Each pair reports the entry and tip deviations (vectors and distances),
  the tip's depth error along the planned direction and its lateral distance from the
  planned axis, and the angle between the needles.

References
----------
H. W. Kuhn, "The Hungarian method for the assignment problem", Naval Res. Logist. Q.
2 (1955) 83-97; D. F. Crouse, "On implementing 2D rectangular assignment algorithms",
IEEE Trans. Aerosp. Electron. Syst. 52 (2016) 1679-1696 (the SciPy implementation).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from guidance import __version__
from guidance.detection.result import NeedleDetection, SeedDetection
from guidance.plan import Plan
from guidance.provenance import Provenance

__all__ = [
    "MATCH_STAGE",
    "MatchOptions",
    "NeedleMatch",
    "PlanMatch",
    "SeedMatch",
    "assign",
    "match_to_plan",
]

logger = logging.getLogger(__name__)

MATCH_STAGE = "detection.matching"
_FORBIDDEN = 1e9


@dataclass(frozen=True)
class MatchOptions:
    """Parameters of :func:`match_to_plan`.

    Parameters
    ----------
    seed_gate_mm : float
        A found seed farther than this from a planned seed is not that seed.
    needle_gate_mm : float
        A found needle whose in-body segment lies on average farther than this from a
        planned needle's axis is not that needle.
    max_angle_deg : float
        Nor is one at a larger angle to it.
    """

    seed_gate_mm: float = 5.0
    needle_gate_mm: float = 6.0
    max_angle_deg: float = 15.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"MatchOptions.{name} must be a finite number > 0; got {value}")
        if self.max_angle_deg > 90.0:
            raise ValueError(f"MatchOptions.max_angle_deg must be <= 90; got {self.max_angle_deg}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _frozen(value: ArrayLike) -> NDArray[np.float64]:
    array = np.array(value, dtype=np.float64).reshape(3)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class SeedMatch:
    """A planned seed and the found seed taken for it, planning frame, LPS mm.

    Parameters
    ----------
    planned_index : int
        Index into ``Plan.seeds``.
    found_index : int
        Index into ``SeedDetection.seeds``.
    planned_mm, found_mm : ndarray of shape (3,)
    displacement_mm : ndarray of shape (3,)
        ``found_mm - planned_mm``.
    distance_mm : float
        Length of the displacement.
    """

    planned_index: int
    found_index: int
    planned_mm: NDArray[np.float64]
    found_mm: NDArray[np.float64]
    displacement_mm: NDArray[np.float64]
    distance_mm: float

    def __post_init__(self) -> None:
        for name in ("planned_mm", "found_mm", "displacement_mm"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class NeedleMatch:
    """A planned needle and the found needle taken for it, planning frame, LPS mm.

    Parameters
    ----------
    planned_index, found_index : int
        Indices into ``Plan.needles`` and ``NeedleDetection.needles``.
    entry_deviation_mm, tip_deviation_mm : ndarray of shape (3,)
        Found minus planned entry and tip. The entry deviation is NaN when the found
        needle's skin crossing is not in the scan (its entry is then only the last point seen).
    entry_distance_mm, tip_distance_mm : float
        Their lengths (NaN with them).
    depth_error_mm : float
        Tip deviation along the planned direction: positive when the needle went deeper
        than planned, negative when it stopped short.
    tip_lateral_mm : float
        Distance of the found tip from the planned needle's axis.
    angle_deg : float
        Angle between the found and the planned directions.
    track_distance_mm : float
        The assignment cost: mean distance of the found in-body segment from the planned axis.
    tip_outside_scan : bool
        The found tip is the last point seen in the scan, not the needle's tip.
    """

    planned_index: int
    found_index: int
    entry_deviation_mm: NDArray[np.float64]
    tip_deviation_mm: NDArray[np.float64]
    entry_distance_mm: float
    tip_distance_mm: float
    depth_error_mm: float
    tip_lateral_mm: float
    angle_deg: float
    track_distance_mm: float
    tip_outside_scan: bool

    def __post_init__(self) -> None:
        for name in ("entry_deviation_mm", "tip_deviation_mm"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class PlanMatch:
    """Which planned seeds and needles were found, which are missing, which found ones are extra.

    Parameters
    ----------
    seeds : tuple of SeedMatch
        In planned-seed order.
    missing_seeds : tuple of int
        Indices into ``Plan.seeds`` with no found seed within the gate.
    extra_seeds : tuple of int
        Indices into ``SeedDetection.seeds`` taken for no planned seed.
    needles, missing_needles, extra_needles
        The same for needles (indices into ``Plan.needles`` and ``NeedleDetection.needles``).
    scan_to_plan : ndarray of shape (4, 4)
        The rigid map used, scan frame -> planning frame.
    provenance : Provenance
    """

    seeds: tuple[SeedMatch, ...]
    missing_seeds: tuple[int, ...]
    extra_seeds: tuple[int, ...]
    needles: tuple[NeedleMatch, ...]
    missing_needles: tuple[int, ...]
    extra_needles: tuple[int, ...]
    scan_to_plan: NDArray[np.float64]
    provenance: Provenance

    def __post_init__(self) -> None:
        matrix = np.array(self.scan_to_plan, dtype=np.float64).reshape(4, 4)
        matrix.setflags(write=False)
        object.__setattr__(self, "scan_to_plan", matrix)

    @property
    def seed_distances_mm(self) -> NDArray[np.float64]:
        """Distance of each placed seed from its planned position, shape (n,), mm."""
        return np.array([m.distance_mm for m in self.seeds], dtype=np.float64)


def assign(cost: NDArray[np.float64], gate: float) -> list[tuple[int, int]]:
    """Minimum-total-cost one-to-one pairs (row, column) among those with cost <= ``gate``.

    Pairs above the gate are given a prohibitive cost, so the assignment first keeps as
    many pairs within the gate as it can, then minimises their total; any pair still
    above the gate is dropped. ``cost`` may be rectangular or empty and may hold inf/NaN
    (forbidden).
    """
    from scipy.optimize import linear_sum_assignment

    if cost.size == 0:
        return []
    allowed = np.isfinite(cost) & (cost <= gate)
    gated = np.where(allowed, np.nan_to_num(cost, nan=0.0, posinf=0.0), _FORBIDDEN)
    rows, columns = linear_sum_assignment(gated)
    return [(int(r), int(c)) for r, c in zip(rows, columns, strict=True) if allowed[r, c]]


def _validated_rigid(matrix: ArrayLike) -> NDArray[np.float64]:
    transform = np.asarray(matrix, dtype=np.float64)
    if transform.shape != (4, 4) or not np.all(np.isfinite(transform)):
        raise ValueError(f"scan_to_plan must be a finite 4x4 matrix; got shape {transform.shape}")
    rotation = transform[:3, :3]
    rigid = (
        np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
        and np.linalg.det(rotation) > 0
        and np.allclose(transform[3], [0.0, 0.0, 0.0, 1.0])
    )
    if not rigid:
        raise ValueError(
            "scan_to_plan must be rigid (a proper rotation, a translation, last row 0 0 0 1), "
            "as RegistrationResult.moving_to_fixed is; distances and angles would not survive otherwise"
        )
    return transform


def _apply(transform: NDArray[np.float64], points: NDArray[np.float64]) -> NDArray[np.float64]:
    mapped: NDArray[np.float64] = points.reshape(-1, 3) @ transform[:3, :3].T + transform[:3, 3]
    return mapped


def _match_seeds(
    plan: Plan, found: SeedDetection, transform: NDArray[np.float64], gate_mm: float
) -> tuple[tuple[SeedMatch, ...], tuple[int, ...], tuple[int, ...]]:
    planned = plan.seed_positions_mm
    positions = _apply(transform, found.positions_mm)
    cost = np.linalg.norm(planned[:, None, :] - positions[None, :, :], axis=2)
    pairs = sorted(assign(cost, gate_mm))
    matches = tuple(
        SeedMatch(p, f, planned[p], positions[f], positions[f] - planned[p], float(cost[p, f]))
        for p, f in pairs
    )
    return (
        matches,
        tuple(sorted(set(range(len(planned))) - {p for p, _ in pairs})),
        tuple(sorted(set(range(len(positions))) - {f for _, f in pairs})),
    )


def _line_distance(
    points: NDArray[np.float64], origin: NDArray[np.float64], direction: NDArray[np.float64]
) -> NDArray[np.float64]:
    offset = points - origin
    distance: NDArray[np.float64] = np.linalg.norm(
        offset - (offset @ direction)[:, None] * direction, axis=-1
    )
    return distance


def _needle_costs(
    plan: Plan, entries: NDArray[np.float64], tips: NDArray[np.float64], max_angle_deg: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Track distance (mm) and angle (deg) of every planned x found needle pair; inf where too oblique."""
    fractions = np.linspace(0.0, 1.0, 11)
    cost = np.full((len(plan.needles), len(entries)), np.inf)
    angle = np.full_like(cost, 180.0)
    found_dirs = (tips - entries) / np.maximum(np.linalg.norm(tips - entries, axis=1, keepdims=True), 1e-9)
    for p, needle in enumerate(plan.needles):
        direction = needle.direction
        if np.any(np.isnan(direction)):
            continue
        for f in range(len(entries)):
            angle[p, f] = math.degrees(math.acos(min(1.0, max(-1.0, float(found_dirs[f] @ direction)))))
            if angle[p, f] <= max_angle_deg:
                samples = entries[f] + fractions[:, None] * (tips[f] - entries[f])
                cost[p, f] = float(np.mean(_line_distance(samples, needle.entry_mm, direction)))
    return cost, angle


def _match_needles(
    plan: Plan, found: NeedleDetection, transform: NDArray[np.float64], opts: MatchOptions
) -> tuple[tuple[NeedleMatch, ...], tuple[int, ...], tuple[int, ...]]:
    entries = _apply(transform, np.array([n.entry_mm for n in found.needles]))
    tips = _apply(transform, np.array([n.tip_mm for n in found.needles]))
    cost, angle = _needle_costs(plan, entries, tips, opts.max_angle_deg)
    pairs = sorted(assign(cost, opts.needle_gate_mm))
    matches = []
    for p, f in pairs:
        planned, detected = plan.needles[p], found.needles[f]
        entry_dev = entries[f] - planned.entry_mm if detected.entry_in_scan else np.full(3, np.nan)
        tip_dev = tips[f] - planned.tip_mm
        matches.append(NeedleMatch(
            p, f, entry_dev, tip_dev, float(np.linalg.norm(entry_dev)), float(np.linalg.norm(tip_dev)),
            float(tip_dev @ planned.direction),
            float(_line_distance(tips[f][None, :], planned.entry_mm, planned.direction)[0]),
            float(angle[p, f]), float(cost[p, f]), detected.tip_outside_scan,
        ))  # fmt: skip
    return (
        tuple(matches),
        tuple(sorted(set(range(len(plan.needles))) - {p for p, _ in pairs})),
        tuple(sorted(set(range(len(entries))) - {f for _, f in pairs})),
    )


def match_to_plan(
    plan: Plan,
    *,
    scan_to_plan: ArrayLike,
    seeds: SeedDetection | None = None,
    needles: NeedleDetection | None = None,
    options: MatchOptions | None = None,
) -> PlanMatch:
    """Match found seeds and needles to the plan's.

    Parameters
    ----------
    plan : Plan
        Seeds and needles in the planning frame, LPS mm.
    scan_to_plan : array_like of shape (4, 4)
        Rigid map of a scan point (LPS mm) into the planning frame (LPS mm):
        ``RegistrationResult.moving_to_fixed``; the identity when the scan is the plan's frame.
    seeds : SeedDetection, optional
        Found seeds, scan frame. None: no seed is matched (all planned seeds missing).
    needles : NeedleDetection, optional
        Found needles, scan frame. None: no needle is matched.
    options : MatchOptions, optional

    Returns
    -------
    PlanMatch
        Positions and deviations in the planning frame.

    Raises
    ------
    ValueError
        If ``scan_to_plan`` is not a finite rigid 4x4 matrix.
    """
    opts = options or MatchOptions()
    started = time.perf_counter()
    transform = _validated_rigid(scan_to_plan)
    if seeds is not None and seeds.seeds:
        seed_part = _match_seeds(plan, seeds, transform, opts.seed_gate_mm)
    else:
        seed_part = ((), tuple(range(len(plan.seeds))), ())
    if needles is not None and needles.needles:
        needle_part = _match_needles(plan, needles, transform, opts)
    else:
        needle_part = ((), tuple(range(len(plan.needles))), ())
    seconds = time.perf_counter() - started
    logger.info(
        "matched %d of %d planned seeds (%d extra) and %d of %d needles in %.3f s",
        len(seed_part[0]), len(plan.seeds), len(seed_part[2]),
        len(needle_part[0]), len(plan.needles), seconds,
    )  # fmt: skip
    return PlanMatch(
        *seed_part, *needle_part, transform, Provenance(MATCH_STAGE, opts.to_dict(), __version__, seconds)
    )
