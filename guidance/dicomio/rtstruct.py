"""Reading and writing RT Structure Sets (DICOM PS3.3 A.19, C.8.8.5-C.8.8.8).

An RT Structure Set holds ROIs in three parallel sequences linked by ROI
number: StructureSetROISequence (name, frame), ROIContourSequence (colour,
contours) and RTROIObservationsSequence (what the ROI is). The reader joins
them into :class:`~guidance.structure.Structure` objects:

- CLOSED_PLANAR contours are kept as polygons and POINT contours as single
  points (an ROI made only of points becomes a POINT structure).
- OPEN_PLANAR and OPEN_NONPLANAR contours (brachytherapy channels, lines,
  rulers) are skipped with one warning per ROI: they enclose no volume and a
  Structure's contours are closed polygons or points. The ROI itself is kept,
  with its remaining contours (often none).
- ROIs without contours are kept as empty structures; references to images
  that are not present are not needed and not checked.
- ContourData longer than 64 KB, which an Explicit VR file can only store as
  UN (as VariSeed does), is decoded from its bytes.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ImplicitVRLittleEndian, RTStructureSetStorage

from guidance.dicomio.dataset import (
    DatasetSource,
    LoadedDataset,
    StudyContext,
    load_datasets,
    new_dataset,
    new_uid,
)
from guidance.dicomio.errors import DicomInputError
from guidance.dicomio.values import ds_texts
from guidance.rasterise import mask_to_contours
from guidance.structure import Structure, StructureRole, role_from_dicom
from guidance.volume import Grid

__all__ = ["StructureSet", "read_rtstruct", "structure_from_mask", "write_rtstruct"]

logger = logging.getLogger(__name__)

_KEPT_TYPES = ("CLOSED_PLANAR", "POINT")
_OPEN_TYPES = ("OPEN_PLANAR", "OPEN_NONPLANAR")
#: The retired Detached Study Management SOP Class, which RTReferencedStudySequence names
#: (PS3.3 C.8.8.5; MIM and others write it).
_STUDY_REFERENCE_CLASS = "1.2.840.10008.3.1.2.3.1"
#: A contour lies on a CT slice when all its points are within this distance of the slice plane.
_ON_SLICE_TOLERANCE_MM = 0.1
#: Explicit VR stores DS values of at most this many bytes (16-bit length).
_MAX_EXPLICIT_LENGTH = 0xFFFE
_SERIES_NUMBER = 901
#: ContourData is written to 1e-4 mm: short values keep contours under the 64 KB an explicit
#: DS element can hold.
_DECIMALS = 4

#: Unit normals (n, 3) and offsets (n,) in mm of the referenced CT slices' planes.
_SlicePlanes = tuple[NDArray[np.float64], NDArray[np.float64]]


@dataclass(frozen=True, eq=False)
class StructureSet:
    """The ROIs of one RT Structure Set and the references that link it to its images.

    Parameters
    ----------
    structures : tuple of Structure
        In StructureSetROISequence order; each has its own frame of reference UID.
    frame_of_reference_uid : str
        The (first) referenced frame of reference.
    referenced_series_uid : str
        SeriesInstanceUID of the images it was drawn on ("" if not given).
    sop_instance_uid, series_instance_uid, study_instance_uid : str
        This object's identity.
    label : str
        StructureSetLabel.
    referenced_image_uids : tuple of str
        SOPInstanceUIDs of the images listed in RTReferencedSeriesSequence (they may be absent).
    source : str
        File it was read from, for messages.
    """

    structures: tuple[Structure, ...]
    frame_of_reference_uid: str
    referenced_series_uid: str
    sop_instance_uid: str
    label: str
    study_instance_uid: str
    series_instance_uid: str = ""
    referenced_image_uids: tuple[str, ...] = ()
    source: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """ROI names in order."""
        return tuple(s.name for s in self.structures)

    def structure(self, name: str) -> Structure:
        """The structure called ``name`` (exact match).

        Raises
        ------
        KeyError
            If no structure, or more than one, has that name.
        """
        found = [s for s in self.structures if s.name == name]
        if len(found) != 1:
            what = "no structure" if not found else f"{len(found)} structures"
            raise KeyError(
                f"{what} named {name!r} in {self.source or 'the structure set'}; names: {self.names}"
            )
        return found[0]


def _is_rtstruct(dataset: Dataset) -> bool:
    return bool(
        dataset.get("SOPClassUID", "") == RTStructureSetStorage or dataset.get("Modality") == "RTSTRUCT"
    )


def _single_rtstruct(loaded: list[LoadedDataset]) -> LoadedDataset:
    found = [item for item in loaded if _is_rtstruct(item.dataset)]
    if len(found) == 1:
        return found[0]
    kinds = collections.Counter(str(item.dataset.get("Modality", "?")) for item in loaded)
    summary = ", ".join(f"{n} {modality}" for modality, n in sorted(kinds.items())) or "nothing"
    shown = found or loaded
    raise DicomInputError(
        f"expected exactly one RT Structure Set, found {len(found)} among {len(loaded)} datasets ({summary})",
        [item.name for item in shown],
    )


def _contour_values(item: Dataset) -> NDArray[np.float64]:
    """ContourData as floats.

    Parsed from the raw bytes when pydicom has not converted them yet: much faster than
    a DSfloat per value, and the only way for values stored as UN because they exceed 64 KB.
    """
    value: Any = item.get_item("ContourData").value
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii").strip(" \x00").split("\\")
    values: NDArray[np.float64] = np.atleast_1d(np.asarray(value, dtype=np.float64))
    return values


def _contour_points(item: Dataset, roi: str, index: int, where: str) -> NDArray[np.float64]:
    if "ContourData" not in item or not item.get_item("ContourData").value:
        raise DicomInputError(f"{roi}: contour {index} has no ContourData", [where])
    try:
        values = _contour_values(item)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DicomInputError(
            f"{roi}: contour {index}: ContourData is not a list of numbers ({exc})", [where]
        ) from exc
    count = item.get("NumberOfContourPoints")
    if count is not None and len(values) != 3 * int(count):
        raise DicomInputError(
            f"{roi}: contour {index} has NumberOfContourPoints {int(count)} but ContourData holds "
            f"{len(values)} values ({len(values) / 3:g} points); the file is inconsistent",
            [where],
        )
    if len(values) % 3:
        raise DicomInputError(
            f"{roi}: contour {index}: ContourData has {len(values)} values, not x/y/z triples", [where]
        )
    return values.reshape(-1, 3)


def _roi_contours(item: Dataset | None, roi: str, where: str) -> tuple[list[NDArray[np.float64]], set[str]]:
    """Kept contours of one ROIContourSequence item and the geometric types it holds."""
    if item is None:
        return [], set()
    contours: dict[str, list[NDArray[np.float64]]] = collections.defaultdict(list)
    for index, contour in enumerate(item.get("ContourSequence", [])):
        kind = str(contour.get("ContourGeometricType", "")).strip().upper()
        if kind not in _KEPT_TYPES + _OPEN_TYPES:
            raise DicomInputError(
                f"{roi}: contour {index} has unknown ContourGeometricType {kind!r}", [where]
            )
        contours[kind].append(_contour_points(contour, roi, index, where))
    skipped = {kind: len(contours[kind]) for kind in _OPEN_TYPES if contours[kind]}
    if contours["CLOSED_PLANAR"] and contours["POINT"]:
        skipped["POINT"] = len(contours.pop("POINT"))
    if skipped:
        logger.warning(
            "%s in %s: skipped %s contours (only closed planar contours, or only points, make a structure)",
            roi,
            where,
            ", ".join(f"{n} {kind}" for kind, n in skipped.items()),
        )
    kept = contours["CLOSED_PLANAR"] or contours["POINT"]
    return kept, {kind for kind, found in contours.items() if found}


def _colour(item: Dataset | None, roi: str) -> tuple[int, int, int] | None:
    if item is None or item.get("ROIDisplayColor") in (None, ""):
        return None
    try:
        r, g, b = (int(v) for v in item.ROIDisplayColor)
    except (TypeError, ValueError):
        logger.warning("%s: ignoring unreadable ROIDisplayColor %r", roi, item.get("ROIDisplayColor"))
        return None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        logger.warning("%s: ignoring ROIDisplayColor %r outside 0-255", roi, [r, g, b])
        return None
    return (r, g, b)


def _references(ds: Dataset) -> tuple[str, str, tuple[str, ...]]:
    """(frame of reference UID, referenced series UID, referenced image UIDs) of a structure set."""
    frames = list(ds.get("ReferencedFrameOfReferenceSequence", []))
    frame = (
        str(frames[0].get("FrameOfReferenceUID", "")) if frames else str(ds.get("FrameOfReferenceUID", ""))
    )
    series_uid, images = "", []
    for frame_item in frames:
        for study in frame_item.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                series_uid = series_uid or str(series.get("SeriesInstanceUID", ""))
                images += [
                    str(i.get("ReferencedSOPInstanceUID", "")) for i in series.get("ContourImageSequence", [])
                ]
    return frame, series_uid, tuple(images)


def _structures(ds: Dataset, default_frame: str, where: str) -> tuple[Structure, ...]:
    contours_by_roi = {int(item.ReferencedROINumber): item for item in ds.get("ROIContourSequence", [])}
    types_by_roi = {
        int(item.ReferencedROINumber): str(item.get("RTROIInterpretedType", "") or "")
        for item in ds.get("RTROIObservationsSequence", [])
        if "ReferencedROINumber" in item
    }
    structures = []
    for roi_item in ds.get("StructureSetROISequence", []):
        if "ROINumber" not in roi_item:
            raise DicomInputError("a StructureSetROISequence item has no ROINumber", [where])
        number, name = int(roi_item.ROINumber), str(roi_item.get("ROIName", "") or "")
        label = f"ROI {number} {name!r}"
        contour_item = contours_by_roi.pop(number, None)
        contours, kinds = _roi_contours(contour_item, label, where)
        structures.append(
            Structure(
                name=name,
                role=role_from_dicom(types_by_roi.get(number, ""), name, kinds),
                contours_mm=tuple(contours),
                frame_of_reference_uid=str(
                    roi_item.get("ReferencedFrameOfReferenceUID", "") or default_frame
                ),
                number=number,
                colour_rgb=_colour(contour_item, label),
            )
        )
    if contours_by_roi:
        logger.warning(
            "%s: ROIContourSequence items for unknown ROI numbers %s ignored", where, sorted(contours_by_roi)
        )
    return tuple(structures)


def read_rtstruct(source: DatasetSource) -> StructureSet:
    """Read the one RT Structure Set in ``source``.

    Parameters
    ----------
    source : path, folder, dataset, or an iterable of those
        Must hold exactly one RT Structure Set (other objects, e.g. its CT, may be there too).

    Returns
    -------
    StructureSet

    Raises
    ------
    DicomInputError
        If the source holds no or several RT Structure Sets (the message lists what it
        holds), or a contour is malformed: NumberOfContourPoints disagreeing with
        ContourData, values that are not numbers, an unknown ContourGeometricType.

    References
    ----------
    DICOM PS3.3 C.8.8.5 Structure Set, C.8.8.6 ROI Contour, C.8.8.8 RT ROI Observations.
    """
    item = _single_rtstruct(load_datasets(source, stop_before_pixels=True))
    ds, where = item.dataset, item.name
    frame, series_uid, images = _references(ds)
    return StructureSet(
        structures=_structures(ds, frame, where),
        frame_of_reference_uid=frame,
        referenced_series_uid=series_uid,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        label=str(ds.get("StructureSetLabel", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        referenced_image_uids=images,
        source=where,
    )


def _interpreted_type(structure: Structure) -> str:
    """RTROIInterpretedType (PS3.3 C.8.8.8.1) for a role; read back, it gives the same role."""
    if structure.role is StructureRole.TARGET:
        upper = structure.name.upper()
        return "PTV" if "PTV" in upper else "CTV" if "CTV" in upper else "GTV"
    return {
        StructureRole.ORGAN_AT_RISK: "ORGAN",
        StructureRole.EXTERNAL: "EXTERNAL",
        StructureRole.POINT: "MARKER",
        StructureRole.OTHER: "CONTROL",
    }[structure.role]


def _slice_planes(referenced_ct: Sequence[Dataset]) -> _SlicePlanes:
    """Unit normals (n, 3) and offsets (n,) of the referenced CT slices' planes."""
    normals, offsets = [], []
    for ct in referenced_ct:
        if "ImageOrientationPatient" not in ct or "ImagePositionPatient" not in ct:
            raise ValueError(
                f"referenced CT {ct.get('SOPInstanceUID', '?')} has no ImageOrientationPatient/"
                "ImagePositionPatient, so contours cannot be matched to it"
            )
        cosines = np.asarray(ct.ImageOrientationPatient, dtype=np.float64).reshape(2, 3)
        normal = np.cross(cosines[0], cosines[1])
        normals.append(normal / np.linalg.norm(normal))
        offsets.append(float(normals[-1] @ np.asarray(ct.ImagePositionPatient, dtype=np.float64)))
    return np.array(normals).reshape(-1, 3), np.array(offsets)


def _image_reference(ct: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ct.SOPClassUID
    item.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    return item


def _contour_item(
    points: NDArray[np.float64],
    kind: str,
    number: int,
    referenced_ct: Sequence[Dataset],
    planes: _SlicePlanes | None,
) -> tuple[Dataset, int]:
    """One ContourSequence item and the byte length of its ContourData."""
    item = Dataset()
    if planes is not None:
        distance = np.max(np.abs(points @ planes[0].T - planes[1]), axis=0)
        best = int(np.argmin(distance))
        if distance[best] <= _ON_SLICE_TOLERANCE_MM:
            item.ContourImageSequence = DicomSequence([_image_reference(referenced_ct[best])])
    item.ContourGeometricType = kind
    item.NumberOfContourPoints = len(points)
    item.ContourNumber = number
    texts = ds_texts(np.round(points, _DECIMALS))
    item.ContourData = texts
    return item, sum(len(t) for t in texts) + len(texts) - 1


def _roi_numbers(structures: Sequence[Structure]) -> list[int]:
    """Keep the structures' ROI numbers when they are distinct and positive, else 1..n."""
    numbers = [s.number for s in structures]
    if len(set(numbers)) == len(numbers) and all(n > 0 for n in numbers):
        return numbers
    return list(range(1, len(structures) + 1))


def _check_structures(structures: Sequence[Structure], context: StudyContext) -> None:
    for structure in structures:
        if structure.frame_of_reference_uid not in ("", context.frame_of_reference_uid):
            raise ValueError(
                f"structure {structure.name!r} is in frame of reference "
                f"{structure.frame_of_reference_uid!r}, not the context's "
                f"{context.frame_of_reference_uid!r}: its coordinates would be misplaced"
            )
        if structure.role is StructureRole.POINT and any(len(c) != 1 for c in structure.contours_mm):
            raise ValueError(f"POINT structure {structure.name!r} has a contour with more than one point")


def _frame_references(
    context: StudyContext, referenced_ct: Sequence[Dataset], series_uid: str
) -> DicomSequence:
    frame = Dataset()
    frame.FrameOfReferenceUID = context.frame_of_reference_uid
    if series_uid:
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        if referenced_ct:  # Type 1 (one or more items): PS3.3 wants the images, when known
            series.ContourImageSequence = DicomSequence([_image_reference(ct) for ct in referenced_ct])
        study = Dataset()
        study.ReferencedSOPClassUID = _STUDY_REFERENCE_CLASS
        study.ReferencedSOPInstanceUID = (
            str(referenced_ct[0].StudyInstanceUID) if referenced_ct else context.study_instance_uid
        )
        study.RTReferencedSeriesSequence = DicomSequence([series])
        frame.RTReferencedStudySequence = DicomSequence([study])
    return DicomSequence([frame])


def _referenced_series(
    referenced_ct: Sequence[Dataset], referenced_series_uid: str, context: StudyContext
) -> str:
    uids = {str(ct.SeriesInstanceUID) for ct in referenced_ct}
    frames = {str(ct.get("FrameOfReferenceUID", "")) for ct in referenced_ct} - {""}
    if len(uids) > 1:
        raise ValueError(f"referenced_ct holds several series {sorted(uids)}; give the slices of one series")
    if frames - {context.frame_of_reference_uid}:
        raise ValueError(
            f"referenced_ct is in frame of reference {sorted(frames)}, not the context's "
            f"{context.frame_of_reference_uid!r}; build the StudyContext from the CT"
        )
    if uids and referenced_series_uid and uids != {referenced_series_uid}:
        raise ValueError(
            f"referenced_series_uid {referenced_series_uid!r} is not the CT's series {uids.pop()!r}"
        )
    return referenced_series_uid or (uids.pop() if uids else "")


def _roi_items(
    structure: Structure,
    number: int,
    context: StudyContext,
    referenced_ct: Sequence[Dataset],
    planes: _SlicePlanes | None,
) -> tuple[Dataset, Dataset, Dataset, int]:
    """StructureSetROI, ROIContour, RTROIObservations items of a structure; its longest ContourData."""
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = context.frame_of_reference_uid
    roi.ROIName = structure.name
    roi.ROIGenerationAlgorithm = ""
    contour = Dataset()
    if structure.colour_rgb is not None:
        contour.ROIDisplayColor = list(structure.colour_rgb)
    kind = "POINT" if structure.role is StructureRole.POINT else "CLOSED_PLANAR"
    items = [
        _contour_item(c, kind, i + 1, referenced_ct, planes) for i, c in enumerate(structure.contours_mm)
    ]
    if items:
        contour.ContourSequence = DicomSequence([item for item, _ in items])
    contour.ReferencedROINumber = number
    observation = Dataset()
    observation.ObservationNumber = number
    observation.ReferencedROINumber = number
    observation.RTROIInterpretedType = _interpreted_type(structure)
    observation.ROIInterpreter = ""
    return roi, contour, observation, max((length for _, length in items), default=0)


def write_rtstruct(
    structures: Sequence[Structure],
    context: StudyContext,
    *,
    referenced_ct: Sequence[Dataset] | None = None,
    referenced_series_uid: str = "",
    label: str = "seedguide",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """An RT Structure Set Storage dataset holding ``structures``.

    Parameters
    ----------
    structures : sequence of Structure
        Coordinates in the context's frame of reference (or with no frame given).
    context : StudyContext
        Patient, study and frame of reference shared with the CT and plan.
    referenced_ct : sequence of Dataset, optional
        The CT slices the contours were drawn on (headers suffice): each contour lying on a
        slice (within 0.1 mm of its plane) references it in ContourImageSequence, and all
        are listed under RTReferencedSeriesSequence.
    referenced_series_uid : str
        Series to reference when the CT datasets are not at hand.
    label : str
        StructureSetLabel.
    series_instance_uid, sop_instance_uid : str, optional
        New UIDs by default.

    Returns
    -------
    Dataset
        With file meta; Explicit VR Little Endian, or Implicit VR Little Endian when a
        contour's ContourData exceeds the 64 KB an explicit DS value can hold.

    Raises
    ------
    ValueError
        If a structure is in another frame of reference, a POINT structure has a contour
        of several points, or the CT references disagree with each other or the context.

    References
    ----------
    DICOM PS3.3 A.19 RT Structure Set IOD; C.8.8.5, C.8.8.6, C.8.8.8.
    """
    _check_structures(structures, context)
    cts = list(referenced_ct or [])
    series_uid = _referenced_series(cts, referenced_series_uid, context)
    ds = new_dataset(
        context,
        sop_class_uid=RTStructureSetStorage,
        modality="RTSTRUCT",
        series_instance_uid=series_instance_uid or new_uid(),
        series_number=_SERIES_NUMBER,
        series_description=label,
        sop_instance_uid=sop_instance_uid,
    )
    ds.OperatorsName = ""
    ds.StructureSetLabel = label
    ds.StructureSetDate = ds.InstanceCreationDate
    ds.StructureSetTime = ds.InstanceCreationTime
    ds.ReferencedFrameOfReferenceSequence = _frame_references(context, cts, series_uid)
    planes = _slice_planes(cts) if cts else None
    numbers = _roi_numbers(structures)
    items = [_roi_items(s, n, context, cts, planes) for s, n in zip(structures, numbers, strict=True)]
    ds.StructureSetROISequence = DicomSequence([item[0] for item in items])
    ds.ROIContourSequence = DicomSequence([item[1] for item in items])
    ds.RTROIObservationsSequence = DicomSequence([item[2] for item in items])
    if max((item[3] for item in items), default=0) > _MAX_EXPLICIT_LENGTH:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def structure_from_mask(
    mask: NDArray[np.bool_],
    grid: Grid,
    name: str,
    role: str | StructureRole,
    *,
    colour_rgb: tuple[int, int, int] | None = None,
) -> Structure:
    """A structure outlining ``mask`` slice by slice (see :func:`guidance.rasterise.mask_to_contours`)."""
    return Structure(
        name=name,
        role=StructureRole(role),
        contours_mm=mask_to_contours(mask, grid),
        frame_of_reference_uid=grid.frame_of_reference_uid,
        colour_rgb=colour_rgb,
    )
