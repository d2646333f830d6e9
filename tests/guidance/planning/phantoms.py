"""Planning phantoms: a spherical target in a body box on a 2 mm grid, with optional structures."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

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
