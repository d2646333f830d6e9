"""Brachytherapy RT Plan of a permanent seed implant: writing.

The encoding (DICOM PS3.3 C.8.8.15) is the one :mod:`guidance.dicomio.rtplan`
reads:
one source item per distinct (source model, strength), so every seed reads
back with its strength; one application setup; per needle one channel per
source item its seeds use, all naming the needle as their Source Applicator
and running tip, seed pairs, entry; one two-point channel per seed on no
needle. Channel Total Time is the mean life (s) and Total Reference Air Kerma
the sum of strength x mean life, as Oncentra writes them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage

from guidance.dicomio.dataset import StudyContext, new_dataset, new_uid
from guidance.dicomio.rtplan import (
    COLLINEAR_TOLERANCE_MM,
    MIN_NEEDLE_PATH_MM,
    RT_PLAN_STORAGE,
    SEED_TREATMENT_TYPES,
)
from guidance.dicomio.values import ds_text as _ds
from guidance.plan import Plan, SourceModel

__all__ = ["write_rtplan"]

logger = logging.getLogger(__name__)

_SERIES_NUMBER = 3


def write_rtplan(
    plan: Plan,
    context: StudyContext,
    *,
    structure_set_uid: str = "",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    treatment_type: str = "LDR",
) -> Dataset:
    """Encode ``plan`` as a brachytherapy RT Plan (RT Plan Storage).

    Parameters
    ----------
    plan : Plan
        Positions in LPS mm in ``context``'s frame of reference.
    context : StudyContext
        Patient, study and frame of reference shared with the CT and RTSTRUCT.
    structure_set_uid : str
        RT Structure Set referenced (default: ``plan.structure_set_uid``).
        With one, RT Plan Geometry is PATIENT; without, TREATMENT_DEVICE, as
        PS3.3 C.8.8.9 requires (PATIENT needs a Referenced Structure Set).
    series_instance_uid, sop_instance_uid : str, optional
        New UIDs when not given.
    treatment_type : {"LDR", "MANUAL", "PERMANENT"}
        Brachy Treatment Type written.

    Returns
    -------
    Dataset
        With file meta; see the module notes for the encoding. Unused source
        models are not written. A seed on a needle with unknown orientation
        reads back along the needle. RT Plan Label (SH) keeps the first 16
        characters of ``plan.label`` ("seed plan" when empty); RT Plan Name
        the first 64. An unknown strength reference date is written empty.

    Raises
    ------
    ValueError
        A plan without seeds, seeds of zero strength, a seed on two needles
        or on a needle the plan does not have, a seed off its needle's line,
        a needle shorter than 10 mm, or a plan in another frame of reference
        than ``context``. Each of these would not read back as written.
    """
    kind = _check_writable(plan, context, treatment_type)
    structure_set = structure_set_uid or plan.structure_set_uid
    ds = new_dataset(
        context,
        sop_class_uid=RT_PLAN_STORAGE,
        modality="RTPLAN",
        series_instance_uid=series_instance_uid or new_uid(),
        series_number=_SERIES_NUMBER,
        series_description="seed implant plan",
        sop_instance_uid=sop_instance_uid,
    )
    ds.OperatorsName = ""
    ds.RTPlanLabel = (plan.label or "seed plan")[:16]
    ds.RTPlanName = (plan.label or "seed plan")[:64]
    ds.RTPlanDate, ds.RTPlanTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.RTPlanGeometry = "PATIENT" if structure_set else "TREATMENT_DEVICE"
    if structure_set:
        ds.ReferencedStructureSetSequence = [_reference(RTStructureSetStorage, structure_set)]
    keys = list(dict.fromkeys((s.source_model_id, s.air_kerma_strength_u) for s in plan.seeds))
    ds.BrachyTreatmentTechnique = "INTERSTITIAL"
    ds.BrachyTreatmentType = kind
    machine = Dataset()
    machine.TreatmentMachineName = "Manual Loading"
    ds.TreatmentMachineSequence = [machine]
    ds.SourceSequence = [
        _source_dataset(n + 1, plan.sources[m], s, plan.strength_reference_datetime)
        for n, (m, s) in enumerate(keys)
    ]
    ds.ApplicationSetupSequence = [_application_setup(plan, keys)]
    ds.FractionGroupSequence = [_fraction_group(plan.prescription_gy)]
    if plan.prescription_gy is not None:
        target = Dataset()
        target.DoseReferenceNumber = 1
        target.DoseReferenceUID = new_uid()
        target.DoseReferenceStructureType = "SITE"
        target.DoseReferenceDescription = "prescription"
        target.DoseReferenceType = "TARGET"
        target.TargetPrescriptionDose = _ds(plan.prescription_gy)
        ds.DoseReferenceSequence = [target]
    return ds


def _check_writable(plan: Plan, context: StudyContext, treatment_type: str) -> str:
    kind = str(treatment_type).strip().upper()
    if kind not in SEED_TREATMENT_TYPES:
        raise ValueError(f"treatment_type must be one of {SEED_TREATMENT_TYPES}; got {treatment_type!r}")
    if plan.frame_of_reference_uid and plan.frame_of_reference_uid != context.frame_of_reference_uid:
        raise ValueError(
            f"plan positions are in frame {plan.frame_of_reference_uid}, the context's frame is "
            f"{context.frame_of_reference_uid}: write with a context of the plan's frame"
        )
    if not plan.seeds:
        raise ValueError("plan has no seeds: nothing to write")
    weak = [i for i, s in enumerate(plan.seeds) if not s.air_kerma_strength_u > 0]
    if weak:
        raise ValueError(f"seeds {weak} have air-kerma strength 0 U; a seed plan needs real sources")
    stray = [i for i, s in enumerate(plan.seeds) if s.needle_index not in (None, *range(len(plan.needles)))]
    if stray:
        raise ValueError(f"seeds {stray} are on needles the plan does not have ({len(plan.needles)} needles)")
    for k in range(len(plan.needles)):
        _needle_members(plan, k)
    return kind


def _needle_members(plan: Plan, k: int) -> list[int]:
    """Seeds of needle ``k``, tip first; checks they can be written and read back."""
    needle = plan.needles[k]
    members = list(
        dict.fromkeys([*needle.seed_indices, *(i for i, s in enumerate(plan.seeds) if s.needle_index == k)])
    )
    for i in members:
        owners = [
            j for j, n in enumerate(plan.needles) if i in n.seed_indices or plan.seeds[i].needle_index == j
        ]
        if len(owners) > 1:
            raise ValueError(f"seed {i} is on needles {owners}; a seed is on one needle at most")
    if needle.length_mm < MIN_NEEDLE_PATH_MM:
        raise ValueError(
            f"needle {k} is {needle.length_mm:.1f} mm long: needles shorter than {MIN_NEEDLE_PATH_MM} mm "
            "cannot be told from a seed's own control points and would not read back"
        )
    axis = needle.direction
    for i in members:
        offset = plan.seeds[i].position_mm - needle.entry_mm
        if np.linalg.norm(offset - np.dot(offset, axis) * axis) > COLLINEAR_TOLERANCE_MM:
            raise ValueError(f"seed {i} is more than {COLLINEAR_TOLERANCE_MM} mm off the line of needle {k}")
    return sorted(members, key=lambda i: -float(np.dot(plan.seeds[i].position_mm, axis)))


def _reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    return ref


def _source_dataset(
    number: int, model: SourceModel, strength_u: float, reference: dt.datetime | None
) -> Dataset:
    if len(model.model_id) > 64:
        raise ValueError(f"source model id {model.model_id!r} is longer than 64 characters")
    item = Dataset()
    item.SourceNumber = number
    item.SourceType = "CYLINDER"
    if len(model.model_id) <= 16:
        item.SourceModelID = model.model_id
    item.SourceDescription = model.model_id
    if model.manufacturer:
        item.SourceManufacturer = model.manufacturer[:64]
    item.SourceIsotopeName = model.isotope.value
    item.SourceIsotopeHalfLife = _ds(model.half_life_days)
    item.SourceStrengthUnits = "AIR_KERMA_RATE"
    item.ReferenceAirKermaRate = _ds(strength_u)
    if reference is None:
        logger.warning("plan has no strength reference date: SourceStrengthReferenceDate written empty")
    item.SourceStrengthReferenceDate = reference.strftime("%Y%m%d") if reference else ""
    item.SourceStrengthReferenceTime = reference.strftime("%H%M%S.%f") if reference else ""
    return item


def _application_setup(plan: Plan, keys: list[tuple[str, float]]) -> Dataset:
    channels: list[Dataset] = []
    for k, needle in enumerate(plan.needles):
        members = _needle_members(plan, k)
        by_source = {
            n: [
                i
                for i in members
                if (plan.seeds[i].source_model_id, plan.seeds[i].air_kerma_strength_u) == key
            ]
            for n, key in enumerate(keys, start=1)
        }
        for number, seeds in [(n, s) for n, s in by_source.items() if s] or [(1, [])]:
            channel = _channel(plan, seeds, number, len(channels) + 1, (needle.tip_mm, needle.entry_mm))
            channel.SourceApplicatorNumber = needle.number or k + 1
            channel.SourceApplicatorID = f"NEEDLE {k + 1}"
            channel.SourceApplicatorType = "RIGID"
            channel.SourceApplicatorLength = _ds(needle.length_mm)
            if needle.label:
                channel.SourceApplicatorName = needle.label[:64]
            channels.append(channel)
    on_needles = {i for k in range(len(plan.needles)) for i in _needle_members(plan, k)}
    for i, seed in enumerate(plan.seeds):
        if i not in on_needles:
            number = keys.index((seed.source_model_id, seed.air_kerma_strength_u)) + 1
            channels.append(_channel(plan, [i], number, len(channels) + 1, None))
    setup = Dataset()
    setup.ApplicationSetupType = "OTHER"
    setup.ApplicationSetupNumber = 1
    setup.ApplicationSetupName = "seed implant"
    # Total Reference Air Kerma: sum of strength x mean life (µGy at 1 m), as Oncentra writes it.
    total = sum(s.air_kerma_strength_u * plan.sources[s.source_model_id].mean_life_h for s in plan.seeds)
    setup.TotalReferenceAirKerma = _ds(total)
    setup.ChannelSequence = channels
    return setup


def _channel(
    plan: Plan,
    seeds: list[int],
    source_number: int,
    channel_number: int,
    ends: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
) -> Dataset:
    """Control points: [tip], then (position, w) (position, w + 1) per seed, then [entry]."""
    points: list[tuple[NDArray[np.float64], int, NDArray[np.float64] | None]] = []
    if ends is not None:
        points.append((ends[0], 0, None))
    for w, i in enumerate(seeds):
        seed = plan.seeds[i]
        direction = seed.direction if seed.orientation_known else None
        points += [(seed.position_mm, w, direction), (seed.position_mm, w + 1, direction)]
    if ends is not None:
        points.append((ends[1], len(seeds), None))
    channel = Dataset()
    channel.ChannelNumber = channel_number
    channel.ChannelLength = _ds(float(np.linalg.norm(ends[1] - ends[0]))) if ends is not None else ""
    mean_life_s = plan.sources[plan.seeds[seeds[0]].source_model_id].mean_life_h * 3600.0 if seeds else 0.0
    channel.ChannelTotalTime = _ds(mean_life_s)
    channel.SourceMovementType = "FIXED"
    channel.NumberOfControlPoints = len(points)
    channel.FinalCumulativeTimeWeight = len(seeds)
    channel.ReferencedSourceNumber = source_number
    travelled = np.concatenate(
        [[0.0], np.cumsum([np.linalg.norm(b[0] - a[0]) for a, b in itertools.pairwise(points)])]
    )
    channel.BrachyControlPointSequence = [
        _control_point(k, p, w, d, float(travelled[k])) for k, (p, w, d) in enumerate(points)
    ]
    return channel


def _control_point(
    index: int,
    position: NDArray[np.float64],
    weight: int,
    direction: NDArray[np.float64] | None,
    along_mm: float,
) -> Dataset:
    cp = Dataset()
    cp.ControlPointIndex = index
    cp.CumulativeTimeWeight = weight
    cp.ControlPointRelativePosition = _ds(along_mm)
    cp.ControlPoint3DPosition = [_ds(v) for v in position]
    if direction is not None:
        cp.ControlPointOrientation = [float(v) for v in direction]
    return cp


def _fraction_group(prescription_gy: float | None) -> Dataset:
    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = 1
    group.NumberOfBeams = 0
    group.NumberOfBrachyApplicationSetups = 1
    setup = Dataset()
    setup.ReferencedBrachyApplicationSetupNumber = 1
    if prescription_gy is not None:
        setup.BrachyApplicationSetupDose = _ds(prescription_gy)
    group.ReferencedBrachyApplicationSetupSequence = [setup]
    return group
