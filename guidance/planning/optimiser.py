"""Seed placement: the fewest new seeds on candidate tracks that bring target D90 to the prescription.

Shared by the post-scan seed suggestions (existing seeds give a fixed dose, new
seeds add to it) and by the simulators' planner (no existing seeds).

Method (see :mod:`guidance.planning.greedy` for the selection itself):

1. Sample points: voxel centres of a ``sample_spacing_mm`` axial grid over the
   target (and each organ at risk), weighted by the target fraction there
   (linear resampling of the mask or fraction volume), in cm^3; the point of
   each of the target's partial (edge) voxels lies at the centroid of its
   inside part (:func:`guidance.planning.sampling.structure_samples`: the D90
   lies at the edge, and voxel centres put the edge volume too far out).
2. Dose-influence matrix of every candidate seed position on those points,
   :func:`guidance.dose.seed_contributions` (seed axis along its track,
   strength ``strength_u``), plus the fixed dose of the existing seeds
   (:func:`guidance.dose.dose_at_points`). Two exact reductions when seeds
   exist: candidates closer than ``min_seed_distance_mm`` to an existing seed
   are dropped (never eligible), and the rows of target points whose fixed
   dose already reaches the cap (1.15 x the D90 goal, or 150% / 200% of the
   prescription when V150 / V200 are penalised) are not computed (those
   points are put last, with no dose from the candidates): such a point
   never counts in a coverage gain or a hot-volume penalty, and stays above
   every goal up to the cap, so the sampled D90 against the goal is the same
   (the goal is never raised beyond the cap).
3. Greedy selection maximising coverage gain per seed under the spacing rules
   and organ limits, then a removal pass, then the local improvement of
   :mod:`guidance.planning.improve` (take a seed away and repair the D90 by
   relocating seeds; then relocations that lower V150 / V200 at the goal),
   then the exchange stage of :mod:`guidance.planning.exchange` (take a seed
   away and hill-climb the sampled D90 itself by relocating every other seed
   in turn, sweep after sweep), and when it saved a seed the improvement
   again (its V150 / V200 polish). The exchange runs only without existing
   seeds: a plan, not the post-scan suggestions (a few seeds added to an
   implant, answered within seconds). On a small plan (few candidates, no
   existing seeds) the whole search restarts with the track of each of the
   first greedy seeds barred from the greedy start, and keeps the loading
   with the fewest seeds (:mod:`guidance.planning.search`).
4. Verification, independent of the sample points: the dose of existing + new
   seeds by :func:`guidance.dose.dose_on_grid` on an ``evaluation_spacing_mm``
   grid, and :func:`guidance.dose.evaluate_plan_dose` on the masks' outlines
   (the target's traced finer in-plane: :func:`guidance.planning.sampling.fine_outline`).
   When the verified D90 falls short of ``d90_goal_factor`` x P (the same
   margin, over the outline's error) although the
   sampled one reached the goal, the goal is raised by the shortfall and the
   selection resumes (``verification_rounds`` times). The statement says
   "reached" whenever the verified D90 is >= P.

The feasibility statement is honest: reached, or "cannot reach prescription
without exceeding <organ> <metric> limit", or "no feasible track", or the
candidates/seed budget ran out, or a verified organ metric exceeds its limit.

The greedy method was chosen over an integer programme (scipy.optimize.milp)
because organ limits on D_v metrics are not linear in the seed variables and
the greedy selection runs in about a second on a 40 cc target; the result is
deterministic (stable sorts, ties to the lowest candidate index).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance import __version__
from guidance.dose import (
    DoseLimits,
    add_seeds,
    dose_at_points,
    dose_on_grid,
    evaluate_plan_dose,
    seed_contributions,
)
from guidance.dose.limits import LimitStatus
from guidance.dose.metrics import DoseReport
from guidance.planning.greedy import OrganTerm, Selection, TargetTerm
from guidance.planning.improve import Geometry
from guidance.planning.result import Feasibility, PlacedSeed, PlacementOptions, PlacementResult, SeedSet
from guidance.planning.sampling import fine_outline, fraction_of, in_plane_factor, structure_samples
from guidance.planning.search import search
from guidance.planning.tracks import Track, TrackCandidates
from guidance.provenance import Provenance
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume

__all__ = ["optimise_seed_placement"]

logger = logging.getLogger(__name__)

STAGE = "seed_placement"
_PATH_STEP_MM = 1.0
_EDGE_SUBSAMPLES = 2  # sub-points per axis finding a partial voxel's inside (guidance.planning.sampling)


def _fixed_dose(points_mm: NDArray[np.float64], existing: SeedSet | None) -> NDArray[np.float64]:
    if existing is None or len(existing) == 0 or points_mm.shape[0] == 0:
        return np.zeros(points_mm.shape[0])
    return dose_at_points(
        points_mm, existing.positions_mm, existing.directions, existing.strengths_u, existing.source_model
    )


def _candidates(tracks: Sequence[Track]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]:
    """(positions (n, 3), directions (n, 3), track index (n,)) of every candidate seed."""
    counts = [t.seed_positions_mm.shape[0] for t in tracks]
    positions = np.concatenate([t.seed_positions_mm for t in tracks]).reshape(-1, 3)
    directions = np.repeat(np.array([t.direction for t in tracks]).reshape(-1, 3), counts, axis=0)
    return positions, directions, np.repeat(np.arange(len(tracks)), counts).astype(np.intp)


def _conflicts(tracks: Sequence[Track], distance_mm: float) -> Any:
    """Function: track index -> indices of tracks whose path comes within ``distance_mm`` of it."""
    from scipy.spatial import cKDTree

    paths = [t.path_mm(_PATH_STEP_MM) for t in tracks]
    owner = np.repeat(np.arange(len(tracks)), [p.shape[0] for p in paths])
    tree = cKDTree(np.concatenate(paths))

    cache: dict[int, set[int]] = {}

    def near(track: int) -> set[int]:
        if distance_mm <= 0:
            return set()
        if track not in cache:
            hits = tree.query_ball_point(paths[track], r=distance_mm * (1 - 1e-9))  # >= distance is clear
            cache[track] = {int(owner[i]) for row in hits for i in row} - {track}
        return set(cache[track])

    return near


def _organ_terms(
    organs: Mapping[str, Volume],
    limits: DoseLimits,
    existing: SeedSet | None,
    candidates: tuple[Any, ...],
    options: PlacementOptions,
) -> list[OrganTerm]:
    terms = []
    positions, directions, _ = candidates
    for name in sorted(organs):
        allowed = {
            metric: (limit - limits.prior_for(name, metric)) * options.organ_limit_factor
            for metric, limit in sorted(limits.limits_for(name, StructureRole.ORGAN_AT_RISK).items())
        }
        points, weights = structure_samples(organs[name], options.sample_spacing_mm)
        if not allowed or points.shape[0] == 0:
            continue
        influence = seed_contributions(
            points,
            positions,
            directions,
            np.full(positions.shape[0], options.strength_u),
            options.source_model,
        )
        terms.append(OrganTerm(name, weights, _fixed_dose(points, existing), influence, allowed))
    return terms


def _structures(
    target: Volume, organs: Mapping[str, Volume], body: Volume | None, evaluation_spacing_mm: float
) -> list[Structure]:
    """Outlines of the masks (fraction >= 0.5) as structures, for evaluate_plan_dose.

    The target's is the 0.5 isoline of its interpolated fraction, traced finer
    in-plane than the evaluation grid (:func:`guidance.planning.sampling.fine_outline`):
    its D90 lies at its edge. The organs and the body keep their voxel outlines.
    """
    factor = in_plane_factor(target, evaluation_spacing_mm)
    entries = [("target", StructureRole.TARGET, target, factor)]
    entries += [(name, StructureRole.ORGAN_AT_RISK, organs[name], 1) for name in sorted(organs)]
    if body is not None:
        entries.append(("body", StructureRole.EXTERNAL, body, 1))
    structures = []
    for name, role, volume, f in entries:
        contours = fine_outline(volume, f)
        if contours:
            structures.append(Structure(name, role, contours, volume.frame_of_reference_uid))
    return structures


def _verify(
    target: Volume,
    organs: Mapping[str, Volume],
    body: Volume | None,
    limits: DoseLimits,
    existing: SeedSet | None,
    new: SeedSet,
    options: PlacementOptions,
) -> tuple[Volume | None, DoseReport | None]:
    """Dose of existing + new seeds on a fine grid and its metrics (None without any seed)."""
    if len(new) == 0 and (existing is None or len(existing) == 0):
        return None, None
    indices = np.argwhere(fraction_of(target) >= 0.5).astype(np.float64)
    centres = target.index_to_patient(indices)
    pad = options.evaluation_margin_mm + float(target.spacing_mm.max())
    grid = Grid.from_bounds(
        centres.min(axis=0) - pad,
        centres.max(axis=0) + pad,
        options.evaluation_spacing_mm,
        target.frame_of_reference_uid,
    )
    dose = dose_on_grid(grid, new.positions_mm, new.directions, new.strengths_u, new.source_model)
    if existing is not None and len(existing):
        dose = add_seeds(
            dose, existing.positions_mm, existing.directions, existing.strengths_u, existing.source_model
        )
    structures = _structures(target, organs, body, options.evaluation_spacing_mm)
    report = evaluate_plan_dose(dose, structures, options.prescription_gy, limits)
    return dose, report


def _statement(
    selection: Selection, report: DoseReport | None, options: PlacementOptions
) -> tuple[Feasibility, str]:
    p = options.prescription_gy
    d90 = report.targets[0].d90_gy if report is not None and report.targets else 0.0
    failed = [c for c in report.checks if c.status is LimitStatus.FAIL] if report is not None else []
    if failed:
        names = ", ".join(
            f"{c.structure_name} {c.metric} {c.value_gy:.1f} > {c.allowed_gy:.1f} Gy" for c in failed
        )
        return Feasibility.LIMIT_EXCEEDED, f"verified dose exceeds organ limits: {names}"
    if d90 >= p:
        # The verified dose decides: the selection may have stopped short of its
        # safety goal (d90_goal_factor) for another reason and still reach the prescription.
        note = "" if selection.stop is Feasibility.REACHED else f" (stopped: {selection.stop.value})"
        return Feasibility.REACHED, f"reached: D90 {d90:.1f} Gy >= prescription {p:g} Gy{note}"
    shortfall = f"D90 {d90:.1f} Gy < prescription {p:g} Gy"
    if selection.stop is Feasibility.ORGAN_LIMIT:
        organ, metric = selection.blocking.rsplit(" ", 1)
        return (
            selection.stop,
            f"cannot reach prescription without exceeding {organ} {metric} limit ({shortfall})",
        )
    if selection.stop is Feasibility.SEED_LIMIT:
        return selection.stop, f"cannot reach prescription within {options.max_seeds} seeds ({shortfall})"
    reason = "the candidate positions ran out under the spacing rules"
    return Feasibility.CANDIDATES_EXHAUSTED, f"cannot reach prescription: {reason} ({shortfall})"


def _new_seeds(chosen: Sequence[int], candidates: tuple[Any, ...], options: PlacementOptions) -> SeedSet:
    positions, directions, _ = candidates
    index = np.asarray(chosen, dtype=np.intp)
    return SeedSet(
        positions[index], directions[index], np.full(index.size, options.strength_u), options.source_model
    )


def _result(
    selection: Selection,
    candidates: tuple[Any, ...],
    tracks: Sequence[Track],
    verified: tuple[Any, Any],
    options: PlacementOptions,
    parameters: dict[str, Any],
    started: float,
) -> PlacementResult:
    dose, report = verified
    feasibility, statement = _statement(selection, report, options)
    positions, directions, owners = candidates
    used = sorted({int(owners[j]) for j in selection.chosen})
    renumber = {track: k for k, track in enumerate(used)}
    seeds = tuple(
        PlacedSeed(positions[j], directions[j], options.strength_u, renumber[int(owners[j])])
        for j in selection.chosen
    )
    elapsed = time.perf_counter() - started
    logger.info(
        "seed placement: %d seeds on %d tracks, %s, in %.2f s", len(seeds), len(used), statement, elapsed
    )
    return PlacementResult(
        seeds=seeds,
        tracks=tuple(tracks[k] for k in used),
        feasibility=feasibility,
        statement=statement,
        report=report,
        dose=dose,
        sampled_d90_gy=selection.sampled_d90_gy,
        n_candidates=int(positions.shape[0]),
        provenance=Provenance(STAGE, parameters, __version__, elapsed),
    )


def optimise_seed_placement(
    tracks: TrackCandidates | Sequence[Track],
    target: Volume,
    *,
    options: PlacementOptions,
    organs: Mapping[str, Volume] | None = None,
    limits: DoseLimits | None = None,
    existing: SeedSet | None = None,
    body: Volume | None = None,
) -> PlacementResult:
    """Choose seed positions on candidate tracks to reach target D90 >= prescription with few seeds.

    Parameters
    ----------
    tracks : TrackCandidates or sequence of Track
        From :func:`~guidance.planning.tracks.candidate_tracks` or
        :func:`~guidance.planning.tracks.template_tracks`.
    target : Volume
        Target mask (bool) or fraction (0..1), (S, R, C), any grid.
    options : PlacementOptions
        Prescription, seed strength and model, spacing rules, sampling (see its docstring).
    organs : mapping of str to Volume, optional
        Organ-at-risk masks or fractions by name; those with limits in ``limits``
        constrain the selection, all are reported.
    limits : DoseLimits, optional
        Organ limits by role (organ_at_risk) and name, with prior doses.
    existing : SeedSet, optional
        Seeds already implanted: a fixed dose, and the spacing rules keep new seeds away from them.
    body : Volume, optional
        Body outline (bounds V_ref of COIN in the verification).

    Returns
    -------
    PlacementResult
        Deterministic: the same inputs give the same seeds.

    Raises
    ------
    ValueError
        For an empty target or inconsistent inputs.
    """
    started = time.perf_counter()
    organs, limits = dict(organs or {}), limits or DoseLimits()
    track_list = tuple(tracks.tracks if isinstance(tracks, TrackCandidates) else tracks)
    parameters: dict[str, Any] = {
        **asdict(options),
        "n_tracks": len(track_list),
        "organs": sorted(organs),
        "n_existing_seeds": 0 if existing is None else len(existing),
    }
    points, weights = structure_samples(target, options.sample_spacing_mm, edge_subsamples=_EDGE_SUBSAMPLES)
    if points.shape[0] == 0:
        raise ValueError("target is empty: no voxel with a fraction > 0")
    empty = (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=np.intp))
    if not track_list:
        fixed = _fixed_dose(points, existing)
        selection = Selection((), Feasibility.NO_FEASIBLE_TRACK, "", _d90(fixed, weights))
        verified = _verify(target, organs, body, limits, existing, _new_seeds((), empty, options), options)
        result = _result(selection, empty, (), verified, options, parameters, started)
        statement = "no feasible track: no needle path reaches the target clear of the forbidden structures"
        return _with_statement(result, statement)
    track_list, candidates = _usable(track_list, existing, options)
    fixed = _fixed_dose(points, existing)
    cap = _row_cap(options)
    order = np.argsort(fixed >= cap, kind="stable")  # the points that need influence rows first
    points, weights, fixed = points[order], weights[order], fixed[order]
    rows = int(np.count_nonzero(fixed < cap))
    influence = seed_contributions(
        points[:rows],
        candidates[0],
        candidates[1],
        np.full(candidates[0].shape[0], options.strength_u),
        options.source_model,
    )
    target_term = TargetTerm(weights, fixed, influence)
    organ_terms = _organ_terms(organs, limits, existing, candidates, options)
    conflicts = _conflicts(track_list, options.min_track_distance_mm)
    fixed_positions = np.zeros((0, 3)) if existing is None else existing.positions_mm
    wanted = options.d90_goal_factor * options.prescription_gy  # the selection's goal, the verification's too
    goal = wanted
    geometry = Geometry(candidates[0], candidates[2], conflicts, _distance_to(candidates[0], fixed_positions))
    terms = (target_term, organ_terms, geometry)
    selection = search(terms, fixed_positions, options, goal, ())
    verified = _verify(
        target, organs, body, limits, existing, _new_seeds(selection.chosen, candidates, options), options
    )
    for _ in range(options.verification_rounds):
        report = verified[1]
        d90 = report.targets[0].d90_gy if report is not None else 0.0
        if selection.stop is not Feasibility.REACHED or d90 >= wanted:
            break
        goal = min(goal * 1.005 * wanted / max(d90, 1e-9), cap)
        logger.info("verified D90 %.1f Gy short of %.1f Gy: raising the goal to %.1f Gy", d90, wanted, goal)
        selection = search(terms, fixed_positions, options, goal, selection.chosen)
        verified = _verify(
            target, organs, body, limits, existing, _new_seeds(selection.chosen, candidates, options), options
        )
    parameters["final_goal_gy"] = goal
    return _result(selection, candidates, track_list, verified, options, parameters, started)


def _distance_to(positions_mm: NDArray[np.float64], fixed_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """Distance from each candidate to the nearest fixed (existing) seed, mm (inf without any)."""
    from scipy.spatial import cKDTree

    if fixed_mm.shape[0] == 0:
        return np.full(positions_mm.shape[0], np.inf)
    distance, _ = cKDTree(fixed_mm).query(positions_mm)
    return np.asarray(distance, dtype=np.float64)


def _row_cap(options: PlacementOptions) -> float:
    """Fixed dose from which a target point's influence row is not needed (module docstring), Gy."""
    p = options.prescription_gy
    cap = 1.15 * options.d90_goal_factor * p
    if options.v150_weight > 0:
        cap = max(cap, 1.5 * p)
    if options.v200_weight > 0:
        cap = max(cap, 2.0 * p)
    return cap


def _usable(
    tracks: tuple[Track, ...], existing: SeedSet | None, options: PlacementOptions
) -> tuple[tuple[Track, ...], tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]]:
    """Candidates ``min_seed_distance_mm`` or more from every existing seed, and the tracks carrying them."""
    from scipy.spatial import cKDTree

    positions, directions, owners = _candidates(tracks)
    if existing is None or len(existing) == 0 or options.min_seed_distance_mm <= 0:
        return tracks, (positions, directions, owners)
    distance, _ = cKDTree(existing.positions_mm).query(positions)
    keep = distance >= options.min_seed_distance_mm - 1e-9
    used, renumbered = np.unique(owners[keep], return_inverse=True)
    kept_tracks = tuple(tracks[int(k)] for k in used)
    return kept_tracks, (positions[keep], directions[keep], renumbered.astype(np.intp).reshape(-1))


def _d90(dose_gy: NDArray[np.float64], weights_cc: NDArray[np.float64]) -> float:
    from guidance.planning.greedy import sampled_d90

    return sampled_d90(dose_gy, weights_cc)


def _with_statement(result: PlacementResult, statement: str) -> PlacementResult:
    from dataclasses import replace

    return replace(result, feasibility=Feasibility.NO_FEASIBLE_TRACK, statement=statement)
