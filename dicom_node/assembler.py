"""Series assembly: announce a series once no instance of it has arrived for a quiet period.

DICOM has no "series complete" message (PS3.4 Annex B), and a series may arrive
over several associations, interleaved with others. The assembler therefore
keeps, per series, the instances stored so far and announces the series when
`quiet_period_s` has passed since its last new instance. An instance arriving
after that reopens the series, which is announced again with the next revision
number. Announcements are delivered to subscribers from a dispatcher thread: a
slow or failing subscriber delays or loses nothing of the others' or of the store.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from dicom_node.index import StoredInstance
from dicom_node.series_checks import series_warnings, sort_instances

logger = logging.getLogger(__name__)


class SeriesKind(StrEnum):
    """What a series holds: images (a CT, planning or intra-operative) or one of the RT objects."""

    IMAGES = "images"
    STRUCTURE_SET = "rtstruct"
    PLAN = "rtplan"
    DOSE = "rtdose"


_KIND_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.481.3": SeriesKind.STRUCTURE_SET,
    "1.2.840.10008.5.1.4.1.1.481.5": SeriesKind.PLAN,
    "1.2.840.10008.5.1.4.1.1.481.2": SeriesKind.DOSE,
}


@dataclass(frozen=True)
class SeriesReady:
    """Announcement that a series is (for now) complete.

    Attributes
    ----------
    study_instance_uid, series_instance_uid, modality : str
        Identify the series.
    kind : SeriesKind
        Images, or the RT object (structure set, plan, dose) it holds.
    paths : tuple of Path
        Files of the newest version of each instance, in slice order along the
        normal for images with geometry, else by Instance Number.
    instance_count : int
        Number of instances (len(paths)).
    warnings : tuple of str
        Signs of an incomplete series (gaps in Instance Number or slice positions...).
    revision : int
        1 for the first announcement of the series, +1 each time late instances reopen it.
    first_arrival, last_arrival : float
        Reception times of its first and last instance, seconds since the epoch.
    """

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    kind: SeriesKind
    paths: tuple[Path, ...]
    instance_count: int
    warnings: tuple[str, ...]
    revision: int
    first_arrival: float
    last_arrival: float


Subscriber = Callable[[SeriesReady], None]
KnownInstances = Callable[[str], list[StoredInstance]]


@dataclass
class _Series:
    instances: dict[str, StoredInstance] = field(default_factory=dict)
    last_change: float = 0.0
    dirty: bool = True
    revision: int = 0


def _announcement(series: _Series) -> SeriesReady:
    ordered = sort_instances(list(series.instances.values()))
    first = ordered[0].header
    classes = Counter(i.header.sop_class_uid for i in ordered).most_common(1)[0][0]
    kind = _KIND_BY_SOP_CLASS.get(classes, SeriesKind.IMAGES)
    return SeriesReady(
        study_instance_uid=first.study_instance_uid,
        series_instance_uid=first.series_instance_uid,
        modality=Counter(i.header.modality for i in ordered).most_common(1)[0][0],
        kind=kind,
        paths=tuple(i.path for i in ordered),
        instance_count=len(ordered),
        warnings=series_warnings(ordered) if kind is SeriesKind.IMAGES else (),
        revision=series.revision,
        first_arrival=min(i.arrival for i in ordered),
        last_arrival=max(i.arrival for i in ordered),
    )


class Assembler:
    """Collects stored instances into series and announces them (see the module docstring).

    Parameters
    ----------
    quiet_period_s : float
        Seconds without a new instance after which a series is announced.
    known_instances : callable, optional
        ``series_uid -> stored instances`` already in the store; consulted when a
        series is first seen, so a series resent after a restart is announced whole.
    """

    def __init__(self, *, quiet_period_s: float, known_instances: KnownInstances | None = None) -> None:
        if not quiet_period_s > 0:
            raise ValueError(f"quiet_period_s must be positive, got {quiet_period_s!r}")
        self.quiet_period_s = quiet_period_s
        self._known = known_instances
        self._inbox: queue.Queue[StoredInstance | None] = queue.Queue()
        self._outbox: queue.Queue[SeriesReady | None] = queue.Queue()
        self._subscribers: list[Subscriber] = []
        self._subscribers_lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._series_of: dict[str, str] = {}  # SOP Instance UID -> Series Instance UID
        self._threads = [
            threading.Thread(target=self._assemble, name="dicom-node-assembler", daemon=True),
            threading.Thread(target=self._dispatch, name="dicom-node-dispatcher", daemon=True),
        ]

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(announcement)` from the dispatcher thread for every announcement."""
        with self._subscribers_lock:
            self._subscribers.append(callback)

    def subscribe_queue(self) -> queue.Queue[SeriesReady]:
        """A new queue that receives every announcement."""
        announcements: queue.Queue[SeriesReady] = queue.Queue()
        self.subscribe(announcements.put)
        return announcements

    def submit(self, instance: StoredInstance) -> None:
        """Hand over a stored instance (never blocks: called from association threads)."""
        self._inbox.put_nowait(instance)

    def start(self) -> None:
        """Start the assembler and dispatcher threads."""
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Announce every series with unannounced instances now, deliver all announcements, stop."""
        self._inbox.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.error("%s did not stop within %.1f s", thread.name, timeout_s)

    def _add(self, instance: StoredInstance, now: float) -> None:
        uid = instance.header.series_instance_uid
        series = self._series.get(uid)
        if series is None:
            series = self._series[uid] = _Series()
            for known in self._known(uid) if self._known else []:
                series.instances[known.header.sop_instance_uid] = known
                self._series_of[known.header.sop_instance_uid] = uid
        sop = instance.header.sop_instance_uid
        moved_from = self._series_of.get(sop)
        if moved_from is not None and moved_from != uid and moved_from in self._series:
            old = self._series[moved_from]  # a new version of the instance names another series
            if old.instances.pop(sop, None) is not None:
                old.dirty, old.last_change = True, now
        previous = series.instances.get(sop)
        if previous is None or previous.version != instance.version or previous.path != instance.path:
            series.instances[sop] = instance
            series.dirty = True
        self._series_of[sop] = uid
        if series.dirty:
            series.last_change = now

    def _announce_due(self, now: float, everything: bool) -> float | None:
        """Announce series quiet long enough (or all dirty ones); return the next deadline."""
        next_due: float | None = None
        for series in self._series.values():
            if not series.dirty:
                continue
            due = series.last_change + self.quiet_period_s
            if not series.instances:
                series.dirty = False
            elif everything or due <= now:
                series.revision += 1
                series.dirty = False
                self._outbox.put(_announcement(series))
            else:
                next_due = due if next_due is None else min(next_due, due)
        return next_due

    def _assemble(self) -> None:
        next_due: float | None = None
        while True:
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            item: StoredInstance | str | None
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                item = "quiet period elapsed"
            if item is None:
                self._announce_due(time.monotonic(), everything=True)
                self._outbox.put(None)
                return
            try:
                if isinstance(item, StoredInstance):
                    self._add(item, time.monotonic())
                next_due = self._announce_due(time.monotonic(), everything=False)
            except Exception:  # a bug here must not stop assembly of every later series
                logger.exception("series assembly failed for %r", item)

    def _dispatch(self) -> None:
        while True:
            announcement = self._outbox.get()
            if announcement is None:
                return
            logger.info(
                "series ready: %s %s (%s) revision %d, %d instance(s)%s",
                announcement.modality, announcement.series_instance_uid, announcement.kind.value,
                announcement.revision, announcement.instance_count,
                "; warnings: " + "; ".join(announcement.warnings) if announcement.warnings else "",
            )
            with self._subscribers_lock:
                subscribers = list(self._subscribers)
            for callback in subscribers:
                try:
                    callback(announcement)
                except Exception:  # one subscriber's failure must not starve the others
                    logger.exception("subscriber %r failed on series %s", callback,
                                     announcement.series_instance_uid)
