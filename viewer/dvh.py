"""Cumulative DVH curves to plot: from the exported RT Dose, else computed from the dose.

A recorded scan has ``exports/dose.dcm`` whose DVH Sequence (DICOM PS3.3 C.8.8.4)
holds the pipeline's own curves: they are read, not recomputed. A live result
(no folder yet) gets curves computed from its dose with
:func:`guidance.dose.dvh.cumulative_dvh` on a coarse sampling (display only; the
metrics panel shows the pipeline's numbers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.dicomio.rtdose import read_dvhs
from guidance.dicomio.rtdvh import DvhVolumeUnits
from guidance.dose.dvh import DoseGridCoverageError, cumulative_dvh
from guidance.plan import Plan
from guidance.session import ScanData
from guidance.structure import Structure, StructureRole
from viewer.scene import structure_rgba

__all__ = ["DvhLine", "dvh_lines"]

logger = logging.getLogger(__name__)

_SAMPLING_MM = 2.0
_BIN_GY = 1.0


@dataclass(frozen=True, eq=False)
class DvhLine:
    """One structure's cumulative DVH in percent of its volume (inside the dose grid)."""

    name: str
    role: StructureRole
    dose_gy: NDArray[np.float64]
    volume_percent: NDArray[np.float64]
    rgba: tuple[float, float, float, float]


def _shown(plan: Plan) -> list[Structure]:
    roles = (StructureRole.TARGET, StructureRole.ORGAN_AT_RISK)
    return [s for s in plan.structures if s.role in roles and not s.is_empty]


def _from_exports(data: ScanData, plan: Plan) -> list[DvhLine] | None:
    path = None if data.folder is None else data.folder / "exports" / "dose.dcm"
    if path is None or not path.is_file():
        return None
    by_number = {s.number: s for s in _shown(plan)}
    lines = []
    for dvh in read_dvhs(path):
        if len(dvh.referenced_roi_numbers) != 1 or dvh.referenced_roi_number not in by_number:
            continue
        structure = by_number[dvh.referenced_roi_number]
        volumes = dvh.cumulative_volumes
        if dvh.volume_units is not DvhVolumeUnits.PERCENT:
            volumes = 100.0 * volumes / volumes[0] if volumes.size and volumes[0] > 0 else volumes * 0.0
        lines.append(DvhLine(structure.name, structure.role, dvh.dose_bin_edges_gy[:-1], volumes,
                             structure_rgba(structure)))  # fmt: skip
    return lines


def _computed(data: ScanData, plan: Plan) -> list[DvhLine]:
    if data.dose is None:
        return []
    lines = []
    for structure in _shown(plan):
        try:
            curve = cumulative_dvh(
                data.dose, structure, bin_width_gy=_BIN_GY, sampling_mm=_SAMPLING_MM, allow_outside=True,
                allow_frame_mismatch=True,
            )  # fmt: skip
        except DoseGridCoverageError:
            continue  # wholly outside the dose grid: nothing to plot
        if curve.total_volume_cc <= 0:
            continue
        percent = 100.0 * curve.volume_cc / curve.total_volume_cc
        lines.append(
            DvhLine(structure.name, structure.role, curve.dose_bins_gy, percent, structure_rgba(structure))
        )
    return lines


def dvh_lines(data: ScanData, plan: Plan) -> list[DvhLine]:
    """The target and organ-at-risk DVHs of ``data`` (exported ones when the scan is recorded)."""
    exported = _from_exports(data, plan)
    return exported if exported is not None else _computed(data, plan)
