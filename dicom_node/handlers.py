"""pynetdicom event handlers of the node; every dependency is a handler argument.

The C-STORE handler never raises into pynetdicom and never waits on downstream
work: it validates, stores durably, hands the stored instance to the assembler's
queue and returns a status (PS3.4 B.2.3). Association-level handlers log each
association and enforce the IP part of the calling AE allow-list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_node.assembler import Assembler
from dicom_node.config import NodeConfig
from dicom_node.conformance import StoreStatus
from dicom_node.store import Store, file_meta_bytes
from dicom_node.validation import Rejection, validate_instance

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ: rejected-permanent, by the service user, calling AE title not recognised (PS3.8 9.3.4).
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)


def _peer(assoc: Association) -> str:
    requestor = assoc.requestor
    return f"{requestor.ae_title.strip() or '?'}@{requestor.address}:{requestor.port}"


class AssociationLog:
    """Counts the outcome of each C-STORE per association and logs a line when it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, Counter[str]] = {}

    def count(self, assoc: Association, outcome: str) -> None:
        """Record one C-STORE outcome on `assoc`."""
        with self._lock:
            self._counts.setdefault(id(assoc), Counter())[outcome] += 1

    def finish(self, assoc: Association, how: str) -> None:
        """Log the summary of `assoc`, which ended as `how` (released, aborted)."""
        with self._lock:
            counts = self._counts.pop(id(assoc), Counter())
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no C-STORE"
        logger.info("association with %s %s: %s", _peer(assoc), how, summary)


def _status(code: StoreStatus, comment: str = "") -> Dataset:
    status = Dataset()
    status.Status = int(code)
    if comment:
        status.ErrorComment = comment[:64]  # LO, PS3.7 C.4
    return status


def handle_store(event: Event, store: Store, assembler: Assembler, log: AssociationLog) -> Dataset | int:
    """EVT_C_STORE: validate, store durably, queue for assembly; return the status to send.

    Success is answered with the plain status code; a failure with a status
    dataset carrying the Error Comment (0000,0902).

    Parameters
    ----------
    event : pynetdicom.events.Event
        The C-STORE request event.
    store : Store
        Where instances are written (its writer is the durability dependency).
    assembler : Assembler
        Receives each stored instance (non-blocking queue).
    log : AssociationLog
        Per-association outcome counts.
    """
    arrival = time.time()
    assoc = event.assoc
    try:
        request = cast("C_STORE", event.request)
        sop_class_uid = str(request.AffectedSOPClassUID or "")
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
        transfer_syntax = UID(event.context.transfer_syntax)
        calling_ae = assoc.requestor.ae_title.strip()
        meta = file_meta_bytes(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax=transfer_syntax,
            calling_ae=calling_ae,
            called_ae=assoc.acceptor.ae_title.strip(),
        )
        data = meta + event.encoded_dataset(include_meta=False)
        header = validate_instance(
            data, len(meta), transfer_syntax=transfer_syntax,
            request_sop_class_uid=sop_class_uid,
            request_sop_instance_uid=sop_instance_uid,
        )
        result = store.put(data, len(meta), header, calling_ae, arrival)
    except Rejection as exc:
        logger.warning("C-STORE from %s refused (0x%04X): %s", _peer(assoc), exc.status, exc.comment)
        log.count(assoc, "refused")
        return _status(exc.status, exc.comment)
    except OSError as exc:
        logger.error("C-STORE from %s not stored, out of resources: %s", _peer(assoc), exc)
        log.count(assoc, "failed")
        return _status(StoreStatus.OUT_OF_RESOURCES, f"write failed: {exc.strerror or exc}")
    except Exception:  # the protocol boundary: a bug costs this instance, not the association
        logger.exception("C-STORE from %s failed unexpectedly", _peer(assoc))
        log.count(assoc, "failed")
        return _status(StoreStatus.UNEXPECTED_ERROR, "unexpected error in the node")
    logger.debug("C-STORE %s %s: %s", header.sop_instance_uid, result.outcome.value, result.instance.path)
    log.count(assoc, result.outcome.value)
    try:
        assembler.submit(result.instance)
    except Exception:  # stored durably already: the sender must still get success
        logger.exception("could not queue %s for series assembly", result.instance.path)
    return int(StoreStatus.SUCCESS)


def handle_echo(event: Event) -> int:
    """EVT_C_ECHO: answer Success (PS3.7 9.3.5)."""
    logger.info("C-ECHO from %s", _peer(event.assoc))
    return 0x0000


def handle_requested(event: Event, config: NodeConfig) -> None:
    """EVT_REQUESTED: reject a known calling AE title calling from an address not allowed for it.

    Unknown calling AE titles and a wrong called AE title are rejected by
    pynetdicom itself (``require_calling_aet``, ``require_called_aet``).
    """
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = str(getattr(primitive, "calling_ae_title", "")).strip()
    address = assoc.requestor.address
    known = any(rule.ae_title == calling for rule in config.allowed_callers)
    if known and not config.caller_allowed(calling, address):
        logger.warning("association from %s@%s rejected: address not allowed for that AE title",
                       calling, address)
        assoc.acse.send_reject(*_REJECT_CALLING_AE)
        assoc.kill()  # as pynetdicom does after its own rejections: waits until the reject is sent


def handle_rejected(event: Event) -> None:
    """EVT_REJECTED: log why pynetdicom rejected an association."""
    assoc = event.assoc
    primitive = assoc.acceptor.primitive
    requested = assoc.requestor.primitive
    logger.warning(
        "association from %s@%s to %s rejected: %s",
        str(getattr(requested, "calling_ae_title", "")).strip(), assoc.requestor.address,
        str(getattr(requested, "called_ae_title", "")).strip(),
        getattr(primitive, "reason_str", "unknown reason"),
    )


def handle_accepted(event: Event) -> None:
    """EVT_ACCEPTED: log the peer and the accepted presentation contexts."""
    assoc = event.assoc
    syntaxes = sorted({cx.transfer_syntax[0].name for cx in assoc.accepted_contexts})
    logger.info("association from %s accepted (%d context(s); %s)", _peer(assoc),
                len(assoc.accepted_contexts), ", ".join(syntaxes))


def handle_released(event: Event, log: AssociationLog) -> None:
    """EVT_RELEASED: log the association's summary."""
    log.finish(event.assoc, "released")


def handle_aborted(event: Event, log: AssociationLog) -> None:
    """EVT_ABORTED: log the association's summary."""
    log.finish(event.assoc, "aborted")
