"""seedguide's headless core: geometry, plan types, DICOM RT I/O and the guidance stages.

Only numpy, scipy, numba, opencv and pydicom are used here: no Qt, no network.
"""

import logging

from guidance.plan import Isotope, Needle, Plan, Seed, SourceModel
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Interpolation, Volume, resample

__version__ = "0.1.0"

__all__ = [
    "Grid",
    "Interpolation",
    "Isotope",
    "Needle",
    "Plan",
    "Seed",
    "SourceModel",
    "Structure",
    "StructureRole",
    "Volume",
    "resample",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
