"""Exchange stage: one seed fewer at a time, the others relocated to bring the sampled D90 back to the goal.

Runs after :func:`guidance.planning.improve.improve_selection` (whose squeeze
repairs a removal with at most a few relocations scored by a coverage
surrogate). Here a removal is repaired by a hill climb on the sampled D90
itself:

1. Take away one chosen seed (least coverage loss first, up to
   ``_REMOVAL_TRIES`` of them per round, each leaving the gaps on its track
   within ``max_seed_gap_mm``).
2. Sweep over the remaining seeds in order; for each, score every candidate
   position within ``_RADIUS_MM`` of it that keeps ``min_seed_distance_mm``
   from every other seed (new and existing) by the sampled D90 after moving
   the seed there (one numba kernel per seed:
   :func:`guidance.planning._kernels.relocation_d90`, a weighted dose
   histogram of ``_BINS`` bins), and move it to the best one that raises the
   D90 and keeps the track, gap and organ rules (the checks of
   :mod:`guidance.planning.improve`). Stop as soon as the exact sampled D90
   reaches the goal (the removal is kept and the next round starts), or when
   a sweep moves nothing or ``_SWEEPS`` sweeps have run (the removal fails).
3. The stage ends when no tried removal can be repaired, or after
   ``_MAX_ROUNDS`` removals.

Deterministic: fixed sweep order, stable sorts, ties to the lowest candidate
index; bounded by counts, never by the clock. Every accepted state keeps all
the rules of the greedy selection, and never has more seeds than its start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from guidance.planning.greedy import OrganTerm, TargetTerm, gaps_kept_without, sampled_d90
from guidance.planning.improve import Geometry, allowed_move, removal_order, selection_dose
from guidance.planning.result import PlacementOptions

__all__ = ["exchange_seeds"]

logger = logging.getLogger(__name__)

_RADIUS_MM = 12.0
_REMOVAL_TRIES = 3
_SWEEPS = 12
_MAX_ROUNDS = 60
_MOVE_CHECKS = 20  # best-scored positions checked against the rules per seed
_LOW, _HIGH = 0.75, 1.25  # histogram range, x goal


class _Climb:
    """The target term, candidate geometry and goal of one exchange stage."""

    def __init__(
        self,
        target: TargetTerm,
        organs: Sequence[OrganTerm],
        geometry: Geometry,
        options: PlacementOptions,
        goal_gy: float,
    ) -> None:
        from scipy.spatial import cKDTree

        self.target, self.organs, self.geometry = target, organs, geometry
        self.options, self.goal_gy = options, goal_gy
        self.influence = np.ascontiguousarray(target.influence)
        self.weights = np.ascontiguousarray(target.weights_cc, dtype=np.float64)
        self.rows = self.influence.shape[0]
        self.need = 0.9 * float(self.weights.sum()) * (1 - 1e-12)
        self.tree = cKDTree(geometry.positions_mm)
        self.spacing = options.min_seed_distance_mm - 1e-9

    def reaches(self, chosen: Sequence[int]) -> bool:
        return sampled_d90(selection_dose(self.target, chosen), self.weights) >= self.goal_gy

    def _near(self, chosen: list[int], slot: int) -> NDArray[np.intp]:
        """Candidates within the radius of seed ``slot`` that keep the seed distances to the others."""
        positions = self.geometry.positions_mm
        k = chosen[slot]
        near = np.sort(np.asarray(self.tree.query_ball_point(positions[k], r=_RADIUS_MM), dtype=np.intp))
        near = near[(self.geometry.fixed_distance_mm[near] >= self.spacing) & ~np.isin(near, chosen)]
        others = np.asarray(chosen[:slot] + chosen[slot + 1 :], dtype=np.intp)
        if near.size and others.size:
            from scipy.spatial import cKDTree

            distance, _ = cKDTree(positions[others]).query(positions[near])
            near = near[distance >= self.spacing]
        return near

    def d90_after(self, base: NDArray[np.float64], added: NDArray[np.intp]) -> NDArray[np.float64]:
        """Sampled D90 (histogram estimate) of ``base`` plus each candidate column in ``added``."""
        from guidance.planning import _kernels

        lo, hi = _LOW * self.goal_gy, _HIGH * self.goal_gy
        rest_above = float(self.weights[self.rows :].sum())  # fixed dose beyond every threshold
        out = np.zeros(added.size)
        _kernels.relocation_d90(self.influence, base, self.weights, added, lo, hi, self.need, rest_above, out)
        return out

    def sweep(self, chosen: list[int]) -> tuple[list[int], bool]:
        """One pass of best relocations over the seeds; (seeds, whether any moved)."""
        moved = False
        for slot in range(len(chosen)):
            k = chosen[slot]
            near = self._near(chosen, slot)
            if near.size == 0:
                continue
            dose = selection_dose(self.target, chosen)
            base = self.target.plus(dose, k, -1.0)
            scores = self.d90_after(base, np.append(near, k))
            now = scores[-1]
            order = np.argsort(-scores[:-1], kind="stable")
            for m in order[:_MOVE_CHECKS]:
                if scores[m] <= now + 1e-9:
                    break
                c = int(near[m])
                if allowed_move(self.geometry, self.organs, self.options, chosen, k, c):
                    chosen = [*chosen[:slot], c, *chosen[slot + 1 :]]
                    moved = True
                    break
            if moved and self.reaches(chosen):
                return chosen, True
        return chosen, moved

    def repair(self, chosen: list[int]) -> list[int] | None:
        """Sweeps until the sampled D90 reaches the goal (the seeds), or None."""
        for sweep in range(_SWEEPS):
            if self.reaches(chosen):
                return chosen
            chosen, moved = self.sweep(chosen)
            d90 = sampled_d90(selection_dose(self.target, chosen), self.weights)
            logger.debug(
                "exchange: %d seeds, sweep %d, sampled D90 %.1f Gy (goal %.1f)",
                len(chosen),
                sweep,
                d90,
                self.goal_gy,
            )
            if not moved:
                break
        return chosen if self.reaches(chosen) else None


def exchange_seeds(
    chosen: Sequence[int],
    target: TargetTerm,
    organs: Sequence[OrganTerm],
    geometry: Geometry,
    options: PlacementOptions,
    *,
    goal_gy: float,
) -> list[int]:
    """Fewer seeds with the sampled D90 kept >= ``goal_gy`` (see the module docstring).

    ``chosen`` must keep every rule; when it does not reach the goal it is returned unchanged.
    The result never has more seeds than ``chosen``.
    """
    climb = _Climb(target, organs, geometry, options, goal_gy)
    result = list(chosen)
    if not result or not climb.reaches(result):
        return result
    gap = options.max_seed_gap_mm
    for _ in range(_MAX_ROUNDS):
        removable = [r for r in removal_order(target, result, goal_gy)
                     if gaps_kept_without(geometry.positions_mm, geometry.tracks, result, r, gap)]
        for r in removable[:_REMOVAL_TRIES]:
            repaired = climb.repair([j for j in result if j != r])
            if repaired is not None:
                result = repaired
                break
        else:
            return result
    return result
