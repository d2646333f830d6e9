"""SQLite index of the stored instances (study / series / instance): a cache of the files.

The files are the truth; this index is rebuilt from them whenever the store opens,
so it is written without fsync (``synchronous=OFF``): a crash costs nothing that
the next start does not rebuild.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_node.validation import InstanceHeader

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance (
    sop_instance_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    sop_class_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    instance_number INTEGER,
    geometry TEXT,
    images_in_acquisition INTEGER,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    dataset_offset INTEGER NOT NULL,
    arrival REAL NOT NULL,
    calling_ae TEXT NOT NULL,
    PRIMARY KEY (sop_instance_uid, version)
);
CREATE INDEX IF NOT EXISTS instance_series ON instance (series_instance_uid);
CREATE INDEX IF NOT EXISTS instance_study ON instance (study_instance_uid);
"""

_COLUMNS = (
    "sop_instance_uid, version, sop_class_uid, study_instance_uid, series_instance_uid, modality, "
    "instance_number, geometry, images_in_acquisition, path, size_bytes, dataset_offset, arrival, calling_ae"
)

_INSERT = f"INSERT INTO instance ({_COLUMNS}) VALUES ({','.join('?' * 14)})"


@dataclass(frozen=True)
class StoredInstance:
    """One stored instance version.

    Attributes
    ----------
    header : InstanceHeader
        What was read from its dataset.
    path : Path
        Its file.
    version : int
        1 for the first content received under its SOP Instance UID, then 2, 3...
    size_bytes : int
        File size, bytes.
    dataset_offset : int
        Where the dataset (as received) starts in the file.
    arrival : float
        Reception time, seconds since the epoch.
    calling_ae : str
        AE title of the sender.
    """

    header: InstanceHeader
    path: Path
    version: int
    size_bytes: int
    dataset_offset: int
    arrival: float
    calling_ae: str


def _row(inst: StoredInstance) -> tuple[Any, ...]:
    h = inst.header
    geometry = json.dumps([h.image_position_mm, h.image_orientation])
    return (
        h.sop_instance_uid, inst.version, h.sop_class_uid, h.study_instance_uid, h.series_instance_uid,
        h.modality, h.instance_number, geometry, h.images_in_acquisition, str(inst.path), inst.size_bytes,
        inst.dataset_offset, inst.arrival, inst.calling_ae,
    )


def _instance(row: tuple[Any, ...]) -> StoredInstance:
    (sop, version, sop_class, study, series, modality, number, geometry, in_acq, path, size, offset,
     arrival, calling_ae) = row
    position, orientation = json.loads(geometry) if geometry else (None, None)
    header = InstanceHeader(
        sop_class_uid=sop_class, sop_instance_uid=sop, study_instance_uid=study,
        series_instance_uid=series, modality=modality, instance_number=number,
        image_position_mm=tuple(position) if position else None,
        image_orientation=tuple(orientation) if orientation else None,
        images_in_acquisition=in_acq,
    )
    return StoredInstance(header, Path(path), version, size, offset, arrival, calling_ae)


class Index:
    """Thread-safe access to the SQLite index file at `path`."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA journal_mode=MEMORY")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def replace_all(self, instances: list[StoredInstance]) -> None:
        """Replace the whole content by `instances` (the rebuild from files)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM instance")
            self._db.executemany(_INSERT, [_row(i) for i in instances])
            self._db.execute("COMMIT")

    def add(self, instance: StoredInstance) -> None:
        """Record a newly stored instance version."""
        with self._lock:
            self._db.execute(_INSERT, _row(instance))

    def newest(self, sop_instance_uid: str) -> StoredInstance | None:
        """The newest stored version of an instance, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM instance WHERE sop_instance_uid = ? ORDER BY version DESC LIMIT 1",
                (sop_instance_uid,),
            ).fetchone()
        return _instance(row) if row else None

    def _newest_where(self, where: str, args: tuple[Any, ...]) -> list[StoredInstance]:
        query = (
            f"SELECT {_COLUMNS} FROM instance AS i WHERE {where} AND version = "
            "(SELECT MAX(version) FROM instance WHERE sop_instance_uid = i.sop_instance_uid) "
            "ORDER BY path"
        )
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [_instance(r) for r in rows]

    def series(self, series_instance_uid: str) -> list[StoredInstance]:
        """The newest version of every instance whose newest version is in the series."""
        return self._newest_where("series_instance_uid = ?", (series_instance_uid,))

    def all_current(self) -> list[StoredInstance]:
        """The newest version of every stored instance."""
        return self._newest_where("1 = 1", ())

    def counts(self) -> tuple[int, int, int]:
        """(studies, series, instances) currently indexed, counting the newest versions only."""
        current = self.all_current()
        studies = {i.header.study_instance_uid for i in current}
        series = {i.header.series_instance_uid for i in current}
        return len(studies), len(series), len(current)
