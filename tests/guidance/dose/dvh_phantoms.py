"""Analytic DVH phantoms: a contoured sphere around a point-like source, D(r) = D0 (r0 / r)^2.

The sphere is drawn as DICOM would: regular polygons on planes 2 mm apart, each filling a
slab half way to its neighbours (and 1 mm past the end planes), so the structure is a stack
of short prisms, not a ball. Its exact DVH follows from the volume of that stack within a
distance s of the source (the slabs' polygons are replaced by discs of equal area, exact to
1e-4 with 180 vertices): the part receiving at least d is the part within s = r0 sqrt(D0 / d).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import integrate, optimize

from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume

RADIUS_MM, D0_GY, R0_MM, VERTICES = 15.0, 150.0, 10.0, 180
PLANE_SPACING_MM = 2.0


def planes_mm(radius_mm: float = RADIUS_MM) -> NDArray[np.float64]:
    top = math.floor((radius_mm - 0.5) / PLANE_SPACING_MM) * PLANE_SPACING_MM
    return np.arange(-top, top + 1e-9, PLANE_SPACING_MM)


def sphere(
    radius_mm: float = RADIUS_MM,
    *,
    name: str = "GTV",
    role: StructureRole = StructureRole.TARGET,
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    number: int = 1,
    frame: str = "",
) -> Structure:
    angles = np.linspace(0.0, 2.0 * math.pi, VERTICES, endpoint=False)
    contours = []
    for z in planes_mm(radius_mm):
        r = math.sqrt(radius_mm**2 - z**2)
        ring = np.column_stack([r * np.cos(angles), r * np.sin(angles), np.full(VERTICES, z)])
        contours.append(ring + np.asarray(centre_mm))
    return Structure(name, role, tuple(contours), frame, number)


def point_dose(grid: Grid, *, d0_gy: float = D0_GY, r0_mm: float = R0_MM) -> Volume:
    distance_mm = np.linalg.norm(grid.voxel_centres_mm(), axis=-1)
    return Volume.on_grid(grid, d0_gy * (r0_mm / np.maximum(distance_mm, 1.0)) ** 2)


def _slabs(radius_mm: float) -> list[tuple[float, float, float]]:
    """(disc radius^2 of equal area, lower z, upper z) of each slab."""
    planes = planes_mm(radius_mm)
    half = PLANE_SPACING_MM / 2.0
    area_factor = VERTICES / (2.0 * math.pi) * math.sin(2.0 * math.pi / VERTICES)
    return [((radius_mm**2 - z**2) * area_factor, z - half, z + half) for z in planes]


def volume_within_cc(distance_mm: float, radius_mm: float = RADIUS_MM) -> float:
    """Volume of the contoured sphere (centred on the source) within ``distance_mm`` of it."""
    total = 0.0
    for rho2, lower, upper in _slabs(radius_mm):
        area = lambda z, rho2=rho2: math.pi * min(rho2, max(distance_mm**2 - z * z, 0.0))  # noqa: E731
        total += integrate.quad(area, lower, upper, limit=200)[0]
    return total / 1000.0


def farthest_point_mm(radius_mm: float = RADIUS_MM) -> float:
    """Distance from the source of the structure's farthest point (a slab corner)."""
    return max(math.sqrt(rho2 + max(lower**2, upper**2)) for rho2, lower, upper in _slabs(radius_mm))


def dose_at_distance(distance_mm: float) -> float:
    return D0_GY * (R0_MM / distance_mm) ** 2


def exact_dose_at_percent(percent: float, radius_mm: float = RADIUS_MM) -> float:
    wanted = percent / 100.0 * volume_within_cc(100.0, radius_mm)
    distance = optimize.brentq(
        lambda s: volume_within_cc(s, radius_mm) - wanted, 0.5, 3 * radius_mm, xtol=1e-6
    )
    return dose_at_distance(distance)


def exact_volume_percent_at(dose_gy: float, radius_mm: float = RADIUS_MM) -> float:
    distance = R0_MM * math.sqrt(D0_GY / dose_gy)
    return 100.0 * volume_within_cc(distance, radius_mm) / volume_within_cc(100.0, radius_mm)
