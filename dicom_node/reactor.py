"""How the node's associations run: pynetdicom's acceptor, with C-STORE requests served on arrival.

pynetdicom runs every association on two threads that poll each other: the DICOM
Upper Layer (DUL) thread reads PDUs, decodes each into item objects and queues
them; the association thread polls (every 1 ms) for decoded DIMSE messages,
runs the request's handler and queues the response for the DUL thread to encode
and send on a later turn. A C-STORE SCU such as dcmtk's ``storescu`` sends the
next request only once it has the response, so each instance pays all of that in
full: more than the write and fsync of a CT slice.

Here, for the association acceptor only:

* once the association is established, P-DATA-TF PDUs are read on the DUL
  thread by :class:`_StoreReceiver`: a C-STORE request on an accepted context
  of its SOP class is assembled from its fragments (:mod:`dicom_node.pdata`),
  ``EVT_C_STORE`` is triggered with a real ``C_STORE`` primitive there, and the
  response PDU is sent right away; the request's remaining PDUs are read without
  a turn of the reactor loop. Nothing else can arrive meanwhile: the node
  negotiates no asynchronous operations (PS3.7 D.3.3.3), so the peer waits for
  the response before it sends another request. Every other message (C-ECHO,
  anything unexpected) is handed to pynetdicom whole, and is served on the DUL
  thread as well if it is a C-ECHO or C-STORE request, else by the association
  thread as usual;
* the idle DUL thread waits until its socket is readable (at most the same
  1 ms) instead of sleeping blind;
* a PDU is read straight into one buffer of its size (pynetdicom reads 4 KiB
  at a time and concatenates);
* :func:`reuse_freed_buffers` lets the C library reuse the per-instance buffers.

Negotiation, release, abort, timeouts and the events and handlers are
pynetdicom's own. With pynetdicom's per-PDU or per-DIMSE notification handlers
bound (debug logging), every message takes pynetdicom's path so they see it all.
The module relies on pynetdicom internals of the installed version (3.0):
``RequestHandler``'s association factory, ``DULServiceProvider._run_loop_delay``
and ``_read_pdu_data``, the DIMSE message queue and ``Association._serve_request``.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import select
import socket
import ssl
import struct
import threading
from copy import deepcopy
from datetime import datetime
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from dicom_node.pdata import (
    PDU_HEADER_LENGTH,
    PDU_P_DATA_TF,
    Fragment,
    ProtocolError,
    StoreCommand,
    command_pdus,
    has_dataset,
    read_command,
    split_pdvs,
    store_command,
    store_response,
)

if TYPE_CHECKING:
    from pynetdicom import AE

logger = logging.getLogger(__name__)

# Longest idle wait of the DUL thread, s: pynetdicom's own loop delay, so anything
# queued for sending by another thread (A-RELEASE-RP, A-ABORT) waits no longer than before.
IDLE_WAIT_S = 0.001


class _SocketWaitingDUL(DULServiceProvider):
    """A DUL that serves C-STORE requests from the PDUs it reads and waits on its socket when idle.

    pynetdicom's reactor calls ``time.sleep(self._run_loop_delay)`` when it had
    nothing to do; reading the attribute here waits on the socket (up to
    :data:`IDLE_WAIT_S`) and leaves nothing to sleep. P-DATA-TF PDUs go to a
    :class:`_StoreReceiver` first (:meth:`_read_pdu_data`).
    """

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._stores = _StoreReceiver(assoc)

    @property
    def _run_loop_delay(self) -> float:
        if threading.current_thread() is not self:  # e.g. stop_dul() waiting for this thread to end
            return IDLE_WAIT_S
        assoc_socket = self.socket
        sock = assoc_socket.socket if assoc_socket is not None else None
        if sock is None:
            return IDLE_WAIT_S
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return 0.0  # decrypted bytes already buffered: select() would not see them
        try:
            select.select([sock], [], [], IDLE_WAIT_S)
        except (OSError, ValueError):  # closed meanwhile: the reactor finds out on its next read
            return IDLE_WAIT_S
        return 0.0

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        """pynetdicom's constructor sets its delay; the wait above replaces it."""

    def _read_pdu_data(self) -> None:
        """Read a PDU; C-STORE traffic of an established association is served here directly.

        The events raised for a short read, an unknown PDU type or an
        undecodable PDU are pynetdicom's (``_read_pdu_data``). A P-DATA-TF PDU
        in Sta6 goes to the :class:`_StoreReceiver` first, which hands back
        whatever is not a C-STORE request for pynetdicom to decode as usual;
        while a C-STORE request is incomplete its next PDU is read right away,
        without a turn of the reactor loop.
        """
        assoc_socket = cast(_ChunkedSocket, self.socket)
        while True:
            pdu = self._read_pdu(assoc_socket)
            if isinstance(pdu, str):
                self.event_queue.put(pdu)
                return
            if pdu[0] != PDU_P_DATA_TF or self.state_machine.current_state != "Sta6":
                self._deliver(pdu)
                return
            for passed in self._stores.receive(pdu, assoc_socket):
                self._deliver(passed)
            if not self._stores.in_request:
                return
            # as pynetdicom's loop does after each PDU: a long dataset is no idle peer
            self._idle_timer.restart()

    @staticmethod
    def _read_pdu(assoc_socket: _ChunkedSocket) -> bytearray | str:
        """The next whole PDU, or the event to raise instead (Evt17 closed, Evt19 unknown type)."""
        try:
            header = assoc_socket.recv(PDU_HEADER_LENGTH)
            if len(header) < PDU_HEADER_LENGTH:
                return "Evt17"
            pdu_type, _, length = struct.unpack(">BBL", header)
            if not 0x01 <= pdu_type <= 0x07:
                logger.error("unknown PDU type received 0x%02X", pdu_type)
                return "Evt19"
            pdu = bytearray(PDU_HEADER_LENGTH + length)
            pdu[:PDU_HEADER_LENGTH] = header
            if assoc_socket.recv_into(memoryview(pdu)[PDU_HEADER_LENGTH:]) < length:
                logger.error("the peer closed the connection inside a PDU")
                return "Evt17"
        except (OSError, TimeoutError):
            logger.exception("connection closed before the entire PDU was received")
            return "Evt17"
        return pdu

    def _deliver(self, pdu: bytearray) -> None:
        """Decode `pdu` and queue its event, as pynetdicom's reader does."""
        try:
            decoded, event = self._decode_pdu(pdu)
        except Exception:
            logger.exception("unable to decode the received PDU data")
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(decoded)


class _StoreReceiver:
    """Assembles C-STORE requests from P-DATA-TF PDUs and answers them, on the DUL thread.

    pynetdicom turns each PDU into item objects, each message into a primitive
    and each response into a queued primitive the reactor encodes on a later
    turn; this class reads the fragments (:func:`dicom_node.pdata.split_pdvs`)
    and, once a C-STORE request's dataset is complete, triggers ``EVT_C_STORE``
    with a real ``C_STORE`` primitive and context, exactly as pynetdicom's
    Storage SCP does, then sends the response PDU itself. A message that is not
    a C-STORE request on an accepted context of its SOP class (C-ECHO, or
    anything unexpected) is handed back whole to pynetdicom. So is everything
    while pynetdicom's own per-PDU or per-DIMSE notification handlers are
    bound (debug logging): they then see every message.
    """

    def __init__(self, assoc: Association) -> None:
        self._assoc = assoc
        self._enabled: bool | None = None
        self._reset()

    def _reset(self) -> None:
        self._held: list[bytearray] = []  # PDUs of a message not yet known to be a C-STORE request
        self._command = bytearray()
        self._request: tuple[StoreCommand, Any] | None = None  # (command, accepted context)
        self._dataset: list[memoryview] = []
        self._passing_until_dataset_end = False

    @property
    def in_request(self) -> bool:
        """Whether part of a C-STORE request served here has been read and the rest is awaited."""
        return self._request is not None or bool(self._held)

    def _fast_path_allowed(self) -> bool:
        if self._enabled is None:
            assoc = self._assoc
            handler, _ = cast(tuple[Any, Any], assoc.get_handlers(evt.EVT_C_STORE))
            observers = (evt.EVT_PDU_RECV, evt.EVT_DATA_RECV, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT)
            self._enabled = handler is not None and not any(assoc.get_handlers(e) for e in observers)
        return self._enabled

    def receive(self, pdu: bytearray, assoc_socket: AssociationSocket) -> list[bytearray]:
        """Take one P-DATA-TF PDU; return the PDUs pynetdicom must decode instead (in order).

        Raises
        ------
        ProtocolError
            Fragments out of order within a C-STORE request being served here;
            pynetdicom's reactor then aborts the association.
        """
        if not self._fast_path_allowed():
            return [pdu]
        if self._passing_until_dataset_end:
            if any(not f.is_command and f.is_last for f in split_pdvs(memoryview(pdu)[6:])):
                self._reset()
            return [pdu]
        self._held.append(pdu)
        try:
            fragments = split_pdvs(memoryview(pdu)[6:])
        except ProtocolError:
            return self._pass_held()  # pynetdicom decides what malformed framing costs
        for index, fragment in enumerate(fragments):
            if self._request is None:
                if not fragment.is_command:
                    return self._pass_held()
                self._command += fragment.data
                if fragment.is_last and not self._decide(fragment.context_id, fragments[index + 1:]):
                    return self._pass_held()
            elif fragment.is_command or fragment.context_id != self._request[1].context_id:
                self._reset()
                raise ProtocolError("a command fragment or another presentation context "
                                    "inside a C-STORE request's dataset (PS3.8 9.3.5.1)")
            else:
                self._dataset.append(fragment.data)
                if fragment.is_last:
                    self._serve(assoc_socket)
        return []

    def _decide(self, context_id: int, rest: list[Fragment]) -> bool:
        """The command is complete: serve it here (True) or let pynetdicom have the message."""
        try:
            elements = read_command(self._command)
        except ProtocolError:
            return False
        command = store_command(elements)
        context = self._assoc._accepted_cx.get(context_id)
        if command is not None and context is not None and context.abstract_syntax == command.sop_class_uid:
            self._request = (command, context)
            self._held = []
            return True
        # pynetdicom's message: the dataset (if any) continues over later PDUs until its last fragment
        ends_here = not has_dataset(elements) or any(not f.is_command and f.is_last for f in rest)
        self._passing_until_dataset_end = not ends_here
        return False

    def _pass_held(self) -> list[bytearray]:
        held, passing = self._held, self._passing_until_dataset_end
        self._reset()
        self._passing_until_dataset_end = passing
        return held

    def _serve(self, assoc_socket: AssociationSocket) -> None:
        command, context = cast(tuple[StoreCommand, Any], self._request)
        request = C_STORE()
        request.MessageID = command.message_id
        request.AffectedSOPClassUID = command.sop_class_uid
        request.AffectedSOPInstanceUID = command.sop_instance_uid
        request.Priority = command.priority if command.priority in (0, 1, 2) else 0
        request.MoveOriginatorApplicationEntityTitle = command.move_originator_ae
        request.MoveOriginatorMessageID = command.move_originator_id
        request.DataSet = BytesIO(b"".join(self._dataset))
        self._reset()
        status, comment = _handler_status(self._assoc, request, context)
        if not self._assoc.is_established:
            return
        response = store_response(message_id=command.message_id, sop_class_uid=command.sop_class_uid,
                                  sop_instance_uid=command.sop_instance_uid, status=status,
                                  error_comment=comment)
        peer_max = self._assoc.requestor.maximum_length or 0
        for pdu in command_pdus(cast(int, context.context_id), response, peer_max):
            assoc_socket.send(pdu)


def _handler_status(assoc: Association, request: C_STORE, context: Any) -> tuple[int, str]:
    """Trigger EVT_C_STORE; the status and error comment to answer.

    The handler's return value is read by pynetdicom's own Storage SCP rules
    (``validate_status``: a status dataset or an int, 0xC001 / 0xC002 when it is
    neither); an exception in the handler answers 0xC211, as pynetdicom's does.
    """
    try:
        result = evt.trigger(assoc, evt.EVT_C_STORE, {"request": request, "context": context.as_tuple})
    except Exception:
        logger.exception("Exception in handler bound to 'evt.EVT_C_STORE'")
        return 0xC211, ""
    response = StorageServiceClass(assoc).validate_status(cast(Any, result), C_STORE())
    return int(cast(int, response.Status)), str(response.ErrorComment or "")


class _ChunkedSocket(AssociationSocket):
    """pynetdicom's association socket, reading straight into one buffer of the PDU's size.

    pynetdicom's reads 4096 bytes per call and concatenates: ~130 calls (and GIL
    hand-overs) per 512 x 512 CT slice.
    """

    def recv(self, nr_bytes: int) -> bytearray:
        """Read `nr_bytes`, or fewer if the peer closes the connection (as pynetdicom's does)."""
        data = bytearray(nr_bytes)
        with memoryview(data) as view:
            got = self.recv_into(view)
        del data[got:]
        return data

    def recv_into(self, view: memoryview) -> int:
        """Fill `view`; return the bytes read (fewer only if the peer closed the connection)."""
        sock = cast(socket.socket, self.socket)
        got, size = 0, len(view)
        while got < size:
            count = sock.recv_into(view[got:])
            if not count:
                break
            got += count
        return got


class _InlineRequests(queue.Queue[Any]):
    """The DIMSE message queue of an association: serves C-STORE / C-ECHO requests on arrival.

    pynetdicom puts each completely decoded message here from the DUL thread;
    storage and verification requests on an accepted context are served right
    there, anything else is queued for the association thread as usual.
    """

    def __init__(self, assoc: NodeAssociation) -> None:
        super().__init__()
        self._assoc = assoc

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        context_id, message = item
        assoc = self._assoc
        if (
            isinstance(message, (C_STORE, C_ECHO))
            and message.is_valid_request
            and any(cx.context_id == context_id for cx in assoc.accepted_contexts)
        ):
            assoc._serve_request(message, context_id)
            return
        super().put(item, block, timeout)


class NodeAssociation(Association):
    """A pynetdicom acceptor association using the waits and dispatch of this module."""

    def __init__(self, ae: AE, mode: str) -> None:
        super().__init__(ae, mode)
        self.dul = _SocketWaitingDUL(self)  # before the socket exists: it queues its first event there
        self.acse_timeout = self.acse_timeout  # the timers live on the DUL: set them on this one
        self.network_timeout = self.network_timeout
        self.dimse.msg_queue = _InlineRequests(self)

    def kill(self) -> None:
        """Stop the association; from the DUL thread (a request served inline), without waiting on it.

        pynetdicom's ``kill`` waits for the DUL thread to stop, which that thread
        cannot do while it is the one waiting; the association thread finishes
        the job when its reactor loop ends (:meth:`_run_reactor`).
        """
        if threading.current_thread() is self.dul:
            self._reactor_checkpoint.set()
            self._kill = True
            self.is_established = False
            return
        super().kill()

    def _run_reactor(self) -> None:
        super()._run_reactor()
        if self.dul.is_alive():  # killed from the DUL thread: stop it from here
            super().kill()


class NodeRequestHandler(RequestHandler):
    """Builds each incoming association as a :class:`NodeAssociation`.

    Mirrors pynetdicom's own factory (``RequestHandler._create_association``);
    only the association class differs.
    """

    def _create_association(self) -> Association:
        ae, server = self.ae, self.server
        assoc = NodeAssociation(ae, MODE_ACCEPTOR)
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(_ChunkedSocket(assoc, client_socket=cast(Any, self.request)))
        acceptor = assoc.acceptor
        acceptor.maximum_length = ae.maximum_pdu_size
        acceptor.ae_title = server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = ae.implementation_class_uid
        acceptor.implementation_version_name = ae.implementation_version_name
        acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        for event, bound in server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *cast(tuple[Any, Any], bound))
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in cast(list[tuple[Any, Any]], bound):
                    assoc.bind(event, handler, args)
        return assoc


class NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with :class:`NodeRequestHandler`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = NodeRequestHandler
        super().__init__(*args, **kwargs)


# glibc mallopt() parameters (malloc.h) and the values the node sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def reuse_freed_buffers() -> bool:
    """Let glibc keep freed buffers of up to 8 MiB for reuse instead of unmapping them (process-wide).

    Each C-STORE allocates a few buffers of 0.1-1 MiB (PDUs, the dataset, the
    file). By default glibc maps blocks that large afresh and unmaps them when
    freed, or trims the heap top above 1-2 MiB, so every CT slice pays page
    faults on fresh zeroed pages and unmap shootdowns across threads, about
    0.2-0.4 ms of a ~2 ms cycle here. With these settings such blocks come from
    the heap and up to 64 MiB of free heap is kept. Returns False (and changes
    nothing) where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def start_server(
    ae: AE, address: tuple[str, int], *, ssl_context: ssl.SSLContext | None, evt_handlers: list[Any]
) -> ThreadedAssociationServer:
    """Listen on `address` in a background thread, like ``AE.start_server(..., block=False)``."""
    server = ae.make_server(address, ssl_context=ssl_context, evt_handlers=evt_handlers,
                            server_class=NodeServer)
    thread = threading.Thread(target=make_target(server.serve_forever),
                              name=f"AcceptorServer@{datetime.now():%Y%m%d%H%M%S}", daemon=True)
    thread.start()
    ae._servers.append(server)  # AE.shutdown() and the server's own shutdown() expect it there
    return server
