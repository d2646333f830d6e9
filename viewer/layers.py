"""The napari layers of a session and their in-place update from a :class:`~viewer.scene.Scene`.

Layers are created once and then updated by assigning ``layer.data`` (never
removed and re-added), so the operator's slice, zoom and layer settings survive
a new scan. Every layer carries its grid's affine permuted to the viewer's
world (see :mod:`viewer.geometry`) and ``units="mm"``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from napari.utils.colormaps import Colormap

from guidance.volume import Grid
from viewer.geometry import napari_affine
from viewer.scene import COLD_SPOT_RGBA, HOT_SPOT_RGBA, SEED_STYLE, Lines, Marks, Scene

if TYPE_CHECKING:
    import napari

__all__ = ["COLD_COLORMAP", "CT_WINDOWS", "DOSE_COLORMAP", "LAYER_NAMES", "SessionLayers"]

logger = logging.getLogger(__name__)

#: CT window presets (lower, upper) HU: soft tissue W400/L40, bone W2000/L500, metal W4000/L1000.
CT_WINDOWS = {"soft tissue": (-160.0, 240.0), "bone": (-500.0, 1500.0), "metal": (-1000.0, 3000.0)}

#: Dose colour wash: transparent at 0, blue, green, yellow at the prescription, red at twice it.
DOSE_COLORMAP = Colormap(
    colors=[
        [0, 0, 0, 0],
        [0.0, 0.2, 1.0, 0.5],
        [0.0, 0.9, 0.3, 0.7],
        [1.0, 1.0, 0.0, 0.85],
        [1.0, 0.0, 0.0, 1.0],
    ],
    controls=[0.0, 0.25, 0.35, 0.5, 1.0],
    name="seedguide dose",
)

#: Cold region: a plain image (0 transparent, 1 the cold-spot colour); a Labels layer would JIT-compile.
COLD_COLORMAP = Colormap(
    colors=[[0.0, 0.0, 0.0, 0.0], list(COLD_SPOT_RGBA)], controls=[0.0, 1.0], name="seedguide cold"
)

LAYER_NAMES = (
    "CT", "dose", "cold region", "isodose", "structures", "needles",
    "planned seeds", "missing seeds", "found seeds", "suggested seeds", "cold spots", "hot spots",
)  # fmt: skip

_LINE_WIDTH_MM = 0.6
_ISODOSE_WIDTH_MM = 1.0
_OUTLINE_WIDTH_MM = 0.7


def _empty_volume() -> np.ndarray[Any, Any]:
    return np.zeros((1, 1, 1), dtype=np.float32)


_NO_SEGMENTS = np.zeros((0, 2, 3))


def _segments(lines: Lines) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], pd.DataFrame]:
    """Paths as napari vectors (start, step), with each path's colour and features repeated."""
    if not lines.paths:
        return _NO_SEGMENTS, np.zeros((0, 4)), pd.DataFrame({k: [] for k in lines.features})
    counts = np.array([len(p) - 1 for p in lines.paths])
    starts = np.concatenate([p[:-1] for p in lines.paths])
    steps = np.concatenate([np.diff(p, axis=0) for p in lines.paths])
    features = pd.DataFrame(
        {k: np.repeat(np.asarray(v, dtype=object), counts) for k, v in lines.features.items()}
    )
    return np.stack([starts, steps], axis=1), np.repeat(lines.colours, counts, axis=0), features


def _set_affine(layer: Any, affine: np.ndarray[Any, Any]) -> None:
    """Set a layer's affine only when it changes (each assignment re-slices and redraws the layer)."""
    if not np.allclose(layer.affine.affine_matrix, affine, rtol=0.0, atol=1e-9):
        layer.affine = affine


def _frame(marks: Marks) -> pd.DataFrame:
    return pd.DataFrame(marks.features, index=range(len(marks.coords)))


class SessionLayers:
    """The layers of one viewer; :meth:`update` shows another :class:`Scene` in them."""

    def __init__(self, viewer: napari.Viewer, scene: Scene) -> None:
        self.viewer = viewer
        scan_affine = napari_affine(scene.scan.affine)
        common: dict[str, Any] = {"affine": scan_affine, "units": "mm"}
        self.ct = viewer.add_image(
            scene.scan.array, name="CT", colormap="gray", contrast_limits=CT_WINDOWS["soft tissue"], **common
        )
        self.dose = viewer.add_image(
            _empty_volume(), name="dose", colormap=DOSE_COLORMAP, opacity=0.45, blending="translucent",
            contrast_limits=(0.0, 1.0), units="mm",
        )  # fmt: skip
        self.cold = viewer.add_image(
            _empty_volume(), name="cold region", colormap=COLD_COLORMAP, opacity=0.5, blending="translucent",
            contrast_limits=(0.0, 1.0), interpolation2d="nearest", units="mm",
        )  # fmt: skip
        # Lines as segments of a Vectors layer: one array, updated in one go (a Shapes layer builds
        # one object per path: seconds for the thousand outlines of a 100-slice scan).
        self.isodose = viewer.add_vectors(
            _NO_SEGMENTS, name="isodose", vector_style="line", units="mm", opacity=1.0
        )
        self.outlines = viewer.add_vectors(
            _NO_SEGMENTS, name="structures", vector_style="line", units="mm", opacity=0.9
        )
        self.needles = viewer.add_shapes(name="needles", ndim=3, face_color="transparent", **common)
        self.points = {
            kind: viewer.add_points(
                np.zeros((0, 3)), name=f"{kind} seeds", symbol=SEED_STYLE[kind][0], border_width=0.15,
                border_width_is_relative=True, **common,
            )
            for kind in ("planned", "missing", "found", "suggested")
        }  # fmt: skip
        self.cold_spots = viewer.add_points(
            np.zeros((0, 3)),
            name="cold spots",
            symbol="disc",
            face_color=np.asarray(COLD_SPOT_RGBA),
            **common,
        )
        self.hot_spots = viewer.add_points(
            np.zeros((0, 3)),
            name="hot spots",
            symbol="square",
            face_color=np.asarray(HOT_SPOT_RGBA),
            **common,
        )
        self.update(scene)

    def update(self, scene: Scene) -> None:
        """Show ``scene`` in the existing layers (main thread only)."""
        scan_affine = napari_affine(scene.scan.affine)
        pixel_mm = float(scene.scan.grid.spacing_mm[1:].min())
        self.ct.data = scene.scan.array
        _set_affine(self.ct, scan_affine)
        self._update_dose(scene)
        self._update_segments(
            self.isodose, scene.isodose, scene.dose_grid or scene.scan.grid, _ISODOSE_WIDTH_MM
        )
        self._update_segments(
            self.outlines, scene.outlines, scene.outline_grid or scene.scan.grid, _OUTLINE_WIDTH_MM
        )
        self._update_lines(self.needles, scene.needles, scene.scan.grid, 2.0 * _LINE_WIDTH_MM)
        for kind, layer in self.points.items():
            _, rgba, size_mm = SEED_STYLE[kind]
            self._update_points(layer, scene.seeds[kind], scan_affine, size_mm / pixel_mm, rgba)
            layer.border_color = np.asarray((0.0, 0.0, 0.0, 1.0) if kind == "found" else rgba)
        self._update_points(self.cold_spots, scene.cold_spots, scan_affine, 5.0 / pixel_mm, COLD_SPOT_RGBA)
        self._update_points(self.hot_spots, scene.hot_spots, scan_affine, 4.0 / pixel_mm, HOT_SPOT_RGBA)

    def _update_dose(self, scene: Scene) -> None:
        if scene.dose_gy is None or scene.dose_grid is None:
            for layer in (self.dose, self.cold):
                layer.data = _empty_volume()
                _set_affine(layer, napari_affine(scene.scan.affine))
            return
        affine = napari_affine(scene.dose_grid.affine)
        self.dose.data = scene.dose_gy
        _set_affine(self.dose, affine)
        self.dose.contrast_limits = (0.0, max(2.0 * scene.prescription_gy, 1e-3))
        cold = scene.cold_labels if scene.cold_labels is not None else np.zeros(scene.dose_gy.shape)
        self.cold.data = cold.astype(np.float32)
        _set_affine(self.cold, affine)

    @staticmethod
    def _update_segments(layer: Any, lines: Lines, grid: Grid, width_mm: float) -> None:
        # A hidden layer is not re-sliced, and its stale view indices break a colour update:
        # show it for the update (no paint happens in between), then hide it again.
        hidden = not layer.visible
        if hidden:
            layer.visible = True
        _set_affine(layer, napari_affine(grid.affine))
        segments, colours, features = _segments(lines)
        layer.data = segments
        layer.features = features
        layer.edge_color = colours if len(colours) else "white"
        layer.edge_width = width_mm / float(grid.spacing_mm[1:].min())  # data units
        if hidden:
            layer.visible = False

    @staticmethod
    def _update_lines(layer: Any, lines: Lines, grid: Grid, width_mm: float) -> None:
        _set_affine(layer, napari_affine(grid.affine))
        if not lines.paths:
            layer.data = []
            return
        layer.data = [(path, "path") for path in lines.paths]
        layer.edge_color = lines.colours
        layer.edge_width = width_mm / float(grid.spacing_mm[1:].min())
        layer.features = pd.DataFrame(lines.features, index=range(len(lines.paths)))

    @staticmethod
    def _update_points(
        layer: Any, marks: Marks, affine: np.ndarray[Any, Any], size: float, rgba: tuple[float, ...]
    ) -> None:
        _set_affine(layer, affine)
        layer.data = marks.coords
        layer.features = _frame(marks)
        layer.size = size
        layer.face_color = np.asarray(rgba)
