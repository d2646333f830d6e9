"""One intra-procedure scan plus the plan -> one :class:`GuidanceResult`.

The stages and what each needs are listed in :mod:`guidance.pipeline.stages`. A
stage that fails (bad input, registration FAIL) leaves a warning and its
dependants skipped; the stages that could run still give their results.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from guidance.dose.metrics import dose_beyond_grid_gy
from guidance.pipeline import stages
from guidance.pipeline.result import GuidanceResult, PipelineOptions, StageRun
from guidance.pipeline.warnings import scan_warnings
from guidance.plan import Plan
from guidance.provenance import Provenance
from guidance.registration import PreparedFixed, RegistrationResult, Verdict
from guidance.volume import Volume

__all__ = ["add_suggestions", "run_pipeline"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Runner:
    """Times each stage, records its provenance, turns a stage failure into a warning."""

    runs: list[StageRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def stage(
        self, name: str, parameters: dict[str, Any], function: Callable[..., T], *args: Any
    ) -> T | None:
        from guidance import __version__

        started = time.perf_counter()
        try:
            value = function(*args)
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
            seconds = time.perf_counter() - started
            logger.warning("pipeline stage %s failed after %.2f s: %s", name, seconds, exc)
            self.warnings.append(f"{name} failed: {exc}")
            self.runs.append(StageRun(name, seconds, False, f"failed: {exc}", None))
            return None
        seconds = time.perf_counter() - started
        inner = getattr(value, "provenance", None)
        used = {**parameters, **inner.parameters} if isinstance(inner, Provenance) else parameters
        self.runs.append(StageRun(name, seconds, True, "", Provenance(name, used, __version__, seconds)))
        logger.info("pipeline stage %s: %.2f s", name, seconds)
        return value

    def skip(self, name: str, reason: str) -> None:
        self.runs.append(StageRun(name, 0.0, False, reason, None))


def _validate(scan: Volume, plan: Plan, planning_ct: Volume | None, previous: GuidanceResult | None) -> None:
    if planning_ct is None:
        if plan.frame_of_reference_uid and scan.frame_of_reference_uid != plan.frame_of_reference_uid:
            raise ValueError(
                f"run_pipeline without a planning CT: the structures' FrameOfReferenceUID "
                f"{plan.frame_of_reference_uid!r} is not the scan's {scan.frame_of_reference_uid!r}; "
                "without registration they must have been drawn on this scan"
            )
        planning_ct = scan
    for name, value, kind in (
        ("scan", scan, Volume),
        ("plan", plan, Plan),
        ("planning_ct", planning_ct, Volume),
    ):
        if not isinstance(value, kind):
            raise TypeError(f"run_pipeline: {name} must be a {kind.__name__}; got {type(value).__name__}")
    if previous is not None and not isinstance(previous, GuidanceResult):
        raise TypeError(
            f"run_pipeline: previous must be a GuidanceResult or None; got {type(previous).__name__}"
        )
    if (
        planning_ct.frame_of_reference_uid
        and plan.frame_of_reference_uid != planning_ct.frame_of_reference_uid
    ):
        raise ValueError(
            f"run_pipeline: the plan's FrameOfReferenceUID {plan.frame_of_reference_uid!r} is not "
            f"the planning CT's {planning_ct.frame_of_reference_uid!r}; pass the CT the plan was made on"
        )


def _usable(registration: RegistrationResult | None, options: PipelineOptions, runner: _Runner) -> bool:
    if registration is None:
        return False
    if registration.quality.verdict is Verdict.FAIL and not options.use_failed_registration:
        reasons = "; ".join(registration.quality.reasons)
        runner.warnings.append(f"registration FAIL ({reasons}): nothing is mapped into the plan; re-register")
        return False
    return True


def _mapped(
    seeds: Any, transform: NDArray[np.float64] | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    if seeds is None or transform is None:
        return np.zeros((0, 3)), np.zeros((0, 3))
    positions = np.array([s.position_mm for s in seeds.seeds], dtype=np.float64).reshape(-1, 3)
    directions = np.array([s.direction for s in seeds.seeds], dtype=np.float64).reshape(-1, 3)
    return stages.apply_transform(transform, positions), stages.rotate(transform, directions)


def _dose_and_coverage(
    runner: _Runner, inputs: tuple[Plan, Volume, Any, Any],
    mapped: tuple[NDArray[np.float64], NDArray[np.float64]], transform: NDArray[np.float64] | None,
    options: PipelineOptions, decay: float | None = None,
) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    plan, planning_ct, needles, match = inputs
    names = ("dose", "metrics", "cold_spots", "suggest")
    if transform is None:
        for name in names:
            runner.skip(name, "no usable registration")
        return None, None, None, None
    grid_parameters = {"margin_mm": options.dose_margin_mm, "spacing_mm": options.dose_spacing_mm,
                       "n_seeds": len(mapped[0]), "strength_reference_datetime": _iso(plan),
                       "strength_decay_factor": decay}  # fmt: skip
    dose = runner.stage("dose", grid_parameters, stages.dose_stage, plan, *mapped, match, options)
    if dose is None:
        for name in names[1:]:
            runner.skip(name, "no dose")
        return None, None, None, None
    away = stages.organs_outside(plan, dose.grid)
    beyond_gy = dose_beyond_grid_gy(dose)
    runner.notes.extend(stages.organs_outside_notes(plan, away, beyond_gy, options))
    report = runner.stage(
        "metrics", {"organs_off_grid": list(away), "dose_beyond_grid_max_gy": beyond_gy},
        stages.metrics_stage, dose, plan, options, away,
    )  # fmt: skip
    needles_plan = stages.needles_in_plan(needles, transform)
    body = stages.body_mask_on(dose.grid, plan, planning_ct, options)
    cold = runner.stage(
        "cold_spots", {}, stages.cold_spot_stage, dose, plan, body, (needles_plan, away), options
    )
    suggestions = None
    if not options.suggest:
        runner.skip("suggest", "disabled by PipelineOptions.suggest")
    elif cold is None:
        runner.skip("suggest", "no cold-spot report")
    else:
        suggestions = runner.stage(
            "suggest",
            {},
            stages.suggestion_stage,
            dose,
            mapped,
            plan,
            body,
            (needles_plan, match, away),
            options,
        )
    return dose, report, cold, suggestions


def _acquired(scan: Volume) -> dt.datetime | None:
    text = scan.metadata.get("acquisition_datetime")
    return dt.datetime.fromisoformat(text) if isinstance(text, str) else None


def _iso(plan: Plan) -> str | None:
    when = plan.strength_reference_datetime
    return None if when is None else when.isoformat()


def _registered(
    runner: _Runner, scan: Volume, planning_ct: Volume | PreparedFixed | None,
    previous: GuidanceResult | None, options: PipelineOptions,
) -> tuple[RegistrationResult | None, NDArray[np.float64] | None]:  # fmt: skip
    if planning_ct is None:
        runner.skip("register", "no planning CT: the structures were drawn on this scan (identity)")
        return None, np.eye(4)
    initial = None if previous is None else previous.scan_to_plan
    registration = runner.stage(
        "register", {"initial_from_previous": initial is not None}, stages.register_stage, scan, planning_ct,
        initial, options,
    )  # fmt: skip
    usable = _usable(registration, options, runner) and registration is not None
    return registration, registration.moving_to_fixed if usable and registration else None


def run_pipeline(
    scan: Volume,
    plan: Plan,
    planning_ct: Volume | PreparedFixed | None,
    *,
    previous: GuidanceResult | None = None,
    options: PipelineOptions | None = None,
    verification: bool = False,
) -> GuidanceResult:
    """Register, detect, match, compute dose, metrics, cold spots and suggestions for one scan.

    Parameters
    ----------
    scan : Volume
        Intra-procedure CT, HU, (S, R, C), its own patient frame (LPS mm).
    plan : Plan
        Seeds, needles, structures and prescription in the planning frame.
    planning_ct : Volume, PreparedFixed or None
        The CT the plan was made on (fixed image of the registration), or its pyramid
        prepared once for the session (:func:`guidance.registration.prepare_fixed`). None: no
        registration, the plan's structures were drawn on ``scan`` itself (post-implant
        analysis of a case planned elsewhere; the plan may then have no seeds, see
        ``PipelineOptions.seed_strength_u``).
    previous : GuidanceResult, optional
        The session's previous result: its scan-to-plan transform starts the registration.
    options : PipelineOptions, optional
    verification : bool
        The scan verifies a finished implant: planned seeds not found are reported missing.

    Returns
    -------
    GuidanceResult
        Immutable; stages that could not run are listed as skipped with the reason.

    Raises
    ------
    TypeError, ValueError
        Inputs of the wrong type, or a plan not made on ``planning_ct`` (FrameOfReferenceUID,
        DICOM PS3.3 C.7.4.1).
    """
    fixed = planning_ct
    if isinstance(planning_ct, PreparedFixed):
        planning_ct = planning_ct.volume
    _validate(scan, plan, planning_ct, previous)
    opts = options or PipelineOptions()
    runner = _Runner()
    implant = opts.implant_datetime or _acquired(scan)
    plan, decay = stages.strengths_at(plan, implant)
    if plan.seeds and plan.strength_reference_datetime is None:
        runner.notes.append("the plan states no strength reference date: seed strengths used as planned")
    registration, transform = _registered(runner, scan, fixed, previous, opts)
    needles = runner.stage("needles", {}, stages.needle_stage, scan)
    seeds = runner.stage("seeds", {"needles_masked": needles is not None}, stages.seed_stage, scan, needles)
    mapped = _mapped(seeds, transform)
    match = None
    if transform is None:
        runner.skip("match", "no usable registration")
    elif not plan.seeds:
        runner.skip("match", "the plan has no seeds to match")
    else:
        match = runner.stage("match", {}, stages.match_stage, plan, transform, seeds, needles)
    dose, report, cold, suggestions = _dose_and_coverage(
        runner,
        (plan, scan if planning_ct is None else planning_ct, needles, match),
        mapped,
        transform,
        opts,
        decay,
    )
    warnings = scan_warnings(scan, plan, (registration, transform), (needles, seeds, match), verification)
    extra = [*runner.notes, *(report.warnings if report else ()), *(cold.warnings if cold else ())]
    return GuidanceResult(
        scan_frame_of_reference_uid=scan.frame_of_reference_uid,
        plan_frame_of_reference_uid=plan.frame_of_reference_uid, is_verification=verification,
        registration=registration, scan_to_plan=transform, needles=needles, seeds=seeds,
        seeds_plan_mm=mapped[0], seed_directions_plan=mapped[1], match=match, dose=dose, dose_report=report,
        cold_spots=cold, suggestions=suggestions, warnings=(*runner.warnings, *warnings, *extra),
        stages=tuple(runner.runs),
    )  # fmt: skip


def add_suggestions(
    result: GuidanceResult,
    scan: Volume,
    plan: Plan,
    planning_ct: Volume | PreparedFixed | None,
    *,
    options: PipelineOptions | None = None,
) -> GuidanceResult:
    """``result`` (run with ``suggest=False``) completed with the extra-seed suggestions.

    Lets a live service show coverage as soon as it is known and the suggestions, the
    slowest stage when much of the target is still cold, a moment later. The same
    inputs as the run that made ``result``; returns it unchanged when it has no dose or
    cold-spot report (the skip reason stays).
    """
    opts = options or PipelineOptions()
    if result.dose is None or result.cold_spots is None or result.scan_to_plan is None:
        return result
    fixed_ct = scan if planning_ct is None else planning_ct
    ct = fixed_ct.volume if isinstance(fixed_ct, PreparedFixed) else fixed_ct
    plan, _ = stages.strengths_at(plan, opts.implant_datetime or _acquired(scan))
    away = stages.organs_outside(plan, result.dose.grid)
    body = stages.body_mask_on(result.dose.grid, plan, ct, opts)
    needles_plan = stages.needles_in_plan(result.needles, result.scan_to_plan)
    mapped = (result.seeds_plan_mm, result.seed_directions_plan)
    runner = _Runner()
    context = (needles_plan, result.match, away)
    suggestions = runner.stage(
        "suggest", {}, stages.suggestion_stage, result.dose, mapped, plan, body, context, opts
    )
    kept = tuple(s for s in result.stages if s.stage != "suggest")
    return replace(
        result,
        suggestions=suggestions,
        stages=(*kept, *runner.runs),
        warnings=(*result.warnings, *runner.warnings),
    )
