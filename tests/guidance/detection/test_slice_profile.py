"""A seed's position along thick slices from how much of it each slice sees (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from guidance.detection import detect_seeds
from guidance.detection.slice_profile import (
    PROFILES,
    matched_slice_sums,
    offset_in_slice_mm,
    predicted_centroid_mm,
)
from tests.guidance.detection import second_renderer


def _centroid(offset_mm: float, edge: str, width: float, extent_mm: float = 0.0) -> float:
    return predicted_centroid_mm(offset_mm, thickness_mm=5.0, extent_mm=extent_mm, diameter_mm=0.0,
                                 edge=edge, width=width)  # fmt: skip


@pytest.mark.parametrize(("edge", "width"), PROFILES)
def test_centroid_is_odd_monotonic_and_exact_at_the_slice_boundary(edge: str, width: float) -> None:
    offsets = np.linspace(-2.5, 2.5, 41)
    centroids = np.array([_centroid(o, edge, width, extent_mm=1.0) for o in offsets])
    assert np.allclose(centroids, -centroids[::-1], atol=0.02)
    assert np.all(np.diff(centroids) >= -1e-9)
    # On the boundary two slices see the seed alike: the centroid is the boundary.
    assert abs(centroids[-1] - 2.5) <= 0.05 and abs(centroids[20]) <= 1e-9


def test_trapezoid_profile_known_answers() -> None:
    """Box (5 mm) convolved with a 2 mm box: flat over the middle 3 mm, ramps 2 mm wide."""
    # A point inside the flat top: the next slice sees none of it.
    assert abs(_centroid(1.0, "box", 0.4)) <= 0.02
    # 0.5 mm into the ramp the next slice sees a quarter of it: centroid 5 mm x 0.25.
    assert _centroid(2.0, "box", 0.4) == pytest.approx(1.25, abs=0.05)
    # A Gaussian edge (sigma 1.25 mm) leaks into the next slice from the middle on:
    # Phi((x - 2.5) / 1.25) at 1 mm from the centre is 0.115 of the point.
    assert _centroid(1.0, "gaussian", 0.25) == pytest.approx(5.0 * 0.115, abs=0.1)


def test_inversion_bounds_the_error_over_the_profiles() -> None:
    """Noise-free centroids of a seed (1.5 mm along the slice axis) at offsets across a 5 mm slice.

    The slices' centroid alone is off by up to 1.39 mm (the sharpest trapezoid) and the
    inversion by up to 1.20 mm there (a flat top 4 mm wide shows no position in it); on every
    profile the inversion stays within 0.7 mm or within the centroid's own error.
    """
    worst, worst_plain = 0.0, 0.0
    for edge, width in PROFILES:
        errors, plain = [], []
        for offset in np.linspace(-2.4, 2.4, 25):
            measured = _centroid(float(offset), edge, width, extent_mm=1.5)
            estimate, spread = offset_in_slice_mm(measured, 0.0, thickness_mm=5.0, extent_mm=1.5,
                                                  diameter_mm=0.0)  # fmt: skip
            assert abs(estimate - offset) <= spread + 0.06  # within the range the profiles allow
            errors.append(abs(estimate - offset))
            plain.append(abs(measured - offset))
        assert max(errors) <= max(0.7, max(plain)), (edge, width)
        worst, worst_plain = max(worst, max(errors)), max(worst_plain, max(plain))
        if (edge, width) == ("box", 0.4):  # the second renderer's profile
            assert max(plain) >= 1.0 and max(errors) <= 0.65
    assert worst <= 1.25 and worst < worst_plain - 0.15


def test_a_seed_within_a_flat_top_is_placed_at_its_middle() -> None:
    estimate, spread = offset_in_slice_mm(0.0, 0.1, thickness_mm=5.0, extent_mm=0.0, diameter_mm=0.8)
    # Anywhere within the sharpest trapezoid's flat top (2 mm each side, less the seed's 0.4 mm).
    assert abs(estimate) <= 0.05 and spread == pytest.approx(1.6, abs=0.15)


def test_inversion_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="thickness_mm"):
        offset_in_slice_mm(0.0, 0.1, thickness_mm=0.0, extent_mm=1.0, diameter_mm=0.8)
    with pytest.raises(ValueError, match="must not be negative"):
        offset_in_slice_mm(0.0, -0.1, thickness_mm=5.0, extent_mm=1.0, diameter_mm=0.8)


def test_matched_sums_measure_each_slices_share_and_join_parts() -> None:
    rng = np.random.default_rng(1)
    pattern = np.zeros((12, 12))
    pattern[5:7, 3:9] = 1000.0
    values = np.full((5, 12, 12), 40.0) + rng.normal(0.0, 5.0, (5, 12, 12))
    values[2] += pattern
    values[3] += 0.25 * pattern
    usable = np.ones(values.shape, dtype=bool)
    level, noise = np.full(5, 40.0), np.full(5, 5.0)
    sums = matched_slice_sums(values.astype(np.float32), level, noise, pattern, usable, 10)
    index, amplitude, sd = sums.amplitudes()
    assert list(index) == [10, 11, 12, 13, 14]
    assert np.allclose(amplitude, [0.0, 0.0, 1.0, 0.25, 0.0], atol=0.01)
    assert np.allclose(sd, 5.0 / np.sqrt(12 * 1000.0**2))
    # A slice's unusable pixels (another candidate's) are left out, not counted as zeros.
    usable[3, :, :6] = False
    masked = matched_slice_sums(values.astype(np.float32), level, noise, pattern, usable, 10)
    assert masked.amplitudes()[1][3] == pytest.approx(0.25, abs=0.02)
    joined = sums.joined(matched_slice_sums(values[:2].astype(np.float32), np.full(2, 40.0), np.full(2, 5.0),
                                            pattern, usable[:2], 14))  # fmt: skip
    assert list(joined.index) == [10, 11, 12, 13, 14, 15]
    assert joined.weight[4] == pytest.approx(2.0 * sums.weight[4])


@pytest.mark.parametrize("noise_seed", [3, 4, 5])
def test_flat_seeds_across_a_slice_on_a_flat_top_profile(noise_seed: int) -> None:
    """Second renderer (trapezoid profile, flat over the middle 3 mm of 5 mm slices).

    Twelve seeds lying flat at offsets from -2.4 to 2.4 mm about a slice's centre: none is
    more than 1.5 mm off along the slice axis, and those in the profile's edges (1.9-2.4 mm
    from the centre) within 1 mm. The slices' centroid alone put them up to 1.62 and 1.55 mm
    off (noise 3 and 5). A seed more than 1 mm off says how far it may be.
    """
    centre = np.zeros(3)
    grid = second_renderer.grid(centre, pixel_mm=0.5, thickness_mm=5.0, size=128, slices=8)
    normal = np.asarray(grid.axes[0])
    middle = float(grid.index_to_patient(np.array([[4.0, 0.0, 0.0]]))[0] @ normal)
    offsets = np.linspace(-2.4, 2.4, 12)
    # In soft tissue: clear of the renderer's airway, bone plate and fat.
    in_plane = np.array([[-12.0 + 8.0 * (j % 6), -4.0 + 14.0 * (j // 6), 0.0] for j in range(12)])
    seeds = in_plane + normal[None, :] * (middle + offsets)[:, None]
    flat = np.tile([1.0, 0.0, 0.0], (12, 1))
    volume = second_renderer.render(grid, centre, seeds_mm=seeds, seed_directions=flat, noise_seed=noise_seed)
    detection = detect_seeds(volume)
    found = detection.positions_mm
    distance = np.linalg.norm(found[None, :, :] - seeds[:, None, :], axis=2)
    assert len(found) == 12 and np.all(distance.min(axis=1) < 2.0)
    along = np.abs((found[distance.argmin(axis=1)] - seeds) @ normal)
    assert along.max() <= 1.5
    assert along[np.abs(offsets) >= 1.9].max() <= 1.0
    for j in np.flatnonzero(along > 1.0):
        seed = detection.seeds[int(distance[j].argmin())]
        stated = [float(r.split("+-")[1].split()[0]) for r in seed.reasons if "along the slice axis" in r]
        assert stated and along[j] <= stated[0] + 0.3 and seed.confidence < 1.0
