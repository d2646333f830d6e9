"""Local improvement of a seed selection: fewer seeds by removal and relocation, then lower V150.

Runs after the greedy selection has reached the D90 goal on the sample points
(:mod:`guidance.planning.greedy`). Deterministic (stable sorts, ties to the
lowest index); every accepted state keeps all the rules of the greedy
selection: seeds ``min_seed_distance_mm`` apart (and from the existing seeds),
used needle paths ``min_track_distance_mm`` apart, no gap above
``max_seed_gap_mm`` between neighbouring new seeds on a track, organ limits.

1. Squeeze: take away a chosen seed (least coverage loss first, up to
   ``_REMOVAL_TRIES`` of them per round); when the sampled D90 falls below the
   goal, repair it by relocation moves (one chosen seed to a candidate position
   within ``_MOVE_RADIUS_MM`` of it, on its track or another) that raise
   ``cover + _RAMP_WEIGHT x ramp - hot`` (cover: target volume at or above the
   goal; ramp: partial credit for points between 0.7 x goal and the goal, so a
   move towards the goal counts before it crosses it; hot: the V150 / V200
   penalties of the options, cm^3), at most ``_REPAIR_MOVES`` moves. A repair
   that reaches the goal is kept (one seed fewer) and the next round starts;
   the squeeze ends when no tried seed can be taken away.
2. Polish: relocation moves that lower the hot-volume penalty
   (``v150_weight`` x V150 + ``v200_weight`` x V200, cm^3) while the sampled
   D90 stays at the goal, best first, at most ``_POLISH_MOVES``.

A relocation moves one seed (a swap: remove one, add the best replacement
nearby); a whole sweep scores every (chosen seed, nearby candidate) pair in
one numba kernel (:func:`guidance.planning._kernels.move_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from guidance.planning.greedy import (
    OrganTerm,
    TargetTerm,
    gaps_kept_without,
    gaps_ok,
    organ_metric,
    sampled_d90,
)
from guidance.planning.result import PlacementOptions

__all__ = ["Geometry", "allowed_move", "improve_selection", "selection_dose"]

_MOVE_RADIUS_MM = 8.0
_REMOVAL_TRIES = 4
_REPAIR_MOVES = 8
_POLISH_MOVES = 40
_RAMP_WEIGHT = 0.5
_RAMP_LOW = 0.7
_MOVE_CHECKS = 200  # best-scored moves checked against the rules before giving up a sweep


@dataclass(eq=False)
class Geometry:
    """Candidate positions, their tracks, track conflicts and the distance to the fixed seeds."""

    positions_mm: NDArray[np.float64]
    tracks: NDArray[np.intp]
    conflicts: Callable[[int], set[int]]
    fixed_distance_mm: NDArray[np.float64]
    _near: dict[int, NDArray[np.intp]] = field(default_factory=dict)
    _tree: object | None = None

    def near(self, j: int) -> NDArray[np.intp]:
        """Candidates within ``_MOVE_RADIUS_MM`` of candidate ``j`` (itself excluded), ascending."""
        if j not in self._near:
            from scipy.spatial import cKDTree

            if self._tree is None:
                self._tree = cKDTree(self.positions_mm)
            tree: cKDTree = self._tree
            found = np.asarray(tree.query_ball_point(self.positions_mm[j], r=_MOVE_RADIUS_MM), dtype=np.intp)
            self._near[j] = np.sort(found[found != j])
        return self._near[j]


@dataclass(frozen=True)
class _Context:
    target: TargetTerm
    organs: Sequence[OrganTerm]
    geometry: Geometry
    options: PlacementOptions
    goal_gy: float

    @property
    def goal_cover_cc(self) -> float:
        """Volume that must reach the goal for a sampled D90 >= goal, cm^3."""
        return 0.9 * float(self.target.weights_cc.sum()) * (1 - 1e-12)


def selection_dose(term: TargetTerm | OrganTerm, chosen: Sequence[int]) -> NDArray[np.float64]:
    """Fixed dose plus the dose of the chosen candidate columns at the term's sample points, Gy."""
    dose = term.fixed_gy.copy()
    if chosen:
        columns = np.asarray(chosen, dtype=np.intp)
        dose[: term.influence.shape[0]] += term.influence[:, columns].sum(axis=1, dtype=np.float64)
    return dose


def _reaches(context: _Context, chosen: Sequence[int]) -> bool:
    return sampled_d90(selection_dose(context.target, chosen), context.target.weights_cc) >= context.goal_gy


def _pairs(context: _Context, chosen: Sequence[int]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(removed, added) of every relocation move whose new position keeps the seed distances."""
    geometry, spacing = context.geometry, context.options.min_seed_distance_mm - 1e-9
    positions = geometry.positions_mm
    chosen_array = np.asarray(chosen, dtype=np.intp)
    removed, added = [], []
    for slot, k in enumerate(chosen):
        near = geometry.near(k)
        near = near[(geometry.fixed_distance_mm[near] >= spacing) & ~np.isin(near, chosen_array)]
        if near.size == 0:
            continue
        others = np.delete(chosen_array, slot)
        if others.size:
            gap = np.linalg.norm(positions[near][:, np.newaxis] - positions[others][np.newaxis], axis=-1)
            near = near[gap.min(axis=1) >= spacing]
        removed.append(np.full(near.size, k, dtype=np.intp))
        added.append(near)
    if not removed:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    return np.concatenate(removed), np.concatenate(added)


def _metrics(
    context: _Context, dose: NDArray[np.float64], removed: NDArray[np.intp], added: NDArray[np.intp]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(cover cc, cover + ramp credit, hot penalty cc) after each move (numba kernel on the influence)."""
    from guidance.planning import _kernels

    target, p = context.target, context.options.prescription_gy
    thresholds = np.array([context.goal_gy, _RAMP_LOW * context.goal_gy, 1.5 * p, 2.0 * p])
    out = [np.zeros(removed.size) for _ in range(4)]
    rows = target.influence.shape[0]
    weights = np.ascontiguousarray(target.weights_cc, dtype=np.float64)
    influence = np.ascontiguousarray(target.influence)
    _kernels.move_scores(influence, dose, weights, removed, added, thresholds, *out)
    rest_dose, rest_weights = dose[rows:], weights[rows:]  # no candidate dose: constant terms
    cover = out[0] + float(rest_weights[rest_dose >= context.goal_gy].sum())
    ramp = out[1] + float(rest_weights[rest_dose >= context.goal_gy].sum())
    hot150 = out[2] + float(rest_weights[rest_dose >= 1.5 * p].sum())
    hot200 = out[3] + float(rest_weights[rest_dose >= 2.0 * p].sum())
    hot = context.options.v150_weight * hot150 + context.options.v200_weight * hot200
    return cover, cover + _RAMP_WEIGHT * ramp, hot


def _current(context: _Context, dose: NDArray[np.float64]) -> tuple[float, float, float]:
    """(cover, cover + ramp credit, hot penalty) of the current dose, as :func:`_metrics`."""
    p, goal, w = context.options.prescription_gy, context.goal_gy, context.target.weights_cc
    ramp = np.clip((dose - _RAMP_LOW * goal) / ((1 - _RAMP_LOW) * goal), 0.0, 1.0)
    cover = float(w[dose >= goal].sum())
    hot = context.options.v150_weight * float(w[dose >= 1.5 * p].sum())
    hot += context.options.v200_weight * float(w[dose >= 2.0 * p].sum())
    return cover, cover + _RAMP_WEIGHT * float(w @ ramp), hot


def _allowed(context: _Context, chosen: Sequence[int], k: int, c: int) -> bool:
    return allowed_move(context.geometry, context.organs, context.options, chosen, k, c)


def allowed_move(
    geometry: Geometry,
    organs: Sequence[OrganTerm],
    options: PlacementOptions,
    chosen: Sequence[int],
    k: int,
    c: int,
) -> bool:
    """Whether moving chosen seed ``k`` to candidate ``c`` keeps the track, gap and organ rules.

    The seed distances are not checked here (the callers pick ``c`` among the
    candidates that keep them).
    """
    tracks, positions = geometry.tracks, geometry.positions_mm
    others = [j for j in chosen if j != k]
    used = {int(tracks[j]) for j in others}
    track = int(tracks[c])
    if track not in used and geometry.conflicts(track) & used:
        return False
    gap = options.max_seed_gap_mm
    if not gaps_ok(positions[[j for j in others if tracks[j] == track] + [c]], gap):
        return False
    if tracks[k] != track and not gaps_ok(positions[[j for j in others if tracks[j] == tracks[k]]], gap):
        return False
    return _organs_ok(organs, [*others, c])


def _organs_ok(organs: Sequence[OrganTerm], chosen: Sequence[int]) -> bool:
    for organ in organs:
        dose = selection_dose(organ, chosen)
        for metric, allowed in organ.allowed_gy.items():
            value = organ_metric(dose, organ.weights_cc, metric)
            if value is not None and value > allowed:
                return False
    return True


def _best_move(context: _Context, chosen: list[int], polish: bool) -> list[int] | None:
    """The chosen seeds after the best allowed relocation that improves the objective, or None."""
    dose = selection_dose(context.target, chosen)
    removed, added = _pairs(context, chosen)
    if removed.size == 0:
        return None
    cover, credit, hot = _metrics(context, dose, removed, added)
    _, now_credit, now_hot = _current(context, dose)
    if polish:  # lower hot volume, D90 kept at the goal; ties to more coverage credit
        value = -hot + 1e-6 * credit
        usable = (cover >= context.goal_cover_cc) & (hot < now_hot - 1e-6)
    else:
        value = credit - hot
        usable = value > now_credit - now_hot + 1e-6
    order = np.argsort(-np.where(usable, value, -np.inf), kind="stable")
    for m in order[: min(int(usable.sum()), _MOVE_CHECKS)]:
        k, c = int(removed[m]), int(added[m])
        if _allowed(context, chosen, k, c):
            return [c if j == k else j for j in chosen]
    return None


def _repair(context: _Context, chosen: list[int]) -> list[int] | None:
    """Relocations until the sampled D90 reaches the goal (the new seeds), or None."""
    for _ in range(_REPAIR_MOVES + 1):
        if _reaches(context, chosen):
            return chosen
        moved = _best_move(context, chosen, polish=False)
        if moved is None:
            return None
        chosen = moved
    return None


def removal_order(target: TargetTerm, chosen: Sequence[int], goal_gy: float) -> list[int]:
    """Chosen seeds by the coverage credit lost when each is taken away, smallest first.

    The credit is the target's dose capped at ``goal_gy``, weighted by volume.
    """
    dose = selection_dose(target, chosen)
    capped = target.weights_cc @ np.minimum(dose, goal_gy)
    loss = [
        float(capped - target.weights_cc @ np.minimum(target.plus(dose, j, -1.0), goal_gy)) for j in chosen
    ]
    return [chosen[int(k)] for k in np.argsort(loss, kind="stable")]


def _squeeze(context: _Context, chosen: list[int]) -> list[int]:
    gap, geometry = context.options.max_seed_gap_mm, context.geometry
    while chosen:
        for r in removal_order(context.target, chosen, context.goal_gy)[:_REMOVAL_TRIES]:
            if not gaps_kept_without(geometry.positions_mm, geometry.tracks, chosen, r, gap):
                continue
            repaired = _repair(context, [j for j in chosen if j != r])
            if repaired is not None:
                chosen = repaired
                break
        else:
            return chosen
    return chosen


def improve_selection(
    chosen: Sequence[int],
    target: TargetTerm,
    organs: Sequence[OrganTerm],
    geometry: Geometry,
    options: PlacementOptions,
    *,
    goal_gy: float,
) -> list[int]:
    """Fewer seeds, then a lower hot-volume penalty, with the sampled D90 kept >= ``goal_gy``.

    ``chosen`` must already reach the goal and keep every rule (the greedy
    selection's result); the result does too. See the module docstring.
    """
    context = _Context(target, organs, geometry, options, goal_gy)
    result = list(chosen)
    if not result or not _reaches(context, result):
        return result
    result = _squeeze(context, result)
    if options.v150_weight > 0 or options.v200_weight > 0:
        for _ in range(_POLISH_MOVES):
            moved = _best_move(context, result, polish=True)
            if moved is None:
                break
            result = moved
    return result
