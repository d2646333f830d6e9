"""Needle detection against simulator ground truth; needle mask feeding seed detection."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from guidance.detection import NeedleDetection, NeedleOptions, detect_needles, detect_seeds, needle_mask
from guidance.volume import Volume
from simulators.render import RenderedScan
from tests.guidance.detection import scenes


@pytest.fixture(scope="module", params=[1.0, 2.0])
def inserted(request: pytest.FixtureRequest) -> tuple[scenes.Scene, NeedleDetection]:
    """Two lateral needles 5 mm apart and an anterior one whose tip lies below the scan."""
    model = scenes.patient()
    c = model.tumour.centre_mm
    grid = scenes.scan_grid(c, thickness_mm=request.param, slices=int(48 / request.param))
    entries = np.array(
        [[80.0, c[1], c[2] - 3], [80.0, c[1] + 5, c[2] - 3], [c[0] - 10, c[1] - 75, c[2] + 10]]
    )
    tips = np.array(
        [[c[0] + 8, c[1] + 2, c[2] + 4], [c[0] + 8, c[1] + 7, c[2] + 3], [c[0] - 4, c[1] + 5, c[2] - 30]]
    )
    seeds = (np.array([c + np.array([-6.0, 0.0, 12.0])]), np.array([[1.0, 0.0, 0.0]]))
    scene = scenes.render(model, grid, seeds=seeds, needles=(entries, tips), noise_seed=3)
    return scene, detect_needles(scene.volume)


def _pair(scene: scenes.Scene, found: NeedleDetection, k: int) -> int:
    """Index of the detected needle nearest the true needle k (distance of the true tip to its axis)."""
    distance = [float(n.distance_mm(scene.needle_tips_mm[k : k + 1])[0]) for n in found.needles]
    return int(np.argmin(distance))


def test_all_found_and_separated(inserted: tuple[scenes.Scene, NeedleDetection]) -> None:
    scene, found = inserted
    assert len(found.needles) == 3
    assert len({_pair(scene, found, k) for k in range(3)}) == 3


def test_tip_and_angle_errors(inserted: tuple[scenes.Scene, NeedleDetection]) -> None:
    scene, found = inserted
    for k in range(2):
        needle = found.needles[_pair(scene, found, k)]
        truth = scene.needle_tips_mm[k] - scene.needle_entries_mm[k]
        truth /= np.linalg.norm(truth)
        assert np.linalg.norm(needle.tip_mm - scene.needle_tips_mm[k]) < 1.5
        assert np.degrees(np.arccos(min(1.0, float(needle.direction @ truth)))) < 3.0
        assert not needle.tip_outside_scan and needle.entry_in_scan
        assert 60.0 < needle.length_in_body_mm < 110.0
        assert needle.confidence > 0.5


def test_tip_outside_scan_flagged(inserted: tuple[scenes.Scene, NeedleDetection]) -> None:
    scene, found = inserted
    needle = found.needles[_pair(scene, found, 2)]
    assert needle.tip_outside_scan
    assert any("outside the scanned range" in r for r in needle.reasons)
    truth = scene.needle_tips_mm[2] - scene.needle_entries_mm[2]
    truth /= np.linalg.norm(truth)
    assert np.degrees(np.arccos(min(1.0, float(needle.direction @ truth)))) < 3.0


def test_needle_mask_keeps_needles_out_of_seeds(inserted: tuple[scenes.Scene, NeedleDetection]) -> None:
    scene, found = inserted
    mask = needle_mask(found, scene.volume.grid)
    seeds = detect_seeds(scene.volume, exclude_mask=mask)
    nearest = np.linalg.norm(seeds.positions_mm - scene.seeds_mm[0], axis=1)
    assert len(seeds.seeds) == 1 and float(nearest.min()) < 1.0


def test_empty_scan_and_options() -> None:
    model = scenes.patient()
    grid = scenes.scan_grid(model.tumour.centre_mm, size=64, pixel_mm=2.0, slices=6)
    scene = scenes.render(model, grid, noise_seed=1)
    assert detect_needles(scene.volume).needles == ()
    with pytest.raises(ValueError, match=r"NeedleOptions\.inlier_mm"):
        NeedleOptions(inlier_mm=0.0)
    with pytest.raises(ValueError, match=r"NeedleOptions\.dimmed_fraction"):
        NeedleOptions(dimmed_fraction=0.0)


def test_thick_slices_find_needles_not_bone() -> None:
    """5 mm slices: the needles peak near 1400 HU, below the 1500 HU level of thin slices.

    The level is scaled by partial volume and bone (cortex 1200 HU, passing the lower level)
    is rejected by its bright surroundings: the three needles are found, one line each, on
    their true axes. Their tips are not asserted: where a needle crosses the airway or
    straddles two thick slices its signal falls below the level (a known limitation).
    """
    model = scenes.patient()
    c = model.tumour.centre_mm
    grid = scenes.scan_grid(c, thickness_mm=5.0, slices=9)
    entries = np.array(
        [[80.0, c[1], c[2] - 3], [80.0, c[1] + 5, c[2] - 3], [c[0] - 10, c[1] - 75, c[2] + 10]]
    )
    tips = np.array(
        [[c[0] + 8, c[1] + 2, c[2] + 4], [c[0] + 8, c[1] + 7, c[2] + 3], [c[0] - 4, c[1] + 5, c[2] - 30]]
    )
    scene = scenes.render(model, grid, needles=(entries, tips), noise_seed=3)
    assert float(scene.volume.array.max()) < NeedleOptions().metal_hu
    found = detect_needles(scene.volume)
    assert len(found.needles) == 3
    axes = (tips - entries) / np.linalg.norm(tips - entries, axis=1, keepdims=True)
    owners = set()
    for needle in found.needles:
        # Median distance of the needle's points from each true axis: it lies on one of them.
        lateral = []
        for k in range(3):
            offset = needle.points_mm - entries[k]
            lateral.append(
                float(np.median(np.linalg.norm(offset - (offset @ axes[k])[:, None] * axes[k], axis=1)))
            )
        k = int(np.argmin(lateral))
        owners.add(k)
        assert lateral[k] < 1.5  # voxel centres: the needle rises within 5 mm slices
        assert np.degrees(np.arccos(min(1.0, abs(float(needle.direction @ axes[k]))))) < 4.0
    assert owners == {0, 1, 2}


def test_needle_mask_is_every_voxel_near_the_segment() -> None:
    """The painted mask equals a brute-force distance test on an oblique, anisotropic grid."""
    from guidance.detection import DetectedNeedle
    from guidance.provenance import Provenance
    from guidance.volume import Grid

    angle = np.radians(25.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.7, 0.6, 0.45])
    affine[:3, 3] = [-10.0, -12.0, 5.0]
    grid = Grid((30, 48, 52), affine)
    tip, entry = grid.index_to_patient(np.array([[12.0, 20.0, 30.0], [20.3, 30.1, 12.7]]))
    direction = (tip - entry) / np.linalg.norm(tip - entry)
    needle = DetectedNeedle(entry, tip, direction, float(np.linalg.norm(tip - entry)), 1.0, (), False, True,
                            np.zeros((0, 3)))  # fmt: skip
    detection = NeedleDetection((needle,), (), Provenance("detection.needles", {}, "test", 0.0))
    mask = needle_mask(detection, grid, radius_mm=2.0)
    outer = tip - (float(np.linalg.norm(entry - tip)) + 60.0) * direction
    w = grid.voxel_centres_mm().reshape(-1, 3) - outer
    length = float(np.linalg.norm(tip - outer))
    t = np.clip(w @ direction, 0.0, length)
    distance = np.linalg.norm(w - t[:, None] * direction, axis=1).reshape(grid.shape)
    assert mask.sum() > 500
    np.testing.assert_array_equal(mask, distance <= 2.0)


def test_needle_mask_radius_is_the_needle_and_its_blurred_edge() -> None:
    """Needle radius 0.635 mm + half the voxel diagonal + 1 mm edge blur: 2.34 mm on 0.7 x 0.7 x 1 mm."""
    from guidance.detection.needle_mask import needle_mask_radius_mm
    from guidance.volume import Grid

    grid = Grid((10, 10, 10), np.diag([1.0, 0.7, 0.7, 1.0]))
    expected = 0.635 + 0.5 * float(np.sqrt(1.0 + 0.49 + 0.49)) + 1.0
    assert needle_mask_radius_mm(grid) == pytest.approx(expected)
    thick = Grid((10, 10, 10), np.diag([3.0, 0.7, 0.7, 1.0]))
    wide = NeedleOptions(needle_diameter_mm=2.0, edge_blur_mm=0.5)
    assert needle_mask_radius_mm(thick, wide) == pytest.approx(1.0 + 0.5 * float(np.sqrt(9.98)) + 0.5)


@pytest.mark.parametrize("thickness_mm", [1.0, 2.0])
def test_a_row_of_seeds_is_not_a_needle_but_a_rod_on_its_line_is(thickness_mm: float) -> None:
    """Five seeds 8 mm apart on one line (36 mm of straight metal) and, in a second scan, a needle there.

    The row's intensity falls to the tissue between the seeds: it is not a needle, and all
    five seeds are found. The needle along the same line is continuous: it is found, and a
    seed 4.5 mm beside it is outside its mask and found.
    """
    model = scenes.patient()
    c = model.tumour.centre_mm
    grid = scenes.scan_grid(c, thickness_mm=thickness_mm, slices=int(24 / thickness_mm))
    axis = np.array([1.0, 0.2, 0.15]) / np.linalg.norm([1.0, 0.2, 0.15])
    row = c + np.outer(np.arange(-2, 3) * 8.0, axis)
    seeds = (row, np.tile(axis, (5, 1)))
    scene = scenes.render(model, grid, seeds=seeds, noise_seed=4)
    assert detect_needles(scene.volume).needles == ()
    assert len(detect_seeds(scene.volume).seeds) == 5
    beside = (c + 4.5 * np.array([0.0, 0.0, 1.0]))[None, :]
    rod = scenes.render(
        model, grid, seeds=(beside, axis[None, :]), needles=((c - 60 * axis)[None], (c + 15 * axis)[None]),
        noise_seed=4,
    )  # fmt: skip
    found = detect_needles(rod.volume)
    assert len(found.needles) == 1
    assert float(np.linalg.norm(found.needles[0].tip_mm - (c + 15 * axis))) < 1.0
    kept = detect_seeds(rod.volume, exclude_mask=needle_mask(found, grid))
    assert len(kept.seeds) == 1 and float(np.linalg.norm(kept.positions_mm[0] - beside[0])) < 0.5


@pytest.mark.parametrize("thickness_mm", [1.0, 2.0])
def test_a_needle_inserted_only_a_little_is_found_from_the_skin(thickness_mm: float) -> None:
    """A needle in the body over 14 mm (the first check of an insertion), and deep inside a chain of
    three touching seeds (13.8 mm of straight metal) beside two single seeds: the needle is found,
    the chain is not a needle but three seeds."""
    model = scenes.patient()
    c = model.tumour.centre_mm
    grid = scenes.scan_grid(c, thickness_mm=thickness_mm, slices=int(24 / thickness_mm))
    empty = np.asarray(scenes.render(model, grid, noise_seed=5).volume.array)
    direction = np.array([1.0, 0.15, 0.1]) / np.linalg.norm([1.0, 0.15, 0.1])
    # The skin on the line through the tumour centre, from outside (-x) in.
    along = np.arange(-120.0, 0.0, 0.25)
    points = c + along[:, None] * direction
    index = np.rint(grid.patient_to_index(points)).astype(int)
    inside = grid.contains_index(index.astype(float))
    values = np.full(len(points), -1000.0)
    values[inside] = empty[tuple(index[inside].T)]
    entry = points[int(np.flatnonzero(values > -400.0)[0])]
    tip = entry + 14.0 * direction
    chain = c + np.outer([-4.6, 0.0, 4.6], [0.0, 0.0, 1.0]) + [0.0, 8.0, 0.0]
    singles = c + np.array([[8.0, -8.0, 5.0], [-8.0, -8.0, -5.0]])
    seeds = np.vstack([chain, singles])
    scene = scenes.render(model, grid, seeds=(seeds, np.tile([0.0, 0.0, 1.0], (5, 1))),
                          needles=(entry[None], tip[None]), noise_seed=5)  # fmt: skip
    found = detect_needles(scene.volume)
    assert len(found.needles) == 1
    needle = found.needles[0]
    assert float(np.linalg.norm(needle.tip_mm - tip)) < 1.0
    assert float(np.linalg.norm(needle.entry_mm - entry)) < 2.0 and needle.entry_in_scan
    assert any("found from the skin" in note for note in found.notes)
    found_seeds = detect_seeds(scene.volume, exclude_mask=needle_mask(found, grid))
    distance = np.linalg.norm(seeds[:, None, :] - found_seeds.positions_mm[None, :, :], axis=2)
    assert len(found_seeds.seeds) == 5 and float(distance.min(axis=1).max()) < 1.0


def test_needles_of_a_simulated_procedure_scan_including_one_from_beyond_the_range() -> None:
    """The second scan of the simulated 'easy' procedure: four needles, one of them coming in from
    below the scanned range with its last 14 mm (tip included) in it. All four are found with
    their tips at the inner end (that one's was taken at the scan's edge, 7.6 mm off)."""
    rendered = scenes.procedure_scan("easy", 1)
    tips = np.array(rendered.truth.needle_tips_scan_mm)
    entries = np.array(rendered.truth.needle_entries_scan_mm)
    below = entries[:, 2] < float(rendered.volume.grid.index_to_patient(np.array([[-0.5, 0.0, 0.0]]))[0, 2])
    assert len(tips) == 4 and int(below.sum()) == 1
    found = detect_needles(rendered.volume)
    assert len(found.needles) == 4
    for tip in tips:
        assert min(float(np.linalg.norm(n.tip_mm - tip)) for n in found.needles) < 1.0


def test_needles_of_a_simulated_procedure_scan_on_five_mm_slices() -> None:
    """The first scan of the simulated 'thick-slices' procedure: eight needles on 5 mm slices, where
    a needle leaves few, scattered metal points. At least seven are found, their tips within 2.5 mm
    (along a needle that rises through 5 mm slices the tip is placed within half a slice or so)."""
    rendered = scenes.procedure_scan("thick-slices", 0)
    assert float(rendered.volume.spacing_mm[0]) == 5.0
    found = detect_needles(rendered.volume)
    tips = np.array(rendered.truth.needle_tips_scan_mm)
    near = [min(float(np.linalg.norm(n.tip_mm - tip)) for n in found.needles) < 2.5 for tip in tips]
    assert len(tips) == 8 and sum(near) >= 7 and len(found.needles) <= 8


@pytest.mark.parametrize("scenario", ["easy", "standard", "cold-spot"])
def test_a_tip_at_the_scans_edge_is_placed_where_the_needle_ends_in_range(scenario: str) -> None:
    """The first scan of three simulated procedures (2 mm): two needles each reach the last slice. One
    ends in it (0.5 mm or less past its centre); the other goes on beyond the range. Both are flagged
    (the slices cannot tell them apart), and the tip is where the needle's image ends within the range:
    the end of its voxels was 1.0-1.1 mm past the first's tip."""
    from tests.guidance.detection.suite import scanned_tip

    rendered = scenes.procedure_scan(scenario, 0)
    found = detect_needles(rendered.volume)
    grid = rendered.volume.grid
    flagged = [n for n in found.needles if n.tip_outside_scan]
    assert len(flagged) == 2
    tips = np.array(rendered.truth.needle_tips_scan_mm)
    entries = np.array(rendered.truth.needle_entries_scan_mm)
    for needle in flagged:
        k = int(np.argmin([float(np.linalg.norm(needle.tip_mm - tip)) for tip in tips]))
        assert float(np.linalg.norm(needle.tip_mm - scanned_tip(grid, entries[k], tips[k]))) < 0.6


def test_needles_of_a_simulated_low_dose_scan_with_heavy_streaks() -> None:
    """The second scan of the simulated 'hard' procedure (photon-starved streaks): five needles.

    A needle's voxels were taken for cortex where more than 3 of 8 in-plane directions 3 mm
    away were above 300 HU: streaks beside a needle and its own blurred edge (22.5 degrees off
    its axis a ring direction passes 1.2 mm from it) did that. One needle was then fitted
    through another's points (tip 6.2 mm, axis 22 degrees off). Bone goes on in the slices
    above and below; a needle's surroundings there are tissue.
    """
    rendered = scenes.procedure_scan("hard", 1)
    found = detect_needles(rendered.volume)
    tip_errors_mm, angle_errors_deg = _errors_of_the_nearest(rendered, found)
    assert len(tip_errors_mm) == 5 and len(found.needles) == 5
    assert max(tip_errors_mm) < 1.0 and max(angle_errors_deg) < 2.0


def _errors_of_the_nearest(
    rendered: RenderedScan, found: NeedleDetection
) -> tuple[list[float], list[float]]:
    """Per true needle, the tip (mm) and axis (degrees) errors of the found needle whose tip is nearest."""
    tips = np.array(rendered.truth.needle_tips_scan_mm)
    entries = np.array(rendered.truth.needle_entries_scan_mm)
    tip_errors_mm, angle_errors_deg = [], []
    for entry, tip in zip(entries, tips, strict=True):
        needle = min(found.needles, key=lambda n: float(np.linalg.norm(n.tip_mm - tip)))
        axis = (tip - entry) / np.linalg.norm(tip - entry)
        tip_errors_mm.append(float(np.linalg.norm(needle.tip_mm - tip)))
        angle_errors_deg.append(float(np.degrees(np.arccos(min(1.0, abs(float(needle.direction @ axis)))))))
    return tip_errors_mm, angle_errors_deg


def _needle_in_a_slice(
    angle_deg: float, peak_hu: float, *, bone: bool, thickness_mm: float = 1.0
) -> tuple[Volume, NDArray[np.float64]]:
    """A needle 40 mm long in one slice (0.7 mm pixels), peaking at ``peak_hu``, with the
    bright bands its own rays draw beside it (+500 HU, 2-4 mm from its axis, in its slice only);
    with ``bone``, a bone through every slice (a tube of 2 mm of cortex at 1800 HU around marrow,
    20 mm across). Returns the volume and the needle's two ends (LPS mm)."""
    rng = np.random.default_rng(5)
    image = rng.normal(40.0, 12.0, (12, 160, 160)).astype(np.float32)
    rows, columns = np.mgrid[0:160, 0:160] * 0.7
    start = np.array([30.0, 20.0])
    direction = np.array([np.sin(np.radians(angle_deg)), np.cos(np.radians(angle_deg))])
    offset = np.stack([rows - start[0], columns - start[1]], axis=-1)
    along = offset @ direction
    across = np.abs(offset @ np.array([-direction[1], direction[0]]))
    inside = (along >= 0.0) & (along <= 40.0)
    image[6] += np.where(inside, peak_hu * np.exp(-(across**2) / (2 * 0.7**2)), 0.0).astype(np.float32)
    image[6] += np.where((across > 2.0) & (across < 4.0), 500.0, 0.0).astype(np.float32)
    if bone:
        radius = np.hypot(rows - 90.0, columns - 70.0)
        image[:, radius <= 10.0] = np.where(radius[radius <= 10.0] <= 8.0, 400.0, 1800.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0.0, 0.0, 0.7], [0.0, 0.7, 0.0], [thickness_mm, 0.0, 0.0]])
    volume = Volume(image, affine)
    ends_index = np.array([[6.0, *start / 0.7], [6.0, *(start + 40.0 * direction) / 0.7]])
    return volume, volume.grid.index_to_patient(ends_index)


def _ends_error_mm(found: NeedleDetection, ends: NDArray[np.float64]) -> float:
    """How far the one needle found ends from ``ends``; no skin here to tell the entry, either way round."""
    assert len(found.needles) == 1
    found_ends = np.array([found.needles[0].entry_mm, found.needles[0].tip_mm])
    return min(float(np.linalg.norm(pair - ends, axis=1).max()) for pair in (found_ends, found_ends[::-1]))


@pytest.mark.parametrize(
    ("angle_deg", "peak_hu"), [(0.0, 2600.0), (22.5, 2600.0), (40.0, 2600.0), (22.5, 1300.0)]
)
def test_a_needle_lying_in_a_slice_beside_its_streaks_is_not_bone(angle_deg: float, peak_hu: float) -> None:
    """Found at any in-plane angle, also when its streaks darken it to 1300 HU, under the metal level
    all along (the second search); the bone is not a needle."""
    volume, ends = _needle_in_a_slice(angle_deg, peak_hu, bone=True)
    assert _ends_error_mm(detect_needles(volume), ends) < 1.0


def test_a_darkened_needle_in_a_three_mm_slice_beside_its_streaks() -> None:
    """On 3 mm slices the metal level falls to 1000 HU (partial volume); a needle lying in a slice
    and darkened by its own streaks runs under it (900 HU here). The second search finds it on any
    thickness: the slices above and below are tissue. Its streaks brighten its in-plane ring, which
    on thick slices alone would make it cortex."""
    volume, ends = _needle_in_a_slice(22.5, 900.0, bone=True, thickness_mm=3.0)
    found = detect_needles(volume)
    assert _ends_error_mm(found, ends) < 1.0
    assert any("darkened by their own streaks" in note for note in found.notes)


def test_a_needles_streak_beyond_its_tip_in_a_five_mm_slice_is_no_needle() -> None:
    """On 5 mm slices the second search's level would be 360 HU: the streak a needle lying in a slice
    draws along its own line beyond its tip (410 HU here, 25 mm long, 20 mm past the tip) passed as a
    needle. The second search runs on slices up to 3 mm; the needle itself (1400 HU) is found by the
    first."""
    rng = np.random.default_rng(2)
    image = rng.normal(40.0, 12.0, (8, 200, 200)).astype(np.float32)
    rows, columns = np.mgrid[0:200, 0:200] * 0.7
    across = np.abs(rows - 70.0)
    image[4] += np.where((columns >= 20.0) & (columns <= 60.0), 1400.0 * np.exp(-(across**2) / 0.98), 0.0)
    image[4] += np.where((columns >= 80.0) & (columns <= 105.0), 410.0 * np.exp(-(across**2) / 0.98), 0.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0.0, 0.0, 0.7], [0.0, 0.7, 0.0], [5.0, 0.0, 0.0]])
    found = detect_needles(Volume(image, affine))
    assert len(found.needles) == 1
    assert float(np.ptp([p[0] for p in (found.needles[0].entry_mm, found.needles[0].tip_mm)])) < 45.0


def test_a_scan_whose_only_metal_is_a_darkened_needle() -> None:
    """No voxel reaches the metal level (fewer than 6 points for a line): the needle the second
    search finds is still measured."""
    volume, ends = _needle_in_a_slice(10.0, 1300.0, bone=False)
    assert _ends_error_mm(detect_needles(volume), ends) < 1.0


def test_a_needle_darkened_by_its_own_streaks_is_found_from_a_lower_level() -> None:
    """The first scan of the simulated 'hard' procedure (low dose): eight needles, one of them lying
    in a slice (0.02 of its direction along the slice axis). The rays along it are starved and
    its deficit runs back along it: 1100-1400 HU, under the metal level over most of its length.
    It was fitted through another needle's points, 28 degrees off; the second search, from 0.6 of
    the level among the points no needle explains, finds it (tip within 0.6 mm, axis 1.8 degrees)."""
    rendered = scenes.procedure_scan("hard", 0)
    found = detect_needles(rendered.volume)
    tip_errors_mm, angle_errors_deg = _errors_of_the_nearest(rendered, found)
    assert len(tip_errors_mm) == 8 and len(found.needles) == 8
    assert any("darkened by their own streaks" in note for note in found.notes)
    assert max(tip_errors_mm) < 1.0 and max(angle_errors_deg) < 2.5


def _needle_with_seeds(renderer: str) -> tuple[Volume, NDArray[np.float64], NDArray[np.float64]]:
    """A needle (2 mm slices) with a seed 2.4 mm beside its axis, mostly along the slice axis (the
    capsules 1.4 mm apart), and one lying along it 0.4 mm off its axis, among six separate seeds.
    Returns the scan, the seed beside the needle and the one on it."""
    from tests.guidance.detection import second_renderer

    model = scenes.patient()
    c = np.asarray(model.tumour.centre_mm, dtype=np.float64)
    direction = np.array([1.0, 0.08, 0.04]) / np.linalg.norm([1.0, 0.08, 0.04])
    across = np.cross(direction, [0.0, 1.0, 0.0])
    across /= np.linalg.norm(across)  # mostly along the slice axis
    sideways = np.cross(direction, across)
    beside = c - 20.0 * direction + 2.4 * across
    on = c - 8.0 * direction + 0.4 * sideways
    others = c + np.array([[-8.0, 14.0, 6.0], [6.0, 16.0, -6.0], [-10.0, -14.0, -4.0], [10.0, -12.0, 8.0],
                           [0.0, 22.0, 0.0], [-22.0, 0.0, 8.0]])  # fmt: skip
    seeds = np.vstack([beside, on, others])
    axes = np.vstack([[0.7, 0.7, 0.0], direction, np.tile([0.6, 0.8, 0.0], (6, 1))])
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    entry, tip = c - 70.0 * direction, c
    if renderer == "simulator":
        grid = scenes.scan_grid(c, thickness_mm=2.0, slices=20)
        needles = (entry[None], tip[None])
        volume = scenes.render(model, grid, seeds=(seeds, axes), needles=needles, noise_seed=7).volume
    else:
        grid = second_renderer.grid(c, pixel_mm=1.0, thickness_mm=2.0, size=160, slices=20)
        volume = second_renderer.render(grid, c, seeds_mm=seeds, seed_directions=axes,
                                        needle_entries_mm=entry[None], needle_tips_mm=tip[None],
                                        noise_seed=7)  # fmt: skip
    return volume, beside, on


@pytest.mark.parametrize("renderer", ["simulator", "second"])
def test_a_seed_beside_a_needle_gets_its_core_back(renderer: str) -> None:
    """2 mm slices. The mask (2.8-2.9 mm in radius) covers the core of a seed 2.4 mm from the
    needle's axis: without the scan that seed is lost (7 mm from anything found). Given the scan,
    the voxels brighter than the needle shows at their distance are left out of the mask, and
    the seed is found within 1 mm (0.84 and 0.63 mm); the seed lying along the needle, 0.4 mm
    off its axis, stays in the needle."""
    volume, beside, on = _needle_with_seeds(renderer)
    grid = volume.grid
    found = detect_needles(volume)
    assert len(found.needles) == 1
    plain = needle_mask(found, grid)
    image = np.asarray(volume.array)
    bright = np.argwhere(image > 1000.0)
    near = np.linalg.norm(grid.index_to_patient(bright.astype(np.float64)) - beside, axis=1) < 2.0
    assert near.any() and plain[tuple(bright[near].T)].all()
    mask = needle_mask(found, grid, ct=volume)
    released = np.argwhere(plain & ~mask)
    assert not (mask & ~plain).any() and len(released) > 0
    released_mm = grid.index_to_patient(released.astype(np.float64))
    assert np.linalg.norm(released_mm - beside, axis=1).max() < 3.5
    seeds = detect_seeds(volume, exclude_mask=mask).positions_mm
    assert float(np.linalg.norm(seeds - beside, axis=1).min()) < 1.0
    assert float(np.linalg.norm(seeds - on, axis=1).min()) > 4.0


_Segment = tuple[NDArray[np.float64], NDArray[np.float64]]  # centre, axis (mm)


def _synthetic_needle(objects: list[_Segment]) -> tuple[Volume, NeedleDetection]:
    """A needle along x through a 0.5 x 0.5 x 1 mm grid (tip at x = +10 mm) drawn as a Gaussian
    profile across its axis, plus seed-like segments (centre, axis; 4.5 mm long) drawn the same
    way; 40 HU tissue, no noise. Returns the volume and the needle as detected (its true axis)."""
    from guidance.detection import DetectedNeedle
    from guidance.provenance import Provenance

    affine = np.eye(4)  # slices along z, rows along y, columns along x (LPS mm)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = [0.0, 0.0, 1.0], [0.0, 0.5, 0.0], [0.5, 0.0, 0.0]
    affine[:3, 3] = [-20.0, -10.0, -10.0]
    volume_shape = (21, 41, 81)
    index = np.stack(np.meshgrid(*(np.arange(n) for n in volume_shape), indexing="ij"), -1).reshape(-1, 3)
    points = index.astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]

    def segment(a: NDArray[np.float64], b: NDArray[np.float64], peak_hu: float, sigma_mm: float
                ) -> NDArray[np.float64]:  # fmt: skip
        axis = (b - a) / np.linalg.norm(b - a)
        t = np.clip((points - a) @ axis, 0.0, float(np.linalg.norm(b - a)))
        d = np.linalg.norm(points - a - t[:, None] * axis, axis=1)
        values: NDArray[np.float64] = peak_hu * np.exp(-0.5 * (d / sigma_mm) ** 2)
        return values

    tip = np.array([10.0, 0.0, 0.0])
    hu = 40.0 + segment(np.array([-40.0, 0.0, 0.0]), tip, 3000.0, 0.6)
    for centre, axis in objects:
        hu += segment(centre - 2.25 * axis, centre + 2.25 * axis, 2500.0, 0.45)
    volume = Volume(np.minimum(hu, 3071.0).reshape(volume_shape).astype(np.float32), affine)
    entry = np.array([-20.0, 0.0, 0.0])
    needle = DetectedNeedle(entry, tip, np.array([1.0, 0.0, 0.0]), 30.0, 1.0, (), False, True,
                            np.zeros((0, 3)))  # fmt: skip
    return volume, NeedleDetection((needle,), (), Provenance("detection.needles", {}, "test", 0.0))


def test_what_lies_beside_a_needle_is_released_and_what_goes_on_into_its_steel_is_not() -> None:
    """A seed 2.2 mm beside a needle's axis (synthetic, known profile): its voxels in the needle's
    blurred edge are left out of the mask; a seed across the needle 0.3 mm off its axis, and the
    needle's own edge, stay in it."""
    beside = (np.array([-8.0, 2.2, 0.0]), np.array([1.0, 0.0, 0.0]))
    across = (np.array([4.0, 0.3, 0.0]), np.array([0.0, 1.0, 0.0]))
    volume, detection = _synthetic_needle([beside, across])
    grid = volume.grid
    plain = needle_mask(detection, grid)
    released = np.argwhere(plain & ~needle_mask(detection, grid, ct=volume))
    released_mm = grid.index_to_patient(released.astype(np.float64))
    assert len(released) >= 10
    # Only the seed beside the needle, and only voxels brighter than the needle's edge by the level.
    assert np.abs(released_mm[:, 0] - beside[0][0]).max() <= 2.25 + 1.0
    assert released_mm[:, 1].min() > 0.635
    image = np.asarray(volume.array)
    assert image[tuple(released.T)].min() > 500.0
    # The needle alone releases nothing.
    alone, lone_needle = _synthetic_needle([])
    assert not (needle_mask(lone_needle, grid) & ~needle_mask(lone_needle, grid, ct=alone)).any()


def test_needle_mask_without_a_needle_or_with_a_wrong_scan() -> None:
    from guidance.provenance import Provenance

    volume, _, _ = _needle_with_seeds("second")
    nothing = NeedleDetection((), (), Provenance("detection.needles", {}, "test", 0.0))
    assert not needle_mask(nothing, volume.grid, ct=volume).any()
    found = detect_needles(volume)
    other = Volume(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4))
    with pytest.raises(ValueError, match="not the grid's"):
        needle_mask(found, volume.grid, ct=other)
