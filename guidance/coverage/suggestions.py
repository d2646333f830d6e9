"""Extra-seed suggestions: the fewest added seeds that bring the target D90 back to the prescription.

Method:

1. The cold spots of the current dose (:func:`find_cold_spots`). A target
   whose D90 already reaches the prescription gets no suggestion and a
   statement saying so.
2. Candidate tracks, through the focus region only: the target voxels where
   one seed would add at least ``focus_gain_fraction`` of the best single
   seed's coverage gain on the cold points (target evaluation voxels below the
   prescription). The gain of a candidate only shrinks as seeds are added,
   so the others would hardly ever be chosen and only cost time (building
   their dose-influence columns). Tracks: each existing needle re-inserted
   along its own line (entry and direction;
   :func:`guidance.planning.template_tracks` finds where that line enters
   the body and checks its clearance) first, then new feasible tracks
   (:func:`guidance.planning.candidate_tracks`) in the given directions or,
   by default, in a cone around the mean direction of the existing needles,
   kept when their path stays ``min_track_distance_mm`` from every existing
   needle (entry to tip) that it does not re-use. Listed first, re-inserted
   tracks win ties in the optimiser (which breaks ties to the lowest
   candidate). Candidate seeds lie in the focus region; the sample points of
   the optimiser cover the whole target.
3. :func:`guidance.planning.optimise_seed_placement` with the current seeds
   as ``existing`` (their dose is fixed, new seeds keep their distance from
   them); its verified :class:`~guidance.dose.DoseReport` gives the predicted
   metrics, its feasibility statement is passed through unchanged ("cannot
   reach prescription without exceeding <organ> <metric> limit" ...).
4. Each suggested seed: its track (entry, direction, depth of the seed from the
   entry along the track), the cold spot it addresses (the one whose voxels it
   lies closest to), the mean dose it adds over that spot's voxels, and the
   target D90 gain if it were the only seed added (the target DVH of the
   cold-spot evaluation samples with its dose added).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from guidance import __version__
from guidance.coverage.coldspots import ColdSpot, ColdSpotReport, find_cold_spots
from guidance.coverage.regions import Samples, dvh_curve, evaluation_samples
from guidance.dose import DoseLimits, dose_at_points, seed_contributions
from guidance.dose.metrics import DoseReport, LimitCheck, OrganMetrics
from guidance.plan import Needle
from guidance.planning import (
    Feasibility,
    PlacedSeed,
    PlacementOptions,
    PlacementResult,
    SeedSet,
    Track,
    candidate_tracks,
    cone_directions,
    optimise_seed_placement,
    template_tracks,
)
from guidance.provenance import Provenance
from guidance.volume import Volume

__all__ = ["SeedSuggestion", "SuggestionOptions", "SuggestionReport", "suggest_seeds"]

logger = logging.getLogger(__name__)

STAGE = "seed_suggestions"
_PARALLEL_COS = math.cos(math.radians(2.0))


@dataclass(frozen=True)
class SuggestionOptions:
    """Parameters of :func:`suggest_seeds`.

    Parameters
    ----------
    strength_u : float or None
        Air-kerma strength of each new seed, U; None: the median of the current seeds.
    directions : tuple of 3-tuples or None
        Directions of new tracks; None: a cone (``cone_half_angle_deg``,
        ``cone_step_deg``) around the mean direction of the existing needles.
    reuse_needles : bool
        Offer every existing needle's line (re-insertion) as a track.
    new_tracks : bool
        Offer new tracks as well.
    track_spacing_mm, seed_step_mm, margin_mm, max_length_mm : float
        As in :func:`guidance.planning.candidate_tracks`.
    min_seed_distance_mm, min_track_distance_mm, max_seed_gap_mm : float
        As in :class:`guidance.planning.PlacementOptions`; new tracks also keep
        ``min_track_distance_mm`` from the existing needles they do not re-use.
    sample_spacing_mm, evaluation_spacing_mm : float
        As in :class:`guidance.planning.PlacementOptions`.
    focus_gain_fraction : float
        Candidate tracks and seeds lie where a seed would add at least this
        fraction of the best seed's coverage gain (0: anywhere in the target).
    v150_weight, v200_weight : float
        Hot-volume penalties of the optimiser (:class:`guidance.planning.PlacementOptions`);
        0 by default, so that the fewest seeds win over a cooler arrangement of more seeds.
    max_seeds : int
        At most this many suggested seeds.
    min_cold_spot_cc : float
        Smallest cold spot listed (:func:`find_cold_spots`).
    reuse_tolerance_mm : float
        A chosen new track within 2 degrees of an existing needle and within this
        distance of its line is reported as a re-insertion of that needle.
    """

    strength_u: float | None = None
    directions: tuple[tuple[float, float, float], ...] | None = None
    cone_half_angle_deg: float = 20.0
    cone_step_deg: float = 10.0
    reuse_needles: bool = True
    new_tracks: bool = True
    track_spacing_mm: float = 5.0
    seed_step_mm: float = 5.0
    margin_mm: float = 3.0
    max_length_mm: float = 200.0
    min_seed_distance_mm: float = 5.0
    min_track_distance_mm: float = 5.0
    max_seed_gap_mm: float = 10.0
    sample_spacing_mm: float = 2.0
    evaluation_spacing_mm: float = 1.0
    focus_gain_fraction: float = 0.1
    v150_weight: float = 0.0
    v200_weight: float = 0.0
    max_seeds: int = 20
    min_cold_spot_cc: float = 0.05
    reuse_tolerance_mm: float = 1.0

    def __post_init__(self) -> None:
        if self.strength_u is not None and not (math.isfinite(self.strength_u) and self.strength_u > 0):
            raise ValueError(f"SuggestionOptions.strength_u must be > 0 U or None; got {self.strength_u!r}")
        if self.max_seeds < 0:
            raise ValueError(f"SuggestionOptions.max_seeds must be >= 0; got {self.max_seeds}")
        if not 0.0 <= self.focus_gain_fraction < 1.0:
            raise ValueError(
                f"SuggestionOptions.focus_gain_fraction must be in [0, 1); got {self.focus_gain_fraction!r}"
            )
        if not (self.reuse_needles or self.new_tracks):
            raise ValueError("SuggestionOptions: allow re-inserted needles, new tracks, or both")


@dataclass(frozen=True, eq=False)
class SeedSuggestion:
    """One extra seed: where it goes, along which track, what it should achieve.

    Parameters
    ----------
    position_mm : ndarray of shape (3,)
        Seed centre, LPS mm.
    direction : ndarray of shape (3,)
        Track direction (entry -> tip), unit; the seed's axis.
    strength_u : float
    entry_mm : ndarray of shape (3,)
        Skin entry of its track, LPS mm.
    depth_mm : float
        Distance from the entry to the seed along the track, mm.
    track_label : str
        "needle k" for a re-inserted existing needle, else the planner's label.
    needle_index : int or None
        Index into ``needles_existing`` when the track re-uses that needle's line.
    cold_spot_rank : int or None
        Rank of the cold spot it addresses (closest to it).
    cold_spot_gain_gy : float
        Mean dose it adds over that cold spot's voxels, Gy (0 without one).
    d90_gain_alone_gy : float
        Target D90 increase if it were the only seed added, Gy.
    """

    position_mm: NDArray[np.float64]
    direction: NDArray[np.float64]
    strength_u: float
    entry_mm: NDArray[np.float64]
    depth_mm: float
    track_label: str
    needle_index: int | None
    cold_spot_rank: int | None
    cold_spot_gain_gy: float
    d90_gain_alone_gy: float

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for name in ("position_mm", "direction", "entry_mm"):
            values[name] = getattr(self, name).tolist()
        return values


@dataclass(frozen=True, eq=False)
class SuggestionReport:
    """Suggested seeds, predicted metrics after adding them, and an honest statement.

    Parameters
    ----------
    suggestions : tuple of SeedSuggestion
        In the order the optimiser chose them (most useful first).
    feasibility : Feasibility
        REACHED also when the target was already covered (then no suggestion).
    statement : str
        For the operator, e.g. "cannot reach prescription without exceeding cord d0_1cc_gy limit".
    current_d90_gy : float
        Target D90 of the current dose (cold-spot evaluation grid).
    predicted_d90_gy, predicted_v100_percent, predicted_v150_percent : float or None
        Verified metrics of current + suggested seeds (None when nothing was planned).
    predicted_organs : tuple of OrganMetrics
    predicted_checks : tuple of LimitCheck
    cold_spots : ColdSpotReport
        Of the current dose.
    predicted : DoseReport or None
    placement : PlacementResult or None
        The optimiser's full result (None when the target was already covered).
    provenance : Provenance
    """

    suggestions: tuple[SeedSuggestion, ...]
    feasibility: Feasibility
    statement: str
    current_d90_gy: float
    predicted_d90_gy: float | None
    predicted_v100_percent: float | None
    predicted_v150_percent: float | None
    predicted_organs: tuple[OrganMetrics, ...]
    predicted_checks: tuple[LimitCheck, ...]
    cold_spots: ColdSpotReport = field(repr=False)
    predicted: DoseReport | None = field(repr=False)
    placement: PlacementResult | None = field(repr=False)
    provenance: Provenance = field(repr=False)

    @property
    def reached(self) -> bool:
        return self.feasibility is Feasibility.REACHED

    @property
    def positions_mm(self) -> NDArray[np.float64]:
        """Suggested seed centres, (n, 3), LPS mm."""
        return np.array([s.position_mm for s in self.suggestions], dtype=np.float64).reshape(-1, 3)


def _strength(options: SuggestionOptions, current: SeedSet) -> float:
    if options.strength_u is not None:
        return options.strength_u
    if len(current) == 0:
        raise ValueError("suggest_seeds: no current seeds to take the strength from; set options.strength_u")
    return float(np.median(current.strengths_u))


def _directions(options: SuggestionOptions, needles: Sequence[Needle]) -> NDArray[np.float64]:
    if options.directions is not None:
        return np.asarray(options.directions, dtype=np.float64).reshape(-1, 3)
    known = [n.direction for n in needles if np.all(np.isfinite(n.direction))]
    if not known:
        raise ValueError("suggest_seeds: no existing needle gives a direction; set options.directions")
    axis = np.mean(known, axis=0)
    if float(np.linalg.norm(axis)) < 1e-6:
        raise ValueError("suggest_seeds: the needles' directions cancel out; set options.directions")
    return cone_directions(axis, half_angle_deg=options.cone_half_angle_deg, step_deg=options.cone_step_deg)


def _tracks(
    target: Volume,
    body: Volume,
    forbidden: Mapping[str, Volume],
    needles: Sequence[Needle],
    options: SuggestionOptions,
) -> tuple[list[Track], dict[int, int]]:
    """Candidate tracks (re-inserted needles first) and {id(track): needle index}."""
    rules = {
        "seed_step_mm": options.seed_step_mm,
        "margin_mm": options.margin_mm,
        "max_length_mm": options.max_length_mm,
    }
    tracks: list[Track] = []
    owners: dict[int, int] = {}
    usable = [k for k, n in enumerate(needles) if np.all(np.isfinite(n.direction))]
    if options.reuse_needles and usable:
        entries = [needles[k].entry_mm for k in usable]
        directions = [needles[k].direction for k in usable]
        found = template_tracks(entries, directions, target, body, forbidden, **rules).tracks
        for track in found:
            hole = int(track.label.rsplit(" ", 1)[1])  # "template hole <k>"
            owners[id(track)] = usable[hole]
        tracks += found
    if options.new_tracks:
        directions_new = _directions(options, needles)
        new = candidate_tracks(
            target,
            body,
            forbidden,
            directions=directions_new,
            track_spacing_mm=options.track_spacing_mm,
            seed_step_mm=options.seed_step_mm,
            margin_mm=options.margin_mm,
            max_length_mm=options.max_length_mm,
        ).tracks
        tracks += _clear_of_needles(new, needles, options)
    return tracks, owners


def _clear_of_needles(
    tracks: Sequence[Track], needles: Sequence[Needle], options: SuggestionOptions
) -> list[Track]:
    """The tracks whose path keeps ``min_track_distance_mm`` from every needle it does not follow."""
    distance = options.min_track_distance_mm
    if distance <= 0 or not needles or not tracks:
        return list(tracks)
    step = 0.5  # paths sampled every 0.5 mm: a kept track comes at most ~0.4 mm closer than sampled
    paths = []
    for needle in needles:
        count = max(2, math.ceil(needle.length_mm / step) + 1)
        paths.append(
            needle.entry_mm + np.linspace(0.0, 1.0, count)[:, np.newaxis] * (needle.tip_mm - needle.entry_mm)
        )
    owner = np.repeat(np.arange(len(needles)), [p.shape[0] for p in paths])
    tree = cKDTree(np.concatenate(paths))
    kept = []
    for track in tracks:
        hits = tree.query_ball_point(track.path_mm(step), r=distance)
        near = {int(owner[i]) for row in hits for i in row}
        followed = _matching_needle(track, needles, options.reuse_tolerance_mm)
        if near <= {followed}:
            kept.append(track)
    return kept


def _stride(spacing_mm: NDArray[np.float64], step_mm: float) -> int:
    return max(1, round(step_mm / float(np.min(spacing_mm))))


def _cold_points(
    evaluation: Samples, prescription_gy: float, step_mm: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Cold evaluation voxels about ``step_mm`` apart: (points (n, 3), weights cc, dose Gy)."""
    k = _stride(evaluation.grid.spacing_mm, step_mm)
    cold = evaluation.inside & (evaluation.dose_gy < prescription_gy)
    index = np.argwhere(cold[::k, ::k, ::k]) * k
    selected = tuple(index.T)
    weights = evaluation.weights_cc[selected] * k**3
    return evaluation.grid.index_to_patient(index.astype(np.float64)), weights, evaluation.dose_gy[selected]


def _focus(
    target: Volume, evaluation: Samples, prescription_gy: float, seed: tuple[float, str], fraction: float
) -> Volume:
    """The target where a seed would add at least ``fraction`` x the best coverage gain; 0 elsewhere.

    The gain of a seed (strength and model ``seed``, isotropic 1D dose) at
    target voxels about 3 mm apart (coarser for large cold volumes): the cold
    volume it brings towards the prescription, sum w (min(D + d, P) - D) / P
    over the cold points. Gains only shrink as seeds are added (the score is
    submodular), so a candidate below the cut-off never becomes worth more.
    """
    if fraction <= 0:
        return target
    values = np.asarray(target.array, dtype=np.float32)
    for step_mm in (3.0, 4.0, 6.0):
        points, weights, dose = _cold_points(evaluation, prescription_gy, step_mm)
        k = _stride(target.spacing_mm, step_mm)
        index = np.argwhere(values[::k, ::k, ::k] >= 0.5) * k
        if points.shape[0] * index.shape[0] <= 20_000_000:
            break
    if points.shape[0] == 0 or index.shape[0] == 0:
        return target
    positions = target.index_to_patient(index.astype(np.float64))
    added = seed_contributions(points, positions, None, np.full(positions.shape[0], seed[0]), seed[1])
    gain = weights @ (np.minimum(dose[:, np.newaxis] + added, prescription_gy) - dose[:, np.newaxis])
    promising = positions[gain >= fraction * float(gain.max())]
    inside = np.argwhere(values > 0)
    distance, _ = cKDTree(promising).query(
        target.index_to_patient(inside.astype(np.float64)),
        distance_upper_bound=k * float(target.spacing_mm.max()),
    )
    near = tuple(inside[np.isfinite(distance)].T)
    focus = np.zeros_like(values)
    focus[near] = values[near]
    if not np.any(focus >= 0.5):
        return target
    return Volume(focus, target.affine, target.frame_of_reference_uid)


def _matching_needle(track: Track, needles: Sequence[Needle], tolerance_mm: float) -> int | None:
    """Index of the first needle whose line the track follows (parallel, within ``tolerance_mm``)."""
    for k, needle in enumerate(needles):
        direction = needle.direction
        if not np.all(np.isfinite(direction)) or float(direction @ track.direction) < _PARALLEL_COS:
            continue
        offset = needle.entry_mm - track.entry_mm
        distance = float(np.linalg.norm(offset - (offset @ track.direction) * track.direction))
        if distance <= tolerance_mm:
            return k
    return None


def _target_d90(
    dose_gy: NDArray[np.float64], weights_cc: NDArray[np.float64], report: ColdSpotReport
) -> float:
    return dvh_curve(dose_gy, weights_cc, "target", report.grid, 0.1).dose_at_percent(90.0)


def _suggestion(
    seed: PlacedSeed,
    track: Track,
    needle_index: int | None,
    report: ColdSpotReport,
    samples: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    source_model: str,
) -> SeedSuggestion:
    points, weights, dose_gy = samples
    one = dose_at_points(points, seed.position_mm, seed.direction, [seed.strength_u], source_model)
    gain_alone = _target_d90(dose_gy + one, weights, report) - report.d90_gy
    spot, spot_gain = _addressed(seed, report, source_model)
    return SeedSuggestion(
        position_mm=seed.position_mm,
        direction=seed.direction,
        strength_u=seed.strength_u,
        entry_mm=np.array(track.entry_mm),
        depth_mm=float((seed.position_mm - track.entry_mm) @ track.direction),
        track_label=track.label if needle_index is None else f"needle {needle_index}",
        needle_index=needle_index,
        cold_spot_rank=None if spot is None else spot.rank,
        cold_spot_gain_gy=spot_gain,
        d90_gain_alone_gy=float(gain_alone),
    )


def _suggestions(
    placement: PlacementResult,
    owners: Mapping[int, int],
    needles: Sequence[Needle],
    cold: ColdSpotReport,
    evaluation: Samples,
    options: SuggestionOptions,
) -> tuple[SeedSuggestion, ...]:
    """One SeedSuggestion per placed seed (the target samples are those of the cold-spot search)."""
    inside = evaluation.inside
    samples = (
        evaluation.grid.index_to_patient(np.argwhere(inside).astype(np.float64)),
        evaluation.weights_cc[inside],
        evaluation.dose_gy[inside],
    )
    needle_of = [
        owners.get(id(track), _matching_needle(track, needles, options.reuse_tolerance_mm))
        for track in placement.tracks
    ]
    model = placement.provenance.parameters["source_model"]
    return tuple(
        _suggestion(
            seed, placement.tracks[seed.track_index], needle_of[seed.track_index], cold, samples, model
        )
        for seed in placement.seeds
    )


def _addressed(seed: PlacedSeed, report: ColdSpotReport, source_model: str) -> tuple[ColdSpot | None, float]:
    """The cold spot whose voxels lie closest to the seed, and the mean dose the seed adds there."""
    best: tuple[ColdSpot | None, float, NDArray[np.float64]] = (None, math.inf, np.zeros((0, 3)))
    for spot in report.cold_spots:
        centres = report.grid.index_to_patient(spot.voxel_indices.astype(np.float64))
        distance = float(np.linalg.norm(centres - seed.position_mm, axis=1).min())
        if distance < best[1]:
            best = (spot, distance, centres)
    if best[0] is None:
        return None, 0.0
    added = dose_at_points(best[2], seed.position_mm, seed.direction, [seed.strength_u], source_model)
    return best[0], float(added.mean())


def _report(
    placement: PlacementResult | None,
    cold: ColdSpotReport,
    suggestions: tuple[SeedSuggestion, ...],
    statement: tuple[Feasibility, str],
    provenance: Provenance,
) -> SuggestionReport:
    predicted = None if placement is None else placement.report
    target = predicted.targets[0] if predicted is not None and predicted.targets else None
    return SuggestionReport(
        suggestions=suggestions,
        feasibility=statement[0],
        statement=statement[1],
        current_d90_gy=cold.d90_gy,
        predicted_d90_gy=cold.d90_gy if placement is None else (None if target is None else target.d90_gy),
        predicted_v100_percent=cold.v100_percent if target is None else target.v100_percent,
        predicted_v150_percent=None if target is None else target.v150_percent,
        predicted_organs=() if predicted is None else predicted.organs,
        predicted_checks=() if predicted is None else predicted.checks,
        cold_spots=cold,
        predicted=predicted,
        placement=placement,
        provenance=provenance,
    )


def suggest_seeds(
    current_dose: Volume,
    current_seeds: SeedSet,
    target: Volume,
    prescription_gy: float,
    *,
    body: Volume,
    needles_existing: Sequence[Needle] = (),
    forbidden: Mapping[str, Volume] | None = None,
    organs: Mapping[str, Volume] | None = None,
    limits: DoseLimits | None = None,
    options: SuggestionOptions | None = None,
) -> SuggestionReport:
    """The fewest extra seeds that bring target D90 to the prescription (method in the module docstring).

    Parameters
    ----------
    current_dose : Volume
        Dose of the seeds now in the patient, Gy, (S, R, C).
    current_seeds : SeedSet
        Those seeds (positions, axes, strengths, model); new seeds use their model.
    target : Volume
        Target mask or fraction (0..1) on the planning grid shared by ``body``,
        ``forbidden`` and ``organs``.
    prescription_gy : float
    body : Volume
        Body mask: tracks enter at its surface; spots' depth below the skin.
    needles_existing : sequence of Needle
        Needles in the patient: their lines may be re-used; spots name the nearest.
    forbidden : mapping of name to Volume, optional
        Structures no needle may cross (same grid as the target).
    organs : mapping of name to Volume, optional
        Organs at risk (limits in ``limits`` constrain the new seeds).
    limits : DoseLimits, optional
    options : SuggestionOptions, optional

    Returns
    -------
    SuggestionReport
        Deterministic: the same inputs give the same suggestions.

    Raises
    ------
    ValueError
        For bad options, an empty target, masks on different grids.
    """
    started = time.perf_counter()
    options = options or SuggestionOptions()
    organs, forbidden = dict(organs or {}), dict(forbidden or {})
    cold = find_cold_spots(
        current_dose,
        target,
        prescription_gy,
        body=body,
        needles=needles_existing,
        organs=organs,
        limits=limits,
        min_volume_cc=options.min_cold_spot_cc,
    )
    parameters: dict[str, Any] = {
        **asdict(options),
        "prescription_gy": float(prescription_gy),
        "n_current_seeds": len(current_seeds),
        "n_needles": len(needles_existing),
    }
    if cold.d90_gy >= prescription_gy:
        statement = (
            f"target already covered: D90 {cold.d90_gy:.1f} Gy >= prescription {prescription_gy:g} Gy; "
            "no extra seed needed"
        )
        provenance = Provenance(STAGE, parameters, __version__, time.perf_counter() - started)
        return _report(None, cold, (), (Feasibility.REACHED, statement), provenance)
    strength = _strength(options, current_seeds)
    evaluation = evaluation_samples(current_dose, target, sampling_mm=None, subsamples=3)
    focus = _focus(
        target,
        evaluation,
        prescription_gy,
        (strength, current_seeds.source_model),
        options.focus_gain_fraction,
    )
    tracks, owners = _tracks(focus, body, forbidden, needles_existing, options)
    placement_options = PlacementOptions(
        prescription_gy=prescription_gy,
        strength_u=strength,
        source_model=current_seeds.source_model,
        min_seed_distance_mm=options.min_seed_distance_mm,
        min_track_distance_mm=options.min_track_distance_mm,
        max_seed_gap_mm=options.max_seed_gap_mm,
        sample_spacing_mm=options.sample_spacing_mm,
        evaluation_spacing_mm=options.evaluation_spacing_mm,
        max_seeds=options.max_seeds,
        v150_weight=options.v150_weight,
        v200_weight=options.v200_weight,
    )
    placement = optimise_seed_placement(
        tracks,
        target,
        options=placement_options,
        organs=organs,
        limits=limits,
        existing=current_seeds if len(current_seeds) else None,
        body=body,
    )
    suggestions = _suggestions(placement, owners, needles_existing, cold, evaluation, options)
    parameters["strength_u_used"] = strength
    parameters["n_tracks"] = len(tracks)
    elapsed = time.perf_counter() - started
    logger.info("%d seeds suggested: %s (%.2f s)", len(suggestions), placement.statement, elapsed)
    provenance = Provenance(STAGE, parameters, __version__, elapsed)
    return _report(placement, cold, suggestions, (placement.feasibility, placement.statement), provenance)
