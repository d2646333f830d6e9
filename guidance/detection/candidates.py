"""Seed candidates: the regions of a CT whose metal may be seeds, told apart from bone and tissue.

Helpers of :mod:`guidance.detection.seeds` (step 1 of its method). Regions above the
scan's level (:func:`threshold_level_hu`) small enough for a seed, a cluster or a chain
(:func:`seed_sized`) are candidates. On slices up to ``reference_slice_mm`` larger ones are
bone, needles or seeds touching them (:func:`seeds_in_bone` cuts them between the bone's
brightest level and the seeds' peak). On thicker slices partial volume brings bone to a
seed's peak and the level joins seeds apart: a region up to ``max_joined_cc`` loses its
plateaus (bone cut by the scan's range), then is cut into its intensity basins, and a
basin still too large again at twice the level (:func:`seed_components`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance.detection.components import Components, basin_parts, parts_above
from guidance.detection.result import SeedOptions
from guidance.volume import Grid, Volume

__all__ = [
    "SEED_LENGTH_MM", "bone_regions", "length_width", "seed_components", "seed_sized", "seeds_in_bone",
    "thick_slices", "threshold_level_hu",
]  # fmt: skip

SEED_LENGTH_MM = 4.5  # I-125 seeds (6711, 6702, IAI-125A, ...): 4.5 mm x 0.8 mm


def thick_slices(grid: Grid, opts: SeedOptions) -> bool:
    """Whether the slices are thicker than ``reference_slice_mm`` (beyond rounding)."""
    return float(grid.spacing_mm[0]) > 1.01 * opts.reference_slice_mm


def bone_regions(
    image: NDArray[Any],
    components: list[tuple[tuple[slice, ...], NDArray[np.bool_]]],
    grid: Grid,
    opts: SeedOptions,
) -> tuple[NDArray[np.bool_], float]:
    """Voxels of the regions too large for seeds (bone), and the bone's brightest level in this scan, HU.

    Cortical fragments split from the rest of a bone by the level (a vertebra's processes on
    2 mm slices) can be seed-sized; beside bone, a seed is told apart by being brighter than
    any bone of the same scan (its 99th percentile: the scan's own HU scale; the top per cent may
    be an undetected needle or streak-joined metal in those regions). Not on slices
    thicker than ``reference_slice_mm``, where partial volume brings a seed's peak to bone levels.
    """
    large = np.zeros(image.shape, dtype=bool)
    if thick_slices(grid, opts):
        return large, math.inf  # thick slices: a seed's peak falls to bone levels; no such test
    for box, inside in components:
        if not seed_sized(inside, box, grid, opts):
            large[box] |= inside
    if not large.any():
        return large, math.inf
    return large, float(np.percentile(image[large], 99.0))


def seed_components(
    image: NDArray[Any], components: Components, level: float, grid: Grid, opts: SeedOptions,
    metal_hu: float | None = None,
) -> tuple[Components, Components]:
    """The seed-sized components (larger ones cut into basins on thick slices), and the bone regions.

    On thick slices the level is low: partial volume across slices and bright streaks join
    seeds apart into one region, whose seeds differ in peak by up to a factor of two (one in
    a slice, one shared by two). Such a region is cut into its intensity basins; a basin
    whose peak stays below twice the scan's level (``metal_hu``, kept when a part is cut
    again higher: a seed shared by two slices peaks at 500-800 HU) is tissue just above it
    (its bumps are noise), not metal. A thin line longer than seeds is the metal of a needle
    the needle search missed (its partial volume across slices makes bumps): it is not cut
    into basins. Plateaus of bone or tissue (:func:`_plateau`) are dropped before the cut,
    with their fringe (the parts left that never reach ``metal_hu``). A
    region or basin still too large for seeds is cut at twice the level, while that is below
    ``threshold_hu`` (the thin-slice level, which bone fragments do not pass as seeds). The
    regions too large at the thin-slice level (bone, needles, and seeds touching them) are
    returned apart (:func:`seeds_in_bone` looks for seeds in them).
    """
    kept: Components = []
    bones: Components = []
    voxel_cc = grid.voxel_volume_cc
    metal = 2.0 * level if metal_hu is None else metal_hu  # twice the scan's level, also when cut higher
    for box, inside in components:
        if seed_sized(inside, box, grid, opts):
            kept.append((box, inside))
        elif level < opts.threshold_hu and np.count_nonzero(inside) * voxel_cc <= opts.max_joined_cc:
            # A thin line longer than seeds is a needle's metal (one the needle search missed):
            # its partial volume across slices makes bumps that are no seeds. Cut higher only.
            if length_width(inside, box, grid)[1] <= SEED_LENGTH_MM:
                higher = parts_above(image, box, inside, 2.0 * level)
                kept += seed_components(image, higher, 2.0 * level, grid, opts, metal)[0]
                continue
            plateau = _plateau(image, box, inside, 0.75 * metal, grid, opts)  # 1.5 x the scan's level
            if plateau.any():
                # Its fringe (tissue just above the level) is no metal either.
                rest = parts_above(image, box, inside & ~plateau, level)
                rest = [(b, part) for b, part in rest if float(image[b][part].max()) > metal]
                kept += seed_components(image, rest, level, grid, opts, metal)[0]
                continue
            for part_box, part in basin_parts(image, box, inside, level, opts.basin_persistence):
                if float(image[part_box][part].max()) <= metal:
                    continue  # no metal: tissue just above the level, its bumps noise
                if seed_sized(part, part_box, grid, opts):
                    kept.append((part_box, part))
                else:
                    higher = parts_above(image, part_box, part, 2.0 * level)
                    kept += seed_components(image, higher, 2.0 * level, grid, opts, metal)[0]
        elif level >= opts.threshold_hu:
            bones.append((box, inside))
    return kept, bones


def _plateau(
    image: NDArray[Any], box: tuple[slice, ...], inside: NDArray[np.bool_], dense_hu: float, grid: Grid,
    opts: SeedOptions,
) -> NDArray[np.bool_]:
    """A region's voxels (in ``box``) in plateaus above ``dense_hu``: bone or dense tissue, not seeds.

    On thick slices partial volume brings bone to a seed's peak, but a seed's metal stays
    compact in-plane: above one and a half times the level, seeds (clusters of up to
    ``max_cluster`` included) cover a few tens of mm^2 of a slice at most (under 40 in the
    tests' 3 and 5 mm scans; the jaw below, 1121). A part above it wider than a
    seed is long and covering more of a slice than ``max_cluster`` seeds lying flat a seed
    length apart (``max_cluster`` x 4.5^2 mm^2) is a plateau (a jaw cut by the scan's last
    slice): its bumps are texture, not seeds.
    """
    plateau = np.zeros(inside.shape, dtype=bool)
    pixel_mm2 = float(grid.spacing_mm[1] * grid.spacing_mm[2])
    limit_mm2 = opts.max_cluster * SEED_LENGTH_MM**2
    start = np.array([sl.start for sl in box])
    for part_box, part in parts_above(image, box, inside, dense_hu):
        if float(part.sum(axis=(1, 2)).max()) * pixel_mm2 <= limit_mm2:
            continue
        if length_width(part, part_box, grid)[1] <= SEED_LENGTH_MM:
            continue
        local = tuple(slice(sl.start - s0, sl.stop - s0) for sl, s0 in zip(part_box, start, strict=True))
        plateau[local] |= part
    return plateau


def seeds_in_bone(
    image: NDArray[Any], seeds: Components, bones: Components, bone_peak_hu: float, grid: Grid,
    opts: SeedOptions,
) -> Components:
    """Seed cores inside bone regions: their parts above :func:`_seed_core_level`, seed-sized."""
    cut = _seed_core_level(image, seeds, bone_peak_hu)
    if not math.isfinite(cut):
        return []
    found: Components = []
    for box, inside in bones:
        found += [(b, part) for b, part in parts_above(image, box, inside, cut)
                  if seed_sized(part, b, grid, opts)]  # fmt: skip
    return found


def _seed_core_level(image: NDArray[Any], seeds: Components, bone_peak_hu: float) -> float:
    """The level halfway between the bone's peak and the seeds' typical peak, HU (inf: no clear gap).

    The seeds standing free give the scan's own seed peak (their median); a seed touching
    bone shows the same core, far above any bone, so bone regions are cut there. Only
    when that peak is well above the bone's (by a fifth) and at least three seeds tell it.
    """
    if not math.isfinite(bone_peak_hu) or len(seeds) < 3:
        return math.inf
    seed_peak = float(np.median([float(image[box][inside].max()) for box, inside in seeds]))
    if seed_peak < 1.2 * bone_peak_hu:
        return math.inf
    return 0.5 * (seed_peak + bone_peak_hu)


def threshold_level_hu(ct: Volume, opts: SeedOptions) -> float:
    """``threshold_hu`` lowered in proportion on slices thicker than ``reference_slice_mm``.

    A seed (0.8 mm across) lying in a slice fills a fraction of each voxel inversely
    proportional to the slice thickness: its peak over the background falls as 1/thickness.
    """
    return opts.threshold_hu * min(1.0, opts.reference_slice_mm / float(ct.spacing_mm[0]))


def seed_sized(inside: NDArray[np.bool_], box: tuple[slice, ...], grid: Grid, opts: SeedOptions) -> bool:
    """Whether a region is small enough for a seed, a cluster or a chain of seeds (not bone or a needle).

    Compact regions fit in ``max_extent_mm`` (bounding-box diagonal). Seeds dropped along one
    needle touch end to end: a chain of up to ``max_cluster`` seeds is one thin region,
    up to ``max_cluster`` x (seed length + one voxel of blur or gap) long along its principal
    axis and no wider than one seed is long.
    """
    spacing = grid.spacing_mm
    extent = np.array([sl.stop - sl.start for sl in box], dtype=np.float64) * spacing
    if float(np.linalg.norm(extent)) <= opts.max_extent_mm:
        return True
    chain_mm = opts.max_cluster * (SEED_LENGTH_MM + float(np.max(spacing)))
    # A chain's box is no longer than the chain plus its width along each axis: larger boxes
    # (bone, streaks) are rejected before their voxels are looked at.
    if float(np.linalg.norm(extent)) > chain_mm + np.sqrt(3.0) * SEED_LENGTH_MM + float(
        np.linalg.norm(spacing)
    ):
        return False
    length, width = length_width(inside, box, grid)
    return length <= chain_mm and width <= SEED_LENGTH_MM


def length_width(inside: NDArray[np.bool_], box: tuple[slice, ...], grid: Grid) -> tuple[float, float]:
    """A region's length along its principal axis and the full width of its cross-section (mm)."""
    points = grid.index_to_patient((np.argwhere(inside) + [sl.start for sl in box]).astype(np.float64))
    offset = points - points.mean(axis=0)
    values, vectors = np.linalg.eigh(offset.T @ offset / len(points))
    axis = vectors[:, -1]
    voxel_along = float(np.abs(np.asarray(grid.affine)[:3, :3].T @ axis).sum())  # one voxel's extent
    length = float(np.ptp(offset @ axis)) + voxel_along
    width = float(np.sqrt(12.0 * max(values[-2], 0.0)))  # full width of a uniform cross-section
    return length, width
