"""Validation before success: framing, required attributes, UIDs, Pixel Data length."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom.data
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread, dcmwrite
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from dicom_node.conformance import StoreStatus
from dicom_node.store import dataset_offset
from dicom_node.validation import Rejection, check_framing, header_from_dataset, validate_instance

from .datasets import SeriesSpec, ct_slice, file_bytes, rt_plan

_FIXED_SLICE = file_bytes(ct_slice(SeriesSpec("1.2.3", "1.2.3.4"), 0, sop_uid="1.2.3.4.5"))


def _pydicom_file(name: str) -> Path:
    """A test file bundled with pydicom (never the ones it downloads on demand)."""
    return Path(pydicom.data.__file__).parent / "test_files" / name


def _validate(data: bytes, *, sop_class: str | None = None, sop_instance: str | None = None):
    ds = dcmread(BytesIO(data[: dataset_offset(data)]))  # the file meta only
    return validate_instance(
        data, dataset_offset(data), transfer_syntax=UID(ds.file_meta.TransferSyntaxUID),
        request_sop_class_uid=sop_class or ds.file_meta.MediaStorageSOPClassUID,
        request_sop_instance_uid=sop_instance or ds.file_meta.MediaStorageSOPInstanceUID,
    )


def _status(data: bytes, **kwargs: str) -> StoreStatus:
    with pytest.raises(Rejection) as info:
        _validate(data, **kwargs)
    return info.value.status


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
)
def test_a_complete_ct_slice_passes_in_every_native_syntax(syntax: UID) -> None:
    ds = ct_slice(SeriesSpec(), 3)
    buffer = BytesIO()
    ds.file_meta.TransferSyntaxUID = syntax
    dcmwrite(buffer, ds, enforce_file_format=True, little_endian=syntax.is_little_endian,
             implicit_vr=syntax.is_implicit_VR)
    header = _validate(buffer.getvalue())
    assert (header.instance_number, header.image_position_mm) == (4, (0.0, 0.0, 7.5))
    assert header.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def test_real_rle_big_endian_and_rt_files_pass() -> None:
    for name in ("SC_rgb_rle.dcm", "rtplan.dcm", "rtdose.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm"):
        data = Path(_pydicom_file(name)).read_bytes()
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
        header = _validate(data, sop_class=ds.SOPClassUID, sop_instance=ds.SOPInstanceUID)
        assert header.sop_instance_uid == ds.SOPInstanceUID
        assert header == header_from_dataset(ds)  # bytes read directly == pydicom's reading
    rle = Path(_pydicom_file("SC_rgb_rle.dcm")).read_bytes()
    assert UID(dcmread(BytesIO(rle)).file_meta.TransferSyntaxUID) == RLELossless


def test_uid_mismatch_is_0xa900() -> None:
    data = file_bytes(ct_slice(SeriesSpec(), 0))
    assert _status(data, sop_instance="1.2.3.4") == StoreStatus.DATASET_DOES_NOT_MATCH
    assert _status(data, sop_class="1.2.840.10008.5.1.4.1.1.7") == StoreStatus.DATASET_DOES_NOT_MATCH


def test_pixel_data_length_must_match_the_image_pixel_module() -> None:
    ds = ct_slice(SeriesSpec(), 0)
    ds.Rows = 17  # 17 x 16 x 2 bytes expected, 16 x 16 x 2 present
    with pytest.raises(Rejection) as info:
        _validate(file_bytes(ds))
    assert info.value.status == StoreStatus.PIXEL_DATA_LENGTH
    assert "512 bytes, expected 544" in info.value.comment


def test_missing_required_attribute_and_missing_pixels() -> None:
    ds = ct_slice(SeriesSpec(), 0)
    del ds.SeriesInstanceUID
    assert _status(file_bytes(ds)) == StoreStatus.MISSING_ATTRIBUTE
    ds = ct_slice(SeriesSpec(), 0)
    del ds.PixelData
    assert _status(file_bytes(ds)) == StoreStatus.MISSING_ATTRIBUTE
    plan = rt_plan(SeriesSpec())
    plan.file_meta.MediaStorageSOPClassUID = plan.SOPClassUID
    plan.file_meta.MediaStorageSOPInstanceUID = plan.SOPInstanceUID
    assert _validate(file_bytes(plan)).modality == "RTPLAN"


def test_garbage_is_unreadable() -> None:
    good = file_bytes(ct_slice(SeriesSpec(), 0))
    offset = dataset_offset(good)
    garbage = good[:offset] + bytes(range(256)) * 3
    assert _status(garbage) == StoreStatus.UNREADABLE_DATASET


def _element_ends(body: bytes) -> set[int]:
    """Offsets in an explicit VR LE dataset where a top-level element ends."""
    from pydicom.filereader import data_element_generator

    fp = BytesIO(body)
    ends = {0}
    for _ in data_element_generator(fp, False, True):
        ends.add(fp.tell())
    return ends


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_cut_inside_an_element_is_detected(data: st.DataObject) -> None:
    body = _FIXED_SLICE[dataset_offset(_FIXED_SLICE):]
    cut = data.draw(st.integers(1, len(body) - 1))
    if cut in _element_ends(body):
        return  # a cut between elements is a shorter, well-framed dataset (caught by the other checks)
    with pytest.raises(Rejection) as info:
        check_framing(body[:cut], UID("1.2.840.10008.1.2.1"))
    assert info.value.status == StoreStatus.UNREADABLE_DATASET


def test_truncated_encapsulated_pixel_data_is_detected() -> None:
    data = Path(_pydicom_file("SC_rgb_rle.dcm")).read_bytes()
    for cut in (1, 9, 30, 200):
        assert _status(data[:-cut]) == StoreStatus.UNREADABLE_DATASET
