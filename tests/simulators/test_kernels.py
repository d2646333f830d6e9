"""The simulator's numba back-projection against the plain numpy reference it replaced."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.artefacts import StreakModel, backproject, backproject_reference, streak_error_hu


@settings(max_examples=25, deadline=None)
@given(
    views=st.integers(8, 60),
    bins=st.integers(2, 80),
    rows=st.integers(1, 40),
    columns=st.integers(1, 40),
    tau_mm=st.floats(0.3, 3.0),
    seed=st.integers(0, 2**16),
)
def test_backproject_matches_the_numpy_reference(
    views: int, bins: int, rows: int, columns: int, tau_mm: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    filtered = rng.standard_normal((views, bins))
    thetas = np.sort(rng.uniform(0.0, math.pi, views))
    # Pixel centres reaching beyond the detector: the clamping at both ends is exercised too.
    xc = (np.arange(columns) - columns / 2.0) * tau_mm * 1.7
    yc = (np.arange(rows) - rows / 2.0) * tau_mm * 1.3
    fast = backproject(filtered, thetas, xc, yc, tau_mm)
    slow = backproject_reference(filtered, thetas, xc, yc, tau_mm)
    assert fast.shape == (rows, columns)
    assert np.allclose(fast, slow, rtol=1e-12, atol=1e-12)


def test_streak_image_unchanged_by_the_kernel() -> None:
    """A whole streak error (512 x 512 slice, default model) equals the one built on the reference."""
    import simulators.artefacts as artefacts

    rng = np.random.default_rng(0)
    rows, columns = rng.integers(200, 300, 60), rng.integers(200, 300, 60)
    mu = rng.uniform(0.0, 0.25, 60)
    args = (rows, columns, mu, (512, 512), (0.7, 0.7), StreakModel())
    fast = streak_error_hu(*args, np.random.default_rng(1))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(artefacts, "backproject", artefacts.backproject_reference)
        slow = streak_error_hu(*args, np.random.default_rng(1))
    assert float(np.abs(fast - slow).max()) < 1e-3  # HU, float32 rounding only
    assert float(np.abs(slow).max()) > 20.0


def test_a_needle_lying_in_the_slice_starves_its_rays_without_flooding_the_slice() -> None:
    """A steel needle 60 mm along one row: the rays along it (line integral ~20) count no photon.

    A starved bin's log count has an sd of at most 1 (one photon), not exp(p): the slice
    shows streaks along and beside the needle (some thousand HU), most of it stays within
    tens of HU (an unbounded noise put 11000 HU on the median pixel).
    """
    columns = np.arange(20, 20 + round(60.0 / 0.7))
    rows = np.full(len(columns), 64)
    mu = np.full(len(columns), 0.19 * 1.27 / 0.7)  # steel over a 0.7 mm pixel row, 1/mm
    rng = np.random.default_rng(0)
    error = np.abs(streak_error_hu(rows, columns, mu, (128, 128), (0.7, 0.7), StreakModel(), rng))
    assert float(np.median(error)) < 100.0
    assert 1000.0 < float(np.percentile(error, 99)) < 5000.0


def test_backproject_refuses_bad_input() -> None:
    q = np.zeros((10, 20))
    thetas = np.linspace(0.0, math.pi, 10, endpoint=False)
    x = np.linspace(-5.0, 5.0, 8)
    with pytest.raises(ValueError, match="one angle per view"):
        backproject(q, thetas[:5], x, x, 1.0)
    with pytest.raises(ValueError, match="bin width"):
        backproject(q, thetas, x, x, 0.0)
    with pytest.raises(ValueError, match="finite"):
        backproject(np.full((10, 20), np.nan), thetas, x, x, 1.0)


def test_photon_limited_model_follows_the_photon_counts() -> None:
    model = StreakModel.photon_limited(1e4, tissue_line_integral=4.0)
    assert model.starvation_p == pytest.approx(math.log(1e4) - 4.0)
    assert model.eta == pytest.approx(math.exp(2.0) / 100.0) and model.gamma == 0.5
    with pytest.raises(ValueError, match="photons_per_bin"):
        StreakModel.photon_limited(20.0)
