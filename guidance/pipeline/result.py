"""Options and the immutable result of one guidance pipeline run (one scan against the plan)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from guidance.provenance import Provenance

if TYPE_CHECKING:
    from guidance.coverage import ColdSpotReport, SuggestionReport
    from guidance.detection import NeedleDetection, PlanMatch, SeedDetection
    from guidance.dose import DoseLimits, DoseReport
    from guidance.registration import RegistrationResult
    from guidance.volume import Volume

__all__ = ["SCHEMA_VERSION", "GuidanceResult", "PipelineOptions", "StageRun"]

SCHEMA_VERSION = "seedguide.result/1"


@dataclass(frozen=True)
class PipelineOptions:
    """Parameters of :func:`guidance.pipeline.run_pipeline`.

    Parameters
    ----------
    dose_margin_mm : float
        Margin around the targets' bounding box of the dose grid (planning frame), mm.
    dose_spacing_mm : float
        Dose grid spacing, mm.
    suggest : bool
        Run the extra-seed suggestions (the slowest stage); False skips them.
    limits : DoseLimits, optional
        Organ-at-risk limits checked by the metrics, hot spots and suggestions.
    forbidden_structures : tuple of str
        Names of plan structures no suggested needle track may cross.
    registration : dict
        Fields of :class:`guidance.registration.RegistrationOptions`.
    min_cold_spot_cc : float
        Cold spots smaller than this are not listed, cc.
    body_hu : float
        Body outline of the planning CT (when the plan has no EXTERNAL structure), HU.
    use_failed_registration : bool
        Continue after a FAIL verdict (the dose would be placed with a transform judged wrong).
    seed_strength_u : float, optional
        Air-kerma strength (U) of found seeds when the plan has no seeds to take it from
        (post-implant analysis of a case planned elsewhere).
    source_model_id : str, optional
        TG-43 source model of those seeds (see ``guidance.dose.available_source_models``).
    implant_datetime : datetime, optional
        When the seeds were implanted, to decay the plan's strengths from their reference
        date; default: the scan's acquisition date and time.
    """

    dose_margin_mm: float = 10.0
    dose_spacing_mm: float = 1.0
    suggest: bool = True
    limits: DoseLimits | None = None
    forbidden_structures: tuple[str, ...] = ()
    registration: dict[str, Any] = field(default_factory=dict)
    min_cold_spot_cc: float = 0.05
    body_hu: float = -400.0
    use_failed_registration: bool = False
    seed_strength_u: float | None = None
    source_model_id: str | None = None
    implant_datetime: dt.datetime | None = None

    def __post_init__(self) -> None:
        if not (self.dose_margin_mm >= 0 and self.dose_spacing_mm > 0 and self.min_cold_spot_cc >= 0):
            raise ValueError(
                "PipelineOptions: need dose_margin_mm >= 0, dose_spacing_mm > 0, min_cold_spot_cc >= 0; got "
                f"{self.dose_margin_mm}, {self.dose_spacing_mm}, {self.min_cold_spot_cc}"
            )
        if self.seed_strength_u is not None and not (0 < self.seed_strength_u < 1e3):
            raise ValueError(
                f"PipelineOptions: seed_strength_u must be in (0, 1000) U; got {self.seed_strength_u}"
            )

    def parameters(self) -> dict[str, Any]:
        """Plain values for provenance records."""
        return {
            "dose_margin_mm": self.dose_margin_mm,
            "dose_spacing_mm": self.dose_spacing_mm,
            "suggest": self.suggest,
            "limits": None if self.limits is None else repr(self.limits),
            "forbidden_structures": list(self.forbidden_structures),
            "registration": dict(self.registration),
            "min_cold_spot_cc": self.min_cold_spot_cc,
            "body_hu": self.body_hu,
            "use_failed_registration": self.use_failed_registration,
            "seed_strength_u": self.seed_strength_u,
            "source_model_id": self.source_model_id,
            "implant_datetime": None if self.implant_datetime is None else self.implant_datetime.isoformat(),
        }


@dataclass(frozen=True)
class StageRun:
    """One stage of a run: ran (with its provenance) or skipped (with the reason)."""

    stage: str
    seconds: float
    ran: bool
    reason: str
    provenance: Provenance | None


@dataclass(frozen=True, eq=False)
class GuidanceResult:
    """Everything the operator sees about one intra-procedure scan.

    Positions are LPS mm; ``*_scan_mm`` in the scan's patient frame, ``*_plan_mm``
    in the planning CT's (through ``registration.moving_to_fixed``).

    Parameters
    ----------
    scan_frame_of_reference_uid, plan_frame_of_reference_uid : str
    is_verification : bool
        The scan checks a finished implant (no more seeds to come).
    registration : RegistrationResult or None
        None when the stage did not run.
    scan_to_plan : ndarray of shape (4, 4) or None
        The transform the later stages used (None: registration FAIL, nothing mapped).
    needles, seeds : NeedleDetection, SeedDetection or None
        Found in the scan (scan frame).
    seeds_plan_mm : ndarray of shape (k, 3)
        Found seeds mapped into the planning frame (empty without a transform).
    seed_directions_plan : ndarray of shape (k, 3)
        Their unit axes; NaN rows where detection left the axis unknown.
    match : PlanMatch or None
    dose : Volume or None
        Dose of the found seeds, Gy, on a grid of the planning frame.
    dose_report : DoseReport or None
    cold_spots : ColdSpotReport or None
    suggestions : SuggestionReport or None
    warnings : tuple of str
    stages : tuple of StageRun
        In the order they were attempted.
    """

    scan_frame_of_reference_uid: str
    plan_frame_of_reference_uid: str
    is_verification: bool
    registration: RegistrationResult | None
    scan_to_plan: NDArray[np.float64] | None
    needles: NeedleDetection | None
    seeds: SeedDetection | None
    seeds_plan_mm: NDArray[np.float64]
    seed_directions_plan: NDArray[np.float64]
    match: PlanMatch | None
    dose: Volume | None = field(repr=False)
    dose_report: DoseReport | None
    cold_spots: ColdSpotReport | None = field(repr=False)
    suggestions: SuggestionReport | None = field(repr=False)
    warnings: tuple[str, ...]
    stages: tuple[StageRun, ...]

    @property
    def stage_seconds(self) -> tuple[tuple[str, float], ...]:
        """(stage name, wall seconds) of every stage attempted, in order."""
        return tuple((s.stage, s.seconds) for s in self.stages)

    @property
    def provenance(self) -> tuple[Provenance, ...]:
        """Provenance of the stages that ran."""
        return tuple(s.provenance for s in self.stages if s.provenance is not None)

    @property
    def target_d90_gy(self) -> float | None:
        """D90 of the first target, Gy (None without metrics)."""
        if self.dose_report is None or not self.dose_report.targets:
            return None
        return float(self.dose_report.targets[0].d90_gy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary, schema ``seedguide.result/1`` (see docs/result-schema.md)."""
        from guidance.pipeline.serialise import result_to_dict

        return result_to_dict(self)
