"""seedguide simulators: synthetic patients, plans and procedures, pushed over DICOM like a scanner."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
