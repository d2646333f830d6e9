"""What the node accepts: SOP classes, transfer syntaxes and the statuses it answers.

This module is the single source of truth behind ``docs/conformance.md``; a test
parses the tables of that document and compares them with the values here and
with the presentation contexts of the configured application entity.

References
----------
DICOM PS3.2 (conformance statement), PS3.4 Annex B (Storage Service Class),
PS3.4 Annex A (Verification Service Class), PS3.5 Section 10 (transfer syntaxes).
"""

from __future__ import annotations

from enum import IntEnum

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# Storage SOP classes accepted as SCP (PS3.4 B.5), with the kind of object each holds.
STORAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}

# Every transfer syntax is accepted for every storage SOP class; datasets are stored
# exactly as received (no transcoding), so the compressed ones must be lossless.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    RLELossless,
    JPEG2000Lossless,
    JPEGLSLossless,
)

# Verification only needs the default transfer syntax (PS3.7 10.1); both little endian ones are offered.
VERIFICATION_TRANSFER_SYNTAXES: tuple[str, ...] = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)


class StoreStatus(IntEnum):
    """C-STORE response statuses returned by the node (PS3.4 B.2.3, PS3.7 C).

    The 0xC2xx values are in the "Error: Cannot understand" range that PS3.4 Table
    B.2-1 leaves to the implementation; each is sent with an Error Comment.
    """

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH = 0xA900
    UNREADABLE_DATASET = 0xC210
    UNEXPECTED_ERROR = 0xC211
    MISSING_ATTRIBUTE = 0xC220
    PIXEL_DATA_LENGTH = 0xC230


STATUS_MEANINGS: dict[StoreStatus, str] = {
    StoreStatus.SUCCESS: "stored durably (or an identical copy was already stored)",
    StoreStatus.OUT_OF_RESOURCES: "could not be written (disk full or write error); nothing kept",
    StoreStatus.DATASET_DOES_NOT_MATCH: "SOP Class / Instance UID of the dataset differs from the request",
    StoreStatus.UNREADABLE_DATASET: "dataset cannot be parsed (truncated or not DICOM)",
    StoreStatus.UNEXPECTED_ERROR: "unexpected error in the node (logged); nothing kept",
    StoreStatus.MISSING_ATTRIBUTE: "a required attribute is missing or empty",
    StoreStatus.PIXEL_DATA_LENGTH: "Pixel Data length differs from Rows x Columns x frames x samples x bits",
}
