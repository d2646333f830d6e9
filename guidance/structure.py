"""Delineated structures: the target, organs at risk, the body outline, points.

A :class:`Structure` holds planar contours in LPS millimetres exactly as an RT
Structure Set gives them (DICOM PS3.3 C.8.8.6): each contour is a closed
polygon lying in one plane; several contours in one plane combine by the
even-odd rule, so a contour inside another is a hole. Turning contours into
voxel masks is :mod:`guidance.rasterise`'s job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Structure", "StructureRole", "role_from_dicom"]


class StructureRole(enum.Enum):
    """What a structure is for in an implant."""

    TARGET = "target"
    ORGAN_AT_RISK = "organ_at_risk"
    EXTERNAL = "external"
    POINT = "point"
    OTHER = "other"


# RTROIInterpretedType (DICOM PS3.3 C.8.8.8) -> role.
_ROLE_BY_INTERPRETED_TYPE = {
    "GTV": StructureRole.TARGET,
    "CTV": StructureRole.TARGET,
    "PTV": StructureRole.TARGET,
    "TREATED_VOLUME": StructureRole.TARGET,
    "ORGAN": StructureRole.ORGAN_AT_RISK,
    "AVOIDANCE": StructureRole.ORGAN_AT_RISK,
    "EXTERNAL": StructureRole.EXTERNAL,
    "MARKER": StructureRole.POINT,
    "ISOCENTER": StructureRole.POINT,
    "REGISTRATION": StructureRole.POINT,
    "DOSE_REGION": StructureRole.OTHER,
    "CONTROL": StructureRole.OTHER,
    "CAVITY": StructureRole.OTHER,
    "SUPPORT": StructureRole.OTHER,
    "FIXATION": StructureRole.OTHER,
    "BRACHY_CHANNEL": StructureRole.OTHER,
    "BRACHY_ACCESSORY": StructureRole.OTHER,
    "BRACHY_SRC_APP": StructureRole.OTHER,
    "BRACHY_CHNL_SHLD": StructureRole.OTHER,
}

_TARGET_NAME_PREFIXES = ("gtv", "ctv", "ptv", "target", "tumor", "tumour")
# An untyped ROI so named is the target of a seed implant; typed ORGAN, it stays an organ.
_UNTYPED_TARGET_NAME_PREFIXES = (*_TARGET_NAME_PREFIXES, "prostate")
_EXTERNAL_NAMES = ("body", "external", "skin outline", "outline", "patient")


def role_from_dicom(interpreted_type: str, name: str, geometric_types: set[str]) -> StructureRole:
    """Role of an ROI from its RTROIInterpretedType and its name.

    Planning systems often leave RTROIInterpretedType empty ("" or "NONE") or
    type everything ORGAN (Oncentra types its BODY so). For those, a name that
    is unambiguous wins: BODY/EXTERNAL is the outline, GTV/CTV/PTV... a target.
    A structure made only of POINT contours is a point; anything else
    unnamed is an organ at risk (the conservative choice: its dose is reported).
    """
    if geometric_types and geometric_types <= {"POINT"}:
        return StructureRole.POINT
    key = interpreted_type.strip().upper()
    lowered = name.strip().lower()
    if key in ("", "NONE", "ORGAN"):
        if lowered in _EXTERNAL_NAMES:
            return StructureRole.EXTERNAL
        if lowered.startswith(_TARGET_NAME_PREFIXES):
            return StructureRole.TARGET
    if key in _ROLE_BY_INTERPRETED_TYPE:
        return _ROLE_BY_INTERPRETED_TYPE[key]
    if lowered.startswith(_UNTYPED_TARGET_NAME_PREFIXES):
        return StructureRole.TARGET
    return StructureRole.ORGAN_AT_RISK


def _as_contour(points_mm: ArrayLike, index: int) -> NDArray[np.float64]:
    contour = np.array(points_mm, dtype=np.float64)
    if contour.ndim != 2 or contour.shape[1] != 3 or contour.shape[0] < 1:
        raise ValueError(f"contour {index} must have shape (n, 3) with n >= 1; got {contour.shape}")
    if not np.all(np.isfinite(contour)):
        raise ValueError(f"contour {index} contains NaN or infinite coordinates")
    contour.setflags(write=False)
    return contour


@dataclass(frozen=True, eq=False)
class Structure:
    """A delineated structure: planar contours in LPS mm.

    Parameters
    ----------
    name : str
        ROI name as delineated (e.g. "GTV", "SpinalCord").
    role : StructureRole or str
        Target, organ at risk, external outline, point or other.
    contours_mm : tuple of ndarray of shape (n, 3)
        Closed planar polygons (the last point joins the first) or, for a
        point structure, single points. LPS mm.
    frame_of_reference_uid : str
        Frame the coordinates are in ("" if unknown).
    number : int
        ROI Number in its structure set (0 if not from DICOM).
    colour_rgb : tuple of 3 ints or None
        Display colour, 0-255.
    """

    name: str
    role: StructureRole
    contours_mm: tuple[NDArray[np.float64], ...]
    frame_of_reference_uid: str = ""
    number: int = 0
    colour_rgb: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", StructureRole(self.role))
        contours = tuple(_as_contour(c, i) for i, c in enumerate(self.contours_mm))
        object.__setattr__(self, "contours_mm", contours)

    @property
    def is_empty(self) -> bool:
        """True for an ROI without any contour (planning systems write these)."""
        return len(self.contours_mm) == 0

    @property
    def points_mm(self) -> NDArray[np.float64]:
        """All contour vertices stacked, shape (n, 3)."""
        if self.is_empty:
            return np.zeros((0, 3))
        return np.concatenate(self.contours_mm, axis=0)

    def bounds_mm(self) -> NDArray[np.float64]:
        """[min, max] LPS box of all vertices, shape (2, 3).

        Raises
        ------
        ValueError
            If the structure has no contours.
        """
        if self.is_empty:
            raise ValueError(f"structure {self.name!r} has no contours, so no bounds")
        points = self.points_mm
        return np.stack([points.min(axis=0), points.max(axis=0)])
