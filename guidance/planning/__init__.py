"""Seed placement: candidate needle tracks and the seed optimiser.

Shared by the post-scan seed suggestions (existing seeds give a fixed dose) and
by the simulators' planner. Pure functions of masks, tracks and options.
"""

from guidance.planning.optimiser import optimise_seed_placement
from guidance.planning.result import Feasibility, PlacedSeed, PlacementOptions, PlacementResult, SeedSet
from guidance.planning.sampling import structure_samples
from guidance.planning.tracks import (
    Track,
    TrackCandidates,
    candidate_tracks,
    cone_directions,
    template_tracks,
)

__all__ = [
    "Feasibility",
    "PlacedSeed",
    "PlacementOptions",
    "PlacementResult",
    "SeedSet",
    "Track",
    "TrackCandidates",
    "candidate_tracks",
    "cone_directions",
    "optimise_seed_placement",
    "structure_samples",
    "template_tracks",
]
