"""Rigid registration of simulated intra-procedure scans onto a simulated planning CT (known motion).

Scenes: a neck-node patient (simulators.phantom), planning CT 160 x 160 x 40 at 1.2 x 1.2 x 2 mm with
noise, blur and the couch; intra-procedure scans of 8-15 slices around the tumour with seeds, a needle
pair and their streaks (simulators.render), the couch staying put while the patient moves. The target
registration error (TRE) is measured over a box around the GTV (27 points, +- the tumour radius).
Bounds (max TRE): 0.5 mm for motion up to 10 mm / 5 deg on 1-3 mm slices, 1 mm when either image
has 5 mm slices; every in-range case must PASS. Unregistrable pairs (no overlap, noise) FAIL.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from guidance.registration import RegistrationOptions, RegistrationResult, Verdict, register_rigid
from guidance.volume import Volume
from simulators.phantom import PatientModel
from tests.guidance.registration.scenes import Scene, planning, rigid, scene


@pytest.fixture(scope="module")
def patient() -> tuple[PatientModel, Volume]:
    return planning(seed=1)


@pytest.fixture(scope="module")
def thick_patient() -> tuple[PatientModel, Volume]:
    """The same patient, planned on 5 mm slices."""
    return planning(seed=1, thickness_mm=5.0, slices=16)


def _check(found: RegistrationResult, case: Scene, mean_mm: float, max_mm: float) -> tuple[float, float]:
    tre = case.tre_mm(found.moving_to_fixed)
    assert tre[0] < mean_mm and tre[1] < max_mm, f"TRE mean/max {tre} mm; quality {found.quality}"
    return tre


@pytest.mark.parametrize(
    ("angles_deg", "shift_mm"),
    [
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        ((1.0, -2.0, 3.0), (3.0, -2.0, 4.0)),
        ((-3.0, 2.0, -2.0), (-4.0, 3.0, -3.0)),
    ],
)
def test_small_motion_is_found_within_half_a_mm(
    patient: tuple[PatientModel, Volume],
    angles_deg: tuple[float, float, float],
    shift_mm: tuple[float, float, float],
) -> None:
    model, fixed = patient
    case = scene(model, fixed, rigid(angles_deg, shift_mm))
    found = register_rigid(case.fixed, case.moving)
    _check(found, case, 0.5, 0.5)
    assert found.verdict is Verdict.PASS, found.quality.reasons
    assert found.quality.overlap_fraction > 0.95
    assert found.quality.bone_surface_distance_mm < 1.0


@pytest.mark.parametrize(
    ("angles_deg", "shift_mm"), [((3.0, -4.0, 5.0), (6.0, -5.0, 7.0)), ((-2.0, 3.0, -5.0), (-8.0, 5.0, -5.0))]
)
def test_large_motion_is_found_within_half_a_mm(
    patient: tuple[PatientModel, Volume],
    angles_deg: tuple[float, float, float],
    shift_mm: tuple[float, float, float],
) -> None:
    model, fixed = patient
    case = scene(model, fixed, rigid(angles_deg, shift_mm))
    found = register_rigid(case.fixed, case.moving)
    _check(found, case, 0.5, 0.5)
    assert found.verdict is Verdict.PASS, found.quality.reasons


def test_without_metal(patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = patient
    case = scene(model, fixed, rigid((2.0, 1.0, -2.0), (2.0, 3.0, -4.0)), metal=False)
    found = register_rigid(case.fixed, case.moving)
    _check(found, case, 0.5, 0.5)
    assert found.verdict is Verdict.PASS


def test_metal_without_streaks(patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = patient
    case = scene(model, fixed, rigid((2.0, 1.0, -2.0), (2.0, 3.0, -4.0)), streaks=False)
    _check(register_rigid(case.fixed, case.moving), case, 0.5, 0.5)


def test_thick_planning_thin_scan(thick_patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = thick_patient
    case = scene(model, fixed, rigid((1.0, -2.0, 2.0), (3.0, -2.0, 3.0)), thickness_mm=1.5, slices=20)
    found = register_rigid(case.fixed, case.moving)
    _check(found, case, 1.0, 1.0)
    assert found.verdict is Verdict.PASS, found.quality.reasons


def test_thin_planning_thick_scan(patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = patient
    case = scene(model, fixed, rigid((1.0, -2.0, 2.0), (3.0, -2.0, 3.0)), thickness_mm=5.0, slices=8)
    found = register_rigid(case.fixed, case.moving)
    _check(found, case, 1.0, 1.0)
    assert found.verdict is Verdict.PASS, found.quality.reasons


#: Motion of 10 mm and about 5 degrees about the tumour centre (the largest in-range motion).
_TEN_MM_FIVE_DEG = ((2.0, -2.0, 4.0), (6.0, -6.0, 5.29))


@pytest.mark.parametrize(
    ("plan_mm", "angles_deg", "shift_mm", "scan_mm", "slices", "max_mm"),
    [
        (2.0, *_TEN_MM_FIVE_DEG, 2.0, 15, 0.5),
        (2.0, (-2.0, 2.0, -4.0), (-6.0, 5.29, -6.0), 1.0, 20, 0.5),
        (2.0, (1.0, 2.0, -2.0), (3.0, 3.0, -2.0), 3.0, 10, 0.5),
        (5.0, *_TEN_MM_FIVE_DEG, 3.0, 12, 1.0),
    ],
    ids=["2mm-plan-2mm-x15-10mm-5deg", "2mm-plan-1mm-x20-10mm-5deg", "2mm-plan-3mm-x10-5mm-3deg",
         "5mm-plan-3mm-x12-10mm-5deg"],
)  # fmt: skip
def test_in_range_motion_about_the_tumour(
    patient: tuple[PatientModel, Volume],
    thick_patient: tuple[PatientModel, Volume],
    plan_mm: float,
    angles_deg: tuple[float, float, float],
    shift_mm: tuple[float, float, float],
    scan_mm: float,
    slices: int,
    max_mm: float,
) -> None:
    """Up to 10 mm / 5 deg about the GTV centre, partial ranges of 10-20 slices: max TRE within the bound."""
    model, fixed = thick_patient if plan_mm == 5.0 else patient
    motion = rigid(angles_deg, shift_mm, model.tumour.centre_mm)
    assert np.linalg.norm(shift_mm) <= 10.0 + 1e-9
    case = scene(model, fixed, motion, thickness_mm=scan_mm, slices=slices)
    found = register_rigid(case.fixed, case.moving)
    _check(found, case, max_mm, max_mm)
    assert found.verdict is Verdict.PASS, found.quality.reasons


def test_initial_transform_of_a_session_is_used(patient: tuple[PatientModel, Volume]) -> None:
    """Start from the previous scan's transform, with a search range too small to find the motion alone."""
    model, fixed = patient
    case = scene(model, fixed, rigid((2.0, -3.0, 4.0), (14.0, -6.0, 8.0)))
    previous = np.linalg.inv(rigid((2.0, -3.0, 3.0), (13.0, -5.0, 7.0)))
    found = register_rigid(case.fixed, case.moving, initial_moving_to_fixed=previous, search_mm=0.0)
    _check(found, case, 0.5, 0.5)
    assert found.provenance.parameters["initial_given"] is True
    np.testing.assert_allclose(found.provenance.parameters["initial_moving_to_fixed"], previous)


def test_pure_noise_is_never_a_pass(patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = patient
    case = scene(model, fixed, np.eye(4), metal=False)
    noise = np.random.default_rng(5).normal(0.0, 300.0, size=case.moving.shape).astype(np.float32)
    found = register_rigid(fixed, case.moving.with_array(noise))
    assert found.verdict is Verdict.FAIL, found.quality


def test_another_body_part_is_never_a_pass(patient: tuple[PatientModel, Volume]) -> None:
    """A water cylinder (a phantom, or an abdomen-sized body) where the neck should be."""
    model, fixed = patient
    moving = scene(model, fixed, np.eye(4), metal=False).moving
    centres = moving.grid.voxel_centres_mm()
    inside = (centres[..., 0] / 110.0) ** 2 + ((centres[..., 1] + 10.0) / 80.0) ** 2 <= 1.0
    noise = np.random.default_rng(6).normal(0.0, 12.0, size=moving.shape)
    found = register_rigid(fixed, moving.with_array(np.where(inside, 0.0, -1000.0) + noise))
    assert found.verdict is not Verdict.PASS, found.quality


def test_scan_outside_the_planning_range_fails(patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = patient
    case = scene(model, fixed, np.eye(4), metal=False)
    far = np.array(case.moving.affine)
    far[2, 3] += 300.0
    found = register_rigid(fixed, Volume(case.moving.array, far))
    assert found.verdict is Verdict.FAIL
    assert found.quality.overlap_fraction == 0.0


def test_result_is_immutable_and_records_provenance(patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = patient
    case = scene(model, fixed, np.eye(4), slices=10, metal=False)
    found = register_rigid(case.fixed, case.moving, levels_mm=(4.0, 2.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.quality = found.quality  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        found.moving_to_fixed[0, 3] = 1.0
    assert found.provenance.stage == "registration.rigid"
    assert found.provenance.parameters["levels_mm"] == [4.0, 2.0]
    assert found.provenance.seconds > 0 and len(found.levels) == 2
    np.testing.assert_allclose(found.map_points(case.gtv_points_scan_mm[:1]),
                               case.gtv_points_scan_mm[:1] @ found.moving_to_fixed[:3, :3].T
                               + found.moving_to_fixed[:3, 3])  # fmt: skip


def test_bad_arguments_are_rejected(patient: tuple[PatientModel, Volume]) -> None:
    _, fixed = patient
    with pytest.raises(ValueError, match="unknown registration option"):
        register_rigid(fixed, fixed, levels=(4.0,))
    with pytest.raises(ValueError, match="rigid"):
        register_rigid(fixed, fixed, initial_moving_to_fixed=np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="Volume"):
        register_rigid(fixed, fixed.array)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="levels_mm"):
        RegistrationOptions(levels_mm=())
