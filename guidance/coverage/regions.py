"""Regions of a dose grid: evaluation grid, partial-volume fractions, connected components, geometry.

Shared by the cold-spot and hot-spot search and by the seed suggestions. A
region is a set of voxels of the evaluation grid (the dose grid, or a uniform
subdivision of it), connected through faces, edges or corners (26-connectivity:
two voxels touching only at a corner are one region, as a needle or a seed can
reach across that corner as well as across a face).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.dose.dvh import DoseVolumeHistogramCurve, sampling_grid
from guidance.plan import Needle
from guidance.rasterise import structure_fraction, structure_mask
from guidance.structure import Structure
from guidance.volume import Grid, Volume, resample

__all__ = [
    "RegionGeometry",
    "Samples",
    "SkinDepth",
    "connected_regions",
    "describe_region",
    "dvh_curve",
    "evaluation_samples",
    "fraction_on_grid",
    "nearest_needle",
    "surface_points_mm",
]

#: 26-connectivity: faces, edges and corners.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
_DENSIFY_STEP_MM = 1.0


@dataclass(frozen=True, eq=False)
class Samples:
    """The evaluation grid, the dose on it (Gy) and the target's partial-volume fraction."""

    grid: Grid
    dose_gy: NDArray[np.float64]
    target_fraction: NDArray[np.float32]

    @property
    def inside(self) -> NDArray[np.bool_]:
        """Voxels with any part in the target."""
        inside: NDArray[np.bool_] = self.target_fraction > 0
        return inside

    @property
    def weights_cc(self) -> NDArray[np.float64]:
        """Target volume of each voxel, cm^3, shape grid.shape."""
        weights: NDArray[np.float64] = self.target_fraction.astype(np.float64) * self.grid.voxel_volume_cc
        return weights


@dataclass(frozen=True, eq=False)
class RegionGeometry:
    """Size and shape of one region (weighted by the structure fraction of each voxel)."""

    voxel_indices: NDArray[np.intp]
    volume_cc: float
    min_dose_gy: float
    mean_dose_gy: float
    max_dose_gy: float
    centroid_mm: NDArray[np.float64]
    bounds_mm: NDArray[np.float64]
    principal_axes: NDArray[np.float64]
    principal_extents_mm: NDArray[np.float64]


def evaluation_samples(
    dose: Volume, target: Structure | Volume, *, sampling_mm: float | None, subsamples: int
) -> Samples:
    """The evaluation grid (dose grid, or subdivided to ``sampling_mm``), dose and target fraction."""
    if sampling_mm is None:
        grid, dose_gy = dose.grid, np.asarray(dose.array, dtype=np.float64)
    else:
        upper = np.asarray(dose.shape, dtype=np.intp) - 1
        grid = sampling_grid(dose.grid, np.zeros(3, dtype=np.intp), upper, sampling_mm)
        dose_gy = resample(dose, grid, fill_value=0.0).array.astype(np.float64)
    fraction = fraction_on_grid(target, grid, "target", subsamples)
    return Samples(grid, dose_gy, fraction)


def fraction_on_grid(
    structure: Structure | Volume, grid: Grid, name: str, subsamples: int
) -> NDArray[np.float32]:
    """Partial-volume fraction (0..1) of a structure or mask/fraction volume on ``grid``.

    A Structure is rasterised (:func:`guidance.rasterise.structure_fraction`); a
    Volume on the same geometry is used as is (booleans as 0/1), on another grid
    it is resampled trilinearly (0 outside it).
    """
    if isinstance(structure, Structure):
        return structure_fraction(structure, grid, subsamples=subsamples)
    if not isinstance(structure, Volume):
        raise TypeError(
            f"{name} must be a Structure or a mask/fraction Volume; got {type(structure).__name__}"
        )
    values = np.asarray(structure.array, dtype=np.float32)
    if not np.all(np.isfinite(values)) or values.min(initial=0.0) < 0 or values.max(initial=0.0) > 1:
        raise ValueError(f"{name}: a mask/fraction volume must hold values in [0, 1]")
    source = Volume(values, structure.affine, structure.frame_of_reference_uid)
    if source.grid.same_geometry(grid):
        return values
    resampled: NDArray[np.float32] = np.clip(resample(source, grid, fill_value=0.0).array, 0.0, 1.0)
    return resampled.astype(np.float32)


def connected_regions(mask: NDArray[np.bool_]) -> list[NDArray[np.intp]]:
    """Voxel indices (n, 3) of each 26-connected component of ``mask``, in label order."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=CONNECTIVITY)
    if count == 0:
        return []
    order = np.argsort(labels, axis=None, kind="stable")
    flat = labels.reshape(-1)[order]
    starts = np.searchsorted(flat, np.arange(1, count + 2))
    return [
        np.column_stack(np.unravel_index(order[starts[k] : starts[k + 1]], mask.shape)).astype(np.intp)
        for k in range(count)
    ]


def describe_region(
    indices: NDArray[np.intp], grid: Grid, dose_gy: NDArray[np.float64], weights_cc: NDArray[np.float64]
) -> RegionGeometry:
    """Volume, doses, centroid, box and principal extents of one region.

    The centroid is the volume-weighted mean of the voxel centres; the bounding
    box spans the voxel centres +- half a voxel along the patient axes (exact for
    axis-aligned grids); the principal axes are the eigenvectors of the weighted
    covariance of the centres (largest first) and each extent is the span of
    the centres along it plus one voxel edge length.
    """
    where = tuple(indices.T)
    weights = weights_cc[where]
    doses = dose_gy[where]
    centres = grid.index_to_patient(indices.astype(np.float64))
    total = float(weights.sum())
    centroid = (weights @ centres) / total
    half = 0.5 * np.abs(grid.affine[:3, :3]).sum(axis=1)
    bounds = np.stack([centres.min(axis=0) - half, centres.max(axis=0) + half])
    covariance = ((centres - centroid) * weights[:, np.newaxis]).T @ (centres - centroid) / total
    _, eigenvectors = np.linalg.eigh(covariance)
    axes = eigenvectors[:, ::-1].T
    axes *= np.where(axes[np.arange(3), np.argmax(np.abs(axes), axis=1)] < 0, -1.0, 1.0)[:, np.newaxis]
    projections = (centres - centroid) @ axes.T
    extents = (
        projections.max(axis=0) - projections.min(axis=0) + np.abs(axes @ grid.affine[:3, :3]).max(axis=1)
    )
    return RegionGeometry(
        voxel_indices=indices,
        volume_cc=total,
        min_dose_gy=float(doses.min()),
        mean_dose_gy=float(weights @ doses / total),
        max_dose_gy=float(doses.max()),
        centroid_mm=centroid,
        bounds_mm=bounds,
        principal_axes=axes,
        principal_extents_mm=extents,
    )


def dvh_curve(
    dose_gy: NDArray[np.float64], weights_cc: NDArray[np.float64], name: str, grid: Grid, bin_width_gy: float
) -> DoseVolumeHistogramCurve:
    """Cumulative DVH of weighted dose samples, binned as :func:`guidance.dose.cumulative_dvh` does."""
    count = math.floor(float(dose_gy.max()) / bin_width_gy) + 2
    edges = np.arange(count, dtype=np.float64) * bin_width_gy
    per_bin, _ = np.histogram(dose_gy, bins=edges, weights=weights_cc)
    cumulative = np.concatenate([np.cumsum(per_bin[::-1])[::-1], [0.0]])
    total = float(cumulative[0])
    return DoseVolumeHistogramCurve(
        structure_name=name,
        roi_number=0,
        dose_bins_gy=edges,
        volume_cc=cumulative,
        total_volume_cc=total,
        volume_outside_grid_cc=0.0,
        min_dose_gy=float(dose_gy.min()),
        max_dose_gy=float(dose_gy.max()),
        mean_dose_gy=float(np.sum(dose_gy * weights_cc) / total),
        sampling_mm=grid.spacing_mm,
    )


@dataclass(frozen=True, eq=False)
class SkinDepth:
    """Distance to the body surface in every body voxel, mm, on the body's grid.

    A Euclidean distance transform of the body mask (a Volume: fraction >= 0.5
    on its own grid; a Structure: rasterised on an axial ``spacing_mm`` grid
    around it) gives, in every body voxel, the distance to the nearest voxel
    centre outside the body; half the smallest voxel spacing is subtracted, as
    the surface lies between the last body voxel and the first outside one.
    Exact for grids with orthogonal axes (the per-axis spacings are used).
    """

    grid: Grid
    depth_mm: NDArray[np.float64]
    mask: NDArray[np.bool_]

    @classmethod
    def of(cls, body: Structure | Volume, spacing_mm: float) -> SkinDepth:
        from scipy import ndimage

        if isinstance(body, Structure):
            bounds = body.bounds_mm()
            pad = 2.0 * spacing_mm
            grid = Grid.from_bounds(bounds[0] - pad, bounds[1] + pad, spacing_mm, body.frame_of_reference_uid)
            mask = structure_mask(body, grid)
        else:
            grid = body.grid
            mask = np.asarray(body.array, dtype=np.float32) >= 0.5
        distance = ndimage.distance_transform_edt(mask, sampling=grid.spacing_mm)
        depth = np.maximum(distance - 0.5 * float(grid.spacing_mm.min()), 0.0)
        return cls(grid, depth, mask)

    def __call__(self, points_mm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Depth of each (n, 3) point at its nearest voxel, mm; NaN outside the grid or the body."""
        index = np.rint(self.grid.patient_to_index(points_mm)).astype(np.intp)
        upper = np.asarray(self.grid.shape) - 1
        inside = np.all((index >= 0) & (index <= upper), axis=1)
        where = tuple(np.clip(index, 0, upper).T)
        depth: NDArray[np.float64] = np.where(inside & self.mask[where], self.depth_mm[where], np.nan)
        return depth


def surface_points_mm(organ: Structure | Volume) -> NDArray[np.float64]:
    """Points of an organ for distances: contour edges every 1 mm, or the voxel centres of a mask."""
    if isinstance(organ, Structure):
        pieces = [np.zeros((0, 3))]
        for contour in organ.contours_mm:
            edges = np.roll(contour, -1, axis=0) - contour
            counts = np.maximum(1, np.ceil(np.linalg.norm(edges, axis=1) / _DENSIFY_STEP_MM)).astype(np.intp)
            edge = np.repeat(np.arange(len(contour)), counts)
            first = np.cumsum(counts) - counts
            fraction = (np.arange(int(counts.sum())) - first[edge]) / counts[edge]
            pieces.append(contour[edge] + fraction[:, np.newaxis] * edges[edge])
        return np.concatenate(pieces)
    mask = np.asarray(organ.array, dtype=np.float32) >= 0.5
    return organ.index_to_patient(np.argwhere(mask).astype(np.float64)).reshape(-1, 3)


def nearest_needle(
    point_mm: NDArray[np.float64], needles: Sequence[Needle]
) -> tuple[int | None, float | None]:
    """(index, distance mm) of the needle whose entry-tip segment passes closest to ``point_mm``."""
    best: tuple[int | None, float | None] = (None, None)
    for k, needle in enumerate(needles):
        along = needle.tip_mm - needle.entry_mm
        length2 = float(along @ along)
        t = (
            0.0
            if length2 < 1e-12
            else min(max(float((point_mm - needle.entry_mm) @ along) / length2, 0.0), 1.0)
        )
        distance = float(np.linalg.norm(point_mm - (needle.entry_mm + t * along)))
        if best[1] is None or distance < best[1]:
            best = (k, distance)
    return best


def nearest_organ(
    points_mm: NDArray[np.float64], organ_points: Mapping[str, NDArray[np.float64]]
) -> tuple[str, float | None]:
    """(name, distance mm) of the organ closest to any of ``points_mm`` ("" and None without organs)."""
    from scipy.spatial import cKDTree

    best: tuple[str, float | None] = ("", None)
    for name in sorted(organ_points):
        surface = organ_points[name]
        if surface.shape[0] == 0:
            continue
        distance = float(cKDTree(surface).query(points_mm, k=1)[0].min())
        if best[1] is None or distance < best[1]:
            best = (name, distance)
    return best
