"""``seedguide analyze``: one scan through the guidance pipeline, written to a folder.

With a plan (``--plan DIR``: planning CT + RT Structure Set + RT Plan) the scan
is registered to the planning CT as during a procedure. Without one, the scan
is a post-implant verification of a case planned elsewhere: the structures
were drawn on this scan (same FrameOfReferenceUID), registration is skipped,
and the seed strength and TG-43 source model are given on the command line.

Output folder: ``result.json`` (schema ``seedguide.result/1``) and
``exports/`` (RT Dose, RT Structure Set with the cold spots, RT Plan of the
seeds found; see :mod:`guidance.session.exports`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from guidance.dicomio.ct import read_ct_series
from guidance.dicomio.dataset import StudyContext, load_datasets, to_bytes
from guidance.dicomio.rtstruct import read_rtstruct
from guidance.dose.source_data import load_source_data
from guidance.pipeline import GuidanceResult, PipelineOptions, run_pipeline
from guidance.plan import Isotope, Plan, SourceModel
from guidance.session import context_of, durable_write, load_plan_bundle, result_exports, write_json
from guidance.volume import Volume

__all__ = ["NoPlan", "analyze", "plan_from_structures"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoPlan:
    """In place of a plan (post-implant analysis): structures, prescription, seed model and strength."""

    structures: Path
    prescription_gy: float
    source_model: str
    strength_u: float


def plan_from_structures(no_plan: NoPlan) -> tuple[Plan, StudyContext, str]:
    """A seedless plan holding the structure set's ROIs (plan, its context, referenced series UID)."""
    structure_set = read_rtstruct(no_plan.structures)
    data = load_source_data(no_plan.source_model)
    isotope = Isotope.from_dicom(data.isotope)
    source = SourceModel(data.model_id, isotope, data.half_life_days, data.manufacturer)
    plan = Plan(
        frame_of_reference_uid=structure_set.frame_of_reference_uid,
        seeds=(),
        sources={data.model_id: source},
        structures=structure_set.structures,
        prescription_gy=no_plan.prescription_gy,
        structure_set_uid=structure_set.sop_instance_uid,
        label="post-implant",
    )
    context = context_of(load_datasets(no_plan.structures, stop_before_pixels=True)[0].dataset)
    return plan, context, structure_set.referenced_series_uid


def _write(out: Path, result: GuidanceResult, plan: Plan, context: StudyContext, series: str,
           options: PipelineOptions) -> None:  # fmt: skip
    exports = result_exports(result, plan, context, scan_label="analysis", referenced_series_uid=series,
                             options=options)  # fmt: skip
    for name, dataset in exports.datasets().items():
        durable_write(out / "exports" / f"{name}.dcm", to_bytes(dataset))
    write_json(out / "result.json", result.to_dict())


def analyze(
    scan_dir: Path, out: Path, *, plan_dir: Path | None = None, no_plan: NoPlan | None = None,
    verification: bool = True,
) -> GuidanceResult:  # fmt: skip
    """Analyse the CT series in ``scan_dir`` against a plan folder or a :class:`NoPlan`; write ``out``.

    Raises
    ------
    ValueError
        Neither or both of ``plan_dir`` and ``no_plan``.
    DicomInputError
        Unreadable scan or plan, incomplete plan.
    """
    if (plan_dir is None) == (no_plan is None):
        raise ValueError("analyze needs a plan folder, or structures + prescription + source + strength")
    scan = read_ct_series(scan_dir)
    planning_ct: Volume | None
    if plan_dir is not None:
        bundle = load_plan_bundle(plan_dir)
        plan, context, planning_ct = bundle.plan, bundle.context, bundle.planning_ct
        series = bundle.structure_set.referenced_series_uid
        options = PipelineOptions()
    else:
        assert no_plan is not None
        plan, context, series = plan_from_structures(no_plan)
        planning_ct = None
        (model,) = plan.sources.values()
        options = PipelineOptions(seed_strength_u=no_plan.strength_u, source_model_id=model.model_id)
    result = run_pipeline(scan, plan, planning_ct, options=options, verification=verification)
    _write(out, result, plan, context, series, options)
    return result
