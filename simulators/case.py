"""A whole synthetic case: patient, seed plan, procedure scans and their ground truth.

:func:`plan_case` plans a permanent I-125 implant on a phantom patient
(:mod:`simulators.phantom`) the way a planner would, with the shared planning
code of :mod:`guidance.planning`:

1. Needle tracks: :func:`guidance.planning.candidate_tracks` with the GTV as
   target, the body as skin, and the phantom's bones (mandible, vertebrae),
   spinal cord and carotid arteries as forbidden structures (3 mm margin).
   Directions come from :func:`guidance.planning.cone_directions` around an
   insertion axis chosen from the tumour location (lateral from the tumour's
   side for neck nodes, the parotid bed and the nasopharynx; anterior for the
   oral cavity), so needles are non-coplanar; parallel tracks are
   ``track_spacing_mm`` apart and used tracks at least 5 mm apart.
2. Seeds: :func:`guidance.planning.optimise_seed_placement` chooses positions
   every ``seed_step_mm`` along the tracks until the verified GTV D90 reaches
   the prescription. Seed strength: ``activity_mci`` converted once with
   :func:`guidance.plan.air_kerma_strength_from_mci` (I-125, model 6711).
3. The plan: one :class:`guidance.plan.Needle` per used track (entry at the
   skin, tip at the deepest target point or 2.5 mm beyond the deepest seed's
   centre, whichever is deeper; seeds tip first) and one
   :class:`guidance.plan.Seed` per chosen position (direction along its needle).

:func:`write_case` writes a case folder (``python -m simulators case``)::

    DIR/case.json            seed, scenario, size, plan summary, timings, scan list
    DIR/plan/CT/*.dcm        planning CT (planning frame of reference)
    DIR/plan/RS/*.dcm        RT Structure Set (references the planning CT)
    DIR/plan/RP/*.dcm        RT Plan (references the structure set)
    DIR/scans/NN/*.dcm       intra-procedure scan NN (01, 02...), own series and frame
    DIR/scans/NN/truth.json  its ground truth (:func:`simulators.procedure.scan_truth`)

All objects share one :class:`guidance.dicomio.dataset.StudyContext` (patient
and study); the plan objects use its frame of reference.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from guidance.dicomio.ct import write_ct_series
from guidance.dicomio.dataset import StudyContext, save
from guidance.dicomio.rtplan_writer import write_rtplan
from guidance.dicomio.rtstruct import write_rtstruct
from guidance.plan import Isotope, Needle, Plan, Seed, SourceModel, air_kerma_strength_from_mci
from guidance.planning import (
    PlacementOptions,
    PlacementResult,
    TrackCandidates,
    candidate_tracks,
    cone_directions,
    optimise_seed_placement,
)
from guidance.volume import Volume
from simulators.phantom import Patient, PhantomConfig, TumourLocation, make_patient, structure_masks
from simulators.procedure import get_scenario, iter_scans, simulate_procedure
from simulators.push import PushOptions, PushSummary, PushTarget, push

__all__ = [
    "CasePlan",
    "CaseSize",
    "PlanOptions",
    "insertion_axis",
    "phantom_config",
    "plan_case",
    "plan_datasets",
    "stream_case",
    "write_case",
]

logger = logging.getLogger(__name__)

#: Structures no needle may cross (those of the phantom that exist on the grid are used).
FORBIDDEN = ("Mandible", "Vertebrae", "SpinalCord", "Carotid_L", "Carotid_R")
#: Source of the seeds: Oncura / GE model 6711 (TG-43U1 consensus data "6711").
SOURCE_6711 = SourceModel("6711", Isotope.I125, Isotope.I125.half_life_days, "GE Healthcare (Oncura)")
#: The needle tip lies at least this far beyond the deepest seed's centre (half a 4.5 mm seed + 0.25).
_TIP_BEYOND_SEED_MM = 2.5
#: Patient-frame z (mm) of the middle of the small planning CT per location (the tumour's level).
_SMALL_CENTRE_Z_MM = {
    TumourLocation.NECK_NODE: -15.0,
    TumourLocation.ORAL_CAVITY: 20.0,
    TumourLocation.NASOPHARYNX: 45.0,
    TumourLocation.PAROTID_BED: 30.0,
}


class CaseSize(enum.Enum):
    """Planning CT presets: ``small`` (fast, for tests) and ``default`` (a clinical-like CT)."""

    SMALL = "small"
    DEFAULT = "default"


def phantom_config(
    size: CaseSize | str = CaseSize.SMALL,
    location: TumourLocation | str = TumourLocation.NECK_NODE,
    *,
    frame_of_reference_uid: str = "",
) -> PhantomConfig:
    """The phantom of a size preset.

    ``small``: 256 x 256 pixels of 1 mm, 40 slices of 2 mm centred on the tumour's level,
    an 8 cm^3 GTV. ``default``: :class:`PhantomConfig` defaults (512 x 512 of 0.7 mm,
    60 slices of 2 mm) with a 20 cm^3 GTV.
    """
    where = TumourLocation(location)
    if CaseSize(size) is CaseSize.SMALL:
        return PhantomConfig(
            rows=256, columns=256, pixel_spacing_mm=1.0, slice_thickness_mm=2.0, slices=40,
            centre_z_mm=_SMALL_CENTRE_Z_MM[where], gtv_volume_cc=8.0, location=where,
            frame_of_reference_uid=frame_of_reference_uid,
        )  # fmt: skip
    return PhantomConfig(gtv_volume_cc=20.0, location=where, frame_of_reference_uid=frame_of_reference_uid)


@dataclass(frozen=True)
class PlanOptions:
    """How the simulated planner plans (see the module docstring).

    Parameters
    ----------
    prescription_gy : float
        Total prescribed dose, 110-160 Gy; the goal is GTV D90 >= it.
    activity_mci : float
        Apparent activity of each I-125 seed, 0.4-0.8 mCi (converted to U once).
    track_spacing_mm : float
        Distance between parallel candidate tracks, 5-10 mm.
    seed_step_mm : float
        Distance between candidate seed positions along a track (and the minimum
        distance between seeds), 5-10 mm.
    cone_half_angle_deg, cone_step_deg : float
        Insertion directions: a cone around the insertion axis (0-60 degrees).
    margin_mm : float
        Clearance of every needle path from the forbidden structures.
    max_length_mm : float
        Longest needle path from the skin to the tip.
    """

    prescription_gy: float = 145.0
    activity_mci: float = 0.6
    track_spacing_mm: float = 7.0
    seed_step_mm: float = 5.0
    cone_half_angle_deg: float = 30.0
    cone_step_deg: float = 15.0
    margin_mm: float = 3.0
    max_length_mm: float = 150.0

    def __post_init__(self) -> None:
        checks = [
            ("prescription_gy", self.prescription_gy, 110.0, 160.0),
            ("activity_mci", self.activity_mci, 0.4, 0.8),
            ("track_spacing_mm", self.track_spacing_mm, 5.0, 10.0),
            ("seed_step_mm", self.seed_step_mm, 5.0, 10.0),
            ("cone_half_angle_deg", self.cone_half_angle_deg, 0.0, 60.0),
            ("cone_step_deg", self.cone_step_deg, 1.0, 60.0),
            ("margin_mm", self.margin_mm, 0.0, 20.0),
            ("max_length_mm", self.max_length_mm, 20.0, 300.0),
        ]
        for name, value, low, high in checks:
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"PlanOptions.{name} must be within [{low}, {high}]; got {value}")

    @property
    def strength_u(self) -> float:
        """Air-kerma strength of each seed, U (I-125, 1.270 U per mCi)."""
        return air_kerma_strength_from_mci(self.activity_mci, Isotope.I125)


@dataclass(frozen=True, eq=False)
class CasePlan:
    """The plan of a case and how it was made.

    Parameters
    ----------
    plan : Plan
        Planning frame of reference; needles numbered 1.. with labels "N1"...
    placement : PlacementResult
        The optimiser's result (verified metrics in ``placement.report``).
    tracks : TrackCandidates
        Every feasible candidate track and why the others were rejected.
    insertion_axis : ndarray of shape (3,)
        Axis of the cone of directions (unit, into the patient).
    forbidden : tuple of str
        Structures the needles avoid.
    seconds : dict of str to float
        Wall time of the stages ("masks", "tracks", "placement").
    """

    plan: Plan
    placement: PlacementResult
    tracks: TrackCandidates
    insertion_axis: NDArray[np.float64]
    forbidden: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain values for case.json."""
        return {
            **self.placement.summary(),
            "n_needles": len(self.plan.needles),
            "prescription_gy": self.plan.prescription_gy,
            "strength_u": float(self.plan.seeds[0].air_kerma_strength_u) if self.plan.seeds else None,
            "insertion_axis": self.insertion_axis.tolist(),
            "forbidden": list(self.forbidden),
            "candidate_tracks": len(self.tracks.tracks),
            "rejected_lines": dict(self.tracks.rejected),
            "seconds": dict(self.seconds),
        }


def insertion_axis(patient: Patient) -> NDArray[np.float64]:
    """Preferred insertion direction (unit, LPS, into the patient) for the tumour's location.

    Lateral (from the tumour's side towards the midline: -x for a left tumour, +x for a
    right one) for neck nodes, the parotid bed and the nasopharynx; anterior (+y, going
    posterior) for the oral cavity.
    """
    if patient.location is TumourLocation.ORAL_CAVITY:
        return np.array([0.0, 1.0, 0.0])
    side = 1.0 if patient.model.side == "left" else -1.0
    return np.array([-side, 0.0, 0.0])


def _needles_and_seeds(placement: PlacementResult, strength_u: float) -> tuple[list[Needle], list[Seed]]:
    """Plan needles (entry at the skin, tip at the track's end) and seeds, tip first on each needle."""
    needles: list[Needle] = []
    seeds: list[Seed] = []
    for k, track in enumerate(placement.tracks):
        mine = [s for s in placement.seeds if s.track_index == k]
        mine.sort(key=lambda s: -float(np.dot(s.position_mm - track.entry_mm, track.direction)))
        first = len(seeds)
        seeds += [Seed(s.position_mm, track.direction, strength_u, SOURCE_6711.model_id, k) for s in mine]
        # The tip lies beyond the deepest seed's far end (a seed leaves the needle at its tip).
        deepest = float(np.dot(mine[0].position_mm - track.entry_mm, track.direction)) if mine else 0.0
        tip = track.entry_mm + max(track.target_depth_mm[1], deepest + _TIP_BEYOND_SEED_MM) * track.direction
        needles.append(Needle(track.entry_mm, tip, tuple(range(first, len(seeds))), k + 1, f"N{k + 1}"))
    return needles, seeds


def plan_case(
    patient: Patient,
    options: PlanOptions | None = None,
    *,
    strength_reference: dt.datetime | None = None,
    label: str = "simulated plan",
) -> CasePlan:
    """Plan needles and seeds on ``patient`` (see the module docstring).

    Returns
    -------
    CasePlan
        In ``patient.ct``'s frame of reference; the seeds have their strength at
        ``strength_reference`` (their calibration; None: unknown).

    Raises
    ------
    ValueError
        When no feasible track reaches the tumour or the prescription cannot be
        reached (the optimiser's statement says why).
    """
    opts = options or PlanOptions()
    grid = patient.ct.grid
    started = time.perf_counter()
    masks = structure_masks(patient.model, grid)
    forbidden = tuple(name for name in FORBIDDEN if name in masks and masks[name].any())
    seconds = {"masks": time.perf_counter() - started}
    axis = insertion_axis(patient)
    directions = cone_directions(axis, half_angle_deg=opts.cone_half_angle_deg, step_deg=opts.cone_step_deg)
    target, body = Volume.on_grid(grid, masks["GTV"]), Volume.on_grid(grid, masks["BODY"])
    started = time.perf_counter()
    tracks = candidate_tracks(
        target, body, {name: Volume.on_grid(grid, masks[name]) for name in forbidden},
        directions=directions, track_spacing_mm=opts.track_spacing_mm, seed_step_mm=opts.seed_step_mm,
        margin_mm=opts.margin_mm, max_length_mm=opts.max_length_mm,
    )  # fmt: skip
    seconds["tracks"] = time.perf_counter() - started
    placement_options = PlacementOptions(
        prescription_gy=opts.prescription_gy, strength_u=opts.strength_u, source_model=SOURCE_6711.model_id,
        min_seed_distance_mm=opts.seed_step_mm, min_track_distance_mm=5.0,
    )  # fmt: skip
    started = time.perf_counter()
    placement = optimise_seed_placement(tracks, target, options=placement_options, body=body)
    seconds["placement"] = time.perf_counter() - started
    if not placement.reached:
        raise ValueError(f"the simulated planner could not plan this patient: {placement.statement}")
    needles, seeds = _needles_and_seeds(placement, opts.strength_u)
    plan = Plan(
        frame_of_reference_uid=grid.frame_of_reference_uid, seeds=tuple(seeds), needles=tuple(needles),
        sources={SOURCE_6711.model_id: SOURCE_6711}, structures=patient.structures,
        prescription_gy=opts.prescription_gy, label=label,
        strength_reference_datetime=strength_reference,
    )  # fmt: skip
    logger.info("plan: %d seeds on %d needles, %s", len(seeds), len(needles), placement.statement)
    return CasePlan(plan, placement, tracks, axis, forbidden, seconds)


def plan_datasets(patient: Patient, case_plan: CasePlan, context: StudyContext) -> list[Dataset]:
    """Planning CT slices, then the RT Structure Set, then the RT Plan, all in ``context``."""
    ct = write_ct_series(
        patient.ct, context, series_number=1, series_description="Planning CT",
        kvp=120.0, patient_position="HFS", content_datetime=context.study_datetime,
    )  # fmt: skip
    rtstruct = write_rtstruct(patient.structures, context, referenced_ct=ct, label="Phantom")
    plan = replace(
        case_plan.plan,
        planning_ct_series_uid=str(ct[0].SeriesInstanceUID),
        structure_set_uid=str(rtstruct.SOPInstanceUID),
    )
    rtplan = write_rtplan(plan, context, structure_set_uid=str(rtstruct.SOPInstanceUID))
    return [*ct, rtstruct, rtplan]


def _patient_and_plan(
    seed: int,
    size: CaseSize | str,
    location: TumourLocation | str,
    context: StudyContext,
    options: PlanOptions,
) -> tuple[Patient, CasePlan, float]:
    started = time.perf_counter()
    config = phantom_config(size, location, frame_of_reference_uid=context.frame_of_reference_uid)
    patient = make_patient(config, seed=seed)
    patient_s = time.perf_counter() - started
    # The seeds are calibrated on the morning of the implant.
    reference = context.study_datetime.replace(hour=8, minute=0, second=0)
    return patient, plan_case(patient, options, strength_reference=reference), patient_s


def write_case(
    folder: str | os.PathLike[str],
    *,
    seed: int = 0,
    scenario: str = "standard",
    size: CaseSize | str = CaseSize.SMALL,
    location: TumourLocation | str = TumourLocation.NECK_NODE,
    options: PlanOptions | None = None,
    context: StudyContext | None = None,
) -> dict[str, Any]:
    """Generate a case and write it into ``folder`` (layout in the module docstring).

    Returns
    -------
    dict
        What case.json holds: inputs, plan summary, timings (s) and one entry per scan.
    """
    ctx = context or StudyContext(patient_id=f"SIM-{seed:06d}", patient_name=f"PHANTOM^SEED{seed}")
    out = Path(folder)
    patient, case_plan, patient_s = _patient_and_plan(seed, size, location, ctx, options or PlanOptions())
    started = time.perf_counter()
    plan_objects = plan_datasets(patient, case_plan, ctx)
    for name, modality in (("CT", "CT"), ("RS", "RTSTRUCT"), ("RP", "RTPLAN")):
        save([d for d in plan_objects if d.Modality == modality], out / "plan" / name)
    write_s = time.perf_counter() - started
    procedure = simulate_procedure(patient, case_plan.plan, get_scenario(scenario), seed=seed, context=ctx)
    scans = []
    started = time.perf_counter()
    for item in iter_scans(patient, procedure, ctx):
        where = out / "scans" / f"{item.scan.index:02d}"
        save(item.datasets, where)
        (where / "truth.json").write_text(json.dumps(item.truth, indent=1))
        scans.append({"index": item.scan.index, "folder": str(where.relative_to(out)),
                      "n_seeds": len(item.scan.seeds), "n_needles": len(item.scan.needles),
                      "render_s": item.render_s})  # fmt: skip
    summary = {
        "seed": seed, "scenario": procedure.scenario.name, "size": CaseSize(size).value,
        "location": patient.location.value, "side": patient.model.side,
        "gtv_volume_cc": patient.gtv_volume_cc, "options": asdict(options or PlanOptions()),
        "plan": case_plan.summary(), "procedure": procedure.summary(), "scans": scans,
        "seconds": {"patient": patient_s, **case_plan.seconds, "write_plan": write_s,
                    "scans": time.perf_counter() - started},
    }  # fmt: skip
    (out / "case.json").write_text(json.dumps(summary, indent=1))
    logger.info("case written to %s: %d scans", out, len(scans))
    return summary


def stream_case(
    target: PushTarget,
    *,
    seed: int = 0,
    scenario: str = "standard",
    size: CaseSize | str = CaseSize.SMALL,
    location: TumourLocation | str = TumourLocation.NECK_NODE,
    interval_s: float = 10.0,
    options: PlanOptions | None = None,
    push_options: PushOptions | None = None,
    context: StudyContext | None = None,
) -> list[PushSummary]:
    """Generate a case and push it to ``target`` like a planning system and a scanner would.

    The planning CT, RT Structure Set and RT Plan go first; then each scan is
    rendered and sent, at least ``interval_s`` seconds after the previous send started.

    Returns
    -------
    list of PushSummary
        One for the plan objects, then one per scan.
    """
    if not (math.isfinite(interval_s) and interval_s >= 0):
        raise ValueError(f"interval_s must be a finite number >= 0; got {interval_s}")
    ctx = context or StudyContext(patient_id=f"SIM-{seed:06d}", patient_name=f"PHANTOM^SEED{seed}")
    patient, case_plan, _ = _patient_and_plan(seed, size, location, ctx, options or PlanOptions())
    procedure = simulate_procedure(patient, case_plan.plan, get_scenario(scenario), seed=seed, context=ctx)
    last = time.monotonic()
    summaries = [push(plan_datasets(patient, case_plan, ctx), target, push_options)]
    logger.info("plan objects sent: %d of %d stored", *_stored(summaries[-1]))
    for item in iter_scans(patient, procedure, ctx):
        time.sleep(max(0.0, last + interval_s - time.monotonic()))
        last = time.monotonic()
        summaries.append(push(item.datasets, target, push_options))
        logger.info("scan %d sent: %d of %d stored", item.scan.index, *_stored(summaries[-1]))
    return summaries


def _stored(summary: PushSummary) -> tuple[int, int]:
    return len(summary.results) - len(summary.failed), len(summary.results)
