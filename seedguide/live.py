"""Run a procedure (a live service or the demo) with the napari viewer on the main thread.

Qt must own the main thread: the procedure runs in a background thread and hands
each published result to :class:`viewer.LiveView`, which moves it to the Qt
thread itself. Closing the viewer window stops the procedure; the procedure
ending leaves the window open for the operator.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from guidance.session import PlanBundle, ScanData
from seedguide.service import Published

__all__ = ["display_problem", "run_with_viewer", "viewer_possible"]

logger = logging.getLogger(__name__)

#: What the procedure gets: a result subscriber and a plan subscriber for the viewer, and a stop event.
Procedure = Callable[[Callable[[Published], None], Callable[[PlanBundle], None], threading.Event], Any]


def display_problem() -> str | None:
    """Why no viewer can be shown here (no display), or None."""
    from viewer.screenshot import require_display

    try:
        require_display()
    except RuntimeError as exc:
        return str(exc)
    return None


def viewer_possible(command: str) -> bool:
    """A display is there; else say how to get the viewer and go on headless."""
    problem = display_problem()
    if problem is None:
        return True
    sys.stderr.write(
        f"seedguide {command}: no display for the viewer (DISPLAY is not set): running headless, one line "
        f"per scan. For the viewer on a machine without a screen: xvfb-run -a seedguide {command} ...; "
        "to skip this message: --headless\n"
    )
    return False


def run_with_viewer(procedure: Procedure, *, title: str) -> int:
    """Show a viewer, run ``procedure`` in a thread feeding it, return when the window closes."""
    import napari

    from viewer import LiveView

    window = napari.Viewer(title=title)
    live = LiveView(window)
    stop = threading.Event()
    failure: list[BaseException] = []

    def _publish(published: Published) -> None:
        record = published.record
        live.publish(ScanData.from_result(record.index, published.scan, published.result, record.folder))

    def _run() -> None:
        try:
            procedure(_publish, live.set_plan, stop)
        except BaseException as exc:  # reported on the main thread after the window closes
            logger.exception("the procedure stopped with an error")
            failure.append(exc)

    worker = threading.Thread(target=_run, name="procedure", daemon=True)
    worker.start()
    try:
        napari.run()
    finally:
        stop.set()
        live.close()
        worker.join(timeout=60)
    if failure:
        sys.stderr.write(f"error: {failure[0]}\n")
        return 1
    return 0
