"""A suite of simulated scans with known seeds and needles, and the figures measured on it.

Each :class:`Condition` is one scan: a renderer (the simulator's or the independent
:mod:`tests.guidance.detection.second_renderer`), a slice thickness, a pixel size and a
random seed that places 12 separate seeds and touching clusters (end-to-end chains of
2, 3 and 4, side-by-side pairs and triples) in random orientations. Seed scans are cropped
around the implant (the figures do not depend on the field of view). Needle scans cover the
whole neck so that the skin entry and the tip side are found as in a clinical scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from guidance.detection import detect_needles, detect_seeds, needle_mask
from guidance.volume import Grid, Volume
from tests.guidance.detection import scenes, second_renderer

_GATE_MM = 2.0
_PITCH_MM = 4.6  # end to end, with a little gap
_SIDE_MM = 0.9  # side by side, capsules touching
_HALF_BOX_MM = np.array([15.0, 15.0, 13.0])


@dataclass(frozen=True)
class Condition:
    renderer: str  # "simulator" or "second"
    thickness_mm: float
    pixel_mm: float
    seed: int
    needles: bool = False
    extended_hu: bool = False
    dense: bool = False

    @property
    def label(self) -> str:
        scale = ", extended HU" if self.extended_hu else ""
        kind = (", dense implant" + (" + 8 needles" if self.needles else "")) if self.dense else ""
        return f"{self.renderer} {self.thickness_mm:g} mm slices, {self.pixel_mm:g} mm pixels{scale}{kind}"


@dataclass
class Tally:
    """Counts and errors summed over scans."""

    true_seeds: int = 0
    found_seeds: int = 0
    matched: int = 0
    position_errors_mm: list[float] = field(default_factory=list)
    slice_axis_errors_mm: list[float] = field(default_factory=list)
    orientation_errors_deg: list[float] = field(default_factory=list)
    tip_errors_mm: list[float] = field(default_factory=list)
    angle_errors_deg: list[float] = field(default_factory=list)
    found_needles: int = 0
    false_needles: int = 0

    def add(self, other: Tally) -> None:
        for name in ("true_seeds", "found_seeds", "matched", "found_needles", "false_needles"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("position_errors_mm", "slice_axis_errors_mm", "orientation_errors_deg", "tip_errors_mm",
                     "angle_errors_deg"):  # fmt: skip
            getattr(self, name).extend(getattr(other, name))

    @property
    def sensitivity(self) -> float:
        return self.matched / max(1, self.true_seeds)

    @property
    def precision(self) -> float:
        return self.matched / max(1, self.found_seeds)

    def row(self) -> str:
        def stat(values: list[float]) -> str:
            return f"{np.mean(values):.2f}/{np.max(values):.2f}" if values else "-"

        return (
            f"seeds {self.matched}/{self.true_seeds} found {self.found_seeds}: sens {self.sensitivity:.4f} "
            f"prec {self.precision:.4f}; pos mean/max {stat(self.position_errors_mm)} mm; "
            f"slice-axis {stat(self.slice_axis_errors_mm)} mm; "
            f"orient {stat(self.orientation_errors_deg)} deg (n={len(self.orientation_errors_deg)}); "
            f"tip {stat(self.tip_errors_mm)} mm; "
            f"angle {stat(self.angle_errors_deg)} deg; needles found {self.found_needles} "
            f"(false {self.false_needles})"
        )


def _unit(rng: np.random.Generator) -> NDArray[np.float64]:
    v = rng.normal(size=3)
    result: NDArray[np.float64] = v / np.linalg.norm(v)
    return result


def _cluster(rng: np.random.Generator, kind: str, n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Offsets (from the cluster's centre) and the common axis of n touching seeds."""
    axis = _unit(rng)
    if kind == "chain":
        offsets = np.outer((np.arange(n) - (n - 1) / 2.0) * _PITCH_MM, axis)
    else:
        side = np.cross(axis, _unit(rng))
        side /= np.linalg.norm(side)
        offsets = np.outer((np.arange(n) - (n - 1) / 2.0) * _SIDE_MM, side)
    return offsets, np.tile(axis, (n, 1))


def layout(
    rng: np.random.Generator, centre_mm: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """12 separate seeds and clusters (chains of 2, 3, 4; side by side 2, 3), 6 mm apart from each other."""
    groups = [_cluster(rng, kind, n) for kind, n in
              [("chain", 2), ("chain", 3), ("chain", 4), ("side", 2), ("side", 3)]]  # fmt: skip
    groups += [(np.zeros((1, 3)), _unit(rng)[None, :]) for _ in range(12)]
    positions: list[NDArray[np.float64]] = []
    directions: list[NDArray[np.float64]] = []
    for offsets, axes in groups:
        for _ in range(2000):
            reach = np.abs(offsets).max(axis=0) + 2.5
            centre = centre_mm + rng.uniform(-1.0, 1.0, 3) * np.maximum(_HALF_BOX_MM - reach, 0.5)
            placed = centre + offsets
            if (
                not positions
                or np.linalg.norm(np.vstack(positions)[:, None, :] - placed[None, :, :], axis=2).min() >= 7.0
            ):
                positions.append(placed)
                directions.append(axes)
                break
        else:
            raise RuntimeError("could not place the seeds: the box is too small")
    return np.vstack(positions), np.vstack(directions)


def _sim_grid(
    centre_mm: NDArray[np.float64], pixel_mm: float, thickness_mm: float, field_mm: NDArray[np.float64]
) -> Grid:
    size = math.ceil(field_mm[0] / pixel_mm)
    slices = math.ceil(field_mm[2] / thickness_mm)
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, thickness_mm]
    affine[:3, 1] = [0.0, pixel_mm, 0.0]
    affine[:3, 2] = [pixel_mm, 0.0, 0.0]
    affine[:3, 3] = centre_mm - affine[:3, :3] @ np.array(
        [(slices - 1) / 2.0, (size - 1) / 2.0, (size - 1) / 2.0]
    )
    return Grid((slices, size, size), affine, "1.2.3")


def _needles(centre_mm: NDArray[np.float64], seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two lateral needles 5 mm apart (one slightly oblique) and an anterior one, tips in the implant."""
    rng = np.random.default_rng(seed)
    tips = (
        centre_mm
        + np.array([[8.0, 2.0, 4.0], [8.0, 7.0, 3.0], [-4.0, 5.0, -6.0]])
        + rng.uniform(-1, 1, (3, 3))
    )
    entries = centre_mm + np.array([[75.0, 0.0, -3.0], [75.0, 5.0, -6.0], [-10.0, -60.0, 10.0]])
    return entries, tips


_TRACK_PITCH_MM = 9.0
_SEED_PITCH_MM = 8.0


def dense_layout(
    rng: np.random.Generator, centre_mm: NDArray[np.float64], *, needles: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """A dense implant: 80 seeds and (optionally) 8 needles of a next pass beside the seed rows.

    A 4 x 4 array of parallel tracks 9 mm apart, nearly in-plane (as a lateral neck
    insertion), 5 seeds 8 mm apart on each, jittered 0.7 mm (sd, per axis); the needles
    lie half-way between two rows of one layer (4.5 mm from each), tips 15 mm past the
    middle seed and hubs 60 mm back. Returns seeds, seed axes, needle entries and tips (mm).
    """
    axis = np.array([1.0, 0.03, 0.01]) / np.linalg.norm([1.0, 0.03, 0.01])
    across = np.cross(axis, [0.0, 0.0, 1.0])
    across /= np.linalg.norm(across)
    up = np.cross(axis, across)
    offsets = [(i - 1.5) * _TRACK_PITCH_MM for i in range(4)]
    lines = [centre_mm + a * across + b * up for a in offsets for b in offsets]
    seeds = np.array([line + (j - 2) * _SEED_PITCH_MM * axis for line in lines for j in range(5)])
    seeds += rng.normal(0.0, 0.7, seeds.shape)
    inserted = np.array([centre_mm + a * across + b * up for a in (-9.0, 0.0) for b in offsets])
    if not needles:
        inserted = np.zeros((0, 3))
    return seeds, np.tile(axis, (len(seeds), 1)), inserted - 60.0 * axis, inserted + 15.0 * axis


@cache
def scan(condition: Condition) -> tuple[Volume, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                                        NDArray[np.float64]]:  # fmt: skip
    """The volume, true seed positions and axes, needle entries and tips (LPS mm, scan frame)."""
    model = scenes.patient()
    centre = np.asarray(model.tumour.centre_mm, dtype=np.float64)
    rng = np.random.default_rng(condition.seed)
    if condition.dense:
        seeds, axes, entries, tips = dense_layout(rng, centre, needles=condition.needles)
        # Cropped about the implant: the tips in range, the hubs beyond the scan's edge.
        field_mm = np.array([64.0, 64.0, 40.0])
    elif condition.needles:
        seeds, axes = layout(rng, centre)
        entries, tips = _needles(centre, condition.seed)
        # Needle scans: the whole neck in-plane (skin entries), a short range along the slice axis.
        field_mm = np.array([150.0, 150.0, 36.0])
        seeds, axes = seeds[-12:], axes[-12:]  # separate seeds only, the clusters are in the seed scans
    else:
        seeds, axes = layout(rng, centre)
        entries, tips = np.zeros((0, 3)), np.zeros((0, 3))
        field_mm = 2.0 * _HALF_BOX_MM + 10.0
    if condition.renderer == "simulator":
        grid = _sim_grid(centre, condition.pixel_mm, condition.thickness_mm, field_mm)
        scene = scenes.render(
            model, grid, seeds=(seeds, axes), needles=(entries, tips), noise_seed=condition.seed
        )
        return scene.volume, seeds, axes, entries, tips
    size = math.ceil(field_mm[0] / condition.pixel_mm)
    slices = math.ceil(field_mm[2] / condition.thickness_mm)
    grid = second_renderer.grid(
        centre, pixel_mm=condition.pixel_mm, thickness_mm=condition.thickness_mm, size=size, slices=slices
    )
    # The dense implant (40 x 32 x 32 mm) in soft tissue: in the second renderer's anatomy its
    # corners would touch the bone plate and the air column (seeds touching cortex merge with it).
    look = second_renderer.Appearance(
        max_hu=30710.0 if condition.extended_hu else 3071.0, anatomy=not condition.dense
    )
    volume = second_renderer.render(
        grid, centre, seeds_mm=seeds, seed_directions=axes, needle_entries_mm=entries, needle_tips_mm=tips,
        look=look, noise_seed=condition.seed,
    )  # fmt: skip
    return volume, seeds, axes, entries, tips


def angle_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Angle (degrees) between two axes, either way round."""
    cosine = abs(float(a @ b)) / float(np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, cosine)))


@cache
def measure(condition: Condition) -> Tally:
    """Detect needles then seeds (needle voxels excluded) in the condition's scan; compare with the truth."""
    return measure_scan(*scan(condition))


def measure_scan(
    volume: Volume, seeds: NDArray[np.float64], axes: NDArray[np.float64], entries: NDArray[np.float64],
    tips: NDArray[np.float64],
) -> Tally:
    """Detect needles then seeds (needle voxels excluded) in ``volume``; compare with the truth (LPS mm)."""
    needles = detect_needles(volume)
    exclude = needle_mask(needles, volume.grid, ct=volume) if needles.needles else None
    found = detect_seeds(volume, exclude_mask=exclude)
    tally = Tally(true_seeds=len(seeds), found_seeds=len(found.seeds))
    positions = found.positions_mm
    if len(positions):
        offset = positions[None, :, :] - seeds[:, None, :]
        distance = np.linalg.norm(offset, axis=2)
        normal = volume.grid.axes[0]
        # Gate: 2 mm in-plane, and within the slice (plus 0.5 mm) along its axis, where a seed
        # lying in one thick slice cannot be placed better than the slice.
        across = np.abs(offset @ normal)
        gate = (np.sqrt(np.maximum(distance**2 - across**2, 0.0)) <= _GATE_MM) & (
            across <= max(_GATE_MM, 0.5 * volume.spacing_mm[0] + 0.5)
        )
        rows, cols = linear_sum_assignment(np.where(gate, distance, 1e6))
        for i, j in zip(rows, cols, strict=True):
            if not gate[i, j]:
                continue
            tally.matched += 1
            tally.position_errors_mm.append(float(distance[i, j]))
            tally.slice_axis_errors_mm.append(abs(float((positions[j] - seeds[i]) @ normal)))
            if found.seeds[j].orientation_known:
                tally.orientation_errors_deg.append(angle_deg(found.seeds[j].direction, axes[i]))
    tally.found_needles = len(needles.needles)
    # A found needle is false when its tip is not within the gate of a true needle.
    segments = list(zip(entries, tips, strict=True))
    tally.false_needles = sum(
        1
        for n in needles.needles
        if not any(_segment_distance(n.tip_mm, a, b) <= _GATE_MM for a, b in segments)
    )
    for entry, tip in zip(entries, tips, strict=True):
        if not needles.needles:
            tally.tip_errors_mm.append(float("inf"))
            continue
        nearest = min(needles.needles, key=lambda n: float(n.distance_mm(tip[None, :])[0]))
        seen = scanned_tip(volume.grid, entry, tip)
        # A tip beyond the scanned range: the needle is seen to where it leaves the range, and flagged.
        ok = bool(np.array_equal(seen, tip)) or nearest.tip_outside_scan
        tally.tip_errors_mm.append(float(np.linalg.norm(nearest.tip_mm - seen)) if ok else float("inf"))
        tally.angle_errors_deg.append(angle_deg(nearest.direction, tip - entry))
    return tally


def scanned_tip(grid: Grid, entry: NDArray[np.float64], tip: NDArray[np.float64]) -> NDArray[np.float64]:
    """The tip, or where the needle's way from the entry leaves the scanned range (half a voxel beyond
    the outermost voxel centres) when the tip lies beyond it."""
    t = np.linspace(0.0, 1.0, 2001)
    index = grid.patient_to_index(entry + t[:, None] * (tip - entry))
    inside = np.all((index >= -0.5) & (index <= np.asarray(grid.shape) - 0.5), axis=1)
    if inside[-1] or not inside.any():
        return tip
    last = int(np.flatnonzero(inside)[-1])
    scanned: NDArray[np.float64] = entry + t[last] * (tip - entry)
    return scanned


def _segment_distance(point: NDArray[np.float64], a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Distance (mm) of a point from the segment a-b."""
    axis = b - a
    t = float(np.clip((point - a) @ axis / float(axis @ axis), 0.0, 1.0))
    return float(np.linalg.norm(point - (a + t * axis)))
