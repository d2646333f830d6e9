"""Dose engine: public API, kernels against the numpy reference, additivity, plans."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guidance.dose import (
    Tg43Options,
    add_seeds,
    auto_dose_grid,
    dose_at_points,
    dose_of_plan,
    dose_on_grid,
    load_source_data,
    seed_contributions,
    strength_scale,
    tg43,
)
from guidance.plan import Isotope, Plan, Seed, SourceModel
from guidance.volume import Grid, Volume

METHODS = ("table", "exact", "reference")
RATE = "rate_cgy_h"


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("method", METHODS)
def test_reference_point_is_lambda_times_strength(method: str) -> None:
    seed, axis = np.array([[12.0, -40.0, 7.5]]), np.array([[0.0, 0.6, 0.8]])
    point = seed + 10.0 * np.array([[0.0, 0.8, -0.6]])  # 1 cm, perpendicular to the axis
    rate = dose_at_points(point, seed, axis, [0.8], "6711", quantity=RATE, method=method)
    assert rate[0] == pytest.approx(0.965 * 0.8, rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_orientation_matters_in_2d_and_not_in_1d(method: str) -> None:
    seed, axis = np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]])
    points = np.array([[0.0, 0.0, 20.0], [20.0, 0.0, 0.0]])  # on the axis, transverse; 2 cm
    line = dose_at_points(points, seed, axis, [1.0], "6711", quantity=RATE, method=method)
    g_axis, g_transverse = 1 / (4 - 0.0225), 2 * math.atan(0.075) / 0.6
    assert line[0] / line[1] == pytest.approx(0.442 * g_axis / g_transverse, rel=1e-3)  # F(2 cm, 0) = 0.442
    point = dose_at_points(points, seed, [[np.nan] * 3], [1.0], "6711", quantity=RATE, method=method)
    assert point[0] == pytest.approx(point[1], rel=1e-9)
    assert point[0] == pytest.approx(tg43.dose_rate_point_per_u(load_source_data("6711"), [2.0])[0], rel=1e-3)


def _configuration(seed: int, n_points: int, n_seeds: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    points = rng.uniform(-40, 40, (n_points, 3))
    seeds = rng.uniform(-15, 15, (n_seeds, 3))
    dirs = rng.normal(size=(n_seeds, 3))
    dirs[rng.uniform(size=n_seeds) < 0.3] = np.nan
    return points, seeds, dirs, rng.uniform(0.2, 1.0, n_seeds)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31), st.integers(1, 60), st.integers(1, 6), st.sampled_from(["6711", "2301", "200"]),
    st.sampled_from(["nearest", "linear"]), st.sampled_from(["log-linear", "linear"]),
)  # fmt: skip
def test_numba_kernels_against_the_numpy_reference(
    seed: int, n_points: int, n_seeds: int, model: str, f_extrapolation: str, g_interpolation: str
) -> None:
    points, seeds, dirs, strengths = _configuration(seed, n_points, n_seeds)
    options = Tg43Options(f_extrapolation=f_extrapolation, g_interpolation=g_interpolation)
    common = {"quantity": RATE, "options": options}
    reference = dose_at_points(points, seeds, dirs, strengths, model, method="reference", **common)
    exact = dose_at_points(points, seeds, dirs, strengths, model, method="exact", **common)
    table = dose_at_points(points, seeds, dirs, strengths, model, method="table", **common)
    assert np.allclose(exact, reference, rtol=1e-6, atol=0)
    assert np.allclose(table, reference, rtol=2e-3, atol=0)  # look-up error (< 0.1% per seed by default)


def test_table_within_0p1_percent_of_exact_beyond_1_mm() -> None:
    points, seeds, dirs, strengths = _configuration(7, 20_000, 8)
    exact = dose_at_points(points, seeds, dirs, strengths, "6711", quantity=RATE, method="exact")
    table = dose_at_points(points, seeds, dirs, strengths, "6711", quantity=RATE)
    assert np.max(np.abs(table / exact - 1)) < 1e-3


def test_linearity_additivity_and_rotation_invariance() -> None:
    points, seeds, dirs, strengths = _configuration(3, 500, 6)
    dose = lambda p, s, d, k: dose_at_points(p, s, d, k, "6711", method="exact")  # noqa: E731
    full = dose(points, seeds, dirs, strengths)
    assert np.allclose(dose(points, seeds, dirs, 2.5 * strengths), 2.5 * full, rtol=1e-12)
    parts = dose(points, seeds[:2], dirs[:2], strengths[:2]) + dose(
        points, seeds[2:], dirs[2:], strengths[2:]
    )
    assert np.allclose(parts, full, rtol=1e-12)
    rotation, shift = _random_rotation(np.random.default_rng(5)), np.array([3.0, -100.0, 20.0])
    moved = dose(points @ rotation.T + shift, seeds @ rotation.T + shift, dirs @ rotation.T, strengths)
    assert np.allclose(moved, full, rtol=1e-9)
    flipped = dose(points, seeds, -dirs, strengths)  # theta -> 180 - theta
    assert np.allclose(flipped, full, rtol=1e-9)


def test_total_dose_and_decay() -> None:
    points, seeds, dirs, strengths = _configuration(11, 50, 3)
    rate = dose_at_points(points, seeds, dirs, strengths, "6711", quantity=RATE)
    total = dose_at_points(points, seeds, dirs, strengths, "6711")
    assert np.allclose(total, rate * 2056.7 / 100, rtol=1e-4)
    reference = dt.datetime(2024, 3, 1, 12, 0)
    later = reference + dt.timedelta(days=59.40)
    decayed = dose_at_points(
        points,
        seeds,
        dirs,
        strengths,
        "6711",
        quantity=RATE,
        implant_datetime=later,
        reference_datetime=reference,
    )
    assert np.allclose(decayed, rate / 2, rtol=1e-9)
    pd = load_source_data("200")
    assert strength_scale(pd, "total_gy", None, None) == pytest.approx(16.991 * 24 / math.log(2) / 100)
    with pytest.raises(ValueError, match="both"):
        strength_scale(pd, RATE, later, None)


def test_grid_add_seeds_and_contributions() -> None:
    grid = auto_dose_grid(
        np.array([[-10.0, -10.0, -10.0], [10.0, 10.0, 10.0]]), margin_mm=5.0, spacing_mm=2.0
    )
    assert grid.shape == (16, 16, 16) and np.allclose(grid.bounds_mm(), [[-15] * 3, [15] * 3])
    _, seeds, dirs, strengths = _configuration(13, 1, 7)
    dose = dose_on_grid(grid, seeds[:5], dirs[:5], strengths[:5], "6711")
    assert dose.metadata["dose_units"] == "GY" and dose.metadata["quantity"] == "total_gy"
    assert dose.metadata["n_seeds"] == 5 and dose.metadata["source_model"] == "6711"
    centres = grid.voxel_centres_mm().reshape(-1, 3)
    direct = dose_at_points(centres, seeds[:5], dirs[:5], strengths[:5], "6711").reshape(grid.shape)
    assert np.allclose(dose.array, direct, rtol=1e-12)  # voxel centres from the affine in the kernel
    more = add_seeds(dose, seeds[5:], dirs[5:], strengths[5:], "6711")
    whole = dose_on_grid(grid, seeds, dirs, strengths, "6711")
    assert np.allclose(more.array, whole.array, rtol=1e-12) and more.metadata["n_seeds"] == 7
    contributions = seed_contributions(centres, seeds, dirs, strengths, "6711")
    assert contributions.dtype == np.float32 and contributions.shape == (centres.shape[0], 7)
    assert np.allclose(contributions.sum(axis=1), whole.array.reshape(-1), rtol=1e-5)
    with pytest.raises(ValueError, match="quantity"):
        add_seeds(Volume.on_grid(grid, np.zeros(grid.shape)), seeds, dirs, strengths, "6711")


def test_auto_grid_from_a_mask_volume() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[4:6, 3:7, 2:5] = True
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    grid = auto_dose_grid(Volume(mask, affine, "1.2.3"), margin_mm=15.0)
    assert grid.frame_of_reference_uid == "1.2.3"
    # x = 2 s (slices 4-5), y = r (3-6), z = c (2-4), plus 15 mm
    assert np.allclose(grid.bounds_mm(), [[8 - 15, 3 - 15, 2 - 15], [10 + 15, 6 + 15, 4 + 15]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points_mm": np.zeros((4, 2))}, "points_mm must have shape"),
        ({"strengths_u": [-1.0]}, ">= 0"),
        ({"seed_directions": [[np.nan, 0.0, 1.0]]}, "neither a non-zero vector nor all NaN"),
        ({"seed_directions": [[0.0, 0.0, 0.0]]}, "neither"),
        ({"strengths_u": [1.0, 2.0]}, "strengths_u of shape"),
        ({"source_model": "selectSeed"}, "available models"),
        ({"points_mm": [[np.inf, 0.0, 0.0]]}, "NaN or infinite"),
    ],
)
def test_inputs_are_validated(kwargs: dict, message: str) -> None:
    arguments = {
        "points_mm": np.zeros((4, 3)),
        "seed_positions_mm": [[0.0, 0.0, 5.0]],
        "seed_directions": [[0.0, 0.0, 1.0]],
        "strengths_u": [1.0],
        "source_model": "6711",
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        dose_at_points(**arguments)


def _plan(source_name: str) -> Plan:
    source = SourceModel(source_name, Isotope.I125, 59.40, "vendor")
    seeds = [
        Seed(np.array([0.0, 0.0, 5.0 * k]), np.array([0.0, 0.0, 1.0]), 0.7, source_name) for k in range(3)
    ]
    return Plan(
        "1.2.3",
        tuple(seeds),
        sources={source_name: source},
        strength_reference_datetime=dt.datetime(2024, 1, 1),
    )


def test_plan_sources_are_mapped_explicitly() -> None:
    grid = Grid.from_bounds([-10, -10, -5], [10, 10, 15], 2.5, "1.2.3")
    with pytest.raises(ValueError, match="source_map"):
        dose_of_plan(_plan("selectSeed"), grid)
    mapped = dose_of_plan(_plan("selectSeed"), grid, source_map={"SELECTSEED": "6711"})
    direct = dose_of_plan(_plan("6711"), grid)
    assert np.array_equal(mapped.array, direct.array) and mapped.metadata["source_model"] == "6711"
    implant = dt.datetime(2024, 1, 1) + dt.timedelta(days=59.40)
    assert np.allclose(dose_of_plan(_plan("6711"), grid, implant_datetime=implant).array, direct.array / 2)


def test_oncentra_plan_recomputed_in_1d(shared_data: Path) -> None:
    """The Oncentra seed plan (orientation unknown, 1D) vs its own RT Dose, with 6711 data mapped in.

    Oncentra used its "selectSeed" data; 6711 consensus data give a dose a few
    per cent higher but the same shape: narrow spread of the ratio.
    """
    from guidance.dicomio.rtdose import read_rtdose
    from guidance.dicomio.rtplan import read_rtplan

    folder = shared_data / "brachy_ldr_i125_oncentra_mcbrachy"
    plan, theirs = read_rtplan(folder / "RTPLAN104.dcm"), read_rtdose(folder / "RTDOSE99.dcm")
    assert len(plan.seeds) == 36 and np.all(np.isnan(plan.seed_directions))
    ours = dose_of_plan(plan, theirs.grid, source_map={next(iter(plan.sources)): "6711"})
    centres = theirs.grid.voxel_centres_mm().reshape(-1, 1, 3)
    near = np.min(np.linalg.norm(centres - plan.seed_positions_mm[np.newaxis], axis=2), axis=1)
    chosen = (theirs.array > 72.5) & (theirs.array < 290.0) & (near.reshape(theirs.shape) > 3.0)
    ratio = ours.array[chosen] / theirs.array[chosen]
    assert chosen.sum() > 50_000
    assert 1.0 < np.median(ratio) < 1.04
    low, high = np.percentile(ratio, [5, 95])
    assert high - low < 0.03
