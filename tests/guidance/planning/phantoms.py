"""Planning phantoms: a spherical target in a body box on a 2 mm grid, with optional structures."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from guidance.dose import seed_contributions
from guidance.planning import PlacementOptions, candidate_tracks, structure_samples
from guidance.planning.greedy import TargetTerm, gaps_ok, select_seeds
from guidance.planning.improve import Geometry
from guidance.planning.optimiser import _candidates, _conflicts
from guidance.volume import Grid, Volume

SPACING_MM = 2.0
HALF_WIDTH_MM = 40.0


def radius_mm(volume_cc: float) -> float:
    return float((3.0 * volume_cc * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0))


def grid() -> Grid:
    return Grid.from_bounds([-HALF_WIDTH_MM] * 3, [HALF_WIDTH_MM] * 3, SPACING_MM)


def sphere_fraction(
    grid: Grid, radius: float, centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> Volume:
    """Fraction of each voxel inside a ball (3 x 3 x 3 subsamples)."""
    centres = grid.voxel_centres_mm() - np.asarray(centre_mm)
    offsets = (np.arange(3) - 1.0) / 3.0 * grid.spacing_mm[0]
    fraction = np.zeros(grid.shape)
    for dx in offsets:
        for dy in offsets:
            for dz in offsets:
                fraction += np.linalg.norm(centres + np.array([dx, dy, dz]), axis=-1) <= radius
    return Volume.on_grid(grid, (fraction / 27.0).astype(np.float32))


def box_mask(grid: Grid, lower_mm: list[float], upper_mm: list[float]) -> Volume:
    centres = grid.voxel_centres_mm()
    inside: NDArray[np.bool_] = np.all((centres >= lower_mm) & (centres <= upper_mm), axis=-1)
    return Volume.on_grid(grid, inside)


def body(grid: Grid) -> Volume:
    """Everything but the outermost voxel layer: the skin is at the grid's faces."""
    edge = HALF_WIDTH_MM - 0.5 * SPACING_MM
    return box_mask(grid, [-edge + 1.0] * 3, [edge - 1.0] * 3)


def lookup(volume: Volume, points_mm: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Mask value (>= 0.5) at the nearest voxel of each point (False outside the grid)."""
    index = np.rint(volume.patient_to_index(points_mm)).astype(int)
    upper = np.asarray(volume.shape) - 1
    inside = np.all((index >= 0) & (index <= upper), axis=1)
    clipped = np.clip(index, 0, upper)
    values = np.asarray(volume.array, dtype=np.float64)[tuple(clipped.T)] >= 0.5
    result: NDArray[np.bool_] = values & inside
    return result


def assert_spacing_rules(geometry: Geometry, chosen: list[int], options: PlacementOptions) -> None:
    """Seeds at least the minimum distance apart, gaps along each track within the maximum,
    and no two used tracks in conflict."""
    positions = geometry.positions_mm[chosen]
    distance = np.linalg.norm(positions[:, np.newaxis] - positions[np.newaxis], axis=-1)
    np.fill_diagonal(distance, np.inf)
    assert distance.min() >= options.min_seed_distance_mm - 1e-9
    used = sorted({int(geometry.tracks[j]) for j in chosen})
    for track in used:
        on_track = [j for j in chosen if geometry.tracks[j] == track]
        assert gaps_ok(geometry.positions_mm[on_track], options.max_seed_gap_mm)
        assert not geometry.conflicts(track) & set(used)


def greedy_on_sphere(
    volume_cc: float, options: PlacementOptions, goal_gy: float, track_spacing_mm: float
) -> tuple[TargetTerm, Geometry, tuple[int, ...]]:
    """The greedy selection (with its removal pass) on a sphere, candidate tracks along +Y."""
    g = grid()
    target = sphere_fraction(g, radius_mm(volume_cc))
    tracks = candidate_tracks(
        target, body(g), directions=[(0.0, 1.0, 0.0)], track_spacing_mm=track_spacing_mm
    ).tracks
    positions, directions, owners = _candidates(tracks)
    points, weights = structure_samples(target, options.sample_spacing_mm)
    strengths = np.full(positions.shape[0], options.strength_u)
    influence = seed_contributions(points, positions, directions, strengths, options.source_model)
    term = TargetTerm(weights, np.zeros(points.shape[0]), influence)
    conflicts = _conflicts(tracks, options.min_track_distance_mm)
    geometry = Geometry(positions, owners, conflicts, np.full(positions.shape[0], np.inf))
    selection = select_seeds(
        term, [], positions, owners, conflicts, np.zeros((0, 3)), options, goal_gy=goal_gy
    )
    return term, geometry, selection.chosen
