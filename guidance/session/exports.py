"""DICOM exports of one guidance result, for the planning system, a PACS or an audit.

Three objects per scan, all in the plan's patient, study and frame of reference
(the planning CT's, DICOM PS3.3 C.7.4.1), so a planning system shows them over
the planning CT:

- RT Plan (brachytherapy, PS3.3 C.8.8.15) of the seeds actually found, mapped
  into the planning frame, with the strength and source model of the planned
  seed each was matched to;
- RT Structure Set (PS3.3 C.8.8.5) holding the plan's structures plus each cold
  spot as an ROI ``COLD_<rank>`` (RTROIInterpretedType CONTROL) outlined from
  its voxels;
- RT Dose (PS3.3 C.8.8.3) of the recomputed TG-43 dose with the DVHs of the
  result's metrics, referencing that plan and that structure set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataset import Dataset

from guidance.dicomio.dataset import StudyContext, new_uid
from guidance.dicomio.rtplan_writer import write_rtplan
from guidance.dicomio.rtstruct import write_rtstruct
from guidance.dose.export import export_rtdose
from guidance.pipeline import GuidanceResult, PipelineOptions
from guidance.pipeline.stages import seed_strengths
from guidance.plan import Plan, Seed
from guidance.rasterise import mask_to_contours
from guidance.structure import Structure, StructureRole

__all__ = ["ResultExports", "cold_spot_structures", "found_seed_plan", "result_exports"]

logger = logging.getLogger(__name__)

COLD_SPOT_COLOUR = (0, 160, 255)


@dataclass(frozen=True)
class ResultExports:
    """The DICOM objects of one result (None where the result has nothing to export).

    Attributes
    ----------
    rtplan : Dataset or None
        Seeds found (None without a usable registration).
    rtstruct : Dataset
        Plan structures + cold spots.
    rtdose : Dataset or None
        Recomputed dose (None when the dose stage did not run).
    """

    rtplan: Dataset | None
    rtstruct: Dataset
    rtdose: Dataset | None

    def datasets(self) -> dict[str, Dataset]:
        """File stem -> dataset, for saving."""
        named = {"seeds_found": self.rtplan, "structures": self.rtstruct, "dose": self.rtdose}
        return {name: ds for name, ds in named.items() if ds is not None}


def found_seed_plan(
    result: GuidanceResult, plan: Plan, *, label: str, options: PipelineOptions | None = None
) -> Plan:
    """The seeds found, as a plan in the planning frame (no needles, the plan's prescription).

    Raises
    ------
    ValueError
        Without a usable registration (no planning-frame positions).
    """
    if result.scan_to_plan is None:
        raise ValueError("the result has no usable registration: found seeds have no planning-frame position")
    positions = result.seeds_plan_mm
    strengths, models = seed_strengths(plan, len(positions), result.match, options)
    key_of_model = {source.model_id: key for key, source in plan.sources.items()}
    seeds = tuple(
        Seed(
            position_mm=positions[i],
            direction=result.seed_directions_plan[i],
            air_kerma_strength_u=float(strengths[i]),
            source_model_id=key_of_model.get(models[i], models[i]),
        )
        for i in range(len(positions))
    )
    return replace(plan, seeds=seeds, needles=(), label=label[:16], sop_instance_uid="")


def cold_spot_structures(result: GuidanceResult) -> tuple[Structure, ...]:
    """One structure per cold spot, outlined on the cold-spot evaluation grid."""
    report = result.cold_spots
    if report is None:
        return ()
    labels = np.asarray(report.labels.array)
    out = []
    for spot in report.cold_spots:
        contours = mask_to_contours(labels == spot.rank, report.grid)
        if not contours:
            continue
        out.append(
            Structure(
                name=f"COLD_{spot.rank}",
                role=StructureRole.OTHER,
                contours_mm=contours,
                frame_of_reference_uid=result.plan_frame_of_reference_uid,
                colour_rgb=COLD_SPOT_COLOUR,
            )
        )
    return tuple(out)


def result_exports(
    result: GuidanceResult,
    plan: Plan,
    context: StudyContext,
    *,
    scan_label: str,
    referenced_series_uid: str = "",
    options: PipelineOptions | None = None,
) -> ResultExports:
    """RT Plan of the found seeds, RT Structure Set with cold spots, RT Dose of the result.

    Parameters
    ----------
    result : GuidanceResult
    plan : Plan
        The plan the result was computed against (structures, sources, prescription).
    context : StudyContext
        The plan's patient, study and frame (:func:`guidance.session.context_of`).
    scan_label : str
        Short text naming the scan (e.g. "scan 3"), written in labels and comments.
    referenced_series_uid : str
        The planning CT series the structure set refers to.
    options : PipelineOptions, optional
        The options of the run (seed strength and model for a plan without seeds).
    """
    if context.frame_of_reference_uid and context.frame_of_reference_uid != plan.frame_of_reference_uid:
        raise ValueError(
            f"export context frame {context.frame_of_reference_uid!r} is not the plan's "
            f"{plan.frame_of_reference_uid!r}"
        )
    structures = (*plan.structures, *cold_spot_structures(result))
    rtstruct = write_rtstruct(
        structures,
        context,
        referenced_series_uid=referenced_series_uid,
        label=f"seedguide {scan_label}"[:16],
        series_instance_uid=new_uid(),
    )
    rtplan = None
    if result.scan_to_plan is not None and result.seeds_plan_mm.size:
        found = found_seed_plan(result, plan, label=f"found {scan_label}", options=options)
        rtplan = write_rtplan(found, context, structure_set_uid=str(rtstruct.SOPInstanceUID))
    rtdose = None
    if result.dose is not None:
        dvhs = result.dose_report.dvhs if result.dose_report is not None else ()
        rtdose = export_rtdose(
            result.dose, context, plan_uid=str(rtplan.SOPInstanceUID) if rtplan is not None else "",
            structure_set_uid=str(rtstruct.SOPInstanceUID), dvhs=dvhs, structures=structures,
            dose_comment=f"seedguide TG-43 dose of the seeds found, {scan_label}"[:10240],
        )  # fmt: skip
    return ResultExports(rtplan, rtstruct, rtdose)
