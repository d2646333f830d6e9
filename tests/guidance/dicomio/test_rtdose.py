"""RT Dose reading and writing: real files from three planning systems, round trips, and
dicompyler-core as an independent reader."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pydicom.dicomio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from scipy.spatial.transform import Rotation

from guidance.dicomio.dataset import StudyContext, from_bytes, to_bytes
from guidance.dicomio.errors import DicomInputError, SeriesGeometryError
from guidance.dicomio.rtdose import (
    DoseVolumeHistogram,
    DvhType,
    DvhVolumeUnits,
    read_dvhs,
    read_rtdose,
    read_rtdoses,
    write_rtdose,
)
from guidance.volume import Volume

PLAN_UID = "1.2.826.0.1.3680043.8.498.1"
# The pydicom test doses carry a UID with a leading-zero component ("...0123...").
BAD_UID = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


@pytest.fixture(scope="module")
def oncentra(shared_data: Path) -> Path:
    return shared_data / "brachy_ldr_i125_oncentra_mcbrachy"


@pytest.fixture(scope="module")
def breast(shared_data: Path) -> Path:
    return shared_data / "rt_breast_dicompyler" / "rtdose.dcm"


@pytest.fixture(scope="module")
def oncentra_dose(oncentra: Path) -> Volume:
    return read_rtdose(oncentra / "RTDOSE99.dcm")


def _axial(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin: tuple[float, ...],
    *,
    slice_sign: float = 1.0,
) -> NDArray[np.float64]:
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, slice_sign * spacing[0]]
    affine[:3, 1] = [0.0, spacing[1], 0.0]
    affine[:3, 2] = [spacing[2], 0.0, 0.0]
    affine[:3, 3] = origin
    return affine


def _round_trip(volume: Volume, context: StudyContext, **kwargs: object) -> tuple[Dataset, Volume]:
    written = from_bytes(to_bytes(write_rtdose(volume, context, referenced_plan_uid=PLAN_UID, **kwargs)))
    return written, read_rtdose(written)


def _written(shape: tuple[int, int, int] = (4, 3, 5), **kwargs: object) -> Dataset:
    """A written axial dose (slice step +2 mm from z = 10), read back as a dataset."""
    context = StudyContext()
    values = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    volume = Volume(values, _axial(shape, (2.0, 1.5, 1.0), (-5.0, 3.0, 10.0)), context.frame_of_reference_uid)
    return from_bytes(to_bytes(write_rtdose(volume, context, referenced_plan_uid=PLAN_UID, **kwargs)))


# --------------------------------------------------------------------------- Oncentra (real LDR)


def test_oncentra_grid_geometry_descending_and_non_square(oncentra_dose: Volume) -> None:
    dose = oncentra_dose
    assert dose.shape == (77, 69, 85)  # frames, Rows, Columns
    # PixelSpacing [1.025963, 0.96749...]: the first value is the distance between rows,
    # so the row index steps 1.026 mm along the column cosine (+y).
    np.testing.assert_allclose(dose.affine[:3, 1], [0.0, 1.025963, 0.0], atol=1e-12)
    np.testing.assert_allclose(dose.affine[:3, 2], [0.96749246428571, 0.0, 0.0], atol=1e-12)
    # GridFrameOffsetVector 0, -1.026, ... descends: frames step towards the feet.
    np.testing.assert_allclose(dose.affine[:3, 0], [0.0, 0.0, -1.0263157894736842], atol=1e-9)
    first, last = dose.index_to_patient([[0, 0, 0], [76, 68, 84]])
    np.testing.assert_allclose(first, [-22.996212999999, 72.550671, -700.0], atol=1e-9)
    np.testing.assert_allclose(
        last, [-22.996212999999 + 84 * 0.96749246428571, 72.550671 + 68 * 1.025963, -778.0], atol=1e-6
    )
    assert dose.frame_of_reference_uid == "1.2.826.0.1.3680043.10.424.1065521295955625296453884332443551799"


def test_oncentra_dose_values_match_pydicom(oncentra: Path, oncentra_dose: Volume) -> None:
    ds = pydicom.dcmread(oncentra / "RTDOSE99.dcm")
    expected = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert oncentra_dose.array.dtype == np.float64
    assert oncentra_dose.array.max() == pytest.approx(expected.max()) == pytest.approx(13666 * 1.44)
    assert np.unravel_index(np.argmax(oncentra_dose.array), oncentra_dose.shape) == (28, 27, 55)
    # Voxels at patient positions worked out by hand from the header.
    ipp, (row_mm, col_mm) = np.array(ds.ImagePositionPatient, float), np.array(ds.PixelSpacing, float)
    for s, r, c in [(28, 27, 55), (10, 40, 12), (70, 5, 80)]:
        point = ipp + np.array([c * col_mm, r * row_mm, -s * 78.0 / 76])
        np.testing.assert_allclose(oncentra_dose.patient_to_index(point)[0], [s, r, c], atol=1e-9)
        assert oncentra_dose.array[s, r, c] == expected[s, r, c]


def test_oncentra_seeds_sit_in_the_hot_spots(oncentra: Path, oncentra_dose: Volume) -> None:
    """The plan's seed positions land on high dose only with rows and columns the right way round."""
    plan = pydicom.dcmread(oncentra / "RTPLAN104.dcm")
    seeds = np.array(
        [
            [float(v) for v in point.ControlPoint3DPosition]
            for setup in plan.ApplicationSetupSequence
            for channel in setup.get("ChannelSequence", [])
            for point in channel.BrachyControlPointSequence
            if "ControlPoint3DPosition" in point
        ]
    )
    assert len(np.unique(seeds.round(3), axis=0)) == 72  # 36 seeds, two positions each

    def median_at_seeds(affine: NDArray[np.float64]) -> float:
        index = np.rint(Volume(oncentra_dose.array, affine).patient_to_index(seeds)).astype(int)
        return float(np.median(oncentra_dose.array[tuple(index.T)]))

    swapped = oncentra_dose.affine.copy()
    swapped[1, 1], swapped[0, 2] = 0.96749246428571, 1.025963  # PixelSpacing misread as (column, row)
    assert median_at_seeds(oncentra_dose.affine) > 2000.0  # measured 2242.8 Gy
    assert median_at_seeds(swapped) < 500.0  # measured 377.3 Gy


def test_oncentra_metadata(oncentra: Path, oncentra_dose: Volume) -> None:
    plan_uid = str(pydicom.dcmread(oncentra / "RTPLAN104.dcm", stop_before_pixels=True).SOPInstanceUID)
    meta = oncentra_dose.metadata
    assert meta["referenced_plan_uid"] == plan_uid
    assert (meta["units"], meta["dose_type"], meta["dose_summation_type"]) == ("Gy", "PHYSICAL", "PLAN")
    assert meta["dose_grid_scaling"] == 1.44
    assert meta["sop_instance_uid"] == "1.2.826.0.1.3680043.10.424.3347861674843696263926395926853075079"
    assert meta["series_instance_uid"] == "1.2.826.0.1.3680043.10.424.1214396940802948116633666250308816913"


def test_oncentra_planes_agree_with_dicompyler(
    dicompyler: SimpleNamespace, oncentra: Path, oncentra_dose: Volume
) -> None:
    parser = dicompyler.dicomparser.DicomParser(pydicom.dcmread(oncentra / "RTDOSE99.dcm"))
    col_x, row_y = parser.GetDoseData()["lut"]
    np.testing.assert_allclose(col_x, oncentra_dose.index_to_patient([[0, 0, c] for c in range(85)])[:, 0])
    np.testing.assert_allclose(row_y, oncentra_dose.index_to_patient([[0, r, 0] for r in range(69)])[:, 1])
    for s in (0, 28, 76):
        z = oncentra_dose.index_to_patient([s, 0, 0])[0, 2]
        np.testing.assert_allclose(parser.GetDoseGrid(z) * 1.44, oncentra_dose.array[s])


def test_folder_with_one_dose_and_other_objects(oncentra: Path) -> None:
    assert read_rtdose(oncentra).shape == (77, 69, 85)


# --------------------------------------------------------------------------- pydicom test doses


@BAD_UID
def test_relative_dose_needs_a_scaling(shared_data: Path) -> None:
    path = shared_data / "pkg_pydicom" / "rtdose.dcm"
    with pytest.raises(DicomInputError, match=r"RELATIVE.*gy_per_relative_unit"):
        read_rtdose(path)
    dose = read_rtdose(path, gy_per_relative_unit=2.0)
    assert dose.shape == (15, 10, 10)
    np.testing.assert_allclose(dose.spacing_mm, [5.0, 10.0, 10.0])
    np.testing.assert_allclose(dose.affine[:3, 3], [189.43125, 199.43125, -761.87])
    assert dose.array.max() == pytest.approx(2.0 * 1254000 * 1e-6)
    assert dose.metadata["dose_summation_type"] == "BEAM"
    assert dose.metadata["dose_units_in_file"] == "RELATIVE"


@BAD_UID
@pytest.mark.parametrize("variant", ["rtdose_expb.dcm", "rtdose_rle.dcm"])
def test_big_endian_and_rle_equal_the_plain_file(shared_data: Path, variant: str) -> None:
    plain = read_rtdose(shared_data / "pkg_pydicom" / "rtdose.dcm", gy_per_relative_unit=1.0)
    other = read_rtdose(shared_data / "pkg_pydicom" / variant, gy_per_relative_unit=1.0)
    np.testing.assert_array_equal(other.array, plain.array)
    np.testing.assert_array_equal(other.affine, plain.affine)


@BAD_UID
@pytest.mark.parametrize("variant", ["rtdose_1frame.dcm", "rtdose_expb_1frame.dcm", "rtdose_rle_1frame.dcm"])
def test_single_frame_variants(shared_data: Path, variant: str, caplog: pytest.LogCaptureFixture) -> None:
    plain = read_rtdose(shared_data / "pkg_pydicom" / "rtdose.dcm", gy_per_relative_unit=1.0)
    single = read_rtdose(shared_data / "pkg_pydicom" / variant, gy_per_relative_unit=1.0)
    assert single.shape == (1, 10, 10)
    np.testing.assert_array_equal(single.array, plain.array[:1])
    # No SliceThickness; the thickness comes from the (15-value!) GridFrameOffsetVector.
    np.testing.assert_array_equal(single.affine, plain.affine)
    assert "15 values for 1 frame" in caplog.text


# --------------------------------------------------------------------------- dicompyler breast


def test_breast_dose_grid(breast: Path) -> None:
    dose = read_rtdose(breast)
    assert dose.shape == (98, 129, 194)
    np.testing.assert_allclose(dose.spacing_mm, [3.0, 2.5, 2.5])
    assert dose.metadata["dose_grid_scaling"] == 1.4e-5
    assert dose.array.max() == pytest.approx(1048626 * 1.4e-5)  # 14.68 Gy
    assert dose.metadata["referenced_structure_set_uid"] == "1.2.246.352.71.4.320687012.3190.20090511122144"
    assert dose.metadata["referenced_plan_uid"] == "1.2.246.352.71.5.320687012.24189.20090603083342"


def test_breast_dvhs(breast: Path) -> None:
    dvhs = read_dvhs(breast)
    assert [d.referenced_roi_number for d in dvhs] == [1, 3, 4, 5, 6, 7, 8, 9, 10]
    assert {(d.dvh_type, d.volume_units) for d in dvhs} == {(DvhType.CUMULATIVE, DvhVolumeUnits.CM3)}
    body = dvhs[0]
    assert body.volumes.size == 1470
    np.testing.assert_allclose(body.dose_bin_widths_gy, 0.01)
    assert body.dose_bin_edges_gy[-1] == pytest.approx(14.7)
    assert body.cumulative_volumes[0] == pytest.approx(13944.4228874521)
    # The stated maximum is not in the bins' unit (104.9 against bins ending at 14.7 Gy).
    assert body.maximum_dose_gy == pytest.approx(104.862666666667)


def test_breast_dvhs_agree_with_dicompyler(breast: Path) -> None:
    from dicompylercore import dvh as dicompyler_dvh

    ds = pydicom.dcmread(breast)
    for ours in read_dvhs(ds):
        theirs = dicompyler_dvh.DVH.from_dicom_dvh(ds, ours.referenced_roi_number)
        np.testing.assert_allclose(theirs.bins, ours.dose_bin_edges_gy, rtol=1e-12)
        np.testing.assert_allclose(theirs.counts, ours.cumulative_volumes)


def test_differential_and_natural_dvhs_accumulate() -> None:
    def dvh(kind: DvhType, volumes: list[float]) -> DoseVolumeHistogram:
        return DoseVolumeHistogram((1,), ("INCLUDED",), kind, "PHYSICAL", [0.5, 0.5, 1.0], volumes, "CM3")

    np.testing.assert_allclose(dvh(DvhType.DIFFERENTIAL, [1, 2, 3]).cumulative_volumes, [6, 5, 3])
    np.testing.assert_allclose(dvh(DvhType.NATURAL, [2, 2, 3]).cumulative_volumes, [5, 4, 3])
    np.testing.assert_allclose(dvh(DvhType.CUMULATIVE, [6, 5, 3]).dose_bin_edges_gy, [0, 0.5, 1, 2])


def test_dvhs_round_trip_with_their_structure_set(breast: Path) -> None:
    dvhs = read_dvhs(breast)
    context = StudyContext()
    grid = Volume(np.ones((2, 2, 2)), _axial((2, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    written, _ = _round_trip(grid, context, dvhs=dvhs, referenced_structure_set_uid="1.2.3.4")
    assert written.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    for before, after in zip(dvhs, read_dvhs(written), strict=True):
        assert after.referenced_roi_numbers == before.referenced_roi_numbers
        np.testing.assert_allclose(after.dose_bin_widths_gy, before.dose_bin_widths_gy, rtol=1e-10)
        np.testing.assert_allclose(after.volumes, before.volumes, rtol=1e-10, atol=1e-20)
        assert after.mean_dose_gy == pytest.approx(before.mean_dose_gy)


# --------------------------------------------------------------------------- writing


@settings(max_examples=40, deadline=None)
@given(
    rotation=st.tuples(*[st.floats(-3.2, 3.2)] * 3),
    spacing=st.tuples(*[st.floats(0.3, 5.0)] * 3),
    shape=st.tuples(st.integers(2, 5), st.integers(1, 6), st.integers(1, 6)),
    origin=st.tuples(*[st.floats(-400.0, 400.0)] * 3),
    slice_sign=st.sampled_from([-1.0, 1.0]),
    max_gy=st.floats(1e-3, 1e5),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_any_orientation(
    rotation: tuple[float, float, float],
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    origin: tuple[float, float, float],
    slice_sign: float,
    max_gy: float,
    seed: int,
) -> None:
    axes = Rotation.from_rotvec(rotation).as_matrix()  # columns: row cosine, column cosine, normal
    affine = np.eye(4)
    affine[:3, 0] = slice_sign * spacing[0] * axes[:, 2]
    affine[:3, 1] = spacing[1] * axes[:, 1]
    affine[:3, 2] = spacing[2] * axes[:, 0]
    affine[:3, 3] = origin
    values = np.random.default_rng(seed).uniform(0.0, max_gy, shape)
    context = StudyContext()
    written, dose = _round_trip(Volume(values, affine), context)
    scaling = float(written.DoseGridScaling)
    assert np.max(np.abs(dose.array - values)) <= 0.5 * scaling * (1 + 1e-9)
    assert scaling <= values.max() / (2**32 - 512)  # the maximum uses nearly all of uint32
    np.testing.assert_allclose(dose.affine, affine, atol=1e-4)
    offsets = np.array(written.GridFrameOffsetVector, dtype=float)
    assert offsets[0] == 0.0 and np.all(np.sign(np.diff(offsets)) == slice_sign)
    assert dose.frame_of_reference_uid == context.frame_of_reference_uid


def test_descending_frames_written_as_negative_offsets() -> None:
    context = StudyContext()
    affine = _axial((4, 2, 3), (2.5, 1.0, 0.5), (0.0, 0.0, 30.0), slice_sign=-1.0)
    written, dose = _round_trip(Volume(np.full((4, 2, 3), 7.0), affine), context)
    assert [float(v) for v in written.GridFrameOffsetVector] == [0.0, -2.5, -5.0, -7.5]
    assert [float(v) for v in written.PixelSpacing] == [1.0, 0.5]  # (rows, columns)
    assert written.FrameIncrementPointer == Tag(0x3004, 0x000C)
    np.testing.assert_allclose(dose.affine, affine, atol=1e-12)
    np.testing.assert_allclose(dose.array, 7.0, rtol=1e-9)


def test_single_slice_round_trip_keeps_centres_and_thickness() -> None:
    context = StudyContext()
    affine = _axial((1, 3, 4), (2.0, 1.0, 1.5), (1.0, 2.0, 3.0), slice_sign=-1.0)
    written, dose = _round_trip(Volume(np.full((1, 3, 4), 3.0), affine), context)
    assert written.NumberOfFrames == 1 and float(written.SliceThickness) == 2.0
    # One frame has no direction: the slice axis reads back along +normal.
    np.testing.assert_allclose(dose.affine[:3, 1:], affine[:3, 1:])
    np.testing.assert_allclose(dose.affine[:3, 0], [0.0, 0.0, 2.0])


def test_written_metadata_and_references() -> None:
    context = StudyContext()
    volume = Volume(
        np.ones((2, 2, 2)),
        _axial((2, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
        context.frame_of_reference_uid,
    )
    written, dose = _round_trip(
        volume,
        context,
        series_instance_uid="1.2.3",
        sop_instance_uid="1.2.3.4",
        dose_comment="recomputed from the seeds found",
    )
    assert written.Modality == "RTDOSE" and written.SOPClassUID == pydicom.uid.RTDoseStorage
    assert (written.DoseUnits, written.DoseType, written.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert written.ReferencedRTPlanSequence[0].ReferencedSOPClassUID == pydicom.uid.RTPlanStorage
    assert "ReferencedStructureSetSequence" not in written and "DVHSequence" not in written
    assert written.BitsAllocated == 32 and written.PixelRepresentation == 0
    meta = dose.metadata
    assert (meta["referenced_plan_uid"], meta["series_instance_uid"], meta["sop_instance_uid"]) == (
        PLAN_UID,
        "1.2.3",
        "1.2.3.4",
    )
    assert meta["study_instance_uid"] == context.study_instance_uid
    assert meta["dose_comment"] == "recomputed from the seeds found"


def test_pydicom_reads_our_file_without_warnings() -> None:
    data = to_bytes(_written())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = pydicom.dcmread(__import__("io").BytesIO(data))
        for element in ds.iterall():
            _ = element.value
        assert ds.pixel_array.shape == (4, 3, 5)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


@pytest.mark.parametrize(
    ("orientation", "slice_step"),
    [((1, 0, 0, 0, 1, 0), -3.0), ((1, 0, 0, 0, 1, 0), 2.0), ((-1, 0, 0, 0, 1, 0), 2.0)],
    ids=["HFS-descending", "HFS-ascending", "FFS"],
)
def test_dicompyler_reads_our_dose(
    dicompyler: SimpleNamespace, orientation: tuple[int, ...], slice_step: float
) -> None:
    row_cos, col_cos = np.array(orientation[:3], float), np.array(orientation[3:], float)
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, slice_step]
    affine[:3, 1], affine[:3, 2], affine[:3, 3] = 1.5 * col_cos, 1.25 * row_cos, [-20.0, 40.0, -100.0]
    values = np.random.default_rng(7).uniform(0.0, 150.0, (5, 4, 6))
    written, dose = _round_trip(Volume(values, affine), StudyContext())
    parser = dicompyler.dicomparser.DicomParser(written)
    data = parser.GetDoseData()
    assert data["frames"] == 5 and (data["rows"], data["columns"]) == (4, 6)
    col_x, row_y = data["lut"]
    np.testing.assert_allclose(col_x, dose.index_to_patient([[0, 0, c] for c in range(6)])[:, 0], atol=1e-9)
    np.testing.assert_allclose(row_y, dose.index_to_patient([[0, r, 0] for r in range(4)])[:, 1], atol=1e-9)
    scaling = float(data["dosegridscaling"])
    assert data["dosemax"] * scaling == pytest.approx(values.max(), rel=1e-9)
    for s in range(5):
        z = dose.index_to_patient([s, 0, 0])[0, 2]
        np.testing.assert_allclose(parser.GetDoseGrid(z) * scaling, values[s], atol=scaling)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.with_array(-v.array), "negative"),
        (lambda v: v.with_array(np.where(v.array > 3, np.nan, v.array)), "NaN"),
        (lambda v: Volume(v.array, v.affine, "1.2.3.999"), "frame of reference"),
    ],
    ids=["negative", "nan", "frame"],
)
def test_write_refuses_bad_doses(change: object, message: str) -> None:
    context = StudyContext()
    volume = Volume(np.arange(8.0).reshape(2, 2, 2), _axial((2, 2, 2), (1, 1, 1), (0, 0, 0)))
    with pytest.raises(ValueError, match=message):
        write_rtdose(change(volume), context, referenced_plan_uid=PLAN_UID)  # type: ignore[operator]


def test_write_refuses_what_rt_dose_cannot_say() -> None:
    context = StudyContext()
    affine = _axial((2, 2, 2), (1, 1, 1), (0, 0, 0))
    volume = Volume(np.ones((2, 2, 2)), affine)
    sheared = affine.copy()
    sheared[:3, 0] = [0.0, 0.3, 1.0]  # gantry-tilt-like slice axis
    with pytest.raises(ValueError, match="sheared"):
        write_rtdose(Volume(np.ones((2, 2, 2)), sheared), context, referenced_plan_uid=PLAN_UID)
    with pytest.raises(ValueError, match="Type 1C"):
        write_rtdose(volume, context)
    with pytest.raises(ValueError, match="RT DVH Module"):
        write_rtdose(volume, context, referenced_plan_uid=PLAN_UID, referenced_structure_set_uid="1.2.3")
    with pytest.raises(ValueError, match="BEAM"):
        write_rtdose(volume, context, referenced_plan_uid=PLAN_UID, dose_summation_type="BEAM")


def test_all_zero_dose_writes() -> None:
    written, dose = _round_trip(
        Volume(np.zeros((2, 2, 2)), _axial((2, 2, 2), (1, 1, 1), (0, 0, 0))), StudyContext()
    )
    assert float(written.DoseGridScaling) > 0 and not dose.array.any()


# --------------------------------------------------------------------------- reader refusals


def test_absolute_z_offsets_read_like_relative_ones() -> None:
    relative = _written()
    absolute = copy.deepcopy(relative)
    absolute.GridFrameOffsetVector = [10.0, 12.0, 14.0, 16.0]  # PS3.3 C.8.8.3.2 form (b)
    np.testing.assert_allclose(read_rtdose(absolute).affine, read_rtdose(relative).affine, atol=1e-12)


def test_absolute_offsets_need_an_axial_grid() -> None:
    ds = _written()
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    ds.GridFrameOffsetVector = [10.0, 12.0, 14.0, 16.0]
    with pytest.raises(SeriesGeometryError, match="neither 0"):
        read_rtdose(ds)


@pytest.mark.parametrize(
    ("offsets", "error", "message"),
    [
        ([0.0, 2.0, 4.5, 6.0], SeriesGeometryError, "not evenly spaced"),
        ([0.0, 2.0, 2.0, 4.0], SeriesGeometryError, "monotonic"),
        ([0.0, 2.0, 4.0], SeriesGeometryError, "3 values for 4 frames"),
    ],
)
def test_irregular_frames_are_refused(offsets: list[float], error: type[Exception], message: str) -> None:
    ds = _written()
    ds.GridFrameOffsetVector = offsets
    with pytest.raises(error, match=message):
        read_rtdose(ds)


def test_small_offset_jitter_is_tolerated_as_configured() -> None:
    ds = _written()
    ds.GridFrameOffsetVector = [0.0, 2.005, 4.0, 6.0]
    assert read_rtdose(ds).shape == (4, 3, 5)
    with pytest.raises(SeriesGeometryError, match=r"tolerance 0\.001"):
        read_rtdose(ds, spacing_tolerance_mm=0.001)


def test_other_header_problems_are_named() -> None:
    ds = _written()
    ds.FrameIncrementPointer = Tag(0x0018, 0x1063)
    with pytest.raises(DicomInputError, match="FrameIncrementPointer"):
        read_rtdose(ds)
    ds = _written()
    ds.DoseUnits = "CGY"
    with pytest.raises(DicomInputError, match="neither GY nor RELATIVE"):
        read_rtdose(ds)
    ds = _written()
    del ds.PixelData
    with pytest.raises(DicomInputError, match="no PixelData"):
        read_rtdose(ds)
    ds = _written()
    ds.ImageOrientationPatient = [1, 0, 0, 0.5, 1, 0]
    with pytest.raises(SeriesGeometryError, match="orthogonal unit"):
        read_rtdose(ds)


def test_relative_units_scale_by_the_callers_reference() -> None:
    ds = _written()
    gy = read_rtdose(ds)
    ds.DoseUnits = "RELATIVE"
    np.testing.assert_allclose(read_rtdose(ds, gy_per_relative_unit=2.0).array, 2.0 * gy.array)


def test_source_must_hold_exactly_one_dose(oncentra: Path, breast: Path) -> None:
    with pytest.raises(DicomInputError, match=r"found none among 1 datasets \(modalities: RTPLAN\)"):
        read_rtdose(oncentra / "RTPLAN104.dcm")
    with pytest.raises(DicomInputError, match="found 2") as raised:
        read_rtdose([oncentra / "RTDOSE99.dcm", breast])
    assert len(raised.value.paths) == 2
    assert [d.shape for d in read_rtdoses([oncentra / "RTDOSE99.dcm", breast])] == [
        (77, 69, 85),
        (98, 129, 194),
    ]


def test_dvh_problems_are_named(breast: Path, oncentra: Path) -> None:
    assert read_dvhs(oncentra / "RTDOSE99.dcm") == []
    ds = pydicom.dcmread(breast)
    del ds.DVHSequence[2].DVHDoseScaling
    with pytest.raises(DicomInputError, match="DVHSequence item 2 lacks DVHDoseScaling"):
        read_dvhs(ds)
    ds = pydicom.dcmread(breast)
    ds.DVHSequence[0].DVHData = list(ds.DVHSequence[0].DVHData)[:-1]
    with pytest.raises(DicomInputError, match="2939 values for 1470 bins"):
        read_dvhs(ds)
    ds = pydicom.dcmread(breast)
    ds.DVHSequence[0].DVHVolumeUnits = "LITRES"
    with pytest.raises(DicomInputError, match="LITRES"):
        read_dvhs(ds)
