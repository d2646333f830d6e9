"""Seeds in an intra-procedure CT: compact metal regions, counted and split.

Method:

1. Candidates (:mod:`guidance.detection.candidates`): connected regions (26-connectivity)
   of voxels above ``threshold_hu`` outside ``exclude_mask`` (needles); regions longer than
   ``max_extent_mm`` are bone or needles, not seeds, unless they are a thin chain of up to
   ``max_cluster`` seeds touching end to end along one needle (no wider than a seed is
   long, no longer than ``max_cluster`` x (4.5 mm + one voxel)). The volume is labelled on
   4-voxel blocks first and only the boxes of the coarse components at full resolution
   (the same regions, found without labelling the whole volume). A seed touching bone
   joins the bone's region: on slices up to ``reference_slice_mm``, where the free seeds'
   peak clearly outshines the bone (by a fifth), regions too large for seeds are cut
   again halfway between the bone's brightest level (99th percentile) and the seeds'
   median peak, and seed-sized parts there are candidates too (counted by their length,
   with a lower confidence). On thicker slices the level falls with the thickness and
   joins seeds apart: a region too large for seeds loses its plateaus (parts above 1.5 x
   the level wider than a seed and covering more of a slice than ``max_cluster`` seeds:
   bone cut by the scan's range) with the tissue around them, and is cut into its
   intensity basins (one per peak standing out by ``basin_persistence``,
   :func:`guidance.detection.components.basins`); a basin still too large is cut again at
   twice the level.
2. Each region's local background (:mod:`guidance.detection.regions`) is the median HU of
   a shell around it (slice by slice on slices thicker than ``reference_slice_mm``); its
   excess (HU - background, voxels of the region grown by the integration margin, not into
   another region's or a needle's voxels) is integrated in HU x mm^3.
3. One seed's integral is the most common one over regions (or given); a region holds
   round(integral / single) seeds. Regions below ``min_fraction`` of a seed are noise or
   streak fragments; in-plane streak-like regions (one slice, long and thin) are rejected.
   Touching seeds end to end darken and saturate each other, so a chain is also counted
   from its length (variance along its axis against one seed's, measured in the scan) where
   the integral does not contradict it. On thick slices a region below ``_FRAGMENT`` of a
   seed that touches another is merged with it where together they hold a whole count
   (a seed straddling two slices, cut in halves by the basins).
4. A region of 2 to ``max_cluster`` seeds is split into the most seed-like of a weighted
   k-means of its voxel positions and equal-excess slabs across each principal axis (side
   by side seeds are cut across their width, which k-means does not do); for three or more
   whose integral holds the count, on slices up to ``reference_slice_mm``, also one seed set
   apart and the rest split on their own (a pair side by side with a third seed off its end).
   In a cluster of touching seeds in no single row, on such slices, two parts a diameter and
   a voxel apart that are one seed long together are placed side by side
   (:func:`guidance.detection.layouts.side_by_side_pairs`). The parts give
   each seed its voxels (orientation, confidence); where the region is one seed long
   (side by side) or as long as its count (end to end), the seeds are placed by that
   model from the whole region's principal axes (:mod:`guidance.detection.layouts`):
   a split of thick slices cannot place them along the slice axis better than a slice. On
   thick slices a cluster one seed long by its 3-D spread but longer in the slice plane than
   a seed is a row the slices hide: placed by equal-excess slabs along its in-plane axis; a
   cluster longer in the slice plane than its seeds could be end to end along its axis holds
   seeds lying across it, one over another: each takes whole slices.
5. Position: excess-weighted centroid (LPS mm); long axis: principal axis of the excess
   distribution after removing each voxel's own extent (spacing^2 / 12 per axis), when it
   stands out, on thick slices lies away from the slice normal, and no needle's voxels cut
   the seed's edge (its shape is truncated there: 10 degrees off). A single seed within
   ``max_mirror_tilt_deg`` of the slice plane is then turned about the slice normal to the
   azimuth of its image's best mirror symmetry (:mod:`guidance.detection.mirror_axis`): a
   streak crossing it tilts the principal axis more. On thick slices the
   centroid pulls a seed towards its slice's centre: a single seed (not beside bone or a
   needle) is placed along the slice axis by how much of it each slice sees, through the
   slice profiles a scanner may have (:mod:`guidance.detection.slice_profile`); so is a
   single seed whose footprint a needle's voxels hide in the slice next to its brightest, the
   missing part of its integral taken for that slice's share (:func:`_hidden_share`); so is the
   centre of a row of seeds side by side (the row moves as one), and each seed of a cluster
   in no single row (whose parts stand) by the pixels nearest it in-plane
   (:mod:`guidance.detection.along_slices`); so are the seeds of a chain of three or more,
   then moved onto the straight line fitted to them along the slice axis. Three or more
   seeds end to end along their in-plane axes in separate regions (one strand) are moved
   onto their line too: the strand's neighbours disturb each seed's share of the slices.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from guidance import __version__
from guidance.detection.along_slices import chains, in_plane_axis, on_strand_line, place_parts, place_seed
from guidance.detection.candidates import SEED_LENGTH_MM, thick_slices, threshold_level_hu
from guidance.detection.clusters import centroid, long_axis, slice_indices, split, spread
from guidance.detection.layouts import (
    APART,
    Layout,
    chain_count,
    cluster_layout,
    region_in_plane_axis_mm,
    side_by_side_pairs,
)
from guidance.detection.mirror_axis import mirror_azimuth
from guidance.detection.regions import Region, candidate_regions
from guidance.detection.result import SEED_STAGE, DetectedSeed, SeedDetection, SeedOptions
from guidance.detection.slice_profile import SliceSums
from guidance.provenance import Provenance
from guidance.volume import Grid, Volume

__all__ = ["detect_seeds", "threshold_level_hu"]

logger = logging.getLogger(__name__)


# A count by length is trusted where the integral reaches this fraction of it: touching seeds
# end to end darken each other (a chain of 2 integrates down to 1.3 seeds). On thick slices
# a single seed straddling two slices looks a slice longer (its length counts 2 where the
# integral says 1.5): the integral must reach three quarters of the count there.
_LENGTH_TRUST, _THICK_LENGTH_TRUST = 0.65, 0.75
_FRAGMENT = 0.65  # of a seed's integral: below it a region touching another may be part of its seed
# Beyond this a seed's reasons say how far along the slice axis it may be (confidence x 0.9).
_SLICE_AXIS_TOLERANCE_MM = 1.0
# A single seed missing this much of its integral under a needle's voxels in the next thick slice
# is placed with that slice's share (:func:`_hidden_share`); a seed's integral varies by about
# _INTEGRAL_SPREAD of itself between seeds in one scan (its share's noise).
_HIDDEN, _INTEGRAL_SPREAD = 0.1, 0.1


def _misfit(region: Region, grid: Grid, elongation: float) -> float:
    """How far a whole region's elongation (largest minus second variance, mm^2) is from one seed's."""
    values = spread(region.points_mm, region.excess, grid)
    return abs(float(values[0] - values[1]) - elongation)


def _merge_fragments(regions: list[Region], single: float, grid: Grid) -> list[Region]:
    """Regions with a fragment of a seed merged into the touching region that completes it.

    On thick slices a seed straddling two slices can be cut by the basins (its halves peak
    in different slices, each a basin): half of it stays a fragment (0.4-0.6 of a seed) and
    half joins a neighbouring basin, which then holds 1.5 seeds. Each fragment (below
    ``_FRAGMENT`` of a seed, smallest first) merges with the touching region with which the
    total is closest to a whole count, where that is closer than the two apart.
    """
    alive = {r.number: r for r in regions}
    for number in [r.number for r in sorted(regions, key=lambda r: (r.integral, r.number))]:
        fragment = alive.get(number)  # as merged so far
        if fragment is None or fragment.integral >= _FRAGMENT * single:
            continue
        best: tuple[float, int] | None = None
        for k in sorted(fragment.touching & alive.keys()):
            together = _misfit_count((fragment.integral + alive[k].integral) / single)
            apart = _misfit_count(fragment.integral / single) + _misfit_count(alive[k].integral / single)
            if together < apart - 1e-9 and (best is None or together < best[0] - 1e-9):
                best = (together, k)
        if best is not None:
            merged = _merged(fragment, alive.pop(best[1]), grid)
            del alive[fragment.number]
            alive = {k: (replace(r, touching=(r.touching - {fragment.number}) | {merged.number})
                         if fragment.number in r.touching else r) for k, r in alive.items()}  # fmt: skip
            alive[merged.number] = merged
    return sorted(alive.values(), key=lambda r: r.number)


def _misfit_count(ratio: float) -> float:
    """How far an integral (in seeds) is from the whole count it is given (at least one)."""
    return abs(ratio - max(1, round(ratio)))


def _merged(fragment: Region, other: Region, grid: Grid) -> Region:
    """The union of two touching regions (a voxel in both integration margins counted once)."""
    points = np.concatenate([other.points_mm, fragment.points_mm])
    excess = np.concatenate([other.excess, fragment.excess])
    _, first = np.unique(np.round(points, 3), axis=0, return_index=True)
    points, excess = points[np.sort(first)], excess[np.sort(first)]
    along = points @ np.asarray(grid.axes[0], dtype=np.float64)
    return replace(
        other, points_mm=points, excess=excess, integral=float(excess.sum() * grid.voxel_volume_cc * 1000.0),
        background_sd=max(other.background_sd, fragment.background_sd),
        slices=round(float(np.ptp(along)) / float(grid.spacing_mm[0])) + 1,
        near_excluded=other.near_excluded or fragment.near_excluded,
        cut_by_excluded=other.cut_by_excluded or fragment.cut_by_excluded,
        beside_bone=other.beside_bone or fragment.beside_bone, peak_hu=max(other.peak_hu, fragment.peak_hu),
        touching=(other.touching | fragment.touching) - {other.number, fragment.number},
        slice_sums=other.slice_sums.joined(fragment.slice_sums)
        if other.slice_sums is not None and fragment.slice_sums is not None else None, stack=None,
    )  # fmt: skip


def _single_elongation(regions: list[Region], single: float, grid: Grid) -> float:
    """One seed's largest minus second variance (mm^2): median over the regions of one seed's integral.

    It depends on where the seed's metal is (a marker rod shorter than the capsule) and on
    the blur; without single seeds in the scan, a uniform 4.5 mm rod's L^2 / 12.
    """
    values = [spread(r.points_mm, r.excess, grid) for r in _singles(regions, single)]
    if not values:
        return SEED_LENGTH_MM**2 / 12.0
    return float(np.median([v[0] - v[1] for v in values]))


def _singles(regions: list[Region], single: float) -> list[Region]:
    """The regions holding one seed's integral (within 30 %): the scan's own single seeds."""
    return [r for r in regions if 0.7 <= r.integral / single <= 1.3]


def _single_peak(regions: list[Region], single: float) -> float:
    """One seed's peak HU in this scan: the median over the regions of one seed's integral (0 if none)."""
    peaks = [r.peak_hu for r in _singles(regions, single)]
    return float(np.median(peaks)) if peaks else 0.0


def _single_integral(regions: list[Region], opts: SeedOptions) -> float:
    if opts.single_seed_integral is not None:
        return opts.single_seed_integral
    integrals = np.array([r.integral for r in regions])
    if len(integrals) == 0:
        return float("nan")
    # The most common integral (the most regions within 25 % of it; the smaller on a tie):
    # single seeds agree with each other; clusters of 2, 3 and 4, needle remnants and streak
    # fragments (spread over decades) do not, even where they are many or large.
    big = np.sort(integrals[integrals > 0])
    if len(big) == 0:
        return float("nan")
    support = [np.count_nonzero(np.abs(big - c) <= 0.25 * c) for c in big]
    mode = float(big[int(np.argmax(support))])
    return float(np.median(big[np.abs(big - mode) <= 0.25 * mode]))


def _partition(
    region: Region, ratio: float, elongation: float, grid: Grid, opts: SeedOptions
) -> tuple[int, NDArray[np.int64], bool] | str:
    """How many seeds a region holds, each voxel's seed, and whether they are whole separate seeds.

    Touching seeds darken each other (beam hardening) and saturate together: a chain's
    integral falls short of its count, its length does not. On thick slices a single seed's
    elongation varies with its tilt and with where it lies in its slices: the length is taken
    only where the integral agrees with it within that shortfall (``_LENGTH_TRUST``). The
    length counts seeds end to end (pitch = seed length); seeds further apart joined by blur
    or streaks look longer than their count: where the integral says fewer, the count whose
    parts look most like one seed wins, and those parts are whole seeds (each shows its own
    axis).
    """
    by_length = chain_count(region, elongation, grid)
    thick = thick_slices(grid, opts)
    trust = _THICK_LENGTH_TRUST if thick else _LENGTH_TRUST
    trusted = by_length <= opts.max_cluster and ratio >= trust * by_length
    count = max(1, round(ratio), by_length if trusted else 1)
    if count > opts.max_cluster:
        return f"{ratio:.1f} seeds' worth of metal in one region: not split (more than {opts.max_cluster})"
    if count == 1:
        return 1, np.zeros(len(region.points_mm), dtype=np.int64), False
    one_long = by_length == 1
    by_integral = max(1, round(ratio))
    # One seed apart from the rest, split on its own: where the integral holds the count, and on
    # slices up to the reference (on thicker ones it cost the second renderer's 5 mm scan a seed).
    one_apart = by_integral >= count and not thick
    labels, misfit = split(region.points_mm, region.excess, count, grid, elongation, one_seed_long=one_long,
                           one_apart=one_apart)  # fmt: skip
    if by_integral < count:
        fewer, fewer_misfit = (
            (np.zeros(len(region.points_mm), dtype=np.int64), _misfit(region, grid, elongation))
            if by_integral == 1
            else split(region.points_mm, region.excess, by_integral, grid, elongation)
        )
        if fewer_misfit < misfit:
            return by_integral, fewer, True
    return count, labels, False


def _seeds_of(
    region: Region, single: float, elongation: float, flat_mm: float, image: NDArray[np.generic], grid: Grid,
    opts: SeedOptions,
) -> list[_Found] | str:
    ratio = region.integral / single
    if ratio < opts.min_fraction:
        return f"too faint for a seed ({ratio:.2f} of one seed's integrated intensity)"
    if region.beside_bone:  # the bone around it adds to its integral: counted by its length alone
        ratio = min(ratio, 1.0)
    partition = _partition(region, ratio, elongation, grid, opts)
    if isinstance(partition, str):
        return partition
    count, labels, separate = partition
    reasons: list[str] = []
    confidence = 1.0
    if abs(ratio - count) > 0.3:
        confidence -= min(0.5, abs(ratio - count) / count)
        reasons.append(f"integrated intensity {ratio:.2f} seeds, counted as {count}")
    if region.beside_bone:
        confidence *= 0.8
        reasons.append("in contact with bone: found above the bone's brightest level")
    if region.near_excluded:
        confidence *= 0.8
        reasons.append("near a needle")
    if region.cut_by_excluded:
        reasons.append("its edge reaches a needle's voxels: its shape is cut there, orientation unknown")
    if region.background_sd > opts.streak_sd_hu:
        confidence *= 0.85
        reasons.append(f"streaks around it (background sd {region.background_sd:.0f} HU)")
    if _at_scan_end(region, grid):
        confidence *= 0.8
        reasons.append("in the scan's first or last slice: it may go on beyond the range (a needle's tip)")
    if count > 1:
        confidence *= 0.8
        reasons.append(f"split from a cluster of {count}")
    seeds = []
    axes = []
    whole = long_axis(region.points_mm, region.excess, grid, opts) if count > 1 else np.full(3, np.nan)
    layout = cluster_layout(region, count, elongation, grid, opts) if count > 1 and not separate else APART
    if layout.kind == "side_or_chain" and layout.positions is not None:
        either_mm = abs(float((layout.positions[1] - layout.positions[0]) @ np.asarray(grid.axes[0]))) / 2
        confidence *= 0.9
        reasons.append(f"side by side or end to end (the slices show either): placed between, within "
                       f"+-{either_mm:.1f} mm along the slice axis")  # fmt: skip
    for j in range(count):
        members = labels == j
        points, weights = region.points_mm[members], region.excess[members]
        direction = long_axis(points, weights, grid, opts)
        if count > 1 and not abs(float(np.nan_to_num(direction) @ np.nan_to_num(whole))) > np.cos(
            np.radians(30.0)
        ):
            # Side-by-side seeds split across their axes: a part's own elongation is the cut's.
            direction = np.full(3, np.nan)
        elif layout.kind != "apart":
            # Touching seeds agreeing with the cluster's axis lie along it (a chain, or side by
            # side): the whole cluster measures that axis over a longer or heavier baseline.
            direction = whole
        if region.cut_by_excluded:
            direction = np.full(3, np.nan)
        elif count == 1:
            direction = mirror_azimuth(image, grid, points, weights, direction, opts)
        seeds.append(DetectedSeed(centroid(points, weights), direction, float(np.clip(confidence, 0.0, 1.0)),
                                  tuple(reasons), count > 1, count))  # fmt: skip
        axes.append(in_plane_axis(points, weights, grid))
    thick = thick_slices(grid, opts)
    if layout.kind == "mixed" and count >= 3 and not thick:
        parts = np.array([seed.position_mm for seed in seeds])
        placed = side_by_side_pairs(parts, region.points_mm, region.excess, labels, elongation, grid, opts)
        seeds = [replace(seed, position_mm=p) for seed, p in zip(seeds, placed, strict=True)]
    if layout.positions is not None:
        placed = layout.positions
        order = np.argsort([float(s.position_mm @ (placed[-1] - placed[0])) for s in seeds], kind="stable")
        seeds = [replace(seeds[j], position_mm=placed[rank]) for rank, j in enumerate(order)]
        axes = [axes[j] for j in order]
    uncertainties = np.zeros(count)
    along = thick and not (region.beside_bone or region.near_excluded)
    if along:
        # Beside bone or a needle, the neighbouring slices' metal is not the seed's.
        positions, uncertainties = _along_slices(seeds, region, layout, flat_mm, grid, opts)
        seeds = [replace(seed, position_mm=p) for seed, p in zip(seeds, positions, strict=True)]
    elif count == 1 and thick and region.cut_by_excluded and not region.beside_bone:
        shares = _hidden_share(region, ratio)
        if shares is not None:
            placed, uncertainty_mm = place_seed(
                seeds[0].position_mm, shares, axis_in_plane_mm=region_in_plane_axis_mm(region, grid),
                flat_mm=flat_mm, seed_length_mm=SEED_LENGTH_MM, seed_diameter_mm=opts.seed_diameter_mm,
                grid=grid,
            )  # fmt: skip
            hidden = (f"{1.0 - ratio:.2f} of it under a needle's voxels in the next slice: placed along the "
                      "slice axis with that slice's share")  # fmt: skip
            seeds = [replace(seeds[0], position_mm=placed, reasons=(*seeds[0].reasons, hidden))]
            uncertainties = np.array([uncertainty_mm])
    return [_Found(*each, along) for each in zip(seeds, axes, uncertainties, strict=True)]


def _hidden_share(region: Region, ratio: float) -> SliceSums | None:
    """A single seed's slice shares on thick slices where a needle's voxels hide one of its slices.

    The needle mask, drawn about an axis found on thick slices (degrees off), may cover the
    seed's footprint in the slice next to its brightest: the region then holds only what the
    other slices show (``ratio`` of a seed's integral), and its centroid falls towards them, up
    to half a slice off. Where at least ``_HIDDEN`` of a seed is missing and
    its footprint is mostly masked (over half its template's weight) in exactly one slice next
    to the brightest, that slice's share is the missing 1 - ``ratio`` (its noise the integral's
    spread between seeds, ``_INTEGRAL_SPREAD``) and the shown slices share ``ratio`` as they
    show it. None where that does not hold.
    """
    stack = region.stack
    if stack is None or ratio > 1.0 - _HIDDEN:
        return None
    index, amplitude, sd = stack.sums().amplitudes()
    if not np.any(amplitude > 0):
        return None
    weight = stack.template**2
    total = float(weight.sum())
    if not total > 0:
        return None
    masked = 1.0 - (weight[None] * stack.usable).sum(axis=(1, 2)) / total
    brightest = int(index[np.argmax(amplitude)])
    first = stack.first_index[0]
    neighbours = [k for k in (brightest - 1, brightest + 1) if 0 <= k - first < len(masked)]
    hidden = [k for k in neighbours if masked[k - first] > 0.5]
    shown = (index != hidden[0]) & (amplitude > 0) if len(hidden) == 1 else np.zeros(len(index), dtype=bool)
    if not shown.any():
        return None
    scale = ratio / float(amplitude[shown].sum())
    slices = np.append(index[shown], hidden[0])
    order = np.argsort(slices)
    share = np.append(amplitude[shown] * scale, 1.0 - ratio)[order]
    noise = np.append(sd[shown] * scale, _INTEGRAL_SPREAD)[order]
    return SliceSums(slices[order].astype(np.int64), share, np.ones(len(slices)), noise**2)


def _at_scan_end(region: Region, grid: Grid) -> bool:
    """Whether a quarter of the region's excess lies in the scan's first or last slice.

    The scan shows only the part of it within the range: a needle coming in from beyond it
    with its tip a few millimetres inside looks like a seed there (one seed long, one or
    two seeds' worth of steel).
    """
    slice_of = slice_indices(region.points_mm, grid)
    end = (slice_of == 0) | (slice_of == grid.shape[0] - 1)
    total = float(region.excess.sum())
    return total > 0 and float(region.excess[end].sum()) >= 0.25 * total


class _Found(NamedTuple):
    """A seed of a region before the scan's strands are known (thick slices)."""

    seed: DetectedSeed
    axis_mm: NDArray[np.float64]  # its axis in the slice plane (:func:`in_plane_axis`), mm
    uncertainty_mm: float  # how far along the slice axis it may be (0 where not placed by the slices)
    along_slices: bool  # placed along the slice axis on thick slices (not beside bone or a needle)


def _along_slices(
    seeds: list[DetectedSeed], region: Region, layout: Layout, flat_mm: float, grid: Grid, opts: SeedOptions
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A region's seeds on thick slices placed along the slice axis (:mod:`guidance.detection.along_slices`).

    A single seed by the whole region's slice sums. Touching seeds side by side move
    together: their row's centre is placed like one seed, by the whole region's sums. Touching
    seeds in no single row ("mixed": the split's parts stand, their centroids a staircase
    along the slice axis), and seeds apart, each by the pixels nearest it in-plane. A chain of
    three or more: each seed so, then all on the straight line fitted to them (the chain
    model's principal axis leans towards the slice axis by the slices' staircase). Seeds placed
    by another cluster model (a chain of two; seeds stacked along the slice axis, their pixels
    mixed in-plane) keep its places. Returns the (k, 3) positions and how far along the slice
    axis each may be (k,), mm.
    """
    lengths = {"flat_mm": flat_mm, "seed_length_mm": SEED_LENGTH_MM,
               "seed_diameter_mm": opts.seed_diameter_mm}  # fmt: skip
    positions = np.array([s.position_mm for s in seeds])
    if (len(seeds) == 1 or layout.kind == "side_by_side") and region.slice_sums is not None:
        centre = positions.mean(axis=0)
        axis_mm = region_in_plane_axis_mm(region, grid)
        placed, uncertainty_mm = place_seed(centre, region.slice_sums, axis_in_plane_mm=axis_mm, grid=grid,
                                            **lengths)  # fmt: skip
        return positions + (placed - centre), np.full(len(seeds), uncertainty_mm)
    if layout.kind in ("mixed", "apart") and region.stack is not None:
        return place_parts(positions, region.stack, grid=grid, **lengths)
    if layout.kind == "chain" and len(seeds) >= 3 and region.stack is not None:
        parts, _ = place_parts(positions, region.stack, grid=grid, **lengths)
        return on_strand_line(parts, grid)[0], np.zeros(len(seeds))
    return positions, np.zeros(len(seeds))


def _strands(found: list[_Found], flat_mm: float, grid: Grid) -> list[_Found]:
    """Seeds end to end along one needle track moved along the slice axis onto their line.

    Thick slices place each seed of a strand on its own (:func:`_along_slices`), and the
    strand's neighbours in the slices next to a seed disturb its share there (their tails,
    and the dark bands that streaks draw between metal objects along the strand's line).
    Seeds of one strand lie on their track: three or more in a run
    (:func:`guidance.detection.along_slices.chains`) are placed on the straight line fitted
    to them (:func:`guidance.detection.along_slices.on_strand_line`), unless one of them is
    more than half a slice from it (then they are not on one straight track).
    """
    members = [k for k, each in enumerate(found) if each.along_slices]
    if len(members) < 3:
        return found
    positions = np.array([found[k].seed.position_mm for k in members])
    axes = np.array([found[k].axis_mm for k in members])
    result = list(found)
    for run in chains(positions, axes, grid, flat_mm=flat_mm, seed_length_mm=SEED_LENGTH_MM):
        moved, shift = on_strand_line(positions[run], grid)
        if np.max(np.abs(shift)) > 0.5 * float(grid.spacing_mm[0]):
            continue
        for k, position in zip(run, moved, strict=True):
            each = found[members[k]]
            seed = replace(each.seed, position_mm=position)
            result[members[k]] = each._replace(seed=seed, uncertainty_mm=0.0)
    return result


def _finished(found: _Found) -> DetectedSeed:
    """The seed; where it may be more than 1 mm off along the slice axis, it says so."""
    seed = found.seed
    if found.uncertainty_mm > _SLICE_AXIS_TOLERANCE_MM:
        seed = replace(seed, confidence=seed.confidence * 0.9, reasons=(*seed.reasons, (
            f"along the slice axis within +-{found.uncertainty_mm:.1f} mm: the slices show no position "
            "in their profile's middle")))  # fmt: skip
    return seed


def _flat_length_mm(regions: list[Region], single: float, grid: Grid) -> float:
    """How long a seed lying in the slice plane looks in this scan (:func:`region_in_plane_axis_mm`), mm.

    The 90th percentile over the scan's single seeds, at least five of them (seeds lie at all
    angles; the metal inside the capsule may be shorter than its 4.5 mm); otherwise 4.5 mm.
    """
    lengths = [region_in_plane_axis_mm(r, grid) for r in _singles(regions, single)]
    if len(lengths) < 5:
        return SEED_LENGTH_MM
    return max(float(np.percentile(lengths, 90.0)), 1.0)


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
    regions, rejected = candidate_regions(ct, exclude, opts)
    single = _single_integral(regions, opts)
    regions = _merge_fragments(regions, single, ct.grid)
    elongation = _single_elongation(regions, single, ct.grid) if regions else 0.0
    flat_mm = _flat_length_mm(regions, single, ct.grid) if thick_slices(ct.grid, opts) else SEED_LENGTH_MM
    peak = _single_peak(regions, single)
    image = np.asarray(ct.array)
    found_seeds: list[_Found] = []
    notes: list[str] = []
    grid = ct.grid
    for region in regions:
        found = (
            f"too faint a peak for metal: {region.peak_hu:.0f} HU, a seed's {peak:.0f} HU"
            if region.peak_hu < opts.min_peak_fraction * peak
            else _seeds_of(region, single, elongation, flat_mm, image, grid, opts)
        )  # fmt: skip
        if isinstance(found, str):
            rejected.append((centroid(region.points_mm, region.excess), found))
        else:
            found_seeds.extend(found)
    if thick_slices(grid, opts):
        found_seeds = _strands(found_seeds, flat_mm, grid)
    seeds = [_finished(each) for each in found_seeds]
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
