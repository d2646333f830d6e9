"""Sample points and outlines of a mask or fraction volume, with its partial-volume edge resolved.

The D90 of a target lies at its edge: the outer 10% of a sphere's volume is a
shell of 3.5% of its radius (0.25 mm for 1.5 cm^3, 0.5 mm for 15 cm^3). A
sample point at each voxel centre weighted by the voxel's fraction puts the
volume of the partial (edge) voxels at their centres, which for a small target
lies outside much of that volume, and the sampled D90 comes out low (a
1.5 cm^3 sphere on a 2 mm grid around one central seed: 134.5 Gy sampled for
149.6 Gy of the continuous sphere), so the optimiser adds seeds it does not
need. Likewise the outline of the voxels with fraction >= 0.5 is a staircase
of whole voxels (the same case: D90 142.3 Gy).

- :func:`structure_samples` moves each partial voxel's point to the centroid
  of its inside part: of ``edge_subsamples``^3 sub-points of the voxel, the
  round(fraction x count) where the trilinear interpolation of the fraction
  is highest. The point keeps the voxel's volume, so the total volume and
  the number of points are unchanged (the optimiser's time grows with that
  number; splitting the edge voxels into their sub-points doubled it at
  60 cm^3). The case above: 147.0 Gy with 2^3 sub-points.
- :func:`fine_outline` gives the 0.5 isoline of the in-plane (bilinear)
  interpolation of the fraction on each slice, traced on a grid
  ``in_plane_factor`` times finer in-plane, down to the evaluation grid's
  spacing (145.9 Gy in the case above on a 1 mm dose grid, 147.2 Gy with
  0.5 mm), on the mask's own slices.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from guidance.rasterise import mask_to_contours
from guidance.volume import Grid, Volume, resample

__all__ = ["fine_outline", "fraction_of", "in_plane_factor", "structure_samples"]

_FULL = 1.0 - 1e-6  # a sample whose fraction is at least this is an interior point


def fraction_of(volume: Volume) -> NDArray[np.float32]:
    """A mask's or fraction volume's values as fractions within [0, 1]."""
    fraction: NDArray[np.float32] = np.clip(np.asarray(volume.array, dtype=np.float32), 0.0, 1.0)
    return fraction


def structure_samples(
    volume: Volume, spacing_mm: float, *, edge_subsamples: int = 1
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sample points of a mask or fraction volume on an axial ``spacing_mm`` grid.

    Parameters
    ----------
    volume : Volume
        Mask (bool) or fraction (0..1), (S, R, C).
    spacing_mm : float
        Spacing of the axial sample grid, mm.
    edge_subsamples : int
        1: each point at its sample voxel's centre; k > 1: a partial sample
        voxel's point at the centroid of its inside part among k^3
        sub-points (module docstring).

    Returns
    -------
    points_mm : ndarray of shape (n, 3)
        LPS mm: one point per sample grid voxel where the resampled fraction
        is > 0.001, in the grid's order.
    weights_cc : ndarray of shape (n,)
        Volume of each point, cm^3 (their sum: the resampled fraction x voxel volume).
    """
    if isinstance(edge_subsamples, bool) or not (isinstance(edge_subsamples, int) and edge_subsamples >= 1):
        raise ValueError(f"edge_subsamples must be an integer >= 1; got {edge_subsamples!r}")
    fraction = fraction_of(volume)
    indices = np.argwhere(fraction > 0)
    if indices.size == 0:
        return np.zeros((0, 3)), np.zeros(0)
    centres = volume.index_to_patient(indices.astype(np.float64))
    pad = float(volume.spacing_mm.max())
    grid = Grid.from_bounds(
        centres.min(axis=0) - pad, centres.max(axis=0) + pad, spacing_mm, volume.frame_of_reference_uid
    )
    source = Volume(fraction, volume.affine, volume.frame_of_reference_uid)
    sampled = resample(source, grid, fill_value=0.0).array
    keep = sampled > 1e-3
    points = grid.voxel_centres_mm()[keep]
    values = sampled[keep].astype(np.float64)
    weights = values * grid.voxel_volume_cc
    if edge_subsamples > 1:
        edge = values < _FULL
        points[edge] = _inside_centroids(source, points[edge], values[edge], grid, edge_subsamples)
    return points, weights


def _inside_centroids(
    source: Volume, centres_mm: NDArray[np.float64], values: NDArray[np.float64], grid: Grid, k: int
) -> NDArray[np.float64]:
    """Centroids (LPS mm) of the inside parts of partial sample voxels (see :func:`structure_samples`)."""
    from scipy import ndimage

    if centres_mm.shape[0] == 0:
        return centres_mm
    offsets = (np.arange(k) + 0.5) / k - 0.5
    unit = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    steps = unit @ grid.affine[:3, :3].T  # index offsets of the sample grid -> mm
    sub = centres_mm[:, np.newaxis, :] + steps[np.newaxis]
    index = source.grid.patient_to_index(sub.reshape(-1, 3)).T
    inside = ndimage.map_coordinates(
        np.asarray(source.array, dtype=np.float64), index, order=1, mode="nearest"
    ).reshape(sub.shape[:2])
    count = np.clip(np.rint(values * k**3).astype(np.intp), 1, k**3)
    rank = np.argsort(np.argsort(-inside, axis=1, kind="stable"), axis=1, kind="stable")
    chosen = rank < count[:, np.newaxis]
    centroids: NDArray[np.float64] = (sub * chosen[:, :, np.newaxis]).sum(axis=1) / count[:, np.newaxis]
    return centroids


def fine_outline(volume: Volume, in_plane_factor: int) -> tuple[NDArray[np.float64], ...]:
    """Contours (LPS mm) of the fraction's 0.5 isoline on each slice, ``in_plane_factor`` x finer in-plane.

    The slices are the volume's own (contours through its voxel centres along
    the slice axis); in the plane the fraction is interpolated bilinearly
    onto a grid ``in_plane_factor`` times finer over the outlined region and
    thresholded at 0.5 (:func:`guidance.rasterise.mask_to_contours`). Factor 1
    gives the outline of the voxels with fraction >= 0.5.
    """
    fraction = fraction_of(volume)
    inside = np.argwhere(fraction >= 0.5)
    if inside.size == 0:
        return ()
    low = np.maximum(inside.min(axis=0) - 1, 0)
    high = np.minimum(inside.max(axis=0) + 2, np.asarray(fraction.shape))
    crop = fraction[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    affine = volume.affine.copy()
    affine[:3, 3] = volume.index_to_patient(low.astype(np.float64))
    source = Volume(crop, affine, volume.frame_of_reference_uid)
    f = int(in_plane_factor)
    if f <= 1:
        return mask_to_contours(crop >= 0.5, source.grid)
    fine = affine.copy()
    fine[:3, 1:3] /= f
    fine[:3, 3] -= (f - 1) / (2.0 * f) * (affine[:3, 1] + affine[:3, 2])  # sub-voxel centres
    grid = Grid((crop.shape[0], crop.shape[1] * f, crop.shape[2] * f), fine, volume.frame_of_reference_uid)
    values = resample(source, grid, fill_value=0.0).array
    return mask_to_contours(np.asarray(values >= 0.5), grid)


def in_plane_factor(volume: Volume, evaluation_spacing_mm: float) -> int:
    """Subdivision of the in-plane voxels for :func:`fine_outline`: to the evaluation grid's spacing.

    Finer outlines than the dose grid resolve nothing more; coarser ones are a
    staircase of the mask's voxels (module docstring).
    """
    spacing = float(np.max(volume.spacing_mm[1:]))
    return max(1, min(8, math.ceil(spacing / evaluation_spacing_mm - 1e-9)))
