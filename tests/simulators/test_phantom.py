"""The synthetic head-and-neck patient: determinism, volumes, anatomy, tissue values, geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from guidance.rasterise import structure_mask, structure_volume_cc
from guidance.structure import StructureRole
from guidance.volume import Grid
from simulators import anatomy
from simulators.phantom import (
    Patient,
    PatientModel,
    PhantomConfig,
    TumourLocation,
    make_patient,
    planning_grid,
    render_patient,
)

SMALL = PhantomConfig(rows=128, columns=128, pixel_spacing_mm=1.5, slice_thickness_mm=3.0, slices=30)


@pytest.fixture(scope="module")
def patient() -> Patient:
    return make_patient(SMALL, seed=3, location="nasopharynx", gtv_volume_cc=10.0)


def hu_at(model: PatientModel, point: tuple[float, float, float]) -> float:
    """HU of the model at one point: a one-voxel grid centred on it."""
    affine = np.eye(4)
    affine[:3, 3] = point
    return float(render_patient(model, Grid((1, 1, 1), affine))[0, 0, 0])


def test_same_seed_gives_identical_patient_and_another_seed_does_not(patient: Patient) -> None:
    again = make_patient(SMALL, seed=3, location="nasopharynx", gtv_volume_cc=10.0)
    assert np.array_equal(again.ct.array, patient.ct.array)
    assert [s.name for s in again.structures] == [s.name for s in patient.structures]
    for a, b in zip(again.structures, patient.structures, strict=True):
        assert len(a.contours_mm) == len(b.contours_mm)
        assert all(np.array_equal(x, y) for x, y in zip(a.contours_mm, b.contours_mm, strict=True))
    other = make_patient(SMALL, seed=4, location="nasopharynx", gtv_volume_cc=10.0)
    assert not np.array_equal(other.ct.array, patient.ct.array)


def test_structures_roles_and_all_inside_body(patient: Patient) -> None:
    by_name = {s.name: s for s in patient.structures}
    assert by_name["GTV"].role is StructureRole.TARGET
    assert by_name["BODY"].role is StructureRole.EXTERNAL
    expected_oars = {"SpinalCord", "Mandible", "Vertebrae", "Parotid_L", "Parotid_R", "Carotid_L", "Airway"}
    assert expected_oars <= set(by_name)
    assert all(by_name[n].role is StructureRole.ORGAN_AT_RISK for n in expected_oars)
    grid = patient.ct.grid
    body = structure_mask(by_name["BODY"], grid)
    for structure in patient.structures:
        mask = structure_mask(structure, grid)
        assert mask.any(), structure.name
        assert not np.any(mask & ~body), f"{structure.name} reaches outside BODY"


@pytest.mark.parametrize(
    ("volume_cc", "location"),
    [(1.5, "neck_node"), (20.0, "oral_cavity"), (60.0, "parotid_bed"), (140.0, "neck_node")],
)
def test_gtv_volume_is_what_was_asked(volume_cc: float, location: str) -> None:
    config = PhantomConfig(
        rows=192, columns=192, pixel_spacing_mm=1.0, slice_thickness_mm=2.0, slices=55, centre_z_mm=0.0
    )
    made = make_patient(config, seed=11, gtv_volume_cc=volume_cc, location=location)
    gtv = next(s for s in made.structures if s.name == "GTV")
    assert made.gtv_volume_cc == pytest.approx(volume_cc, rel=1e-9)  # analytic volume
    measured = structure_volume_cc(gtv, made.ct.grid)
    assert measured == pytest.approx(volume_cc, rel=0.05)


@pytest.mark.parametrize("location", list(TumourLocation))
def test_gtv_sits_where_its_location_says(location: TumourLocation) -> None:
    made = make_patient(SMALL, seed=5, location=location, gtv_volume_cc=8.0, side="right")
    gtv = next(s for s in made.structures if s.name == "GTV")
    x, y, z = gtv.points_mm.mean(axis=0)
    if location is TumourLocation.NASOPHARYNX:
        assert abs(x) < 15 and z > 35
    elif location is TumourLocation.NECK_NODE:
        assert x < -20 and z < 5
    elif location is TumourLocation.ORAL_CAVITY:
        assert abs(x) < 15 and y < -5 and 5 < z < 35
    else:
        assert x < -35 and y > 0 and z > 15
        names = {s.name for s in made.structures}
        assert "Parotid_R" not in names and "Parotid_L" in names  # resected gland of that side


def test_tissue_values_at_known_points(patient: Patient) -> None:
    model = patient.model
    p = model.anatomy
    z_neck = -24.0  # neck level, middle of a vertebral body (discs at multiples of 16 mm)
    width = p.neck_half_width_mm
    assert -125 < hu_at(model, (width - 5.0, p.neck_centre_y_mm, z_neck)) < -75  # subcutaneous fat
    assert 30 < hu_at(model, (-(width - 20.0), p.neck_centre_y_mm - 10.0, z_neck)) < 70  # muscle
    assert hu_at(model, (0.0, p.vertebra_y_mm, z_neck)) > 300  # cancellous bone
    assert hu_at(model, (0.0, p.vertebra_y_mm - 8.0 + 0.7, z_neck)) > 1000  # cortical shell
    assert 15 < hu_at(model, (0.0, p.canal_y_mm, z_neck)) < 55  # spinal cord
    ys = np.linspace(-30.0, 20.0, 201, dtype=np.float32)
    airway = anatomy.part_distance_mm("Airway", p, np.zeros_like(ys), ys, np.full_like(ys, z_neck))
    assert hu_at(model, (0.0, float(ys[np.argmin(airway)]), z_neck)) < -900  # trachea
    assert hu_at(model, (0.0, -150.0, 0.0)) == pytest.approx(-1000.0, abs=20)  # outside
    # The mandible exists only in the upper slices.
    chin = (0.0, p.mandible_centre_y_mm - p.mandible_half_depth_mm, 25.0)
    assert hu_at(model, chin) > 300
    assert hu_at(model, (chin[0], chin[1], -20.0)) < 100


def test_texture_is_mild_and_smooth(patient: Patient) -> None:
    model = patient.model
    p = model.anatomy
    xs = np.linspace(-25.0, -10.0, 16)  # muscle between the airway and the vessels
    values = np.array([hu_at(model, (x, p.neck_centre_y_mm - 10.0, -24.0)) for x in xs])
    assert 1.0 < np.ptp(values) < 25.0
    assert np.max(np.abs(np.diff(values))) < 3.0  # 1 mm steps of a >= 25 mm wave


def test_rendering_in_a_moved_scan_frame_shows_the_same_patient(patient: Patient) -> None:
    model = patient.model
    angle = math.radians(7.0)
    transform = np.eye(4)
    transform[:3, :3] = [
        [math.cos(angle), -math.sin(angle), 0],
        [math.sin(angle), math.cos(angle), 0],
        [0, 0, 1],
    ]
    transform[:3, 3] = [4.3, -2.1, 6.0]
    grid = planning_grid(SMALL)
    moved = Grid(grid.shape, transform @ grid.affine)  # the same voxels, seen from the scan frame
    same = render_patient(model, moved, planning_to_scan=transform)
    assert np.mean(np.isclose(same, patient.ct.array, atol=0.01)) > 0.999
    # A known point: the vertebral body centre, sampled in the scan frame.
    point = np.array([0.0, model.anatomy.vertebra_y_mm, -24.0, 1.0])
    affine = np.eye(4)
    affine[:3, 3] = (transform @ point)[:3]
    scanned = render_patient(model, Grid((1, 1, 1), affine), planning_to_scan=transform)[0, 0, 0]
    assert scanned == pytest.approx(hu_at(model, tuple(point[:3])), abs=0.01)
    # A shifted grid of the same spacing samples the same voxel values where they coincide (up to
    # the texture's interpolation between its ~3 mm nodes, which are the grid's own).
    shifted = Grid(grid.shape, grid.affine @ _index_shift(3, -5, 7))
    values = render_patient(model, shifted)
    assert np.mean(np.isclose(values[:-3, 5:, :-7], patient.ct.array[3:, :-5, 7:], atol=1.0)) > 0.999


def _index_shift(ds: int, dr: int, dc: int) -> np.ndarray:
    shift = np.eye(4)
    shift[:3, 3] = [ds, dr, dc]
    return shift


def test_default_configuration_is_a_512_planning_ct() -> None:
    grid = planning_grid(PhantomConfig())
    assert grid.shape == (60, 512, 512)
    assert np.allclose(grid.spacing_mm, [2.0, 0.7, 0.7])
    assert np.allclose(grid.axes, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])  # axial, LPS


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="gtv_volume_cc"):
        PhantomConfig(gtv_volume_cc=500.0)
    with pytest.raises(ValueError, match="slice_thickness_mm"):
        PhantomConfig(slice_thickness_mm=8.0)
    with pytest.raises(ValueError, match="nowhere"):
        PhantomConfig(location="nowhere")
