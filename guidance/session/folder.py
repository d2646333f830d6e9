"""The session folder: a procedure's plan, every scan and every result, written as they come.

Layout (schema ``seedguide.session/1``)::

    SESSION/
      session.json              what the session is: schema, creation time, the plan's identity
      plan/                     planning CT, RT Structure Set, RT Plan (as received)
      scans/NN/                 NN = 01, 02, ... in arrival order
        ct/                     the intra-procedure CT series (as received)
        exports/                dose.dcm, structures.dcm, seeds_found.dcm (see guidance.session.exports)
        result.json             the GuidanceResult, schema seedguide.result/1 (written last)
        truth.json              ground truth, for simulated procedures only

Every file is written to a temporary name, fsynced and renamed into place, and
``result.json`` is written last: a scan folder with a ``result.json`` is
complete, one without it is an analysis interrupted by a crash (its CT is kept
and the scan can be analysed again). The scan list is rebuilt from the folders
on opening, so nothing depends on an index that a crash could leave stale.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.dataset import file_name, load_datasets, to_bytes
from guidance.dicomio.rtdose import read_rtdose
from guidance.pipeline import GuidanceResult
from guidance.session.exports import result_exports
from guidance.session.plan_bundle import PlanBundle, load_plan_bundle
from guidance.volume import Volume

__all__ = ["SESSION_SCHEMA", "ScanData", "ScanRecord", "SessionFolder", "durable_write", "write_json"]

logger = logging.getLogger(__name__)

SESSION_SCHEMA = "seedguide.session/1"
_SCAN_FOLDER = re.compile(r"^\d{2,4}$")


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def durable_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename (no partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    _fsync_directory(path.parent)


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    """``value`` as indented JSON (NaN refused), written with :func:`durable_write`."""
    durable_write(path, (json.dumps(value, indent=1, allow_nan=False) + "\n").encode())


def _store(files: Iterable[Path | Dataset], folder: Path, *, link: bool = False) -> list[Path]:
    """Put files (copied byte for byte, or hard-linked) or datasets into ``folder``, named by SOP UID.

    ``link`` is for files nobody rewrites in place (the node's store): a hard link shares
    their already-durable bytes (the node fsynced them before acknowledging); only the
    folder entry is new, made durable by one directory fsync at the end. Elsewhere (a plan
    folder a user may edit) the bytes are copied.
    """
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    linked = False
    for item in files:
        if isinstance(item, Dataset):
            target = folder / file_name(item)
            durable_write(target, to_bytes(item))
        else:
            header = load_datasets(item, stop_before_pixels=True)[0].dataset
            target = folder / file_name(header)
            try:
                if not link:
                    raise OSError("copy requested")
                os.link(item, target)
                linked = True
            except OSError:  # a copy: asked for, another file system, or links not supported
                durable_write(target, Path(item).read_bytes())
        out.append(target)
    if linked:
        _fsync_directory(folder)
    return out


@dataclass(frozen=True, eq=False)
class ScanData:
    """What is shown of one scan: its image, its result (as in result.json) and its dose.

    Parameters
    ----------
    index : int
        1-based position in the session.
    scan : Volume
        The intra-procedure CT, HU, its own frame.
    result : dict
        ``seedguide.result/1`` dictionary.
    dose : Volume or None
        Dose of the found seeds, Gy, planning frame.
    folder : Path or None
        The scan's folder in the session (None before it is written).
    """

    index: int
    scan: Volume
    result: Mapping[str, Any]
    dose: Volume | None
    folder: Path | None = None

    @classmethod
    def from_result(
        cls, index: int, scan: Volume, result: GuidanceResult, folder: Path | None = None
    ) -> ScanData:
        """From a result still in memory (no reading back)."""
        return cls(index, scan, result.to_dict(), result.dose, folder)


@dataclass(frozen=True)
class ScanRecord:
    """One scan folder of a session.

    Parameters
    ----------
    index : int
    folder : Path
    complete : bool
        ``result.json`` is there.
    """

    index: int
    folder: Path

    @property
    def complete(self) -> bool:
        return (self.folder / "result.json").is_file()

    @property
    def ct_folder(self) -> Path:
        return self.folder / "ct"

    def result(self) -> dict[str, Any]:
        """The result dictionary (schema ``seedguide.result/1``)."""
        value: dict[str, Any] = json.loads((self.folder / "result.json").read_text())
        return value

    def exports(self) -> dict[str, Path]:
        """Export name (dose, structures, seeds_found) -> file."""
        folder = self.folder / "exports"
        return {p.stem: p for p in sorted(folder.glob("*.dcm"))} if folder.is_dir() else {}

    def truth(self) -> dict[str, Any] | None:
        path = self.folder / "truth.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def load(self) -> ScanData:
        """Read the scan, its result and its exported dose."""
        dose_path = self.exports().get("dose")
        dose = read_rtdose(dose_path) if dose_path is not None else None
        return ScanData(self.index, read_ct_series(self.ct_folder), self.result(), dose, self.folder)


class SessionFolder:
    """A session folder being written or reopened (see the module docstring)."""

    def __init__(self, path: Path, bundle: PlanBundle | None = None) -> None:
        self.path = Path(path)
        self._bundle = bundle  # the plan, once read

    @property
    def plan_folder(self) -> Path:
        return self.path / "plan"

    @classmethod
    def create(cls, path: str | os.PathLike[str], plan_files: Iterable[Path | Dataset]) -> SessionFolder:
        """A new session at ``path`` (which must not hold one) with the plan's files.

        Raises
        ------
        FileExistsError
            ``path`` already holds a session or other files.
        DicomInputError
            The files do not make a complete, linked plan; ``path`` is then left
            as it was (a session can be created there once the plan is right).
        """
        session = cls(Path(path))
        if session.path.exists() and any(session.path.iterdir()):
            raise FileExistsError(f"{session.path} is not empty: a session needs a new folder")
        created = not session.path.exists()
        try:
            bundle = load_plan_bundle(_store(plan_files, session.plan_folder))
        except BaseException:  # leave the folder as it was found: a corrected plan may come next
            shutil.rmtree(session.plan_folder, ignore_errors=True)
            if created:
                shutil.rmtree(session.path, ignore_errors=True)
            raise
        write_json(session.path / "session.json", {
            "schema": SESSION_SCHEMA,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "plan_sop_instance_uid": bundle.plan.sop_instance_uid,
            "plan_label": bundle.plan.label,
            "patient_id": bundle.context.patient_id,
            "study_instance_uid": bundle.context.study_instance_uid,
            "frame_of_reference_uid": bundle.plan.frame_of_reference_uid,
            "prescription_gy": bundle.plan.prescription_gy,
            "planned_seeds": len(bundle.plan.seeds),
        })  # fmt: skip
        logger.info("session %s created for plan %s", session.path, bundle.plan.sop_instance_uid)
        session._bundle = bundle
        return session

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SessionFolder:
        """Reopen an existing session (its ``session.json`` must carry a known schema)."""
        session = cls(Path(path))
        manifest = session.manifest()
        if manifest.get("schema") != SESSION_SCHEMA:
            raise ValueError(
                f"{session.path / 'session.json'}: schema {manifest.get('schema')!r}, need {SESSION_SCHEMA!r}"
            )
        return session

    def manifest(self) -> dict[str, Any]:
        path = self.path / "session.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} is not a session folder: no session.json")
        value: dict[str, Any] = json.loads(path.read_text())
        return value

    def load_bundle(self) -> PlanBundle:
        """The session's plan (read from ``plan/`` once; the folder is written once)."""
        if self._bundle is None:
            self._bundle = load_plan_bundle(self.plan_folder)
        return self._bundle

    def scans(self) -> list[ScanRecord]:
        """Every scan folder, in order (complete or not)."""
        folder = self.path / "scans"
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.is_dir() and _SCAN_FOLDER.match(p.name)]
        return [ScanRecord(int(p.name), p) for p in sorted(found, key=lambda p: int(p.name))]

    def new_scan(self, scan_files: Iterable[Path | Dataset]) -> ScanRecord:
        """Store a received scan in the next scan folder (files hard-linked where possible: pass
        files nobody rewrites in place, such as the node's store)."""
        records = self.scans()
        index = records[-1].index + 1 if records else 1
        record = ScanRecord(index, self.path / "scans" / f"{index:02d}")
        record.folder.mkdir(parents=True, exist_ok=False)
        _store(scan_files, record.ct_folder, link=True)
        return record

    def record_result(
        self, record: ScanRecord, result: GuidanceResult, bundle: PlanBundle, *,
        truth: Mapping[str, Any] | None = None, exports: bool = True,
    ) -> ScanRecord:  # fmt: skip
        """Write the exports, the truth (simulations) and, last, ``result.json`` of ``record``."""
        if exports:
            made = result_exports(
                result, bundle.plan, bundle.context, scan_label=f"scan {record.index}",
                referenced_series_uid=bundle.structure_set.referenced_series_uid,
            )  # fmt: skip
            for name, dataset in made.datasets().items():
                durable_write(record.folder / "exports" / f"{name}.dcm", to_bytes(dataset))
        if truth is not None:
            write_json(record.folder / "truth.json", truth)
        write_json(record.folder / "result.json", result.to_dict())
        return record

    def incomplete(self) -> list[ScanRecord]:
        """Scan folders without a result (a crash during analysis); their CT is kept for a re-run."""
        return [r for r in self.scans() if not r.complete]
