"""The simulated procedure: scan schedule, seed fates, motion bounds, coverage, truth, streaming."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.dataset import StudyContext
from simulators.case import CasePlan, PlanOptions, phantom_config, plan_case
from simulators.cli import main
from simulators.phantom import Patient, make_patient
from simulators.procedure import (
    SCENARIOS,
    Procedure,
    Scenario,
    ScenarioName,
    get_scenario,
    iter_scans,
    simulate_procedure,
)
from simulators.render import ScanTruth
from tests.simulators.peers import storescp

CONTEXT = StudyContext(
    study_instance_uid="1.2.826.0.1.3680043.8.498.1",
    frame_of_reference_uid="1.2.826.0.1.3680043.8.498.2",
    study_datetime=dt.datetime(2026, 1, 5, 9, 0),
)


@pytest.fixture(scope="module")
def planned() -> tuple[Patient, CasePlan]:
    patient = make_patient(
        phantom_config("small", frame_of_reference_uid=CONTEXT.frame_of_reference_uid), seed=2
    )
    return patient, plan_case(patient, PlanOptions(prescription_gy=130.0, activity_mci=0.5))


def _rotation_deg(transform: np.ndarray) -> float:
    cosine = (np.trace(np.asarray(transform)[:3, :3]) - 1.0) / 2.0
    return math.degrees(math.acos(np.clip(cosine, -1.0, 1.0)))


@pytest.mark.parametrize("name", [n.value for n in ScenarioName])
def test_schedule_seed_counts_motion_and_coverage(planned: tuple[Patient, CasePlan], name: str) -> None:
    patient, case_plan = planned
    plan = case_plan.plan
    scenario = get_scenario(name)
    procedure = simulate_procedure(patient, plan, name, seed=5, context=CONTEXT)
    scans = procedure.scans
    assert len(scans) == min(scenario.seed_batches, len(plan.needles)) + 1
    assert scans[0].seeds == () and scans[0].needles == tuple(range(len(plan.needles)))
    assert scans[-1].needles == ()
    counts = [len(s.seeds) for s in scans]
    assert counts == sorted(counts) and counts[-1] == sum(s.present for s in procedure.seeds)
    assert [s.plan_index for s in procedure.seeds] == sorted(range(len(plan.seeds)))
    planning = patient.ct.grid
    planning_z = planning.bounds_mm()[:, 2]
    centre = patient.model.tumour.centre_mm
    for scan in scans:
        transform = np.array(scan.planning_to_scan)
        max_mm = scenario.jump_mm if scan.jump else scenario.motion_mm
        max_deg = scenario.jump_deg if scan.jump else scenario.motion_deg
        assert _rotation_deg(transform) == pytest.approx(scan.rotation_deg, abs=1e-6)
        assert scan.rotation_deg <= max_deg and scan.translation_mm <= max_mm
        moved = transform[:3, :3] @ centre + transform[:3, 3]
        assert np.linalg.norm(moved - centre) == pytest.approx(scan.translation_mm, abs=1e-6)
        low, high = scenario.scan_slices
        assert low <= scan.grid.shape[0] <= high and 10 <= scan.grid.shape[0] <= 20
        thickness = scenario.slice_thickness_mm or float(planning.spacing_mm[0])
        np.testing.assert_allclose(scan.grid.spacing_mm, [thickness, *planning.spacing_mm[1:]])
        z = scan.grid.bounds_mm()[:, 2]
        assert z[1] - z[0] < planning_z[1] - planning_z[0]  # only part of the planning range
        assert z[0] < moved[2] < z[1]  # around the tumour
        assert scan.grid.frame_of_reference_uid != CONTEXT.frame_of_reference_uid
    assert len({s.grid.frame_of_reference_uid for s in scans}) == len(scans)


def test_needle_deviations_within_scenario(planned: tuple[Patient, CasePlan]) -> None:
    patient, case_plan = planned
    scenario = SCENARIOS[ScenarioName.EASY]
    procedure = simulate_procedure(patient, case_plan.plan, scenario, seed=9)
    for k, needle in enumerate(case_plan.plan.needles):
        entry, tip = procedure.needle_entries_mm[k], procedure.needle_tips_mm[k]
        shift = entry - needle.entry_mm
        assert 0.5 - 1e-9 <= np.linalg.norm(shift) <= 1.0 + 1e-9
        assert abs(float(np.dot(shift, needle.direction))) < 1e-9  # across the track
        actual = (tip - entry) / np.linalg.norm(tip - entry)
        tilt = math.degrees(math.acos(np.clip(np.dot(actual, needle.direction), -1.0, 1.0)))
        assert 0.5 - 1e-6 <= tilt <= 1.5 + 1e-6
        assert 0.5 - 1e-6 <= abs(np.linalg.norm(tip - entry) - needle.length_mm) <= 1.0 + 1e-6
    assert {s.status for s in procedure.seeds} == {"implanted"}


def test_cold_spot_loses_a_whole_needle(planned: tuple[Patient, CasePlan]) -> None:
    patient, case_plan = planned
    plan = case_plan.plan
    procedure = simulate_procedure(patient, plan, "cold-spot", seed=5)
    busiest = max(range(len(plan.needles)), key=lambda k: (len(plan.needles[k].seed_indices), -k))
    lost = [s for s in procedure.seeds if s.needle_index == busiest]
    assert lost and all(s.status == "missing" for s in lost)
    assert len(plan.needles[busiest].seed_indices) >= 2
    last = procedure.scans[-1]
    assert not any(procedure.seeds[j].needle_index == busiest for j in last.seeds)


def test_hard_scenario_has_mishaps(planned: tuple[Patient, CasePlan]) -> None:
    patient, case_plan = planned
    statuses = set()
    for seed in range(6):
        procedure = simulate_procedure(patient, case_plan.plan, "hard", seed=seed)
        statuses |= {s.status for s in procedure.seeds}
    assert {"implanted", "touching", "displaced"} <= statuses


def test_same_seed_same_procedure(planned: tuple[Patient, CasePlan]) -> None:
    patient, case_plan = planned
    first, second = (simulate_procedure(patient, case_plan.plan, "standard", seed=3, context=CONTEXT)
                     for _ in range(2))  # fmt: skip
    other = simulate_procedure(patient, case_plan.plan, "standard", seed=4, context=CONTEXT)
    assert _same(first, second) and not _same(first, other)


def _same(a: Procedure, b: Procedure) -> bool:
    return (
        a.seeds == b.seeds
        and np.array_equal(a.needle_tips_mm, b.needle_tips_mm)
        and [(s.planning_to_scan, s.grid.shape, s.noise_seed, s.seeds) for s in a.scans]
        == [(s.planning_to_scan, s.grid.shape, s.noise_seed, s.seeds) for s in b.scans]
    )


def test_rendered_scans_and_truth(planned: tuple[Patient, CasePlan], tmp_path: Path) -> None:
    patient, case_plan = planned
    procedure = simulate_procedure(patient, case_plan.plan, "cold-spot", seed=5, context=CONTEXT)
    outputs = list(iter_scans(patient, procedure, CONTEXT))
    truths = [out.truth for out in outputs]
    assert [t["scan_index"] for t in truths] == [1, 2, 3]
    assert [len(t["seeds_planning_mm"]) for t in truths] == [len(s.seeds) for s in procedure.scans]
    assert truths[-1]["seeds_missing"] and set(truths[-1]["seeds_missing"]) >= set(truths[1]["seeds_missing"])
    for out in outputs:
        truth = ScanTruth.from_dict(
            {k: v for k, v in out.truth.items() if k in ScanTruth.__dataclass_fields__}
        )
        transform = np.array(truth.planning_to_scan)
        seeds = np.array(truth.seeds_planning_mm).reshape(-1, 3)
        np.testing.assert_allclose(
            np.array(truth.seeds_scan_mm).reshape(-1, 3), seeds @ transform[:3, :3].T + transform[:3, 3]
        )
        volume = read_ct_series(out.datasets)
        assert volume.shape == out.scan.grid.shape
        assert (
            volume.frame_of_reference_uid
            == truth.frame_of_reference_uid
            == out.scan.grid.frame_of_reference_uid
        )
        np.testing.assert_allclose(volume.affine, np.array(truth.grid_affine), atol=1e-4)
        assert {str(d.StudyInstanceUID) for d in out.datasets} == {CONTEXT.study_instance_uid}
        if truth.seeds_scan_mm:  # seeds are bright metal where the truth puts them
            index = np.rint(volume.patient_to_index(np.array(truth.seeds_scan_mm))).astype(int)
            inside = np.all((index >= 0) & (index < np.array(volume.shape)), axis=1)
            assert np.all(
                volume.array[tuple(index[inside].T)] > 800.0
            )  # tumour is 65 HU; a 0.8 mm seed fills part of a voxel
    series = {str(out.datasets[0].SeriesInstanceUID) for out in outputs}
    assert len(series) == 3


def test_unknown_scenario_is_named() -> None:
    with pytest.raises(ValueError, match="easy, standard"):
        get_scenario("impossible")
    with pytest.raises(ValueError, match="missing_probability"):
        Scenario("bad", "", missing_probability=1.5)


def test_procedure_command_streams_plan_then_scans(tmp_path: Path) -> None:
    with storescp(tmp_path / "received", tmp_path / "storescp.log") as port:
        status = main(["procedure", "--to", f"127.0.0.1:{port}", "--seed", "1", "--scenario", "easy",
                       "--interval", "0.2", "--called-ae", "STORESCP"])  # fmt: skip
    assert status == 0
    received = [
        pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((tmp_path / "received").iterdir())
    ]
    modalities = [str(d.Modality) for d in received]
    assert modalities.count("RTSTRUCT") == 1 and modalities.count("RTPLAN") == 1
    ct_series = {str(d.SeriesInstanceUID) for d in received if d.Modality == "CT"}
    assert len(ct_series) == 1 + 3  # planning CT + three scans
    assert modalities.count("CT") >= 40 + 3 * 10
    assert len({str(d.StudyInstanceUID) for d in received}) == 1
