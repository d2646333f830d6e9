"""Landmark (Kabsch) registration: known transforms recovered, reflections refused, bad input rejected."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guidance.registration import register_landmarks
from tests.guidance.registration.scenes import rigid

_POINTS = np.array(
    [[0.0, 0.0, 0.0], [40.0, 0.0, 5.0], [0.0, 30.0, -10.0], [10.0, 20.0, 35.0], [-25.0, 5.0, 12.0]]
)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


@settings(max_examples=40, deadline=None)
@given(
    angles=st.tuples(*(st.floats(-170, 170) for _ in range(3))),
    shift=st.tuples(*(st.floats(-200, 200) for _ in range(3))),
)
def test_exact_points_give_the_transform(
    angles: tuple[float, float, float], shift: tuple[float, float, float]
) -> None:
    truth = rigid(angles, shift)
    found = register_landmarks(_POINTS, _apply(truth, _POINTS))
    np.testing.assert_allclose(found.moving_to_fixed, truth, atol=1e-8)
    assert found.rms_mm < 1e-8
    assert np.linalg.det(found.moving_to_fixed[:3, :3]) == pytest.approx(1.0)


def test_noisy_points_residuals_match_the_noise() -> None:
    rng = np.random.default_rng(3)
    truth = rigid((10.0, -20.0, 30.0), (5.0, -7.0, 12.0))
    moving = rng.uniform(-60, 60, size=(12, 3))
    fixed = _apply(truth, moving) + rng.normal(0.0, 0.5, size=moving.shape)
    found = register_landmarks(moving, fixed)
    # The fit cannot be worse than the truth; the transform is close to it.
    truth_rms = np.sqrt(np.mean(np.sum((_apply(truth, moving) - fixed) ** 2, axis=1)))
    assert found.rms_mm <= truth_rms + 1e-12
    assert 0.3 < found.rms_mm < 0.9
    assert np.max(np.linalg.norm(_apply(found.moving_to_fixed, moving) - _apply(truth, moving), axis=1)) < 0.6
    np.testing.assert_allclose(
        found.residuals_mm, np.linalg.norm(_apply(found.moving_to_fixed, moving) - fixed, axis=1)
    )
    assert found.max_mm == pytest.approx(found.residuals_mm.max())


def test_mirrored_points_still_give_a_proper_rotation() -> None:
    mirrored = _POINTS * np.array([-1.0, 1.0, 1.0])
    found = register_landmarks(_POINTS, mirrored)
    assert np.linalg.det(found.moving_to_fixed[:3, :3]) == pytest.approx(1.0)
    assert found.rms_mm > 1.0  # a reflection cannot be fitted by a rotation


@pytest.mark.parametrize(
    ("moving", "fixed", "message"),
    [
        (_POINTS[:2], _POINTS[:2], "at least 3"),
        (_POINTS, _POINTS[:4], "pair up"),
        ([[0, 0, 0], [1, 1, 1], [2, 2, 2], [5, 5, 5]], _POINTS[:4], "collinear"),
        (_POINTS[:, :2], _POINTS[:, :2], r"shape \(n, 3\)"),
        (np.where(_POINTS == 40.0, np.nan, _POINTS), _POINTS, "NaN"),
    ],
)
def test_bad_input_is_rejected(moving: object, fixed: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        register_landmarks(moving, fixed)  # type: ignore[arg-type]
