"""Image series: grouping, per-slice geometry, stacking checks and pixel decoding.

Shared by the image readers. A series becomes a volume only when its slices
form one regular grid: the same orientation, size and pixel spacing, each
slice displaced from the previous one along the slice normal (no gantry tilt),
by one constant step (no missing slices) and never twice at one place. Every
check names the files involved, what is wrong and how to fix it.

Slices are ordered by their position along the slice normal, the cross
product of the row and column direction cosines of ImageOrientationPatient
(DICOM PS3.3 C.7.6.2.1.1); InstanceNumber and file names are never used.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from guidance.dicomio.dataset import LoadedDataset
from guidance.dicomio.errors import DicomInputError, SeriesGeometryError
from guidance.dicomio.values import finite_numbers

__all__ = [
    "ORTHOGONALITY_TOLERANCE",
    "SPACING_TOLERANCE_MM",
    "TILT_TOLERANCE",
    "ImagePlane",
    "SliceStack",
    "decode_frames",
    "frame_group_item",
    "group_by_series",
    "image_planes",
    "is_multiframe_functional",
    "number_of_frames",
    "series_listing",
    "source_path",
    "stack_slices",
    "transfer_syntax_of",
]

logger = logging.getLogger(__name__)

#: Largest |cos| between the row and column cosines, and largest deviation of
#: their length from 1, accepted as "orthonormal" (cosines written to 4-6 digits).
ORTHOGONALITY_TOLERANCE = 1e-3
#: Largest sine of the angle between the slice-to-slice displacement and the
#: slice normal accepted as "no tilt" (0.06 degrees; real gantry tilts are degrees).
TILT_TOLERANCE = 1e-3
#: Gaps between neighbouring slices may differ by this much (mm) plus 0.1 % of
#: the gap, for positions written with few decimals, and still count as uniform.
SPACING_TOLERANCE_MM = 0.01
_PLANE_KEYWORDS = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
)
_NATIVE_SYNTAXES = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


def _optional_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def frame_group_item(dataset: Dataset, frame: int, sequence_keyword: str) -> Dataset | None:
    """The functional group item ``sequence_keyword`` of one frame, per-frame before shared.

    DICOM PS3.3 C.7.6.16 (Multi-frame Functional Groups): a macro appears in the
    Per-Frame Functional Groups Sequence item of the frame or, when the same
    for all frames, once in the Shared Functional Groups Sequence.
    """
    for group_keyword, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = dataset.get(group_keyword)
        if groups is not None and len(groups) > index:
            sequence = groups[index].get(sequence_keyword)
            if sequence is not None and len(sequence) > 0:
                item: Dataset = sequence[0]
                return item
    return None


def is_multiframe_functional(dataset: Dataset) -> bool:
    """True for enhanced (functional-group) multi-frame images."""
    return "PerFrameFunctionalGroupsSequence" in dataset or "SharedFunctionalGroupsSequence" in dataset


def number_of_frames(item: LoadedDataset) -> int:
    """NumberOfFrames (1 when absent), validated."""
    value = item.dataset.get("NumberOfFrames", 1)
    try:
        frames = int(value) if value not in (None, "") else 1
    except (TypeError, ValueError) as exc:
        raise DicomInputError(f"NumberOfFrames is not an integer: {value!r}", [item.name]) from exc
    if frames < 1:
        raise DicomInputError(f"NumberOfFrames must be at least 1; got {frames}", [item.name])
    return frames


@dataclass(frozen=True, eq=False)
class ImagePlane:
    """Geometry of one frame of one image (DICOM PS3.3 C.7.6.2, C.7.6.16.2.1-3).

    Parameters
    ----------
    item : LoadedDataset
        The image the frame belongs to.
    frame : int
        0-based frame index within the image (0 for single-frame images).
    position_mm : ndarray of shape (3,)
        ImagePositionPatient: centre of the first transmitted pixel, LPS mm.
    orientation : ndarray of shape (6,)
        ImageOrientationPatient: row cosine then column cosine.
    pixel_spacing_mm : ndarray of shape (2,)
        PixelSpacing: (between rows, between columns), mm.
    rows, columns : int
        Image size.
    slice_thickness_mm, spacing_between_slices_mm : float or None
        Nominal values, used only for the slice step of a single slice.
    """

    item: LoadedDataset
    frame: int
    position_mm: NDArray[np.float64]
    orientation: NDArray[np.float64]
    pixel_spacing_mm: NDArray[np.float64]
    rows: int
    columns: int
    slice_thickness_mm: float | None
    spacing_between_slices_mm: float | None

    @property
    def name(self) -> str:
        """The file (and frame, for multi-frame images) for messages."""
        if number_of_frames(self.item) > 1:
            return f"{self.item.name} frame {self.frame + 1}"
        return self.item.name

    @property
    def normal(self) -> NDArray[np.float64]:
        """Unit slice normal: row cosine x column cosine."""
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        unit: NDArray[np.float64] = normal / np.linalg.norm(normal)
        return unit


def _check_orientation(orientation: NDArray[np.float64], where: str) -> None:
    row, column = orientation[:3], orientation[3:]
    lengths = np.array([np.linalg.norm(row), np.linalg.norm(column)])
    if np.any(np.abs(lengths - 1.0) > ORTHOGONALITY_TOLERANCE) or abs(row @ column) > ORTHOGONALITY_TOLERANCE:
        raise SeriesGeometryError(
            f"ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit vectors "
            f"(lengths {lengths.round(6).tolist()}, dot product {row @ column:.6f}); the image plane "
            "is undefined: fix the exporting system",
            [where],
        )


def _plane_attributes(item: LoadedDataset, frame: int) -> dict[str, Any]:
    """The image plane attributes of one frame, wherever the IOD keeps them."""
    ds = item.dataset
    if not is_multiframe_functional(ds):
        return {keyword: ds.get(keyword) for keyword in _PLANE_KEYWORDS}
    position = frame_group_item(ds, frame, "PlanePositionSequence")
    orientation = frame_group_item(ds, frame, "PlaneOrientationSequence")
    measures = frame_group_item(ds, frame, "PixelMeasuresSequence")
    return {
        "ImagePositionPatient": position.get("ImagePositionPatient") if position is not None else None,
        "ImageOrientationPatient": orientation.get("ImageOrientationPatient")
        if orientation is not None
        else None,
        "PixelSpacing": measures.get("PixelSpacing") if measures is not None else None,
        "SliceThickness": measures.get("SliceThickness") if measures is not None else None,
        "SpacingBetweenSlices": measures.get("SpacingBetweenSlices") if measures is not None else None,
    }


def image_planes(item: LoadedDataset) -> list[ImagePlane]:
    """The plane geometry of every frame of an image, classic or enhanced multi-frame.

    Raises
    ------
    SeriesGeometryError
        If a frame has no ImagePositionPatient, ImageOrientationPatient or
        PixelSpacing, or the orientation is not orthonormal.
    DicomInputError
        If a value is malformed, or a classic image claims several frames
        (it has no per-frame positions).
    """
    ds = item.dataset
    frames = number_of_frames(item)
    if frames > 1 and not is_multiframe_functional(ds):
        raise DicomInputError(
            f"{frames} frames but no per-frame functional groups: the frames have no positions "
            "of their own, so they cannot be placed in the patient",
            [item.name],
        )
    planes = []
    for frame in range(frames):
        where = item.name if frames == 1 else f"{item.name} frame {frame + 1}"
        attrs = _plane_attributes(item, frame)
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if attrs[keyword] in (None, ""):
                raise SeriesGeometryError(
                    f"no {keyword}: the image cannot be placed in the patient (DICOM PS3.3 C.7.6.2); "
                    "export the series from the scanner or planning system with its Image Plane module",
                    [where],
                )
        orientation = finite_numbers(attrs["ImageOrientationPatient"], "ImageOrientationPatient", where, 6)
        _check_orientation(orientation, where)
        spacing = finite_numbers(attrs["PixelSpacing"], "PixelSpacing", where, 2)
        if np.any(spacing <= 0):
            raise DicomInputError(f"PixelSpacing must be positive; got {spacing.tolist()}", [where])
        planes.append(
            ImagePlane(
                item=item,
                frame=frame,
                position_mm=finite_numbers(attrs["ImagePositionPatient"], "ImagePositionPatient", where, 3),
                orientation=orientation,
                pixel_spacing_mm=spacing,
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                slice_thickness_mm=_optional_float(attrs["SliceThickness"]),
                spacing_between_slices_mm=_optional_float(attrs["SpacingBetweenSlices"]),
            )
        )
    return planes


def group_by_series(items: Sequence[LoadedDataset]) -> dict[str, list[LoadedDataset]]:
    """Datasets grouped by SeriesInstanceUID ("" when absent), in the order given."""
    groups: dict[str, list[LoadedDataset]] = defaultdict(list)
    for item in items:
        groups[str(item.dataset.get("SeriesInstanceUID", ""))].append(item)
    return dict(groups)


def series_listing(groups: dict[str, list[LoadedDataset]]) -> str:
    """One line per series: UID, modality, SOP class, description and instance count."""
    lines = []
    for uid, members in groups.items():
        first = members[0].dataset
        sop = UID(str(first.get("SOPClassUID", "")))
        frames = sum(number_of_frames(m) for m in members)
        lines.append(
            f"  {uid or '(no SeriesInstanceUID)'}: {first.get('Modality', '?')} "
            f"({sop.name if sop else 'no SOP class'}) {str(first.get('SeriesDescription', ''))!r}, "
            f"{len(members)} instance(s), {frames} slice(s)"
        )
    return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class SliceStack:
    """Slices sorted along their normal, checked to be one stack.

    Parameters
    ----------
    planes : list of ImagePlane
        In increasing position along ``normal``.
    normal : ndarray of shape (3,)
        Unit slice normal (row cosine x column cosine).
    positions_mm : ndarray of shape (S,)
        Position of each slice along ``normal``, mm (increasing).
    uniform : bool
        True when the gaps between neighbouring slices are all equal.
    step_mm : ndarray of shape (3,)
        Mean slice-to-slice displacement in LPS mm (first to last over S - 1;
        for one slice: the normal times SliceThickness or SpacingBetweenSlices).
    """

    planes: list[ImagePlane]
    normal: NDArray[np.float64]
    positions_mm: NDArray[np.float64]
    uniform: bool
    step_mm: NDArray[np.float64]


def _layout_of(plane: ImagePlane) -> dict[str, list[float]]:
    return {
        "ImageOrientationPatient": plane.orientation.tolist(),
        "Rows/Columns": [float(plane.rows), float(plane.columns)],
        "PixelSpacing": plane.pixel_spacing_mm.tolist(),
    }


_LAYOUT_TOLERANCE = {"ImageOrientationPatient": 1e-4, "Rows/Columns": 0.0, "PixelSpacing": 1e-4}


def _check_same_plane_layout(planes: Sequence[ImagePlane]) -> None:
    """Orientation, size and pixel spacing must be the same in every slice."""
    first = _layout_of(planes[0])
    layouts = [_layout_of(p) for p in planes]
    for label, tolerance in _LAYOUT_TOLERANCE.items():
        odd = [
            i
            for i, layout in enumerate(layouts)
            if not np.allclose(layout[label], first[label], atol=tolerance)
        ]
        if odd:
            raise SeriesGeometryError(
                f"{label} differs within the series: {planes[0].name} has {first[label]}, "
                f"{planes[odd[0]].name} has {layouts[odd[0]][label]} ({len(odd)} of {len(planes)} slices "
                "differ). A volume needs one stack of identical slices: select the slices of one stack "
                "(the series mixes localizers, reformats or stacks)",
                [planes[0].name, *(planes[i].name for i in odd)],
            )


def _check_no_duplicates(planes: Sequence[ImagePlane], positions: NDArray[np.float64]) -> None:
    same = [int(k) for k in np.flatnonzero(np.diff(positions) < SPACING_TOLERANCE_MM)]
    if not same:
        return
    involved = sorted(set(same) | {k + 1 for k in same})
    names = [planes[k].name for k in involved]
    i = same[0]
    raise SeriesGeometryError(
        f"{len(names)} slices share a position: {planes[i].name} and {planes[i + 1].name} are both at "
        f"{positions[i]:.3f} mm along the slice normal (ImagePositionPatient "
        f"{planes[i].position_mm.tolist()} and {planes[i + 1].position_mm.tolist()}). A volume has one "
        "slice per position: the series holds repeated scans or time points; select one acquisition "
        "(AcquisitionNumber, TemporalPositionIdentifier) and read that",
        names,
    )


def _check_no_tilt(planes: Sequence[ImagePlane], normal: NDArray[np.float64]) -> None:
    origin = planes[0].position_mm
    for plane in planes[1:]:
        moved = plane.position_mm - origin
        along = float(moved @ normal)
        lateral = moved - along * normal
        if np.linalg.norm(lateral) <= TILT_TOLERANCE * abs(along) + SPACING_TOLERANCE_MM:
            continue
        angle = np.degrees(np.arctan2(np.linalg.norm(lateral), abs(along)))
        tags = sorted({str(p.item.dataset.get("GantryDetectorTilt", "absent")) for p in planes})
        raise SeriesGeometryError(
            f"slices are not stacked along their normal {normal.round(6).tolist()}: from {planes[0].name} "
            f"to {plane.name} the position moves {moved.round(4).tolist()} mm, of which "
            f"{np.linalg.norm(lateral):.3f} mm lies in the image plane (a gantry tilt or shear of "
            f"{angle:.2f} degrees; GantryDetectorTilt is {', '.join(tags)}). Such slices do not form a "
            "regular grid: reconstruct the scan without tilt, or correct the tilt before sending",
            [planes[0].name, plane.name],
        )


def _irregular_gaps_message(planes: Sequence[ImagePlane], positions: NDArray[np.float64]) -> str:
    gaps = np.diff(positions)
    smallest = float(gaps.min())
    odd = np.flatnonzero(np.abs(gaps - smallest) > SPACING_TOLERANCE_MM + 1e-3 * smallest)
    parts = []
    for i in (int(k) for k in odd[:5]):
        ratio = gaps[i] / smallest
        missing = round(ratio) - 1
        hint = f" ({missing} slice(s) missing?)" if missing >= 1 and abs(ratio - round(ratio)) < 0.05 else ""
        parts.append(
            f"{gaps[i]:.4g} mm between {planes[i].name} (at {positions[i]:.3f} mm) and "
            f"{planes[i + 1].name} (at {positions[i + 1]:.3f} mm){hint}"
        )
    more = f" and {odd.size - 5} more" if odd.size > 5 else ""
    return (
        f"slice spacing is not uniform: the smallest gap is {smallest:.4g} mm but there are gaps of "
        f"{'; '.join(parts)}{more}. Re-send the complete series, or read it with "
        "resample_nonuniform=True to interpolate it onto a uniform grid"
    )


def _single_slice_step(plane: ImagePlane) -> NDArray[np.float64]:
    thickness = plane.slice_thickness_mm or plane.spacing_between_slices_mm
    if thickness is None:
        raise SeriesGeometryError(
            "a single slice with neither SliceThickness nor SpacingBetweenSlices: its extent along "
            "the slice normal is unknown; send the series with SliceThickness set",
            [plane.name],
        )
    step: NDArray[np.float64] = plane.normal * thickness
    return step


def stack_slices(planes: Sequence[ImagePlane], *, allow_nonuniform: bool = False) -> SliceStack:
    """Sort slices along their normal and check that they form one regular stack.

    Parameters
    ----------
    planes : sequence of ImagePlane
        The slices of one series, in any order.
    allow_nonuniform : bool
        Accept unequal gaps (``uniform`` is then False and the caller resamples).

    Raises
    ------
    SeriesGeometryError
        If orientation, size or pixel spacing differ, two slices share a
        position, the stack is tilted or sheared, or (unless
        ``allow_nonuniform``) the gaps between slices differ.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 (Image Position and Image Orientation).
    """
    if not planes:
        raise SeriesGeometryError("no image slices to stack")
    _check_same_plane_layout(planes)
    normal = planes[0].normal
    order = sorted(range(len(planes)), key=lambda i: float(planes[i].position_mm @ normal))
    ordered = [planes[i] for i in order]
    positions = np.array([float(p.position_mm @ normal) for p in ordered])
    if len(ordered) == 1:
        return SliceStack(ordered, normal, positions, True, _single_slice_step(ordered[0]))
    _check_no_duplicates(ordered, positions)
    _check_no_tilt(ordered, normal)
    gaps = np.diff(positions)
    uniform = bool(np.all(np.abs(gaps - gaps.min()) <= SPACING_TOLERANCE_MM + 1e-3 * gaps.min()))
    if not uniform and not allow_nonuniform:
        raise SeriesGeometryError(
            _irregular_gaps_message(ordered, positions), [p.name for p in ordered[:2]] + [ordered[-1].name]
        )
    step = (ordered[-1].position_mm - ordered[0].position_mm) / (len(ordered) - 1)
    return SliceStack(ordered, normal, positions, uniform, step)


def transfer_syntax_of(dataset: Dataset) -> UID:
    """The transfer syntax of a dataset; for files without file meta, the one it was read with."""
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return UID(str(syntax))
    # Files without a File Meta Information header (pydicom reads them with force=True)
    # are native: implicit or explicit VR, as pydicom detected while parsing.
    implicit, little = dataset.original_encoding
    syntax = _NATIVE_SYNTAXES.get((bool(implicit), bool(little)), ExplicitVRLittleEndian)
    logger.debug("no TransferSyntaxUID in the file meta; decoding as %s, as the file was parsed", syntax.name)
    return syntax


def decode_frames(item: LoadedDataset) -> NDArray[Any]:
    """Stored pixel values of every frame, shape (frames, rows, columns), before any rescale.

    Compressed transfer syntaxes decode through the installed plugins
    (pylibjpeg, pyjpegls); the dataset itself is not modified.

    Raises
    ------
    DicomInputError
        If there is no pixel data, or no installed decoder can decode it:
        the message names the file and the transfer syntax.
    """
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.pixels.utils import as_pixel_options

    ds = item.dataset
    if "PixelData" not in ds:
        raise DicomInputError("no PixelData: the image has no pixel values", [item.name])
    syntax = transfer_syntax_of(ds)
    try:
        decoder = get_decoder(syntax)
        array, _ = decoder.as_array(ds, **as_pixel_options(ds))
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomInputError(
            f"cannot decode the pixel data, transfer syntax {syntax.name} ({syntax}): {detail}. "
            "Re-send the image uncompressed (Explicit VR Little Endian) or in a syntax the installed "
            "decoders support (JPEG Lossless, JPEG-LS, JPEG 2000, RLE, Deflate)",
            [item.name],
        ) from exc
    frames = number_of_frames(item)
    expected = (frames, int(ds.Rows), int(ds.Columns))
    decoded: NDArray[Any] = np.asarray(array)
    if decoded.ndim == 2:
        decoded = decoded[np.newaxis]
    if decoded.shape != expected:
        raise DicomInputError(
            f"decoded pixel data has shape {decoded.shape}, expected {expected} from "
            "NumberOfFrames/Rows/Columns (and one sample per pixel)",
            [item.name],
        )
    return decoded


def source_path(item: LoadedDataset) -> str:
    """The file of a dataset as a string ("" for datasets given in memory)."""
    return str(item.path) if item.path is not None else ""
