"""The node as a process: SIGKILL mid-series loses nothing acknowledged; SIGTERM stops cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .datasets import SeriesSpec, ct_slice
from .peers import associate

pytestmark = [pytest.mark.network, pytest.mark.slow]
SLICES = 24
KILL_AFTER = 9


def _start(command: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    start = log.stat().st_size if log.exists() else 0
    handle = log.open("ab")
    proc = subprocess.Popen(command, stdout=handle, stderr=handle)
    handle.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = re.findall(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()[start:])
        if found and proc.poll() is None:
            return proc, int(found[-1])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"node did not start: {log.read_text()}")


def _wait_for(log: Path, pattern: str, start: int = 0, timeout_s: float = 15.0) -> re.Match[str]:
    """Wait for `pattern` in the log after character `start`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text()[start:])
        if match:
            return match
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in the node's log:\n{log.read_text()}")


def test_sigkill_mid_series_then_restart_and_resend(tmp_path: Path) -> None:
    store, log = tmp_path / "store", tmp_path / "node.log"
    args = ["--port", "0", "--store", str(store), "--quiet-period", "0.5", "--allow", "SCANNER@127.0.0.1"]
    proc, port = _start([sys.executable, "-m", "dicom_node", *args], log)
    spec = SeriesSpec(rows=64, columns=64)
    slices = [ct_slice(spec, k) for k in range(SLICES)]
    acknowledged: list[str] = []
    try:
        assoc = associate(port)
        assert assoc.is_established
        for ds in slices:
            if len(acknowledged) == KILL_AFTER:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            try:
                status = assoc.send_c_store(ds)
            except (RuntimeError, OSError):
                break
            if "Status" not in status:
                break
            if status.Status == 0:
                acknowledged.append(ds.SOPInstanceUID)
        assoc.abort()
    finally:
        proc.kill()
        proc.wait(10)
    assert len(acknowledged) == KILL_AFTER
    folder = store / spec.study_uid / spec.series_uid
    on_disk = {p.name for p in folder.iterdir()}
    assert {f"{uid}__v1.dcm" for uid in acknowledged} <= on_disk

    # restart through the application command, resend the whole series
    restart = len(log.read_text())
    proc, port = _start([sys.executable, "-m", "seedguide", "node", *args], log)
    try:
        rebuilt = _wait_for(log, r"index rebuilt from (\d+) file\(s\)", restart)
        assert int(rebuilt.group(1)) >= KILL_AFTER
        assoc = associate(port)
        statuses = [assoc.send_c_store(ds).Status for ds in slices]
        assoc.release()
        assert statuses == [0] * SLICES
        ready = _wait_for(log, rf"series ready: CT {spec.series_uid} \(images\) revision 1, (\d+) instance",
                          restart)
        assert int(ready.group(1)) == SLICES
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "received SIGTERM" in text and "node stopped" in text
    assert len(list(folder.glob("*.dcm"))) == SLICES  # resent instances stored once
    assert not list(folder.glob(".*"))  # no temporary file left
