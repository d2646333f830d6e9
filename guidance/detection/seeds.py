"""Seeds in an intra-procedure CT: compact metal regions, counted and split.

Method:

1. Candidates: connected regions (26-connectivity) of voxels above ``threshold_hu``
   outside ``exclude_mask`` (needles); regions longer than ``max_extent_mm`` are bone
   or needles, not seeds, unless they are a thin chain of up to ``max_cluster`` seeds
   touching end to end along one needle (no wider than a seed is long, no longer than
   ``max_cluster`` x (4.5 mm + one voxel)). The volume is labelled on 4-voxel blocks first and only the
   boxes of the coarse components at full resolution (the same regions, found without
   labelling the whole volume).
2. Each region's local background is the median HU of a shell around it; its excess
   (HU - background, voxels of the region grown by one voxel) is integrated in HU x mm^3.
3. One seed's integral is the median over regions (or given); a region holds
   round(integral / single) seeds. Regions below ``min_fraction`` of a seed are noise or
   streak fragments; in-plane streak-like regions (one slice, long and thin) are rejected.
4. A region of 2 to ``max_cluster`` seeds is split by a weighted k-means of its voxel
   positions (deterministic start along its principal axis).
5. Position: excess-weighted centroid (LPS mm); long axis: principal axis of the excess
   distribution after removing each voxel's own extent (spacing^2 / 12 per axis), when it
   stands out and, on thick slices, lies away from the slice normal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance import __version__
from guidance.detection.lines import principal_line
from guidance.detection.result import SEED_STAGE, DetectedSeed, SeedDetection, SeedOptions
from guidance.provenance import Provenance
from guidance.volume import Volume

__all__ = ["detect_seeds"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _Region:
    """A candidate region: its voxels (mm), excess weights, integral and local background."""

    points_mm: NDArray[np.float64]
    excess: NDArray[np.float64]
    integral: float
    background_sd: float
    slices: int
    near_excluded: bool


_BLOCK = 4
_SEED_LENGTH_MM = 4.5  # I-125 seeds (6711, 6702, IAI-125A, ...): 4.5 mm x 0.8 mm
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def _block_any(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """True for each block of ``_BLOCK`` voxels a side (the last cut short) holding a ``mask`` voxel."""
    coarse = mask
    for axis in range(mask.ndim):
        head = (slice(None),) * axis
        out = coarse[(*head, slice(0, None, _BLOCK))].copy()
        for k in range(1, _BLOCK):
            part = coarse[(*head, slice(k, None, _BLOCK))]
            out[(*head, slice(0, part.shape[axis]))] |= part
        coarse = out
    return coarse


def _components(mask: NDArray[np.bool_]) -> list[tuple[tuple[slice, ...], NDArray[np.bool_]]]:
    """Bounding boxes (voxel slices) of the 26-connected regions of ``mask`` and their voxels in the box.

    The volume is labelled on blocks of ``_BLOCK`` voxels a side (a block is set when it
    holds a voxel of the mask); a region lies in one coarse component, so each component's
    box is labelled at full resolution on its own blocks. Only the few boxes around metal
    and bone are labelled, not the whole volume.
    """
    from scipy import ndimage

    coarse = _block_any(mask)
    coarse_labels, _ = ndimage.label(coarse, structure=_CONNECTIVITY)
    boxes: list[tuple[tuple[slice, ...], NDArray[np.bool_]]] = []
    for label, coarse_box in enumerate(ndimage.find_objects(coarse_labels), start=1):
        if coarse_box is None:
            continue
        box = tuple(
            slice(sl.start * _BLOCK, min(sl.stop * _BLOCK, n))
            for sl, n in zip(coarse_box, mask.shape, strict=True)
        )
        own_blocks = coarse_labels[coarse_box] == label
        for axis in range(3):
            own_blocks = np.repeat(own_blocks, _BLOCK, axis=axis)
        own_blocks = own_blocks[tuple(slice(0, sl.stop - sl.start) for sl in box)]
        labels, _ = ndimage.label(mask[box] & own_blocks, structure=_CONNECTIVITY)
        for local_label, local in enumerate(ndimage.find_objects(labels), start=1):
            if local is not None:
                region_box = tuple(
                    slice(b.start + sl.start, b.start + sl.stop) for b, sl in zip(box, local, strict=True)
                )
                boxes.append((region_box, labels[local] == local_label))
    # In the order of a whole-volume labelling: by each region's first voxel in raster order.
    first = [np.ravel_multi_index(tuple(np.argwhere(inside)[0] + [sl.start for sl in box]), mask.shape)
             for box, inside in boxes]  # fmt: skip
    return [boxes[i] for i in np.argsort(first, kind="stable")]


def _regions(
    ct: Volume, exclude: NDArray[np.bool_] | None, opts: SeedOptions
) -> tuple[list[_Region], list[tuple[NDArray[np.float64], str]]]:
    from scipy import ndimage

    image = np.asarray(ct.array)
    mask = image > opts.threshold_hu
    if exclude is not None:
        mask &= ~exclude
    spacing = ct.spacing_mm
    margin = np.maximum(1, np.ceil(opts.background_margin_mm / spacing)).astype(int)
    voxel_mm3 = ct.grid.voxel_volume_cc * 1000.0
    regions: list[_Region] = []
    rejected: list[tuple[NDArray[np.float64], str]] = []
    for box, inside in _components(mask):
        if not _seed_sized(inside, box, ct, opts):
            continue
        # Clipped at the volume's faces: a seed in the first or last slice is common in short scans.
        grown = tuple(
            slice(max(0, sl.start - m), min(n, sl.stop + m))
            for sl, m, n in zip(box, margin, mask.shape, strict=True)
        )
        own = np.zeros(tuple(sl.stop - sl.start for sl in grown), dtype=bool)
        own[tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown, strict=True))] = (
            inside
        )
        core = ndimage.binary_dilation(own, structure=_CONNECTIVITY)
        shell = ~ndimage.binary_dilation(own, structure=_CONNECTIVITY, iterations=2) & ~mask[grown]
        values = image[grown].astype(np.float32)
        background = float(np.median(values[shell])) if shell.any() else 0.0
        excess = np.clip(values[core] - background, 0.0, None).astype(np.float64)
        offset = np.array([sl.start for sl in grown])
        index = np.argwhere(core) + offset
        near = exclude is not None and bool(exclude[grown].any())
        region = _Region(
            ct.index_to_patient(index.astype(np.float64)), excess, float(excess.sum() * voxel_mm3),
            float(np.std(values[shell])) if shell.any() else 0.0, int(np.ptp(index[:, 0]) + 1), near,
        )  # fmt: skip
        reason = _streak_like(region, ct, opts)
        if reason:
            rejected.append((_centroid(region.points_mm, region.excess), reason))
        else:
            regions.append(region)
    return regions, rejected


def _seed_sized(inside: NDArray[np.bool_], box: tuple[slice, ...], ct: Volume, opts: SeedOptions) -> bool:
    """Whether a region is small enough for a seed, a cluster or a chain of seeds (not bone or a needle).

    Compact regions fit in ``max_extent_mm`` (bounding-box diagonal). Seeds dropped along one
    needle touch end to end: a chain of up to ``max_cluster`` seeds is one thin region,
    up to ``max_cluster`` x (seed length + one voxel of blur or gap) long along its principal
    axis and no wider than one seed is long.
    """
    spacing = ct.spacing_mm
    extent = np.array([sl.stop - sl.start for sl in box], dtype=np.float64) * spacing
    if float(np.linalg.norm(extent)) <= opts.max_extent_mm:
        return True
    points = ct.index_to_patient(np.argwhere(inside).astype(np.float64))
    offset = points - points.mean(axis=0)
    values, vectors = np.linalg.eigh(offset.T @ offset / len(points))
    axis = vectors[:, -1]
    voxel_along = float(np.abs(np.asarray(ct.affine)[:3, :3].T @ axis).sum())  # one voxel's extent
    length = float(np.ptp(offset @ axis)) + voxel_along
    width = float(np.sqrt(12.0 * max(values[-2], 0.0)))  # full width of a uniform cross-section
    chain_mm = opts.max_cluster * (_SEED_LENGTH_MM + float(np.max(spacing)))
    return length <= chain_mm and width <= _SEED_LENGTH_MM


def _streak_like(region: _Region, ct: Volume, opts: SeedOptions) -> str:
    """Non-empty when the region is a streak: within one slice, long and thin in-plane."""
    if region.slices > 1 or len(region.points_mm) < 4:
        return ""
    _, values, _ = principal_line(region.points_mm, region.excess + 1e-9)
    length = 4.0 * float(np.sqrt(max(values[0], 0.0)))
    width = 4.0 * float(np.sqrt(max(values[1], 0.0)))
    if length > 0.75 * opts.max_extent_mm and length > 4.0 * max(width, 1e-3):
        return f"streak-like: one slice, {length:.0f} mm long, {width:.1f} mm wide"
    return ""


def _centroid(points: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    w = weights if weights.sum() > 0 else np.ones(len(weights))
    centre: NDArray[np.float64] = (points * w[:, None]).sum(axis=0) / w.sum()
    return centre


def _weighted_kmeans(points: NDArray[np.float64], weights: NDArray[np.float64], k: int) -> NDArray[np.int64]:
    """Labels of a weighted k-means (Lloyd) started at quantiles along the principal axis."""
    centre, _, vectors = principal_line(points, weights + 1e-9)
    along = (points - centre) @ vectors[:, 0]
    order = np.argsort(along)
    cumulative = np.cumsum(weights[order]) / max(weights.sum(), 1e-12)
    starts = [order[min(len(order) - 1, int(np.searchsorted(cumulative, (i + 0.5) / k)))] for i in range(k)]
    centres = points[starts].copy()
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(30):
        distance = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)
        new = np.argmin(distance, axis=1).astype(np.int64)
        for j in range(k):
            members = new == j
            if weights[members].sum() > 0:
                centres[j] = _centroid(points[members], weights[members])
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _orientation(
    points: NDArray[np.float64], weights: NDArray[np.float64], ct: Volume, opts: SeedOptions
) -> NDArray[np.float64]:
    """Unit long axis of the weighted points, or NaN when the geometry does not show it."""
    if weights.sum() <= 0 or len(points) < 4:
        return np.full(3, np.nan)
    centre = _centroid(points, weights)
    offset = points - centre
    cov = (offset * weights[:, None]).T @ offset / weights.sum()
    axes = np.asarray(ct.affine)[:3, :3]
    cov = cov - axes @ np.diag(np.full(3, 1.0 / 12.0)) @ axes.T  # each voxel's own extent
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    if values[0] <= 0.25 or values[0] < opts.orientation_ratio * max(values[1], 1e-6):
        return np.full(3, np.nan)
    direction = vectors[:, 0]
    slice_normal = ct.grid.axes[0]
    if ct.spacing_mm[0] > opts.max_slice_for_axial_orientation_mm and abs(
        float(direction @ slice_normal)
    ) > np.cos(np.radians(45.0)):
        return np.full(3, np.nan)
    result: NDArray[np.float64] = direction if direction[np.argmax(np.abs(direction))] > 0 else -direction
    return result


def _single_integral(regions: list[_Region], opts: SeedOptions) -> float:
    if opts.single_seed_integral is not None:
        return opts.single_seed_integral
    integrals = np.array([r.integral for r in regions])
    if len(integrals) == 0:
        return float("nan")
    # The median of regions well above noise: most regions are single seeds in an implant.
    big = integrals[integrals >= 0.25 * float(np.max(integrals))]
    return float(np.median(big))


def _seeds_of(region: _Region, single: float, ct: Volume, opts: SeedOptions) -> list[DetectedSeed] | str:
    ratio = region.integral / single
    count = max(1, round(ratio))
    if ratio < opts.min_fraction:
        return f"too faint for a seed ({ratio:.2f} of one seed's integrated intensity)"
    if count > opts.max_cluster:
        return f"{ratio:.1f} seeds' worth of metal in one region: not split (more than {opts.max_cluster})"
    reasons: list[str] = []
    confidence = 1.0
    if abs(ratio - count) > 0.3:
        confidence -= min(0.5, abs(ratio - count) / count)
        reasons.append(f"integrated intensity {ratio:.2f} seeds, counted as {count}")
    if region.near_excluded:
        confidence *= 0.8
        reasons.append("near a needle")
    if region.background_sd > opts.streak_sd_hu:
        confidence *= 0.85
        reasons.append(f"streaks around it (background sd {region.background_sd:.0f} HU)")
    labels = (
        np.zeros(len(region.points_mm), dtype=np.int64)
        if count == 1
        else _weighted_kmeans(region.points_mm, region.excess, count)
    )
    if count > 1:
        confidence *= 0.8
        reasons.append(f"split from a cluster of {count}")
    seeds = []
    whole = _orientation(region.points_mm, region.excess, ct, opts) if count > 1 else np.full(3, np.nan)
    for j in range(count):
        members = labels == j
        points, weights = region.points_mm[members], region.excess[members]
        direction = _orientation(points, weights, ct, opts)
        if count > 1 and not abs(float(np.nan_to_num(direction) @ np.nan_to_num(whole))) > np.cos(
            np.radians(30.0)
        ):
            # Side-by-side seeds split across their axes: a part's own elongation is the cut's.
            direction = np.full(3, np.nan)
        seeds.append(DetectedSeed(_centroid(points, weights), direction, float(np.clip(confidence, 0.0, 1.0)),
                                  tuple(reasons), count > 1, count))  # fmt: skip
    return seeds


def detect_seeds(
    ct: Volume, *, exclude_mask: NDArray[np.bool_] | None = None, options: SeedOptions | None = None
) -> SeedDetection:
    """Find the implanted seeds in a CT scan.

    Parameters
    ----------
    ct : Volume
        The intra-procedure CT in HU, array (slice, row, column), any orientation.
    exclude_mask : ndarray of bool, shape (S, R, C), optional
        Voxels that are not seeds (e.g. :func:`guidance.detection.needle_mask`); a seed
        still inside a needle is absorbed in it.
    options : SeedOptions, optional

    Returns
    -------
    SeedDetection

    Raises
    ------
    ValueError
        If ``exclude_mask`` does not have the CT's shape.
    """
    opts = options or SeedOptions()
    started = time.perf_counter()
    if exclude_mask is not None and np.shape(exclude_mask) != ct.shape:
        raise ValueError(f"exclude_mask has shape {np.shape(exclude_mask)}; the CT's shape is {ct.shape}")
    exclude = None if exclude_mask is None else np.asarray(exclude_mask, dtype=bool)
    regions, rejected = _regions(ct, exclude, opts)
    single = _single_integral(regions, opts)
    seeds: list[DetectedSeed] = []
    notes: list[str] = []
    for region in regions:
        found = _seeds_of(region, single, ct, opts)
        if isinstance(found, str):
            rejected.append((_centroid(region.points_mm, region.excess), found))
        else:
            seeds.extend(found)
    if exclude is not None and exclude.any():
        notes.append("seeds inside the excluded (needle) voxels are absorbed in the needles")
    seconds = time.perf_counter() - started
    logger.info("found %d seeds in %.2f s (%d regions rejected)", len(seeds), seconds, len(rejected))
    rows = tuple(((float(c[0]), float(c[1]), float(c[2])), why) for c, why in rejected)
    return SeedDetection(
        tuple(seeds),
        rows,
        float(single),
        tuple(notes),
        Provenance(SEED_STAGE, opts.to_dict(), __version__, seconds),
    )
