"""Rasterisation of planar contours, and masks back to contours, with known answers."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from guidance.rasterise import mask_to_contours, structure_fraction, structure_mask, structure_volume_cc
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, affine_from_dicom

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def square(x0: float, x1: float, y0: float, y1: float, z: float) -> NDArray[np.float64]:
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float64)


def circle(
    radius: float, z: float, centre: tuple[float, float] = (0.0, 0.0), n: int = 360
) -> NDArray[np.float64]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.column_stack(
        [centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t), np.full(n, z, dtype=np.float64)]
    )


def ball(radius: float, spacing: float, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Structure:
    """A sphere drawn as circles on planes ``spacing`` apart, offset half a spacing from its poles."""
    heights = np.arange(-radius + spacing / 2, radius, spacing)
    contours = [
        circle(math.sqrt(radius**2 - h**2), centre[2] + h, centre[:2]) for h in heights if radius**2 > h**2
    ]
    return Structure("ball", StructureRole.TARGET, tuple(contours))


def stack_volume_cc(structure: Structure, spacing: float) -> float:
    """Shoelace area of each (axial, hole-free) contour times the plane spacing."""
    areas = [
        0.5 * abs(np.dot(c[:, 0], np.roll(c[:, 1], -1)) - np.dot(c[:, 1], np.roll(c[:, 0], -1)))
        for c in structure.contours_mm
    ]
    return float(np.sum(areas)) * spacing / 1000


def axial_grid(lower: float, upper: float, spacing: float, offset: float = 0.0) -> Grid:
    return Grid.from_bounds([lower + offset] * 3, [upper + offset] * 3, spacing)


def rotation(q: tuple[float, float, float, float]) -> NDArray[np.float64]:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotated_grid(matrix: NDArray[np.float64], half_extent: float, spacing: NDArray[np.float64]) -> Grid:
    """A grid with axes along the columns of ``matrix`` whose voxels cover a centred cube."""
    counts = np.ceil(2 * half_extent / spacing).astype(int) + 1
    affine = np.eye(4)
    affine[:3, :3] = matrix * spacing
    affine[:3, 3] = -matrix @ (spacing * (counts - 1) / 2)
    return Grid((int(counts[0]), int(counts[1]), int(counts[2])), affine)


quaternions = st.tuples(*[st.floats(-1.0, 1.0) for _ in range(4)]).filter(lambda q: np.linalg.norm(q) > 0.2)


# --- known volumes and areas -------------------------------------------------------------


def test_sphere_fraction_volume_within_one_percent_at_1mm() -> None:
    radius = 20.0
    grid = axial_grid(-25.0, 25.0, 1.0, offset=0.37)
    volume = structure_volume_cc(ball(radius, 1.0), grid)
    assert volume == pytest.approx(4 / 3 * np.pi * radius**3 / 1000, rel=0.01)


def test_square_with_square_hole_gives_the_exact_area_by_even_odd() -> None:
    outer = square(-10.5, 9.5, -10.5, 9.5, 0.0)
    inner = square(-5.5, 4.5, -5.5, 4.5, 0.0)[::-1]  # winding does not matter for even-odd
    ring = Structure("ring", StructureRole.ORGAN_AT_RISK, (outer, inner))
    grid = axial_grid(-15.0, 15.0, 1.0)
    mask = structure_mask(ring, grid, single_plane_thickness_mm=1.0)
    assert mask.sum() == 400 - 100
    assert not mask[15, 15, 15]  # the hole's centre (x = y = z = 0)
    fraction = structure_fraction(ring, grid, single_plane_thickness_mm=2.0)
    assert fraction.sum() == pytest.approx((400 - 100) * 2.0, abs=1e-9)
    assert sorted(np.unique(fraction).tolist()) == [0.0, 0.5, 1.0]  # slab [-1, 1): half of z = +-1


def test_two_disjoint_and_two_overlapping_contours_on_one_plane() -> None:
    grid = axial_grid(-15.0, 15.0, 0.5)
    left, right = square(-10.25, -2.25, -4.25, 3.75, 0.0), square(1.75, 9.75, -4.25, 3.75, 0.0)
    both = Structure("two", StructureRole.ORGAN_AT_RISK, (left, right))
    assert structure_volume_cc(both, grid, single_plane_thickness_mm=1.0) * 1000 == pytest.approx(128.0)
    # Overlapping contours combine by even-odd: their overlap (4 x 8 mm) is a hole, not a union.
    shifted = square(-6.25, 1.75, -4.25, 3.75, 0.0)
    overlap = Structure("xor", StructureRole.ORGAN_AT_RISK, (left, shifted))
    area = structure_volume_cc(overlap, grid, single_plane_thickness_mm=1.0) * 1000
    assert area == pytest.approx(64 + 64 - 2 * 32)


def test_a_contour_plane_between_grid_slices() -> None:
    grid = axial_grid(-5.0, 5.0, 1.0)  # slice centres at z = -5 .. 5
    sheet = Structure("sheet", StructureRole.ORGAN_AT_RISK, (square(-2.5, 2.5, -2.5, 2.5, 0.3),))
    fraction = structure_fraction(sheet, grid, single_plane_thickness_mm=1.0)  # slab [-0.2, 0.8)
    assert fraction[5, 5, 5] == 0.75 and fraction[6, 5, 5] == 0.25
    assert fraction.sum() == pytest.approx(25.0)
    assert np.nonzero(structure_mask(sheet, grid, single_plane_thickness_mm=1.0).any(axis=(1, 2)))[
        0
    ].tolist() == [5]
    # Several planes 2 mm apart at z = 0.3 + 2k: slabs tile [-0.7, 5.3).
    stack = Structure(
        "stack",
        StructureRole.ORGAN_AT_RISK,
        tuple(square(-2.5, 2.5, -2.5, 2.5, 0.3 + 2 * k) for k in range(3)),
    )
    assert structure_fraction(stack, grid).sum() == pytest.approx(25.0 * 6.0)


def test_single_plane_defaults_to_one_voxel_along_the_normal() -> None:
    grid = Grid.from_bounds([-10, -10, -10], [10, 10, 10], [1.0, 1.0, 2.5])
    sheet = Structure("sheet", StructureRole.ORGAN_AT_RISK, (square(-3.5, 3.5, -3.5, 3.5, 0.0),))
    assert structure_volume_cc(sheet, grid) == pytest.approx(49 * 2.5 / 1000)
    mask = structure_mask(sheet, grid)
    assert mask.sum() == 49 and mask[4].sum() == 49


def test_gaps_wider_than_one_and_a_half_spacings_are_not_bridged() -> None:
    # Voxel edges at multiples of 0.2 mm along z and on the square's edges in-plane: exact fractions.
    grid = Grid.from_bounds([-4.5, -4.5, -9.9], [4.5, 4.5, 30.0], [1.0, 1.0, 0.2])

    def thickness_mm(heights: list[float]) -> float:
        contours = tuple(square(-2.0, 2.0, -2.0, 2.0, z) for z in heights)
        fraction = structure_fraction(Structure("s", StructureRole.ORGAN_AT_RISK, contours), grid)
        return float(fraction.sum()) * 0.2 / 16.0

    # Regular 2 mm planes: [-1, 5) then, after a 6 mm gap (> 1.5 x 2), [9, 13).
    assert thickness_mm([0, 2, 4, 10, 12]) == pytest.approx(6.0 + 4.0)
    # A missing plane (gap 4 = 2 typical spacings) stays empty: [-1, 3) and [5, 9).
    assert thickness_mm([0, 2, 6, 8]) == pytest.approx(8.0)
    # A 3 mm gap with a 2.5 mm median spacing is bridged half way: [-1.25, 6.25).
    assert thickness_mm([0, 2, 5]) == pytest.approx(7.5)


# --- tie rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["slicewise", "pointwise"])
def test_samples_on_shared_edges_and_slab_bounds_go_to_exactly_one_structure(method: str) -> None:
    grid = axial_grid(-6.0, 6.0, 1.0)  # voxel centres on integers: the edges below run through them
    tiles = [
        square(-4, 0, -4, 0, 0.0),
        square(0, 4, -4, 0, 0.0),
        square(-4, 0, 0, 4, 0.0),
        square(0, 4, 0, 4, 0.0),
    ]
    masks = [structure_mask(Structure("t", "organ_at_risk", (t,)), grid, method=method) for t in tiles]
    whole = structure_mask(
        Structure("all", "organ_at_risk", (square(-4, 4, -4, 4, 0.0),)), grid, method=method
    )
    assert np.array_equal(np.sum(masks, axis=0), whole.astype(int))  # disjoint, and together the whole
    assert whole.sum() == 8 * 8  # half-open: 8 of the 9 centres along each side
    # Slabs: [-0.5, 1.5) and [1.5, 3.5) meet at a plane of voxel centres of a 0.5 mm-offset grid.
    shifted = Grid.from_bounds([-5.5, -5.5, -5.5], [5.5, 5.5, 5.5], 1.0)
    lower = Structure("a", "organ_at_risk", (square(-3, 3, -3, 3, 0.0), square(-3, 3, -3, 3, 1.0)))
    upper = Structure("b", "organ_at_risk", (square(-3, 3, -3, 3, 2.0), square(-3, 3, -3, 3, 3.0)))
    both = Structure("ab", "organ_at_risk", tuple(square(-3, 3, -3, 3, float(z)) for z in range(4)))
    a, b = (structure_mask(s, shifted, method=method) for s in (lower, upper))
    assert not np.any(a & b) and np.array_equal(a | b, structure_mask(both, shifted, method=method))


# --- the two implementations, and grid orientation ------------------------------------------


@st.composite
def star_structures(draw: st.DrawFn) -> Structure:
    """Star-shaped polygons (with a hole on some planes) on 1 to 5 axial planes."""
    planes = draw(st.integers(1, 5))
    spacing = draw(st.floats(0.7, 3.0))
    contours = []
    for k in range(planes):
        n = draw(st.integers(3, 12))
        radii = np.array(draw(st.lists(st.floats(2.0, 9.0), min_size=n, max_size=n)))
        angles = np.sort(
            np.array(draw(st.lists(st.floats(0, 2 * np.pi), min_size=n, max_size=n, unique=True)))
        )
        z = 0.123 + k * spacing
        contours.append(
            np.column_stack([radii * np.cos(angles) + 0.31, radii * np.sin(angles) - 0.17, np.full(n, z)])
        )
        if draw(st.booleans()):
            contours.append(circle(1.3, z, (0.31, -0.17), n=7))
    return Structure("star", StructureRole.TARGET, tuple(contours))


@SETTINGS
@given(
    structure=star_structures(),
    spacing=st.tuples(st.floats(0.6, 2.0), st.floats(0.6, 2.0), st.floats(0.6, 2.0)),
    flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    tilt=st.floats(-0.4, 0.4),
    subsamples=st.integers(1, 3),
)
def test_slicewise_and_pointwise_agree(
    structure: Structure,
    spacing: tuple[float, float, float],
    flips: tuple[bool, bool, bool],
    tilt: float,
    subsamples: int,
) -> None:
    signs = np.where(flips, -1.0, 1.0)
    step = np.array([tilt * spacing[2], 0.0, spacing[2] * signs[2]])  # gantry tilt: a sheared slice axis
    affine = affine_from_dicom(
        [-12.0 * signs[0], -12.0 * signs[1], -8.0 * signs[2]],
        [signs[0], 0, 0, 0, signs[1], 0],
        [spacing[1], spacing[0]],
        step,
    )
    grid = Grid((int(30 / spacing[2]), int(24 / spacing[1]) + 1, int(24 / spacing[0]) + 1), affine)
    fast = structure_fraction(structure, grid, subsamples=subsamples, method="slicewise")
    general = structure_fraction(structure, grid, subsamples=subsamples, method="pointwise")
    assert np.array_equal(fast, general)


@SETTINGS
@given(q=quaternions, spacing=st.tuples(*[st.floats(0.8, 1.6) for _ in range(3)]))
def test_volume_does_not_depend_on_grid_orientation(
    q: tuple[float, float, float, float], spacing: tuple[float, float, float]
) -> None:
    structure = ball(8.0, 1.0)
    grid = rotated_grid(rotation(q), 10.0, np.array(spacing))
    # Typically within 0.2 % of the contours' own volume. The worst case is a sample pitch along
    # the contour normal (here up to 1.6 mm / 4) that aliases with the 1 mm contour slabs: each
    # slab boundary then gains or loses up to half a pitch times the change of area across it,
    # about 2 x 200 mm^2 x 0.1-0.2 mm for this small ball (r = 8 mm, 2.1 cc), i.e. 1-2 %.
    assert structure_volume_cc(structure, grid) == pytest.approx(stack_volume_cc(structure, 1.0), rel=0.02)


@SETTINGS
@given(q=quaternions)
def test_oblique_contours_on_a_grid_rotated_with_them(q: tuple[float, float, float, float]) -> None:
    matrix = rotation(q)
    structure = ball(8.0, 1.0)
    turned = Structure("turned", StructureRole.TARGET, tuple(c @ matrix.T for c in structure.contours_mm))
    grid = axial_grid(-10.0, 10.0, 1.0, offset=0.21)
    moved = np.eye(4)
    moved[:3, :3] = matrix
    same_relative = Grid(grid.shape, moved @ grid.affine)
    # The same structure and grid, both rotated: identical samples, identical answer.
    expected = structure_fraction(structure, grid, subsamples=2)
    assert np.allclose(structure_fraction(turned, same_relative, subsamples=2), expected, atol=1e-6)
    # Oblique contours on an axial grid (point by point): the same volume.
    assert structure_volume_cc(turned, grid, subsamples=3) == pytest.approx(
        float(expected.sum()) / 1000, rel=0.02
    )


# --- masks back to contours ---------------------------------------------------------------


@st.composite
def masks_on_grids(draw: st.DrawFn) -> tuple[NDArray[np.bool_], Grid]:
    """Random masks (every slice in a run non-empty) on axial, flipped or oblique grids."""
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.floats(0.2, 0.9))
    mask = np.random.default_rng(seed).random(shape) < density
    mask[:, 0, 0] = True  # no empty slice between non-empty ones
    matrix = rotation(draw(quaternions)) if draw(st.booleans()) else np.diag([1.0, -1.0, 1.0])
    spacing = np.array(draw(st.tuples(*[st.floats(0.5, 3.0) for _ in range(3)])))
    affine = np.eye(4)
    affine[:3, :3] = matrix * spacing
    affine[:3, 3] = draw(st.tuples(*[st.floats(-200, 200) for _ in range(3)]))
    return mask, Grid(shape, affine)


@SETTINGS
@given(case=masks_on_grids())
def test_mask_to_contours_round_trips_exactly(case: tuple[NDArray[np.bool_], Grid]) -> None:
    mask, grid = case
    contours = mask_to_contours(mask, grid)
    back = structure_mask(Structure("m", StructureRole.ORGAN_AT_RISK, contours), grid)
    # Outlines follow voxel edges, half a voxel from every centre: no boundary tolerance is needed.
    assert int(np.sum(back != mask)) == 0


def test_mask_to_contours_keeps_holes_and_diagonal_touches_as_separate_contours() -> None:
    grid = axial_grid(0.0, 6.0, 1.0)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[3, 1:6, 1:6] = True
    mask[3, 3, 3] = False  # a hole
    mask[2, 1, 1] = mask[2, 2, 2] = True  # two pixels touching at a corner
    contours = mask_to_contours(mask, grid)
    assert len([c for c in contours if np.allclose(c[:, 2], 3.0)]) == 2  # outline + hole
    assert all(len(c) >= 4 for c in contours)
    assert np.array_equal(structure_mask(Structure("m", "organ_at_risk", contours), grid), mask)


def test_mask_to_contours_round_trips_separate_parts_along_the_slice_axis() -> None:
    grid = Grid.from_bounds([0, 0, 0], [9, 9, 18], [1.0, 1.0, 2.5])
    mask = np.zeros(grid.shape, dtype=bool)
    mask[[1, 2, 3, 5, 6, 7], 2:6, 3:7] = True  # two parts one empty slice apart, each three slices
    structure = Structure("parts", StructureRole.TARGET, mask_to_contours(mask, grid))
    assert np.array_equal(structure_mask(structure, grid), mask)
    assert structure_volume_cc(structure, grid) == pytest.approx(mask.sum() * grid.voxel_volume_cc)


def test_mask_to_contours_validates_its_input() -> None:
    grid = axial_grid(0.0, 3.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        mask_to_contours(np.zeros((2, 2, 2), dtype=bool), grid)
    with pytest.raises(ValueError, match="boolean"):
        mask_to_contours(np.zeros(grid.shape, dtype=np.uint8), grid)
    assert mask_to_contours(np.zeros(grid.shape, dtype=bool), grid) == ()


# --- validation ---------------------------------------------------------------------------


def test_empty_structures_give_zeros_and_points_are_rejected() -> None:
    grid = axial_grid(0.0, 4.0, 1.0)
    empty = Structure("dil", StructureRole.TARGET, ())
    assert not structure_mask(empty, grid).any() and structure_fraction(empty, grid).dtype == np.float32
    degenerate = Structure("line", StructureRole.ORGAN_AT_RISK, (np.array([[0, 0, 0], [1, 1, 0.0]]),))
    assert structure_volume_cc(degenerate, grid) == 0.0
    point = Structure("iso", StructureRole.POINT, (np.array([[1.0, 2.0, 3.0]]),))
    with pytest.raises(ValueError, match=r"'iso' is a POINT structure.*no volume"):
        structure_mask(point, grid)


def test_non_planar_and_non_parallel_contours_are_rejected() -> None:
    grid = axial_grid(-5.0, 5.0, 1.0)
    warped = square(-2, 2, -2, 2, 0.0)
    warped[2, 2] = 0.5
    with pytest.raises(ValueError, match=r"'warped'.*not planar"):
        structure_mask(Structure("warped", "organ_at_risk", (warped,)), grid)
    tilted = square(-2, 2, -2, 2, 3.0) @ rotation((1.0, 0.2, 0.0, 0.0)).T
    with pytest.raises(ValueError, match="not planar and parallel"):
        structure_mask(Structure("mixed", "organ_at_risk", (square(-2, 2, -2, 2, 0.0), tilted)), grid)


def test_frames_options_and_methods_are_checked() -> None:
    grid = Grid.from_bounds([-5] * 3, [5] * 3, 1.0, frame_of_reference_uid="1.2.3")
    other = Structure("gtv", "target", (square(-2, 2, -2, 2, 0.0),), frame_of_reference_uid="1.2.4")
    with pytest.raises(ValueError, match=r"frame of reference '1\.2\.4'.*'1\.2\.3'"):
        structure_mask(other, grid)
    assert structure_mask(other, grid, allow_frame_mismatch=True).sum() == 16
    with pytest.raises(ValueError, match="subsamples"):
        structure_fraction(other, grid, subsamples=0, allow_frame_mismatch=True)
    with pytest.raises(ValueError, match="not parallel"):
        sagittal = Structure("sag", "target", (square(-2, 2, -2, 2, 0.0)[:, [2, 0, 1]],))
        structure_mask(sagittal, Grid.from_bounds([-5] * 3, [5] * 3, 1.0), method="slicewise")


# --- performance --------------------------------------------------------------------------


def test_a_60_cc_structure_on_a_512x512x100_grid(record_property: Callable[[str, object], None]) -> None:
    radius = (60.0 * 3 / (4 * np.pi)) ** (1 / 3) * 10
    affine = affine_from_dicom([-250.0, -250.0, -100.0], [1, 0, 0, 0, 1, 0], [0.977, 0.977], [0, 0, 2.0])
    grid = Grid((100, 512, 512), affine)
    structure = ball(radius, 2.0, centre=(3.1, -7.3, 1.0))
    start = time.perf_counter()
    fraction = structure_fraction(structure, grid, subsamples=4)
    seconds = time.perf_counter() - start
    record_property("seconds_fraction_512x512x100_60cc", round(seconds, 3))
    assert float(fraction.sum()) * grid.voxel_volume_cc == pytest.approx(60.0, rel=0.01)


def test_repeated_rasterisation_is_cached_and_callers_cannot_corrupt_the_cache() -> None:
    import gc

    from guidance import rasterise

    structure = ball(10.0, 1.0)
    grid = Grid.from_bounds((-12.0, -12.0, -12.0), (12.0, 12.0, 12.0), 1.0)
    first = structure_fraction(structure, grid, subsamples=3)
    first[:] = 0.0  # the caller's copy only
    second = structure_fraction(structure, grid, subsamples=3)
    assert second.sum() * grid.voxel_volume_cc == pytest.approx(4 / 3 * math.pi, rel=0.03)
    assert structure in rasterise._CACHE
    other = Grid.from_bounds((-12.0, -12.0, -12.0), (12.0, 12.0, 12.0), 2.0)
    assert structure_fraction(structure, other, subsamples=3).shape != second.shape
    assert len(rasterise._CACHE[structure]) == 2
    held = len(rasterise._CACHE)
    del structure
    gc.collect()
    assert len(rasterise._CACHE) == held - 1  # held weakly: gone with the structure
