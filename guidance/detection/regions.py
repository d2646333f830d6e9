"""Candidate seed regions of a CT: their voxels, local background and integrated excess.

Step 2 of :mod:`guidance.detection.seeds`. The candidates
(:mod:`guidance.detection.candidates`) are connected regions above the seed level outside
the excluded (needle) voxels, seeds cut out of bone among them. Each region's local
background is the median HU of a shell around it (slice by slice on slices thicker than
``reference_slice_mm``); its excess (HU - background, voxels of the region grown by the
integration margin, not into another region's or a needle's voxels) is integrated in
HU x mm^3. On thick slices a region also keeps how much of it each slice sees
(:mod:`guidance.detection.slice_profile`). In-plane streak-like regions (one slice, long
and thin), bone fragments and, on thick slices, a needle's tail in the slice next to its
mask are rejected with their reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.detection.candidates import (
    bone_regions,
    seed_components,
    seeds_in_bone,
    thick_slices,
    threshold_level_hu,
)
from guidance.detection.clusters import centroid
from guidance.detection.components import components
from guidance.detection.lines import principal_line
from guidance.detection.result import SeedOptions
from guidance.detection.slice_profile import SliceStack, SliceSums
from guidance.volume import Grid, Volume

__all__ = ["Region", "candidate_regions"]


@dataclass(frozen=True, eq=False)
class Region:
    """A candidate region: its voxels (mm), excess weights, integral and local background."""

    points_mm: NDArray[np.float64]
    excess: NDArray[np.float64]
    integral: float
    background_sd: float
    slices: int
    near_excluded: bool
    beside_bone: bool = False
    peak_hu: float = 0.0
    number: int = -1  # the candidate's number in the scan
    touching: frozenset[int] = frozenset()  # the candidates whose voxels touch its own (thick slices)
    slice_sums: SliceSums | None = None  # how much of it each slice sees (thick slices)
    stack: SliceStack | None = None  # its box, for the sums of any part of it (thick slices, unmerged)
    cut_by_excluded: bool = False  # its integration margin reaches a needle's voxels: its shape is cut


_MIN_RING = 8  # voxels of a slice's shell for its own background


def candidate_regions(
    ct: Volume, exclude: NDArray[np.bool_] | None, opts: SeedOptions
) -> tuple[list[Region], list[tuple[NDArray[np.float64], str]]]:
    from scipy import ndimage

    image = np.asarray(ct.array)
    mask = image > threshold_level_hu(ct, opts)
    if exclude is not None:
        mask &= ~exclude
    spacing = ct.spacing_mm
    # Box of the integration margin (at least the 26 neighbours), grown with separable maxima.
    reach = tuple(int(2 * h + 1) for h in np.maximum(1, np.floor(opts.integration_margin_mm / spacing)))
    margin = np.maximum(1, np.ceil(opts.background_margin_mm / spacing)) + np.array(reach) // 2 + 1
    margin = margin.astype(int)
    grid = ct.grid
    voxel_mm3 = grid.voxel_volume_cc * 1000.0
    regions: list[Region] = []
    rejected: list[tuple[NDArray[np.float64], str]] = []
    level = threshold_level_hu(ct, opts)
    thick = thick_slices(grid, opts)
    found = components(mask)
    large, bone_peak_hu = bone_regions(image, found, grid, opts)
    seeds, bones = seed_components(image, found, level, grid, opts)
    in_bone = seeds_in_bone(image, seeds, bones, bone_peak_hu, grid, opts)
    claimed = np.zeros(image.shape, dtype=np.int32)  # every candidate's voxels (its number + 1): no other
    for number, (box, inside) in enumerate(seeds + in_bone):  # region integrates them
        claimed[box][inside] = number + 1
    for number, (box, inside) in enumerate(seeds + in_bone):
        # Clipped at the volume's faces: a seed in the first or last slice is common in short scans.
        grown = tuple(
            slice(max(0, sl.start - m), min(n, sl.stop + m))
            for sl, m, n in zip(box, margin, mask.shape, strict=True)
        )
        own = np.zeros(tuple(sl.stop - sl.start for sl in grown), dtype=bool)
        own[tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown, strict=True))] = (
            inside
        )
        # The integration margin stops at other candidates' voxels and at a needle's.
        usable = ~((claimed[grown] > 0) & ~own)
        if exclude is not None:
            usable &= ~exclude[grown]
        reached = ndimage.maximum_filter(own, size=reach)
        core = reached & usable
        shell = ~ndimage.maximum_filter(core, size=3) & ~mask[grown]
        values = image[grown].astype(np.float32)
        background = _slice_backgrounds(values, shell, thick)
        clipped = np.clip(values - background[:, None, None], 0.0, None)
        excess = clipped[core].astype(np.float64)
        sums = stack = None
        if thick:
            template = np.where(core, clipped, 0.0).sum(axis=0).astype(np.float64)
            stack = SliceStack(values, background, _slice_noise(values, shell), template, usable,
                               (grown[0].start, grown[1].start, grown[2].start))  # fmt: skip
            sums = stack.sums()
        offset = np.array([sl.start for sl in grown])
        index = np.argwhere(core) + offset
        near = exclude is not None and bool(exclude[grown].any())
        cut = exclude is not None and bool((reached & exclude[grown]).any())
        region = Region(
            grid.index_to_patient(index.astype(np.float64)), excess, float(excess.sum() * voxel_mm3),
            float(np.std(values[shell])) if shell.any() else 0.0, int(np.ptp(index[:, 0]) + 1), near,
            number >= len(seeds), float(values[core].max()) if core.any() else 0.0, number,
            frozenset(int(k) - 1 for k in np.unique(claimed[grown][ndimage.maximum_filter(own, size=3)])
                      if k not in (0, number + 1)) if thick else frozenset(), sums, stack, cut,
        )  # fmt: skip
        reason = _streak_like(region, grid, opts)
        if not reason and thick and exclude is not None and near:
            reason = _needle_tail(values, own, exclude[grown], clipped)
        peak_hu = float(values[core].max())
        if not reason and peak_hu <= bone_peak_hu and large[grown].any():
            reason = f"bone fragment: peak {peak_hu:.0f} HU beside bone, not above its {bone_peak_hu:.0f} HU"
        if reason:
            rejected.append((centroid(region.points_mm, region.excess), reason))
        else:
            regions.append(region)
    return regions, rejected


def _needle_tail(
    values: NDArray[np.float32],
    own: NDArray[np.bool_],
    needle: NDArray[np.bool_],
    excess: NDArray[np.float64],
) -> str:
    """Non-empty when a region is a needle seen in the next thick slice, not a seed.

    A needle near the boundary between two thick slices shows in both (partial volume and
    the slice profile's tails); its mask, drawn about the axis found on the slices, may cover
    only the brighter one. Over most of the region's excess (half of it) the next slice at
    the same pixel is a needle's voxel and brighter: the region is that needle's tail. A seed
    in the next slice over a needle is the brighter of the two where it lies.
    """
    explained = np.zeros(own.shape, dtype=bool)
    for shift in (-1, 1):
        source = slice(max(0, -shift), own.shape[0] - max(0, shift))
        target = slice(max(0, shift), own.shape[0] - max(0, -shift))
        explained[source] |= needle[target] & (values[target] > values[source])
    weight = float(excess[own].sum())
    share = float(excess[own & explained].sum()) / weight if weight > 0 else 0.0
    if share < 0.5:
        return ""
    return f"a needle's tail in the next slice: {share:.0%} of it lies by the needle's brighter voxels there"


def _slice_backgrounds(
    values: NDArray[np.float32], shell: NDArray[np.bool_], by_slice: bool
) -> NDArray[np.float64]:
    """The local background of each slice of a region's box (the median of its shell), HU.

    On thick slices (``by_slice``) anatomy changes from one slice to the next, 5 mm apart:
    one median for the whole shell would count the brighter slice's tissue as the region's
    excess and pull it along the slice axis. On thinner slices the whole shell's median
    serves every slice: a slice's part of the shell is small there, and streaks crossing it
    bias its median. A slice whose part of the shell has fewer than 8 voxels takes the whole
    shell's median; a region without a shell, 0 HU.
    """
    return _shell_statistic(values, shell, _median, by_slice)


def _slice_noise(values: NDArray[np.float32], shell: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Each slice's noise sd in the shell (1.4826 x its median absolute deviation: robust to streaks), HU.

    A slice whose part of the shell has fewer than 8 voxels takes the whole shell's.
    """
    return _shell_statistic(values, shell, _robust_sd, True)


def _shell_statistic(
    values: NDArray[np.float32], shell: NDArray[np.bool_], statistic: Callable[[NDArray[np.float32]], float],
    by_slice: bool,
) -> NDArray[np.float64]:
    """``statistic`` of the whole shell for every slice, or of each slice's own part where it has 8 voxels."""
    result = np.full(values.shape[0], statistic(values[shell]))
    for k in range(values.shape[0] if by_slice else 0):
        ring = values[k][shell[k]]
        if len(ring) >= _MIN_RING:
            result[k] = statistic(ring)
    return result


def _median(ring: NDArray[np.float32]) -> float:
    return float(np.median(ring)) if len(ring) else 0.0


def _robust_sd(ring: NDArray[np.float32]) -> float:
    return 1.4826 * float(np.median(np.abs(ring - np.median(ring)))) if len(ring) else 0.0


def _streak_like(region: Region, grid: Grid, opts: SeedOptions) -> str:
    """Non-empty when the region is a streak: within one slice, long and thin in-plane."""
    if region.slices > 1 or len(region.points_mm) < 4:
        return ""
    _, values, _ = principal_line(region.points_mm, region.excess + 1e-9)
    length = 4.0 * float(np.sqrt(max(values[0], 0.0)))
    width = 4.0 * float(np.sqrt(max(values[1], 0.0)))
    if length > 0.75 * opts.max_extent_mm and length > 4.0 * max(width, 1e-3):
        return f"streak-like: one slice, {length:.0f} mm long, {width:.1f} mm wide"
    return ""
