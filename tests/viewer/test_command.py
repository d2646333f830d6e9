"""``seedguide view``: a session rendered to a PNG by the command, and its errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from viewer.scene import COLD_SPOT_RGBA


def _seedguide(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seedguide", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)  # fmt: skip


def test_view_screenshot_renders_the_session(session_path: Path, tmp_path: Path) -> None:
    imageio = pytest.importorskip("imageio.v3")
    png = tmp_path / "view.png"
    done = _seedguide("view", str(session_path), "--screenshot", str(png))
    assert done.returncode == 0, done.stderr[-3000:]
    image = imageio.imread(png)
    assert image.shape[0] >= 600 and image.shape[1] >= 900
    rgb = image[..., :3].astype(int)
    assert (rgb.sum(axis=2) > 60).mean() > 0.3  # rendered, not a black frame
    cold = np.abs(rgb - np.array(COLD_SPOT_RGBA[:3]) * 255).max(axis=2) < 40
    assert cold.sum() > 20  # scan 3's cold spot is on screen


def test_view_reports_a_folder_that_is_not_a_session(tmp_path: Path) -> None:
    done = _seedguide("view", str(tmp_path), "--screenshot", str(tmp_path / "x.png"))
    assert done.returncode == 2
    assert "session.json" in done.stderr


def test_view_without_a_display_says_how_to_get_one(session_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = _seedguide("view", str(session_path), env=env)
    assert done.returncode == 2
    assert "xvfb-run -a" in done.stderr
