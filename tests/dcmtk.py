"""Where the dcmtk command-line tools are: the independent DICOM peer of the network tests.

pynetdicom installs console scripts with the same names (``storescp``, ``echoscu``...)
into the virtual environment, which comes first on PATH when the test command runs;
the tests want dcmtk's, so the environment's own script folder is skipped.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

_VENV_SCRIPTS = Path(sysconfig.get_path("scripts")).resolve()


def dcmtk_tool(name: str) -> str:
    """Absolute path of dcmtk's ``name``; skips the test (fails it in CI) when dcmtk is absent."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or Path(folder).resolve() == _VENV_SCRIPTS:
            continue
        found = shutil.which(name, path=folder)
        if found:
            return found
    message = f"dcmtk's {name} is not installed (apt-get install dcmtk)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
