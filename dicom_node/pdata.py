"""P-DATA-TF framing and the C-STORE command sets, encoded and decoded directly.

The node's C-STORE receive path (:mod:`dicom_node.reactor`) reads P-DATA-TF
PDUs itself: splitting a PDU into presentation data values (PS3.8 9.3.5),
reading the request's command set and writing the response's (PS3.7 9.3.1,
command sets are always Implicit VR Little Endian, PS3.7 6.3.1) are plain byte
work, done here without building per-fragment objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PDU_P_DATA_TF = 0x04
PDU_HEADER_LENGTH = 6

COMMAND_STORE_RQ = 0x0001
COMMAND_STORE_RSP = 0x8001
NO_DATASET = 0x0101  # Command Data Set Type (0000,0800) when no dataset follows (PS3.7 E.1)

_CONTROL_COMMAND = 0x01  # message control header bit 0: command fragment (PS3.8 E.2)
_CONTROL_LAST = 0x02  # bit 1: last fragment of the command or of the dataset

# Command set elements (PS3.7 E.1): group 0000, element number -> keyword.
_GROUP_LENGTH = 0x0000
_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_MESSAGE_ID_RESPONDED = 0x0120
_PRIORITY = 0x0700
_DATASET_TYPE = 0x0800
_STATUS = 0x0900
_ERROR_COMMENT = 0x0902
_AFFECTED_SOP_INSTANCE = 0x1000
_MOVE_ORIGINATOR_AE = 0x1030
_MOVE_ORIGINATOR_ID = 0x1031


class ProtocolError(ValueError):
    """Bytes that break PS3.8 framing or the PS3.7 command set encoding."""


@dataclass(frozen=True)
class Fragment:
    """One presentation data value: a fragment of a command set or of a dataset.

    ``data`` is a view into the PDU it came from (no copy).
    """

    context_id: int
    is_command: bool
    is_last: bool
    data: memoryview


def split_pdvs(body: memoryview) -> list[Fragment]:
    """The presentation data values of a P-DATA-TF PDU body (after its 6-byte header).

    Raises
    ------
    ProtocolError
        An item length that overruns the PDU or is too short for its header.
    """
    fragments = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            raise ProtocolError(f"P-DATA-TF: {end - offset} trailing byte(s), too few for a PDV item")
        (item_length,) = struct.unpack_from(">L", body, offset)
        if item_length < 2 or offset + 4 + item_length > end:
            raise ProtocolError(f"P-DATA-TF: PDV item length {item_length} at offset {offset} "
                                f"does not fit the PDU body of {end} bytes")
        context_id, control = body[offset + 4], body[offset + 5]
        fragments.append(Fragment(context_id, bool(control & _CONTROL_COMMAND),
                                  bool(control & _CONTROL_LAST),
                                  body[offset + 6: offset + 4 + item_length]))
        offset += 4 + item_length
    if not fragments:
        raise ProtocolError("P-DATA-TF without any PDV item")
    return fragments


def read_command(data: bytes | bytearray) -> dict[int, bytes]:
    """Element number -> raw value of an Implicit VR Little Endian command set (group 0000).

    Raises
    ------
    ProtocolError
        An element outside group 0000 or a length that overruns the data.
    """
    elements: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise ProtocolError(f"command set: {end - offset} trailing byte(s)")
        group, element, length = struct.unpack_from("<HHL", data, offset)
        if group != 0x0000:
            raise ProtocolError(f"command set: element ({group:04X},{element:04X}) outside group 0000")
        if offset + 8 + length > end:
            raise ProtocolError(f"command set: element (0000,{element:04X}) length {length} overruns")
        elements[element] = bytes(data[offset + 8: offset + 8 + length])
        offset += 8 + length
    return elements


def _uid(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", "replace")


def _us(elements: dict[int, bytes], element: int) -> int | None:
    value = elements.get(element)
    if value is None or len(value) != 2:
        return None
    return int.from_bytes(value, "little")


@dataclass(frozen=True)
class StoreCommand:
    """The parameters of a C-STORE-RQ (PS3.7 9.3.1.1)."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    move_originator_ae: str | None
    move_originator_id: int | None


def store_command(elements: dict[int, bytes]) -> StoreCommand | None:
    """The C-STORE-RQ in `elements`, or None if they are another command or lack a required field.

    A C-STORE-RQ without a dataset (Command Data Set Type 0101H) is not a valid
    request either and gives None.
    """
    message_id = _us(elements, _MESSAGE_ID)
    if (
        _us(elements, _COMMAND_FIELD) != COMMAND_STORE_RQ
        or message_id is None
        or _us(elements, _DATASET_TYPE) in (None, NO_DATASET)
        or _AFFECTED_SOP_CLASS not in elements
        or _AFFECTED_SOP_INSTANCE not in elements
    ):
        return None
    originator = elements.get(_MOVE_ORIGINATOR_AE)
    return StoreCommand(
        message_id=message_id,
        sop_class_uid=_uid(elements[_AFFECTED_SOP_CLASS]),
        sop_instance_uid=_uid(elements[_AFFECTED_SOP_INSTANCE]),
        priority=_us(elements, _PRIORITY) or 0,
        move_originator_ae=originator.decode("ascii", "replace").strip() if originator else None,
        move_originator_id=_us(elements, _MOVE_ORIGINATOR_ID),
    )


def has_dataset(elements: dict[int, bytes]) -> bool:
    """Whether a dataset follows the command set (Command Data Set Type other than 0101H)."""
    return _us(elements, _DATASET_TYPE) not in (None, NO_DATASET)


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii", "replace")
    return raw + pad if len(raw) % 2 else raw


def store_response(
    *, message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int, error_comment: str = ""
) -> bytes:
    """The encoded command set of a C-STORE-RSP (PS3.7 9.3.1.2), no dataset."""
    body = b"".join((
        _element(_AFFECTED_SOP_CLASS, _padded(sop_class_uid, b"\x00")),
        _element(_COMMAND_FIELD, struct.pack("<H", COMMAND_STORE_RSP)),
        _element(_MESSAGE_ID_RESPONDED, struct.pack("<H", message_id)),
        _element(_DATASET_TYPE, struct.pack("<H", NO_DATASET)),
        _element(_STATUS, struct.pack("<H", status)),
        _element(_ERROR_COMMENT, _padded(error_comment[:64], b" ")) if error_comment else b"",
        _element(_AFFECTED_SOP_INSTANCE, _padded(sop_instance_uid, b"\x00")),
    ))
    return _element(_GROUP_LENGTH, struct.pack("<L", len(body))) + body


def command_pdus(context_id: int, command: bytes, max_pdu_length: int) -> list[bytes]:
    """P-DATA-TF PDUs carrying `command` on `context_id`, within the peer's maximum PDU length.

    ``max_pdu_length`` is the peer's Maximum Length Received (PS3.8 D.1), the
    largest PDU variable field it accepts; 0 means no limit.
    """
    room = len(command) if max_pdu_length == 0 else max(max_pdu_length - 6, 1)
    pdus = []
    for start in range(0, len(command), room):
        piece = command[start: start + room]
        control = _CONTROL_COMMAND | (_CONTROL_LAST if start + room >= len(command) else 0)
        item = struct.pack(">LBB", len(piece) + 2, context_id, control) + piece
        pdus.append(struct.pack(">BBL", PDU_P_DATA_TF, 0, len(item)) + item)
    return pdus
