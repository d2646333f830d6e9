"""The simulated planner and the case folder: read back, dose, safe needle paths, layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.rtplan import read_rtplan
from guidance.dicomio.rtstruct import read_rtstruct
from guidance.dose import cumulative_dvh, dose_of_plan
from guidance.plan import Plan
from guidance.volume import Grid
from simulators.case import FORBIDDEN, PlanOptions, phantom_config
from simulators.cli import main
from simulators.phantom import build_model, planning_grid, structure_masks

SEED = 1


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("case")
    assert (
        main(
            [
                "case",
                "--out",
                str(out),
                "--seed",
                str(SEED),
                "--scenario",
                "standard",
                "--size",
                "small",
                "--location",
                "neck_node",
                "--prescription-gy",
                "140",
                "--activity-mci",
                "0.5",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def summary(case_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case_dir / "case.json").read_text())
    return data


@pytest.fixture(scope="module")
def plan(case_dir: Path) -> Plan:
    structures = read_rtstruct(case_dir / "plan" / "RS").structures
    return read_rtplan(case_dir / "plan" / "RP", structures=structures)


def test_layout_and_summary(case_dir: Path, summary: dict[str, Any]) -> None:
    assert [p.name for p in sorted((case_dir / "plan").iterdir())] == ["CT", "RP", "RS"]
    assert len(list((case_dir / "plan" / "CT").glob("*.dcm"))) == 40
    scans = sorted((case_dir / "scans").iterdir())
    assert [p.name for p in scans] == [f"{k:02d}" for k in range(1, len(scans) + 1)]
    assert len(scans) == 3  # needles in; half the needles withdrawn; all withdrawn
    for folder in scans:
        assert (folder / "truth.json").is_file()
    assert summary["seed"] == SEED and summary["scenario"] == "standard" and summary["size"] == "small"
    assert summary["plan"]["feasibility"] == "reached"
    assert summary["plan"]["strength_u"] == pytest.approx(0.5 * 1.270)


def test_plan_objects_read_back_and_link(case_dir: Path, plan: Plan) -> None:
    ct = read_ct_series(case_dir / "plan" / "CT")
    assert ct.shape == (40, 256, 256)
    np.testing.assert_allclose(ct.spacing_mm, [2.0, 1.0, 1.0])
    structure_set = read_rtstruct(case_dir / "plan" / "RS")
    assert {"BODY", "GTV", "SpinalCord", "Mandible", "Vertebrae"} <= set(structure_set.names)
    assert plan.frame_of_reference_uid == ct.frame_of_reference_uid == structure_set.frame_of_reference_uid
    assert plan.prescription_gy == 140.0
    assert plan.sources["6711"].isotope.value == "I-125"
    assert plan.strength_reference_datetime is not None
    np.testing.assert_allclose(plan.seed_strengths_u, 0.635)
    files = sorted((case_dir / "plan").rglob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({str(d.StudyInstanceUID) for d in datasets}) == 1
    assert len({str(d.FrameOfReferenceUID) for d in datasets if "FrameOfReferenceUID" in d}) == 1
    rs = next(d for d in datasets if d.Modality == "RTSTRUCT")
    rp = next(d for d in datasets if d.Modality == "RTPLAN")
    assert rp.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert rp.BrachyTreatmentType == "LDR" and rp.RTPlanGeometry == "PATIENT"


def test_plan_reaches_prescription(plan: Plan, summary: dict[str, Any]) -> None:
    assert len(plan.seeds) == summary["plan"]["n_seeds"] >= 5
    assert len(plan.needles) == summary["plan"]["n_needles"] >= 2
    gtv = plan.structure("GTV")
    bounds = gtv.bounds_mm()
    grid = Grid.from_bounds(bounds[0] - 5.0, bounds[1] + 5.0, 1.0, plan.frame_of_reference_uid)
    dose = dose_of_plan(plan, grid)
    d90 = cumulative_dvh(dose, gtv).dose_at_percent(90.0)
    assert d90 >= plan.prescription_gy
    assert d90 == pytest.approx(summary["plan"]["d90_gy"], rel=0.05)


def test_needles_enter_at_skin_and_avoid_forbidden(plan: Plan) -> None:
    config = phantom_config("small", frame_of_reference_uid=plan.frame_of_reference_uid)
    grid = planning_grid(config)
    masks = structure_masks(build_model(config, SEED), grid)
    forbidden = np.zeros(grid.shape, dtype=bool)
    for name in FORBIDDEN:
        forbidden |= masks[name]
    body = masks["BODY"]
    directions = set()
    for k, needle in enumerate(plan.needles):
        depth = np.arange(0.0, needle.length_mm, 0.25)
        path = needle.entry_mm + depth[:, None] * needle.direction
        index = np.rint(grid.patient_to_index(path)).astype(int)
        assert not forbidden[tuple(index.T)].any(), f"needle {k} crosses a forbidden structure"
        assert body[tuple(index.T)].all(), f"needle {k} leaves the body"
        outside = (
            np.rint(grid.patient_to_index(needle.entry_mm - 1.5 * needle.direction)).astype(int).reshape(3)
        )
        assert not body[tuple(outside)], f"needle {k} does not enter at the skin"
        seeds = [plan.seeds[i] for i in needle.seed_indices]
        depths = [float(np.dot(s.position_mm - needle.entry_mm, needle.direction)) for s in seeds]
        assert all(s.needle_index == k for s in seeds)
        assert depths == sorted(depths, reverse=True)  # tip first
        assert np.all(np.diff(depths) <= -5.0 + 1e-6) and max(depths) <= needle.length_mm + 1e-6
        for s in seeds:
            assert abs(float(np.dot(s.direction, needle.direction))) == pytest.approx(1.0)
        directions.add(tuple(np.round(needle.direction, 3)))
    assert len(directions) >= 2  # non-coplanar: tracks from several directions of the cone


def test_plan_options_are_validated() -> None:
    with pytest.raises(ValueError, match="prescription_gy"):
        PlanOptions(prescription_gy=100.0)
    with pytest.raises(ValueError, match="activity_mci"):
        PlanOptions(activity_mci=1.0)
    assert PlanOptions(activity_mci=0.4).strength_u == pytest.approx(0.508)
