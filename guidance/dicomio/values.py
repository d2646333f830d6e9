"""Encoding numbers as DICOM Decimal Strings (DS) that every reader accepts.

A DS value holds at most 16 characters (DICOM PS3.5 6.2). pydicom's
``format_number_as_ds`` can return 17 (for 9.999999999999996 it gives
"10.00000000000000"), which strict readers reject, so writers here use
:func:`ds_text` instead.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["ds_text", "ds_texts"]

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
