"""Cold and hot spots on a contoured sphere covered by a 7-seed lattice, with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from guidance.coverage import ColdSpotReport, find_cold_spots
from guidance.dose import DoseLimits, cumulative_dvh, dose_on_grid
from guidance.plan import Needle
from guidance.structure import StructureRole
from guidance.volume import Grid, Volume
from tests.guidance.dose.dvh_phantoms import sphere
from tests.guidance.planning import phantoms

PRESCRIPTION_GY = 140.0
STRENGTH_U = 3.2  # the full lattice's minimum dose in the sphere is then about 145 Gy
RADIUS_MM = 15.0
LATTICE_MM = np.array(
    [[0, 0, 0], [10, 0, 0], [-10, 0, 0], [0, 10, 0], [0, -10, 0], [0, 0, 10], [0, 0, -10]], dtype=np.float64
)
MISSING = 1  # the seed at (10, 0, 0)
AXIS = np.array([0.0, 1.0, 0.0])
# Needles along +y through each seed column (x, z), entering at the body's face y = -39 mm.
COLUMNS_MM = [(0.0, 0.0), (10.0, 0.0), (-10.0, 0.0), (0.0, 10.0), (0.0, -10.0)]
NEEDLES = tuple(Needle(np.array([x, -39.0, z]), np.array([x, 15.0, z])) for x, z in COLUMNS_MM)


def _dose(keep: list[int], factors: dict[int, float] | None = None) -> Volume:
    grid = Grid.from_bounds([-24.0] * 3, [24.0] * 3, 2.0)
    strengths = np.full(LATTICE_MM.shape[0], STRENGTH_U)
    for index, factor in (factors or {}).items():
        strengths[index] *= factor
    directions = np.tile(AXIS, (len(keep), 1))
    return dose_on_grid(grid, LATTICE_MM[keep], directions, strengths[keep], "6711")


@pytest.fixture(scope="module")
def full_dose() -> Volume:
    return _dose(list(range(7)))


@pytest.fixture(scope="module")
def missing_dose() -> Volume:
    return _dose([k for k in range(7) if k != MISSING])


@pytest.fixture(scope="module")
def missing_report(missing_dose: Volume) -> ColdSpotReport:
    body = phantoms.body(phantoms.grid())
    return find_cold_spots(missing_dose, sphere(RADIUS_MM), PRESCRIPTION_GY, body=body, needles=NEEDLES)


def test_fully_covered_target_has_no_cold_spot(full_dose: Volume) -> None:
    report = find_cold_spots(full_dose, sphere(RADIUS_MM), PRESCRIPTION_GY, min_volume_cc=0.0)
    assert report.cold_spots == ()
    assert report.covered and report.cold_volume_cc == 0.0
    assert report.v100_percent == pytest.approx(100.0)
    assert not report.labels.array.any()


def test_missing_seed_gives_one_cold_spot_at_its_place(
    missing_dose: Volume, missing_report: ColdSpotReport
) -> None:
    (spot,) = missing_report.cold_spots
    assert np.linalg.norm(spot.centroid_mm - LATTICE_MM[MISSING]) < 4.0
    assert spot.centroid_mm[0] > LATTICE_MM[MISSING][0]  # towards the surface the seed no longer reaches
    curve = cumulative_dvh(missing_dose, sphere(RADIUS_MM))
    cold_cc = curve.total_volume_cc - curve.volume_cc_at(PRESCRIPTION_GY)
    assert spot.volume_cc == pytest.approx(cold_cc, rel=0.2)
    # a few corner voxels below 0.05 cc are counted in the cold volume but not listed
    assert spot.volume_cc <= missing_report.cold_volume_cc < spot.volume_cc + 0.05
    assert spot.min_dose_gy == pytest.approx(curve.min_dose_gy, rel=0.05)
    assert spot.min_dose_gy <= spot.mean_dose_gy < PRESCRIPTION_GY
    assert missing_report.d90_gy == pytest.approx(curve.dose_at_percent(90.0), rel=0.02)
    assert missing_report.target_volume_cc == pytest.approx(curve.total_volume_cc, rel=0.02)
    assert missing_report.v100_percent == pytest.approx(curve.volume_percent_at(PRESCRIPTION_GY), abs=1.0)
    # D90 (about 160 Gy) is above the prescription: raising the spot to 140 Gy cannot move it.
    assert spot.d90_gain_gy == 0.0


def test_cold_spot_geometry_depth_and_needle(missing_report: ColdSpotReport) -> None:
    (spot,) = missing_report.cold_spots
    assert np.all(spot.bounds_mm[0] <= spot.centroid_mm) and np.all(spot.centroid_mm <= spot.bounds_mm[1])
    assert spot.bounds_mm[1, 0] <= RADIUS_MM + 1.0
    # A cap of the sphere: thin along x (its first axis is the longest, in the y-z plane).
    assert abs(spot.principal_axes[2] @ [1.0, 0.0, 0.0]) > 0.95
    assert spot.principal_extents_mm[2] < spot.principal_extents_mm[0]
    np.testing.assert_allclose(np.linalg.norm(spot.principal_axes, axis=1), 1.0)
    # Skin at x = +39 mm (midway between the last body voxel, 38, and the first outside, 40).
    assert spot.depth_mm == pytest.approx(39.0 - spot.centroid_mm[0], abs=1.0)
    assert spot.min_depth_mm is not None and spot.depth_mm is not None
    assert spot.min_depth_mm < spot.depth_mm
    assert spot.nearest_needle_index == MISSING
    expected = float(np.hypot(spot.centroid_mm[0] - 10.0, spot.centroid_mm[2]))
    assert spot.nearest_needle_distance_mm == pytest.approx(expected, abs=1e-6)
    assert spot.nearest_organ == "" and spot.nearest_organ_distance_mm is None
    labels = missing_report.labels.array
    assert missing_report.labels.grid.same_geometry(missing_report.grid)
    assert np.array_equal(
        np.argwhere(labels == 1), spot.voxel_indices[np.lexsort(spot.voxel_indices.T[::-1])]
    )
    assert spot.to_dict()["n_voxels"] == spot.voxel_indices.shape[0]


def test_hot_spot_in_an_organ_next_to_a_seed(full_dose: Volume) -> None:
    grid = phantoms.grid()
    organ = phantoms.box_mask(grid, [18.0, -4.0, -4.0], [26.0, 4.0, 4.0])  # 8 mm beyond the seed at x = 10
    limits = DoseLimits(by_name={"cord": {"d0_1cc_gy": 100.0}})
    report = find_cold_spots(
        full_dose, sphere(RADIUS_MM), PRESCRIPTION_GY, organs={"cord": organ}, limits=limits
    )
    cord = [h for h in report.hot_spots if h.structure_name == "cord"]
    assert len(cord) == 1
    (hot,) = cord
    assert hot.role is StructureRole.ORGAN_AT_RISK and hot.metric == "d0_1cc_gy"
    assert hot.limit_exceeded and hot.volume_cc > 0.1
    assert hot.max_dose_gy > 100.0 and hot.threshold_gy == 100.0
    centres = report.grid.index_to_patient(hot.voxel_indices.astype(np.float64))
    assert np.all(centres[:, 0] >= 17.0) and np.all(centres[:, 0] <= 27.0)
    assert centres[:, 0].min() < 20.0  # the hot part is the side facing the seed
    relaxed = DoseLimits(by_name={"cord": {"d0_1cc_gy": 1000.0}})
    quiet = find_cold_spots(
        full_dose, sphere(RADIUS_MM), PRESCRIPTION_GY, organs={"cord": organ}, limits=relaxed
    )
    assert not [h for h in quiet.hot_spots if h.structure_name == "cord"]
    target_hot = [h for h in report.hot_spots if h.role is StructureRole.TARGET]
    assert target_hot and all(h.threshold_gy == 2.0 * PRESCRIPTION_GY for h in target_hot)
    assert all(h.max_dose_gy > 2.0 * PRESCRIPTION_GY and not h.limit_exceeded for h in target_hot)


def test_nearest_organ(missing_dose: Volume) -> None:
    organ = phantoms.box_mask(phantoms.grid(), [18.0, -4.0, -4.0], [26.0, 4.0, 4.0])
    report = find_cold_spots(missing_dose, sphere(RADIUS_MM), PRESCRIPTION_GY, organs={"cord": organ})
    (spot,) = report.cold_spots
    assert spot.nearest_organ == "cord"
    assert spot.nearest_organ_distance_mm is not None
    assert 2.0 <= spot.nearest_organ_distance_mm <= 6.0  # cold voxels reach x = 14, the organ starts at 18


def test_ranking_of_two_cold_spots() -> None:
    # Seed at +x missing, seed at -x at half strength: a large spot at +x, smaller ones at -x.
    dose = _dose([k for k in range(7) if k != MISSING], factors={2: 0.5})
    report = find_cold_spots(dose, sphere(RADIUS_MM), 150.0)
    spots = report.cold_spots
    assert len(spots) >= 2
    assert [s.rank for s in spots] == list(range(1, len(spots) + 1))
    assert spots[0].centroid_mm[0] > 5.0 and all(s.centroid_mm[0] < -5.0 for s in spots[1:])
    assert spots[0].volume_cc > max(s.volume_cc for s in spots[1:])
    gains = [s.d90_gain_gy for s in spots]
    assert gains[0] > 0 and gains == sorted(gains, reverse=True)
    assert report.d90_gy < 150.0


def test_fine_sampling_agrees(missing_dose: Volume, missing_report: ColdSpotReport) -> None:
    fine = find_cold_spots(missing_dose, sphere(RADIUS_MM), PRESCRIPTION_GY, sampling_mm=1.0)
    (spot,) = fine.cold_spots
    assert fine.grid.spacing_mm == pytest.approx([1.0, 1.0, 1.0])
    curve = cumulative_dvh(missing_dose, sphere(RADIUS_MM))
    cold_cc = curve.total_volume_cc - curve.volume_cc_at(PRESCRIPTION_GY)
    assert spot.volume_cc == pytest.approx(cold_cc, rel=0.1)
    assert np.linalg.norm(spot.centroid_mm - missing_report.cold_spots[0].centroid_mm) < 1.5


def test_deterministic(missing_dose: Volume, missing_report: ColdSpotReport) -> None:
    again = find_cold_spots(
        missing_dose, sphere(RADIUS_MM), PRESCRIPTION_GY, body=phantoms.body(phantoms.grid()), needles=NEEDLES
    )
    assert [s.to_dict() for s in again.cold_spots] == [s.to_dict() for s in missing_report.cold_spots]
    assert np.array_equal(again.labels.array, missing_report.labels.array)
    assert again.provenance.stage == "cold_spots" and again.provenance.parameters["connectivity"] == 26


def test_bad_inputs(missing_dose: Volume) -> None:
    with pytest.raises(ValueError, match="prescription_gy"):
        find_cold_spots(missing_dose, sphere(RADIUS_MM), 0.0)
    with pytest.raises(ValueError, match="no volume inside the dose grid"):
        find_cold_spots(missing_dose, sphere(5.0, centre_mm=(100.0, 0.0, 0.0)), PRESCRIPTION_GY)
    with pytest.raises(TypeError, match="Structure"):
        find_cold_spots(missing_dose, "GTV", PRESCRIPTION_GY)  # type: ignore[arg-type]
