"""Fixtures shared by the whole suite."""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    configured = os.environ.get("SEEDGUIDE_SHARED_DATA")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real third-party DICOM files (never copied into the repository).

    Set SEEDGUIDE_SHARED_DATA to point elsewhere. Missing data skips the test on
    a developer machine but fails in CI, where it must be present.
    """
    folder = _shared_data_dir()
    if not (folder / "SOURCES.tsv").is_file():
        message = f"third-party test data not found at {folder} (set SEEDGUIDE_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def dicompyler() -> Iterator[SimpleNamespace]:
    """dicompyler-core (``dicomparser``, ``dvhcalc``): an independent reader of RT objects.

    Version 0.5.6 imports ``pydicom.dicomio.read_file``, which pydicom 3 removed; it
    uses it only to open paths, and the tests pass datasets, so it is aliased to
    ``dcmread`` for the session. Its import of deprecated pydicom modules is not ours
    to fix, so those DeprecationWarnings are ignored while importing it.
    """
    import pydicom.dicomio

    patch = pytest.MonkeyPatch()
    if not hasattr(pydicom.dicomio, "read_file"):
        patch.setattr(pydicom.dicomio, "read_file", pydicom.dcmread, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parser = importlib.import_module("dicompylercore.dicomparser")
        dvhcalc = importlib.import_module("dicompylercore.dvhcalc")
    yield SimpleNamespace(dicomparser=parser, dvhcalc=dvhcalc)
    patch.undo()
