"""Greedy seed selection on a dose-influence matrix, then a removal pass.

The method (deterministic: ties go to the lowest candidate index):

1. Each step scores every eligible candidate seed j by its coverage gain
   ``sum_i w_i (min(D_i + A_ij, P) - min(D_i, P)) / P`` (cm^3 of target
   brought to the prescription P, with partial credit for under-dosed points:
   a concave, submodular surrogate of V100 that still ranks seeds while no
   single seed lifts a point above P), minus penalties on the target volume
   newly above 150% and 200% of P. D is the dose of the existing and chosen
   seeds at the target sample points, A the influence matrix, w the sample
   volumes (cm^3).
2. Eligible: at least ``min_seed_distance_mm`` from every seed (existing and
   new), on a track already used or on one whose path keeps
   ``min_track_distance_mm`` from every used track, and not blocked by an
   organ limit, and, on a used track, within ``max_seed_gap_mm`` of one of
   its new seeds (a needle's loading stays contiguous: every gap between
   neighbouring seeds on a track is at most that). The best-scored
   candidate is checked against the organ limits (sampled D_v / Dmax /
   Dmean below ``organ_limit_factor`` x allowance); a candidate that breaks
   one is blocked for good (organ doses only grow).
3. Stop when the sampled D90 reaches the goal, when nothing eligible adds
   coverage (organ limit or candidates exhausted), or at ``max_seeds``.
4. Removal pass: chosen seeds, least useful first, are dropped while the
   sampled D90 stays at the goal (fewer seeds, lower V150/V200) and no gap on
   their track grows beyond ``max_seed_gap_mm``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.planning.result import Feasibility, PlacementOptions

__all__ = [
    "OrganTerm", "Selection", "TargetTerm", "gaps_kept_without", "gaps_ok", "sampled_d90", "select_seeds",
]


@dataclass(frozen=True, eq=False)
class TargetTerm:
    """Target sample points: volumes (cm^3), fixed dose (Gy), influence (Gy per candidate).

    The influence rows are those of the first ``influence.shape[0]`` points;
    the points after them get no dose from the candidates (their fixed dose
    already reaches every threshold that counts: see the optimiser).
    """

    weights_cc: NDArray[np.float64]
    fixed_gy: NDArray[np.float64]
    influence: NDArray[np.float32]

    def plus(self, dose_gy: NDArray[np.float64], column: int, sign: float = 1.0) -> NDArray[np.float64]:
        """``dose_gy`` with candidate ``column``'s dose added (sign 1) or taken away (sign -1)."""
        result = dose_gy.copy()
        result[: self.influence.shape[0]] += sign * self.influence[:, column]
        return result


@dataclass(frozen=True, eq=False)
class OrganTerm:
    """Organ sample points and its limits {metric: allowed Gy} (already minus prior dose)."""

    name: str
    weights_cc: NDArray[np.float64]
    fixed_gy: NDArray[np.float64]
    influence: NDArray[np.float32]
    allowed_gy: dict[str, float]


@dataclass(frozen=True)
class Selection:
    """Chosen candidate indices, why the selection stopped, and the sampled D90."""

    chosen: tuple[int, ...]
    stop: Feasibility
    blocking: str
    sampled_d90_gy: float


def sampled_d90(dose_gy: NDArray[np.float64], weights_cc: NDArray[np.float64]) -> float:
    """Dose that at least 90% of the sampled volume receives, Gy."""
    return _dose_at_volume(dose_gy, weights_cc, 0.9 * float(weights_cc.sum()))


def _dose_at_volume(dose_gy: NDArray[np.float64], weights_cc: NDArray[np.float64], volume_cc: float) -> float:
    order = np.argsort(-dose_gy, kind="stable")
    cumulative = np.cumsum(weights_cc[order])
    k = min(int(np.searchsorted(cumulative, volume_cc * (1 - 1e-12))), order.size - 1)
    return float(dose_gy[order[k]])


def organ_metric(dose_gy: NDArray[np.float64], weights_cc: NDArray[np.float64], metric: str) -> float | None:
    """Sampled organ metric (d0_1cc_gy, d1cc_gy, d2cc_gy, dmax_gy, dmean_gy); None if undefined."""
    if metric == "dmax_gy":
        return float(dose_gy.max())
    if metric == "dmean_gy":
        return float(np.sum(dose_gy * weights_cc) / weights_cc.sum())
    volume = {"d0_1cc_gy": 0.1, "d1cc_gy": 1.0, "d2cc_gy": 2.0}[metric]
    if volume > weights_cc.sum():
        return None
    return _dose_at_volume(dose_gy, weights_cc, volume)


def _organ_violation(organs: Sequence[OrganTerm], doses: list[NDArray[np.float64]], column: int) -> str:
    """'<organ> <metric>' of the first limit the candidate would break, or ''."""
    for organ, dose in zip(organs, doses, strict=True):
        trial = dose + organ.influence[:, column]
        for metric, allowed in organ.allowed_gy.items():
            value = organ_metric(trial, organ.weights_cc, metric)
            if value is not None and value > allowed:
                return f"{organ.name} {metric}"
    return ""


def _scores(
    target: TargetTerm, dose: NDArray[np.float64], columns: NDArray[np.intp], options: PlacementOptions
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(score, coverage gain in cm^3) of each candidate column (numba kernel over the rows that count)."""
    from guidance.planning import _kernels

    p = options.prescription_gy
    w150, w200 = options.v150_weight, options.v200_weight
    threshold = 2.0 * p if w200 > 0 else (1.5 * p if w150 > 0 else p)
    rows = np.flatnonzero(dose[: target.influence.shape[0]] < threshold)
    gain, score = np.zeros(columns.size), np.zeros(columns.size)
    influence = np.ascontiguousarray(target.influence)
    weights = np.ascontiguousarray(target.weights_cc, dtype=np.float64)
    _kernels.column_scores(influence, dose, weights, rows, columns, p, w150, w200, gain, score)
    return score, gain


@dataclass
class _State:
    dose: NDArray[np.float64]
    organ_doses: list[NDArray[np.float64]]
    chosen: list[int]
    min_distance_mm: NDArray[np.float64]
    blocked: NDArray[np.bool_]
    track_allowed: NDArray[np.bool_]
    used_tracks: set[int]
    chain_ok: NDArray[np.bool_]
    last_blocking: str = ""


def _add(
    state: _State,
    j: int,
    target: TargetTerm,
    organs: Sequence[OrganTerm],
    positions: NDArray[np.float64],
    tracks: NDArray[np.intp],
    conflicts: Callable[[int], set[int]],
    max_gap_mm: float,
) -> None:
    state.chosen.append(j)
    state.dose = target.plus(state.dose, j)
    state.organ_doses = [d + o.influence[:, j] for d, o in zip(state.organ_doses, organs, strict=True)]
    distance = np.linalg.norm(positions - positions[j], axis=1)
    state.min_distance_mm = np.minimum(state.min_distance_mm, distance)
    track = int(tracks[j])
    same = tracks == track
    if track not in state.used_tracks:
        state.used_tracks.add(track)
        state.chain_ok[same] = False
        for other in conflicts(track) - state.used_tracks:
            state.track_allowed[other] = False
    state.chain_ok[same & (distance <= max_gap_mm + 1e-9)] = True


def gaps_ok(positions_mm: NDArray[np.float64], max_gap_mm: float) -> bool:
    """Whether collinear seed positions (one track) leave no gap above ``max_gap_mm`` between neighbours."""
    if positions_mm.shape[0] < 2:
        return True
    along = (positions_mm - positions_mm[0]) @ (positions_mm[-1] - positions_mm[0])
    ordered = positions_mm[np.argsort(along, kind="stable")]
    return bool(np.all(np.linalg.norm(np.diff(ordered, axis=0), axis=1) <= max_gap_mm + 1e-9))


def _step(
    state: _State,
    target: TargetTerm,
    organs: Sequence[OrganTerm],
    tracks: NDArray[np.intp],
    options: PlacementOptions,
) -> int | Feasibility:
    """Index of the next seed, or why there is none."""
    eligible = (state.min_distance_mm >= options.min_seed_distance_mm - 1e-9) & state.track_allowed[tracks]
    eligible &= state.chain_ok
    columns = np.flatnonzero(eligible & ~state.blocked)
    if columns.size:
        score, gain = _scores(target, state.dose, columns, options)
        useful = gain > 1e-9
        for k in np.argsort(-np.where(useful, score, -np.inf), kind="stable")[: int(useful.sum())]:
            j = int(columns[k])
            violation = _organ_violation(organs, state.organ_doses, j)
            if not violation:
                return j
            state.blocked[j] = True
            state.last_blocking = violation
    if state.last_blocking and np.any(eligible & state.blocked):
        return Feasibility.ORGAN_LIMIT
    return Feasibility.CANDIDATES_EXHAUSTED


def gaps_kept_without(
    positions_mm: NDArray[np.float64], tracks: NDArray[np.intp], chosen: Sequence[int], removed: int,
    max_gap_mm: float,
) -> bool:
    """Whether the seeds left on ``removed``'s track, once it is taken away, keep every gap within
    ``max_gap_mm``."""
    left = [k for k in chosen if k != removed and tracks[k] == tracks[removed]]
    return gaps_ok(positions_mm[left], max_gap_mm)


def _remove_pass(
    state: _State,
    target: TargetTerm,
    goal_gy: float,
    p: float,
    geometry: tuple[NDArray[np.float64], NDArray[np.intp], float],
) -> None:
    """Drop chosen seeds, least useful first, while the sampled D90 stays >= goal and gaps allow it."""
    changed = True
    while changed and state.chosen:
        changed = False
        capped = np.minimum(state.dose, p)
        loss = [
            float(target.weights_cc @ (capped - np.minimum(target.plus(state.dose, j, -1.0), p)))
            for j in state.chosen
        ]
        for k in np.argsort(loss, kind="stable"):
            j = state.chosen[int(k)]
            trial = target.plus(state.dose, j, -1.0)
            if sampled_d90(trial, target.weights_cc) >= goal_gy and gaps_kept_without(
                geometry[0], geometry[1], state.chosen, j, geometry[2]
            ):
                state.chosen.remove(j)
                state.dose = trial
                changed = True
                break


def select_seeds(
    target: TargetTerm,
    organs: Sequence[OrganTerm],
    positions_mm: NDArray[np.float64],
    tracks: NDArray[np.intp],
    conflicts: Callable[[int], set[int]],
    fixed_positions_mm: NDArray[np.float64],
    options: PlacementOptions,
    *,
    goal_gy: float,
    start: Sequence[int] = (),
    barred: Sequence[int] | NDArray[np.intp] = (),
) -> Selection:
    """Greedy selection of candidate columns (see the module docstring), resuming from ``start``.

    Candidates in ``barred`` are never chosen (a restart's perturbation of the start).
    """
    n = positions_mm.shape[0]
    min_distance = np.full(n, np.inf)
    for point in fixed_positions_mm:
        min_distance = np.minimum(min_distance, np.linalg.norm(positions_mm - point, axis=1))
    n_tracks = int(tracks.max()) + 1 if n else 0
    state = _State(
        target.fixed_gy.copy(),
        [o.fixed_gy.copy() for o in organs],
        [],
        min_distance,
        np.zeros(n, dtype=bool),
        np.ones(n_tracks, dtype=bool),
        set(),
        np.ones(n, dtype=bool),
    )
    state.blocked[np.asarray(barred, dtype=np.intp)] = True
    gap = options.max_seed_gap_mm
    for j in start:
        _add(state, j, target, organs, positions_mm, tracks, conflicts, gap)
    stop = Feasibility.REACHED
    while sampled_d90(state.dose, target.weights_cc) < goal_gy:
        if len(state.chosen) >= options.max_seeds:
            stop = Feasibility.SEED_LIMIT
            break
        outcome = _step(state, target, organs, tracks, options)
        if isinstance(outcome, Feasibility):
            stop = outcome
            break
        _add(state, outcome, target, organs, positions_mm, tracks, conflicts, gap)
    if stop is Feasibility.REACHED:
        _remove_pass(state, target, goal_gy, options.prescription_gy, (positions_mm, tracks, gap))
    d90 = sampled_d90(state.dose, target.weights_cc)
    return Selection(tuple(state.chosen), stop, state.last_blocking, d90)
