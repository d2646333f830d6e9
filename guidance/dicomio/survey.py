"""What a folder of DICOM files holds, as an operator needs to know it.

:func:`survey` reads every file once (headers only), groups images into
series, then runs the real readers on each series, structure set, plan and
dose grid. What a reader refuses is reported as a problem of that object with
the reader's message, never raised: the point of a survey is to see
everything that is wrong with data from a new planning system at once.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.dataset import LoadedDataset, load_datasets
from guidance.dicomio.errors import DicomInputError
from guidance.dicomio.rtdose import read_rtdose
from guidance.dicomio.rtplan import read_rtplan
from guidance.dicomio.rtstruct import read_rtstruct

__all__ = [
    "DoseSummary",
    "PlanSummary",
    "SeriesSummary",
    "StructureSetSummary",
    "StructureSummary",
    "Survey",
    "survey",
]

logger = logging.getLogger(__name__)

_RT_MODALITIES = {"RTPLAN", "RTSTRUCT", "RTDOSE"}
T = TypeVar("T")


def _rounded(values: Any, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in np.asarray(values, dtype=np.float64).ravel()]


@dataclass(frozen=True)
class SeriesSummary:
    """An image series: its geometry when it reads as a volume, else why not."""

    series_instance_uid: str
    modality: str
    description: str
    instances: int
    frame_of_reference_uid: str
    readable: bool
    shape: list[int] | None = None
    spacing_mm: list[float] | None = None
    orientation: list[float] | None = None
    first_position_mm: list[float] | None = None
    last_position_mm: list[float] | None = None
    hu_range: list[float] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StructureSummary:
    name: str
    role: str
    contours: int
    empty: bool


@dataclass(frozen=True)
class StructureSetSummary:
    sop_instance_uid: str
    label: str
    frame_of_reference_uid: str
    referenced_series_uid: str
    structures: list[StructureSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlanSummary:
    """A brachytherapy plan: its seeds, or why it is not a seed plan we can use."""

    sop_instance_uid: str
    label: str
    readable: bool
    treatment_type: str = ""
    seeds: int = 0
    needles: int = 0
    isotopes: list[str] = field(default_factory=list)
    source_models: list[str] = field(default_factory=list)
    strengths_u: list[float] = field(default_factory=list)
    strength_reference_datetime: str | None = None
    prescription_gy: float | None = None
    frame_of_reference_uid: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DoseSummary:
    sop_instance_uid: str
    readable: bool
    shape: list[int] | None = None
    spacing_mm: list[float] | None = None
    max_gy: float | None = None
    summation_type: str = ""
    referenced_plan_uid: str = ""
    frame_of_reference_uid: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Survey:
    """Everything found under the surveyed paths."""

    paths: list[str]
    files: int
    series: list[SeriesSummary]
    structure_sets: list[StructureSetSummary]
    plans: list[PlanSummary]
    doses: list[DoseSummary]
    unreadable: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form (the ``--json`` output of ``seedguide inspect``)."""
        return asdict(self)


def _attempt(read: Callable[[], T], problems: list[str]) -> T | None:
    """Run a reader; a refusal becomes a problem of the summarised object."""
    try:
        return read()
    except DicomInputError as exc:
        problems.append(str(exc.reason))
    except (ValueError, KeyError, AttributeError, TypeError, NotImplementedError, RuntimeError) as exc:
        # Readers should say what is wrong themselves; anything else they raise
        # is still a problem of this object, not a reason to abandon the survey.
        logger.warning("unexpected %s while reading: %s", type(exc).__name__, exc, exc_info=True)
        problems.append(f"unexpected {type(exc).__name__}: {exc}")
    return None


def _source_of(items: Sequence[LoadedDataset]) -> list[Any]:
    return [item.path if item.path is not None else item.dataset for item in items]


def _summarise_series(uid: str, items: Sequence[LoadedDataset]) -> SeriesSummary:
    first = items[0].dataset
    problems: list[str] = []
    volume = _attempt(lambda: read_ct_series(_source_of(items)), problems)
    common: dict[str, Any] = {
        "series_instance_uid": uid,
        "modality": str(first.get("Modality", "")),
        "description": str(first.get("SeriesDescription", "")),
        "instances": len(items),
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
    }
    if volume is None:
        return SeriesSummary(readable=False, problems=problems, **common)
    grid = volume.grid
    values = volume.array
    return SeriesSummary(
        readable=True,
        shape=list(grid.shape),
        spacing_mm=_rounded(grid.spacing_mm),
        orientation=_rounded(np.concatenate([grid.axes[2], grid.axes[1]]), 6),
        first_position_mm=_rounded(grid.index_to_patient([0, 0, 0])[0], 3),
        last_position_mm=_rounded(grid.index_to_patient([grid.shape[0] - 1, 0, 0])[0], 3),
        hu_range=_rounded([values.min(), values.max()], 1),
        problems=problems,
        **common,
    )


def _summarise_structure_set(item: LoadedDataset) -> StructureSetSummary:
    problems: list[str] = []
    uid = str(item.dataset.get("SOPInstanceUID", ""))
    result = _attempt(lambda: read_rtstruct(_source_of([item])), problems)
    if result is None:
        return StructureSetSummary(uid, str(item.dataset.get("StructureSetLabel", "")), "", "", [], problems)
    structures = [
        StructureSummary(s.name, s.role.value, len(s.contours_mm), s.is_empty) for s in result.structures
    ]
    return StructureSetSummary(
        uid,
        result.label,
        result.frame_of_reference_uid,
        result.referenced_series_uid,
        structures,
        problems,
    )


def _summarise_plan(item: LoadedDataset) -> PlanSummary:
    problems: list[str] = []
    uid = str(item.dataset.get("SOPInstanceUID", ""))
    label = str(item.dataset.get("RTPlanLabel", ""))
    plan = _attempt(lambda: read_rtplan(_source_of([item])), problems)
    if plan is None:
        return PlanSummary(uid, label, readable=False, problems=problems)
    used = sorted({s.source_model_id for s in plan.seeds})
    when = plan.strength_reference_datetime
    return PlanSummary(
        uid,
        plan.label or label,
        readable=True,
        treatment_type=plan.treatment_type,
        seeds=len(plan.seeds),
        needles=len(plan.needles),
        isotopes=sorted(i.value for i in plan.isotopes),
        source_models=used,
        strengths_u=sorted({round(s, 4) for s in plan.seed_strengths_u.tolist()}),
        strength_reference_datetime=when.isoformat() if when is not None else None,
        prescription_gy=plan.prescription_gy,
        frame_of_reference_uid=plan.frame_of_reference_uid,
        problems=problems,
    )


def _summarise_dose(item: LoadedDataset) -> DoseSummary:
    problems: list[str] = []
    uid = str(item.dataset.get("SOPInstanceUID", ""))
    dose = _attempt(lambda: read_rtdose(_source_of([item])), problems)
    if dose is None:
        return DoseSummary(uid, readable=False, problems=problems)
    return DoseSummary(
        uid,
        readable=True,
        shape=list(dose.shape),
        spacing_mm=_rounded(dose.spacing_mm),
        max_gy=round(float(dose.array.max()), 4),
        summation_type=str(dose.metadata.get("dose_summation_type", "")),
        referenced_plan_uid=str(dose.metadata.get("referenced_plan_uid", "")),
        frame_of_reference_uid=dose.frame_of_reference_uid,
        problems=problems,
    )


def survey(paths: Sequence[str | os.PathLike[str]]) -> Survey:
    """Summarise every series, structure set, plan and dose grid under ``paths``.

    Parameters
    ----------
    paths : sequence of files or folders
        Folders are searched recursively; files in them that are not DICOM
        are listed as unreadable.

    Raises
    ------
    DicomInputError
        Only when a named path does not exist or a named file is not DICOM;
        problems of the data themselves are reported in the result.
    """
    unreadable: list[str] = []
    loaded: list[LoadedDataset] = []
    for path in paths:
        if Path(path).is_dir():
            found = load_datasets(path, stop_before_pixels=True)
            listed = {str(p) for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith(".")}
            unreadable.extend(sorted(listed - {str(item.path) for item in found}))
            loaded.extend(found)
        else:
            loaded.extend(load_datasets(path, stop_before_pixels=True))
    images: dict[str, list[LoadedDataset]] = defaultdict(list)
    structure_sets: list[StructureSetSummary] = []
    plans: list[PlanSummary] = []
    doses: list[DoseSummary] = []
    for item in loaded:
        modality = str(item.dataset.get("Modality", "")).upper()
        if modality == "RTSTRUCT":
            structure_sets.append(_summarise_structure_set(item))
        elif modality == "RTPLAN":
            plans.append(_summarise_plan(item))
        elif modality == "RTDOSE":
            doses.append(_summarise_dose(item))
        elif modality not in _RT_MODALITIES:
            images[str(item.dataset.get("SeriesInstanceUID", ""))].append(item)
    series = [_summarise_series(uid, items) for uid, items in sorted(images.items())]
    return Survey(
        paths=[str(p) for p in paths],
        files=len(loaded),
        series=series,
        structure_sets=structure_sets,
        plans=plans,
        doses=doses,
        unreadable=unreadable,
    )
