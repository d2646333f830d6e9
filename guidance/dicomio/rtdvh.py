"""Dose-volume histograms of the RT DVH Module (DICOM PS3.3 C.8.8.4), read and written.

Used by :mod:`guidance.dicomio.rtdose`: an RT Dose may carry a DVH Sequence,
and the RT DVH Module is the only place the RT Dose IOD references an RT
Structure Set.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage

from guidance.dicomio.errors import DicomInputError
from guidance.dicomio.values import ds_texts, element_values

__all__ = [
    "DoseVolumeHistogram",
    "DvhType",
    "DvhVolumeUnits",
    "add_dvh_module",
    "dvh_from_item",
    "gy_per_dose_unit",
]

_DVH_TYPE_1 = (
    "DVHType",
    "DoseUnits",
    "DVHDoseScaling",
    "DVHVolumeUnits",
    "DVHData",
    "DVHReferencedROISequence",
)


class DvhType(enum.Enum):
    """DVH Type (3004,0001), PS3.3 C.8.8.4."""

    DIFFERENTIAL = "DIFFERENTIAL"
    CUMULATIVE = "CUMULATIVE"
    NATURAL = "NATURAL"


class DvhVolumeUnits(enum.Enum):
    """DVH Volume Units (3004,0054): cm^3, percent of the ROI, or per unit (fraction)."""

    CM3 = "CM3"
    PERCENT = "PERCENT"
    PER_U = "PER_U"


@dataclass(frozen=True, eq=False)
class DoseVolumeHistogram:
    """One item of the DVH Sequence (3004,0050), doses converted to Gy.

    Parameters
    ----------
    referenced_roi_numbers : tuple of int
        ROI Numbers of the structure set ROIs the DVH was computed on.
    roi_contribution_types : tuple of str
        INCLUDED or EXCLUDED for each referenced ROI.
    dvh_type : DvhType
        CUMULATIVE, DIFFERENTIAL or NATURAL, as stored.
    dose_type : str
        PHYSICAL, EFFECTIVE or ERROR.
    dose_bin_widths_gy : ndarray of shape (n,), float64
        Width of each dose bin, Gy (DVH Data D1..Dn x DVH Dose Scaling).
        Bin k spans [sum of widths before k, sum up to and including k].
    volumes : ndarray of shape (n,), float64
        DVH Data V1..Vn, in ``volume_units`` (tiny negative values written by
        some planning systems are kept as they are).
    volume_units : DvhVolumeUnits
    minimum_dose_gy, maximum_dose_gy, mean_dose_gy : float or None
        The optional statistics as the file states them. They are not checked
        against the bins: the dicompyler breast RT Dose states a maximum of
        104.9 "Gy" for bins that end at 14.7 Gy.

    References
    ----------
    DICOM PS3.3 C.8.8.4, RT DVH Module.
    """

    referenced_roi_numbers: tuple[int, ...]
    roi_contribution_types: tuple[str, ...]
    dvh_type: DvhType
    dose_type: str
    dose_bin_widths_gy: NDArray[np.float64]
    volumes: NDArray[np.float64]
    volume_units: DvhVolumeUnits
    minimum_dose_gy: float | None = None
    maximum_dose_gy: float | None = None
    mean_dose_gy: float | None = None

    def __post_init__(self) -> None:
        widths = np.array(self.dose_bin_widths_gy, dtype=np.float64)
        volumes = np.array(self.volumes, dtype=np.float64)
        if widths.ndim != 1 or widths.shape != volumes.shape or widths.size == 0:
            raise ValueError(
                f"dose_bin_widths_gy and volumes must be equal-length non-empty 1-D arrays; "
                f"got shapes {widths.shape} and {volumes.shape}"
            )
        if not (np.all(np.isfinite(widths)) and np.all(widths >= 0) and np.all(np.isfinite(volumes))):
            raise ValueError("DVH bin widths must be finite and >= 0, volumes finite")
        if len(self.referenced_roi_numbers) != len(self.roi_contribution_types):
            raise ValueError("one contribution type (INCLUDED/EXCLUDED) is needed per referenced ROI")
        for name, array in (("dose_bin_widths_gy", widths), ("volumes", volumes)):
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, "dvh_type", DvhType(self.dvh_type))
        object.__setattr__(self, "volume_units", DvhVolumeUnits(self.volume_units))

    @property
    def referenced_roi_number(self) -> int:
        """The ROI Number when the DVH is of exactly one ROI."""
        if len(self.referenced_roi_numbers) != 1:
            raise ValueError(f"this DVH combines ROIs {self.referenced_roi_numbers}")
        return self.referenced_roi_numbers[0]

    @property
    def dose_bin_edges_gy(self) -> NDArray[np.float64]:
        """Bin edges, shape (n + 1,), Gy, starting at 0."""
        return np.concatenate([[0.0], np.cumsum(self.dose_bin_widths_gy)])

    @property
    def cumulative_volumes(self) -> NDArray[np.float64]:
        """Volume receiving at least the lower edge dose of each bin, shape (n,).

        Stored CUMULATIVE volumes are returned as they are; DIFFERENTIAL
        volumes (volume per bin) and NATURAL ones (volume per Gy) are summed
        from the top bin down.
        """
        if self.dvh_type is DvhType.CUMULATIVE:
            return self.volumes
        per_bin = self.volumes
        if self.dvh_type is DvhType.NATURAL:
            per_bin = self.volumes * self.dose_bin_widths_gy
        cumulative: NDArray[np.float64] = np.cumsum(per_bin[::-1])[::-1]
        return cumulative


def gy_per_dose_unit(units: str, name: str, gy_per_relative_unit: float | None) -> float:
    if units.upper() == "GY":
        return 1.0
    if units.upper() != "RELATIVE":
        raise DicomInputError(f"DoseUnits {units!r} is neither GY nor RELATIVE (PS3.3 C.8.8.3)", [name])
    if gy_per_relative_unit is None:
        raise DicomInputError(
            "DoseUnits is RELATIVE (dose relative to an implicit reference the file does not "
            "state); pass gy_per_relative_unit, the Gy of one relative unit, to read it",
            [name],
        )
    if not (np.isfinite(gy_per_relative_unit) and gy_per_relative_unit > 0):
        raise ValueError(f"gy_per_relative_unit must be finite and > 0; got {gy_per_relative_unit}")
    return float(gy_per_relative_unit)


def dvh_from_item(
    entry: Dataset, index: int, name: str, gy_per_relative_unit: float | None
) -> DoseVolumeHistogram:
    where = f"DVHSequence item {index}"
    missing = [keyword for keyword in _DVH_TYPE_1 if not element_values(entry.get(keyword))]
    if missing:
        raise DicomInputError(f"{where} lacks {', '.join(missing)}", [name])
    factor = gy_per_dose_unit(str(entry.DoseUnits), name, gy_per_relative_unit)
    data = np.asarray([float(v) for v in entry.DVHData], dtype=np.float64)
    bins = int(entry.get("DVHNumberOfBins") or data.size // 2)
    if data.size != 2 * bins:
        raise DicomInputError(f"{where}: DVHData holds {data.size} values for {bins} bins", [name])
    try:
        dvh_type, units = (
            DvhType(str(entry.DVHType).upper()),
            DvhVolumeUnits(str(entry.DVHVolumeUnits).upper()),
        )
    except ValueError as exc:
        raise DicomInputError(f"{where}: {exc}", [name]) from exc

    def stated(keyword: str) -> float | None:
        value = entry.get(keyword)
        return None if value in (None, "") else float(value) * factor

    rois = entry.DVHReferencedROISequence
    return DoseVolumeHistogram(
        referenced_roi_numbers=tuple(int(r.ReferencedROINumber) for r in rois),
        roi_contribution_types=tuple(str(r.get("DVHROIContributionType", "INCLUDED")) for r in rois),
        dvh_type=dvh_type,
        dose_type=str(entry.get("DoseType", "")),
        dose_bin_widths_gy=data[0::2] * float(entry.DVHDoseScaling) * factor,
        volumes=data[1::2],
        volume_units=units,
        minimum_dose_gy=stated("DVHMinimumDose"),
        maximum_dose_gy=stated("DVHMaximumDose"),
        mean_dose_gy=stated("DVHMeanDose"),
    )


def add_dvh_module(ds: Dataset, dvhs: Sequence[DoseVolumeHistogram], structure_set_uid: str) -> None:
    """RT DVH Module (PS3.3 C.8.8.4), the only place the RT Dose IOD references a structure set."""
    if not dvhs and not structure_set_uid:
        return
    if not dvhs or not structure_set_uid:
        raise ValueError(
            "the RT Dose IOD references a structure set only in the RT DVH Module, which needs both "
            "dvhs and referenced_structure_set_uid (PS3.3 C.8.8.4); without DVHs, reference the "
            "structure set through the RT Plan instead"
        )
    reference = Dataset()
    reference.ReferencedSOPClassUID = RTStructureSetStorage
    reference.ReferencedSOPInstanceUID = structure_set_uid
    ds.ReferencedStructureSetSequence = [reference]
    items = []
    for dvh in dvhs:
        item = Dataset()
        rois = []
        for number, contribution in zip(dvh.referenced_roi_numbers, dvh.roi_contribution_types, strict=True):
            roi = Dataset()
            roi.ReferencedROINumber = number
            roi.DVHROIContributionType = contribution
            rois.append(roi)
        item.DVHReferencedROISequence = rois
        item.DVHType = dvh.dvh_type.value
        item.DoseUnits = "GY"
        item.DoseType = dvh.dose_type or "PHYSICAL"
        item.DVHDoseScaling = "1.0"
        item.DVHVolumeUnits = dvh.volume_units.value
        item.DVHNumberOfBins = dvh.volumes.size
        item.DVHData = ds_texts(np.column_stack([dvh.dose_bin_widths_gy, dvh.volumes]))
        for keyword, value in (
            ("DVHMinimumDose", dvh.minimum_dose_gy),
            ("DVHMaximumDose", dvh.maximum_dose_gy),
            ("DVHMeanDose", dvh.mean_dose_gy),
        ):
            if value is not None:
                setattr(item, keyword, ds_texts([value])[0])
        items.append(item)
    ds.DVHSequence = items
