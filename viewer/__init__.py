"""seedguide viewer: napari layers and docks for guidance results (the only Qt importer).

The public entry points are imported lazily so that ``import viewer`` stays cheap
and does not start Qt:

- :func:`open_session` (``viewer.session_view``): a session folder in a napari viewer;
- :func:`screenshot_session` (``viewer.screenshot``): render a session to a PNG;
- :class:`LiveView` (``viewer.live``): show results as the pipeline publishes them;
- :class:`SessionView`: the layers and docks of one viewer.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["LiveView", "SessionView", "open_session", "screenshot_session"]

_LAZY = {
    "LiveView": "viewer.live",
    "SessionView": "viewer.session_view",
    "open_session": "viewer.session_view",
    "screenshot_session": "viewer.screenshot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'viewer' has no attribute {name!r}")
