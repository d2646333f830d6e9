"""DICOM input and output of the guidance core: CT, RT Structure Set, RT Plan, RT Dose.

Readers turn datasets into the core types (:class:`~guidance.volume.Volume`,
:class:`~guidance.structure.Structure`, :class:`~guidance.plan.Plan`); writers
turn them back into datasets that other systems read. Readers accept a path,
a folder, a list of paths or already-read datasets.
"""

from guidance.dicomio.errors import DicomInputError, SeriesGeometryError, UnsupportedPlanError

__all__ = ["DicomInputError", "SeriesGeometryError", "UnsupportedPlanError"]
