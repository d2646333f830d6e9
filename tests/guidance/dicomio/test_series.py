"""Slice geometry, stacking checks and pixel decoding shared by the image readers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from scipy.spatial.transform import Rotation

from guidance.dicomio.dataset import LoadedDataset
from guidance.dicomio.errors import DicomInputError, SeriesGeometryError
from guidance.dicomio.series import (
    ImagePlane,
    decode_frames,
    frame_group_item,
    group_by_series,
    image_planes,
    series_listing,
    stack_slices,
    transfer_syntax_of,
)

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _slice(position: list[float], orientation: list[float] = AXIAL, **extra: object) -> LoadedDataset:
    """An in-memory image header with the Image Plane module (no pixels needed for geometry)."""
    ds = Dataset()
    ds.SOPInstanceUID = f"1.2.3.{abs(hash(tuple(position))) % 10**8}"
    ds.SeriesInstanceUID = "1.2.3"
    ds.Rows, ds.Columns = 4, 5
    ds.ImagePositionPatient = position
    ds.ImageOrientationPatient = orientation
    ds.PixelSpacing = [0.5, 0.75]
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return LoadedDataset(Path(f"/in/memory/{position[-1]:g}.dcm"), ds)


def _planes(items: list[LoadedDataset]) -> list[ImagePlane]:
    return [plane for item in items for plane in image_planes(item)]


def test_slices_sort_by_position_along_the_normal_not_by_instance_number() -> None:
    # InstanceNumber runs 0..3 in the order given; positions do not.
    items = [_slice([1.0, 2.0, z], InstanceNumber=i) for i, z in enumerate((4.0, -2.0, 7.0, 1.0))]
    stack = stack_slices(_planes(items))
    assert [p.position_mm[2] for p in stack.planes] == [-2.0, 1.0, 4.0, 7.0]
    assert [p.item.dataset.InstanceNumber for p in stack.planes] == [1, 3, 0, 2]
    np.testing.assert_allclose(stack.positions_mm, [-2.0, 1.0, 4.0, 7.0])
    np.testing.assert_allclose(stack.step_mm, [0.0, 0.0, 3.0])
    np.testing.assert_allclose(stack.normal, [0.0, 0.0, 1.0])
    assert stack.uniform


def test_normal_pointing_down_sorts_towards_decreasing_z() -> None:
    # Row cosine -x and column cosine +y give the normal -z (as in eCT_Supplemental.dcm).
    flipped = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    stack = stack_slices(_planes([_slice([0.0, 0.0, z], flipped) for z in (-159.0, -149.0, -169.0)]))
    np.testing.assert_allclose(stack.normal, [0.0, 0.0, -1.0])
    assert [p.position_mm[2] for p in stack.planes] == [-149.0, -159.0, -169.0]
    np.testing.assert_allclose(stack.step_mm, [0.0, 0.0, -10.0])


def test_duplicate_positions_are_named() -> None:
    items = [_slice([0.0, 0.0, z]) for z in (0.0, 2.0, 2.0, 4.0)]
    with pytest.raises(SeriesGeometryError, match=r"2 slices share a position: .*2\.dcm and .*2\.dcm"):
        stack_slices(_planes(items))


def test_tilted_stack_is_refused_and_the_absent_tilt_tag_said() -> None:
    # Each slice shifted 0.5 mm along y per 2 mm along z: a 14 degree tilt.
    items = [_slice([0.0, 0.5 * k, 2.0 * k]) for k in range(3)]
    with pytest.raises(SeriesGeometryError, match=r"14\.04 degrees; GantryDetectorTilt is absent") as info:
        stack_slices(_planes(items))
    assert info.value.paths == ("/in/memory/0.dcm", "/in/memory/2.dcm")


def test_tilt_below_tolerance_is_kept_in_the_step() -> None:
    items = [_slice([0.0, 1e-4 * k, 2.0 * k]) for k in range(3)]
    stack = stack_slices(_planes(items))
    np.testing.assert_allclose(stack.step_mm, [0.0, 1e-4, 2.0])


def test_missing_slice_is_located() -> None:
    items = [_slice([0.0, 0.0, z]) for z in (0.0, 2.5, 5.0, 10.0, 12.5)]
    with pytest.raises(
        SeriesGeometryError, match=r"5 mm between /in/memory/5\.dcm .* and /in/memory/10\.dcm"
    ) as info:
        stack_slices(_planes(items))
    assert "1 slice(s) missing" in info.value.reason
    assert "resample_nonuniform=True" in info.value.reason
    stack = stack_slices(_planes(items), allow_nonuniform=True)
    assert not stack.uniform
    np.testing.assert_allclose(stack.positions_mm, [0.0, 2.5, 5.0, 10.0, 12.5])


def test_positions_rounded_to_a_few_decimals_count_as_uniform() -> None:
    items = [_slice([0.0, 0.0, z]) for z in (0.0, 1.25, 2.501, 3.749)]
    assert stack_slices(_planes(items)).uniform


@pytest.mark.parametrize(
    ("change", "label"),
    [
        ({"ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]}, "ImageOrientationPatient differs"),
        ({"Rows": 8}, "Rows/Columns differs"),
        ({"PixelSpacing": [0.5, 0.5]}, "PixelSpacing differs"),
    ],
)
def test_slices_of_different_layout_are_refused(change: dict[str, object], label: str) -> None:
    odd = _slice([0.0, 0.0, 4.0])
    for keyword, value in change.items():
        setattr(odd.dataset, keyword, value)
    with pytest.raises(SeriesGeometryError, match=label) as info:
        stack_slices(_planes([_slice([0.0, 0.0, 0.0]), _slice([0.0, 0.0, 2.0]), odd]))
    assert "/in/memory/4.dcm" in info.value.paths


def test_single_slice_step_is_thickness_then_spacing_between_slices() -> None:
    oblique = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # sagittal: normal = y x -z = -x
    one = stack_slices(image_planes(_slice([0.0, 0.0, 0.0], oblique, SliceThickness=2.5)))
    np.testing.assert_allclose(one.step_mm, [-2.5, 0.0, 0.0])
    other = stack_slices(image_planes(_slice([0.0, 0.0, 0.0], SpacingBetweenSlices=1.5)))
    np.testing.assert_allclose(other.step_mm, [0.0, 0.0, 1.5])
    with pytest.raises(SeriesGeometryError, match="neither SliceThickness nor SpacingBetweenSlices"):
        stack_slices(image_planes(_slice([0.0, 0.0, 0.0])))


def test_missing_position_and_bad_orientation_are_refused() -> None:
    item = _slice([0.0, 0.0, 0.0])
    del item.dataset.ImagePositionPatient
    with pytest.raises(SeriesGeometryError, match="no ImagePositionPatient") as info:
        image_planes(item)
    assert info.value.paths == ("/in/memory/0.dcm",)
    with pytest.raises(SeriesGeometryError, match="not two orthogonal unit vectors"):
        image_planes(_slice([0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.6, 0.8, 0.0]))
    with pytest.raises(DicomInputError, match="ImagePositionPatient must be 3 finite numbers"):
        image_planes(_slice([0.0, 0.0]))


def test_functional_groups_per_frame_before_shared() -> None:
    ds = Dataset()
    shared, frame0, frame1 = Dataset(), Dataset(), Dataset()
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [1.0, 1.0]
    frame1.PixelMeasuresSequence = [Dataset()]
    frame1.PixelMeasuresSequence[0].PixelSpacing = [2.0, 2.0]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [frame0, frame1]
    first, second = (frame_group_item(ds, k, "PixelMeasuresSequence") for k in (0, 1))
    assert first is not None and first.PixelSpacing == [1.0, 1.0]
    assert second is not None and second.PixelSpacing == [2.0, 2.0]
    assert frame_group_item(ds, 1, "PlanePositionSequence") is None


def test_enhanced_ct_frames_get_their_own_planes(shared_data: Path) -> None:
    path = shared_data / "pkg_pydicom_data" / "eCT_Supplemental.dcm"
    planes = image_planes(LoadedDataset(path, pydicom.dcmread(path)))
    assert [p.frame for p in planes] == [0, 1]
    assert [p.position_mm.tolist() for p in planes] == [[99.5, -301.5, -159.0], [99.5, -301.5, -149.0]]
    assert all(p.orientation.tolist() == [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0] for p in planes)
    assert all(p.slice_thickness_mm == 10.0 for p in planes)
    np.testing.assert_allclose(planes[0].pixel_spacing_mm, [0.388672, 0.388672])
    assert planes[1].name.endswith("eCT_Supplemental.dcm frame 2")


@settings(max_examples=25, deadline=None)
@given(
    quaternion=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1),
    gap=st.floats(0.3, 5.0),
    count=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_any_orientation_sorts_along_its_normal(
    quaternion: list[float], gap: float, count: int, seed: int
) -> None:
    rotation = Rotation.from_quat(quaternion).as_matrix()
    orientation = [*rotation[:, 0], *rotation[:, 1]]
    normal = np.cross(rotation[:, 0], rotation[:, 1])
    origin = np.array([10.0, -20.0, 30.0])
    order = np.random.default_rng(seed).permutation(count)
    items = [_slice((origin + k * gap * normal).tolist(), orientation) for k in order]
    stack = stack_slices(_planes(items))
    np.testing.assert_allclose(stack.step_mm, gap * normal, atol=1e-9)
    np.testing.assert_allclose(stack.planes[0].position_mm, origin, atol=1e-9)
    assert np.all(np.diff(stack.positions_mm) > 0)


def test_group_by_series_and_listing() -> None:
    a, b = _slice([0.0, 0.0, 0.0]), _slice([0.0, 0.0, 1.0])
    b.dataset.SeriesInstanceUID = "9.9"
    b.dataset.Modality = "MR"
    groups = group_by_series([a, b, _slice([0.0, 0.0, 2.0])])
    assert {uid: len(m) for uid, m in groups.items()} == {"1.2.3": 2, "9.9": 1}
    listing = series_listing(groups)
    assert "1.2.3: ? (no SOP class) '', 2 instance(s), 2 slice(s)" in listing
    assert "9.9: MR" in listing


def _decoded(path: Path) -> NDArray[Any]:
    return decode_frames(LoadedDataset(path, pydicom.dcmread(path, force=True)))


@pytest.mark.parametrize(
    ("folder", "reference", "encoded"),
    [
        # One NM image as JPEG-LS lossless, JPEG 2000 lossless and RLE.
        (
            "odd_transfer_syntaxes_orthanc",
            "1.2.840.10008.1.2.5.dcm",
            ["1.2.840.10008.1.2.4.80.dcm", "1.2.840.10008.1.2.4.90.dcm"],
        ),
        # One MR image as big endian, implicit VR, RLE, JPEG 2000 lossless, JPEG-LS lossless.
        (
            "pkg_pydicom",
            "MR_small_implicit.dcm",
            [
                "MR_small_bigendian.dcm",
                "MR_small_RLE.dcm",
                "MR_small_jp2klossless.dcm",
                "MR_small_jpeg_ls_lossless.dcm",
            ],
        ),
    ],
)
def test_every_decodable_syntax_gives_the_same_values(
    shared_data: Path, folder: str, reference: str, encoded: list[str]
) -> None:
    expected = _decoded(shared_data / folder / reference)
    for name in encoded:
        np.testing.assert_array_equal(_decoded(shared_data / folder / name), expected, err_msg=name)


def test_same_ct_image_uncompressed_and_jpeg2000(shared_data: Path) -> None:
    uncompressed = _decoded(shared_data / "pkg_pydicom_data" / "693_UNCR.dcm")
    assert uncompressed.shape == (1, 512, 512)
    np.testing.assert_array_equal(_decoded(shared_data / "pkg_pydicom_data" / "693_J2KR.dcm"), uncompressed)
    # The lossy J2K file and its decoded uncompressed twin.
    np.testing.assert_array_equal(
        _decoded(shared_data / "pkg_pydicom" / "693_J2KI.dcm"),
        _decoded(shared_data / "pkg_pydicom_data" / "693_UNCI.dcm"),
    )


def test_undecodable_jpeg_extended_names_file_and_syntax(shared_data: Path) -> None:
    path = shared_data / "odd_transfer_syntaxes_orthanc" / "1.2.840.10008.1.2.4.51.dcm"
    with pytest.raises(
        DicomInputError, match=r"JPEG Extended \(Process 2 and 4\) \(1\.2\.840\.10008\.1\.2\.4\.51\)"
    ) as info:
        _decoded(path)
    assert info.value.paths == (str(path),)


def test_file_without_meta_decodes_with_the_syntax_it_was_read_with(shared_data: Path) -> None:
    path = shared_data / "odd_transfer_syntaxes_orthanc" / "1.2.840.10008.1.2.dcm"
    ds = pydicom.dcmread(path, force=True)
    assert "TransferSyntaxUID" not in ds.file_meta
    assert transfer_syntax_of(ds) == ImplicitVRLittleEndian
    values = _decoded(path)
    assert values.shape == (1, 256, 256)
    assert values.dtype == np.uint16 and int(values.max()) < 2**12  # BitsStored 12


def test_no_pixel_data_is_an_input_error() -> None:
    with pytest.raises(DicomInputError, match="no PixelData"):
        decode_frames(_slice([0.0, 0.0, 0.0]))
