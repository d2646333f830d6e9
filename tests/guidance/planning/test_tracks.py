"""Needle tracks: directions, lattice spacing, skin entries, forbidden structures, template holes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from guidance.planning import Track, candidate_tracks, cone_directions, template_tracks
from guidance.volume import Grid, Volume
from tests.guidance.planning import phantoms

ANTERIOR_TO_POSTERIOR = (0.0, 1.0, 0.0)  # LPS: +y is posterior


@pytest.fixture(scope="module")
def scene() -> tuple[Volume, Volume]:
    grid = phantoms.grid()
    return phantoms.sphere_fraction(grid, phantoms.radius_mm(10.0)), phantoms.body(grid)


def test_cone_directions_are_unit_within_the_cone_and_deterministic() -> None:
    directions = cone_directions(ANTERIOR_TO_POSTERIOR, half_angle_deg=30.0, step_deg=15.0)
    # rings: axis, 15 deg (round(360 sin15 / 15) = 6), 30 deg (round(360 sin30 / 15) = 12)
    assert directions.shape == (1 + 6 + 12, 3)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    angles = np.degrees(np.arccos(np.clip(directions @ ANTERIOR_TO_POSTERIOR, -1, 1)))
    assert angles.max() == pytest.approx(30.0)
    np.testing.assert_array_equal(directions, cone_directions(ANTERIOR_TO_POSTERIOR, half_angle_deg=30.0))
    hemisphere = cone_directions((0, 0, 1), half_angle_deg=90.0, step_deg=30.0)
    assert np.all(hemisphere[:, 2] >= -1e-12)


def test_parallel_tracks_cover_the_target_with_entries_at_the_skin(scene: tuple[Volume, Volume]) -> None:
    target, body = scene
    tracks = candidate_tracks(target, body, directions=[ANTERIOR_TO_POSTERIOR], track_spacing_mm=7.0).tracks
    radius = phantoms.radius_mm(10.0)
    assert len(tracks) == 9  # lattice points within r = 13.4 mm of the centre, 7 mm apart: the 3 x 3 square
    for track in tracks:
        np.testing.assert_allclose(track.direction, ANTERIOR_TO_POSTERIOR)
        # the skin is the first body voxel: y = -40 + 2 (the outer layer is outside the body)
        assert track.entry_mm[1] == pytest.approx(-38.0, abs=1.0)
        assert phantoms.lookup(body, track.entry_mm[np.newaxis])[0]
        assert np.linalg.norm(track.tip_mm) <= radius + 2.0
        depths = (track.seed_positions_mm - track.entry_mm) @ track.direction
        np.testing.assert_allclose(np.diff(depths), 5.0)
        assert np.all(phantoms.lookup(target, track.seed_positions_mm))
    lateral = np.array([t.entry_mm[[0, 2]] for t in tracks])
    gaps = np.linalg.norm(lateral[:, np.newaxis] - lateral[np.newaxis], axis=-1)
    assert gaps[~np.eye(len(tracks), dtype=bool)].min() == pytest.approx(7.0)


def test_no_track_crosses_a_forbidden_structure(scene: tuple[Volume, Volume]) -> None:
    target, body = scene
    grid = target.grid
    bone = phantoms.box_mask(
        grid, [-30.0, -26.0, -30.0], [2.0, -22.0, 30.0]
    )  # anterior plate, half the width
    cord = phantoms.box_mask(grid, [-4.0, 20.0, -40.0], [4.0, 28.0, 40.0])  # posterior, beyond the target
    forbidden = {"bone": bone, "cord": cord}
    directions = cone_directions(ANTERIOR_TO_POSTERIOR, half_angle_deg=30.0, step_deg=15.0)
    result = candidate_tracks(target, body, forbidden, directions=directions, margin_mm=3.0)
    assert len(result.tracks) > 20
    assert result.rejected.get("crosses bone (+3 mm margin)", 0) > 20
    for track in result.tracks:
        path = track.path_mm(0.25)
        assert not phantoms.lookup(bone, path).any(), track.label
        assert not phantoms.lookup(cord, path).any(), track.label
        assert track.clearance_mm > 3.0
        assert track.nearest_forbidden in {"bone", "cord"}
    # tracks that pass beside the plate (x > 2 mm + margin) survive; the plate's shadow loses them
    straight = [t for t in result.tracks if t.label.startswith("direction 0,")]
    assert straight and all(t.entry_mm[0] > 2.0 for t in straight)


def test_template_holes(scene: tuple[Volume, Volume]) -> None:
    target, body = scene
    grid = target.grid
    bone = phantoms.box_mask(grid, [-30.0, -26.0, 5.0], [30.0, -22.0, 30.0])
    tilt = math.radians(10.0)
    holes = np.array(
        [[x, -45.0, z] for x in (-5.0, 0.0, 5.0) for z in (-5.0, 0.0, 10.0)] + [[30.0, -45.0, 30.0]]
    )
    directions = np.tile([0.0, math.cos(tilt), math.sin(tilt)], (holes.shape[0], 1))
    result = template_tracks(holes, directions, target, body, {"bone": bone}, margin_mm=2.0)
    # z = 0 holes rise 3.7 mm by the bone (y = -24): within 2 mm of it; z = 10 holes pass above the
    # target (z = 17.9 mm at its centre > r = 13.4 mm), as does the far hole: not counted as rejected
    assert [t.label for t in result.tracks] == [f"template hole {k}" for k in (0, 3, 6)]
    assert result.rejected == {"crosses bone (+2 mm margin)": 3}
    for track in result.tracks:
        np.testing.assert_allclose(track.direction, directions[0])
        assert not phantoms.lookup(bone, track.path_mm(0.25)).any()


def test_masks_on_another_grid_are_refused(scene: tuple[Volume, Volume]) -> None:
    target, _ = scene
    other = Volume.on_grid(Grid.from_bounds([-40] * 3, [40] * 3, 4.0), np.ones((21, 21, 21), dtype=bool))
    with pytest.raises(ValueError, match="body is on another grid"):
        candidate_tracks(target, other, directions=[ANTERIOR_TO_POSTERIOR])
    with pytest.raises(ValueError, match="axis must be a finite non-zero"):
        cone_directions((0, 0, 0))


def _lateral(tracks: tuple[Track, ...]) -> NDArray[np.float64]:
    """(x, z) of each +Y track: where it crosses a coronal plane."""
    return np.array([t.entry_mm[[0, 2]] for t in tracks])


def test_triangular_lattice_lines_are_5_mm_apart_with_6_neighbours(scene: tuple[Volume, Volume]) -> None:
    target, body = scene
    result = candidate_tracks(
        target, body, directions=[ANTERIOR_TO_POSTERIOR], track_spacing_mm=5.0, lattice="triangular"
    )
    assert result.provenance.parameters["lattice"] == "triangular"
    lateral = _lateral(result.tracks)
    gaps = np.linalg.norm(lateral[:, np.newaxis] - lateral[np.newaxis], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    np.testing.assert_allclose(gaps.min(axis=1), 5.0, atol=1e-9)  # every line's nearest neighbours: 5 mm
    neighbours = np.sum(np.abs(gaps - 5.0) < 1e-6, axis=1)
    assert neighbours.max() == 6
    # the lines within 5 mm of the centre have all 6 neighbours (a hexagon around each)
    central = np.linalg.norm(lateral, axis=1) <= 5.0 + 1e-6
    assert central.sum() == 7 and np.all(neighbours[central] == 6)
    # the next shell: 6 lines at 5 sqrt(3) = 8.66 mm and 6 at 10 mm (of 13.4 mm radius + voxel)
    distance = np.sort(np.linalg.norm(lateral, axis=1))
    assert np.sum(np.abs(distance - 5.0 * math.sqrt(3.0)) < 1e-6) == 6
    assert np.sum(np.abs(distance - 10.0) < 1e-6) == 6


def test_triangular_lattice_covers_the_target_footprint(scene: tuple[Volume, Volume]) -> None:
    target, body = scene
    spacing = 5.0
    for lattice, covering in (("triangular", spacing / math.sqrt(3.0)), ("square", spacing / math.sqrt(2.0))):
        tracks = candidate_tracks(
            target, body, directions=[ANTERIOR_TO_POSTERIOR], track_spacing_mm=spacing, lattice=lattice
        ).tracks
        lateral = _lateral(tracks)
        inside = target.grid.index_to_patient(np.argwhere(np.asarray(target.array) >= 0.5).astype(float))
        footprint = np.unique(inside[:, [0, 2]], axis=0)
        # a line beyond the rim misses the target (no track): the footprint one spacing inside the rim
        footprint = footprint[np.linalg.norm(footprint, axis=1) <= phantoms.radius_mm(10.0) - spacing]
        nearest = np.linalg.norm(footprint[:, np.newaxis] - lateral[np.newaxis], axis=-1).min(axis=1)
        assert nearest.max() <= covering + 1e-9, lattice  # every footprint point within the covering radius
    with pytest.raises(ValueError, match="lattice must be one of"):
        candidate_tracks(target, body, directions=[ANTERIOR_TO_POSTERIOR], lattice="hexagonal")


def test_run_centres_add_the_centre_of_an_even_count_of_positions(scene: tuple[Volume, Volume]) -> None:
    target, body = scene
    direction = [ANTERIOR_TO_POSTERIOR]
    plain = candidate_tracks(
        target, body, directions=direction, track_spacing_mm=5.0, seed_step_mm=2.5
    ).tracks
    centred = candidate_tracks(
        target, body, directions=direction, track_spacing_mm=5.0, seed_step_mm=2.5, run_centres=True
    ).tracks
    assert candidate_tracks(target, body, directions=direction, run_centres=True).provenance.parameters[
        "run_centres"
    ]
    assert [t.label for t in plain] == [t.label for t in centred]
    added = 0
    for before, after in zip(plain, centred, strict=True):
        count = before.seed_positions_mm.shape[0]
        assert after.seed_positions_mm.shape[0] == count + (1 - count % 2)
        depths = (after.seed_positions_mm - after.entry_mm) @ after.direction
        assert np.all(np.diff(depths) > 0)
        middle = 0.5 * (depths[0] + depths[-1])  # a sphere's chord: one run per track
        assert np.min(np.abs(depths - middle)) == pytest.approx(0.0, abs=1e-9)
        added += 1 - count % 2
    assert added > 0
