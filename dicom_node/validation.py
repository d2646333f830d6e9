"""Checks a received dataset before the node answers success (PS3.4 B.2.3 statuses).

The dataset is checked as received, without decoding its pixel data:

1. its encoding is complete: every element's length fits in the bytes received and
   every undefined-length sequence or item is closed (PS3.5 7.1, 7.5); pydicom
   alone reads a truncated stream without complaint, so the framing is walked here;
2. the attributes the node files it by are present and not empty;
3. SOP Class and SOP Instance UID equal those of the C-STORE request (PS3.4 B.2.3, 0xA900);
4. for native (uncompressed) transfer syntaxes, the Pixel Data length equals
   Rows x Columns x Samples per Pixel x Number of Frames x Bits Allocated / 8,
   padded to even (PS3.5 8.1.1, PS3.3 C.7.6.3).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_node.conformance import StoreStatus

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_MAX_DEPTH = 32
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
# Storage classes whose instances must carry Pixel Data (PS3.3 A.3, A.38, A.8, A.18).
_NEEDS_PIXELS = {
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.481.2",
}


# Top-level attributes read straight from the received bytes: (keyword, VR) by tag (PS3.6).
_WANTED: dict[int, tuple[str, str]] = {
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080060: ("Modality", "CS"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200013: ("InstanceNumber", "IS"),
    0x00200032: ("ImagePositionPatient", "DS"),
    0x00200037: ("ImageOrientationPatient", "DS"),
    0x00201002: ("ImagesInAcquisition", "IS"),
    0x00280002: ("SamplesPerPixel", "US"),
    0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"),
    0x00280011: ("Columns", "US"),
    0x00280100: ("BitsAllocated", "US"),
}


class Rejection(Exception):
    """A dataset the node refuses; carries the C-STORE status and an Error Comment (<= 64 chars)."""

    def __init__(self, status: StoreStatus, comment: str) -> None:
        super().__init__(f"0x{int(status):04X} {comment}")
        self.status = status
        self.comment = comment[:64]


@dataclass(frozen=True)
class InstanceHeader:
    """What the node needs to know of one received instance (all read from its dataset)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    instance_number: int | None = None
    image_position_mm: tuple[float, float, float] | None = None
    image_orientation: tuple[float, float, float, float, float, float] | None = None
    images_in_acquisition: int | None = None


class _Framing:
    """Walks the element framing of a dataset; raises Rejection on bytes that run out."""

    def __init__(self, data: bytes | memoryview, *, implicit: bool, little: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.order = "<" if little else ">"
        self.pixel_length: int | None = None  # top-level Pixel Data value length, or _UNDEFINED
        self.values: dict[int, bytes] = {}  # raw values of the top-level attributes in _WANTED

    def _unpack(self, fmt: str, pos: int) -> tuple[int, ...]:
        size = struct.calcsize(self.order + fmt)
        if pos + size > len(self.data):
            raise Rejection(StoreStatus.UNREADABLE_DATASET, f"dataset truncated at byte {pos}")
        return struct.unpack_from(self.order + fmt, self.data, pos)

    def _header(self, pos: int, implicit: bool) -> tuple[int, bytes, int, int]:
        group, elem = self._unpack("HH", pos)
        tag = group << 16 | elem
        if group == 0xFFFE or implicit:
            (length,) = self._unpack("L", pos + 4)
            return tag, b"", length, pos + 8
        vr = bytes(self.data[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            (length,) = self._unpack("L", pos + 8)
            return tag, vr, length, pos + 12
        (length,) = self._unpack("H", pos + 6)
        return tag, vr, length, pos + 8

    def walk(self, pos: int, end: int | None, implicit: bool, depth: int, stop: int | None = None) -> int:
        """Walk elements from `pos` to `end` (or to the `stop` delimiter); return the position after."""
        if depth > _MAX_DEPTH:
            raise Rejection(StoreStatus.UNREADABLE_DATASET, "sequences nested too deeply")
        limit = len(self.data) if end is None else end
        while pos < limit:
            tag, vr, length, pos = self._header(pos, implicit)
            if stop is not None and tag == stop:
                return pos
            if depth == 0 and tag == _PIXEL_DATA:
                self.pixel_length = length
            elif depth == 0 and tag in _WANTED and length != _UNDEFINED:
                self.values[tag] = bytes(self.data[pos : pos + length])
            if length != _UNDEFINED:
                pos += length
                if pos > limit:
                    raise Rejection(StoreStatus.UNREADABLE_DATASET, f"element ({tag >> 16:04X},"
                                    f"{tag & 0xFFFF:04X}) runs past the end of the data")
                continue
            pos = self._undefined(pos, implicit or vr == b"UN", tag == _PIXEL_DATA, depth)
        if stop is not None:
            raise Rejection(StoreStatus.UNREADABLE_DATASET, "dataset truncated inside a sequence")
        return pos

    def _undefined(self, pos: int, implicit: bool, fragments: bool, depth: int) -> int:
        """Walk the items of an undefined-length sequence or encapsulated Pixel Data."""
        while True:
            tag, _, length, pos = self._header(pos, implicit)
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM:
                raise Rejection(StoreStatus.UNREADABLE_DATASET, f"expected an item at byte {pos - 8}")
            if length == _UNDEFINED and not fragments:
                pos = self.walk(pos, None, implicit, depth + 1, stop=_ITEM_END)
            elif length == _UNDEFINED:
                raise Rejection(StoreStatus.UNREADABLE_DATASET, "pixel data fragment of undefined length")
            else:
                pos += length
                if pos > len(self.data):
                    raise Rejection(StoreStatus.UNREADABLE_DATASET, "item runs past the end of the data")


def dataset_bytes_for_parsing(dataset: bytes | memoryview, transfer_syntax: UID) -> bytes | memoryview:
    """The dataset as pydicom reads it: inflated for the deflated transfer syntax (PS3.5 A.5)."""
    if not transfer_syntax.is_deflated:
        return dataset
    try:
        return zlib.decompress(dataset, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise Rejection(StoreStatus.UNREADABLE_DATASET, f"deflated dataset does not inflate: {exc}") from exc


class _Attributes(dict[str, Any]):
    """The _WANTED attributes decoded from their raw bytes, read like a pydicom Dataset's ``get``."""

    @classmethod
    def decode(cls, raw: dict[int, bytes], little: bool) -> _Attributes:
        attributes = cls()
        for tag, value in raw.items():
            keyword, vr = _WANTED[tag]
            if vr == "US":
                if len(value) >= 2:
                    attributes[keyword] = int.from_bytes(value[:2], "little" if little else "big")
                continue
            text = value.decode("ascii", "replace").strip(" \x00")
            if vr in ("IS", "DS") and "\\" in text:
                attributes[keyword] = [v.strip() for v in text.split("\\")]
            else:
                attributes[keyword] = text
        return attributes


def check_framing(dataset: bytes | memoryview, transfer_syntax: UID) -> tuple[int | None, _Attributes]:
    """Raise Rejection if `dataset` is truncated or malformed.

    Returns the top-level Pixel Data length (None if absent) and the attributes the
    node files instances by, decoded from the bytes without a full pydicom parse.
    """
    data = dataset_bytes_for_parsing(dataset, transfer_syntax)
    if not data:
        raise Rejection(StoreStatus.UNREADABLE_DATASET, "empty dataset")
    framing = _Framing(data, implicit=transfer_syntax.is_implicit_VR, little=transfer_syntax.is_little_endian)
    framing.walk(0, None, framing.implicit, 0)
    return framing.pixel_length, _Attributes.decode(framing.values, transfer_syntax.is_little_endian)


def _optional_int(ds: Dataset | _Attributes, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _optional_floats(ds: Dataset | _Attributes, keyword: str, count: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if isinstance(value, str):
        value = value.split("\\")
    try:
        floats = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    return floats if len(floats) == count else None


def expected_pixel_bytes(ds: Dataset | _Attributes) -> int:
    """Native Pixel Data length in bytes, padded to even (PS3.5 8.1.1; PS3.3 C.7.6.3.1)."""
    rows, columns, bits_allocated = (_optional_int(ds, k) for k in ("Rows", "Columns", "BitsAllocated"))
    if rows is None or columns is None or bits_allocated is None:
        raise Rejection(StoreStatus.MISSING_ATTRIBUTE, "Pixel Data without Rows, Columns or BitsAllocated")
    samples = _optional_int(ds, "SamplesPerPixel") or 1
    frames = _optional_int(ds, "NumberOfFrames") or 1
    bits = rows * columns * samples * frames * bits_allocated
    nbytes = (bits + 7) // 8
    return nbytes + nbytes % 2


def header_from_dataset(ds: Dataset | _Attributes) -> InstanceHeader:
    """The header of an instance from a pydicom Dataset or the attributes decoded by check_framing."""
    values = {k: str(ds.get(k, "") or "").strip() for k in _REQUIRED}
    missing = [k for k, v in values.items() if not v]
    if missing:
        raise Rejection(StoreStatus.MISSING_ATTRIBUTE, f"missing or empty: {', '.join(missing)}")
    position = _optional_floats(ds, "ImagePositionPatient", 3)
    orientation = _optional_floats(ds, "ImageOrientationPatient", 6)
    return InstanceHeader(
        sop_class_uid=values["SOPClassUID"],
        sop_instance_uid=values["SOPInstanceUID"],
        study_instance_uid=values["StudyInstanceUID"],
        series_instance_uid=values["SeriesInstanceUID"],
        modality=values["Modality"],
        instance_number=_optional_int(ds, "InstanceNumber"),
        image_position_mm=position,  # type: ignore[arg-type]
        image_orientation=orientation,  # type: ignore[arg-type]
        images_in_acquisition=_optional_int(ds, "ImagesInAcquisition"),
    )


def validate_instance(
    file_bytes: bytes,
    dataset_offset: int,
    *,
    transfer_syntax: UID,
    request_sop_class_uid: str,
    request_sop_instance_uid: str,
) -> InstanceHeader:
    """Check a received instance; return its header or raise Rejection with the status to answer.

    Parameters
    ----------
    file_bytes : bytes
        The instance in the DICOM File Format (preamble, file meta, dataset as received).
    dataset_offset : int
        Where the dataset starts in `file_bytes`.
    transfer_syntax : UID
        The transfer syntax of the presentation context it came on.
    request_sop_class_uid, request_sop_instance_uid : str
        Affected SOP Class / Instance UID of the C-STORE request (PS3.7 9.1.1.1).
    """
    pixel_length, ds = check_framing(memoryview(file_bytes)[dataset_offset:], transfer_syntax)
    try:
        header = header_from_dataset(ds)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise Rejection(StoreStatus.UNREADABLE_DATASET, f"attribute cannot be decoded: {exc}") from exc
    if header.sop_class_uid != request_sop_class_uid.strip():
        raise Rejection(StoreStatus.DATASET_DOES_NOT_MATCH, "SOP Class UID differs from the request")
    if header.sop_instance_uid != request_sop_instance_uid.strip():
        raise Rejection(StoreStatus.DATASET_DOES_NOT_MATCH, "SOP Instance UID differs from the request")
    if pixel_length is None:
        if header.sop_class_uid in _NEEDS_PIXELS:
            raise Rejection(StoreStatus.MISSING_ATTRIBUTE, "image without Pixel Data")
        return header
    if not transfer_syntax.is_encapsulated and pixel_length != _UNDEFINED:
        expected = expected_pixel_bytes(ds)
        if pixel_length != expected:
            raise Rejection(StoreStatus.PIXEL_DATA_LENGTH,
                            f"Pixel Data {pixel_length} bytes, expected {expected}")
    return header
