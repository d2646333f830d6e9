"""DICOM peers for the node's tests: a pynetdicom SCU, and raw (undecoded) sends."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association

from dicom_node.conformance import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, VERIFICATION_SOP_CLASS


def client(calling_ae: str = "SCANNER", transfer_syntaxes: Sequence[str] = TRANSFER_SYNTAXES[:3]) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_requested_context(sop_class, list(transfer_syntaxes))
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    return ae


def associate(
    port: int, calling_ae: str = "SCANNER", called_ae: str = "SEEDGUIDE", **kwargs: object
) -> Association:
    return client(calling_ae).associate("127.0.0.1", port, ae_title=called_ae, **kwargs)


def send(port: int, items: Iterable[Dataset | Path], calling_ae: str = "SCANNER") -> list[int]:
    """C-STORE each dataset or file on one association; the status of each (-1: no response)."""
    assoc = associate(port, calling_ae)
    if not assoc.is_established:
        raise ConnectionError(f"association to port {port} not established")
    statuses = []
    try:
        for item in items:
            status = assoc.send_c_store(item)
            statuses.append(int(status.Status) if "Status" in status else -1)
    finally:
        assoc.release()
    return statuses


def send_raw(port: int, files: Sequence[Path], monkeypatch) -> list[tuple[int, str]]:
    """Send files without decoding them (their dataset bytes as they are): (status, error comment)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    scu = client(transfer_syntaxes=[ExplicitVRLittleEndian])
    assoc = scu.associate("127.0.0.1", port, ae_title="SEEDGUIDE")
    results = []
    try:
        for path in files:
            status = assoc.send_c_store(path)
            results.append((int(status.Status), str(status.get("ErrorComment", ""))))
    finally:
        assoc.release()
    return results
