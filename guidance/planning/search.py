"""The selection pipeline (greedy, improvement, exchange) and its restarts on small problems.

:func:`search` runs the greedy selection (:mod:`guidance.planning.greedy`),
then the local improvement (:mod:`guidance.planning.improve`) and, without
existing seeds, the exchange stage (:mod:`guidance.planning.exchange`) and the
improvement's V150 / V200 polish again when it saved a seed.

Every stage after the greedy start moves one seed at a time, so the result
keeps the greedy start's arrangement: its first seeds, chosen for the largest
coverage gain, sit at the centre of the target, where the best loading of a
small target may leave a hole (six seeds around an empty centre cover a small
sphere better than seven with one in the middle). Restarts: on a problem of at
most ``_RESTART_CANDIDATES`` candidate seeds whose first run chose at most
``_RESTART_SEEDS`` seeds (the cost of a run grows with both), without existing
seeds, the pipeline runs again ``_RESTARTS`` times, each time with the track of one of
the first greedy seeds (in the order chosen) barred from the greedy start (the
later stages may use it again); a restart's loading replaces the best one only
with strictly fewer seeds. Bounded by counts, deterministic (fixed order, ties
kept by the first run).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from guidance.planning.exchange import exchange_seeds
from guidance.planning.greedy import OrganTerm, Selection, TargetTerm, sampled_d90, select_seeds
from guidance.planning.improve import Geometry, improve_selection, selection_dose
from guidance.planning.result import Feasibility, PlacementOptions

__all__ = ["search"]

logger = logging.getLogger(__name__)

_RESTARTS = 3
_RESTART_CANDIDATES = 400
_RESTART_SEEDS = 12  # seeds of the first run: a restart costs about as much as it


def _pipeline(
    terms: tuple[TargetTerm, list[OrganTerm], Geometry],
    fixed_positions: NDArray[np.float64],
    options: PlacementOptions,
    goal: float,
    start: Sequence[int],
    barred: NDArray[np.intp],
) -> tuple[Selection, list[int]]:
    """(greedy selection, final seeds) of one run of the pipeline (module docstring)."""
    target_term, organ_terms, geometry = terms
    selection = select_seeds(
        target_term,
        organ_terms,
        geometry.positions_mm,
        geometry.tracks,
        geometry.conflicts,
        fixed_positions,
        options,
        goal_gy=goal,
        start=start,
        barred=barred,
    )
    if selection.stop is not Feasibility.REACHED:
        return selection, list(selection.chosen)
    chosen = improve_selection(selection.chosen, target_term, organ_terms, geometry, options, goal_gy=goal)
    if fixed_positions.shape[0]:  # post-scan suggestions: a few seeds added, answered within seconds
        return selection, chosen
    fewer = exchange_seeds(chosen, target_term, organ_terms, geometry, options, goal_gy=goal)
    if len(fewer) < len(chosen):  # polish the new loading (lower V150 / V200 at the goal)
        chosen = improve_selection(fewer, target_term, organ_terms, geometry, options, goal_gy=goal)
    return selection, chosen


def search(
    terms: tuple[TargetTerm, list[OrganTerm], Geometry],
    fixed_positions: NDArray[np.float64],
    options: PlacementOptions,
    goal: float,
    start: Sequence[int],
) -> Selection:
    """The pipeline (resumed from ``start``), with restarts on small problems (module docstring)."""
    target_term, _, geometry = terms
    no_bar = np.zeros(0, dtype=np.intp)
    selection, chosen = _pipeline(terms, fixed_positions, options, goal, start, no_bar)
    small = geometry.positions_mm.shape[0] <= _RESTART_CANDIDATES and len(chosen) <= _RESTART_SEEDS
    if selection.stop is Feasibility.REACHED and small and fixed_positions.shape[0] == 0:
        tracks = list(dict.fromkeys(int(geometry.tracks[j]) for j in selection.chosen))
        for track in tracks[:_RESTARTS]:
            barred = np.flatnonzero(geometry.tracks == track).astype(np.intp)
            other, seeds = _pipeline(terms, fixed_positions, options, goal, (), barred)
            logger.debug("restart without track %d at the start: %d seeds (best %d)", track, len(seeds),
                         len(chosen))  # fmt: skip
            if other.stop is Feasibility.REACHED and len(seeds) < len(chosen):
                chosen = seeds
    d90 = sampled_d90(selection_dose(target_term, chosen), target_term.weights_cc)
    return Selection(tuple(chosen), selection.stop, selection.blocking, d90)
