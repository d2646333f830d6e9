"""Decimal String encoding."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guidance.dicomio.values import dicom_datetime, ds_text, ds_texts


@given(st.floats(min_value=-1e300, max_value=1e300))
def test_ds_text_fits_16_characters_and_stays_close(value: float) -> None:
    text = ds_text(value)
    assert len(text) <= 16
    assert math.isclose(float(text), value, rel_tol=1e-8, abs_tol=1e-300)


def test_ds_text_known_values() -> None:
    assert ds_text(0.75205701589584) == "0.75205701589584"
    # 17 characters exactly; rounded to 16 significant digits it is 10 (pydicom: "10.00000000000000", 17).
    assert ds_text(9.999999999999996) == "10"
    assert len(ds_text(-1.2345678901234567e-5)) <= 16
    assert ds_texts([[1.0, 2.5]]) == ["1.0", "2.5"]
    with pytest.raises(ValueError, match="cannot hold"):
        ds_text(float("nan"))


def test_finite_numbers_checks_count_and_values() -> None:
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat

    from guidance.dicomio.errors import DicomInputError
    from guidance.dicomio.values import finite_numbers

    spacing = MultiValue(DSfloat, ["0.5", "0.75"])
    assert finite_numbers(spacing, "PixelSpacing", "f.dcm", 2).tolist() == [0.5, 0.75]
    assert finite_numbers(DSfloat("2.5"), "SliceThickness", "f.dcm").tolist() == [2.5]  # VM 1, unwrapped
    with pytest.raises(DicomInputError, match=r"PixelSpacing must be 2 finite numbers.*f\.dcm"):
        finite_numbers(MultiValue(DSfloat, ["0.5"]), "PixelSpacing", "f.dcm", 2)
    with pytest.raises(DicomInputError, match="must be one or more finite numbers"):
        finite_numbers(None, "GridFrameOffsetVector", "f.dcm")
    with pytest.raises(DicomInputError, match="is not 3 numbers"):
        finite_numbers(["1", "x", "2"], "ImagePositionPatient", "f.dcm", 3)


def test_dicom_date_and_time_read_as_one_datetime() -> None:
    assert dicom_datetime("20260105", "093000.5") == dt.datetime(2026, 1, 5, 9, 30, 0, 500000)
    assert dicom_datetime("20260105", "0930") == dt.datetime(2026, 1, 5, 9, 30)
    assert dicom_datetime("20260105", None) == dt.datetime(2026, 1, 5)
    assert dicom_datetime("", "1200") is None and dicom_datetime(None, None) is None
    with pytest.raises(ValueError):
        dicom_datetime("2026-13-45", "")
