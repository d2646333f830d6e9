"""CT image series: DICOM <-> :class:`~guidance.volume.Volume` in Hounsfield units.

:func:`read_ct_series` turns a CT series (CT Image Storage, one file per
slice, or Enhanced / Legacy Converted Enhanced CT, one multi-frame file) into
a float32 volume in HU whose affine comes from the DICOM geometry;
:func:`write_ct_series` turns a volume back into CT Image Storage datasets,
one per slice, that other systems read.

What a series must be to become a volume, and the errors when it is not, are
in :mod:`guidance.dicomio.series`. Nothing is resampled unless the caller asks
(``resample_nonuniform=True``), and the result says so in its metadata.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage

from guidance.dicomio.dataset import (
    DatasetSource,
    LoadedDataset,
    StudyContext,
    load_datasets,
    new_dataset,
    new_uid,
)
from guidance.dicomio.errors import DicomInputError, SeriesGeometryError
from guidance.dicomio.series import (
    ORTHOGONALITY_TOLERANCE,
    SPACING_TOLERANCE_MM,
    TILT_TOLERANCE,
    SliceStack,
    decode_frames,
    frame_group_item,
    group_by_series,
    image_planes,
    is_multiframe_functional,
    series_listing,
    source_path,
    stack_slices,
    transfer_syntax_of,
)
from guidance.dicomio.values import dicom_datetime, ds_text
from guidance.volume import Volume, affine_from_dicom

__all__ = ["CT_SOP_CLASSES", "read_ct_series", "write_ct_series"]

logger = logging.getLogger(__name__)

#: SOP classes whose images carry CT values and patient geometry (DICOM PS3.4 B.5).
CT_SOP_CLASSES = frozenset({CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage})
_INT16_MIN, _INT16_MAX = -32768, 32767


# --------------------------------------------------------------------------- reading


def _looks_like_ct(members: Sequence[LoadedDataset]) -> bool:
    return any(
        str(m.dataset.get("Modality", "")) == "CT" or m.dataset.get("SOPClassUID") in CT_SOP_CLASSES
        for m in members
    )


def _select_series(items: Sequence[LoadedDataset], series_instance_uid: str | None) -> list[LoadedDataset]:
    """The images of the requested series, or of the only CT series present."""
    images = [item for item in items if "PixelData" in item.dataset]
    if not images:
        raise DicomInputError("no image with pixel data among the datasets given", [i.name for i in items])
    groups = group_by_series(images)
    paths = [members[0].name for members in groups.values()]
    if series_instance_uid is not None:
        if series_instance_uid not in groups:
            raise DicomInputError(
                f"series {series_instance_uid} is not among the images given; "
                f"found:\n{series_listing(groups)}",
                paths,
            )
        return groups[series_instance_uid]
    if len(groups) == 1:
        return next(iter(groups.values()))
    candidates = {uid: members for uid, members in groups.items() if _looks_like_ct(members)}
    if len(candidates) == 1:
        uid, members = next(iter(candidates.items()))
        logger.info("reading CT series %s; ignoring %d other image series", uid, len(groups) - 1)
        return members
    raise SeriesGeometryError(
        f"the images given belong to {len(groups)} series ({len(candidates)} of them CT); choose one "
        f"with series_instance_uid=...:\n{series_listing(groups)}",
        paths,
    )


def _check_is_ct(members: Sequence[LoadedDataset]) -> None:
    """Every image must be a CT SOP class with Modality CT: no guessing from pixel values."""
    for member in members:
        ds = member.dataset
        sop = UID(str(ds.get("SOPClassUID", "")))
        modality = str(ds.get("Modality", ""))
        sop_name = f"{sop.name} ({sop})" if sop else "absent"
        if sop in CT_SOP_CLASSES and modality == "CT":
            continue
        if modality == "CT":
            why = (
                " (a Secondary Capture is a picture of a CT, without the CT Image module's geometry "
                "and Hounsfield rescale)"
                if "Secondary Capture" in sop.name
                else ""
            )
            problem = (
                f"Modality is CT but the SOP class is {sop_name}: this is not stored as a CT image{why}; "
                "export the original CT Image Storage series"
            )
        elif sop in CT_SOP_CLASSES:
            problem = f"SOP class is {sop_name} but Modality is {modality!r}: fix the exporting system"
        else:
            problem = f"not a CT image: Modality {modality or 'absent'!r}, SOP class {sop_name}"
        odd = [m.name for m in members if m.dataset.get("SOPClassUID") == ds.get("SOPClassUID")]
        raise DicomInputError(problem, odd)


def _check_pixel_format(members: Sequence[LoadedDataset]) -> None:
    for member in members:
        ds = member.dataset
        samples = int(ds.get("SamplesPerPixel", 1))
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if samples != 1 or photometric not in {"MONOCHROME1", "MONOCHROME2"}:
            raise DicomInputError(
                f"CT pixels must be one grey sample (MONOCHROME1/2); got SamplesPerPixel {samples}, "
                f"PhotometricInterpretation {photometric!r} (DICOM PS3.3 C.8.2.1)",
                [member.name],
            )


def _rescale(dataset: Dataset, frame: int, name: str) -> tuple[float, float, str]:
    """(slope, intercept, rescale type) of one frame (PS3.3 C.8.2.1, C.7.6.16.2.9)."""
    source: Dataset | None = dataset
    if is_multiframe_functional(dataset):
        source = frame_group_item(dataset, frame, "PixelValueTransformationSequence")
    slope = source.get("RescaleSlope") if source is not None else None
    intercept = source.get("RescaleIntercept") if source is not None else None
    if slope in (None, "") or intercept in (None, ""):
        raise DicomInputError(
            "no RescaleSlope/RescaleIntercept (Type 1 in CT images): stored values cannot be turned "
            "into Hounsfield units; fix the exporting system",
            [name],
        )
    kind = str(source.get("RescaleType", "") or "HU") if source is not None else "HU"
    return float(slope), float(intercept), kind


def _hounsfield(stack: SliceStack) -> tuple[NDArray[np.float32], set[str]]:
    """Stored values of every slice, decoded and rescaled, in stack order."""
    first = stack.planes[0]
    values = np.empty((len(stack.planes), first.rows, first.columns), dtype=np.float32)
    decoded: dict[int, NDArray[Any]] = {}
    kinds: set[str] = set()
    for index, plane in enumerate(stack.planes):
        key = id(plane.item)
        if key not in decoded:
            decoded[key] = decode_frames(plane.item)
        slope, intercept, kind = _rescale(plane.item.dataset, plane.frame, plane.name)
        kinds.add(kind)
        values[index] = decoded[key][plane.frame].astype(np.float64) * slope + intercept
    return values, kinds


def _resample_uniform(
    values: NDArray[np.float32], positions_mm: NDArray[np.float64]
) -> tuple[NDArray[np.float32], int]:
    """Linear interpolation along the slice axis onto equal steps from the first to the last slice.

    The step is the smallest gap, shortened just enough that a whole number of
    steps spans first to last (exactly the smallest gap when slices are missing).
    """
    span = float(positions_mm[-1] - positions_mm[0])
    smallest = float(np.diff(positions_mm).min())
    steps = round(span / smallest)
    # Gaps that are whole multiples of the smallest (missing slices) within the
    # uniformity tolerance keep the smallest gap; otherwise shorten it.
    if abs(span - steps * smallest) > SPACING_TOLERANCE_MM + 1e-3 * smallest:
        steps = int(np.ceil(span / smallest))
    count = steps + 1
    targets = positions_mm[0] + np.arange(count) * (span / (count - 1))
    lower = np.clip(np.searchsorted(positions_mm, targets, side="right") - 1, 0, len(positions_mm) - 2)
    out = np.empty((count, *values.shape[1:]), dtype=np.float32)
    for index, (below, target) in enumerate(zip(lower, targets, strict=True)):
        weight = (target - positions_mm[below]) / (positions_mm[below + 1] - positions_mm[below])
        out[index] = (1.0 - weight) * values[below] + weight * values[below + 1]
    return out, count


def _one_value(members: Sequence[LoadedDataset], keyword: str) -> str:
    found = {str(m.dataset.get(keyword, "")) for m in members}
    if len(found) > 1:
        raise DicomInputError(
            f"{keyword} differs within the series ({sorted(found)}): the slices are not one scan",
            [m.name for m in members],
        )
    return found.pop()


def _acquired(ds: Any) -> str | None:
    """When the images were acquired (ISO 8601): Acquisition, else Content, Series or Study date/time."""
    for prefix in ("Acquisition", "Content", "Series", "Study"):
        try:
            when = dicom_datetime(ds.get(f"{prefix}Date"), ds.get(f"{prefix}Time"))
        except ValueError:
            continue
        if when is not None:
            return when.isoformat()
    return None


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _metadata(stack: SliceStack, members: Sequence[LoadedDataset], kinds: set[str]) -> dict[str, Any]:
    first = stack.planes[0].item.dataset
    return {
        "modality": "CT",
        "sop_class_uid": str(first.get("SOPClassUID", "")),
        "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
        "study_instance_uid": str(first.get("StudyInstanceUID", "")),
        "patient_id": str(first.get("PatientID", "")),
        "series_number": str(first.get("SeriesNumber", "")),
        "series_description": str(first.get("SeriesDescription", "")),
        "manufacturer": str(first.get("Manufacturer", "")),
        "kvp": _float_or_none(first.get("KVP")),
        "convolution_kernel": str(first.get("ConvolutionKernel", "")),
        "slice_thickness_mm": stack.planes[0].slice_thickness_mm,
        "rescale_type": "/".join(sorted(kinds)),
        "sop_instance_uids": [str(p.item.dataset.get("SOPInstanceUID", "")) for p in stack.planes],
        "frame_numbers": [p.frame + 1 for p in stack.planes],
        "source_paths": [source_path(p.item) for p in stack.planes],
        "transfer_syntax_uids": sorted({str(transfer_syntax_of(m.dataset)) for m in members}),
        "resampled_slices": False,
        "acquisition_datetime": _acquired(first),
    }


def read_ct_series(
    source: DatasetSource, *, series_instance_uid: str | None = None, resample_nonuniform: bool = False
) -> Volume:
    """Read one CT series as a float32 volume in Hounsfield units.

    Parameters
    ----------
    source : path, folder, dataset, or an iterable of those
        Where the images are (see :func:`~guidance.dicomio.dataset.load_datasets`).
        Datasets without pixel data (RT Structure Sets, plans) are ignored.
    series_instance_uid : str, optional
        The series to read. Needed only when the images hold several CT
        series; other image series (RT Dose, MR...) are then ignored.
    resample_nonuniform : bool
        When the gaps between slices differ (missing slices), interpolate
        linearly along the slice axis onto equal steps from the first to the
        last slice, at the smallest gap (shortened, if needed, to divide the
        span evenly). Metadata then holds ``resampled_slices=True``,
        ``original_slice_positions_mm`` and ``sop_instance_uids`` of the
        source slices, which no longer map one-to-one to volume slices.
        Off by default: unequal gaps are an error.

    Returns
    -------
    Volume
        Array of shape (S, R, C), float32 HU (RescaleSlope/Intercept applied
        slice by slice; ``metadata["rescale_type"]`` is not "HU" when an
        Enhanced CT says its values are something else); slices in increasing
        position along the slice normal (row cosine x column cosine), so the
        affine's slice axis points along the normal; ``frame_of_reference_uid``
        from the images ("" if absent). ``metadata`` holds identity, never
        geometry: modality, sop_class_uid, series_instance_uid,
        study_instance_uid, patient_id, series_number, series_description,
        manufacturer, kvp, convolution_kernel, slice_thickness_mm,
        rescale_type, and per slice in slice order sop_instance_uids,
        frame_numbers (1-based) and source_paths ("" for datasets given in
        memory); transfer_syntax_uids; resampled_slices.

    Raises
    ------
    DicomInputError
        If nothing is readable, the images are not CT (e.g. a CT stored as
        Secondary Capture), rescale attributes are missing, or the pixel data
        cannot be decoded (the message names the file and transfer syntax).
    SeriesGeometryError
        If several CT series are given without ``series_instance_uid``, or
        the slices do not form one regular grid (see
        :func:`~guidance.dicomio.series.stack_slices`).

    References
    ----------
    DICOM PS3.3 A.3 (CT Image IOD), A.38 (Enhanced CT IOD), C.7.6.2.1.1.
    """
    members = _select_series(load_datasets(source), series_instance_uid)
    _check_is_ct(members)
    _check_pixel_format(members)
    frame_of_reference_uid = _one_value(members, "FrameOfReferenceUID")
    stack = stack_slices([p for m in members for p in image_planes(m)], allow_nonuniform=resample_nonuniform)
    values, kinds = _hounsfield(stack)
    if kinds - {"HU"}:
        logger.warning("CT values are %s, not Hounsfield units (RescaleType)", "/".join(sorted(kinds)))
    metadata = _metadata(stack, members, kinds)
    step = stack.step_mm
    if not stack.uniform:
        values, count = _resample_uniform(values, stack.positions_mm)
        step = (stack.planes[-1].position_mm - stack.planes[0].position_mm) / (count - 1)
        metadata |= {"resampled_slices": True, "original_slice_positions_mm": stack.positions_mm.tolist()}
        logger.warning(
            "CT series %s has unequal slice gaps: resampled %d slices onto %d at %.4g mm",
            metadata["series_instance_uid"], len(stack.planes), count, float(np.linalg.norm(step)),
        )  # fmt: skip
    first = stack.planes[0]
    affine = affine_from_dicom(first.position_mm, first.orientation, first.pixel_spacing_mm, step)
    logger.info("read CT series %s: shape %s", metadata["series_instance_uid"], values.shape)
    return Volume(values, affine, frame_of_reference_uid, metadata)


# --------------------------------------------------------------------------- writing


def _slice_geometry(affine: NDArray[np.float64]) -> tuple[list[float], list[float], NDArray[np.float64]]:
    """(ImageOrientationPatient, PixelSpacing, unit normal) of a slice-stack affine.

    Raises
    ------
    ValueError
        If the row and column axes are not orthogonal, or the slice step is
        not along the slice normal (either sign).
    """
    step, row_step, column_step = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    row_spacing, column_spacing = float(np.linalg.norm(row_step)), float(np.linalg.norm(column_step))
    row_cosine = column_step / column_spacing  # direction of increasing column index along a row
    column_cosine = row_step / row_spacing
    if abs(float(row_cosine @ column_cosine)) > ORTHOGONALITY_TOLERANCE:
        raise ValueError(
            "volume affine row and column axes are not orthogonal (cos = "
            f"{float(row_cosine @ column_cosine):.6f}); DICOM images need a rectangular pixel grid: "
            "resample the volume onto an orthogonal grid first"
        )
    normal = np.cross(row_cosine, column_cosine)
    along = float(step @ normal)
    if np.linalg.norm(step - along * normal) > TILT_TOLERANCE * abs(along) or abs(along) == 0.0:
        raise ValueError(
            f"volume affine slice step {step.tolist()} is not along the slice normal {normal.tolist()} "
            "(a sheared or tilted stack): a CT series cannot represent it; resample the volume first"
        )
    orientation = [*row_cosine.tolist(), *column_cosine.tolist()]
    return orientation, [row_spacing, column_spacing], normal


def _quantise(array: NDArray[Any]) -> tuple[NDArray[np.int16], float]:
    """Stored int16 values and RescaleIntercept (slope 1) holding HU rounded to 1 HU."""
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("volume holds NaN or infinite values; CT pixels must be finite HU")
    rounded = np.rint(values)
    low, high = float(rounded.min()), float(rounded.max())
    if low >= _INT16_MIN and high <= _INT16_MAX:
        intercept = 0.0
    elif high - low <= _INT16_MAX - _INT16_MIN:
        intercept = low - _INT16_MIN
    else:
        raise ValueError(
            f"volume values span {low:.0f} to {high:.0f} HU, more than the 65536 values int16 holds "
            "at 1 HU steps; clip the volume explicitly (e.g. to [-1024, 30000] HU) before writing"
        )
    return (rounded - intercept).astype(np.int16), intercept


def _add_image_modules(ds: Dataset, pixels: NDArray[np.int16], intercept: float) -> None:
    """Image Pixel and CT Image module values (PS3.3 C.7.6.3, C.8.2.1)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = ds_text(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.add_new(0x7FE00010, "OW", pixels.astype("<i2").tobytes())


def write_ct_series(
    volume: Volume,
    context: StudyContext,
    *,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "",
    slice_thickness_mm: float | None = None,
    image_type: Sequence[str] = ("DERIVED", "SECONDARY", "AXIAL"),
    kvp: float | None = None,
    patient_position: str = "",
    content_datetime: dt.datetime | None = None,
) -> list[Dataset]:
    """Write a volume as CT Image Storage datasets, one per slice, in slice order.

    Parameters
    ----------
    volume : Volume
        Array of shape (S, R, C) in HU; its affine must be a slice stack:
        orthogonal row and column axes, slice step along the slice normal
        (row cosine x column cosine) or opposite to it.
    context : StudyContext
        Patient, study and frame of reference of the written series.
    series_instance_uid : str, optional
        A new UID when not given.
    series_number, series_description : int, str
        General Series module values.
    slice_thickness_mm : float, optional
        SliceThickness; the slice step length when not given.
    image_type : sequence of str
        ImageType (PS3.3 C.8.2.1.1.1); DERIVED\\SECONDARY\\AXIAL by default,
        as the values come from software, not from a scanner's reconstruction.
    kvp : float, optional
        KVP (Type 2: empty when unknown).
    patient_position : str
        PatientPosition such as "HFS" (Type 2C: empty when unknown).
    content_datetime : datetime, optional
        Content and instance creation date/time (now when not given).

    Returns
    -------
    list of Dataset
        Explicit VR Little Endian, int16 pixels with RescaleSlope 1 and a
        RescaleIntercept chosen for the whole series (0 when the HU fit
        int16): values are rounded to the nearest HU (error <= 0.5 HU).

    Raises
    ------
    ValueError
        If the volume's non-empty frame of reference differs from the
        context's, the affine is not a slice stack, values are not finite, or
        the HU range exceeds 65536 values (clip explicitly first; nothing is
        clipped silently).

    References
    ----------
    DICOM PS3.3 A.3 (CT Image IOD), C.7.6.2 (Image Plane), C.8.2.1 (CT Image).
    """
    if volume.frame_of_reference_uid and volume.frame_of_reference_uid != context.frame_of_reference_uid:
        raise ValueError(
            f"volume frame of reference {volume.frame_of_reference_uid} differs from the study context's "
            f"{context.frame_of_reference_uid}: register or re-frame the volume, or write it with a context "
            "that has its frame of reference"
        )
    orientation, spacing, normal = _slice_geometry(volume.affine)
    pixels, intercept = _quantise(volume.array)
    step = float(np.linalg.norm(volume.affine[:3, 0]))
    thickness = step if slice_thickness_mm is None else float(slice_thickness_mm)
    if not thickness > 0:
        raise ValueError(f"slice_thickness_mm must be positive; got {slice_thickness_mm}")
    uid = series_instance_uid or new_uid()
    new_slice = functools.partial(
        new_dataset,
        context,
        sop_class_uid=CTImageStorage,
        modality="CT",
        series_instance_uid=uid,
        series_number=series_number,
        series_description=series_description,
        content_datetime=content_datetime or dt.datetime.now().replace(microsecond=0),
    )
    datasets = []
    for index in range(volume.shape[0]):
        ds = new_slice(instance_number=index + 1)
        ds.ImageType = list(image_type)
        ds.ContentDate = ds.InstanceCreationDate
        ds.ContentTime = ds.InstanceCreationTime
        ds.AcquisitionNumber = None
        ds.KVP = ds_text(kvp) if kvp is not None else None
        ds.PatientPosition = patient_position
        position = volume.affine[:3, :3] @ [index, 0.0, 0.0] + volume.affine[:3, 3]
        ds.PixelSpacing = [ds_text(v) for v in spacing]
        ds.ImageOrientationPatient = [ds_text(v) for v in orientation]
        ds.ImagePositionPatient = [ds_text(v) for v in position]
        ds.SliceThickness = ds_text(thickness)
        ds.SliceLocation = ds_text(float(position @ normal))
        _add_image_modules(ds, pixels[index], intercept)
        datasets.append(ds)
    logger.info("wrote CT series %s: %d slices", uid, len(datasets))
    return datasets
