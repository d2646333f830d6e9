"""napari reader for session folders (declared in ``napari.yaml``): ``napari SESSION_DIR``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["get_reader"]

logger = logging.getLogger(__name__)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple[Any, ...]]] | None:
    """The session reader when ``path`` is a folder holding ``session.json``, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not (Path(path).is_dir() and (Path(path) / "session.json").is_file()):
        return None
    return read_session


def read_session(path: str | list[str]) -> list[tuple[Any, ...]]:
    """Open the session in the current viewer; napari's "layers already added" sentinel is returned."""
    import napari

    from viewer.session_view import open_session

    folder = path[0] if isinstance(path, list) else path
    viewer = napari.current_viewer()
    if viewer is None:
        raise RuntimeError(f"{folder}: no napari viewer to open the session in")
    open_session(folder, viewer)
    return [(None,)]
