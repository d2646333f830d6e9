"""The plan of a procedure: planning CT + RT Structure Set + seed RT Plan, linked by UIDs.

A plan arrives as a folder on disk or object by object through the DICOM node,
in any order. :func:`plan_status` says what a set of files still lacks (so a
node can wait for the rest); :func:`load_plan_bundle` reads a complete set and
checks that the three objects belong together:

- the RT Plan's ReferencedStructureSetSequence (PS3.3 C.8.8.9) names the RT
  Structure Set's SOPInstanceUID;
- the structure set's RTReferencedSeriesSequence (PS3.3 C.8.8.5) names the CT
  series it was drawn on;
- all three share the FrameOfReferenceUID (PS3.3 C.7.4.1).

When a reference is absent (some planning systems leave it out) a unique object
of the right kind is taken and the bundle says so in ``notes``; two candidates
and no reference is an error, since guessing could pair a plan with another
patient's contours.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.dataset import DatasetSource, LoadedDataset, StudyContext, load_datasets
from guidance.dicomio.errors import DicomInputError
from guidance.dicomio.rtplan import read_rtplan
from guidance.dicomio.rtstruct import StructureSet, read_rtstruct
from guidance.dicomio.values import dicom_datetime
from guidance.plan import Plan
from guidance.volume import Volume

__all__ = ["PlanBundle", "PlanStatus", "context_of", "load_plan_bundle", "plan_status"]

logger = logging.getLogger(__name__)

_RTPLAN = "1.2.840.10008.5.1.4.1.1.481.5"
_RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
_CT = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")


@dataclass(frozen=True, eq=False)
class PlanBundle:
    """A complete plan: the seed plan (with its structures), the planning CT and their identity.

    Parameters
    ----------
    plan : Plan
        Seeds, needles, prescription and the structures of ``structure_set``.
    planning_ct : Volume
        The CT the plan was made on, HU.
    structure_set : StructureSet
    context : StudyContext
        Patient, study and frame of the plan: what exports of a session are written with.
    notes : tuple of str
        Links that had to be inferred (a missing reference resolved by uniqueness).
    """

    plan: Plan
    planning_ct: Volume
    structure_set: StructureSet
    context: StudyContext
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanStatus:
    """What a set of files holds towards a complete plan.

    Parameters
    ----------
    complete : bool
        A plan, its structure set and its CT series are all there and linked.
    missing : tuple of str
        Human-readable, e.g. "RT Structure Set 1.2.3 referenced by the RT Plan".
    plan_uid : str
        SOPInstanceUID of the RT Plan ("" before it arrives).
    paths : tuple of Path
        When complete, the files of the linked plan (RT Plan, RT Structure Set, planning
        CT slices) among those given; other files are left out.
    """

    complete: bool
    missing: tuple[str, ...]
    plan_uid: str = ""
    paths: tuple[Path, ...] = ()


def _sorted(
    loaded: list[LoadedDataset],
) -> tuple[list[LoadedDataset], list[LoadedDataset], dict[str, list[LoadedDataset]]]:
    plans, structure_sets = [], []
    series: dict[str, list[LoadedDataset]] = defaultdict(list)
    for item in loaded:
        sop_class = str(item.dataset.get("SOPClassUID", ""))
        if sop_class == _RTPLAN:
            plans.append(item)
        elif sop_class == _RTSTRUCT:
            structure_sets.append(item)
        elif sop_class in _CT:
            series[str(item.dataset.get("SeriesInstanceUID", ""))].append(item)
    return plans, structure_sets, series


def _referenced_structure_set(plan: Dataset) -> str:
    items = plan.get("ReferencedStructureSetSequence") or []
    return str(items[0].get("ReferencedSOPInstanceUID", "")) if items else ""


def _referenced_series(structure_set: Dataset) -> str:
    for frame in structure_set.get("ReferencedFrameOfReferenceSequence") or []:
        for study in frame.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                uid = str(series.get("SeriesInstanceUID", ""))
                if uid:
                    return uid
    return ""


def _pick(candidates: Mapping[str, object], wanted: str, what: str, by: str) -> tuple[str, str]:
    """(chosen key, problem): the referenced one, or a unique one without a reference."""
    if wanted:
        return (wanted, "") if wanted in candidates else ("", f"{what} {wanted} referenced by the {by}")
    if len(candidates) == 1:
        return next(iter(candidates)), ""
    if not candidates:
        return "", f"{what} (none received; the {by} does not reference one)"
    return "", f"{what}: {len(candidates)} candidates and the {by} does not say which"


def _links(loaded: list[LoadedDataset]) -> tuple[LoadedDataset | None, LoadedDataset | None, str, list[str]]:
    plans, structure_sets, series = _sorted(loaded)
    if not plans:
        return None, None, "", ["RT Plan"]
    if len(plans) > 1:
        uids = sorted(str(p.dataset.SOPInstanceUID) for p in plans)
        return None, None, "", [f"a single RT Plan: {len(plans)} received ({', '.join(uids)})"]
    plan = plans[0]
    by_uid = {str(s.dataset.get("SOPInstanceUID", "")): s for s in structure_sets}
    struct_uid, problem = _pick(
        by_uid, _referenced_structure_set(plan.dataset), "RT Structure Set", "RT Plan"
    )
    if problem:
        return plan, None, "", [problem]
    structure_set = by_uid[struct_uid]
    series_uid, problem = _pick(
        dict(series), _referenced_series(structure_set.dataset), "planning CT series", "RT Structure Set"
    )
    return plan, structure_set, series_uid, [problem] if problem else []


def plan_status(source: DatasetSource) -> PlanStatus:
    """Whether ``source`` (files, folders or datasets) holds a complete, linked plan.

    Only headers are read. Used to wait for a plan sent object by object.
    """
    loaded = load_datasets(source, stop_before_pixels=True)
    plan, structure_set, series_uid, missing = _links(loaded)
    uid = "" if plan is None else str(plan.dataset.get("SOPInstanceUID", ""))
    if missing or plan is None or structure_set is None:
        return PlanStatus(False, tuple(missing), uid)
    ct = [i for i in loaded if str(i.dataset.get("SeriesInstanceUID", "")) == series_uid]
    paths = tuple(i.path for i in (plan, structure_set, *ct) if i.path is not None)
    return PlanStatus(True, (), uid, paths)


def context_of(dataset: Dataset) -> StudyContext:
    """The patient / study / frame identity of ``dataset``, for objects written alongside it."""
    try:
        when = dicom_datetime(dataset.get("StudyDate"), dataset.get("StudyTime")) or dt.datetime.now()
    except ValueError:
        when = dt.datetime.now()
    return StudyContext(
        patient_id=str(dataset.get("PatientID", "") or ""),
        patient_name=str(dataset.get("PatientName", "") or ""),
        patient_birth_date=str(dataset.get("PatientBirthDate", "") or ""),
        patient_sex=str(dataset.get("PatientSex", "") or "O"),
        study_instance_uid=str(dataset.StudyInstanceUID),
        frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID", "") or ""),
        study_id=str(dataset.get("StudyID", "") or ""),
        study_description=str(dataset.get("StudyDescription", "") or ""),
        study_datetime=when.replace(microsecond=0),
        accession_number=str(dataset.get("AccessionNumber", "") or ""),
        referring_physician_name=str(dataset.get("ReferringPhysicianName", "") or ""),
    )


def _frames_agree(plan: Plan, structure_set: StructureSet, ct: Volume, where: str) -> None:
    frames = {
        "RT Plan": plan.frame_of_reference_uid,
        "RT Structure Set": structure_set.frame_of_reference_uid,
        "planning CT": ct.frame_of_reference_uid,
    }
    known = {uid for uid in frames.values() if uid}
    if len(known) > 1:
        raise DicomInputError(
            f"{where}: the plan's objects are in different frames of reference (FrameOfReferenceUID): "
            + ", ".join(f"{k} {v!r}" for k, v in frames.items())
        )


def load_plan_bundle(source: DatasetSource) -> PlanBundle:
    """Read and link the planning CT, RT Structure Set and seed RT Plan in ``source``.

    Raises
    ------
    DicomInputError
        When an object is missing, ambiguous or in another frame of reference; the
        message lists what is missing (as :func:`plan_status` does).
    """
    where = str(source) if not isinstance(source, (list, tuple)) else "the plan files"
    loaded = load_datasets(source)
    plan_item, struct_item, series_uid, missing = _links(loaded)
    if missing or plan_item is None or struct_item is None:
        raise DicomInputError(f"{where}: incomplete plan; missing {'; '.join(missing)}")
    notes = []
    if not _referenced_structure_set(plan_item.dataset):
        notes.append("the RT Plan does not reference a structure set: the only one received is used")
    if not _referenced_series(struct_item.dataset):
        notes.append("the RT Structure Set does not reference a CT series: the only one received is used")
    structure_set = read_rtstruct(struct_item.dataset)
    plan = read_rtplan(plan_item.dataset, structures=structure_set.structures)
    ct_items = [i.dataset for i in loaded if str(i.dataset.get("SeriesInstanceUID", "")) == series_uid]
    planning_ct = read_ct_series(ct_items)
    _frames_agree(plan, structure_set, planning_ct, where)
    for note in notes:
        logger.warning("%s: %s", where, note)
    return PlanBundle(plan, planning_ct, structure_set, context_of(plan_item.dataset), tuple(notes))
