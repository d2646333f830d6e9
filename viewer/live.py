"""Live display: results published from the pipeline's thread, shown by the Qt main thread.

:meth:`LiveView.publish` may be called from any thread. The layer data of the
new scan (resampled dose, isodose lines, outlines: numpy work) is computed on a
worker thread owned by the LiveView; the finished :class:`~viewer.scene.Scene`
crosses to the main thread through a queued Qt signal, where the layers are
updated in place. Qt and napari objects are only ever touched on the main thread.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal

from guidance.session import PlanBundle, ScanData
from viewer.dvh import dvh_lines
from viewer.scene import Scene, build_scene
from viewer.session_view import SessionView

if TYPE_CHECKING:
    import napari

__all__ = ["LiveView"]

logger = logging.getLogger(__name__)


class _Bridge(QObject):
    """Created on the main thread: signals emitted elsewhere are delivered there (queued)."""

    plan = Signal(object)
    scene = Signal(object, object, float)
    dvh = Signal(int, object)


class LiveView:
    """A viewer fed by the pipeline: :meth:`set_plan` once, then :meth:`publish` per result.

    Parameters
    ----------
    viewer : napari.Viewer, optional
        A new viewer when None. Must be created on the Qt main thread, as must the LiveView.

    Attributes
    ----------
    view : SessionView or None
        Once the plan is set.
    last_update_seconds : float or None
        From the last :meth:`publish` call to its layers being updated.
    updates : int
        Scans shown so far.
    dvh_updates : int
        DVH sets computed and shown so far (they follow the layers).
    """

    def __init__(self, viewer: napari.Viewer | None = None) -> None:
        import napari

        self.viewer = viewer if viewer is not None else napari.Viewer(title="seedguide live")
        self.view: SessionView | None = None
        self.last_update_seconds: float | None = None
        self.updates = 0
        self.dvh_updates = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seedguide-viewer")
        # DVHs take longer than the layers: computed apart so they never delay the next scan's layers.
        self._dvh_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seedguide-viewer-dvh")
        self._lock = threading.Lock()
        self._bundle: PlanBundle | None = None
        self._bridge = _Bridge()
        self._bridge.plan.connect(self._on_plan)
        self._bridge.scene.connect(self._on_scene)
        self._bridge.dvh.connect(self._on_dvh)

    def set_plan(self, bundle: PlanBundle) -> None:
        """The session's plan (thread-safe). Results published before it wait for it."""
        with self._lock:
            self._bundle = bundle
        self._bridge.plan.emit(bundle)

    def publish(self, data: ScanData) -> Future[None]:
        """Show ``data`` as the current scan (thread-safe, returns at once).

        Returns
        -------
        Future
            Done when the scene is computed and handed to the main thread (its
            exception, if computing failed).
        """
        started = time.perf_counter()
        return self._executor.submit(self._compute, data, started)

    def _compute(self, data: ScanData, started: float) -> None:
        with self._lock:
            bundle = self._bundle
        if bundle is None:
            raise RuntimeError(f"scan {data.index} published before LiveView.set_plan(bundle)")
        try:
            scene = build_scene(data, bundle.plan)
            self._bridge.scene.emit(data, scene, started)
        except Exception:
            logger.exception("scan %d could not be prepared for display", data.index)
            raise

    def _compute_dvh(self, data: ScanData, bundle: PlanBundle) -> None:
        try:
            self._bridge.dvh.emit(data.index, dvh_lines(data, bundle.plan))
        except Exception:
            logger.exception("the DVHs of scan %d could not be computed", data.index)
            raise

    def _on_plan(self, bundle: PlanBundle) -> None:
        if self.view is None:
            self.view = SessionView(self.viewer, bundle)
        else:
            self.view.bundle = bundle

    def _on_scene(self, data: ScanData, scene: Scene, started: float) -> None:
        if self.view is None:  # the plan signal always comes first; be safe anyway
            with self._lock:
                bundle = self._bundle
            if bundle is None:
                return
            self._on_plan(bundle)
        view = self.view
        if view is None:
            return
        view.show(data, scene)
        self.last_update_seconds = time.perf_counter() - started
        self.updates += 1
        # Only now: computing DVHs beside the layer update would slow it down (one GIL, two cores).
        self._dvh_executor.submit(self._compute_dvh, data, view.bundle)
        logger.info("scan %d shown %.2f s after it was published", data.index, self.last_update_seconds)

    def _on_dvh(self, index: int, lines: Any) -> None:
        if self.view is not None:
            self.view.show_dvh(index, lines)
        self.dvh_updates += 1

    def close(self) -> None:
        """Stop the worker (waiting for a scene in progress); call before closing the viewer."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._dvh_executor.shutdown(wait=True, cancel_futures=True)
