"""Reading datasets from disk and building the modules every written object shares.

Writers in this package build datasets in memory (pure functions of the core
types and a :class:`StudyContext`) and :func:`save` writes them; tests round
trip them through ``BytesIO`` with :func:`to_bytes` / :func:`from_bytes`.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from guidance.dicomio.errors import DicomInputError

__all__ = [
    "DatasetSource",
    "LoadedDataset",
    "StudyContext",
    "file_name",
    "from_bytes",
    "load_datasets",
    "new_dataset",
    "new_uid",
    "save",
    "to_bytes",
]

logger = logging.getLogger(__name__)

#: What readers accept: a file or folder, several of them, or datasets already read.
DatasetSource = str | os.PathLike[str] | Dataset | Iterable[str | os.PathLike[str] | Dataset]

MANUFACTURER = "seedguide"
SOFTWARE_VERSION = "seedguide 0.1"


def new_uid() -> str:
    """A new globally unique DICOM UID (pydicom's UUID-derived root)."""
    return str(generate_uid())


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset and the file it came from (None when given in memory)."""

    path: Path | None
    dataset: Dataset

    @property
    def name(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"<dataset {self.dataset.get('SOPInstanceUID', '?')}>"


# First two bytes of a dataset stored without preamble: group 0x0002 (file meta)
# or 0x0008 (identifying group), little or big endian.
_HEADERLESS_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _read_file(path: Path, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        # Files without the 128-byte preamble and "DICM" (written by some old
        # systems and test suites): parse those that start like a DICOM group,
        # then insist on an SOP class. Anything else (text, images) stays refused.
        with path.open("rb") as stream:
            start = stream.read(2)
        if start not in _HEADERLESS_STARTS:
            raise
        dataset = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
        if "SOPClassUID" not in dataset:
            raise
        return dataset


def _iter_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def load_datasets(
    source: DatasetSource, *, skip_unreadable: bool = True, stop_before_pixels: bool = False
) -> list[LoadedDataset]:
    """Read every DICOM dataset in ``source``.

    Parameters
    ----------
    source : path, folder, dataset, or an iterable of those
        Folders are searched recursively; hidden files are skipped.
    skip_unreadable : bool
        Files in a folder that are not DICOM are logged and skipped (a folder
        from a planning system often holds a README or a DICOMDIR viewer).
        Files named explicitly must be DICOM.
    stop_before_pixels : bool
        Read headers only (fast survey of a folder).

    Raises
    ------
    DicomInputError
        If a path does not exist, or a named file is not readable DICOM.
    """
    items: list[str | os.PathLike[str] | Dataset]
    if isinstance(source, (str, os.PathLike, Dataset)):
        items = [source]
    else:
        items = list(source)
    loaded: list[LoadedDataset] = []
    for item in items:
        if isinstance(item, Dataset):
            loaded.append(LoadedDataset(None, item))
            continue
        path = Path(item)
        if path.is_dir():
            for file in _iter_files(path):
                try:
                    loaded.append(LoadedDataset(file, _read_file(file, stop_before_pixels)))
                except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
                    if not skip_unreadable:
                        raise DicomInputError(f"not a readable DICOM file: {exc}", [file]) from exc
                    logger.info("skipping %s: not readable DICOM (%s)", file, exc)
        elif path.is_file():
            try:
                loaded.append(LoadedDataset(path, _read_file(path, stop_before_pixels)))
            except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
                raise DicomInputError(f"not a readable DICOM file: {exc}", [path]) from exc
        else:
            raise DicomInputError("no such file or folder", [path])
    return loaded


@dataclass(frozen=True)
class StudyContext:
    """Patient and study identity shared by every object of a written set.

    Writing CT, RT Structure Set, RT Plan and RT Dose with one context gives
    them one StudyInstanceUID and FrameOfReferenceUID, so other systems link them.
    """

    patient_id: str = "SEEDGUIDE-0001"
    patient_name: str = "SEEDGUIDE^PHANTOM"
    patient_birth_date: str = ""
    patient_sex: str = "O"
    study_instance_uid: str = field(default_factory=new_uid)
    frame_of_reference_uid: str = field(default_factory=new_uid)
    study_id: str = "1"
    study_description: str = "CT-guided I-125 seed implant"
    study_datetime: dt.datetime = field(default_factory=lambda: dt.datetime.now().replace(microsecond=0))
    accession_number: str = ""
    referring_physician_name: str = ""


def new_dataset(
    context: StudyContext,
    *,
    sop_class_uid: str,
    modality: str,
    series_instance_uid: str,
    series_number: int,
    series_description: str = "",
    sop_instance_uid: str | None = None,
    instance_number: int = 1,
    content_datetime: dt.datetime | None = None,
) -> Dataset:
    """A dataset with file meta and the Patient, General Study, General Series,
    Frame of Reference, General Equipment and SOP Common modules filled in
    (DICOM PS3.3 C.7.1.1, C.7.2.1, C.7.3.1, C.7.4.1, C.7.5.1, C.12.1).
    """
    uid = sop_instance_uid or new_uid()
    when = content_datetime or dt.datetime.now().replace(microsecond=0)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    ds.PatientName = context.patient_name
    ds.PatientID = context.patient_id
    ds.PatientBirthDate = context.patient_birth_date
    ds.PatientSex = context.patient_sex
    ds.StudyInstanceUID = context.study_instance_uid
    ds.StudyDate = context.study_datetime.strftime("%Y%m%d")
    ds.StudyTime = context.study_datetime.strftime("%H%M%S")
    ds.StudyID = context.study_id
    ds.StudyDescription = context.study_description
    ds.AccessionNumber = context.accession_number
    ds.ReferringPhysicianName = context.referring_physician_name
    ds.Modality = modality
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = when.strftime("%Y%m%d")
    ds.SeriesTime = when.strftime("%H%M%S")
    ds.FrameOfReferenceUID = context.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.InstanceNumber = instance_number
    return ds


def to_bytes(dataset: Dataset) -> bytes:
    """Encode ``dataset`` as a DICOM Part 10 file in memory."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Dataset:
    """Decode a DICOM Part 10 file from memory."""
    return pydicom.dcmread(io.BytesIO(data))


def file_name(dataset: Dataset, *, prefix: str = "") -> str:
    """``<prefix><Modality>.<SOPInstanceUID>.dcm``: a file name from validated UIDs only.

    Raises
    ------
    ValueError
        If the SOPInstanceUID is not a valid UID (PS3.5 9.1).
    """
    uid = str(dataset.SOPInstanceUID)
    if not UID(uid).is_valid:
        raise ValueError(f"refusing to name a file after invalid SOPInstanceUID {uid!r}")
    modality = "".join(ch for ch in str(dataset.get("Modality", "OT")) if ch.isalnum()) or "OT"
    return f"{prefix}{modality}.{uid}.dcm"


def save(datasets: Sequence[Dataset], folder: str | os.PathLike[str], *, prefix: str = "") -> list[Path]:
    """Write datasets into ``folder`` as ``<prefix><Modality>.<SOPInstanceUID>.dcm``.

    Names come from validated UIDs only. Each file is written to a temporary
    name and renamed into place, so a reader never sees half a file.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for dataset in datasets:
        target = out / file_name(dataset, prefix=prefix)
        partial = target.with_suffix(".dcm.partial")
        partial.write_bytes(to_bytes(dataset))
        partial.replace(target)
        paths.append(target)
    return paths
