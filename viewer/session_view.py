"""A session in a napari viewer: layers, docks, navigation and keyboard shortcuts.

:class:`SessionView` owns the layers (:class:`viewer.layers.SessionLayers`) and the
docks (:mod:`viewer.docks`) of one viewer and shows one scan of the session at a
time. It is driven from the Qt main thread; :class:`viewer.live.LiveView` feeds it
from other threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from guidance.session import PlanBundle, ScanData, ScanRecord, SessionFolder
from viewer.docks import DvhDock, MetricsPanel, SuggestionsList, TimelineDock
from viewer.dvh import DvhLine, dvh_lines
from viewer.geometry import NAPARI_FROM_LPS
from viewer.layers import CT_WINDOWS, SessionLayers
from viewer.scene import Scene, build_scene, primary_target

if TYPE_CHECKING:
    import napari

__all__ = ["KEYS", "SessionView", "open_session"]

logger = logging.getLogger(__name__)

#: Keyboard shortcuts (napari key names) -> SessionView method.
KEYS = {
    "PageDown": "next_scan",
    "PageUp": "previous_scan",
    "Shift-C": "jump_to_worst_cold_spot",
    "Shift-D": "toggle_dose",
    "Shift-I": "toggle_isodose",
    "Shift-W": "cycle_ct_window",
}
_FIELD_OF_VIEW_MM = 110.0


def world_of(position_scan_mm: Sequence[float]) -> tuple[float, float, float]:
    """Scan-frame LPS mm (x, y, z) -> napari world (z, y, x)."""
    world = NAPARI_FROM_LPS[:3, :3] @ np.asarray(position_scan_mm, dtype=np.float64).reshape(3)
    return (float(world[0]), float(world[1]), float(world[2]))


class SessionView:
    """Layers and docks of a session in ``viewer`` (see the module docstring).

    Parameters
    ----------
    viewer : napari.Viewer
    bundle : PlanBundle
        The session's plan.
    records : sequence of ScanRecord
        Scans already in the session folder (loaded on demand).
    """

    def __init__(self, viewer: napari.Viewer, bundle: PlanBundle, records: Sequence[ScanRecord] = ()) -> None:
        self.viewer = viewer
        self.bundle = bundle
        self.records = {r.index: r for r in records}
        self.results: dict[int, Mapping[str, Any] | None] = {
            r.index: (r.result() if r.complete else None) for r in records
        }
        self.live: dict[int, ScanData] = {}
        self.current: int | None = None
        self.scene: Scene | None = None
        self.layers: SessionLayers | None = None
        self.dvh: list[DvhLine] = []
        self._outline_cache: tuple[bytes, Any] | None = None
        self._windows = list(CT_WINDOWS)
        self.dvh_dock = DvhDock()
        self.metrics = MetricsPanel()
        self.suggestions = SuggestionsList(self.go_to)
        self.timeline = TimelineDock(self.show_index)
        window = viewer.window
        window.add_dock_widget(self.timeline, name="scans and registration", area="right")
        window.add_dock_widget(self.metrics, name="metrics", area="right")
        window.add_dock_widget(self.suggestions, name="suggested seeds", area="right")
        window.add_dock_widget(self.dvh_dock, name="DVH", area="right")
        for key, method in KEYS.items():
            viewer.bind_key(key, self._key(getattr(self, method)), overwrite=True)

    @staticmethod
    def _key(action: Callable[[], Any]) -> Callable[[Any], None]:
        def handler(_viewer: Any) -> None:
            action()

        return handler

    # ------------------------------------------------------------------ scans

    @property
    def indices(self) -> list[int]:
        return sorted({*self.results, *self.live})

    def scan_data(self, index: int) -> ScanData:
        """The scan ``index`` (published, else read from its folder)."""
        if index in self.live:
            return self.live[index]
        record = self.records.get(index)
        if record is None or not record.complete:
            raise KeyError(f"scan {index} has no result to show (known: {self.indices})")
        return record.load()

    def scene_of(self, data: ScanData) -> Scene:
        """Build the scene of ``data``, reusing the structure outlines for the same grid and registration."""
        registration = (data.result.get("registration") or {}).get("scan_to_plan_matrix_mm")
        matrix = np.asarray(registration if registration is not None else np.eye(4), dtype=float)
        key = np.asarray(data.scan.affine).tobytes() + str(data.scan.shape).encode() + matrix.tobytes()
        cache = self._outline_cache
        scene = build_scene(data, self.bundle.plan, outlines=cache[1] if cache and cache[0] == key else None)
        self._outline_cache = (key, (scene.outline_grid, scene.outlines))
        return scene

    def show_index(self, index: int) -> None:
        """Show scan ``index`` of the session (main thread; reads it from disk if needed)."""
        if index == self.current:
            return
        data = self.scan_data(index)
        self.show(data, self.scene_of(data))
        self.show_dvh(index, dvh_lines(data, self.bundle.plan))

    def show(self, data: ScanData, scene: Scene, *, keep_view: bool | None = None) -> None:
        """Put ``scene`` in the layers and docks; keeps the slice and zoom unless it is the first scan."""
        first = self.layers is None
        keep = (not first) if keep_view is None else keep_view
        camera = self.viewer.scene.camera
        saved = (self.viewer.dims.point[0], tuple(camera.center), camera.zoom) if keep else None
        if self.layers is None:
            self.layers = SessionLayers(self.viewer, scene)
            self.viewer.layers.selection.active = self.layers.ct
        else:
            self.layers.update(scene)
        self.current, self.scene = data.index, scene
        if data.folder is None or data.index not in self.records:
            self.live[data.index] = data
        self.results[data.index] = data.result
        if saved is not None:
            self.viewer.dims.set_point(0, saved[0])
            camera.center, camera.zoom = saved[1], saved[2]
        elif first:
            self._initial_view(scene)
        self._show_docks(scene)

    def show_dvh(self, index: int, lines: Sequence[DvhLine]) -> None:
        if index == self.current and self.scene is not None:
            self.dvh = list(lines)
            self.dvh_dock.show_dvh(lines, self.scene.prescription_gy)

    def _initial_view(self, scene: Scene) -> None:
        self.viewer.reset_view()
        target = primary_target(self.bundle.plan)
        spots = scene.cold_spots.coords
        if spots.shape[0]:
            self.go_to(scene.scan.index_to_patient(spots[0])[0])
        elif target is not None:
            self.go_to(scene.mapping.to_scan(target.points_mm.mean(axis=0))[0])
        extent = self.viewer.layers.extent.world
        span_mm = float(np.min(extent[1, 1:] - extent[0, 1:]))  # reset_view fitted this span
        if span_mm > _FIELD_OF_VIEW_MM:
            self.viewer.scene.camera.zoom *= span_mm / _FIELD_OF_VIEW_MM

    def _show_docks(self, scene: Scene) -> None:
        result = scene.result
        suggestions = (result.get("suggestions") or {}).get("seeds") or []
        positions = [s.get("position_scan_mm") or scene.mapping.to_scan(s["position_plan_mm"])[0]
                     for s in suggestions]  # fmt: skip
        self.metrics.show_metrics(result)
        self.suggestions.show_suggestions(result, positions)
        self.timeline.show_timeline([(i, self.results.get(i)) for i in self.indices], scene.index)
        ncc = (result.get("registration") or {}).get("similarity_ncc")
        self.timeline.show_registration(
            scene.mapping.verdict, scene.mapping.registered, scene.mapping.reasons, ncc
        )
        overlay = self.viewer.canvas.overlays.text
        targets = (result.get("metrics") or {}).get("targets") or [{}]
        d90 = targets[0].get("d90_gy")
        dose = "n/a" if d90 is None else f"{d90:.1f} Gy"
        lines = [f"scan {scene.index}  registration {scene.mapping.verdict.upper()}  "
                 f"D90 {dose} / {scene.prescription_gy:g} Gy"]  # fmt: skip
        lines += [w if len(w) <= 90 else w[:87] + "..." for w in scene.warnings[:3]]
        overlay.text = "\n".join(lines)
        overlay.color = "red" if not scene.mapping.registered or scene.mapping.verdict != "pass" else "white"
        overlay.font_size = 10
        overlay.visible = True

    # ------------------------------------------------------------- navigation

    def go_to(self, position_scan_mm: Sequence[float]) -> None:
        """Move the current slice and the camera centre to a scan-frame position (LPS mm)."""
        world = world_of(position_scan_mm)
        self.viewer.dims.set_point(0, world[0])
        self.viewer.scene.camera.center = world

    def next_scan(self) -> None:
        self._step(+1)

    def previous_scan(self) -> None:
        self._step(-1)

    def _step(self, direction: int) -> None:
        shown = [i for i in self.indices if self.results.get(i) is not None or i in self.live]
        if not shown:
            return
        position = shown.index(self.current) if self.current in shown else 0
        target = shown[min(max(position + direction, 0), len(shown) - 1)]
        self.show_index(target)

    def jump_to_worst_cold_spot(self) -> None:
        """Go to the cold spot ranked first (the largest D90 gain), if any."""
        if self.scene is None or self.scene.cold_spots.coords.shape[0] == 0:
            return
        ranks = [int(r) if str(r).isdigit() else 10**6 for r in self.scene.cold_spots.features["label"]]
        best = int(np.argmin(ranks))
        self.go_to(self.scene.scan.index_to_patient(self.scene.cold_spots.coords[best])[0])

    def toggle_dose(self) -> None:
        if self.layers is not None:
            self.layers.dose.visible = not self.layers.dose.visible

    def toggle_isodose(self) -> None:
        if self.layers is not None:
            self.layers.isodose.visible = not self.layers.isodose.visible

    def cycle_ct_window(self) -> None:
        """Soft tissue -> bone -> metal -> soft tissue."""
        if self.layers is not None:
            self._windows = [*self._windows[1:], self._windows[0]]
            self.layers.ct.contrast_limits = CT_WINDOWS[self._windows[0]]


def open_session(
    path: str | Path, viewer: napari.Viewer | None = None, *, scan: int | None = None
) -> SessionView:
    """Open a session folder in ``viewer`` (a new one if None) and show a scan (default: the last analysed).

    Raises
    ------
    FileNotFoundError, ValueError
        ``path`` is not a session folder (see :meth:`guidance.session.SessionFolder.open`).
    LookupError
        The session has no analysed scan yet and ``scan`` was asked for.
    """
    import napari

    session = SessionFolder.open(path)
    viewer = viewer if viewer is not None else napari.Viewer(title=f"seedguide {Path(path).name}")
    view = SessionView(viewer, session.load_bundle(), session.scans())
    analysed = [i for i, r in view.results.items() if r is not None]
    if scan is not None and scan not in analysed:
        raise LookupError(f"{path}: scan {scan} is not an analysed scan of this session ({analysed})")
    if analysed:
        view.show_index(scan if scan is not None else analysed[-1])
    else:
        logger.warning("session %s has no analysed scan yet: showing the plan only", path)
    return view
