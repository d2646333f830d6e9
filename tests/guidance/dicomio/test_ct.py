"""CT series reading (real files from many systems) and writing (round trips through bytes)."""

from __future__ import annotations

import io
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian
from scipy.spatial.transform import Rotation

from guidance.dicomio.ct import read_ct_series, write_ct_series
from guidance.dicomio.dataset import StudyContext, from_bytes, to_bytes
from guidance.dicomio.errors import DicomInputError, SeriesGeometryError
from guidance.volume import Volume

# ----------------------------------------------------------------------------- helpers


def _stored(path: Path) -> NDArray[np.float64]:
    """Pixel values of a file as pydicom decodes them, with its rescale applied."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _names(volume: Volume) -> list[str]:
    return [Path(p).name for p in volume.metadata["source_paths"]]


def _as_read_back(volume: Volume, *, rounded: bool = True) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(values, affine) the reader returns for a written volume: slices run along +normal.

    The normal is row cosine x column cosine, i.e. the column axis direction x the
    row axis direction of the affine; a volume whose slice step points the other
    way comes back with its slices reversed.
    """
    affine = np.array(volume.affine)
    values = np.asarray(volume.array, dtype=np.float64)
    values = np.rint(values) if rounded else values
    normal = np.cross(affine[:3, 2], affine[:3, 1])
    if affine[:3, 0] @ normal < 0:
        affine[:3, 3] = affine[:3, 3] + (volume.shape[0] - 1) * affine[:3, 0]
        affine[:3, 0] = -affine[:3, 0]
        values = values[::-1]
    return values, affine


def _round_trip(datasets: list[Dataset], *, shuffle_seed: int | None = None) -> Volume:
    back = [from_bytes(to_bytes(ds)) for ds in datasets]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(back)
    return read_ct_series(back)


def _volume(shape: tuple[int, int, int], affine: NDArray[np.float64], frame: str, seed: int = 0) -> Volume:
    values = np.random.default_rng(seed).uniform(-1024.0, 3071.0, shape).astype(np.float32)
    return Volume(values, affine, frame)


@pytest.fixture
def strict_pydicom() -> Iterator[None]:
    """pydicom raises on any value that does not conform to its VR, reading and writing."""
    before = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.RAISE
    config.settings.writing_validation_mode = config.RAISE
    try:
        yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = before


# ----------------------------------------------------------------------------- real series


def test_mim_breast_phantom_ct(shared_data: Path) -> None:
    folder = shared_data / "brachy_ldr_pd103_mim_ebgui" / "CT"
    volume = read_ct_series(folder)
    assert volume.shape == (40, 512, 512)
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.spacing_mm, [3.0, 0.656, 0.656])
    np.testing.assert_allclose(volume.grid.axes, np.eye(3)[::-1])  # slice +z, row +y, column +x
    np.testing.assert_allclose(volume.index_to_patient([0, 0, 0]), [[0.0, 0.0, -307.0]])
    np.testing.assert_allclose(volume.index_to_patient([39, 0, 0]), [[0.0, 0.0, -190.0]])
    # The file at z = -259 mm (InstanceNumber 17) is slice (-259 + 307) / 3 = 16.
    at_259 = folder / "1.3.6.1.4.1.9590.100.1.2.111405537611438934940457048803618493065.dcm"
    assert volume.metadata["source_paths"][16] == str(at_259)
    np.testing.assert_array_equal(volume.array[16], _stored(at_259))
    assert len(set(volume.metadata["sop_instance_uids"])) == 40
    assert volume.metadata["modality"] == "CT"
    assert volume.metadata["slice_thickness_mm"] == 3.0
    assert volume.metadata["transfer_syntax_uids"] == ["1.2.840.10008.1.2"]  # implicit VR
    assert volume.frame_of_reference_uid == "1.3.6.1.4.1.9590.100.1.2.382574482911178445317698006132923278375"


def test_neck_slices_sorted_by_position_not_file_name(shared_data: Path) -> None:
    folder = shared_data / "hn_neck_vhm_dicomrttool"
    volume = read_ct_series(folder)  # the RT Structure Set in the folder is ignored
    assert volume.shape == (4, 512, 512)
    assert _names(volume) == ["CT_2.dcm", "CT_4.dcm", "CT_1.dcm", "CT_3.dcm"]
    np.testing.assert_allclose(volume.index_to_patient([[0, 0, 0], [3, 0, 0]]), [[0, 0, 1000], [0, 0, 1003]])
    np.testing.assert_allclose(volume.spacing_mm, [1.0, 1.0, 1.0])
    reversed_files = sorted(folder.glob("CT_*.dcm"), reverse=True)
    again = read_ct_series(reversed_files)
    assert _names(again) == _names(volume)
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_array_equal(volume.array[2], _stored(folder / "CT_1.dcm"))


@pytest.mark.parametrize(
    ("patient", "shape", "first_z", "pixel_mm"),
    [
        ("pat_1", (60, 201, 204), -100.40000152587, 0.97699999809265),
        ("pat_2", (41, 138, 141), -591.90002441406, 0.97699999809265),
        ("pat_3", (46, 137, 136), -438.5, 0.97699999809265),
        ("pat_4", (56, 172, 178), -518.5, 0.9765625),
    ],
)
def test_lung_phantom_series(
    shared_data: Path, patient: str, shape: tuple[int, int, int], first_z: float, pixel_mm: float
) -> None:
    volume = read_ct_series(shared_data / "rt_lung_radiomics_phantom_pycerr" / patient)
    assert volume.shape == shape
    np.testing.assert_allclose(volume.spacing_mm, [3.0, pixel_mm, pixel_mm], atol=1e-6)
    assert volume.index_to_patient([0, 0, 0])[0, 2] == pytest.approx(first_z)
    assert _names(volume)[-1] == "DCM_IMG_00000.dcm"  # file names run from head to feet
    assert float(volume.array.min()) == -1000.0  # RescaleIntercept -1000, unsigned 12-bit pixels


def test_single_slice_steps_by_slice_thickness(shared_data: Path) -> None:
    path = shared_data / "pkg_pydicom" / "CT_small.dcm"
    volume = read_ct_series(path)
    assert volume.shape == (1, 128, 128)
    np.testing.assert_allclose(volume.affine[:3, 0], [0.0, 0.0, 5.0])
    np.testing.assert_allclose(volume.affine[:3, 3], [-158.135803, -179.035797, -75.699997])
    np.testing.assert_allclose(volume.spacing_mm[1:], [0.661468, 0.661468])
    np.testing.assert_array_equal(volume.array[0], _stored(path))
    assert volume.metadata["kvp"] == 120.0


def test_tilt_in_the_orientation_is_a_regular_slice(shared_data: Path) -> None:
    # GantryDetectorTilt -22 with the tilt carried by ImageOrientationPatient: a valid oblique slice.
    volume = read_ct_series(shared_data / "pkg_pydicom" / "J2K_pixelrep_mismatch.dcm")
    np.testing.assert_allclose(
        volume.affine[:3, 0], 5.0 * np.cross([1, 0, 0], [0, 0.9272, -0.3746]), atol=1e-3
    )
    assert volume.metadata["transfer_syntax_uids"] == ["1.2.840.10008.1.2.4.90"]


def test_head_ct_with_unequal_gaps(shared_data: Path) -> None:
    folder = shared_data / "pkg_pydicom" / "dicomdir_head_ct2"
    # Axial, GantryDetectorTilt 0: slices at -99.48, 103.02, 104.27, 105.52 mm.
    with pytest.raises(SeriesGeometryError, match="slice spacing is not uniform") as info:
        read_ct_series(folder)
    assert "202.5 mm between" in info.value.reason
    assert "17106 (at -99.480 mm) and " in info.value.reason
    assert "17136 (at 103.020 mm) (161 slice(s) missing?)" in info.value.reason
    volume = read_ct_series(folder, resample_nonuniform=True)
    assert volume.shape == (165, 16, 16)  # 205 mm at 1.25 mm
    np.testing.assert_allclose(volume.spacing_mm, [1.25, 0.488281, 0.488281])
    assert volume.metadata["resampled_slices"] is True
    np.testing.assert_allclose(
        volume.metadata["original_slice_positions_mm"], [-99.48, 103.02, 104.27, 105.52]
    )
    first, second = _stored(folder / "17106"), _stored(folder / "17136")
    np.testing.assert_allclose(volume.array[0], first)
    np.testing.assert_allclose(volume.array[162], second, atol=1e-3)
    np.testing.assert_allclose(volume.array[81], (first + second) / 2, atol=1e-3)
    np.testing.assert_allclose(volume.array[164], _stored(folder / "17196"))


def test_enhanced_ct_multiframe(shared_data: Path) -> None:
    path = shared_data / "pkg_pydicom_data" / "eCT_Supplemental.dcm"
    volume = read_ct_series(path)
    assert volume.shape == (2, 512, 512)
    # Row cosine -x, column cosine +y: normal -z, so the frame at z = -149 comes first.
    assert volume.metadata["frame_numbers"] == [2, 1]
    np.testing.assert_allclose(volume.affine[:3, 3], [99.5, -301.5, -149.0])
    np.testing.assert_allclose(volume.affine[:3, 0], [0.0, 0.0, -10.0])
    np.testing.assert_allclose(volume.affine[:3, 2], [-0.388672, 0.0, 0.0])
    assert volume.metadata["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2.1"
    assert volume.metadata["rescale_type"] == "US"  # an rCBF map, as its header says
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    np.testing.assert_array_equal(volume.array, raw[::-1] - 1024.0)


def test_gantry_tilt_without_tilt_tag(shared_data: Path) -> None:
    folder = shared_data / "odd_dicom2nifti" / "gantrytilting"
    with pytest.raises(SeriesGeometryError, match=r"14\.00 degrees; GantryDetectorTilt is absent") as info:
        read_ct_series(folder)
    assert info.value.paths[0].endswith("IM-0001-0001.dcm")


def test_all_slices_at_one_position(shared_data: Path) -> None:
    with pytest.raises(SeriesGeometryError, match="4 slices share a position") as info:
        read_ct_series(shared_data / "odd_dicom2nifti" / "notavolume")
    assert [Path(p).name for p in info.value.paths] == ["001.dcm", "002.dcm", "003.dcm", "004.dcm"]


def test_missing_slice_error_then_resampled(shared_data: Path) -> None:
    folder = shared_data / "odd_dicom2nifti" / "sliceincrement" / "001"
    with pytest.raises(
        SeriesGeometryError, match=r"10 mm between .*IM-0001-0009-0001\.dcm .*1 slice\(s\) missing"
    ):
        read_ct_series(folder)
    volume = read_ct_series(folder, resample_nonuniform=True)
    assert volume.shape == (5, 512, 512)
    assert volume.spacing_mm[0] == pytest.approx(5.0, abs=1e-5)
    files = sorted(folder.glob("*.dcm"))
    np.testing.assert_allclose(volume.array[2], _stored(files[2]), atol=1e-3)
    np.testing.assert_allclose(volume.array[3], (_stored(files[2]) + _stored(files[3])) / 2, atol=1e-3)
    np.testing.assert_allclose(volume.array[4], _stored(files[3]), atol=1e-3)


def test_tilt_is_reported_before_gaps(shared_data: Path) -> None:
    with pytest.raises(SeriesGeometryError, match=r"15\.50 degrees"):
        read_ct_series(shared_data / "odd_dicom2nifti" / "sliceincrement" / "002")


def test_mixed_series_are_listed_and_one_can_be_chosen(shared_data: Path) -> None:
    folder = shared_data / "odd_dicom2nifti" / "sliceincrement"
    with pytest.raises(SeriesGeometryError, match="belong to 2 series") as info:
        read_ct_series(folder)
    assert info.value.reason.count("4 instance(s), 4 slice(s)") == 2
    uid = pydicom.dcmread(next((folder / "001").glob("*.dcm"))).SeriesInstanceUID
    assert uid in info.value.reason
    volume = read_ct_series(folder, series_instance_uid=uid, resample_nonuniform=True)
    assert volume.metadata["series_instance_uid"] == uid
    with pytest.raises(DicomInputError, match=r"series 1\.2\.3 is not among the images given"):
        read_ct_series(folder, series_instance_uid="1.2.3")


def test_oblique_anisotropic_series_affine_matches_the_files(shared_data: Path) -> None:
    folder = shared_data / "odd_rtutils" / "oriented_data"
    volume = read_ct_series(folder)
    assert volume.shape == (3, 50, 100)
    files = [pydicom.dcmread(folder / f"{k}.dcm") for k in range(3)]
    cosines = np.array(files[0].ImageOrientationPatient, dtype=np.float64)
    np.testing.assert_allclose(volume.affine[:3, 2], cosines[:3] * 2.5)  # columns: PixelSpacing[1]
    np.testing.assert_allclose(volume.affine[:3, 1], cosines[3:] * 3.5)  # rows: PixelSpacing[0]
    for k, ds in enumerate(files):
        np.testing.assert_allclose(volume.index_to_patient([k, 0, 0])[0], ds.ImagePositionPatient, atol=1e-6)
        expected = ds.pixel_array.astype(np.float64) * 0.001  # RescaleSlope .001
        np.testing.assert_allclose(volume.array[k], expected, atol=1e-6)
    assert volume.spacing_mm[0] == pytest.approx(4.5, abs=1e-6)
    assert volume.metadata["rescale_type"] == "US"


def test_one_slice_without_thickness_is_refused(shared_data: Path) -> None:
    with pytest.raises(SeriesGeometryError, match="neither SliceThickness nor SpacingBetweenSlices"):
        read_ct_series(shared_data / "odd_rtutils" / "one_slice_data")


@pytest.mark.parametrize(
    ("uncompressed", "compressed"),
    [
        ("pkg_pydicom_data/693_UNCR.dcm", "pkg_pydicom_data/693_J2KR.dcm"),  # JPEG 2000 lossless
        ("pkg_pydicom_data/693_UNCI.dcm", "pkg_pydicom/693_J2KI.dcm"),  # JPEG 2000 and its decoded twin
    ],
)
def test_compressed_ct_reads_as_the_uncompressed(
    shared_data: Path, uncompressed: str, compressed: str
) -> None:
    plain = read_ct_series(shared_data / uncompressed)
    jpeg2000 = read_ct_series(shared_data / compressed)
    assert plain.shape == (1, 512, 512)
    np.testing.assert_array_equal(jpeg2000.array, plain.array)
    np.testing.assert_allclose(jpeg2000.affine, plain.affine)
    assert jpeg2000.metadata["transfer_syntax_uids"] != plain.metadata["transfer_syntax_uids"]


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("1.2.840.10008.1.2.4.70.dcm", (1, 400, 512)),  # JPEG Lossless SV1, coronal
        ("1.2.840.10008.1.2.4.81.dcm", (1, 512, 512)),  # JPEG-LS near-lossless
        ("1.2.840.10008.1.2.4.91.dcm", (1, 512, 512)),  # JPEG 2000
    ],
)
def test_compressed_ct_in_other_syntaxes_reads(
    shared_data: Path, name: str, shape: tuple[int, int, int]
) -> None:
    volume = read_ct_series(shared_data / "odd_transfer_syntaxes_orthanc" / name)
    assert volume.shape == shape
    assert volume.metadata["transfer_syntax_uids"] == [name.removesuffix(".dcm")]


def test_undecodable_pixel_data_names_file_and_syntax(shared_data: Path) -> None:
    path = shared_data / "odd_transfer_syntaxes_orthanc" / "1.2.840.10008.1.2.4.51.dcm"
    # The 12-bit JPEG Extended file is an MR image: the CT reader says so first ...
    with pytest.raises(DicomInputError, match="not a CT image: Modality 'MR'"):
        read_ct_series(path)
    # ... and, labelled CT, its pixel data cannot be decoded by any installed plugin.
    ds = pydicom.dcmread(path)
    ds.SOPClassUID, ds.Modality, ds.RescaleSlope, ds.RescaleIntercept = CTImageStorage, "CT", 1, 0
    with pytest.raises(DicomInputError, match=r"transfer syntax JPEG Extended \(Process 2 and 4\)") as info:
        read_ct_series(ds)
    assert str(ds.SOPInstanceUID) in str(info.value)


def test_ct_stored_as_secondary_capture_is_refused(shared_data: Path) -> None:
    for source in (
        shared_data / "deb_octave_dicom" / "CT-MONO2-16-ankle.dcm",
        shared_data / "deb_octave_dicom",
    ):
        with pytest.raises(DicomInputError, match="SOP class is Secondary Capture Image Storage") as info:
            read_ct_series(source)
        assert not isinstance(info.value, SeriesGeometryError)
        assert info.value.paths[0].endswith("CT-MONO2-16-ankle.dcm")


def test_non_ct_big_endian_file_is_refused(shared_data: Path) -> None:
    # pkg_pydicom's big endian, implicit VR and no-meta files are MR or RT: not CT.
    with pytest.raises(DicomInputError, match="not a CT image: Modality 'MR', SOP class MR Image Storage"):
        read_ct_series(shared_data / "pkg_pydicom" / "MR_small_bigendian.dcm")


# ----------------------------------------------------------------------------- writing


def _oblique_affine(seed: int, spacing: tuple[float, float, float], flip: bool) -> NDArray[np.float64]:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.random(random_state=seed).as_matrix() * np.asarray(spacing)
    if flip:
        affine[:3, 0] *= -1.0
    affine[:3, 3] = [12.5, -40.25, 300.125]
    return affine


@settings(max_examples=25, deadline=None)
@given(
    quaternion=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1),
    spacing=st.tuples(st.floats(0.3, 5.0), st.floats(0.3, 5.0), st.floats(0.3, 5.0)),
    flip=st.booleans(),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
    origin=st.tuples(*[st.floats(-500.0, 500.0)] * 3),
    seed=st.integers(0, 2**16),
)
def test_write_read_round_trip_any_orientation(
    quaternion: list[float],
    spacing: tuple[float, float, float],
    flip: bool,
    shape: tuple[int, int, int],
    origin: tuple[float, float, float],
    seed: int,
) -> None:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_quat(quaternion).as_matrix() * np.asarray(spacing)
    affine[:3, 0] *= -1.0 if flip else 1.0
    affine[:3, 3] = origin
    context = StudyContext()
    volume = _volume(shape, affine, context.frame_of_reference_uid, seed)
    back = _round_trip(write_ct_series(volume, context), shuffle_seed=seed)
    values, expected_affine = _as_read_back(volume)
    np.testing.assert_array_equal(back.array, values)
    np.testing.assert_allclose(back.affine, expected_affine, atol=1e-4)
    assert back.frame_of_reference_uid == context.frame_of_reference_uid


def test_round_trip_values_within_half_a_hu() -> None:
    context = StudyContext()
    volume = _volume((3, 4, 5), _oblique_affine(3, (2.0, 0.8, 0.6), flip=True), "", seed=7)
    back = _round_trip(write_ct_series(volume, context))
    original, _ = _as_read_back(volume, rounded=False)
    assert np.max(np.abs(back.array - original)) <= 0.5
    assert np.max(np.abs(back.array - original)) > 0.4  # uniform random values: rounding shows
    assert back.frame_of_reference_uid == context.frame_of_reference_uid  # "" takes the context's


def test_real_series_write_read_round_trip(shared_data: Path) -> None:
    volume = read_ct_series(shared_data / "rt_lung_radiomics_phantom_pycerr" / "pat_2")
    context = StudyContext(frame_of_reference_uid=volume.frame_of_reference_uid)
    written = write_ct_series(volume, context, series_description="lung phantom copy", kvp=120)
    assert len(written) == 41
    back = _round_trip(written, shuffle_seed=1)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    assert (
        back.metadata["series_instance_uid"]
        == written[0].SeriesInstanceUID
        != volume.metadata["series_instance_uid"]
    )
    assert back.metadata["series_description"] == "lung phantom copy"
    assert back.metadata["kvp"] == 120.0


def test_written_header() -> None:
    context = StudyContext()
    # Slices step -z (2.5 mm), rows run +y (0.5 mm), columns +x (0.75 mm): normal +z.
    axial = np.eye(4)
    axial[:3, :3] = [[0.0, 0.0, 0.75], [0.0, 0.5, 0.0], [-2.5, 0.0, 0.0]]
    axial[:3, 3] = [-10.0, 20.0, 30.0]
    volume = Volume(np.zeros((3, 2, 4), np.float32), axial)
    datasets = write_ct_series(volume, context, series_number=7, slice_thickness_mm=3.0, kvp=120)
    first = datasets[0]
    assert first.SOPClassUID == CTImageStorage and first.Modality == "CT"
    assert first.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert [ds.InstanceNumber for ds in datasets] == [1, 2, 3]
    assert [float(v) for v in first.ImageOrientationPatient] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert [float(v) for v in first.PixelSpacing] == [0.5, 0.75]
    assert [[float(v) for v in ds.ImagePositionPatient] for ds in datasets] == [
        [-10.0, 20.0, 30.0],
        [-10.0, 20.0, 27.5],
        [-10.0, 20.0, 25.0],
    ]
    assert [float(ds.SliceLocation) for ds in datasets] == [30.0, 27.5, 25.0]
    assert float(first.SliceThickness) == 3.0
    assert float(first.KVP) == 120.0
    assert (first.Rows, first.Columns, first.BitsStored, first.PixelRepresentation) == (2, 4, 16, 1)
    assert (float(first.RescaleSlope), float(first.RescaleIntercept)) == (1.0, 0.0)
    assert first.SeriesNumber == 7 and first.FrameOfReferenceUID == context.frame_of_reference_uid
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3


# Type 1 (must have a value) and Type 2 (must be present) attributes of the CT Image IOD
# (PS3.3 A.3: Patient, General Study, General Series, Frame of Reference, General
# Equipment, General Image, Image Plane, Image Pixel, CT Image and SOP Common modules).
_TYPE_1 = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "FrameOfReferenceUID", "ImageType", "SamplesPerPixel", "PhotometricInterpretation", "Rows",
    "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleIntercept",
    "RescaleSlope", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "PixelData",
]  # fmt: skip
_TYPE_2 = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "PositionReferenceIndicator",
    "Manufacturer", "InstanceNumber", "SliceThickness", "KVP", "AcquisitionNumber", "PatientPosition",
    "ContentDate", "ContentTime",
]  # fmt: skip


def test_pydicom_reads_written_files_strictly(strict_pydicom: None) -> None:
    context = StudyContext()
    volume = _volume(
        (2, 3, 4), _oblique_affine(11, (1.25, 0.4, 0.9), flip=True), context.frame_of_reference_uid
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        datasets = write_ct_series(volume, context)
        encoded = [to_bytes(ds) for ds in datasets]
        decoded = [from_bytes(data) for data in encoded]
        back = read_ct_series(decoded)
        for ds in decoded:
            for keyword in _TYPE_1:
                assert ds.get(keyword) not in (None, ""), keyword
            for keyword in _TYPE_2:
                assert keyword in ds, keyword
            assert ds.pixel_array.dtype == np.int16
    values, affine = _as_read_back(volume)
    np.testing.assert_array_equal(back.array, values)
    np.testing.assert_allclose(back.affine, affine, atol=1e-4)


def _axial(step_mm: float = 1.0) -> NDArray[np.float64]:
    affine = np.eye(4)
    affine[:3, :3] = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [step_mm, 0.0, 0.0]]
    return affine


def test_values_beyond_int16_use_an_intercept() -> None:
    context = StudyContext()
    values = np.linspace(20000.0, 60000.0, 2 * 3 * 3).reshape(2, 3, 3)
    volume = Volume(values, _axial(), "")
    datasets = write_ct_series(volume, context)
    assert float(datasets[0].RescaleIntercept) == 20000.0 + 32768.0
    np.testing.assert_array_equal(_round_trip(datasets).array, np.rint(values))
    too_wide = np.where(values > 59000.0, 70000.0, -1024.0)
    with pytest.raises(ValueError, match=r"span -1024 to 70000 HU, more than the 65536 values"):
        write_ct_series(volume.with_array(too_wide), context)
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_ct_series(volume.with_array(np.full((2, 3, 3), np.nan)), context)


def test_writer_refuses_other_frames_and_non_stack_affines() -> None:
    context = StudyContext()
    with pytest.raises(ValueError, match="differs from the study context"):
        write_ct_series(Volume(np.zeros((1, 2, 2)), _axial(), "1.2.3.4"), context)
    sheared = _axial()
    sheared[:3, 0] = [0.0, 0.3, 1.0]
    with pytest.raises(ValueError, match="not along the slice normal"):
        write_ct_series(Volume(np.zeros((2, 2, 2)), sheared), context)
    in_plane = _axial()
    in_plane[:3, 0] = [1.0, 0.0, 1.0]  # 45 degrees from the normal
    with pytest.raises(ValueError, match="not along the slice normal"):
        write_ct_series(Volume(np.zeros((2, 2, 2)), in_plane), context)
    skewed = _axial()
    skewed[:3, 1] = [0.2, 1.0, 0.0]
    with pytest.raises(ValueError, match="not orthogonal"):
        write_ct_series(Volume(np.zeros((2, 2, 2)), skewed), context)


# ----------------------------------------------------------------------------- encodings and bad headers


def _written(shape: tuple[int, int, int] = (3, 4, 5)) -> tuple[Volume, list[Dataset]]:
    context = StudyContext()
    volume = _volume(shape, _oblique_affine(5, (2.0, 0.7, 0.9), flip=False), context.frame_of_reference_uid)
    return volume, write_ct_series(volume, context)


def test_big_endian_ct_reads(strict_pydicom: None) -> None:
    volume, datasets = _written()
    encoded = []
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = np.frombuffer(ds.PixelData, "<i2").astype(">i2").tobytes()
        encoded.append(from_bytes(to_bytes(ds)))
    assert encoded[0].original_encoding == (False, False)
    back = read_ct_series(encoded)
    values, affine = _as_read_back(volume)
    np.testing.assert_array_equal(back.array, values)
    np.testing.assert_allclose(back.affine, affine, atol=1e-4)


def test_files_without_file_meta_read_as_implicit_vr(tmp_path: Path) -> None:
    volume, datasets = _written()
    paths = []
    for index, ds in enumerate(datasets):
        del ds.file_meta  # no preamble, no File Meta Information: as some old systems write
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
        assert buffer.getvalue()[:4] == b"\x08\x00\x05\x00"  # (0008,0005) first
        path = tmp_path / f"slice{index}"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    back = read_ct_series(tmp_path)
    assert back.metadata["transfer_syntax_uids"] == ["1.2.840.10008.1.2"]
    values, _ = _as_read_back(volume)
    np.testing.assert_array_equal(back.array, values)


def test_header_problems_are_named() -> None:
    _, datasets = _written()
    no_rescale = from_bytes(to_bytes(datasets[1]))
    del no_rescale.RescaleSlope
    with pytest.raises(DicomInputError, match="no RescaleSlope/RescaleIntercept"):
        read_ct_series([datasets[0], no_rescale, datasets[2]])
    colour = from_bytes(to_bytes(datasets[1]))
    colour.PhotometricInterpretation = "RGB"
    with pytest.raises(DicomInputError, match="PhotometricInterpretation 'RGB'"):
        read_ct_series([datasets[0], colour, datasets[2]])
    other_frame = from_bytes(to_bytes(datasets[2]))
    other_frame.FrameOfReferenceUID = "1.2.3"
    with pytest.raises(DicomInputError, match="FrameOfReferenceUID differs within the series"):
        read_ct_series([datasets[0], datasets[1], other_frame])
    wrong_modality = from_bytes(to_bytes(datasets[0]))
    wrong_modality.Modality = "OT"
    with pytest.raises(DicomInputError, match=r"SOP class is CT Image Storage .* but Modality is 'OT'"):
        read_ct_series(wrong_modality)
    with pytest.raises(DicomInputError, match="no image with pixel data"):
        read_ct_series(Dataset())


def test_single_file_without_position_is_refused(tmp_path: Path) -> None:
    _, datasets = _written((1, 2, 2))
    del datasets[0].ImagePositionPatient
    path = tmp_path / "no_position.dcm"
    path.write_bytes(to_bytes(datasets[0]))
    with pytest.raises(SeriesGeometryError, match="no ImagePositionPatient") as info:
        read_ct_series(path)
    assert info.value.paths == (str(path),)
