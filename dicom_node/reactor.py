"""How the node's associations run: pynetdicom's acceptor with two waits taken out of each C-STORE.

pynetdicom runs every association on two threads that poll each other: the DICOM
Upper Layer (DUL) thread reads PDUs and, when it has nothing to do, sleeps 1 ms;
the association thread sleeps 1 ms between looks at the queue of decoded DIMSE
messages, then runs the request's handler and queues the response for the DUL
thread to send. A C-STORE SCU such as dcmtk's ``storescu`` sends the next request
only once it has the response, so each instance pays those waits and thread
hand-overs in full (about 2-4 ms, more than the write and fsync of a CT slice).

Here, for the association acceptor only:

* a C-STORE or C-ECHO request on an accepted presentation context is served on
  the DUL thread as soon as its last fragment is decoded (the response is then
  sent by the same thread on its next turn). Nothing else can arrive meanwhile:
  the node negotiates no asynchronous operations (PS3.7 D.3.3.3), so the peer
  waits for this response before sending another request. Other messages go to
  pynetdicom's association thread as before;
* the idle DUL thread waits until its socket is readable (at most the same
  1 ms) instead of sleeping blind;
* a PDU is read from the socket in 64 KiB pieces rather than 4 KiB ones.

The events, handlers, statuses and negotiation are pynetdicom's own; only where
a request is dispatched and how the idle loop waits differ. The module relies on
pynetdicom internals of the installed version (3.0): ``RequestHandler``'s
association factory, ``DULServiceProvider._run_loop_delay``, the DIMSE message
queue and ``Association._serve_request``.
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
from copy import deepcopy
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

if TYPE_CHECKING:
    from pynetdicom import AE

# Largest single socket read, bytes: pynetdicom reads 4096 at a time, ~130 reads (and GIL
# hand-overs) per 512 x 512 CT slice; below 128 KiB, so the buffer is not an mmap each time.
READ_CHUNK = 65536

# Longest idle wait of the DUL thread, s: pynetdicom's own loop delay, so anything
# queued for sending by another thread (A-RELEASE-RP, A-ABORT) waits no longer than before.
IDLE_WAIT_S = 0.001


class _SocketWaitingDUL(DULServiceProvider):
    """A DUL whose idle pause ends as soon as its socket is readable.

    pynetdicom's reactor calls ``time.sleep(self._run_loop_delay)`` when it had
    nothing to do; reading the attribute here waits on the socket (up to
    :data:`IDLE_WAIT_S`) and leaves nothing to sleep.
    """

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


class _ChunkedSocket(AssociationSocket):
    """pynetdicom's association socket, reading up to :data:`READ_CHUNK` bytes per call."""

    def recv(self, nr_bytes: int) -> bytearray:
        """Read `nr_bytes`, or fewer if the peer closes the connection (as pynetdicom's does)."""
        sock = cast(socket.socket, self.socket)
        data = bytearray()
        while len(data) < nr_bytes:
            chunk = sock.recv(min(nr_bytes - len(data), READ_CHUNK))
            if not chunk:
                break
            data += chunk
        return data


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
