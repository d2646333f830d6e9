"""The live procedure: the DICOM node, the plan, the guidance pipeline and the session folder.

The node announces each series once its quiet period has passed
(:class:`dicom_node.assembler.SeriesReady`); announcements are queued and one
worker thread handles them in order, so the node never waits on the analysis:

- RT Plan and RT Structure Set objects, and CT series while no plan is loaded,
  are collected until they make a complete, linked plan
  (:func:`guidance.session.plan_status`); the session folder is then created
  with those files, and CT series that are not the planning CT are analysed as
  scans, in arrival order (a scan that arrives before its plan waits for it);
- every other CT series is an intra-procedure scan: it is read from the node's
  store, run through :func:`guidance.pipeline.run_pipeline` (the previous
  result starts the registration) and linked into the next scan folder;
  subscribers then receive a :class:`Published`, and the result is recorded
  with its exports (``result.json`` last).

A series reopened by late instances (revision > 1) is analysed again as a new
scan, so the session keeps what was shown at each moment. A series that cannot
be read or analysed is logged, listed in ``failures`` and does not stop the
service.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dicom_node.assembler import SeriesKind, SeriesReady
from dicom_node.config import NodeConfig
from dicom_node.server import Node
from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.errors import DicomInputError
from guidance.pipeline import GuidanceResult, PipelineOptions, add_suggestions, run_pipeline
from guidance.registration import PreparedFixed, prepare_fixed
from guidance.session import PlanBundle, PlanStatus, ScanRecord, SessionFolder, plan_status
from guidance.volume import Volume
from seedguide.forward import Destination, Forwarder

__all__ = ["GuidanceService", "Published"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Published:
    """A new result, as handed to subscribers.

    Attributes
    ----------
    record : ScanRecord
        Its folder in the session: the scan's CT is there; result.json and the exports are
        written right after the subscribers have been called.
    scan : Volume
        The scan as analysed.
    result : GuidanceResult
    series_instance_uid : str
    acknowledged_at : float
        time.time() of the scan's last acknowledged instance.
    announced_at, published_at : float
        time.time() when the node announced the series and when the result was published.
    seconds : dict of str to float
        Wall time of the service's own steps: ``read`` (CT series from the store),
        ``pipeline`` (the stages up to the cold spots, see ``result.stages``), ``session``
        (linking the scan into the session), and on the complete result ``suggest``.
    complete : bool
        False for the first publication of a scan (coverage, before the suggestions); True
        for the result with its suggestions, which is the one recorded. Without
        suggestions (``PipelineOptions.suggest`` False) there is one publication, complete.
    """

    record: ScanRecord
    scan: Volume
    result: GuidanceResult
    series_instance_uid: str
    acknowledged_at: float
    announced_at: float
    published_at: float
    seconds: dict[str, float] = field(default_factory=dict)
    complete: bool = True


Subscriber = Callable[[Published], None]


@dataclass
class _Pending:
    """Series received before the plan is complete: the newest announcement of each.

    A series announced again (late or resent instances reopen it) lists all its
    instances each time: an older announcement's files are in the newer one.
    """

    plan_series: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    scans: dict[str, tuple[SeriesReady, float]] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """Every pending file once, in arrival order of the series."""
        paths = [p for group in self.plan_series.values() for p in group]
        paths += [p for ready, _ in self.scans.values() for p in ready.paths]
        return list(dict.fromkeys(paths))


class GuidanceService:
    """Node + plan + pipeline + session folder for one procedure.

    Parameters
    ----------
    out : Path
        Working folder: ``out/store`` receives the node's files, ``out/session`` is the session.
    node_config : NodeConfig
        Node settings; its ``store_dir`` is replaced by ``out/store``.
    plan_files : list of Path, optional
        The plan's files (from ``--plan DIR``); without them the plan is awaited from the node.
    options : PipelineOptions, optional
    export_to : Destination, optional
        Where each scan's DICOM exports are sent (C-STORE) once recorded.
    verification : bool
        The scans verify a finished implant (e.g. a post-implant CT): planned seeds not
        found are reported missing, not "not yet implanted".
    """

    def __init__(
        self,
        out: Path,
        node_config: NodeConfig,
        *,
        plan_files: list[Path] | None = None,
        options: PipelineOptions | None = None,
        export_to: Destination | None = None,
        verification: bool = False,
    ) -> None:
        self.out = Path(out)
        self.node = Node(replace(node_config, store_dir=self.out / "store"))
        self.options = options or PipelineOptions()
        self.verification = verification
        self.session: SessionFolder | None = None
        self.bundle: PlanBundle | None = None
        self.failures: list[str] = []
        self._subscribers: list[Subscriber] = []
        self._plan_subscribers: list[Callable[[PlanBundle], None]] = []
        self._queue: queue.Queue[tuple[SeriesReady, float] | None] = queue.Queue()
        self._pending = _Pending()
        self._previous: GuidanceResult | None = None
        self._fixed: PreparedFixed | None = None
        self._worker = threading.Thread(target=self._run, name="guidance-worker", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self._forwarder = Forwarder(export_to) if export_to is not None else None
        if plan_files is not None:
            self._start_session(plan_status(plan_files))

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(published)`` with each result, before it is recorded (from the worker thread).

        With suggestions on, each scan is published twice: coverage first (``complete`` False),
        then with the suggestions.
        """
        self._subscribers.append(callback)

    def subscribe_plan(self, callback: Callable[[PlanBundle], None]) -> None:
        """Call ``callback(bundle)`` when the plan is loaded (at once if it already is)."""
        self._plan_subscribers.append(callback)
        if self.bundle is not None:
            callback(self.bundle)

    def start(self) -> GuidanceService:
        self.node.subscribe(lambda ready: self._queue.put((ready, time.time())))
        self._worker.start()
        self.node.start()
        return self

    def stop(self) -> None:
        """Stop the node (flushing its announcements), finish queued work, stop the worker."""
        self.node.stop()
        self._queue.put(None)
        self._worker.join()
        if self._forwarder is not None:
            self._forwarder.close()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every announcement queued so far is handled; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set():
                return True
            time.sleep(0.05)
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._idle.clear()
            try:
                self._handle(*item)
            except Exception as exc:  # one bad series must not stop the procedure
                logger.exception("series %s could not be handled", item[0].series_instance_uid)
                self.failures.append(f"series {item[0].series_instance_uid}: {exc}")
            finally:
                self._idle.set()

    def _handle(self, ready: SeriesReady, announced_at: float) -> None:
        logger.info("series %s announced: %s, %d instance(s), revision %d%s", ready.series_instance_uid,
                    ready.kind.value, ready.instance_count, ready.revision,
                    f", warnings: {'; '.join(ready.warnings)}" if ready.warnings else "")  # fmt: skip
        if ready.kind is SeriesKind.DOSE:
            logger.info("RT Dose %s received: not used by the guidance", ready.series_instance_uid)
            return
        if ready.kind is not SeriesKind.IMAGES:
            if self.bundle is not None:
                logger.warning("a %s arrived after the plan was loaded: ignored (%s)", ready.kind.value,
                               ready.series_instance_uid)  # fmt: skip
                return
            self._pending.plan_series[ready.series_instance_uid] = ready.paths
            self._try_plan()
            return
        if self.bundle is None:
            self._pending.scans[ready.series_instance_uid] = (ready, announced_at)
            self._try_plan()
            return
        self._analyse(ready, announced_at)

    def _try_plan(self) -> None:
        status = plan_status(self._pending.files())
        if not status.complete:
            logger.info("waiting for the plan: missing %s", "; ".join(status.missing))
            return
        self._start_session(status)
        assert self.bundle is not None
        planning_series = self.bundle.structure_set.referenced_series_uid
        waiting, self._pending = self._pending.scans, _Pending()
        for ready, announced_at in waiting.values():
            if ready.series_instance_uid != planning_series:
                self._analyse(ready, announced_at)

    def _start_session(self, status: PlanStatus) -> None:
        if not status.complete:
            raise DicomInputError(f"the plan files are incomplete: missing {'; '.join(status.missing)}")
        self.session = SessionFolder.create(self.out / "session", status.paths)
        self.bundle = self.session.load_bundle()
        self._fixed = prepare_fixed(self.bundle.planning_ct, **self.options.registration)
        plan = self.bundle.plan
        logger.info("plan %s loaded: %d seeds, prescription %s Gy; session %s", plan.label, len(plan.seeds),
                    plan.prescription_gy, self.session.path)  # fmt: skip
        for callback in self._plan_subscribers:
            callback(self.bundle)

    def _analyse(self, ready: SeriesReady, announced_at: float) -> None:
        assert self.session is not None and self.bundle is not None
        if ready.series_instance_uid == self.bundle.structure_set.referenced_series_uid:
            logger.info("the planning CT was sent again: not a scan")
            return
        began = time.perf_counter()
        scan = read_ct_series(list(ready.paths))
        read = time.perf_counter()
        fixed = self._fixed or self.bundle.planning_ct
        first_options = replace(self.options, suggest=False)
        result = run_pipeline(scan, self.bundle.plan, fixed, previous=self._previous, options=first_options,
                              verification=self.verification)  # fmt: skip
        analysed = time.perf_counter()
        record = self.session.new_scan(list(ready.paths))
        seconds = {
            "read": read - began,
            "pipeline": analysed - read,
            "session": time.perf_counter() - analysed,
        }
        self._previous = result if result.scan_to_plan is not None else self._previous
        timing = (ready.last_arrival, announced_at)
        if self.options.suggest:  # coverage now, the suggestions (the slowest stage) right after
            self._publish(Published(record, scan, result, ready.series_instance_uid, *timing, time.time(),
                                    dict(seconds), complete=False))  # fmt: skip
            began = time.perf_counter()
            result = add_suggestions(result, scan, self.bundle.plan, fixed, options=self.options)
            seconds["suggest"] = time.perf_counter() - began
        self._publish(
            Published(record, scan, result, ready.series_instance_uid, *timing, time.time(), seconds)
        )
        # Shown first, then recorded: the scan's CT is already durable in the store and in the
        # session folder; a crash here leaves a scan folder without result.json, analysed again on request.
        self.session.record_result(record, result, self.bundle)
        if self._forwarder is not None:
            self._forwarder.submit(record.folder / "exports")

    def _publish(self, published: Published) -> None:
        for callback in self._subscribers:
            try:
                callback(published)
            except Exception:
                logger.exception("a result subscriber failed")
