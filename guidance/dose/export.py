"""RT Dose export of a computed dose, with the DVHs of its structures.

The DVHs go into the RT DVH Module (DICOM PS3.3 C.8.8.4) as CUMULATIVE curves
in CM3, doses in Gy: volume V_k of bin k is the volume receiving at least the
bin's lower edge, as :class:`~guidance.dose.dvh.DoseVolumeHistogramCurve`
stores it. That module is also the only place the RT Dose IOD references an RT
Structure Set, so the DVHs carry the structure set reference.

ROI numbers: each DVH names its ROI by the ROI Number the structure has in the
structure set written alongside. Given the ``structures`` passed to
:func:`guidance.dicomio.rtstruct.write_rtstruct`, the numbers follow the same
rule as that writer (the structures' own numbers when distinct and positive,
else 1..n in order) and DVHs are matched to structures by name; without
``structures``, each DVH keeps its structure's number, which must be positive.

A DVH with many bins (a seed inside an organ takes its maximum to thousands of
Gy) is thinned for the file: its first bins are kept as computed and the rest
are merged into bins whose edges grow geometrically up to the maximum. The
cumulative volume at every kept edge is exact; only resolution above the kept
range is lost. DVH Data is a DS element, limited to 64 KB in explicit VR.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from guidance.dicomio.dataset import StudyContext
from guidance.dicomio.rtdose import write_rtdose
from guidance.dicomio.rtdvh import DoseVolumeHistogram, DvhType, DvhVolumeUnits
from guidance.dicomio.values import ds_texts
from guidance.dose.dvh import DoseVolumeHistogramCurve
from guidance.structure import Structure
from guidance.volume import Volume

__all__ = ["dicom_dvh", "export_rtdose", "roi_numbers"]

logger = logging.getLogger(__name__)

#: Bins kept in a written DVH (two DS values each): well under the 64 KB of one DS element.
MAX_DVH_BINS = 2000
_TAIL_BINS = 200
_MAX_DS_BYTES = 0xFFFE
#: Volumes are written to 1e-6 cm^3 (1e-3 mm^3), keeping each DS value short.
_VOLUME_DECIMALS = 6


def roi_numbers(structures: Sequence[Structure]) -> dict[str, int]:
    """ROI Number of each structure name as :func:`~guidance.dicomio.rtstruct.write_rtstruct` writes it.

    Raises
    ------
    ValueError
        If two structures share a name (a DVH could not be matched to one).
    """
    names = [s.name for s in structures]
    if len(set(names)) != len(names):
        raise ValueError(f"structure names must be distinct to match DVHs to ROIs; got {names}")
    numbers = [s.number for s in structures]
    if not (len(set(numbers)) == len(numbers) and all(n > 0 for n in numbers)):
        numbers = list(range(1, len(structures) + 1))
    return dict(zip(names, numbers, strict=True))


def _kept_edges(count: int, max_bins: int) -> NDArray[np.intp]:
    """Indices of the edges kept out of ``count``: all if few, else fine bins then a geometric tail."""
    if count - 1 <= max_bins:
        return np.arange(count)
    fine = max_bins - _TAIL_BINS
    tail = np.unique(np.rint(np.geomspace(fine, count - 1, _TAIL_BINS + 1)).astype(np.intp))
    return np.unique(np.concatenate([np.arange(fine + 1), tail]))


def dicom_dvh(
    curve: DoseVolumeHistogramCurve, roi_number: int, *, max_bins: int = MAX_DVH_BINS
) -> DoseVolumeHistogram:
    """The curve as a CUMULATIVE, CM3 DVH item of ROI ``roi_number`` (at most ``max_bins`` bins)."""
    if roi_number < 1:
        raise ValueError(
            f"DVH of {curve.structure_name!r}: ROI number {roi_number} is not a positive ROI Number; "
            "pass the structures written to the structure set"
        )
    if max_bins <= _TAIL_BINS:
        raise ValueError(f"max_bins must exceed {_TAIL_BINS}; got {max_bins}")
    kept = _kept_edges(curve.dose_bins_gy.size, max_bins)
    edges, volumes = curve.dose_bins_gy[kept], curve.volume_cc[kept]
    dvh = DoseVolumeHistogram(
        referenced_roi_numbers=(roi_number,),
        roi_contribution_types=("INCLUDED",),
        dvh_type=DvhType.CUMULATIVE,
        dose_type="PHYSICAL",
        dose_bin_widths_gy=np.diff(edges),
        volumes=np.round(volumes[:-1], _VOLUME_DECIMALS),
        volume_units=DvhVolumeUnits.CM3,
        minimum_dose_gy=curve.min_dose_gy,
        maximum_dose_gy=curve.max_dose_gy,
        mean_dose_gy=curve.mean_dose_gy,
    )
    size = sum(len(t) + 1 for t in ds_texts(np.column_stack([dvh.dose_bin_widths_gy, dvh.volumes])))
    if size > _MAX_DS_BYTES:
        raise ValueError(f"DVH of {curve.structure_name!r} needs {size} bytes of DVH Data; lower max_bins")
    return dvh


def export_rtdose(
    dose: Volume,
    context: StudyContext,
    *,
    plan_uid: str,
    structure_set_uid: str = "",
    dvhs: Sequence[DoseVolumeHistogramCurve] = (),
    structures: Sequence[Structure] | None = None,
    dose_comment: str = "seedguide TG-43 dose",
    max_dvh_bins: int = MAX_DVH_BINS,
) -> Dataset:
    """RT Dose of a computed dose grid, with DVHs referencing the structure set.

    Parameters
    ----------
    dose : Volume
        Dose in Gy, shape (S, R, C), in the context's frame of reference.
    context : StudyContext
        Patient, study and frame shared with the plan and structure set.
    plan_uid : str
        SOPInstanceUID of the RT Plan the dose is of.
    structure_set_uid : str
        SOPInstanceUID of the RT Structure Set holding the DVHs' ROIs; required with ``dvhs``.
    dvhs : sequence of DoseVolumeHistogramCurve
        Written as CUMULATIVE CM3 DVHs (PS3.3 C.8.8.4).
    structures : sequence of Structure, optional
        The structures written to that structure set, in the order written: ROI
        numbers are those :func:`guidance.dicomio.rtstruct.write_rtstruct` gives them.
    dose_comment : str
    max_dvh_bins : int
        Most bins per written DVH (see the module docstring).

    Returns
    -------
    pydicom.dataset.Dataset
        RT Dose Storage, DoseSummationType PLAN.

    Raises
    ------
    ValueError
        DVHs without a structure set UID; a DVH whose structure is not in
        ``structures`` or has no positive ROI number; and what
        :func:`guidance.dicomio.rtdose.write_rtdose` rejects.
    """
    if dvhs and not structure_set_uid:
        raise ValueError("dvhs need structure_set_uid: the DVHs reference ROIs of that structure set")
    numbers = roi_numbers(structures) if structures is not None else None
    items = []
    for curve in dvhs:
        if numbers is None:
            number = curve.roi_number
        elif curve.structure_name in numbers:
            number = numbers[curve.structure_name]
        else:
            raise ValueError(
                f"DVH of {curve.structure_name!r}: no structure of that name among {sorted(numbers)}"
            )
        if curve.truncated:
            logger.warning("DVH of %r covers only its part inside the dose grid", curve.structure_name)
        items.append(dicom_dvh(curve, number, max_bins=max_dvh_bins))
    return write_rtdose(
        dose,
        context,
        referenced_plan_uid=plan_uid,
        referenced_structure_set_uid=structure_set_uid if items else "",
        dose_comment=dose_comment,
        dvhs=items,
    )
