"""Hot spots: organ-at-risk regions above their dose limits, target regions above 200% of the prescription.

For each organ at risk and each D0.1cc / D1cc / D2cc / Dmax limit configured
in :class:`~guidance.dose.DoseLimits`, the organ voxels above its allowance
(limit minus prior dose), by 26-connected component; the metric fails when the
organ's whole volume above the allowance exceeds the metric's volume (0.1, 1,
2 cm^3; any volume for Dmax). In the target, the components above a multiple
of the prescription (200% by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from guidance.coverage.regions import Samples, connected_regions, describe_region, fraction_on_grid
from guidance.dose.limits import DoseLimits
from guidance.structure import Structure, StructureRole
from guidance.volume import Volume

__all__ = ["HotSpot", "hot_regions", "organ_hot_spots"]

_METRIC_VOLUME_CC = {"d0_1cc_gy": 0.1, "d1cc_gy": 1.0, "d2cc_gy": 2.0, "dmax_gy": 0.0}


@dataclass(frozen=True, eq=False)
class HotSpot:
    """A connected region above a dose threshold: an organ above its limit, or the target above 200%.

    Parameters
    ----------
    structure_name : str
        The organ at risk, or "target".
    role : StructureRole
        ORGAN_AT_RISK or TARGET.
    metric : str
        The limit's metric ("d0_1cc_gy", "d1cc_gy", "d2cc_gy", "dmax_gy") or "v200" (``hot_factor``).
    threshold_gy : float
        Allowance (limit minus prior dose), or hot_factor x prescription, Gy.
    limit_exceeded : bool
        Organs: the organ's volume above the threshold exceeds the metric's volume
        (the limit fails). Target: always False (not a limit).
    volume_cc, max_dose_gy, mean_dose_gy : float
        Of the region (structure-fraction weighted).
    centroid_mm : ndarray of shape (3,)
    voxel_indices : ndarray of shape (n, 3), intp
        On the report's evaluation grid.
    """

    structure_name: str
    role: StructureRole
    metric: str
    threshold_gy: float
    limit_exceeded: bool
    volume_cc: float
    max_dose_gy: float
    mean_dose_gy: float
    centroid_mm: NDArray[np.float64]
    voxel_indices: NDArray[np.intp] = field(repr=False)


def hot_regions(
    samples: Samples,
    fraction: NDArray[np.float32],
    threshold_gy: float,
    identity: tuple[str, StructureRole, str],
    *,
    metric_volume_cc: float | None,
    min_volume_cc: float,
) -> list[HotSpot]:
    """Connected regions of the structure above ``threshold_gy`` (limit_exceeded from metric_volume_cc)."""
    name, role, metric = identity
    weights = fraction.astype(np.float64) * samples.grid.voxel_volume_cc
    above = (fraction > 0) & (samples.dose_gy > threshold_gy)
    total_above = float(weights[above].sum())
    exceeded = metric_volume_cc is not None and total_above > metric_volume_cc and total_above > 0
    spots = []
    for indices in connected_regions(above):
        region = describe_region(indices, samples.grid, samples.dose_gy, weights)
        if region.volume_cc < min_volume_cc or region.volume_cc <= 0:
            continue
        spots.append(
            HotSpot(
                name,
                role,
                metric,
                float(threshold_gy),
                bool(exceeded),
                region.volume_cc,
                region.max_dose_gy,
                region.mean_dose_gy,
                region.centroid_mm,
                indices,
            )
        )
    return spots


def organ_hot_spots(
    samples: Samples,
    organs: Mapping[str, Structure | Volume],
    limits: DoseLimits,
    subsamples: int,
) -> list[HotSpot]:
    spots: list[HotSpot] = []
    for name in sorted(organs):
        allowed = {
            metric: limit - limits.prior_for(name, metric)
            for metric, limit in sorted(limits.limits_for(name, StructureRole.ORGAN_AT_RISK).items())
            if metric in _METRIC_VOLUME_CC
        }
        if not allowed:
            continue
        fraction = fraction_on_grid(organs[name], samples.grid, f"organ {name!r}", subsamples)
        for metric, threshold in allowed.items():
            spots += hot_regions(
                samples,
                fraction,
                threshold,
                (name, StructureRole.ORGAN_AT_RISK, metric),
                metric_volume_cc=_METRIC_VOLUME_CC[metric],
                min_volume_cc=0.0,
            )
    return spots
