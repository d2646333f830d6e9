"""The AAPM TG-43U1 dose-rate formalism, plain numpy (the reference implementation).

Everything here works in the report's units: centimetres, degrees, cGy/h for
an air-kerma strength in U (1 U = 1 cGy cm^2 h^-1). The engine
(:mod:`guidance.dose.engine`) converts from LPS millimetres and runs the fast
kernels of :mod:`guidance.dose._kernels`, which are tested against this module.

2D (line source, each seed's own axis), TG-43U1 eq. 1::

    D(r, theta) = S_K * Lambda * G_L(r, theta) / G_L(r0, theta0) * g_L(r) * F(r, theta)

with r0 = 1 cm, theta0 = 90 deg and the line-segment geometry factor (eq. 4)
G_L = beta / (L r sin theta), beta the angle the active length L subtends at
the point; on the seed axis G_L = 1 / (r^2 - L^2 / 4). Here beta is computed
as ``atan2(L * y, r^2 - L^2/4)`` (y = r sin theta, the distance from the axis),
which is exact (tangent subtraction formula for the two end angles) and has
the on-axis limit built in.

1D (orientation unknown), TG-43U1 eq. 11::

    D(r) = S_K * Lambda * G_L(r, theta0) / G_L(r0, theta0) * g_L(r) * phi_an(r)

i.e. with G_L, not G_P, so that the g_L data apply unchanged.

Conventions (all visible in :class:`Tg43Options`):

- g_L(r): log-linear between nodes ("log-linear", default, interpolating
  log g linearly in r) or linear ("linear"); below the first node the first
  value (nearest); beyond the last node the exponential through the last two
  nodes, as TG-43U1 recommends for extrapolation of g_L.
- F(r, theta): bilinear in r and theta; below the first radius nearest;
  beyond the last radius nearest ("nearest", default, TG-43U1 Appendix C:
  nearest-neighbour extrapolation of F) or linear from the last two radii
  ("linear", the convention of a public 6711 along-away table).
- phi_an(r): linear in r, nearest outside the table.
- r below the minimum radius (default L/2 + 0.5 mm, and not below the first
  g_L node): the point is moved out along its own direction to that radius
  (a point at the seed centre is put on the transverse axis). Inside that
  radius the line-source model does not describe the seed; the clamp keeps
  the dose finite and continuous.

References
----------
Rivard MJ et al., Med. Phys. 31, 633-674 (2004), "TG-43U1": eq. 1 (2D
formalism), eq. 4 (geometry factors), eq. 11 (1D formalism), Appendix C
(interpolation and extrapolation).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from guidance.dose.source_data import SourceData

__all__ = [
    "FExtrapolation",
    "GInterpolation",
    "Tg43Options",
    "anisotropy_factor",
    "anisotropy_function",
    "decay_factor",
    "derive_anisotropy_factor",
    "dose_between_gy",
    "dose_rate_line_per_u",
    "dose_rate_point_per_u",
    "dose_rate_reference",
    "geometry_factor_line",
    "mean_life_h",
    "minimum_radius_cm",
    "radial_dose_function",
]

_AXIS_TOL = 1e-9  # y / r below which a point counts as on the seed axis


class GInterpolation(enum.Enum):
    """Interpolation of g_L(r) between nodes."""

    LOG_LINEAR = "log-linear"
    LINEAR = "linear"


class FExtrapolation(enum.Enum):
    """Extrapolation of F(r, theta) beyond the last tabulated radius."""

    NEAREST = "nearest"
    LINEAR = "linear"


@dataclass(frozen=True)
class Tg43Options:
    """Interpolation conventions of the formalism (see the module docstring).

    Parameters
    ----------
    g_interpolation : {"log-linear", "linear"}
    f_extrapolation : {"nearest", "linear"}
    min_radius_cm : float or None
        Points closer to a seed centre are moved out to this radius; None means
        max(L/2 + 0.05 cm, first g_L radius) for each model.
    """

    g_interpolation: GInterpolation | str = GInterpolation.LOG_LINEAR
    f_extrapolation: FExtrapolation | str = FExtrapolation.NEAREST
    min_radius_cm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "g_interpolation", GInterpolation(self.g_interpolation))
        object.__setattr__(self, "f_extrapolation", FExtrapolation(self.f_extrapolation))
        if self.min_radius_cm is not None and not (
            self.min_radius_cm > 0 and math.isfinite(self.min_radius_cm)
        ):
            raise ValueError(f"min_radius_cm must be positive or None; got {self.min_radius_cm}")


def minimum_radius_cm(source: SourceData, options: Tg43Options) -> float:
    """The radius below which points are moved out (see :class:`Tg43Options`)."""
    if options.min_radius_cm is not None:
        return max(float(options.min_radius_cm), 0.5 * source.effective_length_cm * (1 + 1e-6))
    return max(0.5 * source.effective_length_cm + 0.05, float(source.g_r_cm[0]))


def geometry_factor_line(along_cm: ArrayLike, away_cm: ArrayLike, length_cm: float) -> NDArray[np.float64]:
    """Line-segment geometry factor G_L (TG-43U1 eq. 4), cm^-2.

    Parameters
    ----------
    along_cm, away_cm : array_like
        Coordinates of the point along the seed axis (z) and its distance from
        the axis (y >= 0), from the seed centre. Must lie outside the segment.
    length_cm : float
        Effective length L.
    """
    z = np.asarray(along_cm, dtype=np.float64)
    y = np.abs(np.asarray(away_cm, dtype=np.float64))
    r2 = z * z + y * y
    denominator = r2 - 0.25 * length_cm * length_cm
    on_axis = y <= _AXIS_TOL * np.sqrt(r2)
    safe_y = np.where(on_axis, 1.0, y)
    beta = np.arctan2(length_cm * safe_y, denominator)
    result: NDArray[np.float64] = np.where(on_axis, 1.0 / denominator, beta / (length_cm * safe_y))
    return result


def _reference_geometry(length_cm: float) -> float:
    """G_L(r0 = 1 cm, theta0 = 90 deg)."""
    return float(geometry_factor_line(0.0, 1.0, length_cm))


def radial_dose_function(
    r_cm: ArrayLike,
    table_r_cm: NDArray[np.float64],
    table_g: NDArray[np.float64],
    interpolation: GInterpolation | str = GInterpolation.LOG_LINEAR,
) -> NDArray[np.float64]:
    """g_L(r): log-linear or linear inside, nearest below, exponential beyond the table."""
    r = np.asarray(r_cm, dtype=np.float64)
    log_g = np.log(table_g)
    if GInterpolation(interpolation) is GInterpolation.LOG_LINEAR:
        inside = np.exp(np.interp(r, table_r_cm, log_g))
    else:
        inside = np.interp(r, table_r_cm, table_g)
    slope = (log_g[-1] - log_g[-2]) / (table_r_cm[-1] - table_r_cm[-2])
    beyond = np.exp(log_g[-1] + slope * (r - table_r_cm[-1]))
    result: NDArray[np.float64] = np.where(r > table_r_cm[-1], beyond, inside)
    return result


def anisotropy_function(
    r_cm: ArrayLike,
    theta_deg: ArrayLike,
    table_r_cm: NDArray[np.float64],
    table_theta_deg: NDArray[np.float64],
    table_f: NDArray[np.float64],
    extrapolation: FExtrapolation | str = FExtrapolation.NEAREST,
) -> NDArray[np.float64]:
    """F(r, theta), bilinear in r and theta; theta folded to 0-90 for 0-90 tables.

    ``table_f`` has shape (angles, radii).
    """
    r = np.asarray(r_cm, dtype=np.float64)
    theta = np.asarray(theta_deg, dtype=np.float64)
    if table_theta_deg[-1] <= 90.0:
        theta = np.minimum(theta, 180.0 - theta)
    theta = np.clip(theta, table_theta_deg[0], table_theta_deg[-1])
    j = np.clip(np.searchsorted(table_theta_deg, theta, side="right") - 1, 0, table_theta_deg.size - 2)
    wt = (theta - table_theta_deg[j]) / (table_theta_deg[j + 1] - table_theta_deg[j])
    if FExtrapolation(extrapolation) is FExtrapolation.NEAREST:
        r = np.minimum(r, table_r_cm[-1])
    r = np.maximum(r, table_r_cm[0])
    i = np.clip(np.searchsorted(table_r_cm, r, side="right") - 1, 0, table_r_cm.size - 2)
    wr = (r - table_r_cm[i]) / (table_r_cm[i + 1] - table_r_cm[i])
    lower = table_f[j, i] * (1 - wr) + table_f[j, i + 1] * wr
    upper = table_f[j + 1, i] * (1 - wr) + table_f[j + 1, i + 1] * wr
    result: NDArray[np.float64] = lower * (1 - wt) + upper * wt
    return result


def anisotropy_factor(
    r_cm: ArrayLike, table_r_cm: NDArray[np.float64], table_phi: NDArray[np.float64]
) -> NDArray[np.float64]:
    """phi_an(r): linear in r, nearest outside the table."""
    result: NDArray[np.float64] = np.interp(np.asarray(r_cm, dtype=np.float64), table_r_cm, table_phi)
    return result


def derive_anisotropy_factor(
    table_r_cm: NDArray[np.float64],
    table_theta_deg: NDArray[np.float64],
    table_f: NDArray[np.float64],
    length_cm: float,
    *,
    n_angles: int = 3601,
) -> NDArray[np.float64]:
    """phi_an(r) at the F radii from F and G_L (its TG-43U1 definition).

    phi_an(r) = integral_0^pi D(r, theta) sin(theta) dtheta / (2 D(r, pi/2)),
    with D proportional to G_L(r, theta) F(r, theta) at fixed r (g_L cancels).
    Integrated by the trapezoidal rule over ``n_angles`` angles 0-180 deg.
    """
    theta = np.linspace(0.0, 180.0, n_angles)
    radians = np.deg2rad(theta)
    values = np.empty(table_r_cm.size)
    for k, r in enumerate(table_r_cm):
        along, away = r * np.cos(radians), r * np.sin(radians)
        rate = geometry_factor_line(along, away, length_cm) * anisotropy_function(
            np.full_like(theta, r), theta, table_r_cm, table_theta_deg, table_f
        )
        transverse = float(geometry_factor_line(0.0, r, length_cm))
        values[k] = np.trapezoid(rate * np.sin(radians), radians) / (2.0 * transverse)
    return values


def _clamped(
    along_cm: NDArray[np.float64], away_cm: NDArray[np.float64], r_min: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(r, along, away) with points inside r_min moved out radially to r_min."""
    r = np.hypot(along_cm, away_cm)
    scale = np.where(r < r_min, r_min / np.where(r > 0, r, 1.0), 1.0)
    along = along_cm * scale
    away = np.where(r > 0, away_cm * scale, np.where(r < r_min, r_min, away_cm))
    return np.maximum(r, r_min), along, away


def dose_rate_line_per_u(
    source: SourceData, along_cm: ArrayLike, away_cm: ArrayLike, options: Tg43Options | None = None
) -> NDArray[np.float64]:
    """2D dose rate per unit air-kerma strength, cGy h^-1 U^-1 (TG-43U1 eq. 1)."""
    opts = options or Tg43Options()
    z = np.asarray(along_cm, dtype=np.float64)
    y = np.abs(np.asarray(away_cm, dtype=np.float64))
    r, z, y = _clamped(z, y, minimum_radius_cm(source, opts))
    theta = np.degrees(np.arctan2(y, z))
    length = source.effective_length_cm
    geometry = geometry_factor_line(z, y, length) / _reference_geometry(length)
    g = radial_dose_function(r, source.g_r_cm, source.g_values, opts.g_interpolation)
    f = anisotropy_function(
        r, theta, source.f_r_cm, source.f_theta_deg, source.f_values, opts.f_extrapolation
    )
    result: NDArray[np.float64] = source.dose_rate_constant_cgy_h_u * geometry * g * f
    return result


def dose_rate_point_per_u(
    source: SourceData, r_cm: ArrayLike, options: Tg43Options | None = None
) -> NDArray[np.float64]:
    """1D dose rate per unit air-kerma strength, cGy h^-1 U^-1 (TG-43U1 eq. 11, with G_L)."""
    opts = options or Tg43Options()
    r = np.maximum(np.asarray(r_cm, dtype=np.float64), minimum_radius_cm(source, opts))
    length = source.effective_length_cm
    geometry = geometry_factor_line(np.zeros_like(r), r, length) / _reference_geometry(length)
    g = radial_dose_function(r, source.g_r_cm, source.g_values, opts.g_interpolation)
    phi = anisotropy_factor(r, source.phi_an_r_cm, source.phi_an_values)
    result: NDArray[np.float64] = source.dose_rate_constant_cgy_h_u * geometry * g * phi
    return result


def dose_rate_reference(
    points_cm: NDArray[np.float64],
    seed_positions_cm: NDArray[np.float64],
    seed_directions: NDArray[np.float64],
    strengths_u: NDArray[np.float64],
    source: SourceData,
    options: Tg43Options | None = None,
) -> NDArray[np.float64]:
    """Dose rate (cGy/h) at (n, 3) points from k seeds: the numpy reference, one seed at a time.

    A seed whose direction row is NaN uses the 1D form.
    """
    total = np.zeros(points_cm.shape[0])
    for position, direction, strength in zip(seed_positions_cm, seed_directions, strengths_u, strict=True):
        offset = points_cm - position
        if np.any(np.isnan(direction)):
            total += strength * dose_rate_point_per_u(source, np.linalg.norm(offset, axis=1), options)
            continue
        along = offset @ direction
        away = np.linalg.norm(offset - along[:, np.newaxis] * direction, axis=1)
        total += strength * dose_rate_line_per_u(source, along, away, options)
    return total


def mean_life_h(half_life_days: float) -> float:
    """tau = T1/2 / ln 2, in hours (2056.7 h for I-125)."""
    return half_life_days * 24.0 / math.log(2.0)


def decay_factor(half_life_days: float, elapsed_h: float) -> float:
    """exp(-t / tau): the fraction of the strength left after ``elapsed_h`` hours."""
    return math.exp(-elapsed_h / mean_life_h(half_life_days))


def dose_between_gy(
    initial_rate_cgy_h: ArrayLike, half_life_days: float, start_h: float = 0.0, end_h: float = math.inf
) -> NDArray[np.float64]:
    """Dose (Gy) delivered between two times after the implant, permanent implant.

    D = rate0 * tau * (exp(-t1 / tau) - exp(-t2 / tau)) / 100; with the defaults
    (0, infinity) this is the total dose rate0 * tau / 100.
    """
    if not (0.0 <= start_h <= end_h):
        raise ValueError(f"need 0 <= start_h <= end_h; got {start_h}, {end_h}")
    tau = mean_life_h(half_life_days)
    fraction = math.exp(-start_h / tau) - (0.0 if math.isinf(end_h) else math.exp(-end_h / tau))
    result: NDArray[np.float64] = np.asarray(initial_rate_cgy_h, dtype=np.float64) * tau * fraction / 100.0
    return result
