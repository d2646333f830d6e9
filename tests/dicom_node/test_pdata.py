"""P-DATA-TF framing and C-STORE command sets, checked against pynetdicom's own encoder and decoder."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicom_node.pdata import (
    PDU_P_DATA_TF,
    ProtocolError,
    command_pdus,
    has_dataset,
    read_command,
    split_pdvs,
    store_command,
    store_response,
)

INSTANCE_UID = "1.2.826.0.1.3680043.8.498.1234567.89"


def _pynetdicom_store_request(dataset: bytes, max_pdu: int, **extra: object) -> list[bytes]:
    """A C-STORE-RQ as pynetdicom encodes it: P-DATA-TF PDUs (header included)."""
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = INSTANCE_UID
    request.Priority = 2
    for keyword, value in extra.items():
        setattr(request, keyword, value)
    request.DataSet = BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = []
    for primitive in message.encode_msg(context_id=3, max_pdu_length=max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


def test_a_pynetdicom_store_request_is_read_back_whole() -> None:
    dataset = bytes(range(256)) * 40 + b"\x01\x02"  # 10 242 bytes, in fragments of < 4 KB
    pdus = _pynetdicom_store_request(dataset, max_pdu=4096, MoveOriginatorApplicationEntityTitle="MOVER",
                                     MoveOriginatorMessageID=11)
    assert len(pdus) >= 4 and all(pdu[0] == PDU_P_DATA_TF for pdu in pdus)
    fragments = [f for pdu in pdus for f in split_pdvs(memoryview(pdu)[6:])]
    assert {f.context_id for f in fragments} == {3}
    assert all(len(f.data) <= 4096 - 6 for f in fragments)
    commands = [f for f in fragments if f.is_command]
    data = [f for f in fragments if not f.is_command]
    assert commands[-1].is_last and data[-1].is_last and not any(f.is_last for f in data[:-1])
    elements = read_command(b"".join(bytes(f.data) for f in commands))
    assert has_dataset(elements)
    command = store_command(elements)
    assert command is not None
    assert (command.message_id, command.sop_class_uid, command.sop_instance_uid, command.priority) == (
        7, CTImageStorage, INSTANCE_UID, 2)
    assert (command.move_originator_ae, command.move_originator_id) == ("MOVER", 11)
    assert b"".join(bytes(f.data) for f in data) == dataset


def test_other_commands_are_not_store_requests() -> None:
    pdus = _pynetdicom_store_request(b"\x00" * 10, max_pdu=0)
    command = b"".join(bytes(f.data) for f in split_pdvs(memoryview(pdus[0])[6:]) if f.is_command)
    elements = read_command(command)
    assert store_command(elements) is not None
    echo = elements | {0x0100: struct.pack("<H", 0x0030), 0x0800: struct.pack("<H", 0x0101)}
    assert store_command(echo) is None and not has_dataset(echo)
    without_instance = {k: v for k, v in elements.items() if k != 0x1000}
    assert store_command(without_instance) is None
    no_dataset = elements | {0x0800: struct.pack("<H", 0x0101)}
    assert store_command(no_dataset) is None


@pytest.mark.parametrize(("status", "comment"), [(0x0000, ""), (0xA900, "SOP Instance UID differs"),
                                                  (0xC230, "x" * 80)])
def test_store_response_decodes_in_pynetdicom(status: int, comment: str) -> None:
    encoded = store_response(message_id=7, sop_class_uid=CTImageStorage, sop_instance_uid=INSTANCE_UID,
                             status=status, error_comment=comment)
    (pdu,) = command_pdus(5, encoded, max_pdu_length=16384)
    decoded = P_DATA_TF()
    decoded.decode(pdu)
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[item.presentation_context_id, item.presentation_data_value]
                                              for item in decoded.presentation_data_value_items]
    message = C_STORE_RSP()
    assert message.decode_msg(primitive)  # True: the message is complete
    response = message.message_to_primitive()
    assert isinstance(response, C_STORE)
    assert (response.MessageIDBeingRespondedTo, response.Status) == (7, status)
    assert (response.AffectedSOPClassUID, response.AffectedSOPInstanceUID) == (CTImageStorage, INSTANCE_UID)
    assert (response.ErrorComment or "") == comment[:64]
    assert message.command_set.CommandGroupLength == len(encoded) - 12


def test_command_pdus_respect_the_peers_maximum_length() -> None:
    encoded = store_response(message_id=1, sop_class_uid=CTImageStorage, sop_instance_uid=INSTANCE_UID,
                             status=0)
    pdus = command_pdus(1, encoded, max_pdu_length=40)
    assert len(pdus) == -(-len(encoded) // 34)
    assert all(struct.unpack(">L", pdu[2:6])[0] <= 40 for pdu in pdus)
    fragments = [f for pdu in pdus for f in split_pdvs(memoryview(pdu)[6:])]
    assert [f.is_last for f in fragments] == [False] * (len(pdus) - 1) + [True]
    assert all(f.is_command for f in fragments)
    assert b"".join(bytes(f.data) for f in fragments) == encoded
    assert command_pdus(1, encoded, max_pdu_length=0) == command_pdus(1, encoded, max_pdu_length=1 << 20)


def test_malformed_framing_is_a_protocol_error() -> None:
    item = struct.pack(">LBB", 6, 1, 0x03) + b"abcd"
    assert len(split_pdvs(memoryview(item + item))) == 2
    with pytest.raises(ProtocolError, match="does not fit"):
        split_pdvs(memoryview(struct.pack(">LBB", 60, 1, 0x03) + b"abcd"))
    with pytest.raises(ProtocolError, match="does not fit"):
        split_pdvs(memoryview(struct.pack(">LBB", 1, 1, 0x03) + b"abcd"))
    with pytest.raises(ProtocolError, match="trailing"):
        split_pdvs(memoryview(item + b"\x00\x00"))
    with pytest.raises(ProtocolError, match="without any PDV"):
        split_pdvs(memoryview(b""))
    with pytest.raises(ProtocolError, match="outside group 0000"):
        read_command(struct.pack("<HHL", 0x0008, 0x0016, 2) + b"1\x00")
    with pytest.raises(ProtocolError, match="overruns"):
        read_command(struct.pack("<HHL", 0x0000, 0x0100, 20) + b"\x01\x00")
