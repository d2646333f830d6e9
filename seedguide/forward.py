"""Send each result's DICOM exports to a PACS or the planning system (C-STORE SCU).

A background thread sends, so a slow or absent destination never delays the
analysis of the next scan. Each scan's outcome is written next to its exports
(``exports/forwarded.json``: destination, time, status of every file) so the
session shows what reached the destination; failed sends are retried
``attempts`` times with a growing pause and then left, logged, for a manual
resend (``python -m simulators push scans/NN/exports --to HOST:PORT``).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE

from guidance.session import write_json

__all__ = ["Destination", "Forwarder", "parse_destination"]

logger = logging.getLogger(__name__)

#: RT Dose, RT Structure Set and RT Plan Storage (DICOM PS3.4 B.5): what the exports are.
_CONTEXTS = tuple(f"1.2.840.10008.5.1.4.1.1.481.{k}" for k in (2, 3, 5))


@dataclass(frozen=True)
class Destination:
    """A Storage SCP: its AE title and address, and the AE title we call from."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "SEEDGUIDE"
    timeout_s: float = 20.0

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str, calling_ae: str = "SEEDGUIDE") -> Destination:
    """``AE@HOST:PORT`` -> Destination (ValueError naming the expected form otherwise)."""
    title, at, address = text.partition("@")
    host, colon, port = address.rpartition(":")
    if not (
        at and colon and title and host and port.isdigit() and 0 < int(port) < 65536 and len(title) <= 16
    ):
        raise ValueError(f"export destination {text!r}: expected AE@HOST:PORT, e.g. PACS@10.0.0.5:104")
    return Destination(title, host, int(port), calling_ae)


def _send(files: list[Path], destination: Destination) -> dict[str, str]:
    """C-STORE every file over one association; file name -> status ("0x0000", or why not)."""
    ae = AE(ae_title=destination.calling_ae)
    for context in _CONTEXTS:
        ae.add_requested_context(context)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_s
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return {f.name: "association rejected or not reachable" for f in files}
    statuses = {}
    try:
        for path in files:
            status = assoc.send_c_store(dcmread(path))
            statuses[path.name] = f"0x{status.Status:04X}" if "Status" in status else "no response"
    finally:
        assoc.release()
    return statuses


class Forwarder:
    """Queue of scan export folders to send to one destination, in order, from a thread."""

    def __init__(self, destination: Destination, *, attempts: int = 3, pause_s: float = 2.0) -> None:
        self.destination = destination
        self.attempts = attempts
        self.pause_s = pause_s
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="export-forwarder", daemon=True)
        self._thread.start()

    def submit(self, exports_folder: Path) -> None:
        """Send the ``*.dcm`` of ``exports_folder`` (returns at once)."""
        self._queue.put(exports_folder)

    def close(self, timeout_s: float = 60.0) -> None:
        """Send what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (folder := self._queue.get()) is not None:
            try:
                self._forward(folder)
            except Exception:  # the next scan's exports must still go
                logger.exception("forwarding %s to %s failed", folder, self.destination)

    def _forward(self, folder: Path) -> None:
        files = sorted(folder.glob("*.dcm"))
        statuses: dict[str, str] = {}
        for attempt in range(1, self.attempts + 1):
            statuses = _send(files, self.destination)
            if all(s == "0x0000" for s in statuses.values()):
                break
            logger.warning("exports of scan %s to %s, attempt %d: %s", folder.parent.name, self.destination,
                           attempt, statuses)  # fmt: skip
            if attempt < self.attempts:
                time.sleep(self.pause_s * attempt)
        record = {
            "destination": str(self.destination),
            "sent_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "statuses": statuses,
            "ok": bool(statuses) and all(s == "0x0000" for s in statuses.values()),
        }
        write_json(folder / "forwarded.json", record)
        logger.info("exports of scan %s sent to %s: %s", folder.parent.name, self.destination, statuses)
