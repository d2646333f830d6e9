"""Push DICOM instances to a node like a scanner does: a C-STORE SCU (DICOM PS3.4 Annex B, PS3.7 9.1.1).

:func:`push` sends a folder, a list of files or in-memory datasets to a
Storage SCP. It proposes only the presentation contexts the instances need
(PS3.8 9.3.2.2): each SOP class with the instance's own transfer syntax, plus
Explicit and Implicit VR Little Endian when the instance is uncompressed (so
pynetdicom may re-encode between the uncompressed syntaxes if the SCP prefers
one; compressed pixel data is sent as it is, never transcoded).

What a scanner does that a node must survive is an option of
:class:`PushOptions`: one association per series or per image, slices in
position order or shuffled (seeded), instances sent twice, a pace in images
per second, and bounded retries with exponential backoff when the SCP answers
with a failure status (PS3.4 B.2.3) or the association is refused or lost.
Every instance gets an :class:`InstanceResult`; progress is logged and may
be followed with a callback.

This module reaches a node only over the network: it never imports the node.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.status import code_to_category

from guidance.dicomio.dataset import DatasetSource, load_datasets
from guidance.dicomio.errors import DicomInputError

__all__ = ["AssociationMode", "Instance", "InstanceResult", "PushOptions", "PushSummary", "PushTarget",
           "SliceOrder", "collect_instances", "push", "tls_context"]

logger = logging.getLogger(__name__)

#: Uncompressed transfer syntaxes offered as alternatives for an uncompressed instance (PS3.5 10.1, A.2).
FALLBACK_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255


class AssociationMode(Enum):
    """How many instances share one association."""

    SERIES = "series"
    IMAGE = "image"


class SliceOrder(Enum):
    """The order of the instances within a series."""

    POSITION = "position"
    SHUFFLED = "shuffled"
    AS_GIVEN = "as-given"


@dataclass(frozen=True)
class PushTarget:
    """Where to send: a Storage SCP and the AE titles of both sides (PS3.8 7.1.1.5, 7.1.1.6).

    ``tls`` is a client context (see :func:`tls_context`); ``server_hostname``
    is the name its certificate is checked against (the host when not given).
    """

    host: str
    port: int
    called_ae: str = "SEEDGUIDE"
    calling_ae: str = "SIMULATOR"
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"PushTarget port must be 1..65535; got {self.port}")
        for what, title in (("called_ae", self.called_ae), ("calling_ae", self.calling_ae)):
            if not 0 < len(title.strip()) <= 16 or "\\" in title or not title.isascii():
                raise ValueError(f"PushTarget {what} must be 1-16 ASCII characters without '\\' "
                                 f"(PS3.5 6.2 AE); got {title!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"PushTarget timeout_s must be positive; got {self.timeout_s}")


@dataclass(frozen=True)
class PushOptions:
    """How to send (a scanner's habits).

    Attributes
    ----------
    association : AssociationMode or str
        One association per series (default) or per image.
    order : SliceOrder or str
        Slices by position along the slice normal (then InstanceNumber), shuffled
        with ``seed``, or as given.
    seed : int
        Seed of the shuffles and of the choice of duplicated instances.
    duplicates : int
        Number of instances per series sent a second time, at the end of the series.
    images_per_s : float, optional
        Pace of the C-STORE requests (retries included); as fast as possible when None.
    max_attempts : int
        Sends of one instance (and association requests in a row) before giving up.
    backoff_s, max_backoff_s : float
        Wait before retry n is ``min(backoff_s * 2**(n-1), max_backoff_s)``.
    """

    association: AssociationMode | str = AssociationMode.SERIES
    order: SliceOrder | str = SliceOrder.POSITION
    seed: int = 0
    duplicates: int = 0
    images_per_s: float | None = None
    max_attempts: int = 3
    backoff_s: float = 0.25
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "association", AssociationMode(self.association))
        object.__setattr__(self, "order", SliceOrder(self.order))
        if self.duplicates < 0:
            raise ValueError(f"PushOptions duplicates must be >= 0; got {self.duplicates}")
        if self.images_per_s is not None and not self.images_per_s > 0:
            raise ValueError(f"PushOptions images_per_s must be positive or None; got {self.images_per_s}")
        if self.max_attempts < 1:
            raise ValueError(f"PushOptions max_attempts must be >= 1; got {self.max_attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"PushOptions backoff_s and max_backoff_s must be >= 0; got "
                             f"{self.backoff_s}, {self.max_backoff_s}")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))


@dataclass(frozen=True)
class Instance:
    """One instance to send: its source (file or dataset) and the header values that route and order it."""

    source: Path | Dataset
    header: Dataset = field(repr=False)
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    position_mm: float | None
    instance_number: int | None

    @property
    def name(self) -> str:
        """The file path, or the SOP Instance UID of an in-memory dataset."""
        return str(self.source) if isinstance(self.source, Path) else f"<dataset {self.sop_instance_uid}>"

    def dataset(self) -> Dataset:
        """The whole dataset, read from its file now (pixels included) and sent as read."""
        if isinstance(self.source, Dataset):
            return self.source
        try:
            ds = pydicom.dcmread(self.source)
        except InvalidDicomError:
            ds = pydicom.dcmread(self.source, force=True)  # no preamble: accepted when headers were read
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = UID(self.transfer_syntax_uid)
        return ds


@dataclass(frozen=True)
class InstanceResult:
    """What happened to one C-STORE request: its last status (None: no response), attempts and timing."""

    sop_instance_uid: str
    series_instance_uid: str
    source: str
    status: int | None
    attempts: int
    duplicate: bool = False
    error: str = ""
    sent_at_s: float = 0.0  # time.monotonic() of the last request

    @property
    def ok(self) -> bool:
        """Success or warning status (PS3.4 B.2.3): the SCP has the instance."""
        return self.status is not None and code_to_category(self.status) in ("Success", "Warning")


@dataclass(frozen=True)
class PushSummary:
    """The results of one push, in the order the requests were completed."""

    results: tuple[InstanceResult, ...]
    associations: int
    elapsed_s: float

    @property
    def failed(self) -> tuple[InstanceResult, ...]:
        """Results that did not end in success or warning."""
        return tuple(r for r in self.results if not r.ok)

    @property
    def ok(self) -> bool:
        """True when every request ended in success or warning."""
        return not self.failed


ProgressCallback = Callable[[InstanceResult, int, int], None]
"""Called after each request with (result, requests done, requests planned)."""


def tls_context(ca_file: Path | str, cert_file: Path | str | None = None,
                key_file: Path | str | None = None) -> ssl.SSLContext:
    """A TLS client context (PS3.15 B.1): trusts ``ca_file``; presents ``cert_file`` when given.

    Raises
    ------
    ValueError
        If a key is given without a certificate.
    """
    if key_file is not None and cert_file is None:
        raise ValueError("tls_context: key_file given without cert_file")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
    return context


# --------------------------------------------------------------------------- instances


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return str(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        implicit, little = ds.is_implicit_VR, ds.is_little_endian
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little or little is None else ExplicitVRBigEndian


def _position_mm(ds: Dataset) -> float | None:
    """Position along the slice normal (PS3.3 C.7.6.2.1.1), None without Image Plane attributes."""
    try:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or position.shape != (3,):
        return None
    return float(np.dot(np.cross(orientation[:3], orientation[3:]), position))


def _instance(source: Path | Dataset, ds: Dataset) -> Instance:
    missing = [kw for kw in ("SOPClassUID", "SOPInstanceUID") if kw not in ds]
    if missing:
        raise DicomInputError(f"cannot send an instance without {' and '.join(missing)}",
                              [str(source) if isinstance(source, Path) else "<dataset>"])
    number = ds.get("InstanceNumber")
    return Instance(
        source=source, header=ds, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")), transfer_syntax_uid=_transfer_syntax(ds),
        position_mm=_position_mm(ds), instance_number=None if number in (None, "") else int(number),
    )


def collect_instances(source: DatasetSource) -> list[Instance]:
    """The instances in a folder (recursive), files or datasets; headers only are read from files.

    Files of a folder that are not DICOM, and DICOMDIR media directories (not
    storage instances, PS3.10 8.6), are logged and skipped.

    Raises
    ------
    DicomInputError
        If a named file is not DICOM, or an instance has no SOP Class / Instance UID.
    """
    instances = []
    for loaded in load_datasets(source, stop_before_pixels=True):
        ds = loaded.dataset
        if "DirectoryRecordSequence" in ds:
            logger.info("skipping %s: a DICOMDIR is not a storage instance", loaded.name)
            continue
        instances.append(_instance(loaded.path if loaded.path is not None else ds, ds))
    return instances


def _order_series(members: list[Instance], options: PushOptions, rng: random.Random) -> list[Instance]:
    if options.order is SliceOrder.AS_GIVEN:
        return list(members)
    # Images by position, then by number; instances without a position (RTSTRUCT...) after them.
    ordered = sorted(members, key=lambda m: (m.position_mm is None, m.position_mm or 0.0,
                                             m.instance_number or 0))
    if options.order is SliceOrder.SHUFFLED:
        # Shuffled from position order: a seed gives one order whatever the file names.
        rng.shuffle(ordered)
    return ordered


def _plan(instances: Sequence[Instance], options: PushOptions) -> list[list[tuple[Instance, bool]]]:
    """Series in order of first appearance, each a list of (instance, is duplicate)."""
    rng = random.Random(options.seed)
    series: dict[str, list[Instance]] = {}
    for instance in instances:
        series.setdefault(instance.series_instance_uid, []).append(instance)
    plan = []
    for members in series.values():
        ordered = _order_series(members, options, rng)
        extra = rng.sample(ordered, min(options.duplicates, len(ordered)))
        plan.append([(m, False) for m in ordered] + [(m, True) for m in extra])
    return plan


def _contexts(ae: AE, instances: Iterable[Instance]) -> None:
    """Request one context per (SOP class, transfer syntax) in use (PS3.8 9.3.2.2)."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for instance in instances:
        syntax = UID(instance.transfer_syntax_uid)
        syntaxes: list[str] = [syntax]
        if not syntax.is_compressed:
            syntaxes += [s for s in FALLBACK_SYNTAXES if s != syntax]
        wanted.setdefault((instance.sop_class_uid, syntax), syntaxes)
    if len(wanted) > _MAX_CONTEXTS:
        raise ValueError(f"{len(wanted)} (SOP class, transfer syntax) pairs need more than {_MAX_CONTEXTS} "
                         "presentation contexts: push with association='image'")
    for (sop_class, _), syntaxes in wanted.items():
        ae.add_requested_context(sop_class, syntaxes)


# --------------------------------------------------------------------------- sending


def _no_delay(event: Event) -> None:
    """EVT_CONN_OPEN: disable Nagle's algorithm on the requestor's socket.

    pynetdicom writes a C-STORE as several PDUs; with Nagle on, each request then
    waits for the peer's delayed ACK (about 40 ms on Linux), capping a push at
    10-20 images/s where a scanner sends hundreds.
    """
    raw = event.assoc.dul.socket.socket if event.assoc.dul.socket is not None else None
    if raw is not None:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Pacer:
    """Holds request k until ``start + k / images_per_s`` (no wait when unpaced)."""

    def __init__(self, images_per_s: float | None) -> None:
        self.period_s = None if images_per_s is None else 1.0 / images_per_s
        self.start: float | None = None
        self.count = 0

    def wait(self) -> None:
        now = time.monotonic()
        if self.period_s is not None:
            if self.start is None:
                self.start = now
            delay = self.start + self.count * self.period_s - now
            if delay > 0:
                time.sleep(delay)
        self.count += 1


class _Sender:
    """One push: associations, pacing, retries and the results."""

    def __init__(self, target: PushTarget, options: PushOptions, planned: int,
                 progress: ProgressCallback | None) -> None:
        self.target, self.options, self.planned, self.progress = target, options, planned, progress
        self.pacer = _Pacer(options.images_per_s)
        self.results: list[InstanceResult] = []
        self.associations = 0

    def _associate(self, unit: Sequence[Instance]) -> tuple[Association | None, str]:
        """An established association for ``unit``, after at most max_attempts requests."""
        target, reason = self.target, ""
        for attempt in range(1, self.options.max_attempts + 1):
            ae = AE(ae_title=target.calling_ae)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_s
            _contexts(ae, unit)
            tls = None if target.tls is None else (target.tls, target.server_hostname or target.host)
            assoc = ae.associate(target.host, target.port, ae_title=target.called_ae, tls_args=tls,
                                 evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)])
            if assoc.is_established:
                self.associations += 1
                return assoc, ""
            reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            logger.warning("association %s -> %s@%s:%d %s (attempt %d of %d)", target.calling_ae,
                           target.called_ae, target.host, target.port, reason, attempt,
                           self.options.max_attempts)
            if attempt < self.options.max_attempts:
                time.sleep(self.options.backoff(attempt))
        return None, f"association {reason} after {self.options.max_attempts} attempt(s)"

    def _record(self, instance: Instance, duplicate: bool, status: int | None, attempts: int,
                error: str, sent_at_s: float) -> None:
        result = InstanceResult(instance.sop_instance_uid, instance.series_instance_uid, instance.name,
                                status, attempts, duplicate, error, sent_at_s)
        self.results.append(result)
        logger.log(logging.DEBUG if result.ok else logging.WARNING,
                   "C-STORE %s: status %s after %d attempt(s)%s", result.source,
                   "none" if status is None else f"0x{status:04X}", attempts,
                   f" ({error})" if error else "")
        if self.progress is not None:
            self.progress(result, len(self.results), self.planned)

    def send_unit(self, unit: list[tuple[Instance, bool]]) -> None:
        """Send ``unit`` on one association (re-established when lost), retrying failures."""
        assoc: Association | None = None
        pending, attempts = list(unit), 0
        try:
            while pending:
                instance, duplicate = pending[0]
                if assoc is None or not assoc.is_established:
                    assoc, why = self._associate([i for i, _ in pending])
                    if assoc is None:
                        for item, dup in pending:
                            self._record(item, dup, None, attempts if item is instance else 0, why, 0.0)
                        return
                self.pacer.wait()
                attempts += 1
                sent_at = time.monotonic()
                status, error = self._store(assoc, instance)
                done = status is not None and code_to_category(status) in ("Success", "Warning")
                permanent = error.startswith("no accepted presentation context")
                if done or permanent or attempts >= self.options.max_attempts:
                    self._record(instance, duplicate, status, attempts, error, sent_at)
                    pending.pop(0)
                    attempts = 0
                    continue
                logger.warning("C-STORE %s: %s; retrying in %.2f s", instance.name,
                               error or f"status 0x{status:04X}", self.options.backoff(attempts))
                time.sleep(self.options.backoff(attempts))
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()

    @staticmethod
    def _store(assoc: Association, instance: Instance) -> tuple[int | None, str]:
        """(status, error) of one C-STORE; status None when the association was lost."""
        try:
            response = assoc.send_c_store(instance.dataset())
        except ValueError as exc:  # no accepted context, or encoding failed
            return None, f"no accepted presentation context or not encodable: {exc}"
        except RuntimeError as exc:  # association no longer established
            return None, f"association lost: {exc}"
        if "Status" not in response:
            if assoc.is_established:
                assoc.abort()
            return None, "association lost: no C-STORE response"
        comment = str(response.get("ErrorComment", ""))
        return int(response.Status), comment


def push(
    source: DatasetSource | Sequence[Instance],
    target: PushTarget,
    options: PushOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> PushSummary:
    """Send instances to a Storage SCP as a scanner would.

    Parameters
    ----------
    source : folder, file, Dataset, iterable of those, or sequence of Instance
        What to send. Folders are searched recursively; series are sent in the
        order they first appear (files sorted by path).
    target : PushTarget
        The SCP, AE titles and TLS context.
    options : PushOptions, optional
        Association per series or image, order, duplicates, pace, retries.
    progress : callable, optional
        ``progress(result, done, planned)`` after each instance.

    Returns
    -------
    PushSummary
        One result per request (duplicates included); ``summary.ok`` when all succeeded.

    Raises
    ------
    DicomInputError
        If a named file is not DICOM or an instance lacks its SOP UIDs.

    References
    ----------
    DICOM PS3.4 B.2 (Storage SOP Class behaviour, statuses), PS3.7 9.1.1 (C-STORE),
    PS3.8 9.3.2 (association negotiation).
    """
    options = options or PushOptions()
    if isinstance(source, Sequence) and source and all(isinstance(s, Instance) for s in source):
        instances = [s for s in source if isinstance(s, Instance)]
    else:
        instances = collect_instances(source)  # type: ignore[arg-type]
    plan = _plan(instances, options)
    planned = sum(len(series) for series in plan)
    sender = _Sender(target, options, planned, progress)
    logger.info("pushing %d request(s) in %d series to %s@%s:%d (%s, order %s, %s association%s)", planned,
                len(plan), target.called_ae, target.host, target.port, "TLS" if target.tls else "no TLS",
                options.order.value,  # type: ignore[union-attr]
                "per-image" if options.association is AssociationMode.IMAGE else "per-series",
                "" if options.images_per_s is None else f", {options.images_per_s:g} images/s")
    start = time.monotonic()
    for series in plan:
        units = [[item] for item in series] if options.association is AssociationMode.IMAGE else [series]
        for unit in units:
            sender.send_unit(unit)
        logger.info("series %s: %d request(s) sent", series[0][0].series_instance_uid, len(series))
    summary = PushSummary(tuple(sender.results), sender.associations, time.monotonic() - start)
    logger.info("push done: %d ok, %d failed, %d association(s), %.2f s",
                len(summary.results) - len(summary.failed), len(summary.failed), summary.associations,
                summary.elapsed_s)
    return summary
