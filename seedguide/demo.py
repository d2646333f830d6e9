"""``seedguide demo``: a simulated procedure streamed into the node and analysed live.

A synthetic head-and-neck patient is planned (needles avoiding bone, cord and
carotids; seeds reaching the prescription). A guidance service (node +
pipeline + session folder, :mod:`seedguide.service`) listens on a free
loopback port; the simulator sends the plan to it as a planning system would
(planning CT, RT Structure Set, RT Plan), then renders and sends each
intra-procedure scan as a scanner would. Each scan is analysed as soon as its
series is complete: registration, needle and seed detection, matching to the
plan, dose of the seeds found, metrics, cold spots and suggested seeds. The
working folder keeps the node's store and the session (with each scan's
ground truth, ``truth.json``, beside its result).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from dicom_node.config import CallerRule, NodeConfig
from guidance.dicomio.dataset import StudyContext
from guidance.session import write_json
from seedguide.serve import printer
from seedguide.service import GuidanceService, Published
from simulators.case import PlanOptions, phantom_config, plan_case, plan_datasets
from simulators.phantom import make_patient
from simulators.procedure import iter_scans, simulate_procedure
from simulators.push import PushTarget, push

__all__ = ["DemoOptions", "run_demo"]

logger = logging.getLogger(__name__)

CALLING_AE = "SIMULATOR"


@dataclass(frozen=True)
class DemoOptions:
    """How the demo runs.

    Attributes
    ----------
    seed : int
        Seed of the simulated patient and procedure.
    scenario : str
        easy, standard, thick-slices, cold-spot or hard.
    quiet_period_s : float
        Node quiet period before a series is announced.
    interval_s : float
        Least time between the start of two scans being sent (a procedure's pace).
    timeout_s : float
        Longest wait for the last result after the last scan was sent.
    """

    seed: int = 1
    scenario: str = "cold-spot"
    quiet_period_s: float = 1.0
    interval_s: float = 0.0
    timeout_s: float = 300.0


def run_demo(
    out: Path,
    *,
    options: DemoOptions | None = None,
    write: TextIO,
    subscribers: tuple[Callable[[Published], None], ...] = (),
    plan_subscribers: tuple[Callable[[Any], None], ...] = (),
    stop: threading.Event | None = None,
) -> list[Published]:
    """Plan, start the service, stream the procedure into it; returns what was published, in order.

    ``stop`` (set from another thread, e.g. when the viewer closes) ends the stream early.
    """
    stop = stop or threading.Event()
    opts = options or DemoOptions()
    context = StudyContext(patient_id="SEEDGUIDE-DEMO", patient_name="DEMO^NECK")
    started = time.perf_counter()
    patient = make_patient(phantom_config("small", frame_of_reference_uid=context.frame_of_reference_uid),
                           seed=opts.seed)  # fmt: skip
    plan_options = PlanOptions()
    # seeds calibrated on the procedure's day: their strength at the scans is as planned
    case_plan = plan_case(patient, plan_options, strength_reference=context.study_datetime)
    plan = case_plan.plan
    write.write(
        f"plan: {len(plan.seeds)} I-125 seeds on {len(plan.needles)} needles, "
        f"GTV {patient.gtv_volume_cc:.1f} cc, "
        f"prescription {plan_options.prescription_gy:g} Gy ({time.perf_counter() - started:.1f} s); "
        f"procedure scenario '{opts.scenario}'\n"
    )
    procedure = simulate_procedure(patient, plan, opts.scenario, seed=opts.seed, context=context)
    config = NodeConfig(port=0, quiet_period_s=opts.quiet_period_s,
                        allowed_callers=(CallerRule(CALLING_AE, ("127.0.0.1",)),))  # fmt: skip
    service = GuidanceService(out, config)
    truths: dict[str, dict[str, Any]] = {}
    published: list[Published] = []
    all_in = threading.Event()

    def _keep(item: Published) -> None:
        if not item.complete:
            return
        truth = truths.get(item.series_instance_uid)
        if truth is not None:
            write_json(item.record.folder / "truth.json", truth)
        published.append(item)
        if len(published) >= len(procedure.scans):
            all_in.set()

    service.subscribe(_keep)
    service.subscribe(printer(write, lambda: plan_options.prescription_gy))
    for callback in subscribers:
        service.subscribe(callback)
    for plan_callback in plan_subscribers:
        service.subscribe_plan(plan_callback)
    service.start()
    try:
        _stream(service, (patient, case_plan, procedure, context), truths, (opts, stop), write)
        deadline = time.monotonic() + opts.timeout_s
        while not (all_in.wait(0.2) or stop.is_set() or time.monotonic() > deadline):
            pass
        if not all_in.is_set():
            write.write(f"{len(published)} of {len(procedure.scans)} scans analysed\n")
    finally:
        service.stop()
    write.write(f"session folder: {out / 'session'}\n")
    return published


def _stream(
    service: GuidanceService, case: tuple[Any, Any, Any, StudyContext], truths: dict[str, dict[str, Any]],
    settings: tuple[DemoOptions, threading.Event], write: TextIO,
) -> None:  # fmt: skip
    patient, case_plan, procedure, context = case
    opts, stop = settings
    host, port = service.node.address
    target = PushTarget(host, port, called_ae=service.node.config.ae_title, calling_ae=CALLING_AE)
    sent = push(plan_datasets(patient, case_plan, context), target)
    write.write(
        f"plan sent to the node at {host}:{port}: {len(sent.results) - len(sent.failed)} objects stored\n"
    )
    last = time.monotonic()
    for output in iter_scans(patient, procedure, context):
        if stop.wait(max(0.0, last + opts.interval_s - time.monotonic())):
            return
        last = time.monotonic()
        truths[str(output.datasets[0].SeriesInstanceUID)] = output.truth
        summary = push(output.datasets, target)
        if not summary.ok:
            write.write(f"scan {output.scan.index}: {len(summary.failed)} instance(s) not stored\n")
