"""How the node runs associations: requests served on arrival, releases and aborts still end them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pynetdicom.dul import DULServiceProvider

from dicom_node.conformance import StoreStatus
from dicom_node.reactor import NodeAssociation
from dicom_node.store import DurableWriter

from .datasets import SeriesSpec, ct_slice
from .peers import associate

pytestmark = pytest.mark.network


class _ThreadRecorder(DurableWriter):
    """A real writer that notes which thread wrote each file."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def write_temp(self, folder: Path, stem: str, data: bytes) -> Path:
        self.threads.append(threading.current_thread())
        return super().write_temp(folder, stem, data)


def _wait_no_association(running, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while running.node._server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.node._server.active_associations == []


def test_store_and_echo_served_on_the_upper_layer_thread(start_node) -> None:
    writer = _ThreadRecorder()
    running = start_node(writer=writer)
    spec = SeriesSpec()
    assoc = associate(running.port)
    assert assoc.is_established
    try:
        (served,) = running.node._server.active_associations
        assert isinstance(served, NodeAssociation)
        assert assoc.send_c_echo().Status == 0x0000
        statuses = [int(assoc.send_c_store(ct_slice(spec, k)).Status) for k in range(3)]
    finally:
        assoc.release()
    assert statuses == [StoreStatus.SUCCESS] * 3
    assert len(writer.threads) == 3
    assert all(isinstance(thread, DULServiceProvider) for thread in writer.threads)
    assert running.node.store.index.counts()[2] == 3
    _wait_no_association(running)


def test_peer_abort_ends_the_association(start_node) -> None:
    running = start_node()
    assoc = associate(running.port)
    assert assoc.is_established
    assert int(assoc.send_c_store(ct_slice(SeriesSpec(), 0)).Status) == StoreStatus.SUCCESS
    assoc.abort()
    _wait_no_association(running)

