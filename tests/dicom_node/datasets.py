"""Small synthetic DICOM instances for the node's tests, written with pydicom directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass(frozen=True)
class SeriesSpec:
    """UIDs and geometry of a synthetic axial CT series."""

    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    rows: int = 16
    columns: int = 16
    spacing_mm: float = 2.5


def ct_slice(spec: SeriesSpec, k: int, *, sop_uid: str | None = None, fill: int = 0) -> Dataset:
    """Slice `k` (InstanceNumber k + 1, z = k * spacing) of the series `spec`, 16-bit pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = UID(CT_IMAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.Modality = "CT"
    ds.PatientName = "Node^Test"
    ds.PatientID = "NODE-TEST"
    ds.FrameOfReferenceUID = spec.study_uid[:-1] + "9"
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [0.0, 0.0, k * spec.spacing_mm]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = spec.spacing_mm
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = bytes([(k + fill) % 256, 1]) * (spec.rows * spec.columns)
    return ds


def rt_plan(spec: SeriesSpec) -> Dataset:
    """A minimal RT Plan instance in its own series of the study of `spec`."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = RT_PLAN
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "RTPLAN"
    ds.RTPlanLabel = "SEEDS"
    return ds


def file_bytes(ds: Dataset) -> bytes:
    """`ds` in the DICOM File Format."""
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write(ds: Dataset, path: Path) -> Path:
    """Write `ds` as a DICOM file at `path`."""
    path.write_bytes(file_bytes(ds))
    return path
