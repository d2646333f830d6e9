"""Intensity basins of joined metal regions; seeds on thick slices joined by streaks (hand-made volumes)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from guidance.detection import SeedOptions, detect_seeds
from guidance.detection.components import basin_parts, basins
from guidance.volume import Volume


def _two_peaks(saddle: float) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A bright peak (1000) and a fainter one (600) along a row, joined at ``saddle`` HU; level 200."""
    row = np.array([300.0, 1000.0, 700.0, saddle, 600.0, 350.0])
    values = np.zeros((3, 3, len(row)))
    values[1, 1] = row
    return values, values > 200.0


@pytest.mark.parametrize(("saddle", "persistence", "count"), [
    (400.0, 0.3, 2),  # 600 stands 200 above the saddle: half its 400 over the level
    (400.0, 0.6, 1),
    (550.0, 0.3, 1),  # only 50 above: a bump of the brighter peak
    (550.0, 0.1, 2),
])  # fmt: skip
def test_a_fainter_peak_is_its_own_basin_by_its_dip(saddle: float, persistence: float, count: int) -> None:
    values, inside = _two_peaks(saddle)
    labels = basins(values, inside, 200.0, persistence)
    assert labels.max() == count
    assert np.array_equal(labels > 0, inside)
    assert labels[1, 1, 1] == 1  # numbered from the brightest peak
    if count == 2:
        assert list(labels[1, 1]) == [1, 1, 1, 1, 2, 2]  # the saddle goes to the elder basin


def test_noise_on_one_blob_is_one_basin() -> None:
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[-4:5, -4:5, -4:5].astype(np.float64)
    values = 1000.0 * np.exp(-(x**2 + y**2 + z**2) / 8.0) + rng.normal(0.0, 15.0, x.shape)
    inside = values > 200.0
    assert basins(values, inside, 200.0, 0.3).max() == 1
    parts = basin_parts(values, (slice(0, 9),) * 3, inside, 200.0, 0.3)
    assert len(parts) == 1 and np.array_equal(parts[0][1], inside[parts[0][0]])


def test_invalid_input_is_refused() -> None:
    values, inside = _two_peaks(400.0)
    with pytest.raises(ValueError, match="persistence"):
        basins(values, inside, 200.0, 1.5)
    with pytest.raises(ValueError, match="same 3-D shape"):
        basins(values[0], inside[0], 200.0, 0.3)


_SPACING = np.array([5.0, 0.8, 0.8])


def _seed(image: NDArray[np.float64], centre_index: tuple[float, float, float], peak_hu: float) -> None:
    """A seed along the columns (4.5 mm) lying in a 5 mm slice, or shared by two at a half-index."""
    k, r, c = centre_index
    half = 4.5 / 2.0 / _SPACING[2]
    columns = np.arange(image.shape[2])
    rows = np.arange(image.shape[1])
    plane = np.outer(np.exp(-((rows - r) ** 2) / 2.0), np.clip(half + 0.5 - np.abs(columns - c), 0.0, 1.0))
    for slice_index, share in ((int(np.floor(k)), 1.0 - (k % 1.0)), (int(np.floor(k)) + 1, k % 1.0)):
        if share > 0:
            image[slice_index] += peak_hu * share * plane


def test_thick_slices_seeds_joined_by_a_streak_are_each_found() -> None:
    """On 5 mm slices, a seed in one slice joined by 500 HU streaks to two seeds shared by two slices.

    The three make one region, too wide for seeds in a row. Cut at twice the thick-slice level
    (400 HU) they stay joined; at four times (800 HU) the shared seeds (peak 700 HU) vanish.
    Their basins stand 200 HU above the streaks, half their height over the level: each is a
    seed of its own, placed on the slice boundary.
    """
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 10.0, (8, 60, 90))
    references = [(2.0, 12.0, 12.0 + 14.0 * j) for j in range(6)]  # single seeds, one integral each
    bright, shared = (3.0, 40.0, 30.0), [(3.5, 40.0, 44.0), (3.5, 52.0, 30.0)]  # 11.5 and 10 mm away
    for centre in [*references, bright, *shared]:
        _seed(image, centre, 1400.0)
    image[3, 40, 34:41] = np.maximum(image[3, 40, 34:41], 500.0)  # the streaks joining them
    image[3, 42:51, 30] = np.maximum(image[3, 42:51, 30], 500.0)
    image = ndimage.gaussian_filter(image, sigma=(0.0, 0.4, 0.4))
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0.0, 0.0, 0.8], [0.0, 0.8, 0.0], [5.0, 0.0, 0.0]])
    volume = Volume(image.astype(np.float32), affine)
    truth = volume.grid.index_to_patient(np.array([*references, bright, *shared], dtype=np.float64))
    found = detect_seeds(volume)
    distance = np.linalg.norm(found.positions_mm[:, None, :] - truth[None, :, :], axis=2)
    assert len(found.seeds) == len(truth)
    nearest = distance.min(axis=0)
    assert float(nearest[:6].max()) <= 0.2 and float(nearest[-2:].max()) <= 0.5
    assert nearest[6] <= 1.5  # the bright seed's basin holds the streaks' excess too
    cut_higher = detect_seeds(volume, options=SeedOptions(basin_persistence=0.99))  # no basins: the old cut
    assert len(cut_higher.seeds) < len(truth)
