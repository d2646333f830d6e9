"""seedguide viewer: napari layers and docks for guidance results (the only Qt importer)."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
