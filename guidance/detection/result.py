"""Options and results of needle and seed detection in an intra-procedure CT.

Every position is LPS millimetres in the scan's frame (the CT's affine); every
detection carries a confidence in [0, 1] and the reasons that lowered it, so an
operator sees how sure each one is (ARCHITECTURE: "every result that an
operator acts on carries how sure it is").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance.plan import Needle, Seed
from guidance.provenance import Provenance

__all__ = [
    "DetectedNeedle",
    "DetectedSeed",
    "NeedleDetection",
    "NeedleOptions",
    "SeedDetection",
    "SeedOptions",
]

SEED_STAGE = "detection.seeds"
NEEDLE_STAGE = "detection.needles"


def _check_positive(owner: str, values: dict[str, float]) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{owner}.{name} must be a finite number > 0; got {value}")


def _frozen_point(value: Any, name: str) -> NDArray[np.float64]:
    point = np.array(value, dtype=np.float64).reshape(3)
    if name != "direction" and not np.all(np.isfinite(point)):
        raise ValueError(f"{name} must be finite; got {point.tolist()}")
    point.setflags(write=False)
    return point


@dataclass(frozen=True)
class SeedOptions:
    """Parameters of :func:`guidance.detection.detect_seeds`.

    Parameters
    ----------
    threshold_hu : float
        Voxels above this HU may be metal on slices up to ``reference_slice_mm`` thick; on
        thicker slices the level falls in proportion (a seed's partial volume). The local
        background is subtracted before anything is measured.
    reference_slice_mm : float
        Slice thickness up to which ``threshold_hu`` applies as is.
    integration_margin_mm : float
        A region's excess is integrated over its voxels grown by this distance (at least one
        voxel), so that the blurred edges of a seed count whatever the threshold cuts.
    max_extent_mm : float
        Connected regions longer than this are not seeds or seed clusters (bone, needles).
    min_fraction : float
        Regions whose integrated excess is below this fraction of one seed's are rejected
        (noise, streak fragments, tails of excluded needles). A seed between two needles
        lying in its slice sits in the dark band that joins them (beam hardening along the
        rays through all three) and keeps 0.24-0.33 of a seed's integral in simulated scans;
        the largest fragment that is no seed, over the simulated suite and procedures, holds
        0.11. A region counted as one seed from less than 0.7 of one's integral says so in
        its reasons, with confidence at most 0.7 (0.5 below half a seed).
    max_joined_cc : float
        On thick slices, regions too large for seeds but smaller than this (cc) are seeds
        joined by partial volume and streaks (bone is larger): they are cut into intensity
        basins (``basin_persistence``), and parts still too large at twice the level while
        it is below ``threshold_hu``.
    basin_persistence : float
        On thick slices, a region too large for seeds is cut into intensity basins
        (:func:`guidance.detection.components.basins`): a peak is a part of its own where it
        stands above the saddle joining it to a brighter one by this fraction of its height
        over the level (seeds apart show a deep dip; noise and one seed's two ends do not).
    max_cluster : int
        Regions estimated to hold more seeds than this are reported as rejected, not split.
    single_seed_integral : float or None
        Integrated excess HU x mm^3 of one seed; None estimates it from the scan (median of
        the compact regions), which adapts to the scanner's saturation and reconstruction.
    background_margin_mm : float
        Width of the shell around a region whose median HU is its local background.
    orientation_ratio : float
        The long axis is reported when the largest corrected variance exceeds the second by
        this factor; otherwise the orientation is unknown (NaN).
    max_orientation_uncertainty_deg : float
        The long axis is reported unknown when the voxels' extent could tilt it by more than
        this: atan((d^2 / 12) / (lambda1 - lambda2)), d the largest voxel side, lambda the
        corrected variances (about 3 deg for a seed on 1 mm voxels, 11 deg on 2 mm slices).
    max_slice_for_axial_orientation_mm : float
        On thicker slices a long axis within 45 deg of the slice normal is reported unknown.
    mirror_span_deg, max_mirror_tilt_deg : float
        A single seed within ``max_mirror_tilt_deg`` of the slice plane takes the azimuth
        (within ``mirror_span_deg`` of its principal axis's) about which its image is most
        mirror-symmetric (:func:`guidance.detection.mirror_axis.mirror_azimuth`): a streak
        crossing it tilts its principal axis more.
    needle_margin_mm, streak_sd_hu : float
        A seed closer than this to excluded (needle) voxels, or whose background shell varies
        more than this sd, has a lower confidence.
    seed_diameter_mm : float
        A seed's diameter (0.8 mm for the common I-125 models): seeds touching side by side
        are placed this far apart (:func:`guidance.detection.clusters.side_by_side`).
    min_peak_fraction : float
        A region whose brightest voxel is below this fraction of one seed's peak HU (the
        median over regions of one seed's integral in the scan) is no metal: tissue above
        a thick slice's low level, whose excess over air beside it (skin, airway) can
        integrate to a seed's.
    """

    threshold_hu: float = 500.0
    reference_slice_mm: float = 2.0
    integration_margin_mm: float = 1.0
    max_extent_mm: float = 16.0
    min_fraction: float = 0.2
    max_joined_cc: float = 10.0
    basin_persistence: float = 0.3
    max_cluster: int = 4
    single_seed_integral: float | None = None
    background_margin_mm: float = 2.5
    orientation_ratio: float = 2.0
    max_slice_for_axial_orientation_mm: float = 3.0
    max_orientation_uncertainty_deg: float = 6.0
    mirror_span_deg: float = 20.0
    max_mirror_tilt_deg: float = 20.0
    needle_margin_mm: float = 3.0
    streak_sd_hu: float = 80.0
    seed_diameter_mm: float = 0.8
    min_peak_fraction: float = 0.4

    def __post_init__(self) -> None:
        _check_positive("SeedOptions", {
            "max_extent_mm": self.max_extent_mm, "min_fraction": self.min_fraction,
            "background_margin_mm": self.background_margin_mm, "orientation_ratio": self.orientation_ratio,
            "needle_margin_mm": self.needle_margin_mm, "streak_sd_hu": self.streak_sd_hu,
            "max_slice_for_axial_orientation_mm": self.max_slice_for_axial_orientation_mm,
            "max_orientation_uncertainty_deg": self.max_orientation_uncertainty_deg,
            "mirror_span_deg": self.mirror_span_deg, "max_mirror_tilt_deg": self.max_mirror_tilt_deg,
            "reference_slice_mm": self.reference_slice_mm,
            "integration_margin_mm": self.integration_margin_mm, "max_joined_cc": self.max_joined_cc,
            "seed_diameter_mm": self.seed_diameter_mm, "min_peak_fraction": self.min_peak_fraction,
        })  # fmt: skip
        if not math.isfinite(self.threshold_hu):
            raise ValueError(f"SeedOptions.threshold_hu must be finite; got {self.threshold_hu}")
        if not 0.0 < self.basin_persistence < 1.0:
            raise ValueError(
                f"SeedOptions.basin_persistence must be within (0, 1); got {self.basin_persistence}"
            )
        if not 1 <= self.max_cluster <= 8:
            raise ValueError(f"SeedOptions.max_cluster must be within [1, 8]; got {self.max_cluster}")
        if self.single_seed_integral is not None and not self.single_seed_integral > 0:
            raise ValueError(
                f"SeedOptions.single_seed_integral must be > 0 or None; got {self.single_seed_integral}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class DetectedSeed:
    """One seed found in the scan.

    Parameters
    ----------
    position_mm : ndarray of shape (3,)
        Intensity-weighted centroid of the seed's excess HU, LPS mm.
    direction : ndarray of shape (3,)
        Unit long axis (sign arbitrary), NaN when the geometry does not show it.
    confidence : float
        In [0, 1].
    reasons : tuple of str
        Why the confidence is below 1 (empty when it is 1).
    split_from_cluster : bool
        The seed is one of several touching seeds separated by clustering.
    cluster_size : int
        Number of seeds in its connected region (1 for an isolated seed).
    """

    position_mm: NDArray[np.float64]
    direction: NDArray[np.float64]
    confidence: float
    reasons: tuple[str, ...] = ()
    split_from_cluster: bool = False
    cluster_size: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "position_mm", _frozen_point(self.position_mm, "position_mm"))
        object.__setattr__(self, "direction", _frozen_point(self.direction, "direction"))
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"DetectedSeed.confidence must be within [0, 1]; got {self.confidence}")

    @property
    def orientation_known(self) -> bool:
        return not bool(np.any(np.isnan(self.direction)))

    def to_seed(self, air_kerma_strength_u: float, source_model_id: str) -> Seed:
        """A plan :class:`~guidance.plan.Seed` at this position (for the dose of seeds in the patient)."""
        return Seed(self.position_mm, self.direction, air_kerma_strength_u, source_model_id)


@dataclass(frozen=True, eq=False)
class SeedDetection:
    """All seeds found in one scan, the regions rejected, and how it was done.

    ``rejected`` lists (centroid mm, reason) of regions that looked like metal but were
    not taken as seeds (too large a cluster, streak-like, absorbed in a needle).
    ``single_seed_integral`` is the reference integrated excess (HU x mm^3) used for counting.
    """

    seeds: tuple[DetectedSeed, ...]
    rejected: tuple[tuple[tuple[float, float, float], str], ...]
    single_seed_integral: float
    notes: tuple[str, ...]
    provenance: Provenance

    @property
    def positions_mm(self) -> NDArray[np.float64]:
        """(n, 3) LPS mm."""
        return np.array([s.position_mm for s in self.seeds]).reshape(-1, 3)

    @property
    def directions(self) -> NDArray[np.float64]:
        """(n, 3) unit vectors, NaN rows where unknown."""
        return np.array([s.direction for s in self.seeds]).reshape(-1, 3)


@dataclass(frozen=True)
class NeedleOptions:
    """Parameters of :func:`guidance.detection.detect_needles`.

    Parameters
    ----------
    metal_hu : float
        Voxels above this HU are candidate needle points (steel saturates a 12-bit CT;
        partial volume on 5 mm slices still leaves it well above cortical bone's plateau).
    min_length_mm : float
        Shorter straight runs are not needles (seeds and seed clusters are shorter).
    inlier_mm : float
        Points within this distance of a line belong to it (two needles 5 mm apart stay apart).
    max_gap_mm : float
        A run of inliers with a larger gap is two segments.
    body_hu : float
        The body is the largest connected region above this HU (entry = skin crossing).
    reference_slice_mm : float
        On thicker slices the metal level is ``metal_hu * reference_slice_mm / thickness``
        (the needle's partial volume).
    bone_hu, ring_mm, max_ring_fraction : float
        Bone rejection: a candidate voxel with more than 3 of 8 in-plane neighbours
        ``ring_mm`` away above ``bone_hu``, or a run with more than ``max_ring_fraction``
        of the samples ``ring_mm`` around its axis above ``bone_hu``, is bone.
    min_continuity : float
        A run is a needle when the intensity along its axis stays above half-way between its
        plateau and the tissue around it over at least this fraction of its length (steel is
        continuous; a row of separate 4.5 mm seeds covers seed length / pitch of it: 0.56 at
        8 mm, 0.75 at 6 mm) and does not fall to the tissue at a regular pitch.
    needle_diameter_mm : float
        Outer diameter of the needles (18G: 1.27 mm); with the scan's voxel size and
        ``edge_blur_mm`` it sets the radius of :func:`guidance.detection.needle_mask`.
    edge_blur_mm : float
        Distance beyond the voxels the metal touches over which a reconstructed metal edge
        falls to the tissue: about two standard deviations of the scanner's point spread
        (0.4-0.6 mm for an in-plane resolution of 0.9-1.4 mm FWHM).
    ransac_trials, random_seed : int
        Trials per line of the random sample search, and the seed of its generator.
    max_needles : int
        Stop after this many lines.
    min_entering_mm, skin_reach_mm : float
        A straight run shorter than ``min_length_mm`` (but at least ``min_entering_mm``) is
        a needle being inserted when its outer end is within ``skin_reach_mm`` of the skin.
    dimmed_fraction : float
        Needles lying in a slice darken themselves (their own rays' deficit): the points no
        needle explains are searched again from this fraction of the metal level (1: not).
    """

    metal_hu: float = 1500.0
    min_length_mm: float = 20.0
    inlier_mm: float = 1.6
    max_gap_mm: float = 6.0
    body_hu: float = -400.0
    reference_slice_mm: float = 2.0
    bone_hu: float = 300.0
    ring_mm: float = 3.0
    max_ring_fraction: float = 0.4
    min_continuity: float = 0.8
    needle_diameter_mm: float = 1.27
    edge_blur_mm: float = 1.0
    ransac_trials: int = 300
    random_seed: int = 0
    max_needles: int = 40
    min_entering_mm: float = 8.0
    skin_reach_mm: float = 3.0
    dimmed_fraction: float = 0.6

    def __post_init__(self) -> None:
        _check_positive("NeedleOptions", {
            "min_length_mm": self.min_length_mm, "inlier_mm": self.inlier_mm, "max_gap_mm": self.max_gap_mm,
            "ransac_trials": self.ransac_trials, "max_needles": self.max_needles,
            "reference_slice_mm": self.reference_slice_mm, "ring_mm": self.ring_mm,
            "max_ring_fraction": self.max_ring_fraction, "min_continuity": self.min_continuity,
            "needle_diameter_mm": self.needle_diameter_mm, "edge_blur_mm": self.edge_blur_mm,
            "min_entering_mm": self.min_entering_mm, "skin_reach_mm": self.skin_reach_mm,
        })  # fmt: skip
        if not self.min_continuity <= 1.0:
            raise ValueError(f"NeedleOptions.min_continuity must be within (0, 1]; got {self.min_continuity}")
        if not 0.0 < self.dimmed_fraction <= 1.0:
            raise ValueError(f"NeedleOptions.dimmed_fraction must be in (0, 1]; got {self.dimmed_fraction}")
        for name in ("metal_hu", "body_hu", "bone_hu"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"NeedleOptions.{name} must be finite; got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class DetectedNeedle:
    """One needle found in the scan, LPS mm.

    Parameters
    ----------
    entry_mm : ndarray of shape (3,)
        Where the needle crosses the skin (or its end nearest the skin when the skin
        crossing is not in the scan: see ``entry_in_scan``).
    tip_mm : ndarray of shape (3,)
        Where the intensity along the needle falls to half its plateau.
    direction : ndarray of shape (3,)
        Unit vector from entry to tip.
    length_in_body_mm : float
    confidence : float
    reasons : tuple of str
    tip_outside_scan : bool
        The needle runs out of the scanned range before its tip: ``tip_mm`` is the last point seen.
    entry_in_scan : bool
        The skin crossing was found within the scan.
    points_mm : ndarray of shape (n, 3)
        The metal points the line was fitted to.
    """

    entry_mm: NDArray[np.float64]
    tip_mm: NDArray[np.float64]
    direction: NDArray[np.float64]
    length_in_body_mm: float
    confidence: float
    reasons: tuple[str, ...]
    tip_outside_scan: bool
    entry_in_scan: bool
    points_mm: NDArray[np.float64]

    def __post_init__(self) -> None:
        for name in ("entry_mm", "tip_mm", "direction"):
            object.__setattr__(self, name, _frozen_point(getattr(self, name), name))
        points = np.array(self.points_mm, dtype=np.float64).reshape(-1, 3)
        points.setflags(write=False)
        object.__setattr__(self, "points_mm", points)
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"DetectedNeedle.confidence must be within [0, 1]; got {self.confidence}")

    def to_needle(self, number: int = 0, label: str = "") -> Needle:
        """A plan :class:`~guidance.plan.Needle` with this entry and tip."""
        return Needle(self.entry_mm, self.tip_mm, (), number, label)

    def distance_mm(self, points_mm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Distance of (n, 3) LPS points from the entry-tip segment, mm."""
        points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        axis = self.tip_mm - self.entry_mm
        length = float(np.linalg.norm(axis))
        t = np.clip((points - self.entry_mm) @ axis / max(length**2, 1e-12), 0.0, 1.0)
        distance: NDArray[np.float64] = np.linalg.norm(points - (self.entry_mm + t[:, None] * axis), axis=1)
        return distance


@dataclass(frozen=True, eq=False)
class NeedleDetection:
    """All needles found in one scan and how it was done."""

    needles: tuple[DetectedNeedle, ...]
    notes: tuple[str, ...]
    provenance: Provenance
