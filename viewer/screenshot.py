"""Render a session to a PNG without an operator (reports, documentation, tests).

napari needs an OpenGL context on a display: on a machine without a screen run
under a virtual one (``xvfb-run -a seedguide view SESSION --screenshot out.png``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["require_display", "screenshot_session"]

logger = logging.getLogger(__name__)


def require_display() -> None:
    """Fail with instructions, instead of a Qt abort, when there is no display to render on.

    Raises
    ------
    RuntimeError
        On Linux without DISPLAY or WAYLAND_DISPLAY (and no explicit QT_QPA_PLATFORM).
    """
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError(
            "no display: the napari viewer needs one (DISPLAY is not set). On a headless machine run the "
            "command under a virtual display, e.g. `xvfb-run -a seedguide view SESSION --screenshot out.png`"
        )


def screenshot_session(
    path: str | Path,
    png: str | Path,
    *,
    scan: int | None = None,
    size: tuple[int, int] = (1600, 1000),
    part: str = "window",
    ndisplay: int = 2,
) -> Path:
    """Open the session at ``path``, render scan ``scan`` (default: the last analysed) and write ``png``.

    Parameters
    ----------
    size : (width, height)
        Window size in pixels (the canvas's when ``part`` is "canvas").
    part : {"window", "canvas", "dvh"}
        The whole window with its docks, the canvas alone, or the DVH dock alone.
    ndisplay : {2, 3}
        2: the axial slice through the worst cold spot (or the target); 3: a volume rendering
        (seconds per frame with software OpenGL).

    Raises
    ------
    ValueError
        An unknown ``part`` or ``ndisplay``.

    Returns
    -------
    Path
        ``png``.
    """
    if part not in ("window", "canvas", "dvh") or ndisplay not in (2, 3):
        raise ValueError(f"part must be window, canvas or dvh, ndisplay 2 or 3; got {part!r}, {ndisplay!r}")
    require_display()
    import napari
    from qtpy.QtWidgets import QApplication

    from viewer.session_view import open_session

    viewer = napari.Viewer(show=True, title="seedguide")
    try:
        viewer.window.resize(*size)
        view = open_session(path, viewer, scan=scan)
        viewer.dims.ndisplay = ndisplay
        if ndisplay == 3 and view.layers is not None:
            view.layers.ct.rendering = "mip"
            view.layers.ct.contrast_limits = (0.0, 3000.0)  # bone and metal
            view.layers.dose.visible = view.layers.cold.visible = False
            viewer.canvas.overlays.text.visible = False
            viewer.reset_view()
            viewer.scene.camera.angles = (-20.0, 30.0, 145.0)
            viewer.scene.camera.zoom *= 1.8
        for _ in range(3):
            QApplication.processEvents()
        out = Path(png)
        out.parent.mkdir(parents=True, exist_ok=True)
        if part == "dvh":
            figure = view.dvh_dock.figure
            figure.set_size_inches(size[0] / 200.0, size[1] / 200.0)
            figure.savefig(out, dpi=200, facecolor=figure.get_facecolor())
        else:
            canvas = part == "canvas"
            shape = (size[1], size[0]) if canvas else None  # napari takes (height, width)
            viewer.screenshot(str(out), canvas_only=canvas, size=shape, flash=False)
        logger.info("scan %s of %s written to %s", view.current, path, out)
        return out
    finally:
        viewer.close()
