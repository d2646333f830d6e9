"""The recurrent tumour (GTV) of the synthetic patient: an irregular, seeded, star-shaped body.

Its surface in direction u (unit vector from the centre) is at radius
R0 g(u), with g(u) = e(u) (1 + sum_k a_k exp((u . v_k - 1) / w_k)): e(u) an
ellipsoid of random axis ratios, the sum random bumps and dents. Because the
body is star-shaped its volume is (R0^3 / 3) * integral of g^3 over the unit
sphere, computed on a Fibonacci lattice, and R0 is set so that the volume is
exactly what was asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from simulators.anatomy import AnatomyParameters, Arrays, body_distance

__all__ = ["TumourShape", "make_tumour", "tumour_distance_mm"]

#: Nominal tumour centres (x for a left-sided tumour; mirrored for the right), mm.
_NOMINAL_CENTRES_MM = {
    "nasopharynx": (4.0, 2.0, 50.0),
    "neck_node": (38.0, 6.0, -15.0),
    "oral_cavity": (4.0, -22.0, 20.0),
    "parotid_bed": (50.0, 16.0, 30.0),
}
_SKIN_MARGIN_MM = 4.0
_LATTICE = 4000


@dataclass(frozen=True, eq=False)
class TumourShape:
    """Centre (mm, planning frame), scale R0 (mm) and the shape function's parameters."""

    centre_mm: NDArray[np.float64]
    radius_mm: float
    axes: NDArray[np.float64]
    bump_directions: NDArray[np.float64]
    bump_amplitudes: NDArray[np.float64]
    bump_widths: NDArray[np.float64]

    def shape_factor(self, u: NDArray[np.floating]) -> NDArray[np.floating]:
        """g(u) for unit vectors u of shape (..., 3)."""
        ellipsoid = 1.0 / np.sqrt(np.sum((u / self.axes.astype(u.dtype)) ** 2, axis=-1))
        bumps = np.ones(u.shape[:-1], dtype=u.dtype)
        for v, a, w in zip(self.bump_directions, self.bump_amplitudes, self.bump_widths, strict=True):
            bumps += a * np.exp((u @ v.astype(u.dtype) - 1.0) / w)
        result: NDArray[np.floating] = ellipsoid * np.maximum(bumps, 0.35)
        return result

    def max_radius_mm(self) -> float:
        return self.radius_mm * float(np.max(self.shape_factor(fibonacci_sphere(_LATTICE)))) * 1.05

    def box_mm(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        reach = self.max_radius_mm() + 1.0
        return self.centre_mm - reach, self.centre_mm + reach

    def surface_points_mm(self, n: int = 2000) -> NDArray[np.float64]:
        u = fibonacci_sphere(n)
        points: NDArray[np.float64] = self.centre_mm + self.radius_mm * self.shape_factor(u)[:, None] * u
        return points

    def volume_cc(self) -> float:
        """Analytic volume (R0^3 / 3) * 4 pi * mean(g^3), cm^3."""
        mean_cube = float(np.mean(self.shape_factor(fibonacci_sphere(20000)) ** 3))
        return self.radius_mm**3 / 3.0 * 4.0 * math.pi * mean_cube / 1000.0


def fibonacci_sphere(n: int) -> NDArray[np.float64]:
    """n nearly uniform unit vectors (golden-angle spiral), shape (n, 3)."""
    k = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def tumour_distance_mm(shape: TumourShape, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    """rho - R0 g(u): < 0 inside the tumour (a distance in mm only along rays from the centre)."""
    c = shape.centre_mm
    p = np.stack([x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])], axis=-1)
    rho = np.sqrt(np.sum(p * p, axis=-1))
    u = p / np.maximum(rho, 1e-6)[..., None]
    d: Arrays = (rho - np.float32(shape.radius_mm) * shape.shape_factor(u)).astype(np.float32)
    return d


def _fits(shape: TumourShape, anatomy: AnatomyParameters) -> bool:
    surface = shape.surface_points_mm().astype(np.float32)
    d = body_distance(anatomy, surface[:, 0], surface[:, 1], surface[:, 2])
    return bool(np.all(d <= -_SKIN_MARGIN_MM))


def make_tumour(
    rng: np.random.Generator,
    anatomy: AnatomyParameters,
    location: str,
    side: float,
    volume_cc: float,
    z_limits_mm: tuple[float, float],
) -> TumourShape:
    """An irregular tumour of exactly ``volume_cc`` near the nominal centre of ``location``.

    The centre is moved towards the neck's axis (and within the z limits of the
    planning CT where the tumour fits in them) until the whole surface lies at least
    4 mm inside the skin.
    """
    nominal = np.array(_NOMINAL_CENTRES_MM[location]) * np.array([side, 1.0, 1.0])
    centre = nominal + rng.uniform(-3.0, 3.0, size=3)
    axes = rng.uniform(0.8, 1.25, size=3)
    axes /= np.prod(axes) ** (1.0 / 3.0)
    k = 7
    directions = rng.normal(size=(k, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    shape = TumourShape(
        centre, 1.0, axes, directions, rng.uniform(-0.18, 0.25, size=k), rng.uniform(0.15, 0.4, size=k)
    )
    radius = (volume_cc / shape.volume_cc()) ** (1.0 / 3.0)
    shape = TumourShape(centre, radius, axes, directions, shape.bump_amplitudes, shape.bump_widths)
    reach = shape.max_radius_mm()
    z_lo, z_hi = z_limits_mm[0] + reach + 2.0, z_limits_mm[1] - reach - 2.0
    centre = centre.copy()
    centre[2] = np.clip(centre[2], z_lo, z_hi) if z_lo <= z_hi else (z_limits_mm[0] + z_limits_mm[1]) / 2.0
    for _ in range(400):
        shape = TumourShape(centre.copy(), radius, axes, directions, shape.bump_amplitudes, shape.bump_widths)
        if _fits(shape, anatomy):
            return shape
        axis_point = np.array([0.0, anatomy.neck_centre_y_mm, centre[2]])
        step = axis_point - centre
        length = float(np.linalg.norm(step))
        if length < 0.5:
            break
        centre = centre + step / length * 0.5
    raise ValueError(
        f"a {volume_cc} cc tumour does not fit inside the body at {location}: "
        "ask for a smaller gtv_volume_cc"
    )
