"""The stages of one pipeline run, each a small function of typed inputs.

Dependencies (a stage runs only when those it needs produced a result):

========== ==========================================================
stage      needs
========== ==========================================================
register   scan, planning CT (previous result's transform as the start)
needles    scan
seeds      scan (needles, if found, are masked out)
map        seeds, a usable transform (registration PASS or DOUBT)
match      map (seeds and/or needles), plan
dose       map, plan (strengths and source models), plan targets
metrics    dose, plan structures and prescription
cold_spots dose, plan target
suggest    cold_spots, option ``suggest``
========== ==========================================================
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from guidance.plan import Needle
from guidance.structure import StructureRole

if TYPE_CHECKING:
    import datetime as dt

    from guidance.coverage import ColdSpotReport, SuggestionReport
    from guidance.detection import NeedleDetection, PlanMatch, SeedDetection
    from guidance.dose import DoseReport
    from guidance.pipeline.result import PipelineOptions
    from guidance.plan import Plan
    from guidance.registration import PreparedFixed, RegistrationResult
    from guidance.structure import Structure
    from guidance.volume import Grid, Volume

__all__ = [
    "apply_transform",
    "body_mask_on",
    "cold_spot_stage",
    "dose_stage",
    "match_stage",
    "metrics_stage",
    "needle_stage",
    "needles_in_plan",
    "organs_outside",
    "organs_outside_notes",
    "primary_target",
    "register_stage",
    "seed_stage",
    "seed_strengths",
    "strengths_at",
    "suggestion_stage",
    "usual_seed",
]


def apply_transform(transform: NDArray[np.float64], points_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """Map (n, 3) LPS mm points through a 4x4 rigid transform."""
    mapped: NDArray[np.float64] = points_mm.reshape(-1, 3) @ transform[:3, :3].T + transform[:3, 3]
    return mapped


def rotate(transform: NDArray[np.float64], directions: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotate (n, 3) unit vectors (NaN rows stay NaN: unknown axes)."""
    rotated: NDArray[np.float64] = directions.reshape(-1, 3) @ transform[:3, :3].T
    return rotated


def _organs(plan: Plan) -> tuple[Structure, ...]:
    return tuple(s for s in plan.structures_with_role(StructureRole.ORGAN_AT_RISK) if not s.is_empty)


def primary_target(plan: Plan) -> Structure:
    """The plan's first non-empty target (ValueError when none)."""
    targets = [s for s in plan.structures_with_role(StructureRole.TARGET) if not s.is_empty]
    if not targets:
        raise ValueError(f"plan {plan.label!r} has no non-empty TARGET structure: no dose grid nor metrics")
    return targets[0]


def register_stage(
    scan: Volume,
    planning_ct: Volume | PreparedFixed,
    initial: NDArray[np.float64] | None,
    options: PipelineOptions,
) -> RegistrationResult:
    """Rigid registration of the scan (moving) onto the planning CT (fixed)."""
    from guidance.registration import register_rigid

    return register_rigid(planning_ct, scan, initial_moving_to_fixed=initial, **options.registration)


def needle_stage(scan: Volume) -> NeedleDetection:
    """Needles in the scan (scan frame)."""
    from guidance.detection import detect_needles

    return detect_needles(scan)


def seed_stage(scan: Volume, needles: NeedleDetection | None) -> SeedDetection:
    """Seeds in the scan, with the detected needles masked out (but not what shines brighter beside them)."""
    from guidance.detection import detect_seeds, needle_mask

    exclude = None if needles is None or not needles.needles else needle_mask(needles, scan.grid, ct=scan)
    return detect_seeds(scan, exclude_mask=exclude)


def match_stage(
    plan: Plan,
    scan_to_plan: NDArray[np.float64],
    seeds: SeedDetection | None,
    needles: NeedleDetection | None,
) -> PlanMatch:
    """Found seeds and needles assigned to the plan's."""
    from guidance.detection import match_to_plan

    return match_to_plan(plan, scan_to_plan=scan_to_plan, seeds=seeds, needles=needles)


def _model_id(plan: Plan, key: str) -> str:
    source = plan.sources.get(key)
    return key if source is None else source.model_id


def strengths_at(plan: Plan, implant: dt.datetime | None) -> tuple[Plan, float | None]:
    """The plan with its seed strengths decayed from their reference date to ``implant``.

    Permanent implant dose is proportional to the strength at implantation (TG-43 total
    dose = S_K(implant) * Lambda * tau, AAPM TG-43U1 section IV); a plan's strengths are
    stated at its SourceStrengthReferenceDate (DICOM PS3.3 C.8.8.15). Returns the plan
    unchanged and None when either date is unknown, else the decayed plan (its reference
    date moved to ``implant``) and the decay factor of its most common source.
    """
    from guidance.dose.tg43 import decay_factor

    reference = plan.strength_reference_datetime
    if implant is None or reference is None or not plan.seeds:
        return plan, None
    hours = (implant - reference).total_seconds() / 3600.0
    factors = {key: decay_factor(source.half_life_days, hours) for key, source in plan.sources.items()}
    seeds = tuple(
        replace(s, air_kerma_strength_u=s.air_kerma_strength_u * factors.get(s.source_model_id, 1.0))
        for s in plan.seeds
    )
    usual = Counter(s.source_model_id for s in plan.seeds).most_common(1)[0][0]
    decayed = replace(plan, seeds=seeds, strength_reference_datetime=implant)
    return decayed, factors.get(usual, 1.0)


def usual_seed(plan: Plan, options: PipelineOptions | None = None) -> tuple[float, str]:
    """(strength U, TG-43 model) for a found seed matching no planned seed.

    The plan's most common seed, or the options' when the plan has none.
    """
    if plan.seeds:
        usual_key = Counter(s.source_model_id for s in plan.seeds).most_common(1)[0][0]
        strengths = [s.air_kerma_strength_u for s in plan.seeds if s.source_model_id == usual_key]
        return float(np.median(strengths)), _model_id(plan, usual_key)
    if options is not None and options.seed_strength_u is not None and options.source_model_id:
        return options.seed_strength_u, options.source_model_id
    raise ValueError(
        f"plan {plan.label!r} has no seeds and no seed strength and source model were given: "
        "the dose of the seeds found cannot be computed"
    )


def seed_strengths(
    plan: Plan, found: int, match: PlanMatch | None, options: PipelineOptions | None = None
) -> tuple[NDArray[np.float64], list[str]]:
    """Strength (U) and TG-43 model of each found seed: its planned seed's, else :func:`usual_seed`."""
    usual_u, usual_model = usual_seed(plan, options)
    strengths = np.full(found, usual_u)
    models = [usual_model] * found
    for pair in () if match is None else match.seeds:
        planned = plan.seeds[pair.planned_index]
        strengths[pair.found_index] = planned.air_kerma_strength_u
        models[pair.found_index] = _model_id(plan, planned.source_model_id)
    return strengths, models


def dose_grid(plan: Plan, options: PipelineOptions) -> Grid:
    """Axial grid in the planning frame around every target plus the margin."""
    from guidance.dose import auto_dose_grid

    targets = [s for s in plan.structures_with_role(StructureRole.TARGET) if not s.is_empty]
    if not targets:
        primary_target(plan)  # raises with the message
    bounds = np.stack([t.bounds_mm() for t in targets])
    box = np.stack([bounds[:, 0].min(axis=0), bounds[:, 1].max(axis=0)])
    return auto_dose_grid(
        box, margin_mm=options.dose_margin_mm, spacing_mm=options.dose_spacing_mm,
        frame_of_reference_uid=plan.frame_of_reference_uid,
    )  # fmt: skip


def dose_stage(
    plan: Plan,
    positions_plan_mm: NDArray[np.float64],
    directions_plan: NDArray[np.float64],
    match: PlanMatch | None,
    options: PipelineOptions,
) -> Volume:
    """TG-43 dose (Gy) of the found seeds on the planning-frame grid; unknown axes as point sources."""
    from guidance.dose import dose_on_grid
    from guidance.volume import Volume

    grid = dose_grid(plan, options)
    strengths, models = seed_strengths(plan, len(positions_plan_mm), match, options)
    total = np.zeros(grid.shape)
    for model in sorted(set(models)) or [usual_seed(plan, options)[1]]:
        rows = np.array([m == model for m in models], dtype=bool)
        part = dose_on_grid(grid, positions_plan_mm[rows], directions_plan[rows], strengths[rows], model)
        total += np.asarray(part.array)
    return Volume.on_grid(grid, total, quantity="TOTAL_GY", dose_units="GY", n_seeds=len(positions_plan_mm))


def organs_outside(plan: Plan, grid: Grid) -> tuple[str, ...]:
    """Organs at risk with no voxel of ``grid`` inside them (far from the seeds: no DVH there)."""
    from guidance.rasterise import structure_mask

    low, high = grid.bounds_mm()
    out = []
    for organ in _organs(plan):
        bounds = organ.bounds_mm()
        if np.any(bounds[1] < low) or np.any(bounds[0] > high) or not structure_mask(organ, grid).any():
            out.append(organ.name)
    return tuple(out)


def organs_outside_notes(
    plan: Plan, away: tuple[str, ...], beyond_gy: float, options: PipelineOptions
) -> list[str]:
    """Warnings for organs wholly outside the dose grid whose limit the dose out there could reach.

    Their dose is at most ``beyond_gy`` (the grid faces' maximum); below every limit of
    theirs they are simply not evaluated (recorded in the metrics stage's provenance).
    """
    from guidance.dose import DoseLimits

    limits = options.limits or DoseLimits()
    notes = []
    for organ in (s for s in _organs(plan) if s.name in away):
        reached = {m: v for m, v in limits.limits_for(organ.name, organ.role).items() if v <= beyond_gy}
        if reached:
            notes.append(
                f"organ {organ.name!r} lies outside the dose grid, where the dose may reach "
                f"{beyond_gy:.1f} Gy, at or above its limits {reached}: not evaluated; enlarge the dose "
                "grid (dose_margin_mm)"
            )
    return notes


def metrics_stage(dose: Volume, plan: Plan, options: PipelineOptions, away: tuple[str, ...]) -> DoseReport:
    """Target and organ metrics with the plan's structures and prescription (organs off the grid left out)."""
    from guidance.dose import evaluate_plan_dose

    if plan.prescription_gy is None:
        raise ValueError(f"plan {plan.label!r} has no prescription dose: no coverage metrics")
    kept = [s for s in plan.structures if s.name not in away]
    return evaluate_plan_dose(dose, kept, plan.prescription_gy, options.limits)


def body_mask_on(grid: Grid, plan: Plan, planning_ct: Volume, options: PipelineOptions) -> Volume:
    """Body on ``grid``: the plan's EXTERNAL structure, else planning CT above ``body_hu``."""
    from guidance.rasterise import structure_mask
    from guidance.volume import Volume, resample

    external = [s for s in plan.structures_with_role(StructureRole.EXTERNAL) if not s.is_empty]
    if external:
        return Volume.on_grid(grid, structure_mask(external[0], grid))
    ct = resample(planning_ct, grid, fill_value=-1000.0, allow_frame_mismatch=True)
    return Volume.on_grid(grid, np.asarray(ct.array) > options.body_hu)


def needles_in_plan(needles: NeedleDetection | None, scan_to_plan: NDArray[np.float64]) -> tuple[Needle, ...]:
    """Detected needles as plan-frame :class:`Needle` (entry and tip mapped)."""
    if needles is None:
        return ()
    return tuple(
        Needle(
            apply_transform(scan_to_plan, n.entry_mm)[0],
            apply_transform(scan_to_plan, n.tip_mm)[0],
            number=k + 1,
        )
        for k, n in enumerate(needles.needles)
    )


def cold_spot_stage(
    dose: Volume,
    plan: Plan,
    body: Volume,
    context: tuple[tuple[Needle, ...], tuple[str, ...]],
    options: PipelineOptions,
) -> ColdSpotReport:
    """Cold spots of the primary target, hot spots (``context``: needles, organs off the grid)."""
    from guidance.coverage import find_cold_spots

    needles, away = context
    if plan.prescription_gy is None:
        raise ValueError(f"plan {plan.label!r} has no prescription dose: no cold spots")
    return find_cold_spots(
        dose, primary_target(plan), plan.prescription_gy, body=body, needles=needles,
        organs=tuple(s for s in _organs(plan) if s.name not in away),
        limits=options.limits, min_volume_cc=options.min_cold_spot_cc,
    )  # fmt: skip


def suggestion_stage(
    dose: Volume,
    seeds: tuple[NDArray[np.float64], NDArray[np.float64]],
    plan: Plan,
    body: Volume,
    context: tuple[tuple[Needle, ...], PlanMatch | None, tuple[str, ...]],
    options: PipelineOptions,
) -> SuggestionReport:
    """Extra seeds that bring the target D90 back to the prescription."""
    from guidance.coverage import SuggestionOptions, suggest_seeds
    from guidance.planning import SeedSet
    from guidance.rasterise import structure_fraction, structure_mask

    needles, match, away = context
    if plan.prescription_gy is None:
        raise ValueError(f"plan {plan.label!r} has no prescription dose: no suggestions")
    strengths, models = seed_strengths(plan, len(seeds[0]), match, options)
    model = Counter(models).most_common(1)[0][0] if models else usual_seed(plan, options)[1]
    current = SeedSet(seeds[0], seeds[1], strengths, model)
    grid = dose.grid
    target = _float_volume(grid, structure_fraction(primary_target(plan), grid))
    wanted = set(options.forbidden_structures)
    forbidden = {
        s.name: _float_volume(grid, structure_mask(s, grid)) for s in plan.structures if s.name in wanted
    }
    organs = {
        s.name: _float_volume(grid, structure_mask(s, grid)) for s in _organs(plan) if s.name not in away
    }
    return suggest_seeds(
        dose, current, target, plan.prescription_gy, body=body, needles_existing=needles, forbidden=forbidden,
        organs=organs, limits=options.limits,
        options=SuggestionOptions(
            strength_u=float(np.median(strengths)) if len(strengths) else usual_seed(plan, options)[0],
            directions=None if needles else _planned_directions(plan),
            min_cold_spot_cc=options.min_cold_spot_cc,
        ),
    )  # fmt: skip


def _planned_directions(plan: Plan) -> tuple[tuple[float, float, float], ...] | None:
    """Candidate track directions around the planned needles' mean axis (no needle left in the patient)."""
    from guidance.planning import cone_directions

    if not plan.needles:
        return None
    axis = np.mean([n.direction for n in plan.needles], axis=0)
    cone = cone_directions(axis / np.linalg.norm(axis), half_angle_deg=20.0, step_deg=10.0)
    return tuple((float(d[0]), float(d[1]), float(d[2])) for d in cone)


def _float_volume(grid: Grid, array: NDArray[np.generic]) -> Volume:
    """A float volume on ``grid`` (masks and fractions for the suggestions)."""
    from guidance.volume import Volume

    return Volume.on_grid(grid, np.asarray(array, dtype=np.float64))
