"""Numbers in DICOM data elements: reading them checked, writing them as valid Decimal Strings.

A DS value holds at most 16 characters (DICOM PS3.5 6.2). pydicom's
``format_number_as_ds`` can return 17 (for 9.999999999999996 it gives
"10.00000000000000"), which strict readers reject, so writers here use
:func:`ds_text` instead.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from guidance.dicomio.errors import DicomInputError

__all__ = ["dicom_datetime", "ds_text", "ds_texts", "element_values", "finite_numbers"]

_DS_MAX_CHARS = 16


def ds_text(value: float) -> str:
    """The shortest exact text of ``value`` if it fits 16 characters, else rounded to fit.

    Raises
    ------
    ValueError
        For NaN or infinity, which DS cannot hold.
    """
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"a Decimal String cannot hold {number}")
    text = repr(number)
    digits = _DS_MAX_CHARS
    while len(text) > _DS_MAX_CHARS and digits > 1:
        digits -= 1
        text = f"{number:.{digits}g}"
    return text


def ds_texts(values: ArrayLike) -> list[str]:
    """:func:`ds_text` of every value, flattened."""
    return [ds_text(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def element_values(value: Any) -> list[Any]:
    """The values of a data element, whatever its multiplicity (pydicom gives VM 1 unwrapped)."""
    if value is None or isinstance(value, str | bytes):
        return [] if value in (None, "", b"") else [value]
    return list(value) if isinstance(value, Sequence) else [value]


def finite_numbers(value: Any, keyword: str, where: str, count: int | None = None) -> NDArray[np.float64]:
    """The numbers of data element ``keyword`` (value as pydicom gives it), checked.

    Parameters
    ----------
    value : element value (single number, string or multi-value)
    keyword : str
        Attribute name, for the message.
    where : str
        The file (or dataset) it comes from, for the message.
    count : int, optional
        Exact number of values required; otherwise one or more.

    Raises
    ------
    DicomInputError
        Non-numeric values, the wrong count, or NaN/infinity.
    """
    values = element_values(value)
    wanted = f"{count}" if count is not None else "one or more"
    try:
        array = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise DicomInputError(f"{keyword} is not {wanted} numbers: {values!r}", [where]) from None
    if (count is not None and array.shape != (count,)) or array.size == 0 or not np.all(np.isfinite(array)):
        raise DicomInputError(f"{keyword} must be {wanted} finite numbers; got {values!r}", [where])
    return array


def dicom_datetime(date: object, time: object) -> dt.datetime | None:
    """A DA date and a TM time (PS3.5 6.2) as one datetime; None without a date, midnight without a time.

    Raises
    ------
    ValueError
        If either is not a DICOM date / time.
    """
    from pydicom.valuerep import DA, TM

    if not str(date or "").strip():
        return None
    day = DA(str(date).strip())
    clock = TM(str(time).strip()) if str(time or "").strip() else dt.time()
    return dt.datetime(
        day.year, day.month, day.day, clock.hour, clock.minute, clock.second, clock.microsecond
    )
