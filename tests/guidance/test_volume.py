"""Grid and Volume geometry: index <-> patient, resampling, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from guidance.volume import Grid, Interpolation, Volume, affine_from_dicom, resample

finite = st.floats(min_value=-500, max_value=500, allow_nan=False)


@st.composite
def grids(draw: st.DrawFn) -> Grid:
    """Grids of arbitrary orientation, spacing and slice direction sign."""
    quaternion = draw(
        st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1)
    )
    rotation = Rotation.from_quat(quaternion).as_matrix()
    spacing = draw(st.lists(st.floats(0.2, 6.0), min_size=3, max_size=3))
    sign = draw(st.sampled_from([-1.0, 1.0]))
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 0] *= sign
    affine[:3, 3] = [draw(finite), draw(finite), draw(finite)]
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return Grid(shape, affine, "1.2")


@settings(max_examples=60, deadline=None)
@given(grid=grids(), indices=st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=20))
def test_index_patient_round_trip(grid: Grid, indices: list[tuple[float, float, float]]) -> None:
    idx = np.asarray(indices)
    back = grid.patient_to_index(grid.index_to_patient(idx))
    np.testing.assert_allclose(back, idx, atol=1e-6 * (1 + np.abs(idx).max()))


@settings(max_examples=60, deadline=None)
@given(grid=grids())
def test_spacing_and_voxel_volume_follow_the_affine(grid: Grid) -> None:
    step = grid.index_to_patient([[1, 0, 0], [0, 1, 0], [0, 0, 1]]) - grid.index_to_patient([0, 0, 0])
    np.testing.assert_allclose(np.linalg.norm(step, axis=1), grid.spacing_mm, rtol=1e-9)
    assert grid.voxel_volume_cc == pytest.approx(np.prod(grid.spacing_mm) / 1000.0, rel=1e-9)
    np.testing.assert_allclose(np.linalg.norm(grid.axes, axis=1), 1.0, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(grid=grids())
def test_voxel_centres_match_index_to_patient(grid: Grid) -> None:
    centres = grid.voxel_centres_mm()
    assert centres.shape == (*grid.shape, 3)
    last = np.asarray(grid.shape) - 1
    np.testing.assert_allclose(centres[tuple(last)], grid.index_to_patient(last)[0], atol=1e-9)


def test_affine_from_dicom_axial_example() -> None:
    # Standard axial slice: rows run posterior (+y), columns to patient left (+x).
    affine = affine_from_dicom([-250.0, -250.0, 10.0], [1, 0, 0, 0, 1, 0], [0.8, 0.7], [0, 0, 3.0])
    grid = Grid((5, 10, 20), affine)
    # (s, r, c) = (2, 4, 6): x = -250 + 6 * 0.7 (column spacing), y = -250 + 4 * 0.8 (row spacing).
    np.testing.assert_allclose(grid.index_to_patient([2, 4, 6])[0], [-245.8, -246.8, 16.0])
    np.testing.assert_allclose(grid.spacing_mm, [3.0, 0.8, 0.7])
    assert grid.is_axis_aligned()


def test_from_bounds_covers_the_box() -> None:
    grid = Grid.from_bounds([-10, -5, 0], [10, 5, 30], 2.5, "1.2")
    assert grid.shape == (13, 5, 9)
    np.testing.assert_allclose(grid.bounds_mm(), [[-10, -5, 0], [10, 5, 30]])
    with pytest.raises(ValueError, match="spacing_mm > 0"):
        Grid.from_bounds([0, 0, 0], [1, 1, 1], 0.0)


@pytest.mark.parametrize(
    ("affine", "message"),
    [
        (np.zeros((3, 3)), "4x4"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], float), "last row"),
        (np.diag([1.0, np.nan, 1.0, 1.0]), "NaN"),
    ],
)
def test_invalid_affines_are_rejected_with_the_reason(affine: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Grid((1, 1, 1), affine)


def test_volume_is_read_only_and_validates_shape() -> None:
    source = np.zeros((2, 3, 4), np.float32)
    volume = Volume(source, np.eye(4), "1.2")
    with pytest.raises(ValueError, match="read-only"):
        volume.array[0, 0, 0] = 1
    source[0, 0, 0] = 5  # the caller's own array stays writable
    with pytest.raises(ValueError, match="3-D"):
        Volume(np.zeros((2, 3)), np.eye(4))
    with pytest.raises(ValueError, match="differs"):
        volume.with_array(np.zeros((3, 3, 3)))


def _ramp_volume(affine: np.ndarray, shape: tuple[int, int, int]) -> Volume:
    """Values equal to a linear function of patient position: trilinear resampling is exact."""
    grid = Grid(shape, affine, "1.2")
    centres = grid.voxel_centres_mm()
    values = 2.0 * centres[..., 0] - 0.5 * centres[..., 1] + 0.25 * centres[..., 2] + 7.0
    return Volume.on_grid(grid, values.astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(target=grids())
def test_linear_resampling_of_a_linear_field_is_exact_inside(target: Grid) -> None:
    # An anisotropic axial source grid around the (arbitrarily oriented) target.
    lower = target.bounds_mm()[0] - 5.0
    extent = target.bounds_mm()[1] - lower + 5.0
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0.0, 0.0, 1.0], [0.0, 1.5, 0.0], [2.0, 0.0, 0.0]])
    affine[:3, 3] = lower
    shape = (int(extent[2] / 2.0) + 2, int(extent[1] / 1.5) + 2, int(extent[0] / 1.0) + 2)
    source = _ramp_volume(affine, shape)
    out = resample(source, target, interpolation="linear", fill_value=-1.0)
    centres = target.voxel_centres_mm()
    expected = 2.0 * centres[..., 0] - 0.5 * centres[..., 1] + 0.25 * centres[..., 2] + 7.0
    np.testing.assert_allclose(out.array, expected, rtol=1e-5, atol=1e-3)
    assert out.grid.same_geometry(target)


def test_nearest_resampling_keeps_labels_and_dtype() -> None:
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    source = Volume(labels, np.eye(4), "1.2")
    shifted = np.eye(4)
    shifted[:3, 3] = [0.0, 0.2, 0.9]  # nearest of column c + 0.9 is c + 1
    out = resample(source, Grid((2, 3, 3), shifted, "1.2"), interpolation=Interpolation.NEAREST)
    assert out.array.dtype == np.uint8
    np.testing.assert_array_equal(out.array, labels[:, :, 1:])


def test_resampling_outside_gives_fill_value_and_frames_must_match() -> None:
    source = Volume(np.ones((2, 2, 2), np.float32), np.eye(4), "1.2")
    far = np.eye(4)
    far[:3, 3] = 100.0
    out = resample(source, Grid((2, 2, 2), far, "1.2"), fill_value=-1000.0)
    assert np.all(out.array == -1000.0)
    with pytest.raises(ValueError, match="different frames of reference"):
        resample(source, Grid((2, 2, 2), np.eye(4), "9.9"))
    moved = resample(source, Grid((2, 2, 2), np.eye(4), "9.9"), allow_frame_mismatch=True)
    assert moved.frame_of_reference_uid == "9.9"


@pytest.mark.parametrize("trial", range(12))
def test_axis_aligned_resampling_matches_the_general_transform(trial: int) -> None:
    """The separable fast path (axis-aligned grids) gives scipy's trilinear values, fill included."""
    from scipy import ndimage

    rng = np.random.default_rng(trial)
    array = rng.normal(size=tuple(int(n) for n in rng.integers(1, 20, 3))).astype(np.float32)
    source = Volume(array, np.diag([*rng.uniform(0.5, 3.0, 3), 1.0]), "1.2.3")
    spacing = rng.uniform(0.3, 3.0, 3)
    target = Grid(tuple(int(n) for n in rng.integers(1, 30, 3)), np.diag([*spacing, 1.0]), "1.2.3")
    shift = np.eye(4)
    shift[:3, 3] = rng.uniform(-4, 4, 3)
    target = Grid(target.shape, target.affine @ shift, "1.2.3")
    fast = resample(source, target, fill_value=-7.0).array
    matrix = np.linalg.inv(source.affine) @ target.affine
    general = ndimage.affine_transform(array, matrix[:3, :3], offset=matrix[:3, 3], output_shape=target.shape,
                                       order=1, mode="nearest", prefilter=False)  # fmt: skip
    filled = fast == -7.0
    np.testing.assert_allclose(fast[~filled], general[~filled], atol=1e-5)
    index = np.indices(target.shape).reshape(3, -1).T.astype(np.float64)
    source_index = index @ matrix[:3, :3].T + matrix[:3, 3]
    outside = np.any((source_index < -0.5) | (source_index > np.array(array.shape) - 0.5), axis=1)
    np.testing.assert_array_equal(filled.ravel(), outside)
