"""RT Dose: dose grids and dose-volume histograms, read and written.

:func:`read_rtdose` turns the one RT Dose in a source into a
:class:`~guidance.volume.Volume` of dose in Gy; :func:`read_dvhs` reads its
DVH Sequence; :func:`write_rtdose` builds an RT Dose Storage dataset from a
dose volume (DICOM PS3.3 A.18, C.8.8.3, C.8.8.4).

Geometry follows PS3.3 C.8.8.3.2: the first frame sits at
ImagePositionPatient, and GridFrameOffsetVector gives each frame's signed
distance along the normal (row cosine x column cosine) of the image plane,
either relative to the first frame (first value 0; may descend) or, for axial
grids only, as absolute patient z. PixelSpacing is (distance between rows,
distance between columns): the row spacing runs along the column cosine.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import RTDoseStorage, RTPlanStorage

from guidance.dicomio.dataset import (
    DatasetSource,
    LoadedDataset,
    StudyContext,
    load_datasets,
    new_dataset,
    new_uid,
)
from guidance.dicomio.errors import DicomInputError, SeriesGeometryError
from guidance.dicomio.rtdvh import (
    DoseVolumeHistogram,
    DvhType,
    DvhVolumeUnits,
    add_dvh_module,
    dvh_from_item,
    gy_per_dose_unit,
)
from guidance.dicomio.values import ds_text, ds_texts, element_values, finite_numbers
from guidance.volume import Volume, affine_from_dicom

__all__ = [
    "DoseType",
    "DoseVolumeHistogram",
    "DvhType",
    "DvhVolumeUnits",
    "read_dvhs",
    "read_rtdose",
    "read_rtdoses",
    "write_rtdose",
]

logger = logging.getLogger(__name__)

_GRID_FRAME_OFFSET_VECTOR = Tag(0x3004, 0x000C)
_MAX_STORED = 2**32 - 1
# The largest stored value aims a little below 2^32 - 1: DoseGridScaling is a
# 16-character DS (about 11 significant digits), and its rounding must never
# push the maximum dose past the uint32 range.
_STORED_TARGET = 2**32 - 256
_COSINE_TOL = 1e-4
_AXIAL = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
_SUMMATIONS_WRITTEN = {"PLAN", "MULTI_PLAN"}


class DoseType(enum.Enum):
    """Dose Type (3004,0004), PS3.3 C.8.8.3."""

    PHYSICAL = "PHYSICAL"
    EFFECTIVE = "EFFECTIVE"
    ERROR = "ERROR"


# ----------------------------------------------------------------------------- reading


def _is_rtdose(dataset: Dataset) -> bool:
    return str(dataset.get("SOPClassUID", "")) == RTDoseStorage or (
        str(dataset.get("Modality", "")).upper() == "RTDOSE"
    )


def _single_rtdose(source: DatasetSource) -> LoadedDataset:
    loaded = load_datasets(source)
    doses = [item for item in loaded if _is_rtdose(item.dataset)]
    if len(doses) == 1:
        return doses[0]
    if not doses:
        found = sorted({str(item.dataset.get("Modality", "?")) for item in loaded})
        raise DicomInputError(
            f"expected exactly one RT Dose, found none among {len(loaded)} datasets "
            f"(modalities: {', '.join(found) or 'none'})",
            [item.name for item in loaded],
        )
    listed = "; ".join(
        f"{item.name} (SOPInstanceUID {item.dataset.get('SOPInstanceUID', '?')}, "
        f"DoseSummationType {item.dataset.get('DoseSummationType', '?')})"
        for item in doses
    )
    raise DicomInputError(
        f"expected exactly one RT Dose, found {len(doses)}: {listed}; pass one of them, or use read_rtdoses",
        [item.name for item in doses],
    )


def read_rtdoses(
    source: DatasetSource, *, gy_per_relative_unit: float | None = None, spacing_tolerance_mm: float = 0.01
) -> list[Volume]:
    """Read every RT Dose grid in ``source`` (see :func:`read_rtdose`), in source order."""
    return [
        _dose_volume(item, gy_per_relative_unit, spacing_tolerance_mm)
        for item in load_datasets(source)
        if _is_rtdose(item.dataset)
    ]


def read_rtdose(
    source: DatasetSource, *, gy_per_relative_unit: float | None = None, spacing_tolerance_mm: float = 0.01
) -> Volume:
    """Read the one RT Dose grid in ``source`` as dose in Gy.

    Parameters
    ----------
    source : path, folder, dataset, or an iterable of those
        Must hold exactly one RT Dose (other objects are ignored).
    gy_per_relative_unit : float, optional
        Only for DoseUnits RELATIVE, whose reference dose the file does not
        state: the dose in Gy of one relative unit (pixel x DoseGridScaling).
        Ignored for DoseUnits GY.
    spacing_tolerance_mm : float
        Largest distance a frame may lie from the regular grid fitted through
        the first and last frames.

    Returns
    -------
    Volume
        float64 dose in Gy, shape (frames, Rows, Columns), affine from
        ImagePositionPatient, ImageOrientationPatient, PixelSpacing and
        GridFrameOffsetVector; metadata: modality, units ("Gy"), dose_type,
        dose_summation_type, dose_units_in_file, dose_grid_scaling,
        referenced_plan_uid, referenced_structure_set_uid,
        series_instance_uid, sop_instance_uid, study_instance_uid,
        dose_comment, source.

    Raises
    ------
    DicomInputError
        No or several RT Doses; no pixel data; DoseUnits RELATIVE without
        ``gy_per_relative_unit``; missing or invalid attributes.
    SeriesGeometryError
        Frames that are not monotonic, not evenly spaced, or a
        GridFrameOffsetVector in neither form of PS3.3 C.8.8.3.2.

    References
    ----------
    DICOM PS3.3 C.8.8.3 (RT Dose Module), C.8.8.3.2 (Grid Frame Offset Vector),
    C.7.6.2.1.1 (Image Position and Orientation).
    """
    return _dose_volume(_single_rtdose(source), gy_per_relative_unit, spacing_tolerance_mm)


def _dose_volume(item: LoadedDataset, gy_per_relative_unit: float | None, tolerance_mm: float) -> Volume:
    ds, name = item.dataset, item.name
    if "PixelData" not in ds:
        raise DicomInputError("RT Dose has no PixelData (DVH or point doses only): no dose grid", [name])
    factor = gy_per_dose_unit(str(ds.get("DoseUnits", "")), name, gy_per_relative_unit)
    scaling = _positive(ds, "DoseGridScaling", name)
    pixels = _frames(ds, name)
    affine = _dose_affine(ds, name, pixels.shape[0], tolerance_mm)
    frame_uid = str(ds.get("FrameOfReferenceUID", ""))
    if not frame_uid:
        logger.warning("%s: RT Dose without FrameOfReferenceUID", name)
    dose = pixels.astype(np.float64) * (scaling * factor)
    return Volume(dose, affine, frame_uid, _dose_metadata(ds, name))


def _positive(ds: Dataset, keyword: str, name: str) -> float:
    value = ds.get(keyword)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DicomInputError(f"{keyword} is missing or not a number ({value!r})", [name]) from None
    if not (np.isfinite(number) and number > 0):
        raise DicomInputError(f"{keyword} must be a finite number > 0; got {number}", [name])
    return number


def _frames(ds: Dataset, name: str) -> NDArray[Any]:
    frames = int(ds.get("NumberOfFrames") or 1)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DicomInputError(f"SamplesPerPixel is {ds.SamplesPerPixel}; a dose grid has 1", [name])
    try:
        pixels = np.asarray(ds.pixel_array)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise DicomInputError(
            f"cannot decode the dose pixel data (transfer syntax {syntax}): {exc}", [name]
        ) from exc
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    expected = (frames, int(ds.Rows), int(ds.Columns))
    if pixels.shape != expected:
        raise DicomInputError(f"pixel data has shape {pixels.shape}; header says {expected}", [name])
    return pixels


def _orientation(ds: Dataset, name: str) -> NDArray[np.float64]:
    iop = finite_numbers(ds.get("ImageOrientationPatient"), "ImageOrientationPatient", name, 6)
    row, col = iop[:3], iop[3:]
    if (
        abs(np.linalg.norm(row) - 1) > _COSINE_TOL
        or abs(np.linalg.norm(col) - 1) > _COSINE_TOL
        or abs(row @ col) > _COSINE_TOL
    ):
        raise SeriesGeometryError(
            f"ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors", [name]
        )
    return iop


def _frame_distances_mm(
    ds: Dataset, name: str, frames: int, z_mm: float, iop: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Signed distance of each listed plane from the first frame along the plane normal (C.8.8.3.2)."""
    if frames > 1:
        pointers = [Tag(p) for p in element_values(ds.get("FrameIncrementPointer"))]
        if not pointers:
            logger.warning(
                "%s: multi-frame RT Dose without FrameIncrementPointer; using GridFrameOffsetVector", name
            )
        elif _GRID_FRAME_OFFSET_VECTOR not in pointers:
            raise DicomInputError(
                f"FrameIncrementPointer is {pointers}; an RT Dose's must be "
                "(3004,000C) GridFrameOffsetVector",
                [name],
            )
    if not element_values(ds.get("GridFrameOffsetVector")):
        if frames > 1:
            raise SeriesGeometryError(f"{frames}-frame RT Dose without GridFrameOffsetVector", [name])
        return np.zeros(1)
    offsets = finite_numbers(ds.get("GridFrameOffsetVector"), "GridFrameOffsetVector", name, None)
    if offsets[0] == 0.0:
        distances = offsets  # form (a): relative to the first frame, along row x column
    elif abs(offsets[0] - z_mm) <= 1e-3 and np.allclose(iop, _AXIAL, atol=_COSINE_TOL):
        distances = offsets - offsets[0]  # form (b): absolute patient z of an axial grid
    else:
        raise SeriesGeometryError(
            f"GridFrameOffsetVector starts at {offsets[0]}: neither 0 (offsets relative to the first "
            f"frame) nor ImagePositionPatient z {z_mm} with an axial (1,0,0,0,1,0) orientation "
            "(absolute z), the two forms PS3.3 C.8.8.3.2 allows",
            [name],
        )
    if offsets.size != frames and frames > 1:
        raise SeriesGeometryError(
            f"GridFrameOffsetVector has {offsets.size} values for {frames} frames", [name]
        )
    if offsets.size != frames:
        logger.warning(
            "%s: GridFrameOffsetVector has %d values for 1 frame; the first is used", name, offsets.size
        )
    return distances


def _slice_step_mm(
    ds: Dataset, name: str, frames: int, distances: NDArray[np.float64], tolerance_mm: float
) -> float:
    if frames == 1:
        thickness = ds.get("SliceThickness")
        if thickness not in (None, "") and float(thickness) > 0:
            return float(thickness)
        if distances.size >= 2 and distances[1] != distances[0]:
            return float(distances[1] - distances[0])
        raise SeriesGeometryError(
            "single-frame RT Dose without a slice thickness (SliceThickness empty and "
            "GridFrameOffsetVector has one value): its voxel volume is unknown",
            [name],
        )
    steps = np.diff(distances)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        bad = np.flatnonzero(np.sign(steps) != np.sign(steps[0])) + 1
        raise SeriesGeometryError(
            "GridFrameOffsetVector is not strictly monotonic (PS3.3 C.8.8.3.2) "
            f"at frames {bad[:10].tolist()}",
            [name],
        )
    step = float((distances[-1] - distances[0]) / (frames - 1))
    deviation = float(np.max(np.abs(distances - (distances[0] + step * np.arange(frames)))))
    if deviation > tolerance_mm:
        raise SeriesGeometryError(
            f"frames are not evenly spaced: steps from {steps.min():.4f} to {steps.max():.4f} mm, a frame "
            f"lies {deviation:.4f} mm off the regular grid (tolerance {tolerance_mm} mm); resample the dose "
            "onto a regular grid in the planning system or pass a larger spacing_tolerance_mm",
            [name],
        )
    return step


def _dose_affine(ds: Dataset, name: str, frames: int, tolerance_mm: float) -> NDArray[np.float64]:
    position = finite_numbers(ds.get("ImagePositionPatient"), "ImagePositionPatient", name, 3)
    iop = _orientation(ds, name)
    spacing = finite_numbers(ds.get("PixelSpacing"), "PixelSpacing", name, 2)
    if np.any(spacing <= 0):
        raise SeriesGeometryError(f"PixelSpacing must be > 0; got {spacing.tolist()}", [name])
    distances = _frame_distances_mm(ds, name, frames, float(position[2]), iop)
    step = _slice_step_mm(ds, name, frames, distances, tolerance_mm)
    normal = np.cross(iop[:3], iop[3:])
    return affine_from_dicom(position, iop, spacing, normal * step)


def _first_reference(ds: Dataset, keyword: str) -> str:
    items = ds.get(keyword) or []
    return str(items[0].get("ReferencedSOPInstanceUID", "")) if len(items) else ""


def _dose_metadata(ds: Dataset, name: str) -> dict[str, Any]:
    return {
        "modality": "RTDOSE",
        "units": "Gy",
        "dose_type": str(ds.get("DoseType", "")),
        "dose_summation_type": str(ds.get("DoseSummationType", "")),
        "dose_units_in_file": str(ds.get("DoseUnits", "")),
        "dose_grid_scaling": float(ds.DoseGridScaling),
        "referenced_plan_uid": _first_reference(ds, "ReferencedRTPlanSequence"),
        "referenced_structure_set_uid": _first_reference(ds, "ReferencedStructureSetSequence"),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "dose_comment": str(ds.get("DoseComment", "")),
        "source": name,
    }


def read_dvhs(
    source: DatasetSource, *, gy_per_relative_unit: float | None = None
) -> list[DoseVolumeHistogram]:
    """Read the DVH Sequence of the one RT Dose in ``source`` (empty list if it has none).

    Parameters
    ----------
    source : path, folder, dataset, or an iterable of those
    gy_per_relative_unit : float, optional
        Gy of one relative dose unit, needed for DVHs whose DoseUnits is RELATIVE.

    Raises
    ------
    DicomInputError
        An item lacks a Type 1 attribute, has an unknown DVH Type or volume
        unit, or DVH Data does not hold 2 x DVH Number of Bins values.

    References
    ----------
    DICOM PS3.3 C.8.8.4, RT DVH Module.
    """
    item = _single_rtdose(source)
    sequence = item.dataset.get("DVHSequence") or []
    return [
        dvh_from_item(entry, index, item.name, gy_per_relative_unit) for index, entry in enumerate(sequence)
    ]


# ----------------------------------------------------------------------------- writing


def _plane_geometry(volume: Volume) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """(ImageOrientationPatient, PixelSpacing, signed slice step along row x column) of ``volume``."""
    slice_vector, row_vector, col_vector = volume.affine[:3, 0], volume.affine[:3, 1], volume.affine[:3, 2]
    row_spacing, col_spacing = float(np.linalg.norm(row_vector)), float(np.linalg.norm(col_vector))
    row_cosine, col_cosine = col_vector / col_spacing, row_vector / row_spacing
    if abs(row_cosine @ col_cosine) > 1e-6:
        raise ValueError("the dose grid's row and column axes are not orthogonal: RT Dose cannot encode it")
    normal = np.cross(row_cosine, col_cosine)
    step = float(slice_vector @ normal)
    if np.linalg.norm(slice_vector - step * normal) > 1e-6 * max(1.0, abs(step)):
        raise ValueError(
            "the dose grid's slice axis is not perpendicular to its planes (sheared grid): "
            "RT Dose frames must stack along the plane normal; resample onto an orthogonal grid"
        )
    return np.concatenate([row_cosine, col_cosine]), np.array([row_spacing, col_spacing]), step


def _quantised(dose_gy: NDArray[np.float64]) -> tuple[NDArray[np.uint32], str]:
    """uint32 pixels and the DoseGridScaling string that maps them back to Gy."""
    top = float(dose_gy.max())
    if top == 0.0:
        return np.zeros(dose_gy.shape, dtype=np.uint32), "1.0"
    scaling = ds_text(top / _STORED_TARGET)
    stored = np.rint(dose_gy / float(scaling))
    if stored.max() > _MAX_STORED:  # cannot happen unless DS rounding changes: never wrap silently
        raise ValueError(f"dose maximum {top} Gy does not fit uint32 at DoseGridScaling {scaling}")
    return stored.astype(np.uint32), scaling


def _validated_dose(dose_gy: Volume, context: StudyContext) -> NDArray[np.float64]:
    if dose_gy.frame_of_reference_uid and dose_gy.frame_of_reference_uid != context.frame_of_reference_uid:
        raise ValueError(
            f"dose_gy is in frame of reference {dose_gy.frame_of_reference_uid!r} but the study context's is "
            f"{context.frame_of_reference_uid!r}; write it with the context of its own frame"
        )
    if not np.issubdtype(dose_gy.array.dtype, np.number) or np.iscomplexobj(dose_gy.array):
        raise ValueError(f"dose_gy must hold real numbers; got dtype {dose_gy.array.dtype}")
    values = dose_gy.array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"dose_gy holds {int(np.count_nonzero(~np.isfinite(values)))} NaN or infinite values"
        )
    if values.min() < 0:
        raise ValueError(
            f"dose_gy holds {int(np.count_nonzero(values < 0))} negative values (minimum {values.min()} Gy); "
            "RT Dose PHYSICAL/EFFECTIVE pixels are unsigned"
        )
    return values


def _plan_references(referenced_plan_uid: str | Sequence[str], dose_summation_type: str) -> list[Dataset]:
    uids = [referenced_plan_uid] if isinstance(referenced_plan_uid, str) else list(referenced_plan_uid)
    uids = [uid for uid in uids if uid]
    if dose_summation_type not in _SUMMATIONS_WRITTEN:
        raise ValueError(
            f"dose_summation_type {dose_summation_type!r} is not written here: use PLAN (or MULTI_PLAN); "
            "the other types need fraction group, beam or record references (PS3.3 C.8.8.3)"
        )
    needed = 2 if dose_summation_type == "MULTI_PLAN" else 1
    if len(uids) < needed or (dose_summation_type == "PLAN" and len(uids) != 1):
        wanted = "two or more RT Plan UIDs" if needed == 2 else "one RT Plan UID"
        raise ValueError(
            f"DoseSummationType {dose_summation_type} needs {wanted} "
            f"in referenced_plan_uid (ReferencedRTPlanSequence is Type 1C, PS3.3 C.8.8.3); got {uids}"
        )
    references = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = RTPlanStorage
        item.ReferencedSOPInstanceUID = uid
        references.append(item)
    return references


def write_rtdose(
    dose_gy: Volume,
    context: StudyContext,
    *,
    referenced_plan_uid: str | Sequence[str] = "",
    referenced_structure_set_uid: str = "",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    dose_summation_type: str = "PLAN",
    dose_comment: str = "",
    dose_type: str | DoseType = DoseType.PHYSICAL,
    dvhs: Sequence[DoseVolumeHistogram] = (),
    series_number: int = 1,
) -> Dataset:
    """Build an RT Dose Storage dataset (multi-frame, uint32) from a dose grid in Gy.

    Parameters
    ----------
    dose_gy : Volume
        Non-negative dose, Gy, shape (S, R, C). Any orientation whose slice
        axis is perpendicular to its planes; the slice step may point either
        way along row x column (then GridFrameOffsetVector descends).
    context : StudyContext
        Patient, study and frame of reference; the volume's frame, if set,
        must equal the context's.
    referenced_plan_uid : str or sequence of str
        SOPInstanceUID of the RT Plan (several for MULTI_PLAN). Required:
        ReferencedRTPlanSequence is Type 1C for PLAN and MULTI_PLAN.
    referenced_structure_set_uid : str
        Written only with ``dvhs``: the RT Dose IOD holds a
        ReferencedStructureSetSequence only in the RT DVH Module (PS3.3
        C.8.8.4). Without DVHs the structure set is reached through the plan.
    series_instance_uid, sop_instance_uid : str, optional
        New UIDs when not given.
    dose_summation_type : {"PLAN", "MULTI_PLAN"}
    dose_comment : str
        DoseComment (3004,0006), written when not empty.
    dose_type : DoseType or str
        PHYSICAL (default) or EFFECTIVE.
    dvhs : sequence of DoseVolumeHistogram
        Written as the RT DVH Module, doses in Gy.
    series_number : int

    Returns
    -------
    pydicom.dataset.Dataset
        GridFrameOffsetVector is relative to the first frame (first value 0,
        PS3.3 C.8.8.3.2 form (a)). Doses are stored as round(dose /
        DoseGridScaling) with DoseGridScaling = max / (2^32 - 256), so the
        read-back error is at most DoseGridScaling / 2, about 1.2e-10 of the
        maximum dose (under 1/2^32 of it relative to the full range).

    Raises
    ------
    ValueError
        Negative, NaN or infinite dose; another frame of reference; a grid
        RT Dose cannot encode (non-orthogonal or sheared); a missing plan
        reference; a structure set UID without DVHs.
    """
    values = _validated_dose(dose_gy, context)
    kind = DoseType(dose_type)
    if kind is DoseType.ERROR:
        raise ValueError("DoseType ERROR needs signed pixels; write PHYSICAL or EFFECTIVE dose")
    plans = _plan_references(referenced_plan_uid, dose_summation_type)
    orientation, pixel_spacing, step = _plane_geometry(dose_gy)
    pixels, scaling = _quantised(values)
    ds = new_dataset(
        context,
        sop_class_uid=RTDoseStorage,
        modality="RTDOSE",
        series_instance_uid=series_instance_uid or new_uid(),
        series_number=series_number,
        series_description="seedguide dose",
        sop_instance_uid=sop_instance_uid,
    )
    ds.OperatorsName = ""  # Type 2 in the RT Series Module
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ImagePositionPatient = ds_texts(dose_gy.affine[:3, 3])
    ds.ImageOrientationPatient = ds_texts(orientation)
    ds.PixelSpacing = ds_texts(pixel_spacing)
    ds.SliceThickness = ds_texts([abs(step)])[0]
    _add_pixels(ds, pixels)
    ds.GridFrameOffsetVector = ds_texts(step * np.arange(dose_gy.shape[0]))
    ds.DoseGridScaling = scaling
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", kind.value, dose_summation_type
    if dose_comment:
        ds.DoseComment = dose_comment
    ds.ReferencedRTPlanSequence = plans
    add_dvh_module(ds, dvhs, referenced_structure_set_uid)
    return ds


def _add_pixels(ds: Dataset, pixels: NDArray[np.uint32]) -> None:
    """Image Pixel and Multi-frame attributes for uint32 frames (PS3.3 C.8.8.3.4)."""
    frames, rows, columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = _GRID_FRAME_OFFSET_VECTOR
    ds.PixelData = pixels.astype("<u4").tobytes()
