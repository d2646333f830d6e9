"""Result types of seed placement: seed sets, chosen seeds, predicted metrics, feasibility."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from guidance.dose.metrics import DoseReport
from guidance.planning.tracks import Track
from guidance.provenance import Provenance
from guidance.volume import Volume

__all__ = ["Feasibility", "PlacedSeed", "PlacementOptions", "PlacementResult", "SeedSet"]


@dataclass(frozen=True, eq=False)
class SeedSet:
    """Seeds of one source model (e.g. those already implanted).

    Parameters
    ----------
    positions_mm : ndarray of shape (k, 3)
        Seed centres, LPS mm.
    directions : ndarray of shape (k, 3)
        Seed axes (unit) or NaN rows for unknown orientation (TG-43 1D form).
    strengths_u : ndarray of shape (k,)
        Air-kerma strength, U, at the date the dose is computed for.
    source_model : str
        TG-43 data set id (e.g. "6711").
    """

    positions_mm: NDArray[np.float64]
    directions: NDArray[np.float64]
    strengths_u: NDArray[np.float64]
    source_model: str

    def __post_init__(self) -> None:
        positions = np.array(self.positions_mm, dtype=np.float64).reshape(-1, 3)
        k = positions.shape[0]
        directions = np.array(self.directions, dtype=np.float64).reshape(-1, 3)
        strengths = np.array(self.strengths_u, dtype=np.float64).reshape(-1)
        if directions.shape != (k, 3) or strengths.shape != (k,) or not np.all(np.isfinite(positions)):
            raise ValueError(
                f"SeedSet: {k} finite positions need directions ({k}, 3) and strengths_u ({k},); "
                f"got {directions.shape} and {strengths.shape}"
            )
        for name, array in (
            ("positions_mm", positions),
            ("directions", directions),
            ("strengths_u", strengths),
        ):
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @classmethod
    def empty(cls, source_model: str = "6711") -> SeedSet:
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), source_model)

    def __len__(self) -> int:
        return int(self.positions_mm.shape[0])


@dataclass(frozen=True)
class PlacementOptions:
    """Parameters of :func:`guidance.planning.optimiser.optimise_seed_placement`.

    Parameters
    ----------
    prescription_gy : float
        Prescribed total dose P; the goal is target D90 >= P.
    strength_u : float
        Air-kerma strength of each new seed, U (0.6 mCi I-125 = 0.762 U).
    source_model : str
        TG-43 data set of the new seeds.
    min_seed_distance_mm : float
        No two seeds (new or existing) closer than this.
    min_track_distance_mm : float
        No two used needle paths (entry to tip) closer than this.
    max_seed_gap_mm : float
        Largest distance between neighbouring new seeds on one track (the
        loading of a needle is contiguous: seeds 5-10 mm apart); inf: no limit.
    sample_spacing_mm : float
        Spacing of the optimiser's dose sample points in the target and organs.
    d90_goal_factor : float
        The optimiser stops at a sampled D90 >= factor x P (a margin over the
        sampling's error); raised automatically when the verified D90 falls short.
    v150_weight, v200_weight : float
        Penalty, in cm^3 of coverage per cm^3, on target volume newly above 150% / 200% of P.
    organ_limit_factor : float
        The optimiser keeps sampled organ metrics below factor x allowance.
    max_seeds : int
        At most this many new seeds.
    evaluation_spacing_mm : float
        Dose grid spacing of the verification (dose_on_grid + evaluate_plan_dose).
    evaluation_margin_mm : float
        Margin of the verification dose grid around the target and organs near it.
    verification_rounds : int
        Times the goal is raised and the selection resumed when the verified D90 is short.
    """

    prescription_gy: float
    strength_u: float
    source_model: str = "6711"
    min_seed_distance_mm: float = 5.0
    min_track_distance_mm: float = 5.0
    max_seed_gap_mm: float = 10.0
    sample_spacing_mm: float = 2.0
    d90_goal_factor: float = 1.01
    v150_weight: float = 0.1
    v200_weight: float = 0.3
    organ_limit_factor: float = 0.97
    max_seeds: int = 300
    evaluation_spacing_mm: float = 1.0
    evaluation_margin_mm: float = 10.0
    verification_rounds: int = 3

    def __post_init__(self) -> None:
        positive = (
            "prescription_gy",
            "strength_u",
            "sample_spacing_mm",
            "d90_goal_factor",
            "organ_limit_factor",
            "evaluation_spacing_mm",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"PlacementOptions.{name} must be a finite number > 0; got {value!r}")
        for name in (
            "min_seed_distance_mm",
            "min_track_distance_mm",
            "v150_weight",
            "v200_weight",
            "evaluation_margin_mm",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PlacementOptions.{name} must be a finite number >= 0; got {value!r}")
        if not self.max_seed_gap_mm >= self.min_seed_distance_mm:
            raise ValueError(
                "PlacementOptions.max_seed_gap_mm must be >= min_seed_distance_mm "
                f"({self.min_seed_distance_mm} mm); got {self.max_seed_gap_mm!r}"
            )
        if self.max_seeds < 0 or self.verification_rounds < 0:
            raise ValueError("PlacementOptions.max_seeds and verification_rounds must be >= 0")


class Feasibility(enum.Enum):
    """Whether the prescription was reached, and if not, what stopped it."""

    REACHED = "reached"
    ORGAN_LIMIT = "organ_limit"
    CANDIDATES_EXHAUSTED = "candidates_exhausted"
    SEED_LIMIT = "seed_limit"
    NO_FEASIBLE_TRACK = "no_feasible_track"
    LIMIT_EXCEEDED = "limit_exceeded"


@dataclass(frozen=True, eq=False)
class PlacedSeed:
    """A new seed: where, along which track, how strong."""

    position_mm: NDArray[np.float64]
    direction: NDArray[np.float64]
    strength_u: float
    track_index: int

    def __post_init__(self) -> None:
        for name in ("position_mm", "direction"):
            array = np.array(getattr(self, name), dtype=np.float64).reshape(3)
            array.setflags(write=False)
            object.__setattr__(self, name, array)


@dataclass(frozen=True, eq=False)
class PlacementResult:
    """New seeds, the tracks they use, predicted dose metrics and an honest feasibility statement.

    Parameters
    ----------
    seeds : tuple of PlacedSeed
        New seeds, in the order they were chosen; ``track_index`` indexes ``tracks``.
    tracks : tuple of Track
        The candidate tracks that carry new seeds.
    feasibility : Feasibility
    statement : str
        For the operator: "reached", "cannot reach prescription without
        exceeding <organ> <metric> limit", "no feasible track"...
    report : DoseReport or None
        Verified metrics of existing + new seeds: dose_on_grid, then
        evaluate_plan_dose on the masks' contours (None without any seed).
    dose : Volume or None
        The verification dose (Gy) of existing + new seeds.
    sampled_d90_gy : float
        D90 on the optimiser's sample points (for comparison with the verified one).
    n_candidates : int
        Candidate seed positions considered.
    provenance : Provenance
    """

    seeds: tuple[PlacedSeed, ...]
    tracks: tuple[Track, ...]
    feasibility: Feasibility
    statement: str
    report: DoseReport | None
    dose: Volume | None = field(repr=False)
    sampled_d90_gy: float
    n_candidates: int
    provenance: Provenance = field(repr=False)

    @property
    def reached(self) -> bool:
        return self.feasibility is Feasibility.REACHED

    @property
    def positions_mm(self) -> NDArray[np.float64]:
        """New seed centres, shape (n, 3), LPS mm."""
        return np.array([s.position_mm for s in self.seeds], dtype=np.float64).reshape(-1, 3)

    @property
    def directions(self) -> NDArray[np.float64]:
        return np.array([s.direction for s in self.seeds], dtype=np.float64).reshape(-1, 3)

    def new_seed_set(self, source_model: str) -> SeedSet:
        strengths: ArrayLike = [s.strength_u for s in self.seeds]
        return SeedSet(self.positions_mm, self.directions, np.asarray(strengths), source_model)

    def summary(self) -> dict[str, Any]:
        """Plain values: seed count, tracks, feasibility, verified target metrics."""
        target = self.report.targets[0] if self.report and self.report.targets else None
        return {
            "n_seeds": len(self.seeds),
            "n_tracks": len(self.tracks),
            "feasibility": self.feasibility.value,
            "statement": self.statement,
            "d90_gy": None if target is None else target.d90_gy,
            "v100_percent": None if target is None else target.v100_percent,
            "v150_percent": None if target is None else target.v150_percent,
            "v200_percent": None if target is None else target.v200_percent,
            "sampled_d90_gy": self.sampled_d90_gy,
        }
