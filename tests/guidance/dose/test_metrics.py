"""Dose metrics: target coverage, COIN and DHI of analytic phantoms, organ limits and their
status, limit files, and the report of a whole plan (analytic and the real Oncentra plan)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from guidance.dicomio.rtdose import read_rtdose
from guidance.dicomio.rtstruct import read_rtstruct
from guidance.dose.dvh import DoseGridCoverageError, cumulative_dvh
from guidance.dose.engine import dose_on_grid
from guidance.dose.limits import DoseLimits, DoseLimitsError, LimitStatus, limit_status, load_dose_limits
from guidance.dose.metrics import dose_beyond_grid_gy, evaluate_plan_dose, organ_metrics, target_metrics
from guidance.structure import StructureRole
from guidance.volume import Grid, Volume
from tests.guidance.dose import dvh_phantoms as ph


@pytest.fixture(scope="module")
def dose() -> Volume:
    return ph.point_dose(Grid.from_bounds([-25] * 3, [25] * 3, 1.0))


def _isodose_radius_mm(dose_gy: float) -> float:
    return ph.R0_MM * math.sqrt(ph.D0_GY / dose_gy)


def _ball_cc(radius_mm: float) -> float:
    return 4 / 3 * math.pi * radius_mm**3 / 1000


@pytest.mark.parametrize("prescription_gy", [200.0, 50.0])
def test_coin_of_a_sphere_in_a_spherical_isodose(dose: Volume, prescription_gy: float) -> None:
    # The prescription isodose is a ball of radius R_rx: inside the target (200 Gy, 8.7 mm) it
    # covers part of it (c2 = 1); enclosing the target (50 Gy, 17.3 mm) c1 = 1, c2 = V_target / V_ball.
    report = evaluate_plan_dose(dose, [ph.sphere()], prescription_gy)
    (target,) = report.targets
    radius = _isodose_radius_mm(prescription_gy)
    whole_cc = ph.volume_within_cc(100.0)
    covered_cc = ph.volume_within_cc(radius)
    c1, c2 = covered_cc / whole_cc, covered_cc / _ball_cc(radius)
    assert target.c1 == pytest.approx(c1, rel=0.01)
    assert target.c2 == pytest.approx(c2, rel=0.01)
    assert target.coin == pytest.approx(c1 * c2, rel=0.015)
    assert target.reference_isodose_volume_cc == pytest.approx(_ball_cc(radius), rel=0.01)
    assert target.reference_volume_within == "dose grid" and not target.reference_isodose_truncated


def test_coverage_and_homogeneity_of_the_sphere(dose: Volume) -> None:
    (target,) = evaluate_plan_dose(dose, [ph.sphere()], 50.0).targets
    v150 = ph.exact_volume_percent_at(75.0)
    assert target.v100_percent == pytest.approx(100.0)
    assert target.v150_percent == pytest.approx(v150, abs=0.5)
    assert target.v200_percent == pytest.approx(ph.exact_volume_percent_at(100.0), abs=0.5)
    assert target.v150_cc == pytest.approx(target.v150_percent / 100 * target.volume_cc)
    assert target.dhi == pytest.approx(1 - v150 / 100, abs=0.006)
    assert target.d90_gy == pytest.approx(ph.exact_dose_at_percent(90), rel=0.005)
    assert target.d90_percent_of_prescription == pytest.approx(100 * target.d90_gy / 50.0)
    assert target.d50_gy > target.d90_gy > target.d100_gy


def test_the_body_outline_bounds_the_reference_isodose_volume(dose: Volume) -> None:
    body = ph.sphere(16.0, name="BODY", role=StructureRole.EXTERNAL, number=2)
    (target,) = evaluate_plan_dose(dose, [ph.sphere(), body], 50.0).targets
    assert target.reference_volume_within == "BODY"
    assert target.reference_isodose_volume_cc == pytest.approx(ph.volume_within_cc(100.0, 16.0), rel=0.01)
    assert target.c2 == pytest.approx(ph.volume_within_cc(100.0) / ph.volume_within_cc(100.0, 16.0), rel=0.01)


def test_organ_metrics_of_an_inner_ball(dose: Volume) -> None:
    # An "organ" centred on the source: its hottest v cc are the innermost balls of v cc.
    organ = organ_metrics(
        cumulative_dvh(dose, ph.sphere(12.0, name="core", role=StructureRole.ORGAN_AT_RISK))
    )
    for volume_cc, value in ((2.0, organ.d2cc_gy), (1.0, organ.d1cc_gy)):
        radius = (3 * volume_cc * 1000 / (4 * math.pi)) ** (1 / 3)
        # 6-8 mm from the source: trilinear bias (+0.4% at 6 mm) and lattice counting of 1-2 cc
        assert value == pytest.approx(ph.dose_at_distance(radius), rel=0.02)
    assert organ.d0_1cc_gy is not None and organ.dmax_gy > organ.d0_1cc_gy
    tiny = organ_metrics(cumulative_dvh(dose, ph.sphere(6.0, name="tiny", role=StructureRole.ORGAN_AT_RISK)))
    assert tiny.volume_cc < 1.0 and tiny.d2cc_gy is None and tiny.d1cc_gy is None
    assert tiny.d0_1cc_gy is not None


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (80.0, LimitStatus.PASS),
        (90.0, LimitStatus.PASS),
        (90.1, LimitStatus.WARN),
        (100.0, LimitStatus.WARN),
        (100.01, LimitStatus.FAIL),
        (None, LimitStatus.NOT_EVALUATED),
    ],
)
def test_limit_status_transitions(value: float | None, status: LimitStatus) -> None:
    assert limit_status(value, 100.0, 10.0) is status


def test_plan_report_checks_limits_with_a_prior_dose(dose: Volume) -> None:
    cord = ph.sphere(4.0, name="Cord", role=StructureRole.ORGAN_AT_RISK, centre_mm=(0.0, 19.0, 0.0), number=3)
    d0_1 = organ_metrics(cumulative_dvh(dose, cord)).d0_1cc_gy
    assert d0_1 is not None
    limits = DoseLimits(
        by_role={"organ_at_risk": {"dmean_gy": 1000.0, "d2cc_gy": 10.0}},
        by_name={"cord": {"d0_1cc_gy": d0_1 + 1.0}},
        warn_margin_percent=5.0,
    )
    report = evaluate_plan_dose(dose, [ph.sphere(), cord], 50.0, limits)
    statuses = {check.metric: check.status for check in report.checks}
    assert statuses == {
        "d0_1cc_gy": LimitStatus.WARN,
        "d2cc_gy": LimitStatus.NOT_EVALUATED,
        "dmean_gy": LimitStatus.PASS,
    }
    assert report.worst_status is LimitStatus.WARN
    reirradiated = limits.with_patient(prior_dose_gy={"Cord": {"d0_1cc_gy": 30.0}})
    check = next(
        c
        for c in evaluate_plan_dose(dose, [ph.sphere(), cord], 50.0, reirradiated).checks
        if c.metric == "d0_1cc_gy"
    )
    assert check.allowed_gy == pytest.approx(d0_1 + 1.0 - 30.0) and check.status is LimitStatus.FAIL
    text = json.dumps(report.to_dict())
    decoded = json.loads(text)
    assert decoded["worst_status"] == "warn"
    assert decoded["provenance"]["stage"] == "dose_metrics"
    assert decoded["provenance"]["parameters"]["sampling_mm"] == 0.5
    assert decoded["provenance"]["seconds"] > 0
    assert decoded["targets"][0]["d90_gy"] == pytest.approx(report.targets[0].d90_gy)
    assert len(report.dvhs) == 2


def test_a_target_outside_the_grid_or_missing_is_an_error(dose: Volume) -> None:
    with pytest.raises(DoseGridCoverageError, match="GTV"):
        evaluate_plan_dose(dose, [ph.sphere(centre_mm=(0.0, 0.0, 15.0))], 50.0)
    with pytest.raises(ValueError, match="no target"):
        evaluate_plan_dose(dose, [ph.sphere(role=StructureRole.ORGAN_AT_RISK)], 50.0)
    with pytest.raises(ValueError, match="prescription_gy"):
        evaluate_plan_dose(dose, [ph.sphere()], 0.0)
    curve = cumulative_dvh(dose, ph.sphere(centre_mm=(0.0, 0.0, 15.0)), allow_outside=True)
    with pytest.raises(ValueError, match="outside the dose grid"):
        target_metrics(curve, 50.0, 10.0)


def test_limits_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        "warn_margin_percent = 5\n[roles.organ_at_risk]\nd2cc_gy = 100.0\n"
        '[structures."Spinal Cord"]\nd0_1cc_gy = 45\nd2cc_gy = 40\n'
        '[prior_dose_gy."spinal cord"]\nd0_1cc_gy = 20.0\n',
        encoding="utf-8",
    )
    limits = load_dose_limits(path)
    assert limits.warn_margin_percent == 5.0
    assert limits.limits_for("SPINAL CORD ", "organ_at_risk") == {"d2cc_gy": 40.0, "d0_1cc_gy": 45.0}
    assert limits.limits_for("Rectum", StructureRole.ORGAN_AT_RISK) == {"d2cc_gy": 100.0}
    assert limits.prior_for("Spinal cord", "d0_1cc_gy") == 20.0
    patient = limits.with_patient(limits={"spinal cord": {"dmax_gy": 60.0}}, prior_dose_gy={})
    assert patient.limits_for("Spinal Cord", "organ_at_risk")["dmax_gy"] == 60.0
    assert patient.prior_for("spinal cord", "d0_1cc_gy") == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("warn_margin = 5\n", r"unknown key\(s\) \['warn_margin'\]"),
        ("[roles.organ]\nd2cc_gy = 1\n", "unknown role 'organ'"),
        ("[structures.cord]\nd3cc_gy = 1\n", "structures.cord: unknown metric 'd3cc_gy'"),
        ('[structures.cord]\nd2cc_gy = "high"\n', "structures.cord.d2cc_gy must be a finite number"),
        ("[structures.cord]\nd2cc_gy = -1\n", "must be >= 0"),
        ("warn_margin_percent = 120\n", "warn_margin_percent"),
        ("[structures.cord\n", "not valid TOML"),
    ],
)
def test_a_bad_limit_file_names_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DoseLimitsError, match=message) as error:
        load_dose_limits(path)
    assert str(path) in str(error.value)


def test_oncentra_plan_report(shared_data: Path) -> None:
    folder = shared_data / "brachy_ldr_i125_oncentra_mcbrachy"
    dose = read_rtdose(folder / "RTDOSE99.dcm")
    structures = read_rtstruct(folder / "RTSTRUCT109.dcm").structures
    limits = DoseLimits(by_name={"urethra": {"d0_1cc_gy": 217.5}, "rectum": {"d2cc_gy": 145.0}})
    report = evaluate_plan_dose(dose, structures, 144.0, limits)
    (target,) = report.targets
    assert target.structure_name == "target" and target.volume_cc == pytest.approx(25.8, abs=0.1)
    assert target.d90_gy == pytest.approx(124.4, abs=0.3)
    assert 80.0 < target.v100_percent < 87.0 and 0.0 < target.coin < target.c1 <= 1.0
    assert [o.structure_name for o in report.organs] == ["urethra", "bladder", "rectum", "bladder_neck"]
    # Most of the rectum lies outside the grid, but its hottest 2 cc are inside and hotter than
    # anything outside (the faces' maximum): its D0.1cc-D2cc are exact and need no note.
    rectum = next(c for c in report.dvhs if c.structure_name == "rectum")
    beyond = dose_beyond_grid_gy(dose)
    assert rectum.fraction_outside_grid > 0.5 and rectum.volume_cc_at(beyond) >= 2.0
    assert not any("rectum" in note and "outside the dose grid" in note for note in report.warnings)
    assert any("'dil' has no contours" in note for note in report.warnings)
    statuses = {(c.structure_name, c.metric): c.status for c in report.checks}
    # urethra D0.1cc 196.8 Gy is within 10% of 150% of the prescription: a warning
    assert statuses == {("urethra", "d0_1cc_gy"): LimitStatus.WARN, ("rectum", "d2cc_gy"): LimitStatus.PASS}


def test_an_organ_reaching_past_the_grid_is_noted_when_its_hottest_part_may_be_outside() -> None:
    """A 1 cm sphere of organ half outside a grid holding one seed: its D2cc is not all inside."""
    grid = Grid.from_bounds((-10.0, -10.0, -10.0), (10.0, 10.0, 10.0), 1.0, "1.2.3")
    dose = dose_on_grid(grid, np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]]), [0.762], "6711")
    target = ph.sphere(radius_mm=5.0)
    near = ph.sphere(10.0, name="organ", role=StructureRole.ORGAN_AT_RISK, centre_mm=(0, 0, 12.0), number=2)
    report = evaluate_plan_dose(dose, [target, near], 145.0)
    note = next(n for n in report.warnings if "'organ'" in n)
    assert f"may reach {dose_beyond_grid_gy(dose):.1f} Gy" in note
    array = np.asarray(dose.array)
    interior = array[1:-1, 1:-1, 1:-1].copy()
    array_faces_only = array.copy()
    array_faces_only[1:-1, 1:-1, 1:-1] = 0.0
    assert dose_beyond_grid_gy(dose) == pytest.approx(array_faces_only.max(), rel=1e-12)
    assert interior.max() > dose_beyond_grid_gy(dose)  # the seed is inside
