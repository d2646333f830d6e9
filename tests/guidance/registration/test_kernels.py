"""The registration's numba kernels against numpy/scipy, and the NCC gradient against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from guidance.registration import _kernels
from guidance.registration.pyramid import Level
from guidance.registration.similarity import Samples, Similarity, motion_matrix, weighted_ncc


def test_block_reduce_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(-1200, 3500, size=(7, 10, 9)).astype(np.float32)
    mean, hot = _kernels.block_reduce(image, np.array([2, 3, 3]), -1000.0, 1600.0, 3000.0)
    cropped = np.clip(image[:6, :9, :9], -1000, 1600).reshape(3, 2, 3, 3, 3, 3)
    np.testing.assert_allclose(mean, cropped.mean(axis=(1, 3, 5)), rtol=1e-5)
    peak = image[:6, :9, :9].reshape(3, 2, 3, 3, 3, 3).max(axis=(1, 3, 5))
    np.testing.assert_array_equal(hot, peak > 3000.0)
    assert 0 < hot.sum() < hot.size


def test_trilinear_samples_match_scipy_and_their_gradient() -> None:
    rng = np.random.default_rng(1)
    volume = ndimage.gaussian_filter(rng.normal(size=(8, 12, 10)), 1.5).astype(np.float32)
    valid = np.ones(volume.shape, dtype=bool)
    valid[0, 0, 0] = False
    matrix = np.array([[0.0, 0.0, 0.5, 1.0], [0.0, 0.8, 0.0, 2.0], [1.25, 0.0, 0.0, 0.5]])
    points = rng.uniform([-2, -2, -2], [9, 12, 6], size=(500, 3))
    values, gradients, ok = np.zeros(500), np.zeros((500, 3)), np.zeros(500, dtype=bool)
    count = _kernels.sample_trilinear(volume, valid, matrix, points, values, gradients, ok)
    index = points @ matrix[:, :3].T + matrix[:, 3]
    inside = np.all((index >= 0) & (index <= np.array(volume.shape) - 1), axis=1)
    inside &= valid[tuple(np.clip(np.rint(index).astype(int), 0, np.array(volume.shape) - 1).T)]
    np.testing.assert_array_equal(ok, inside)
    assert count == inside.sum() > 100
    expected = ndimage.map_coordinates(volume.astype(np.float64), index[ok].T, order=1)
    np.testing.assert_allclose(values[ok], expected, atol=1e-5)
    for axis in range(3):  # central differences inside one cell equal the trilinear derivative
        step = np.zeros(3)
        step[axis] = 1e-4
        plus = ndimage.map_coordinates(
            volume.astype(np.float64), (index[ok] + step).T, order=1, mode="nearest"
        )
        minus = ndimage.map_coordinates(
            volume.astype(np.float64), (index[ok] - step).T, order=1, mode="nearest"
        )
        numeric = (plus - minus) / 2e-4
        interior = np.all((index[ok] > 0.01) & (index[ok] < np.array(volume.shape) - 1.01), axis=1)
        interior &= np.all(np.abs(index[ok] - np.rint(index[ok])) > 1e-3, axis=1)
        np.testing.assert_allclose(gradients[ok][interior, axis], numeric[interior], atol=1e-3)


def test_ncc_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(2)
    image = ndimage.gaussian_filter(rng.normal(size=(20, 24, 24)) * 300, 2.0).astype(np.float32)
    affine = np.diag([2.0, 1.5, 1.5, 1.0])
    fixed = Level(image, affine, np.zeros(image.shape, bool), np.ones(image.shape, bool))
    points = rng.uniform([8, 8, 10], [26, 26, 28], size=(3000, 3))[:, ::-1]
    values = rng.normal(size=3000)
    similarity = Similarity(fixed, Samples(points, values, np.ones(3000)), np.eye(4))
    params = np.array([0.5, -0.3, 0.2, 0.4, -0.2, 0.3])
    _, gradient = similarity.loss_and_gradient(params)
    for k in range(6):
        step = np.zeros(6)
        step[k] = 1e-4
        numeric = (
            similarity.loss_and_gradient(params + step)[0] - similarity.loss_and_gradient(params - step)[0]
        ) / 2e-4
        assert gradient[k] == pytest.approx(numeric, rel=2e-2, abs=1e-6)


def test_weighted_ncc_known_values() -> None:
    x = np.linspace(-1, 1, 50)
    assert weighted_ncc(3 * x + 2, x, np.ones(50))[0] == pytest.approx(1.0)
    assert weighted_ncc(-x, x, np.ones(50))[0] == pytest.approx(-1.0)
    assert weighted_ncc(np.ones(50), x, np.ones(50))[0] == 0.0  # flat image: no information


def test_motion_matrix_rotates_about_the_centre() -> None:
    centre = np.array([10.0, -5.0, 3.0])
    matrix = motion_matrix(np.array([10.0, -20.0, 30.0, 0.0, 0.0, 0.0]), centre)
    np.testing.assert_allclose(matrix[:3, :3] @ centre + matrix[:3, 3], centre, atol=1e-12)
    np.testing.assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-12)


def test_fused_ncc_kernel_matches_weighted_ncc() -> None:
    """The NCC of the fused sample-and-correlate kernel equals weighted_ncc over the ok points."""
    rng = np.random.default_rng(3)
    image = ndimage.gaussian_filter(rng.normal(size=(10, 16, 16)) * 300, 1.5).astype(np.float32)
    valid = rng.uniform(size=image.shape) > 0.1
    points = rng.uniform([-1, -1, -1], [11, 17, 17], size=(2000, 3))
    moving, weights = rng.normal(size=2000), rng.choice([1.0, 2.0], size=2000)
    matrix = np.eye(4)[:3]
    values, gradients, ok = np.zeros(2000), np.zeros((2000, 3)), np.zeros(2000, dtype=bool)
    sums = np.zeros((3, 4))
    centre = points.mean(axis=0)
    ncc, count = _kernels.ncc_gradient(
        image, valid, matrix, points, centre, moving, weights, values, gradients, ok, sums
    )
    expected, d_ncc = weighted_ncc(values[ok], moving[ok], weights[ok])
    assert 500 < count == ok.sum() < 2000
    assert ncc == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(sums[:, 0], d_ncc @ gradients[ok], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        sums[:, 1:], (d_ncc[:, None] * gradients[ok]).T @ (points[ok] - centre), rtol=1e-9, atol=1e-12
    )
