"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

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
