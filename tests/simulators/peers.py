"""Storage SCPs for the push and replay tests: a recording pynetdicom SCP, dcmtk storescp, our node.

Every peer listens on 127.0.0.1 on an ephemeral port and is stopped by the
context manager that started it.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, evt
from pynetdicom.events import Event

from guidance.dicomio.ct import write_ct_series
from guidance.dicomio.dataset import StudyContext, new_uid, save
from guidance.volume import Volume
from tests.dcmtk import dcmtk_tool

START_TIMEOUT_S = 20.0


def ct_volume(slices: int = 5, size: int = 32, value_hu: float = 40.0) -> Volume:
    """A small axial volume: ``slices`` x ``size`` x ``size``, 1 mm pixels, 2.5 mm slices."""
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, 2.5]
    affine[:3, 1] = [0.0, 1.0, 0.0]
    affine[:3, 2] = [1.0, 0.0, 0.0]
    array = np.full((slices, size, size), value_hu, dtype=np.float32)
    array[:, ::4, ::4] = np.arange(slices, dtype=np.float32)[:, None, None] * 10.0
    return Volume(array, affine, "")


def ct_series(context: StudyContext, when: dt.datetime, *, series_number: int = 1,
              slices: int = 5) -> list[Dataset]:
    """One small CT series whose Content / Series / Instance Creation times are ``when``."""
    volume = ct_volume(slices)
    volume = Volume(volume.array, volume.affine, context.frame_of_reference_uid)
    return write_ct_series(volume, context, series_number=series_number, content_datetime=when,
                           series_instance_uid=new_uid())


def write_session(folder: Path, times: list[dt.datetime], slices: int = 5) -> list[list[Dataset]]:
    """A recorded session: one CT series per time, saved under ``folder/seriesN``."""
    context = StudyContext()
    session = []
    for number, when in enumerate(times, start=1):
        series = ct_series(context, when, series_number=number, slices=slices)
        save(series, folder / f"series{number}")
        session.append(series)
    return session


@dataclass
class Received:
    """One C-STORE request seen by :class:`RecordingSCP`."""

    at_s: float  # time.monotonic()
    sop_instance_uid: str
    series_instance_uid: str
    position_mm: float
    transfer_syntax: str
    status: int


@dataclass
class RecordingSCP:
    """A pynetdicom Storage SCP that records each request and answers ``statuses`` first, then success."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, event: Event) -> int:
        ds = event.dataset
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 0x0000
            position = float(ds.ImagePositionPatient[2]) if "ImagePositionPatient" in ds else float("nan")
            self.received.append(Received(time.monotonic(), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID),
                                          position, str(event.context.transfer_syntax), status))
        return status

    def stored(self) -> list[Received]:
        """The requests answered with success."""
        return [r for r in self.received if r.status == 0x0000]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def recording_scp(statuses: list[int] | None = None, port: int = 0,
                  delay_s: float = 0.0) -> Iterator[RecordingSCP]:
    """Start a RecordingSCP (after ``delay_s`` in a thread when > 0: a peer that comes up late)."""
    scp = RecordingSCP(list(statuses or []))
    ae = AE(ae_title="RECORDER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for syntaxes in ([ExplicitVRLittleEndian, ImplicitVRLittleEndian], [RLELossless]):
        ae.add_supported_context(CTImageStorage, syntaxes)
    handlers = [(evt.EVT_C_STORE, scp.handle)]
    servers = []

    def start() -> None:
        servers.append(ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers))

    if delay_s > 0:
        scp.port = port
        starter = threading.Timer(delay_s, start)
        starter.start()
    else:
        start()
        scp.port = servers[0].server_address[1]
    try:
        yield scp
    finally:
        if delay_s > 0:
            starter.cancel()
            starter.join(5)
        for server in servers:
            server.shutdown()


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    """Wait until a C-ECHO to ``port`` succeeds."""
    ae = AE(ae_title="PROBE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 2
    ae.add_requested_context("1.2.840.10008.1.1")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                time.sleep(0.05)
                continue
        assoc = ae.associate("127.0.0.1", port, ae_title="ANY-SCP")
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not start on port {port}: {log.read_text(errors='replace')}")


@contextmanager
def storescp(out: Path, log: Path) -> Iterator[int]:
    """dcmtk storescp accepting every transfer syntax (+xa), storing into ``out``; yields its port."""
    executable = dcmtk_tool("storescp")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with log.open("wb") as handle:
        proc = subprocess.Popen([executable, "+xa", "--output-directory", str(out), str(port)],
                                stdout=handle, stderr=handle)
    try:
        _wait_listening(proc, port, "storescp", log)
        yield port
    finally:
        _stop(proc)


@contextmanager
def our_node(store: Path, log: Path, *extra: str) -> Iterator[int]:
    """``python -m dicom_node`` as a subprocess (a real peer), called SEEDGUIDE; yields its port."""
    command = [sys.executable, "-m", "dicom_node", "--port", "0", "--ae-title", "SEEDGUIDE",
               "--store", str(store), "--quiet-period", "0.5", *extra]
    with log.open("wb") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=handle)
    try:
        port = _node_port(proc, log)
        yield port
    finally:
        _stop(proc)


def make_pki(folder: Path) -> Path:
    """A throwaway CA and server / client certificates for 127.0.0.1 (openssl CLI, EC keys: fast)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    folder.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test CA")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext")
    return folder


def _node_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.findall(r"listening on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if found:
            return int(found[-1])
        time.sleep(0.05)
    raise AssertionError(f"the node did not start: {log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
