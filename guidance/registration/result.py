"""Options and results of the intensity-based rigid registration.

The verdict rules (documented here and in :class:`RegistrationOptions`):

- FAIL when the moving scan barely overlaps the fixed one (``overlap_fraction`` <
  ``fail_overlap``), when the images do not look alike after registration
  (normalised cross-correlation over the body < ``fail_ncc``), or when the bone
  surfaces stay apart (median distance > ``fail_bone_mm``).
- DOUBT when any of these is between its FAIL and PASS threshold (``pass_overlap``,
  ``pass_ncc``, ``pass_bone_mm``), when the scan shows too little bone to check
  (< ``min_bone_points`` bone-surface samples), or when the optimiser stopped at
  a bound of the allowed motion.
- PASS otherwise. Every rule that fired is named in ``RegistrationQuality.reasons``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from guidance.provenance import Provenance

__all__ = [
    "LevelReport",
    "Provenance",
    "RegistrationOptions",
    "RegistrationQuality",
    "RegistrationResult",
    "Verdict",
]

STAGE = "registration.rigid"


class Verdict(enum.Enum):
    """Whether the operator may rely on a registration."""

    PASS = "pass"
    DOUBT = "doubt"
    FAIL = "fail"


@dataclass(frozen=True)
class RegistrationOptions:
    """Parameters of :func:`guidance.registration.register_rigid` (keyword options).

    Parameters
    ----------
    levels_mm : tuple of float
        Voxel size of each pyramid level, coarse to fine (images are block-averaged
        by whole factors, so the real size is the nearest multiple of the native spacing).
    max_points : int
        Sample points of the moving scan per level (a random subset of its masked voxels).
    metal_hu, metal_margin_mm : float
        Voxels above ``metal_hu`` (seeds, needles) and everything within
        ``metal_margin_mm`` of them (the worst of their streaks) are left out, in both images.
    body_hu : float
        The body is the largest connected region above this HU; the rest (couch,
        immobilisation, air) is set to air, so what stays put does not pull the patient.
    couch_opening_mm : float
        Radius of the in-plane opening that cuts the couch shell off the body where
        they touch (shells up to about twice this thick are removed).
    window_hu : tuple of 2 floats
        HU are clipped to this window before block averaging.
    bone_hu, bone_weight : float
        Sample points above ``bone_hu`` (bone) weigh ``bone_weight`` times more.
    search_mm : float
        Half-width of the exhaustive translation search on the coarsest level (0: none).
    max_translation_mm, max_rotation_deg : float
        Bounds of the motion the optimiser may add to the initial transform.
    max_iterations : int
        L-BFGS-B iterations per level.
    random_seed : int
        Seeds the choice of sample points (the result is deterministic).
    pass_ncc, fail_ncc, pass_overlap, fail_overlap, pass_bone_mm, fail_bone_mm, min_bone_points
        Verdict thresholds (module docstring of :mod:`guidance.registration.result`).
    """

    levels_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    max_points: int = 20000
    metal_hu: float = 2500.0
    metal_margin_mm: float = 5.0
    body_hu: float = -400.0
    window_hu: tuple[float, float] = (-1000.0, 1600.0)
    couch_opening_mm: float = 3.0
    bone_hu: float = 250.0
    bone_weight: float = 2.0
    search_mm: float = 12.0
    max_translation_mm: float = 40.0
    max_rotation_deg: float = 15.0
    max_iterations: int = 60
    random_seed: int = 0
    pass_ncc: float = 0.7
    fail_ncc: float = 0.4
    pass_overlap: float = 0.7
    fail_overlap: float = 0.3
    pass_bone_mm: float = 1.5
    fail_bone_mm: float = 3.0
    min_bone_points: int = 50

    def __post_init__(self) -> None:
        levels = tuple(float(v) for v in self.levels_mm)
        if not levels or any(not (0.1 <= v <= 20.0) for v in levels):
            raise ValueError(f"levels_mm must be 1+ voxel sizes within [0.1, 20] mm; got {self.levels_mm}")
        object.__setattr__(self, "levels_mm", levels)
        object.__setattr__(self, "window_hu", (float(self.window_hu[0]), float(self.window_hu[1])))
        positive = ("max_points", "metal_margin_mm", "couch_opening_mm", "bone_weight", "max_translation_mm",
                    "max_rotation_deg", "max_iterations")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0 and not (name == "metal_margin_mm" and self.metal_margin_mm == 0):
                raise ValueError(f"registration option {name} must be > 0; got {getattr(self, name)}")
        if self.search_mm < 0:
            raise ValueError(f"registration option search_mm must be >= 0; got {self.search_mm}")
        if not self.window_hu[0] < self.window_hu[1]:
            raise ValueError(f"registration option window_hu must be (low, high); got {self.window_hu}")
        for low, high in (("fail_ncc", "pass_ncc"), ("fail_overlap", "pass_overlap"),
                          ("pass_bone_mm", "fail_bone_mm")):  # fmt: skip
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"registration option {low} must not exceed {high}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (provenance)."""
        values = asdict(self)
        values["levels_mm"] = list(self.levels_mm)
        values["window_hu"] = list(self.window_hu)
        return values


@dataclass(frozen=True)
class RegistrationQuality:
    """How far a registration can be trusted.

    Parameters
    ----------
    similarity_ncc : float
        Normalised cross-correlation of the moving scan and the registered fixed
        image over the moving scan's body (finest level), in [-1, 1].
    overlap_fraction : float
        Fraction of the moving scan's body (voxels of the coarsest level) that maps
        inside the fixed volume.
    bone_ncc : float
        Normalised cross-correlation over bone samples only (NaN without bone).
    bone_surface_distance_mm : float
        Median distance from the moving scan's bone surface, mapped, to the fixed
        image's bone surface, mm (NaN without bone), on the finest level built for
        both images (moving-scan levels over about 2 million voxels are only sampled,
        so about 2 mm for a 512 x 512 scan). Under about half a voxel of that level
        when perfectly aligned.
    bone_points : int
        Number of bone-surface samples behind ``bone_surface_distance_mm``.
    verdict : Verdict
    reasons : tuple of str
        The rules that lowered the verdict (empty for PASS).
    """

    similarity_ncc: float
    overlap_fraction: float
    bone_ncc: float
    bone_surface_distance_mm: float
    bone_points: int
    verdict: Verdict
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["verdict"] = self.verdict.value
        values["reasons"] = list(self.reasons)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


@dataclass(frozen=True)
class LevelReport:
    """What happened on one pyramid level."""

    spacing_mm: tuple[float, float, float]
    points: int
    iterations: int
    ncc: float
    seconds: float


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """A rigid registration of an intra-procedure scan (moving) onto the planning CT (fixed).

    Parameters
    ----------
    moving_to_fixed : ndarray of shape (4, 4)
        Maps a point of the moving scan's frame (LPS mm) into the planning frame (LPS mm).
    quality : RegistrationQuality
    levels : tuple of LevelReport
        Coarse to fine.
    provenance : Provenance
    """

    moving_to_fixed: NDArray[np.float64]
    quality: RegistrationQuality
    levels: tuple[LevelReport, ...]
    provenance: Provenance

    @property
    def verdict(self) -> Verdict:
        return self.quality.verdict

    def map_points(self, moving_points_mm: ArrayLike) -> NDArray[np.float64]:
        """Map (n, 3) moving-frame LPS mm points into the fixed (planning) frame."""
        points = np.asarray(moving_points_mm, dtype=np.float64).reshape(-1, 3)
        mapped: NDArray[np.float64] = points @ self.moving_to_fixed[:3, :3].T + self.moving_to_fixed[:3, 3]
        return mapped
