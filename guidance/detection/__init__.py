"""Detection of needles and seeds in intra-procedure CT scans.

- :func:`detect_needles`: straight, continuous metal runs (RANSAC on metal points; rows of
  separate seeds are not needles), tip by the
  half-level of the profile along the axis, entry where the axis crosses the skin.
- :func:`detect_seeds`: compact metal regions above the local background, counted
  by integrated intensity, touching seeds split by weighted k-means.
- :func:`needle_mask`: voxels of detected needles (their radius and blurred edge), to exclude
  from seed detection.
- :func:`match_to_plan`: found seeds and needles assigned to the plan's after registration
  (placed with their displacement, missing, extra; needle entry, tip and angle deviations).
"""

from guidance.detection.matching import MatchOptions, NeedleMatch, PlanMatch, SeedMatch, assign, match_to_plan
from guidance.detection.needle_mask import needle_mask
from guidance.detection.needles import body_mask, detect_needles
from guidance.detection.result import (
    DetectedNeedle,
    DetectedSeed,
    NeedleDetection,
    NeedleOptions,
    SeedDetection,
    SeedOptions,
)
from guidance.detection.seeds import detect_seeds

__all__ = [
    "DetectedNeedle",
    "DetectedSeed",
    "MatchOptions",
    "NeedleDetection",
    "NeedleMatch",
    "NeedleOptions",
    "PlanMatch",
    "SeedDetection",
    "SeedMatch",
    "SeedOptions",
    "assign",
    "body_mask",
    "detect_needles",
    "detect_seeds",
    "match_to_plan",
    "needle_mask",
]
