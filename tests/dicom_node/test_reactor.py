"""How the node runs associations: requests served on arrival, releases and aborts still end them."""

from __future__ import annotations

import struct
import threading
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage
from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF

from dicom_node.conformance import StoreStatus
from dicom_node.reactor import NodeAssociation, _StoreReceiver
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



SLOW_INSTANCE_UID = "1.2.826.0.1.3680043.8.498.99"


@pytest.fixture
def direct_serves(monkeypatch) -> list[str]:
    """SOP Instance UIDs of the C-STORE requests the node served on its direct path, in order."""
    served: list[str] = []
    original = _StoreReceiver._serve

    def _recording(self: _StoreReceiver, assoc_socket) -> None:
        served.append(self._request[0].sop_instance_uid)
        original(self, assoc_socket)

    monkeypatch.setattr(_StoreReceiver, "_serve", _recording)
    return served


def test_stores_take_the_direct_path_in_many_pdus_between_echoes(start_node, direct_serves) -> None:
    running = start_node(max_pdu_size=4096)  # each 32 KB slice arrives in about nine PDUs
    spec = SeriesSpec(rows=128, columns=128)
    slices = [ct_slice(spec, k, fill=100 * k) for k in range(3)]
    assoc = associate(running.port)
    assert assoc.is_established
    try:
        statuses = [int(assoc.send_c_echo().Status)]
        statuses += [int(assoc.send_c_store(ds).Status) for ds in slices[:2]]
        statuses += [int(assoc.send_c_echo().Status), int(assoc.send_c_store(slices[2]).Status)]
    finally:
        assoc.release()
    assert statuses == [0] * 5
    assert direct_serves == [ds.SOPInstanceUID for ds in slices]
    ready = running.next_series()
    for ds, path in zip(slices, ready.paths, strict=True):
        stored = dcmread(path)
        assert stored.SOPInstanceUID == ds.SOPInstanceUID and stored.PixelData == ds.PixelData
        assert [e.tag for e in stored] == [e.tag for e in ds]


def test_with_debug_logging_pynetdicom_serves_every_message(start_node, direct_serves) -> None:
    running = start_node(debug=True)
    assoc = associate(running.port)
    try:
        status = int(assoc.send_c_store(ct_slice(SeriesSpec(), 0)).Status)
    finally:
        assoc.release()
    assert status == StoreStatus.SUCCESS and direct_serves == []
    assert running.node.store.index.counts()[2] == 1


def _store_request_pdus(context_id: int, dataset: bytes, max_pdu: int = 16384) -> list[bytes]:
    request = C_STORE()
    request.MessageID, request.Priority = 1, 0
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = SLOW_INSTANCE_UID
    request.DataSet = BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = []
    for primitive in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


def test_a_command_fragment_inside_a_dataset_aborts_and_stores_nothing(start_node, direct_serves) -> None:
    running = start_node()
    assoc = associate(running.port)
    assert assoc.is_established
    context_id = assoc._get_valid_context(CTImageStorage, "", "scu").context_id
    command, first_data, *_ = _store_request_pdus(context_id, b"\x00" * 40000)
    stray = struct.pack(">BBLLBB", 0x04, 0, 8, 4, context_id, 0x01) + b"\x00\x00"  # a command fragment
    for pdu in (command, first_data, stray):
        assoc.dul.socket.send(pdu)
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert assoc.is_aborted
    _wait_no_association(running)
    assert direct_serves == [] and running.node.store.index.counts() == (0, 0, 0)
    follow_up = associate(running.port)
    try:
        assert int(follow_up.send_c_store(ct_slice(SeriesSpec(), 0)).Status) == StoreStatus.SUCCESS
    finally:
        follow_up.release()


def test_a_dataset_slower_than_the_network_timeout_is_no_idle_peer(start_node, direct_serves) -> None:
    running = start_node(network_timeout_s=1.0, max_pdu_size=16384)
    assoc = associate(running.port)
    assert assoc.is_established
    responses: list[int] = []
    assoc.bind(evt.EVT_DIMSE_RECV, lambda event: responses.append(int(event.message.command_set.Status)))
    context = assoc._get_valid_context(CTImageStorage, "", "scu")
    ds = ct_slice(SeriesSpec(rows=256, columns=256), 0, sop_uid=SLOW_INSTANCE_UID)
    syntax = context.transfer_syntax[0]
    dataset = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian)
    pdus = _store_request_pdus(context.context_id, dataset, max_pdu=16384)
    assert len(pdus) >= 9
    started = time.monotonic()
    for pdu in pdus:  # each PDU well within the timeout, the whole request over twice as long
        assoc.dul.socket.send(pdu)
        time.sleep(0.25)
    assert time.monotonic() - started > 2.0
    deadline = time.monotonic() + 5
    while not responses and time.monotonic() < deadline:
        time.sleep(0.02)
    assoc.release()
    assert responses == [StoreStatus.SUCCESS] and direct_serves == [SLOW_INSTANCE_UID]
    assert running.node.store.index.counts()[2] == 1
