"""The fast mask operations of the registration against their scipy definitions, and the BLAS guard."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from guidance.registration.pyramid import Level, _disk, body_mask, grow
from guidance.registration.quality import _surface, bone_surface_distance_mm


def _blobs(seed: int, shape: tuple[int, int, int] = (6, 70, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask: np.ndarray = ndimage.gaussian_filter(rng.normal(size=shape), (0.5, 3.0, 3.0)) > 0.02
    return mask


def _scipy_body_mask(mask: np.ndarray, pixel_mm: float, opening_mm: float) -> np.ndarray:
    disk = _disk(max(1, round(opening_mm / pixel_mm))).astype(bool)[np.newaxis]
    opened = ndimage.binary_opening(mask, structure=disk)
    labels, count = ndimage.label(opened)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    largest = labels == int(np.argmax(sizes))
    expected: np.ndarray = ndimage.binary_dilation(largest, structure=disk) & mask
    return expected


def test_body_mask_equals_the_scipy_morphology() -> None:
    for seed in range(3):
        mask = _blobs(seed)
        expected = _scipy_body_mask(mask, 1.0, 3.0)
        found = body_mask(mask, 1.0, 3.0)
        assert 0 < found.sum() < mask.sum()
        np.testing.assert_array_equal(found, expected)


def test_body_mask_cuts_a_thin_shell_off() -> None:
    """A disk (the body) touching a 2-pixel slab (the couch): the slab is not body."""
    mask = np.zeros((3, 60, 60), dtype=bool)
    r, c = np.ogrid[:60, :60]
    mask[:, (r - 25) ** 2 + (c - 30) ** 2 <= 15**2] = True
    mask[:, 40:42, :] = True
    body = body_mask(mask, 1.0, 2.0)
    assert not body[:, 40:42, :5].any() and not body[:, 40:42, 55:].any()
    assert body[:, 25, 30].all() and body[:, 25, 16].all()  # the skin is restored


def test_grow_and_surface_equal_scipy() -> None:
    mask = _blobs(4)
    np.testing.assert_array_equal(grow(mask), ndimage.binary_dilation(mask))
    np.testing.assert_array_equal(_surface(mask), mask & ~ndimage.binary_erosion(mask, border_value=1))


def test_bone_surface_distance_equals_the_distance_transform() -> None:
    """The k-d tree query gives the distance-transform value at the nearest voxel (a ball, shifted)."""
    s, r, c = np.ogrid[:12, :30, :30]
    bone = ((s - 6) * 2.0) ** 2 + ((r - 14) * 1.5) ** 2 + ((c - 15) * 1.5) ** 2 <= 9.0**2
    spacing = np.array([2.0, 1.5, 1.5])
    image = np.where(bone, 800.0, 0.0).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    full = np.ones(bone.shape, dtype=bool)
    level = Level(image, affine, np.zeros(bone.shape, dtype=bool), full)
    same, count = bone_surface_distance_mm(level, level, np.eye(4), 250.0)
    assert same == 0.0 and count == _surface(bone).sum()
    shift = np.eye(4)
    shift[2, 3] = 3.0  # two columns
    moved, _ = bone_surface_distance_mm(level, level, shift, 250.0)
    distance = ndimage.distance_transform_edt(~_surface(bone), sampling=spacing)
    index = np.argwhere(_surface(bone))
    index[:, 2] += 2
    inside = index[:, 2] < bone.shape[2]
    assert moved == np.median(distance[tuple(index[inside].T)]) > 0


def test_registration_runs_blas_on_one_thread_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.optimize  # noqa: F401  (SciPy's own OpenBLAS, as in register_rigid)
    from threadpoolctl import threadpool_info

    from guidance.registration import rigid

    def blas_threads() -> list[tuple[str, int]]:
        pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        return [(pool["filepath"], pool["num_threads"]) for pool in pools]

    before = blas_threads()
    assert before, "no BLAS library found in this process"
    seen: list[list[int]] = []

    def spy(*args: object) -> None:
        seen.append([threads for _, threads in blas_threads()])

    monkeypatch.setattr(rigid, "_register", spy)
    rigid.register_rigid(None, None)  # type: ignore[arg-type]
    assert seen == [[1] * len(before)]
    assert blas_threads() == before
