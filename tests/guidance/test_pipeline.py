"""The guidance pipeline on simulated cases with ground truth: registration, seeds, dose, cold spots, JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import numpy as np
import pytest

from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.dataset import StudyContext
from guidance.dose import dose_on_grid, evaluate_plan_dose
from guidance.pipeline import SCHEMA_VERSION, GuidanceResult, PipelineOptions, add_suggestions, run_pipeline
from guidance.pipeline.warnings import scan_warnings, target_outside_fraction
from guidance.plan import Plan
from guidance.volume import Volume
from simulators.case import PlanOptions, phantom_config, plan_case
from simulators.phantom import make_patient
from simulators.procedure import iter_scans, simulate_procedure

CONTEXT = StudyContext(
    study_instance_uid="1.2.826.0.1.3680043.8.498.1",
    frame_of_reference_uid="1.2.826.0.1.3680043.8.498.2",
    study_datetime=dt.datetime(2026, 1, 5, 9, 0),
)
Case = tuple[Volume, Plan, Volume, dict[str, Any]]


@pytest.fixture(scope="module")
def planned() -> tuple[Any, Plan]:
    patient = make_patient(
        phantom_config("small", frame_of_reference_uid=CONTEXT.frame_of_reference_uid), seed=2
    )
    return patient, plan_case(patient, PlanOptions(prescription_gy=130.0, activity_mci=0.5)).plan


def _final_scan(planned: tuple[Any, Plan], scenario: str) -> Case:
    patient, plan = planned
    procedure = simulate_procedure(patient, plan, scenario, seed=5, context=CONTEXT)
    last = dataclasses.replace(procedure, scans=procedure.scans[-1:])  # render the final scan only
    (output,) = list(iter_scans(patient, last, CONTEXT))
    return read_ct_series(output.datasets), plan, patient.ct, output.truth


@pytest.fixture(scope="module")
def standard(planned: tuple[Any, Plan]) -> tuple[Case, GuidanceResult]:
    case = _final_scan(planned, "standard")
    scan, plan, ct, _ = case
    return case, run_pipeline(scan, plan, ct, options=PipelineOptions(suggest=False), verification=True)


@pytest.fixture(scope="module")
def cold(planned: tuple[Any, Plan]) -> tuple[Case, GuidanceResult]:
    case = _final_scan(planned, "cold-spot")
    scan, plan, ct, _ = case
    return case, run_pipeline(scan, plan, ct)


def _truth_to_plan(truth: dict[str, Any]) -> np.ndarray:
    return np.linalg.inv(np.array(truth["planning_to_scan"]))


def _map(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    mapped: np.ndarray = points @ transform[:3, :3].T + transform[:3, 3]
    return mapped


def _nearest_true(result: GuidanceResult, truth: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    true_mm = np.array(truth["seeds_planning_mm"])
    distance = np.linalg.norm(result.seeds_plan_mm[:, None] - true_mm[None], axis=2)
    return distance.min(axis=1), distance.argmin(axis=1)


def _true_d90(result: GuidanceResult, plan: Plan, truth: dict[str, Any], rows: np.ndarray) -> float:
    """D90 of the true seeds ``rows`` (planning frame, true axes, planned strengths) on the result's grid."""
    assert result.dose is not None
    strengths = [plan.seeds[truth["seeds_implanted"][k]["plan_index"]].air_kerma_strength_u for k in rows]
    dose = dose_on_grid(
        result.dose.grid, np.array(truth["seeds_planning_mm"])[rows],
        np.array(truth["seed_directions_planning"])[rows], strengths, "6711",
    )  # fmt: skip
    target = plan.structures_with_role("target")[:1]
    return float(evaluate_plan_dose(dose, target, plan.prescription_gy or 0.0).targets[0].d90_gy)


@pytest.mark.parametrize("name", ["standard", "cold"])
def test_registration_close_to_truth(name: str, request: pytest.FixtureRequest) -> None:
    (_, plan, _, truth), result = request.getfixturevalue(name)
    assert result.registration is not None and result.scan_to_plan is not None
    assert result.registration.quality.verdict.value == "pass"
    target = plan.structures_with_role("target")[0].points_mm
    error = np.linalg.norm(_map(result.scan_to_plan, target) - _map(_truth_to_plan(truth), target), axis=1)
    assert float(error.max()) < 1.5


@pytest.mark.parametrize("name", ["standard", "cold"])
def test_seeds_found_and_placed(name: str, request: pytest.FixtureRequest) -> None:
    (_, plan, _, truth), result = request.getfixturevalue(name)
    assert result.seeds is not None and result.match is not None
    found, true = len(result.seeds.seeds), len(truth["seeds_planning_mm"])
    # Every seed is found (a chain of three end to end along one needle included).
    assert found == true
    distance, _ = _nearest_true(result, truth)
    assert float(distance.max()) < 2.0 and float(np.median(distance)) < 1.0
    # Every seed that landed within the matching gate of its planned position is matched.
    planned = np.array([plan.seeds[s["plan_index"]].position_mm for s in truth["seeds_implanted"]])
    near_plan = np.linalg.norm(np.array(truth["seeds_planning_mm"]) - planned, axis=1) < 4.0
    assert len(result.match.seeds) >= int(near_plan.sum())
    assert len(result.match.missing_seeds) == len(plan.seeds) - len(result.match.seeds)


@pytest.mark.parametrize("name", ["standard", "cold"])
def test_d90_matches_dose_of_the_true_seeds(name: str, request: pytest.FixtureRequest) -> None:
    (_, plan, _, truth), result = request.getfixturevalue(name)
    assert result.dose is not None and result.dose.frame_of_reference_uid == plan.frame_of_reference_uid
    _, rows = _nearest_true(result, truth)
    assert result.target_d90_gy == pytest.approx(_true_d90(result, plan, truth, rows), rel=0.05)
    if len(rows) == len(truth["seeds_planning_mm"]):  # all seeds found: the whole truth
        everything = np.arange(len(rows))
        assert result.target_d90_gy == pytest.approx(_true_d90(result, plan, truth, everything), rel=0.05)


def test_cold_spot_scenario_reports_spot_and_suggestions(cold: tuple[Case, GuidanceResult]) -> None:
    (_, plan, _, _), result = cold
    assert result.cold_spots is not None and result.cold_spots.cold_spots
    assert result.cold_spots.cold_spots[0].volume_cc > 0.5
    assert result.target_d90_gy is not None and result.target_d90_gy < (plan.prescription_gy or 0.0)
    assert result.suggestions is not None and result.suggestions.suggestions
    predicted = result.suggestions.predicted_d90_gy
    assert predicted is not None and predicted > result.target_d90_gy


def test_stages_times_and_provenance(standard: tuple[Case, GuidanceResult]) -> None:
    _, result = standard
    names = [name for name, _ in result.stage_seconds]
    assert names == ["register", "needles", "seeds", "match", "dose", "metrics", "cold_spots", "suggest"]
    skipped = {s.stage: s.reason for s in result.stages if not s.ran}
    assert skipped == {"suggest": "disabled by PipelineOptions.suggest"}
    assert all(seconds >= 0 for _, seconds in result.stage_seconds)
    assert [p.stage for p in result.provenance] == names[:-1]
    assert result.provenance[0].parameters["levels_mm"] == [4.0, 2.0, 1.0]
    assert result.is_verification and result.match is not None
    warned = any("planned seeds missing" in w for w in result.warnings)
    assert warned == bool(result.match.missing_seeds)


def test_to_dict_round_trips_json_with_both_frames(cold: tuple[Case, GuidanceResult]) -> None:
    _, result = cold
    values = result.to_dict()
    text = json.dumps(values, allow_nan=False)
    assert json.loads(text) == values
    assert values["schema"] == SCHEMA_VERSION == "seedguide.result/1"
    assert result.scan_to_plan is not None
    for seed in values["seeds"]:
        mapped = _map(result.scan_to_plan, np.array([seed["position_scan_mm"]]))[0]
        np.testing.assert_allclose(seed["position_plan_mm"], mapped, atol=1e-9)
    spot = values["coverage"]["cold_spots"][0]
    back = _map(np.linalg.inv(result.scan_to_plan), np.array([spot["centroid_plan_mm"]]))[0]
    np.testing.assert_allclose(spot["centroid_scan_mm"], back, atol=1e-9)
    assert values["metrics"]["targets"][0]["d90_gy"] == pytest.approx(result.target_d90_gy)
    assert values["suggestions"]["seeds"] and [s["stage"] for s in values["stages"]][-1] == "suggest"


def test_failed_registration_keeps_detection_and_warns(standard: tuple[Case, GuidanceResult]) -> None:
    (scan, plan, ct, _), _ = standard
    air = scan.with_array(np.full(scan.shape, -1000.0, dtype=np.float32))
    result = run_pipeline(air, plan, ct, options=PipelineOptions(suggest=False))
    assert result.scan_to_plan is None and result.dose is None and result.match is None
    assert result.seeds is not None and not result.seeds.seeds
    skipped = [s.stage for s in result.stages if not s.ran]
    assert {"match", "dose", "metrics", "cold_spots", "suggest"} <= set(skipped)
    assert result.registration is not None and result.registration.quality.verdict.value == "fail"
    assert (
        result.warnings[0].startswith("registration FAIL") and "no seed found in the scan" in result.warnings
    )
    values = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert values["dose"] is None and values["seeds"] == [] and values["metrics"] is None
    assert values["registration"]["verdict"] == "fail" and values["registration"]["used"] is False


def test_previous_result_starts_the_registration(standard: tuple[Case, GuidanceResult]) -> None:
    (scan, plan, ct, _), first = standard
    again = run_pipeline(scan, plan, ct, previous=first, options=PipelineOptions(suggest=False))
    assert again.provenance[0].parameters["initial_from_previous"] is True
    assert first.scan_to_plan is not None and again.scan_to_plan is not None
    np.testing.assert_allclose(again.scan_to_plan, first.scan_to_plan, atol=1e-3)
    assert again.target_d90_gy == pytest.approx(first.target_d90_gy, rel=1e-3)


def test_inputs_are_validated(standard: tuple[Case, GuidanceResult]) -> None:
    (scan, plan, ct, _), _ = standard
    with pytest.raises(TypeError, match="plan must be a Plan"):
        run_pipeline(scan, "plan", ct)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="FrameOfReferenceUID"):
        run_pipeline(scan, dataclasses.replace(plan, frame_of_reference_uid="1.2.3"), ct)
    with pytest.raises(ValueError, match="dose_spacing_mm"):
        PipelineOptions(dose_spacing_mm=0.0)


def test_target_truncated_by_a_short_scan_is_warned(standard: tuple[Case, GuidanceResult]) -> None:
    (scan, plan, _, _), result = standard
    assert result.scan_to_plan is not None
    assert target_outside_fraction(scan, plan, result.scan_to_plan) == 0.0
    assert not any("truncated" in w for w in result.warnings)
    # Three slices through the middle of the target: most of its contour lies off the scan.
    first = scan.shape[0] // 2 - 1
    affine = np.array(scan.affine)
    affine[:3, 3] = scan.index_to_patient(np.array([[first, 0.0, 0.0]]))[0]
    short = Volume(np.asarray(scan.array)[first : first + 3], affine, scan.frame_of_reference_uid)
    outside = target_outside_fraction(short, plan, result.scan_to_plan)
    assert 0.3 < outside < 1.0
    warnings = scan_warnings(
        short, plan, (result.registration, result.scan_to_plan), (None, None, None), False
    )
    assert warnings[0].startswith(f"target truncated: {100 * outside:.0f}% of its contour")


def test_seed_strengths_are_decayed_to_the_scan_date(standard: tuple[Case, GuidanceResult]) -> None:
    """I-125 calibrated one half-life (59.4 d) before the scan: half the strength, half the dose."""
    (scan, plan, ct, _), result = standard
    acquired = dt.datetime.fromisoformat(scan.metadata["acquisition_datetime"])
    half_life = plan.sources[plan.seeds[0].source_model_id].half_life_days
    old = dataclasses.replace(plan, strength_reference_datetime=acquired - dt.timedelta(days=half_life))
    decayed = run_pipeline(scan, old, ct, options=PipelineOptions(suggest=False), previous=result)
    dose_stage = next(p for p in decayed.provenance if p.stage == "dose")
    assert dose_stage.parameters["strength_decay_factor"] == pytest.approx(0.5, rel=1e-9)
    assert result.dose is not None and decayed.dose is not None
    # rtol: this run's registration starts from the first's transform (sub-0.1 mm apart)
    np.testing.assert_allclose(np.asarray(decayed.dose.array), 0.5 * np.asarray(result.dose.array), rtol=2e-3,
                               atol=1e-9)  # fmt: skip
    assert not any("no strength reference date" in w for w in decayed.warnings)
    assert any("no strength reference date" in w for w in result.warnings) == (
        plan.strength_reference_datetime is None
    )


def test_suggestions_added_later_equal_those_of_a_full_run(cold: tuple[Case, GuidanceResult]) -> None:
    """Coverage first, suggestions after (live service): the same suggestions as one full run."""
    (scan, plan, ct, _), full = cold
    first = run_pipeline(scan, plan, ct, options=PipelineOptions(suggest=False))
    assert first.suggestions is None
    later = add_suggestions(first, scan, plan, ct)
    assert later.suggestions is not None and full.suggestions is not None
    assert len(later.suggestions.suggestions) == len(full.suggestions.suggestions) > 0
    ours = np.array([s.position_mm for s in later.suggestions.suggestions])
    theirs = np.array([s.position_mm for s in full.suggestions.suggestions])
    np.testing.assert_allclose(ours, theirs, atol=0.5)
    assert [s.stage for s in later.stages] == [s.stage for s in full.stages]
    assert later.dose is first.dose and later.cold_spots is first.cold_spots
