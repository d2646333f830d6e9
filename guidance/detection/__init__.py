"""Detection of needles and seeds in intra-procedure CT scans.

- :func:`detect_needles`: straight metal runs (RANSAC on metal points), tip by the
  half-level of the profile along the axis, entry where the axis crosses the skin.
- :func:`detect_seeds`: compact metal regions above the local background, counted
  by integrated intensity, touching seeds split by weighted k-means.
- :func:`needle_mask`: voxels of detected needles, to exclude from seed detection.
"""

from guidance.detection.needles import body_mask, detect_needles, needle_mask
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
    "NeedleDetection",
    "NeedleOptions",
    "SeedDetection",
    "SeedOptions",
    "body_mask",
    "detect_needles",
    "detect_seeds",
    "needle_mask",
]
