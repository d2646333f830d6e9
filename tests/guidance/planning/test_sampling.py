"""Partial-volume sampling of a small sphere: the edge sub-points and the fine outline give its D90."""

from __future__ import annotations

import numpy as np
import pytest

from guidance.dose import cumulative_dvh, dose_at_points, dose_on_grid
from guidance.planning import PlacementOptions, candidate_tracks, optimise_seed_placement, structure_samples
from guidance.planning.greedy import sampled_d90
from guidance.planning.sampling import fine_outline
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid
from tests.guidance.dose.dvh_phantoms import sphere
from tests.guidance.planning import phantoms

AXIS = np.array([[0.0, 1.0, 0.0]])
CENTRE = np.zeros((1, 3))
PRESCRIPTION_GY = 145.0


def _centre_dose_d90_reference(radius: float, strength_u: float) -> float:
    """D90 of one central seed over the continuous ball (200 000 uniform points)."""
    rng = np.random.default_rng(3)
    points = rng.uniform(-1.0, 1.0, (400_000, 3))
    points = points[np.linalg.norm(points, axis=1) <= 1.0][:200_000] * radius
    return float(np.quantile(dose_at_points(points, CENTRE, AXIS, np.array([strength_u]), "6711"), 0.1))


def _strength_for_analytic_d90(radius: float) -> float:
    """Strength at which one central seed gives D90 = P on the analytic sphere's contours (1 mm grid)."""
    grid = Grid.from_bounds([-radius - 3.0] * 3, [radius + 3.0] * 3, 1.0)
    dose = dose_on_grid(grid, CENTRE, AXIS, np.ones(1), "6711")
    return PRESCRIPTION_GY / cumulative_dvh(dose, sphere(radius)).dose_at_percent(90.0)


def test_edge_points_at_their_inside_centroids_keep_the_volume_and_find_the_d90_of_a_small_sphere() -> None:
    radius = phantoms.radius_mm(1.5)
    target = phantoms.sphere_fraction(phantoms.grid(), radius)
    reference = _centre_dose_d90_reference(radius, 1.0)
    plain, plain_w = structure_samples(target, 2.0)
    moved, moved_w = structure_samples(target, 2.0, edge_subsamples=2)
    assert moved.shape == plain.shape
    np.testing.assert_array_equal(moved_w, plain_w)
    assert moved_w.sum() == pytest.approx(1.5, rel=0.01)
    shift = np.linalg.norm(moved - plain, axis=1)
    interior = plain_w >= plain_w.max() * (1.0 - 1e-6)
    assert np.all(shift[interior] == 0.0)
    assert np.all(shift <= np.sqrt(3.0) * 0.5 + 1e-9)  # within the voxel's own sub-point cube
    # Edge points move inwards: on average closer to the centre by a quarter voxel at least.
    inward = np.linalg.norm(plain, axis=1) - np.linalg.norm(moved, axis=1)
    assert inward[~interior].mean() > 0.25

    def d90(points: np.ndarray, weights: np.ndarray) -> float:
        return sampled_d90(dose_at_points(points, CENTRE, AXIS, np.ones(1), "6711"), weights)

    assert d90(plain, plain_w) < 0.92 * reference  # voxel centres: the edge volume too far out
    assert d90(moved, moved_w) == pytest.approx(reference, rel=0.02)
    with pytest.raises(ValueError, match="edge_subsamples"):
        structure_samples(target, 2.0, edge_subsamples=0)


def test_fine_outline_is_closer_to_the_sphere_than_the_voxel_staircase() -> None:
    radius = phantoms.radius_mm(1.5)
    target = phantoms.sphere_fraction(phantoms.grid(), radius)
    grid = Grid.from_bounds([-radius - 5.0] * 3, [radius + 5.0] * 3, 1.0)
    dose = dose_on_grid(grid, CENTRE, AXIS, np.ones(1), "6711")
    reference = _centre_dose_d90_reference(radius, 1.0)
    values = {}
    for factor in (1, 2):
        structure = Structure("t", StructureRole.TARGET, fine_outline(target, factor), "", 1)
        values[factor] = cumulative_dvh(dose, structure).dose_at_percent(90.0)
    assert abs(values[2] - reference) < abs(values[1] - reference)
    assert values[2] == pytest.approx(reference, rel=0.04)


def test_one_central_seed_covers_a_small_sphere_at_the_strength_that_suffices() -> None:
    """1.5 cm^3 at the strength where one central seed gives D90 = P: the plan is that seed."""
    radius = phantoms.radius_mm(1.5)
    grid = phantoms.grid()
    target = phantoms.sphere_fraction(grid, radius)
    body = phantoms.body(grid)
    strength = _strength_for_analytic_d90(radius)
    options = PlacementOptions(prescription_gy=PRESCRIPTION_GY, strength_u=strength, source_model="6711")
    tracks = candidate_tracks(target, body, directions=[(0.0, 1.0, 0.0)], track_spacing_mm=5.0)
    result = optimise_seed_placement(tracks, target, options=options, body=body)
    assert result.statement.startswith("reached"), result.statement
    assert len(result.seeds) == 1
    assert np.linalg.norm(result.positions_mm[0]) <= 1.0
