"""``seedguide demo``: a simulated procedure run through the guidance pipeline.

A synthetic head-and-neck patient is planned (needles avoiding bone, cord and
carotids; seeds reaching the prescription), the procedure is simulated scan by
scan (needles inserted, seeds dropped, patient motion, a seed row lost in the
"cold-spot" scenario), and every scan goes through the same pipeline a live
scan would: registration, needle and seed detection, matching to the plan,
dose of the seeds found, metrics, cold spots and suggested seeds. The session
folder keeps the plan, each scan with its ground truth and its ``result.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TextIO

from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.dataset import StudyContext
from guidance.pipeline import GuidanceResult, run_pipeline
from guidance.session import SessionFolder
from simulators.case import PlanOptions, phantom_config, plan_case, plan_datasets
from simulators.phantom import make_patient
from simulators.procedure import iter_scans, simulate_procedure

__all__ = ["run_demo", "scan_summary"]

logger = logging.getLogger(__name__)


def scan_summary(index: int, result: GuidanceResult, prescription_gy: float, seconds: float) -> str:
    """One line an operator reads after a scan: is the target covered, and if not, what to add."""
    verdict = result.registration.quality.verdict.value if result.registration is not None else "not run"
    seeds = len(result.seeds.seeds) if result.seeds is not None else 0
    needles = len(result.needles.needles) if result.needles is not None else 0
    d90 = result.target_d90_gy
    coverage = "no D90"
    if d90 is not None:
        coverage = f"D90 {d90:.1f} Gy ({100 * d90 / prescription_gy:.0f}% of {prescription_gy:g})"
    cold = result.cold_spots.cold_spots if result.cold_spots is not None else ()
    largest = f", largest {max(c.volume_cc for c in cold):.2f} cc" if cold else ""
    suggested = len(result.suggestions.suggestions) if result.suggestions is not None else 0
    return (
        f"scan {index}: registration {verdict}, {needles} needle(s), {seeds} seed(s) found, {coverage}, "
        f"{len(cold)} cold spot(s){largest}, {suggested} seed(s) suggested, "
        f"{len(result.warnings)} warning(s), {seconds:.1f} s"
    )


def run_demo(out: Path, *, seed: int = 1, scenario: str = "cold-spot", write: TextIO) -> list[GuidanceResult]:
    """Plan, simulate and analyse a small procedure; write the session folder ``out``.

    ``out`` is a session folder (:mod:`guidance.session.folder`): the plan, and per scan
    its CT series, DICOM exports, ``truth.json`` and ``result.json``.
    """
    context = StudyContext(patient_id="SEEDGUIDE-DEMO", patient_name="DEMO^NECK")
    started = time.perf_counter()
    config = phantom_config("small", frame_of_reference_uid=context.frame_of_reference_uid)
    patient = make_patient(config, seed=seed)
    options = PlanOptions()
    case_plan = plan_case(patient, options)
    session = SessionFolder.create(out, plan_datasets(patient, case_plan, context))
    bundle = session.load_bundle()
    plan = bundle.plan
    write.write(
        f"plan: {len(plan.seeds)} I-125 seeds on {len(plan.needles)} needles, "
        f"GTV {patient.gtv_volume_cc:.1f} cc, "
        f"prescription {options.prescription_gy:g} Gy ({time.perf_counter() - started:.1f} s); "
        f"procedure scenario '{scenario}'\n"
    )
    procedure = simulate_procedure(patient, plan, scenario, seed=seed, context=context)
    results: list[GuidanceResult] = []
    previous: GuidanceResult | None = None
    for index, output in enumerate(iter_scans(patient, procedure, context), start=1):
        record = session.new_scan(output.datasets)
        began = time.perf_counter()
        result = run_pipeline(read_ct_series(output.datasets), plan, bundle.planning_ct, previous=previous)
        seconds = time.perf_counter() - began
        session.record_result(record, result, bundle, truth=output.truth)
        write.write(scan_summary(index, result, options.prescription_gy, seconds) + "\n")
        for warning in result.warnings:
            write.write(f"  warning: {warning}\n")
        results.append(result)
        previous = result
    write.write(f"session folder: {out}\n")
    return results
