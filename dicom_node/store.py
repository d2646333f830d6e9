"""Durable store of received instances: one file per instance version, written before success.

Layout under the store root (names from valid UIDs, else a hash, never raw strings)::

    <StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>__v<N>.dcm

Each file is the DICOM File Format (PS3.10 7.1): preamble, a file meta header
made here, then the dataset bytes exactly as received (no decode / re-encode).
A file is written to a temporary name in its final folder, fsynced, renamed
into place and the folder fsynced; only then is the instance acknowledged, so
an acknowledged instance survives a crash and a crash leaves at most a
temporary file, which is removed on the next start.

Resending identical dataset bytes is acknowledged and stored once. A different
dataset under an existing SOP Instance UID is kept as the next version
(``__v2``, ``__v3``...): the newest version is the one the index and the
announcements use, older ones stay on disk for audit. The SQLite index
(``index.sqlite``) is only a cache of the files: it is rebuilt from them on start.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import struct
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pynetdicom
from pydicom import dcmread
from pydicom.uid import RE_VALID_UID

from dicom_node.index import Index, StoredInstance
from dicom_node.validation import InstanceHeader, header_from_dataset

logger = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
_TEMP_SUFFIX = ".partial"
_VERSION_RE = re.compile(r"^(?P<sop>.+)__v(?P<version>[0-9]+)\.dcm$")
_PREAMBLE = b"\x00" * 128 + b"DICM"


class StoreOutcome(Enum):
    """What the store did with a received instance."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    NEW_VERSION = "new version"


@dataclass(frozen=True)
class StoreResult:
    """The outcome of :meth:`Store.put` and the instance version now current."""

    outcome: StoreOutcome
    instance: StoredInstance


def safe_name(uid: str) -> str:
    """A file or folder name for `uid`: the UID itself if valid (PS3.5 9.1), else ``h`` + its SHA-256."""
    if len(uid) <= 64 and RE_VALID_UID.fullmatch(uid):
        return uid
    return "h" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _element(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of the file meta group (PS3.5 7.1.2)."""
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    head = struct.pack("<HH", *tag) + vr
    if vr == b"OB":
        return head + struct.pack("<HL", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def file_meta_bytes(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_ae: str, called_ae: str
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1) for a received dataset.

    Encoded here rather than through pydicom: it is on the path of every C-STORE
    and is a fixed list of explicit VR little endian elements. The calling and
    called AE titles go into Sending / Receiving Application Entity Title
    (0002,0017) / (0002,0018), so the index can be rebuilt from the files.
    """
    ascii_ = "ascii"
    body = b"".join((
        _element((0x0002, 0x0001), b"OB", b"\x00\x01"),
        _element((0x0002, 0x0002), b"UI", sop_class_uid.encode(ascii_)),
        _element((0x0002, 0x0003), b"UI", sop_instance_uid.encode(ascii_)),
        _element((0x0002, 0x0010), b"UI", transfer_syntax.encode(ascii_)),
        _element((0x0002, 0x0012), b"UI", pynetdicom.PYNETDICOM_IMPLEMENTATION_UID.encode(ascii_)),
        _element((0x0002, 0x0013), b"SH", pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION.encode(ascii_)),
        _element((0x0002, 0x0016), b"AE", called_ae.encode(ascii_)),
        _element((0x0002, 0x0017), b"AE", calling_ae.encode(ascii_)),
        _element((0x0002, 0x0018), b"AE", called_ae.encode(ascii_)),
    ))
    group_length = _element((0x0002, 0x0000), b"UL", struct.pack("<L", len(body)))
    return _PREAMBLE + group_length + body


def dataset_offset(head: bytes) -> int:
    """Offset of the dataset in a file written by this store, from its group length (0002,0000)."""
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a DICOM file with a File Meta Information Group Length")
    return 144 + int.from_bytes(head[140:144], "little")


class DurableWriter:
    """Writes files so that, once :meth:`commit` returns, they survive a crash or power loss.

    The store takes its writer as an explicit dependency; a subclass may override
    :meth:`_write_all` (e.g. to inject a full disk in a test).
    """

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def write_temp(self, folder: Path, stem: str, data: bytes) -> Path:
        """Write `data` to a new temporary file in `folder` and fsync it; remove it on any failure."""
        temp = folder / f".{stem}.{os.getpid()}.{threading.get_ident()}{_TEMP_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                self._write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp

    def commit(self, temp: Path, final: Path) -> None:
        """Rename `temp` to `final` (same folder) and fsync the folder so the name is durable."""
        if final.exists():
            raise FileExistsError(errno.EEXIST, "refusing to replace a stored file", str(final))
        temp.rename(final)
        self.sync_folder(final.parent)

    @staticmethod
    def sync_folder(folder: Path) -> None:
        """fsync a directory: makes entries created or renamed in it durable (POSIX)."""
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def make_folder(self, folder: Path) -> None:
        """Create `folder` and missing parents, each made durable in its parent."""
        missing = []
        current = folder
        while not current.exists():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue  # another association created it meanwhile
            self.sync_folder(path.parent)


class Store:
    """The durable store: see the module docstring.

    Parameters
    ----------
    root : Path
        Store folder (created if missing).
    writer : DurableWriter, optional
        How files are written and made durable.
    """

    def __init__(self, root: Path, *, writer: DurableWriter | None = None) -> None:
        self.root = Path(root)
        self.writer = writer if writer is not None else DurableWriter()
        self._lock = threading.Lock()
        self._folders: set[Path] = set()  # folders known to exist durably: saves syscalls per instance
        self.writer.make_folder(self.root)
        self.index = Index(self.root / INDEX_NAME)
        self.rebuild_index()

    def close(self) -> None:
        """Close the index."""
        self.index.close()

    def _files(self) -> list[Path]:
        return [p for p in self.root.glob("*/*/*") if p.is_file()]

    def rebuild_index(self) -> int:
        """Rebuild the index from the files; remove temporary files of unacknowledged writes."""
        instances: list[StoredInstance] = []
        for path in self._files():
            if path.name.endswith(_TEMP_SUFFIX):
                logger.warning("removing %s: an unfinished write, never acknowledged", path)
                path.unlink(missing_ok=True)
                continue
            try:
                instances.append(self._read_instance(path))
            except (OSError, ValueError, AttributeError, KeyError) as exc:
                logger.warning("skipping %s while rebuilding the index: %s", path, exc)
        self.index.replace_all(instances)
        logger.info("index rebuilt from %d file(s) under %s", len(instances), self.root)
        return len(instances)

    def _read_instance(self, path: Path) -> StoredInstance:
        match = _VERSION_RE.match(path.name)
        if match is None:
            raise ValueError("not a file name this store writes")
        with path.open("rb") as fh:
            offset = dataset_offset(fh.read(144))
            fh.seek(0)
            ds = dcmread(fh, stop_before_pixels=True)
        stat = path.stat()
        return StoredInstance(
            header=header_from_dataset(ds),
            path=path,
            version=int(match["version"]),
            size_bytes=stat.st_size,
            dataset_offset=offset,
            arrival=stat.st_mtime,
            calling_ae=str(ds.file_meta.get("SendingApplicationEntityTitle", "") or ""),
        )

    def _same_dataset(self, current: StoredInstance, data: bytes, offset: int) -> bool:
        if current.size_bytes - current.dataset_offset != len(data) - offset:
            return False
        with current.path.open("rb") as fh:
            fh.seek(current.dataset_offset)
            return fh.read() == data[offset:]

    def put(
        self, data: bytes, offset: int, header: InstanceHeader, calling_ae: str, arrival: float
    ) -> StoreResult:
        """Store one instance durably; return only once it is on disk (or already was).

        Parameters
        ----------
        data : bytes
            The file: preamble, file meta, dataset as received.
        offset : int
            Where the dataset starts in `data`.
        header : InstanceHeader
            Its validated header.
        calling_ae : str
            The sender's AE title.
        arrival : float
            Reception time, seconds since the epoch (after a restart, the file's mtime stands for it).

        Raises
        ------
        OSError
            The write failed (e.g. ENOSPC); no partial file is left behind.
        """
        folder = self.root / safe_name(header.study_instance_uid) / safe_name(header.series_instance_uid)
        stem = safe_name(header.sop_instance_uid)
        if folder not in self._folders:
            self.writer.make_folder(folder)
            self._folders.add(folder)
        temp = self.writer.write_temp(folder, stem, data)
        try:
            with self._lock:
                current = self.index.newest(header.sop_instance_uid)
                if current is not None and self._same_dataset(current, data, offset):
                    temp.unlink()
                    return StoreResult(StoreOutcome.DUPLICATE, current)
                version = 1 if current is None else current.version + 1
                final = folder / f"{stem}__v{version}.dcm"
                self.writer.commit(temp, final)
                instance = StoredInstance(header, final, version, len(data), offset, arrival, calling_ae)
                self.index.add(instance)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if current is None:
            return StoreResult(StoreOutcome.STORED, instance)
        logger.warning(
            "SOP Instance %s received with different content: kept as version %d (%s), older kept for audit",
            header.sop_instance_uid, version, final,
        )
        return StoreResult(StoreOutcome.NEW_VERSION, instance)

    def series_instances(self, series_instance_uid: str) -> list[StoredInstance]:
        """The newest version of each stored instance of a series."""
        return self.index.series(series_instance_uid)
