"""The viewer's geometry and scene, without Qt: frames, display grids, warnings, reader, manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from guidance.plan import Plan
from guidance.session import ScanData
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume
from viewer.geometry import NAPARI_FROM_LPS, display_grid, napari_affine, plan_mapping
from viewer.scene import build_scene


def _rotation_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return m


def test_napari_affine_puts_superior_posterior_left_in_napari_order() -> None:
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, 2.5]  # slices towards superior
    affine[:3, 1] = [0.0, 0.7, 0.0]  # rows towards posterior
    affine[:3, 2] = [0.7, 0.0, 0.0]  # columns towards patient left
    affine[:3, 3] = [-100.0, -90.0, 30.0]
    world = napari_affine(affine) @ np.array([2.0, 10.0, 20.0, 1.0])
    # z (S) = 30 + 2 * 2.5, y (P) = -90 + 10 * 0.7, x (L) = -100 + 20 * 0.7
    np.testing.assert_allclose(world[:3], [35.0, -83.0, -86.0])
    np.testing.assert_array_equal(NAPARI_FROM_LPS @ NAPARI_FROM_LPS, np.eye(4))


def test_plan_mapping_inverts_the_registration_and_refuses_a_failed_one() -> None:
    scan_to_plan = _rotation_z(3.0)
    scan_to_plan[:3, 3] = [4.0, -2.0, 7.0]
    registration = {"scan_to_plan_matrix_mm": scan_to_plan.tolist(), "used": True, "verdict": "pass"}
    mapping = plan_mapping({"registration": registration})
    point_scan = np.array([[10.0, 20.0, 30.0]])
    point_plan = point_scan @ scan_to_plan[:3, :3].T + scan_to_plan[:3, 3]
    np.testing.assert_allclose(mapping.to_scan(point_plan), point_scan, atol=1e-9)
    assert mapping.registered and mapping.verdict == "pass"

    failed = plan_mapping({"registration": {**registration, "used": False, "verdict": "fail",
                                            "reasons": ["bone NCC 0.2"]}})  # fmt: skip
    assert not failed.registered
    np.testing.assert_array_equal(failed.plan_to_scan, np.eye(4))
    assert "bone NCC 0.2" in failed.reasons
    assert plan_mapping({"registration": None}).verdict == "missing"


def test_display_grid_shares_the_scan_slices_and_covers_the_box() -> None:
    scan = Grid.from_bounds([-100, -100, -30], [100, 100, 30], [0.5, 0.5, 3.0])
    box = np.array([[-20.0, -10.0, -7.0], [15.0, 12.0, 8.0]])
    grid = display_grid(scan, [box], spacing_mm=1.0, margin_mm=0.0)
    assert grid is not None
    np.testing.assert_allclose(grid.spacing_mm, [3.0, 1.0, 1.0])
    # every display slice is a scan slice: its slice index in the scan is an integer
    slices = scan.patient_to_index(grid.index_to_patient(np.column_stack(
        [np.arange(grid.shape[0]), np.zeros(grid.shape[0]), np.zeros(grid.shape[0])])))[:, 0]  # fmt: skip
    np.testing.assert_allclose(slices, np.round(slices), atol=1e-9)
    bounds = grid.bounds_mm()
    assert np.all(bounds[0] <= box[0] + [0.0, 0.0, 3.0]) and np.all(bounds[1] >= box[1] - [0.0, 0.0, 3.0])
    assert display_grid(scan, [box + np.array([0.0, 0.0, 500.0])], spacing_mm=1.0) is None


def _disc(centre: np.ndarray, radius: float, z_values: np.ndarray) -> tuple[np.ndarray, ...]:
    angles = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
    return tuple(
        np.column_stack(
            [centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles), np.full(32, z)]
        )
        for z in z_values
    )


def test_scene_maps_the_plan_through_the_registration_and_finds_the_cold_region() -> None:
    """A target centred at plan (10, 0, 0) lies at scan (0, 0, 0) when scan_to_plan shifts x by +10 mm."""
    scan = Volume(
        np.zeros((21, 81, 81), np.float32), Grid.from_bounds([-40, -40, -20], [40, 40, 20], 1.0).affine
    )
    target = Structure(
        "GTV", StructureRole.TARGET, _disc(np.array([10.0, 0.0]), 10.0, np.arange(-8.0, 9.0, 2.0))
    )
    plan = Plan(frame_of_reference_uid="", seeds=(), structures=(target,), prescription_gy=100.0)
    dose_grid = Grid.from_bounds([-30, -30, -20], [50, 30, 20], 2.0)
    centres = dose_grid.voxel_centres_mm()
    # 200 Gy on the target's patient-left half (x > 10), 50 Gy on its right half: the cold region is x < 10.
    dose = Volume(np.where(centres[..., 0] > 10.0, 200.0, 50.0).astype(np.float32), dose_grid.affine)
    shift = np.eye(4)
    shift[0, 3] = 10.0
    result = {
        "registration": {"scan_to_plan_matrix_mm": shift.tolist(), "used": True, "verdict": "pass"},
        "coverage": {"cold_spots": [{"rank": 1, "volume_cc": 1.0, "centroid_plan_mm": [5.0, 0.0, 0.0]}]},
    }
    scene = build_scene(ScanData(1, scan, result, dose), plan)
    assert scene.mapping.registered and not scene.warnings
    # the cold spot (plan x = 5) is at scan x = -5: column 35 of the scan, slice 20 (z = 0)
    np.testing.assert_allclose(scene.cold_spots.coords, [[20.0, 40.0, 35.0]], atol=1e-9)
    assert scene.dose_grid is not None and scene.cold_labels is not None
    cold_mm = scene.dose_grid.index_to_patient(np.argwhere(scene.cold_labels))
    assert cold_mm.shape[0] > 50
    assert np.all(cold_mm[:, 0] < 0.5) and np.all(np.hypot(cold_mm[:, 0], cold_mm[:, 1]) <= 10.5)
    assert {*scene.isodose.features["percent"]} >= {100, 150}
    structures = scene.outline_grid
    assert structures is not None
    outline_mm = structures.index_to_patient(np.concatenate(scene.outlines.paths))
    np.testing.assert_allclose(np.hypot(outline_mm[:, 0], outline_mm[:, 1]).mean(), 10.0, atol=1.0)

    failed = build_scene(
        ScanData(
            1,
            scan,
            {**result, "registration": {**result["registration"], "used": False, "verdict": "fail"}},
            dose,
        ),
        plan,
    )
    assert failed.warnings[0].startswith("PLAN NOT REGISTERED")


def test_reader_claims_session_folders_only(tmp_path: Path) -> None:
    from viewer.reader import get_reader, read_session

    assert get_reader(str(tmp_path)) is None
    (tmp_path / "session.json").write_text("{}")
    assert get_reader(str(tmp_path)) is read_session
    assert get_reader([str(tmp_path), str(tmp_path)]) is None


def test_manifest_is_valid_and_registered() -> None:
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(Path(__file__).parents[2] / "viewer" / "napari.yaml")
    assert manifest.name == "seedguide"
    assert manifest.contributions.readers[0].accepts_directories
    assert npe2.PluginManifest.from_distribution("seedguide").name == "seedguide"


def test_canonical_volume_keeps_every_voxel_in_place() -> None:
    from viewer.geometry import canonical_volume

    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, -2.0]  # slices head to foot
    affine[:3, 1] = [-1.0, 0.0, 0.0]  # rows towards the patient's right
    affine[:3, 2] = [0.0, 0.5, 0.0]  # columns towards posterior
    affine[:3, 3] = [10.0, -20.0, 30.0]
    volume = Volume(np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32), affine)
    canonical = canonical_volume(volume)
    assert canonical.shape == (4, 6, 5)
    napari_axes = NAPARI_FROM_LPS[:3, :3] @ canonical.affine[:3, :3]
    np.testing.assert_allclose(napari_axes, np.diag([2.0, 0.5, 1.0]))
    for index in ([0, 0, 0], [3, 4, 5], [1, 2, 3]):
        position = volume.index_to_patient(index)
        new = np.round(canonical.patient_to_index(position)[0]).astype(int)
        assert canonical.array[tuple(new)] == volume.array[tuple(index)]
