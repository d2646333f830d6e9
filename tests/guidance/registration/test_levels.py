"""Pyramid levels: block-aligned crops, sampled (never built) moving levels, the prepared planning CT."""

from __future__ import annotations

import numpy as np
import pytest

from guidance.registration import (
    PreparedFixed,
    RegistrationOptions,
    Verdict,
    _kernels,
    levels,
    prepare_fixed,
    register_rigid,
)
from guidance.registration.levels import _draw, mask_settings, moving_levels
from guidance.registration.pyramid import (
    aligned_box,
    block_factors,
    blur_level,
    box_weights,
    crop_level,
    grow,
    reduce_level,
)
from guidance.volume import Volume
from simulators.phantom import PatientModel
from tests.guidance.registration.scenes import planning, rigid, scene

_MASKS = mask_settings(RegistrationOptions())


def _ball_volume(seed: int = 0) -> Volume:
    """Noisy soft tissue ball with a bone core and a seed-like hot voxel, in air; 0.8 x 0.8 x 2 mm."""
    s, r, c = np.ogrid[:24, :60, :64]
    radius = np.sqrt(((s - 12) * 2.0) ** 2 + ((r - 28) * 0.8) ** 2 + ((c - 33) * 0.8) ** 2)
    image = np.where(radius < 18.0, 40.0, -1000.0) + np.where(radius < 7.0, 700.0, 0.0)
    image += np.random.default_rng(seed).normal(0.0, 20.0, image.shape)
    image[12, 40, 30] = 3000.0
    affine = np.diag([2.0, 0.8, 0.8, 1.0])
    affine[:3, 3] = (-20.0, 5.0, -7.0)
    return Volume(image.astype(np.float32), affine)


def test_a_level_of_a_crop_is_the_crop_of_the_whole_level() -> None:
    volume = _ball_volume()
    box = (np.array([1, 5, 7]), np.array([23, 57, 61]))  # holds the whole ball
    factors = block_factors(volume.spacing_mm, 2.0, volume.shape)
    np.testing.assert_array_equal(factors, [1, 2, 2])
    whole = reduce_level(volume, 2.0, _MASKS)
    cropped = reduce_level(volume, 2.0, _MASKS, box)
    expected = crop_level(whole, *aligned_box(factors, box, volume.shape))
    edge = aligned_box(factors, (np.array([23, 59, 63]), np.array([24, 60, 64])), volume.shape)
    np.testing.assert_array_equal(np.stack(edge), [[23, 29, 31], [24, 30, 32]])  # the last whole blocks
    np.testing.assert_array_equal(cropped.image, expected.image)
    np.testing.assert_array_equal(cropped.metal, expected.metal)
    np.testing.assert_array_equal(cropped.body, expected.body)
    np.testing.assert_allclose(cropped.affine, expected.affine)
    # The level's first voxel is the mean of the whole blocks from the even index (2, 4) on.
    np.testing.assert_allclose(cropped.affine[:3, 3], volume.index_to_patient([1.0, 4.5, 6.5])[0])
    assert cropped.metal[11, 40 // 2 - 2, 30 // 2 - 3] and 0 < cropped.metal.sum() < 200


@pytest.mark.parametrize(("level_mm", "taps"), [(2.0, [3, 1, 3]), (0.8, [3, 1, 5])])
def test_sampled_level_values_equal_the_built_level(level_mm: float, taps: list[int]) -> None:
    """sparse_values over every voxel gives the block-reduced, masked and blurred level (blocks of 1 too)."""
    volume = _ball_volume(1)
    level = reduce_level(volume, level_mm, _MASKS)
    blur_mm = np.array([5.0, 0.0, 3.0])
    built = blur_level(level, blur_mm)
    index = np.argwhere(np.ones(level.image.shape, dtype=bool)).astype(np.int64)
    maps = [np.arange(n, dtype=np.int64) for n in level.image.shape]
    weights = [box_weights(blur_mm[a] / level.spacing_mm[a]).astype(np.float64) for a in range(3)]
    assert [len(w) for w in weights] == taps
    values = np.empty(len(index))
    factors = block_factors(volume.spacing_mm, level_mm, volume.shape)
    _kernels.sparse_values(volume.array, factors, -1000.0, 1600.0, grow(level.body), *maps, index,
                           *weights, -1000.0, values)  # fmt: skip
    np.testing.assert_allclose(values.reshape(level.image.shape), built.image, atol=2e-3)


def test_draw_is_uniform_over_the_candidate_cells_and_distinct() -> None:
    candidates = np.zeros((3, 4, 4), dtype=bool)
    candidates[1, 1:3, 1:3] = True
    candidates[2, 0, 0] = True
    maps = [np.repeat(np.arange(3), 2), np.repeat(np.arange(4), 3), np.repeat(np.arange(4), 3)]
    everything = _draw(candidates, maps, 1000, np.random.default_rng(0))
    assert len(everything) == 5 * 2 * 3 * 3  # each candidate cell holds 2 x 3 x 3 level voxels
    drawn = _draw(candidates, maps, 60, np.random.default_rng(1))
    assert len(drawn) == 60 == len({tuple(v) for v in drawn})
    assert candidates[maps[0][drawn[:, 0]], maps[1][drawn[:, 1]], maps[2][drawn[:, 2]]].all()
    picks = np.concatenate([_draw(candidates, maps, 30, np.random.default_rng(k)) for k in range(40)])
    cells = np.column_stack([maps[a][picks[:, a]] for a in range(3)])
    counts = np.unique(cells, axis=0, return_counts=True)[1]
    assert len(counts) == 5 and counts.min() > 0.7 * counts.mean()  # 240 picks per cell expected


@pytest.fixture(scope="module")
def patient() -> tuple[PatientModel, Volume]:
    return planning(seed=1)


def test_large_levels_are_sampled_and_still_register(
    patient: tuple[PatientModel, Volume], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a small voxel budget the finest moving level is sampled, not built: same accuracy, PASS.

    The 2.4 mm level (96 000 voxels) is built all the same: the sampled level needs masks that fine.
    """
    model, fixed = patient
    case = scene(model, fixed, rigid((-2.0, 3.0, -4.0), (-6.0, 5.0, -5.0), model.tumour.centre_mm))
    monkeypatch.setattr(levels, "DENSE_VOXELS", 1000)
    pyramid = moving_levels(case.moving, (4.0, 2.0, 1.0), _MASKS, np.zeros(3))
    assert [level.dense is None for level in pyramid] == [False, False, True]
    assert pyramid[2].guide is pyramid[1].dense
    found = register_rigid(case.fixed, case.moving)
    tre = case.tre_mm(found.moving_to_fixed)
    assert tre[1] < 0.5 and found.verdict is Verdict.PASS, (tre, found.quality)
    assert found.levels[2].points == RegistrationOptions().max_points


def test_a_prepared_planning_ct_gives_the_same_registration(patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = patient
    prepared = prepare_fixed(fixed)
    assert isinstance(prepared, PreparedFixed) and prepared.levels_kept == 3
    for motion in (rigid((1.0, -2.0, 3.0), (3.0, -2.0, 4.0)), rigid((3.0, -4.0, 5.0), (6.0, -5.0, 7.0))):
        case = scene(model, fixed, motion)
        plain = register_rigid(fixed, case.moving)
        kept = register_rigid(prepared, case.moving)
        assert kept.verdict is plain.verdict is Verdict.PASS
        assert case.tre_mm(kept.moving_to_fixed)[1] < 0.5
        points = case.gtv_points_scan_mm
        assert np.abs(kept.map_points(points) - plain.map_points(points)).max() < 0.1
    assert prepared.levels_kept == 3  # reused, not reduced again
    register_rigid(prepared, case.moving, levels_mm=(4.0, 3.0), metal_hu=2000.0)
    assert prepared.levels_kept == 5  # other options: reduced on first use, kept


def test_a_prepared_planning_ct_is_checked() -> None:
    with pytest.raises(ValueError, match="Volume"):
        PreparedFixed(np.zeros((4, 4, 4)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown registration option"):
        prepare_fixed(_ball_volume(), level=(2.0,))


def test_uneven_blocks_map_to_the_guide_cell_of_their_centre() -> None:
    """A 0.6 mm scan: the 1 mm level (blocks of 2) is sampled within the 2 mm level (blocks of 3)."""
    volume = Volume(np.zeros((4, 12, 12), np.float32), np.diag([2.0, 0.6, 0.6, 1.0]))
    guide = reduce_level(volume, 2.0, _MASKS)
    level = levels.MovingLevel(volume, np.array([1, 2, 2]), np.eye(4), np.zeros(3), None, guide)
    maps = level._maps()
    np.testing.assert_array_equal(maps[0], [0, 1, 2, 3])
    centres = np.arange(6) * 2 + 0.5  # voxel index of each level voxel's centre
    np.testing.assert_array_equal(maps[1], np.floor(centres / 3).astype(int))


def test_a_scan_outside_a_prepared_planning_ct_fails(patient: tuple[PatientModel, Volume]) -> None:
    model, fixed = patient
    moving = scene(model, fixed, np.eye(4), slices=10, metal=False).moving
    far = np.array(moving.affine)
    far[2, 3] += 300.0
    found = register_rigid(prepare_fixed(fixed, levels_mm=(4.0, 2.0)), Volume(moving.array, far))
    assert found.verdict is Verdict.FAIL and found.quality.overlap_fraction == 0.0
    assert found.levels == ()


@pytest.mark.parametrize(("slices", "width_px"), [(7, 2.5), (2, 4.4), (9, 1.3)])
def test_slice_blur_equals_scipy(slices: int, width_px: float) -> None:
    from scipy import ndimage

    from guidance.registration.pyramid import _correlate_slices

    image = np.random.default_rng(slices).normal(0.0, 300.0, (slices, 5, 6)).astype(np.float32)
    weights = box_weights(width_px)
    assert len(weights) > 1
    expected = ndimage.correlate1d(image, weights, axis=0, mode="nearest")
    np.testing.assert_allclose(_correlate_slices(image, weights), expected, rtol=1e-5, atol=1e-3)
