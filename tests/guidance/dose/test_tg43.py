"""TG-43U1 formalism (numpy reference) against values built independently from the published tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from guidance.dose import tg43
from guidance.dose.lookup import build_lookup_table, lookup_dose_rate_per_u, lookup_error
from guidance.dose.source_data import load_source_data

SOURCE = load_source_data("6711")


def _geometry_two_arctangents(r: float, theta_deg: float, length: float) -> float:
    """G_L = beta / (L r sin theta), beta from the two end angles (TG-43U1 eq. 4, written out)."""
    theta = math.radians(theta_deg)
    if math.sin(theta) < 1e-12:
        return 1.0 / (r * r - length * length / 4)
    z, y = r * math.cos(theta), r * math.sin(theta)
    beta = math.atan((z + length / 2) / y) - math.atan((z - length / 2) / y)
    return beta / (length * y)


@pytest.mark.parametrize("model_id", ["6711", "6702", "2301", "IAI-125A", "200"])
def test_reference_point_gives_lambda(model_id: str) -> None:
    source = load_source_data(model_id)
    rate = tg43.dose_rate_line_per_u(source, [0.0], [1.0])
    assert rate[0] == pytest.approx(source.dose_rate_constant_cgy_h_u, rel=1e-12)
    assert tg43.dose_rate_point_per_u(source, [1.0])[0] == pytest.approx(
        source.dose_rate_constant_cgy_h_u * float(np.interp(1.0, source.phi_an_r_cm, source.phi_an_values)),
        rel=1e-12,
    )


def test_every_tabulated_node_of_6711() -> None:
    """At each tabulated (r, theta), D/S_K = Lambda G_L/G_L(1,90) g_L(r) F(r,theta) exactly."""
    g_at = dict(zip(SOURCE.g_r_cm.tolist(), SOURCE.g_values.tolist(), strict=True))
    reference = _geometry_two_arctangents(1.0, 90.0, 0.3)
    for i, r in enumerate(SOURCE.f_r_cm):
        for j, theta in enumerate(SOURCE.f_theta_deg):
            expected = (
                0.965 * _geometry_two_arctangents(r, theta, 0.3) / reference * g_at[r] * SOURCE.f_values[j, i]
            )
            along, away = r * math.cos(math.radians(theta)), r * math.sin(math.radians(theta))
            assert tg43.dose_rate_line_per_u(SOURCE, [along], [away])[0] == pytest.approx(expected, rel=1e-6)


def test_transverse_axis_table_of_6711() -> None:
    """Transverse-axis dose rate per U at every g_L node 0.5-10 cm (F = 1 at 90 deg)."""
    reference = 2 * math.atan(0.15) / 0.3
    for r, g in zip(SOURCE.g_r_cm, SOURCE.g_values, strict=True):
        if r < 0.25:
            continue  # inside the default minimum radius (L/2 + 0.5 mm = 0.2 cm) the point is moved out
        expected = 0.965 * (2 * math.atan(0.15 / r) / (0.3 * r)) / reference * g
        assert tg43.dose_rate_line_per_u(SOURCE, [0.0], [r])[0] == pytest.approx(expected, rel=1e-6)
    # Known magnitudes: 2 cm about 0.19, 5 cm about 0.0139 cGy/h per U.
    assert tg43.dose_rate_line_per_u(SOURCE, [0.0], [2.0])[0] == pytest.approx(0.965 * 0.814 / 4, rel=0.01)


def test_geometry_factor_on_axis_and_near_it() -> None:
    r, length = np.array([0.5, 1.0, 3.0]), 0.3
    on_axis = tg43.geometry_factor_line(r, np.zeros(3), length)
    assert np.allclose(on_axis, 1.0 / (r * r - length * length / 4), rtol=1e-14)
    near = tg43.geometry_factor_line(r, r * 1e-7, length)
    assert np.allclose(near, on_axis, rtol=1e-10)
    for theta in (1.0, 10.0, 45.0, 135.0, 179.0):
        z, y = math.cos(math.radians(theta)), math.sin(math.radians(theta))
        assert tg43.geometry_factor_line(z, y, length) == pytest.approx(
            _geometry_two_arctangents(1.0, theta, length), rel=1e-12
        )


def test_symmetry_theta_and_180_minus_theta() -> None:
    rng = np.random.default_rng(1)
    along, away = rng.uniform(-6, 6, 500), rng.uniform(0, 6, 500)
    assert np.allclose(
        tg43.dose_rate_line_per_u(SOURCE, along, away), tg43.dose_rate_line_per_u(SOURCE, -along, away)
    )


def test_radial_dose_function_interpolation_and_extrapolation() -> None:
    g = lambda r, how="log-linear": tg43.radial_dose_function(r, SOURCE.g_r_cm, SOURCE.g_values, how)  # noqa: E731
    assert np.allclose(g(SOURCE.g_r_cm), SOURCE.g_values, rtol=1e-12)
    assert g(2.5) == pytest.approx(math.sqrt(0.814 * 0.632), rel=1e-12)  # log-linear midpoint
    assert g(2.5, "linear") == pytest.approx((0.814 + 0.632) / 2, rel=1e-12)
    assert g(0.05) == pytest.approx(1.055)  # nearest below the table
    assert g(12.0) == pytest.approx(0.0803 * (0.0803 / 0.109) ** 2, rel=1e-12)  # exponential beyond


def test_f_extrapolation_option_beyond_the_last_radius() -> None:
    f = lambda r, how: tg43.anisotropy_function(  # noqa: E731
        r, 0.0, SOURCE.f_r_cm, SOURCE.f_theta_deg, SOURCE.f_values, how
    )
    assert f(7.0, "nearest") == pytest.approx(0.550)
    assert f(7.0, "linear") == pytest.approx(0.550 + 2 * (0.550 - 0.520))
    assert f(4.5, "nearest") == f(4.5, "linear") == pytest.approx(0.535)
    assert f(0.2, "linear") == pytest.approx(0.333)  # nearest below the table in both
    options = tg43.Tg43Options(f_extrapolation="linear", g_interpolation="linear")
    assert options.f_extrapolation is tg43.FExtrapolation.LINEAR
    with pytest.raises(ValueError):
        tg43.Tg43Options(f_extrapolation="cubic")


def test_point_source_agrees_with_the_line_source_average_far_away() -> None:
    """1D (phi_an) vs the solid-angle average of the 2D dose rate at r >= 5 cm: within 2%."""
    cos_theta = np.linspace(-1, 1, 4001)
    for r in (5.0, 6.0, 8.0):
        line = tg43.dose_rate_line_per_u(SOURCE, r * cos_theta, r * np.sqrt(1 - cos_theta**2))
        average = np.trapezoid(line, cos_theta) / 2
        point = tg43.dose_rate_point_per_u(SOURCE, [r])[0]
        assert point == pytest.approx(average, rel=0.02)


def test_points_inside_the_minimum_radius_are_moved_out() -> None:
    r_min = tg43.minimum_radius_cm(SOURCE, tg43.Tg43Options())
    assert r_min == pytest.approx(0.2)
    inside = tg43.dose_rate_line_per_u(SOURCE, [0.05, 0.0, 0.0], [0.0, 0.05, 0.0])
    at = tg43.dose_rate_line_per_u(SOURCE, [r_min, 0.0, 0.0], [0.0, r_min, r_min])
    assert np.allclose(inside, at) and np.all(np.isfinite(inside))


def test_mean_life_total_dose_and_decay() -> None:
    assert tg43.mean_life_h(59.40) == pytest.approx(2056.7, rel=1e-4)
    assert float(tg43.dose_between_gy(7.0, 59.40)) == pytest.approx(7.0 * 2056.7 / 100, rel=1e-4)
    assert tg43.decay_factor(59.40, 59.40 * 24) == pytest.approx(0.5, rel=1e-12)
    first_half_life = float(tg43.dose_between_gy(1.0, 59.40, 0.0, 59.40 * 24))
    assert first_half_life == pytest.approx(float(tg43.dose_between_gy(1.0, 59.40)) / 2, rel=1e-12)
    with pytest.raises(ValueError):
        tg43.dose_between_gy(1.0, 59.40, 10.0, 5.0)


@pytest.mark.parametrize("model_id", ["6711", "6702", "2301", "IAI-125A", "200"])
def test_lookup_table_within_0p1_percent_of_the_exact_formalism(model_id: str) -> None:
    source = load_source_data(model_id)
    assert lookup_error(source, tg43.Tg43Options(), n=50_000) < 1e-3


def test_lookup_table_exact_at_the_reference_point_and_for_1d() -> None:
    table = build_lookup_table(SOURCE, tg43.Tg43Options())
    assert lookup_dose_rate_per_u(table, np.array([0.0]), np.array([1.0]))[0] == pytest.approx(
        0.965, rel=1e-12
    )
    r = np.exp(np.linspace(np.log(0.1), np.log(15.0), 2000))
    fast = lookup_dose_rate_per_u(table, r, np.zeros_like(r), line=False)
    assert np.max(np.abs(fast / tg43.dose_rate_point_per_u(SOURCE, r) - 1)) < 1e-3
