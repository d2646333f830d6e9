"""The real napari viewer on a virtual display: layers, live updates, pixels, navigation, shortcuts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from guidance.plan import Plan
from guidance.session import ScanData, SessionFolder
from guidance.volume import Volume
from viewer.layers import LAYER_NAMES, SessionLayers
from viewer.live import LiveView
from viewer.scene import COLD_SPOT_RGBA, ISODOSE_RGBA, build_scene
from viewer.session_view import SessionView, open_session, world_of

pytestmark = pytest.mark.viewer


def _canvas_pixel(viewer: Any, world: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int]:
    """Row and column of a world point (z, y, x) in a 2D canvas screenshot of ``shape``."""
    camera = viewer.scene.camera
    centre = np.asarray(camera.center)[-2:]
    row, col = (np.asarray(world)[-2:] - centre) * camera.zoom + np.asarray(shape[:2]) / 2.0
    return round(row), round(col)


def _screenshot(viewer: Any) -> np.ndarray:
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))


def _near(image: np.ndarray, rgba: tuple[float, ...], tolerance: int = 40) -> np.ndarray:
    target = np.asarray(rgba[:3]) * 255.0
    return np.all(np.abs(image[..., :3].astype(float) - target) <= tolerance, axis=-1)


def test_a_session_opens_with_all_layers_and_docks(viewer: Any, session_path: Path) -> None:
    view = open_session(session_path, viewer)
    assert view.current == 3  # the last analysed scan
    assert tuple(layer.name for layer in viewer.layers) == LAYER_NAMES
    record = SessionFolder.open(session_path).scans()[2]
    result = record.result()
    layers = view.layers
    assert layers is not None
    assert layers.ct.data.shape == record.load().scan.shape
    assert layers.dose.data.max() > (result["metrics"]["prescription_gy"])  # seeds are in
    assert len(layers.points["found"].data) == len(result["seeds"])
    assert len(layers.points["missing"].data) == len(result["match"]["missing_seed_indices"]) > 0
    assert len(layers.points["suggested"].data) == len(result["suggestions"]["seeds"]) > 0
    assert len(layers.cold_spots.data) == len(result["coverage"]["cold_spots"]) > 0
    assert len(layers.outlines.data) > 0 and len(layers.isodose.data) > 0
    assert {str(unit) for layer in viewer.layers for unit in layer.units} == {"millimeter"}
    assert "D90" in view.metrics.text() and view.metrics.statuses["GTV D90"] == "red"
    labels = [view.timeline.scans.item(i).text() for i in range(view.timeline.scans.count())]
    assert labels[0].startswith("scan 1: D90") and labels[1] == "scan 2: not analysed" and len(labels) == 3
    assert "PASS" in view.timeline.registration.text()
    assert view.dvh_dock.lines and view.dvh_dock.lines[0].name == "GTV"


def test_screenshot_shows_the_cold_spot_and_isodose_lines_around_the_target(
    viewer: Any, session_path: Path
) -> None:
    view = open_session(session_path, viewer, scan=3)
    layers, scene = view.layers, view.scene
    assert layers is not None and scene is not None
    spot_world = layers.cold_spots.data_to_world(layers.cold_spots.data[0])
    # Put the cold spot on screen but away from the centre, on its own slice.
    viewer.dims.set_point(0, spot_world[0])
    viewer.scene.camera.center = (spot_world[0], spot_world[1] - 12.0, spot_world[2] + 9.0)
    viewer.scene.camera.zoom = 6.0
    image = _screenshot(viewer)
    row, col = _canvas_pixel(viewer, spot_world, image.shape)
    assert abs(row - image.shape[0] / 2) > 40 and abs(col - image.shape[1] / 2) > 30
    patch = image[row - 3 : row + 4, col - 3 : col + 4]
    assert _near(patch, COLD_SPOT_RGBA).mean() > 0.8, patch[..., :3].reshape(-1, 3)[:5]

    # Isodose lines alone over the CT: their colours appear, ring the target, and go when hidden.
    for layer in viewer.layers:
        layer.visible = layer.name in ("CT", "isodose")
    lines = _screenshot(viewer)
    at_100 = _near(lines, ISODOSE_RGBA[100], 30)
    at_50 = _near(lines, ISODOSE_RGBA[50], 30)
    assert at_100.sum() > 100 and at_50.sum() > 100
    rows, cols = np.nonzero(at_100)
    target = view.bundle.plan.structures[1]
    assert target.name == "GTV"
    target_world = world_of(scene.mapping.to_scan(target.points_mm.mean(axis=0))[0])
    t_row, t_col = _canvas_pixel(viewer, np.asarray(target_world), lines.shape)
    # 100 % lines on both sides of the target centre, within 40 mm of it
    assert rows.min() < t_row < rows.max() and cols.min() < t_col < cols.max()
    assert np.hypot(rows - t_row, cols - t_col).max() < 40.0 * viewer.scene.camera.zoom
    layers.isodose.visible = False
    assert _near(_screenshot(viewer), ISODOSE_RGBA[100], 30).sum() < 5


def test_clicking_a_suggestion_moves_the_slice_and_camera_to_it(
    viewer: Any, session_path: Path, qtbot: Any
) -> None:
    from qtpy.QtCore import Qt

    view = open_session(session_path, viewer, scan=3)
    viewer.dims.set_point(0, viewer.dims.range[0].start)
    widget = view.suggestions
    item = widget.item(2)  # row 0 is the statement; row 2 is the second suggested seed
    qtbot.mouseClick(widget.viewport(), Qt.MouseButton.LeftButton, pos=widget.visualItemRect(item).center())
    seed = SessionFolder.open(session_path).scans()[2].result()["suggestions"]["seeds"][1]
    world = world_of(seed["position_scan_mm"])
    slice_step = float(view.scene.scan.grid.spacing_mm[0])  # type: ignore[union-attr]
    assert abs(viewer.dims.point[0] - world[0]) <= slice_step / 2 + 1e-6
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], world[1:], atol=1e-6)


def test_keyboard_shortcuts(viewer: Any, session_path: Path) -> None:
    from app_model.types import KeyBinding

    view = open_session(session_path, viewer, scan=3)

    def press(key: str) -> None:
        viewer.keymap[KeyBinding.from_str(key)](viewer)

    assert view.layers is not None
    press("Shift-D")
    assert not view.layers.dose.visible
    press("Shift-I")
    assert not view.layers.isodose.visible
    press("PageUp")
    assert view.current == 1  # scan 2 has no result: skipped
    press("PageDown")
    assert view.current == 3
    viewer.dims.set_point(0, viewer.dims.range[0].start)
    press("Shift-C")
    spot = view.layers.cold_spots.data_to_world(view.layers.cold_spots.data[0])
    assert abs(viewer.dims.point[0] - spot[0]) < 1.1


def test_published_results_update_the_layers_from_a_worker_thread(
    viewer: Any, session_path: Path, qtbot: Any
) -> None:
    session = SessionFolder.open(session_path)
    records = session.scans()
    first, third = records[0].load(), records[2].load()
    live = LiveView(viewer)
    try:
        live.set_plan(session.load_bundle())
        threading.Thread(target=live.publish, args=(first,)).start()
        qtbot.waitUntil(lambda: live.updates == 1, timeout=30_000)
        view = live.view
        assert view is not None and view.layers is not None and view.current == 1
        layers = {layer.name: layer for layer in viewer.layers}
        found_before = len(view.layers.points["found"].data)
        # the operator moves: another slice, another zoom
        viewer.dims.set_point(0, viewer.dims.range[0].start + 2 * viewer.dims.range[0].step)
        viewer.scene.camera.zoom = 3.3
        point, centre = viewer.dims.point[0], tuple(viewer.scene.camera.center)
        threading.Thread(target=live.publish, args=(third,)).start()
        qtbot.waitUntil(lambda: live.updates == 2, timeout=30_000)
        assert view.current == 3
        assert {
            layer.name: layer for layer in viewer.layers
        } == layers  # same layer objects, updated in place
        assert len(view.layers.points["found"].data) == len(third.result["seeds"]) != found_before
        assert view.layers.ct.data.shape == third.scan.shape
        assert abs(viewer.dims.point[0] - point) <= float(third.scan.grid.spacing_mm[0]) / 2 + 1e-6
        assert viewer.scene.camera.zoom == pytest.approx(3.3)
        np.testing.assert_allclose(viewer.scene.camera.center, centre)
        assert live.last_update_seconds is not None and live.last_update_seconds < 20.0
        qtbot.waitUntil(lambda: bool(view.dvh) and view.dvh[0].name == "GTV", timeout=30_000)
    finally:
        live.close()


def test_axial_view_is_radiological(viewer: Any) -> None:
    """A bright block on the patient's left shows on the right, an anterior one at the top.

    The columns are stored running towards the patient's right (negative x step): only the
    affine, not the array order, can put the block on the correct side.
    """
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, 2.0]
    affine[:3, 1] = [0.0, 1.0, 0.0]
    affine[:3, 2] = [-1.0, 0.0, 0.0]
    affine[:3, 3] = [50.0, -50.0, 0.0]
    scan = Volume(np.full((5, 101, 101), -1000.0, np.float32), affine)
    grid = scan.grid
    values = np.array(scan.array)
    left = grid.patient_to_index([[30.0, 0.0, 4.0]])[0].round().astype(int)  # patient left (+x)
    anterior = grid.patient_to_index([[0.0, -30.0, 4.0]])[0].round().astype(int)  # anterior (-y)
    values[:, left[1] - 5 : left[1] + 6, left[2] - 5 : left[2] + 6] = 1000.0
    values[:, anterior[1] - 3 : anterior[1] + 4, anterior[2] - 3 : anterior[2] + 4] = 1000.0
    scan = scan.with_array(values)
    scene = build_scene(ScanData(1, scan, {}, None), Plan(frame_of_reference_uid="", seeds=()))
    SessionLayers(viewer, scene)
    viewer.reset_view()
    image = _screenshot(viewer)
    bright = image[..., 0] > 200
    rows, cols = np.nonzero(bright)
    zoom = viewer.scene.camera.zoom
    centre_row, centre_col = _canvas_pixel(viewer, np.array([4.0, 0.0, 0.0]), image.shape)
    top = rows < centre_row - 15 * zoom  # the anterior block; the rest is the left one
    assert top.sum() > 0 and (~top).sum() > 2 * top.sum()
    # patient left (x = +30 mm): 30 mm right of the centre, on the centre row
    assert abs(cols[~top].mean() - (centre_col + 30 * zoom)) < 1.5 * zoom
    assert abs(rows[~top].mean() - centre_row) < 1.5 * zoom
    # anterior (y = -30 mm): 30 mm above the centre, on the centre column
    assert abs(rows[top].mean() - (centre_row - 30 * zoom)) < 1.5 * zoom
    assert abs(cols[top].mean() - centre_col) < 1.5 * zoom


def test_session_view_shows_a_failed_registration_warning(viewer: Any, session_path: Path) -> None:
    session = SessionFolder.open(session_path)
    data = session.scans()[0].load()
    registration = {**data.result["registration"], "used": False, "verdict": "fail", "reasons": ["NCC 0.31"]}
    failed = ScanData(data.index, data.scan, {**data.result, "registration": registration}, data.dose)
    view = SessionView(viewer, session.load_bundle())
    view.show(failed, build_scene(failed, view.bundle.plan))
    text = view.timeline.registration.text()
    assert "FAIL" in text and "WARNING" in text and "NCC 0.31" in text
    assert viewer.canvas.overlays.text.text.splitlines()[1].startswith("PLAN NOT REGISTERED")


def test_napari_opens_a_session_folder_through_the_plugin_reader(viewer: Any, session_path: Path) -> None:
    """What `napari SESSION_DIR` does: the npe2 reader adds the layers and docks itself."""
    viewer.open(str(session_path), plugin="seedguide")
    assert tuple(layer.name for layer in viewer.layers) == LAYER_NAMES
    assert viewer.layers["CT"].data.shape == SessionFolder.open(session_path).scans()[2].load().scan.shape
