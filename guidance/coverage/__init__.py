"""Coverage of the target by the seeds in the patient: cold and hot spots, extra-seed suggestions.

:func:`find_cold_spots` finds the connected parts of the target below the
prescription (and organ or target regions above their limits);
:func:`suggest_seeds` proposes the fewest extra seeds, on re-inserted or new
needle tracks, that bring the target D90 back to the prescription.
"""

from guidance.coverage.coldspots import ColdSpot, ColdSpotReport, HotSpot, find_cold_spots
from guidance.coverage.suggestions import SeedSuggestion, SuggestionOptions, SuggestionReport, suggest_seeds

__all__ = [
    "ColdSpot",
    "ColdSpotReport",
    "HotSpot",
    "SeedSuggestion",
    "SuggestionOptions",
    "SuggestionReport",
    "find_cold_spots",
    "suggest_seeds",
]
