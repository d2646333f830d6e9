"""Errors raised by the DICOM readers and writers.

Every error names what is wrong and where (the file, the attribute), so an
operator can tell the planning system's vendor exactly what to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["DicomInputError", "SeriesGeometryError", "UnsupportedPlanError"]


class DicomInputError(ValueError):
    """A DICOM input cannot be used as it is.

    Parameters
    ----------
    message : str
        What is wrong, in words an operator can act on.
    paths : sequence of path-like, optional
        The files concerned (shown in the message, at most ten).
    """

    def __init__(self, message: str, paths: Sequence[str | Path] = ()) -> None:
        self.paths = tuple(str(p) for p in paths)
        shown = ", ".join(self.paths[:10])
        if len(self.paths) > 10:
            shown += f", ... ({len(self.paths)} files)"
        super().__init__(f"{message} [{shown}]" if shown else message)
        self.reason = message


class SeriesGeometryError(DicomInputError):
    """The slices of a series do not form one regular grid (tilt, gaps, duplicates...)."""


class UnsupportedPlanError(DicomInputError):
    """An RT Plan that is not a permanent seed implant (HDR, PDR, external beam)."""
