"""Cold spots of the target (below the prescription) and hot spots (organs above their limits, target > 200%).

Method:

1. Evaluation grid: the dose grid, or (``sampling_mm``) a uniform subdivision
   of it with the dose interpolated trilinearly. The target's partial-volume
   fraction on it comes from :func:`guidance.rasterise.structure_fraction`
   (a Structure) or from the mask/fraction volume given.
2. Cold voxels: any part in the target (fraction > 0) and dose < prescription.
   Cold spots are their 26-connected components (faces, edges and corners),
   each weighted by its target fraction; those under ``min_volume_cc`` are
   dropped from the list (but counted in ``cold_volume_cc``).
3. Each cold spot: volume, min/mean dose, centroid, box and principal extents,
   depth of its centroid below the skin (distance transform of the body mask),
   the nearest existing needle (entry-tip segment to the centroid) and the
   nearest organ at risk (closest approach of its voxels to the organ).
4. Rank: the D90 gain if that spot alone were brought to the prescription: the
   target DVH of the evaluation samples (:class:`DoseVolumeHistogramCurve`,
   binned as :func:`guidance.dose.cumulative_dvh`) is recomputed with the
   spot's doses raised to the prescription, and its D90 compared with the
   current one. Ties (e.g. when D90 already exceeds the prescription and no
   single spot moves it) fall back to the larger volume, then the larger dose
   deficit. Rank 1 is the spot most worth fixing.
5. Hot spots: for each organ at risk and each D0.1cc / D1cc / D2cc / Dmax
   limit configured in :class:`DoseLimits`, the organ voxels above its
   allowance (limit minus prior dose), by connected component; the metric
   fails when the organ's whole volume above the allowance exceeds the metric's
   volume (0.1, 1, 2 cm^3; any for Dmax). In the target, the components above
   ``hot_factor`` x prescription (200% by default) of at least ``min_volume_cc``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance import __version__
from guidance.coverage.hotspots import HotSpot, hot_regions, organ_hot_spots
from guidance.coverage.regions import (
    RegionGeometry,
    Samples,
    SkinDepth,
    connected_regions,
    describe_region,
    dvh_curve,
    evaluation_samples,
    nearest_needle,
    nearest_organ,
    surface_points_mm,
)
from guidance.dose.limits import DoseLimits
from guidance.plan import Needle
from guidance.provenance import Provenance
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume

__all__ = ["ColdSpot", "ColdSpotReport", "HotSpot", "find_cold_spots"]

logger = logging.getLogger(__name__)

STAGE = "cold_spots"

OrganInput = Mapping[str, Structure | Volume] | Sequence[Structure]


@dataclass(frozen=True, eq=False)
class ColdSpot:
    """One connected part of the target below the prescription.

    Parameters
    ----------
    rank : int
        1 = fixing it would raise D90 the most; also its value in the report's ``labels``.
    volume_cc : float
        Target volume of the spot (partial-volume weighted), cm^3.
    min_dose_gy, mean_dose_gy : float
        Over its voxels (mean weighted by target fraction), Gy.
    centroid_mm : ndarray of shape (3,)
        LPS mm.
    bounds_mm : ndarray of shape (2, 3)
        [min, max] LPS box of its voxels.
    principal_axes : ndarray of shape (3, 3)
        Rows: unit vectors of its principal directions, longest extent first.
    principal_extents_mm : ndarray of shape (3,)
        Its length along each principal axis, mm.
    depth_mm, min_depth_mm : float or None
        Depth below the skin of its centroid and of its shallowest voxel (None without a body).
    nearest_needle_index : int or None
        Index into the ``needles`` given of the needle passing closest to the centroid.
    nearest_needle_distance_mm : float or None
    nearest_organ : str
        Organ at risk closest to the spot ("" without organs).
    nearest_organ_distance_mm : float or None
    d90_gain_gy : float
        Target D90 increase if this spot alone were raised to the prescription, Gy.
    voxel_indices : ndarray of shape (n, 3), intp
        Its voxels on the report's evaluation grid (slice, row, column).
    """

    rank: int
    volume_cc: float
    min_dose_gy: float
    mean_dose_gy: float
    centroid_mm: NDArray[np.float64]
    bounds_mm: NDArray[np.float64]
    principal_axes: NDArray[np.float64]
    principal_extents_mm: NDArray[np.float64]
    depth_mm: float | None
    min_depth_mm: float | None
    nearest_needle_index: int | None
    nearest_needle_distance_mm: float | None
    nearest_organ: str
    nearest_organ_distance_mm: float | None
    d90_gain_gy: float
    voxel_indices: NDArray[np.intp] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (the voxel indices as their count)."""
        return {
            "rank": self.rank,
            "volume_cc": self.volume_cc,
            "min_dose_gy": self.min_dose_gy,
            "mean_dose_gy": self.mean_dose_gy,
            "centroid_mm": self.centroid_mm.tolist(),
            "bounds_mm": self.bounds_mm.tolist(),
            "principal_extents_mm": self.principal_extents_mm.tolist(),
            "depth_mm": self.depth_mm,
            "min_depth_mm": self.min_depth_mm,
            "nearest_needle_index": self.nearest_needle_index,
            "nearest_needle_distance_mm": self.nearest_needle_distance_mm,
            "nearest_organ": self.nearest_organ,
            "nearest_organ_distance_mm": self.nearest_organ_distance_mm,
            "d90_gain_gy": self.d90_gain_gy,
            "n_voxels": int(self.voxel_indices.shape[0]),
        }


@dataclass(frozen=True, eq=False)
class ColdSpotReport:
    """Cold spots (ranked), hot spots, target coverage and the regions' voxels.

    Parameters
    ----------
    prescription_gy : float
    cold_spots : tuple of ColdSpot
        By rank.
    hot_spots : tuple of HotSpot
        Organs (by name, metric) then target.
    labels : Volume
        int32 on the evaluation grid: k in the voxels of the cold spot of rank k, 0 elsewhere.
    target_volume_cc, d90_gy, v100_percent : float
        Of the target on the evaluation grid.
    cold_volume_cc : float
        All target volume below the prescription, including spots under ``min_volume_cc``.
    warnings : tuple of str
    provenance : Provenance
    """

    prescription_gy: float
    cold_spots: tuple[ColdSpot, ...]
    hot_spots: tuple[HotSpot, ...]
    labels: Volume = field(repr=False)
    target_volume_cc: float
    d90_gy: float
    v100_percent: float
    cold_volume_cc: float
    warnings: tuple[str, ...]
    provenance: Provenance = field(repr=False)

    @property
    def grid(self) -> Grid:
        """The evaluation grid the voxel indices refer to."""
        return self.labels.grid

    @property
    def covered(self) -> bool:
        """True when no part of the target is below the prescription."""
        return self.cold_volume_cc == 0.0


def _validate(prescription_gy: float, min_volume_cc: float, hot_factor: float, bin_width_gy: float) -> None:
    checks = (
        ("prescription_gy", prescription_gy, prescription_gy > 0),
        ("min_volume_cc", min_volume_cc, min_volume_cc >= 0),
        ("hot_factor", hot_factor, hot_factor > 1),
        ("bin_width_gy", bin_width_gy, bin_width_gy > 0),
    )
    for name, value, ok in checks:
        if isinstance(value, bool) or not (math.isfinite(value) and ok):
            raise ValueError(f"find_cold_spots: {name} has an invalid value {value!r}")


def _organ_inputs(organs: OrganInput) -> dict[str, Structure | Volume]:
    if isinstance(organs, Mapping):
        return dict(organs)
    named: dict[str, Structure | Volume] = {}
    for organ in organs:
        if not isinstance(organ, Structure):
            raise TypeError(f"organs given as a sequence must be Structures; got {type(organ).__name__}")
        if not organ.is_empty:
            named[organ.name] = organ
    return named


def _d90(samples: Samples, dose_gy: NDArray[np.float64], bin_width_gy: float) -> float:
    inside = samples.inside
    curve = dvh_curve(dose_gy[inside], samples.weights_cc[inside], "target", samples.grid, bin_width_gy)
    return curve.dose_at_percent(90.0)


def _cold_spot(
    rank: int,
    region: RegionGeometry,
    gain: float,
    context: tuple[SkinDepth | None, Sequence[Needle], Mapping[str, NDArray[np.float64]]],
    grid: Grid,
) -> ColdSpot:
    skin, needles, organ_points = context
    depth: float | None = None
    min_depth: float | None = None
    if skin is not None:
        centres = grid.index_to_patient(region.voxel_indices.astype(np.float64))
        depths = skin(np.vstack([region.centroid_mm, centres]))
        depth = None if math.isnan(depths[0]) else float(depths[0])
        min_depth = None if np.all(np.isnan(depths[1:])) else float(np.nanmin(depths[1:]))
    needle_index, needle_distance = nearest_needle(region.centroid_mm, needles)
    organ, organ_distance = nearest_organ(
        grid.index_to_patient(region.voxel_indices.astype(np.float64)), organ_points
    )
    return ColdSpot(
        rank=rank,
        volume_cc=region.volume_cc,
        min_dose_gy=region.min_dose_gy,
        mean_dose_gy=region.mean_dose_gy,
        centroid_mm=region.centroid_mm,
        bounds_mm=region.bounds_mm,
        principal_axes=region.principal_axes,
        principal_extents_mm=region.principal_extents_mm,
        depth_mm=depth,
        min_depth_mm=min_depth,
        nearest_needle_index=needle_index,
        nearest_needle_distance_mm=needle_distance,
        nearest_organ=organ,
        nearest_organ_distance_mm=organ_distance,
        d90_gain_gy=gain,
        voxel_indices=region.voxel_indices,
    )


def _ranked_regions(
    samples: Samples, prescription_gy: float, min_volume_cc: float, bin_width_gy: float
) -> tuple[list[tuple[RegionGeometry, float]], float, float]:
    """(region, D90 gain) of each cold spot by rank, the current D90, all cold volume (cm^3)."""
    weights = samples.weights_cc
    cold = samples.inside & (samples.dose_gy < prescription_gy)
    base = _d90(samples, samples.dose_gy, bin_width_gy)
    scored = []
    for indices in connected_regions(cold):
        region = describe_region(indices, samples.grid, samples.dose_gy, weights)
        if region.volume_cc < min_volume_cc:
            continue
        raised = samples.dose_gy.copy()
        raised[tuple(indices.T)] = prescription_gy
        gain = round(max(_d90(samples, raised, bin_width_gy) - base, 0.0), 6)  # drop float noise
        scored.append((region, gain))
    scored.sort(
        key=lambda item: (
            -round(item[1], 6),
            -round(item[0].volume_cc, 9),
            item[0].mean_dose_gy,
            tuple(item[0].centroid_mm),
        )
    )
    return scored, base, float(weights[cold].sum())


def _warnings(samples: Samples) -> list[str]:
    fraction = samples.target_fraction
    faces = (fraction[[0, -1]], fraction[:, [0, -1]], fraction[:, :, [0, -1]])
    if any(np.any(face > 0) for face in faces):
        return ["the target reaches the dose grid's faces: any part outside the grid is not evaluated"]
    return []


def find_cold_spots(
    dose: Volume,
    target: Structure | Volume,
    prescription_gy: float,
    *,
    body: Structure | Volume | None = None,
    needles: Sequence[Needle] = (),
    organs: OrganInput = (),
    limits: DoseLimits | None = None,
    min_volume_cc: float = 0.05,
    hot_factor: float = 2.0,
    sampling_mm: float | None = None,
    subsamples: int = 3,
    bin_width_gy: float = 0.1,
    body_spacing_mm: float = 2.0,
) -> ColdSpotReport:
    """Cold spots of the target and hot spots of organs and target (method in the module docstring).

    Parameters
    ----------
    dose : Volume
        Total dose in Gy, (S, R, C), in the target's frame of reference.
    target : Structure or Volume
        Target contours, or a mask/fraction volume (0..1) on any grid.
    prescription_gy : float
        Prescription dose P, Gy.
    body : Structure or Volume, optional
        Body outline or mask, for the depth of each spot below the skin.
    needles : sequence of Needle
        Needles in the patient (entry and tip); cold spots name the nearest.
    organs : mapping of name to Structure/Volume, or sequence of Structure
        Organs at risk: nearest organ of each cold spot, hot spots where limits are given.
    limits : DoseLimits, optional
        Organ-at-risk limits (D0.1cc, D1cc, D2cc, Dmax give hot spots).
    min_volume_cc : float
        Cold spots (and target hot spots) smaller than this are not listed.
    hot_factor : float
        Target hot spots: dose above hot_factor x P.
    sampling_mm : float, optional
        Subdivide the dose grid to at most this spacing (None: the dose grid itself).
    subsamples : int
        Partial-volume subsamples per voxel and axis when rasterising Structures.
    bin_width_gy : float
        DVH bin width of the D90 estimates.
    body_spacing_mm : float
        Grid spacing on which a body Structure is rasterised for the depth.

    Returns
    -------
    ColdSpotReport

    Raises
    ------
    ValueError
        For a bad option, mismatched frames, or a target with no volume in the dose grid.
    """
    started = time.perf_counter()
    _validate(prescription_gy, min_volume_cc, hot_factor, bin_width_gy)
    organ_inputs = _organ_inputs(organs)
    samples = evaluation_samples(dose, target, sampling_mm=sampling_mm, subsamples=subsamples)
    if not np.any(samples.inside):
        raise ValueError("find_cold_spots: the target has no volume inside the dose grid")
    ranked, d90, cold_cc = _ranked_regions(samples, prescription_gy, min_volume_cc, bin_width_gy)
    organ_points = {name: surface_points_mm(organ) for name, organ in organ_inputs.items()}
    skin = None if body is None else SkinDepth.of(body, body_spacing_mm)
    context = (skin, needles, organ_points)
    spots = tuple(
        _cold_spot(k + 1, region, gain, context, samples.grid) for k, (region, gain) in enumerate(ranked)
    )
    labels = np.zeros(samples.grid.shape, dtype=np.int32)
    for spot in spots:
        labels[tuple(spot.voxel_indices.T)] = spot.rank
    hot = organ_hot_spots(samples, organ_inputs, limits or DoseLimits(), subsamples)
    hot += hot_regions(
        samples,
        samples.target_fraction,
        hot_factor * prescription_gy,
        ("target", StructureRole.TARGET, "v200"),
        metric_volume_cc=None,
        min_volume_cc=min_volume_cc,
    )
    total_cc = float(samples.weights_cc.sum())
    notes = _warnings(samples)
    for note in notes:
        logger.warning("%s", note)
    parameters = {
        "prescription_gy": float(prescription_gy),
        "min_volume_cc": min_volume_cc,
        "hot_factor": hot_factor,
        "sampling_mm": sampling_mm,
        "subsamples": subsamples,
        "bin_width_gy": bin_width_gy,
        "body_spacing_mm": body_spacing_mm,
        "connectivity": 26,
        "n_needles": len(needles),
        "organs": sorted(organ_inputs),
        "evaluation_grid_shape": list(samples.grid.shape),
    }
    elapsed = time.perf_counter() - started
    logger.info(
        "%d cold spots (%.2f cc below %.1f Gy), %d hot spots in %.2f s",
        len(spots),
        cold_cc,
        prescription_gy,
        len(hot),
        elapsed,
    )
    return ColdSpotReport(
        prescription_gy=float(prescription_gy),
        cold_spots=spots,
        hot_spots=tuple(hot),
        labels=Volume.on_grid(samples.grid, labels),
        target_volume_cc=total_cc,
        d90_gy=d90,
        v100_percent=100.0 * (total_cc - cold_cc) / total_cc,
        cold_volume_cc=cold_cc,
        warnings=tuple(notes),
        provenance=Provenance(STAGE, parameters, __version__, elapsed),
    )
