"""Brachytherapy RT Plan of a permanent seed implant: reading (writing is in ``rtplan_writer``).

How a seed plan is encoded (DICOM PS3.3 C.8.8.15, RT Brachy Application
Setups Module) and how this module reads it:

- **Plans.** BrachyTreatmentType LDR, MANUAL or PERMANENT is read; HDR, PDR,
  MDR and external-beam plans are refused (:class:`UnsupportedPlanError`). A
  plan without any seed is an error, not an empty plan: it is an export
  mistake the operator must hear about. A file cut short is refused.
- **Sources.** Each Source Sequence item is a kind of source: isotope,
  half-life (days; the isotope's consensus value when 0 or missing),
  Reference Air Kerma Rate (µGy h^-1 at 1 m, numerically the air-kerma
  strength in U = µGy m^2 h^-1) and the date and time it holds at. Items no
  seed uses are ignored (Oncentra writes a placeholder "---" of strength 0
  dated 1899-12-30); seeds from a placeholder or a non-seed isotope (Ir-192)
  are refused. Sources dated differently are decayed back to the earliest
  date, the plan's ``strength_reference_datetime``. The model id is
  SourceModelID, else SourceDescription, else "<manufacturer> <isotope>".
- **Seeds.** A seed is a dwell: Cumulative Time Weight rises between two
  consecutive control points at one Control Point 3D Position. Repeated
  dwells at one position in a channel are one seed. For permanent seeds the
  weight only says dwell / no dwell: each seed has its source item's
  Reference Air Kerma Rate. Orientation: Control Point Orientation
  (300A,0412) when given (MIM writes it), else the needle's direction for a
  seed on a needle, else unknown (NaN).
- **Needles.** Channels are grouped by Source Applicator ID (300A,0291)
  within an application setup (a channel alone when it has none). A group
  whose seeds lie on one line (within 1 mm) is a needle when its control
  points span >= 10 mm (first point = tip, last = entry; an end that is a
  seed centre is moved 5 mm beyond it; without seeds, only if it names an
  applicator), or when it has >= 2 seeds: then the needle runs along them
  from the last dwell to the first (the deep end), 5 mm beyond each outer
  seed. Such ends are not the skin entry or the true tip: the plan does not
  say. One seed per channel with its control points within 10 mm (Oncentra:
  4 points 1 mm apart; MIM: 2 at one point) is no needle, so
  ``Plan.needles`` of those plans is empty.
- **Prescription.** TargetPrescriptionDose of a TARGET Dose Reference, else
  the Brachy Application Setup Dose of the fraction group when all setups
  give the same (x fractions planned; Oncentra writes it on every setup).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from guidance.dicomio.dataset import (
    DatasetSource,
    LoadedDataset,
    load_datasets,
)
from guidance.dicomio.errors import DicomInputError, UnsupportedPlanError
from guidance.dicomio.values import dicom_datetime
from guidance.plan import Isotope, Needle, Plan, Seed, SourceModel
from guidance.structure import Structure

__all__ = [
    "COLLINEAR_TOLERANCE_MM",
    "MIN_NEEDLE_PATH_MM",
    "RT_PLAN_STORAGE",
    "SEED_TREATMENT_TYPES",
    "read_rtplan",
]

logger = logging.getLogger(__name__)

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
SEED_TREATMENT_TYPES = ("LDR", "MANUAL", "PERMANENT")
_SAME_POSITION_MM = 1e-3  # control points closer than this are one position
_DUPLICATE_SEED_MM = 0.1  # two seeds of one channel closer than this are one seed
COLLINEAR_TOLERANCE_MM = 1.0  # seeds of one needle lie within this of its line
MIN_NEEDLE_PATH_MM = 10.0  # control points spanning less describe a seed, not a needle
_NEEDLE_MARGIN_MM = 5.0  # a needle end given only by a seed centre lies this far beyond it


# ----------------------------------------------------------------------------- reading


@dataclass
class _Group:
    """The dwells of one needle (or of one channel) as read."""

    where: str
    number: int
    label: str
    explicit: bool  # has a Source Applicator ID
    path_mm: NDArray[np.float64]
    positions: list[NDArray[np.float64]] = field(default_factory=list)
    orientations: list[NDArray[np.float64] | None] = field(default_factory=list)
    source_numbers: list[int | None] = field(default_factory=list)


@dataclass(frozen=True)
class _SourceItem:
    key: str
    model: SourceModel
    strength_u: float
    reference: dt.datetime | None


def read_rtplan(source: DatasetSource, *, structures: Sequence[Structure] = ()) -> Plan:
    """Read the permanent seed implant plan in ``source``.

    Parameters
    ----------
    source : path, folder, dataset, or an iterable of those
        Must hold exactly one RT Plan (other objects are ignored).
    structures : sequence of Structure
        Attached to the plan as they are (read them with the RTSTRUCT reader).

    Returns
    -------
    Plan
        Seeds and needles in LPS mm in the plan's frame of reference
        (``""`` with a warning when the plan gives none); strengths in U at
        ``strength_reference_datetime``; prescription in Gy.

    Raises
    ------
    UnsupportedPlanError
        HDR, PDR, MDR or external-beam plans; sources that are not seed isotopes.
    DicomInputError
        No or several RT Plans, a truncated file, a plan without seeds,
        control points without positions, unusable source strengths.

    References
    ----------
    DICOM PS3.3 C.8.8.15 (RT Brachy Application Setups), C.8.8.10 (RT
    Prescription), C.8.8.13 (RT Fraction Scheme); AAPM TG-43U1 (unit U).
    """
    item = _the_plan(load_datasets(source))
    _check_complete(item)
    _check_seed_plan(item)
    ds = item.dataset
    groups = _channel_groups(item)
    if not any(g.positions for g in groups):
        raise _error(
            item,
            "plan has no seeds: no channel has a dwell (Cumulative Time Weight rising "
            "between two control points at one position); nothing to guide by",
        )
    numbers = {n for g in groups for n in g.source_numbers}
    sources, reference = _used_sources(item, numbers)
    seeds, needles = _assemble(groups, sources)
    frame = str(ds.get("FrameOfReferenceUID", "") or "")
    if not frame:
        logger.warning(
            "%s: RT Plan has no FrameOfReferenceUID; seed positions are assumed to be in the "
            "frame of the images they are used with",
            item.name,
        )
    referenced = ds.get("ReferencedStructureSetSequence") or []
    return Plan(
        frame_of_reference_uid=frame,
        seeds=tuple(seeds),
        needles=tuple(needles),
        sources={s.key: s.model for s in sources.values()},
        structures=tuple(structures),
        prescription_gy=_prescription(item),
        strength_reference_datetime=reference,
        structure_set_uid=str(referenced[0].get("ReferencedSOPInstanceUID", "")) if referenced else "",
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        label=str(ds.get("RTPlanLabel", "") or ""),
        treatment_type=str(ds.get("BrachyTreatmentType", "")),
    )


def _error(
    item: LoadedDataset, message: str, kind: type[DicomInputError] = DicomInputError
) -> DicomInputError:
    return kind(message, [item.path] if item.path is not None else [])


def _the_plan(loaded: list[LoadedDataset]) -> LoadedDataset:
    plans = [
        i
        for i in loaded
        if i.dataset.get("Modality") == "RTPLAN" or i.dataset.get("SOPClassUID") == RT_PLAN_STORAGE
    ]
    if len(plans) == 1:
        return plans[0]
    if not plans:
        found = Counter(str(i.dataset.get("Modality", "no Modality")) for i in loaded)
        listed = ", ".join(f"{n} x {m}" for m, n in sorted(found.items())) or "no DICOM datasets"
        raise DicomInputError(
            f"no RT Plan (Modality RTPLAN) in source; found {listed}",
            [i.path for i in loaded if i.path is not None],
        )
    listed = "; ".join(
        f"{p.name} (label {p.dataset.get('RTPlanLabel', '')!r}, "
        f"SOPInstanceUID {p.dataset.get('SOPInstanceUID', '?')})"
        for p in plans
    )
    raise DicomInputError(f"{len(plans)} RT Plans in source, expected exactly one: {listed}")


def _check_complete(item: LoadedDataset) -> None:
    """Refuse a file cut short: pydicom keeps a short value without complaint."""
    ds = item.dataset
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and isinstance(raw.value, bytes)
            and raw.length != 0xFFFFFFFF
            and len(raw.value) < raw.length
        ):
            raise _error(
                item,
                f"file is truncated: {keyword_for_tag(tag) or tag} {tag} declares "
                f"{raw.length} bytes, only {len(raw.value)} are present",
            )


def _check_seed_plan(item: LoadedDataset) -> None:
    ds = item.dataset
    kind = str(ds.get("BrachyTreatmentType", "") or "").strip().upper()
    if not kind:
        if ("BeamSequence" in ds or "IonBeamSequence" in ds) and "ApplicationSetupSequence" not in ds:
            raise _error(
                item,
                "external-beam plan (BeamSequence, no ApplicationSetupSequence): seedguide "
                "computes permanent seed implants only",
                UnsupportedPlanError,
            )
        raise _error(item, "BrachyTreatmentType (300A,0202) is missing: not a brachytherapy plan")
    if kind not in SEED_TREATMENT_TYPES:
        raise _error(
            item,
            f"{kind} plan: seedguide computes permanent seed implants only "
            f"(BrachyTreatmentType (300A,0202) is {kind}; accepted: {', '.join(SEED_TREATMENT_TYPES)})",
            UnsupportedPlanError,
        )


def _float(value: object) -> float:
    """A DS/FL value as float; NaN when empty."""
    if value is None or value == "":
        return math.nan
    return float(value)  # type: ignore[arg-type]


def _point(item: LoadedDataset, value: object, where: str) -> NDArray[np.float64]:
    if value is None or value == "":
        return np.full(3, np.nan)
    try:
        point = np.asarray([_float(v) for v in value], dtype=np.float64)  # type: ignore[attr-defined]
    except TypeError:  # a single number
        point = np.full(1, np.nan)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise _error(item, f"{where}: ControlPoint3DPosition (300A,02D4) must be 3 numbers, got {value!r}")
    return point


def _orientation(value: object) -> NDArray[np.float64] | None:
    if value is None or value == "":
        return None
    vector = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[attr-defined]
    norm = float(np.linalg.norm(vector)) if vector.shape == (3,) else 0.0
    if not (math.isfinite(norm) and norm > 1e-6):
        logger.warning("ignoring ControlPointOrientation %r: not a direction", value)
        return None
    return vector / norm


def _read_channel(
    item: LoadedDataset, channel: Dataset, where: str
) -> tuple[NDArray[np.float64], list[tuple[NDArray[np.float64], NDArray[np.float64] | None]]]:
    """Control point path (known positions, in order) and the dwells of one channel."""
    points = list(channel.get("BrachyControlPointSequence") or [])
    path = [
        _point(item, cp.get("ControlPoint3DPosition"), f"{where} control point {k}")
        for k, cp in enumerate(points)
    ]
    weights = [_float(cp.get("CumulativeTimeWeight")) for cp in points]
    orientations = [_orientation(cp.get("ControlPointOrientation")) for cp in points]
    dwells: list[tuple[NDArray[np.float64], NDArray[np.float64] | None]] = []
    for k in range(1, len(points)):
        if not weights[k] > weights[k - 1]:
            continue
        if np.any(np.isnan(path[k])) or np.any(np.isnan(path[k - 1])):
            raise _error(
                item,
                f"{where} control point {k}: a dwell without ControlPoint3DPosition "
                "(300A,02D4); the seed's position is unknown",
            )
        if np.linalg.norm(path[k] - path[k - 1]) > _SAME_POSITION_MM:
            logger.warning(
                "%s control points %d-%d: weight rises while the source moves; no seed", where, k - 1, k
            )
            continue
        if any(np.linalg.norm(path[k] - p) < _DUPLICATE_SEED_MM for p, _ in dwells):
            continue
        dwells.append((path[k], orientations[k] if orientations[k] is not None else orientations[k - 1]))
    known = [p for p in path if not np.any(np.isnan(p))]
    return np.asarray(known, dtype=np.float64).reshape(-1, 3), dwells


def _int(value: object) -> int | None:
    return None if value is None or value == "" else int(value)  # type: ignore[call-overload]


def _channel_groups(item: LoadedDataset) -> list[_Group]:
    groups: dict[tuple[int, str], _Group] = {}
    for s, setup in enumerate(item.dataset.get("ApplicationSetupSequence") or []):
        for c, channel in enumerate(setup.get("ChannelSequence") or []):
            number = _int(channel.get("ChannelNumber")) or c + 1
            where = f"application setup {setup.get('ApplicationSetupNumber', s + 1)} channel {number}"
            path, dwells = _read_channel(item, channel, where)
            applicator = str(channel.get("SourceApplicatorID", "") or "").strip()
            group = groups.get((s, applicator or f"channel {c}"))
            if group is None:
                number = (_int(channel.get("SourceApplicatorNumber")) or number) if applicator else number
                label = str(channel.get("SourceApplicatorName", "") or "")
                group = groups[(s, applicator or f"channel {c}")] = _Group(
                    where, number, label, bool(applicator), path
                )
            for position, orientation in dwells:
                if any(np.linalg.norm(position - p) < _DUPLICATE_SEED_MM for p in group.positions):
                    continue
                group.positions.append(position)
                group.orientations.append(orientation)
                group.source_numbers.append(_int(channel.get("ReferencedSourceNumber")))
    return list(groups.values())


def _used_sources(
    item: LoadedDataset, numbers: set[int | None]
) -> tuple[dict[int | None, _SourceItem], dt.datetime | None]:
    """The source items channels use, strengths brought to one reference date."""
    by_number = {_int(s.get("SourceNumber")): s for s in item.dataset.get("SourceSequence") or []}
    parsed: dict[int | None, _SourceItem] = {}
    for number in sorted(numbers, key=lambda n: -1 if n is None else n):
        if number not in by_number:
            raise _error(
                item,
                f"a channel references source {number}, which is not in SourceSequence "
                f"(sources: {sorted(n for n in by_number if n is not None)})",
            )
        parsed[number] = _source_item(item, by_number[number], number)
    models: dict[str, SourceModel] = {}
    for number, source in list(parsed.items()):
        key = source.key
        if models.setdefault(key, source.model) != source.model:
            key = f"{key} (source {number})"
            logger.warning(
                "%s: two sources are called %r but differ; naming source %s %r",
                item.name,
                source.key,
                number,
                key,
            )
            models[key] = source.model
        parsed[number] = _SourceItem(key, source.model, source.strength_u, source.reference)
    return _common_reference(item, parsed)


def _source_item(item: LoadedDataset, source: Dataset, number: int | None) -> _SourceItem:
    """One used Source Sequence item (PS3.3 C.8.8.15): its model, strength (U) and reference date."""
    isotope, strength = _seed_source(item, source, f"source {number}")
    half_life = _float(source.get("SourceIsotopeHalfLife"))
    if not half_life > 0:
        logger.warning(
            "%s: source %s gives no half-life; using %s's %.3f d",
            item.name,
            number,
            isotope.value,
            isotope.half_life_days,
        )
        half_life = isotope.half_life_days
    elif abs(half_life / isotope.half_life_days - 1) > 0.05:
        logger.warning(
            "%s: source %s half-life %.3f d differs from %s's %.3f d",
            item.name,
            number,
            half_life,
            isotope.value,
            isotope.half_life_days,
        )
    manufacturer = str(source.get("SourceManufacturer", "") or "").strip()
    named = [str(source.get(k) or "").strip() for k in ("SourceModelID", "SourceDescription")]
    key = next((n for n in named if n), f"{manufacturer} {isotope.value}".strip())
    date, time = source.get("SourceStrengthReferenceDate"), source.get("SourceStrengthReferenceTime")
    model = SourceModel(key, isotope, half_life, manufacturer)
    return _SourceItem(key, model, strength, _datetime(item, date, time))


def _seed_source(item: LoadedDataset, source: Dataset, where: str) -> tuple[Isotope, float]:
    """Isotope and Reference Air Kerma Rate (µGy/h at 1 m = U) of a source that must be a seed."""
    name = str(source.get("SourceIsotopeName", "") or "").strip()
    strength = _float(source.get("ReferenceAirKermaRate"))
    if not name.strip("- ") or strength == 0:
        raise _error(
            item,
            f"a channel with seeds uses {where}, a placeholder (isotope {name!r}, "
            f"ReferenceAirKermaRate {strength}): the plan does not say what its seeds are",
        )
    try:
        isotope = Isotope.from_dicom(name)
    except ValueError as exc:
        raise _error(
            item,
            f"{where} isotope {name!r} is not a permanent-implant seed isotope "
            f"({', '.join(i.value for i in Isotope)}): seedguide computes permanent seed "
            "implants only",
            UnsupportedPlanError,
        ) from exc
    units = str(source.get("SourceStrengthUnits", "") or "AIR_KERMA_RATE")
    if units != "AIR_KERMA_RATE" or not (strength > 0 and math.isfinite(strength)):
        raise _error(
            item,
            f"{where}: seed strength must be a positive ReferenceAirKermaRate (300A,022A) "
            f"in air-kerma units; got {strength} with SourceStrengthUnits {units}",
        )
    return isotope, strength


def _datetime(item: LoadedDataset, date: object, time: object) -> dt.datetime | None:
    try:
        return dicom_datetime(date, time)
    except ValueError as exc:
        raise _error(
            item, f"SourceStrengthReferenceDate/Time {date!r} {time!r} is not a DICOM date/time"
        ) from exc


def _common_reference(
    item: LoadedDataset, sources: dict[int | None, _SourceItem]
) -> tuple[dict[int | None, _SourceItem], dt.datetime | None]:
    """One reference date for the plan: sources dated later are decayed back to the earliest date."""
    dates = {s.reference for s in sources.values()}
    if len(dates) == 1:
        return sources, dates.pop()
    if None in dates:
        raise _error(
            item,
            "some sources give a SourceStrengthReferenceDate and others none: "
            "their strengths cannot be brought to one date",
        )
    earliest = min(d for d in dates if d is not None)
    logger.info(
        "%s: sources have different reference dates; strengths decayed back to %s", item.name, earliest
    )
    corrected = {}
    for number, s in sources.items():
        days = (s.reference or earliest) - earliest
        factor = 2.0 ** (days.total_seconds() / 86400.0 / s.model.half_life_days)
        corrected[number] = _SourceItem(s.key, s.model, s.strength_u * factor, earliest)
    return corrected, earliest


def _needle_line(group: _Group) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """(entry, tip) of the needle the group describes, or None if it is no needle."""
    seeds = np.asarray(group.positions, dtype=np.float64).reshape(-1, 3)
    if len(group.path_mm) == 0 or (not group.explicit and len(seeds) == 0):
        return None
    tip, entry = group.path_mm[0], group.path_mm[-1]
    from_seeds = bool(np.linalg.norm(tip - entry) < MIN_NEEDLE_PATH_MM)
    if from_seeds:
        if len(seeds) < 2:
            return None
        # The control points are only the seeds: the line through them, from
        # the last dwell towards the first (the deep end), 5 mm beyond each.
        centre = seeds.mean(axis=0)
        axis = np.linalg.svd(seeds - centre)[2][0]
        axis = axis if float(np.dot(seeds[0] - seeds[-1], axis)) >= 0 else -axis
        along = (seeds - centre) @ axis
        tip = centre + (along.max() + _NEEDLE_MARGIN_MM) * axis
        entry = centre + (along.min() - _NEEDLE_MARGIN_MM) * axis
    axis = (tip - entry) / np.linalg.norm(tip - entry)
    offsets = seeds - entry
    off_line = np.linalg.norm(offsets - np.outer(offsets @ axis, axis), axis=1) if len(seeds) else np.zeros(0)
    if np.any(off_line > COLLINEAR_TOLERANCE_MM):
        logger.warning(
            "%s: its %d seeds are not on one line (up to %.1f mm off); read as seeds without a needle",
            group.where,
            len(seeds),
            float(off_line.max()),
        )
        return None
    if not from_seeds and len(seeds) and np.min(np.linalg.norm(seeds - tip, axis=1)) < _DUPLICATE_SEED_MM:
        tip = tip + _NEEDLE_MARGIN_MM * axis
    if not from_seeds and len(seeds) and np.min(np.linalg.norm(seeds - entry, axis=1)) < _DUPLICATE_SEED_MM:
        entry = entry - _NEEDLE_MARGIN_MM * axis
    return entry, tip


def _assemble(
    groups: list[_Group], sources: dict[int | None, _SourceItem]
) -> tuple[list[Seed], list[Needle]]:
    seeds: list[Seed] = []
    needles: list[Needle] = []
    for group in groups:
        line = _needle_line(group)
        order = list(range(len(group.positions)))
        axis: NDArray[np.float64] | None = None
        if line is not None:
            axis = (line[1] - line[0]) / np.linalg.norm(line[1] - line[0])
            order.sort(key=lambda j: -float(group.positions[j] @ axis))  # tip first
        first = len(seeds)
        for j in order:
            source = sources[group.source_numbers[j]]
            direction = group.orientations[j] if group.orientations[j] is not None else axis
            direction = direction if direction is not None else np.full(3, np.nan)
            needle_index = len(needles) if line is not None else None
            seeds.append(Seed(group.positions[j], direction, source.strength_u, source.key, needle_index))
        if line is not None:
            needles.append(
                Needle(line[0], line[1], tuple(range(first, len(seeds))), group.number, group.label)
            )
    return seeds, needles


def _prescription(item: LoadedDataset) -> float | None:
    """TargetPrescriptionDose of a TARGET dose reference, else the fraction group's setup dose."""
    ds = item.dataset
    doses = [
        _float(r.get("TargetPrescriptionDose"))
        for r in ds.get("DoseReferenceSequence") or []
        if r.get("DoseReferenceType") == "TARGET"
    ]
    doses = [d for d in doses if d > 0]
    if doses:
        if len(set(doses)) > 1:
            logger.warning("%s: several target prescriptions %s Gy; using the first", item.name, doses)
        return doses[0]
    for group in ds.get("FractionGroupSequence") or []:
        setup_doses = {
            _float(r.get("BrachyApplicationSetupDose"))
            for r in group.get("ReferencedBrachyApplicationSetupSequence") or []
        }
        setup_doses = {d for d in setup_doses if d > 0}
        if len(setup_doses) == 1:
            return setup_doses.pop() * (_int(group.get("NumberOfFractionsPlanned")) or 1)
        if setup_doses:
            logger.warning(
                "%s: application setups have different doses %s Gy; no prescription read",
                item.name,
                sorted(setup_doses),
            )
    return None
