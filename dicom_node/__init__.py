"""seedguide DICOM node: receives, stores, assembles and announces series (imports nothing else of ours)."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
