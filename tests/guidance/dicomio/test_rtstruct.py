"""RT Structure Set reading (real files from five planning systems) and writing (round trips)."""

from __future__ import annotations

import logging
import string
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pydicom.dicomio
import pydicom.pixels.utils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from guidance.dicomio.dataset import StudyContext, from_bytes, to_bytes
from guidance.dicomio.errors import DicomInputError
from guidance.dicomio.rtstruct import StructureSet, read_rtstruct, structure_from_mask, write_rtstruct
from guidance.rasterise import structure_fraction, structure_mask, structure_volume_cc
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, affine_from_dicom

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ct_headers(folder: Path, pattern: str = "*") -> list[Dataset]:
    """CT headers of a folder, sorted along the slice normal."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob(pattern))]
    headers = [h for h in headers if h.Modality == "CT"]
    cosines = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(cosines[:3], cosines[3:])
    return sorted(headers, key=lambda h: float(normal @ np.asarray(h.ImagePositionPatient, dtype=float)))


def ct_grid(headers: list[Dataset]) -> Grid:
    """The grid of an evenly spaced CT series, from its headers (PS3.3 C.7.6.2.1.1)."""
    positions = np.array([h.ImagePositionPatient for h in headers], dtype=float)
    steps = np.diff(positions, axis=0)
    assert np.allclose(steps, steps[0], atol=1e-3)  # evenly spaced, or this test data changed
    first = headers[0]
    affine = affine_from_dicom(positions[0], first.ImageOrientationPatient, first.PixelSpacing, steps[0])
    return Grid((len(headers), int(first.Rows), int(first.Columns)), affine, str(first.FrameOfReferenceUID))


def context_of(ct: Dataset) -> StudyContext:
    return StudyContext(
        patient_id=str(ct.PatientID),
        patient_name=str(ct.PatientName),
        study_instance_uid=str(ct.StudyInstanceUID),
        frame_of_reference_uid=str(ct.FrameOfReferenceUID),
    )


def polygon_area_mm2(contour: NDArray[np.float64]) -> float:
    """Area of a planar polygon in 3-D (Newell), independent of the code under test."""
    centred = contour - contour.mean(axis=0)
    return float(np.linalg.norm(np.cross(centred, np.roll(centred, -1, axis=0)).sum(axis=0)) / 2)


# --- real structure sets -----------------------------------------------------------------


def test_oncentra_ldr_prostate_has_nine_rois_four_of_them_empty(shared_data: Path) -> None:
    ss = read_rtstruct(shared_data / "brachy_ldr_i125_oncentra_mcbrachy" / "RTSTRUCT109.dcm")
    assert ss.names == (
        "target", "dil", "urethra", "bladder", "rectum", "bladder_neck",
        "BODY", "evit_rectum", "evit_urethra",
    )  # fmt: skip
    assert [s.name for s in ss.structures if s.is_empty] == ["dil", "BODY", "evit_rectum", "evit_urethra"]
    assert [s.number for s in ss.structures] == list(range(9))  # Oncentra numbers ROIs from 0
    target = ss.structure("target")
    assert target.role is StructureRole.TARGET and target.colour_rgb == (255, 0, 0)
    assert len(target.contours_mm) == 13
    assert np.allclose(np.diff(np.unique(target.points_mm[:, 2])), 2.0)  # 2 mm ultrasound steps
    # Typed RTROIInterpretedType ORGAN by the planning system; the name makes it the outline.
    assert ss.structure("BODY").role is StructureRole.EXTERNAL
    assert ss.label == "OCP RTS v4.2.26" and len(ss.referenced_image_uids) == 99  # only CT0.dcm is present
    assert ss.frame_of_reference_uid == "1.2.826.0.1.3680043.10.424.1065521295955625296453884332443551799"
    assert all(s.frame_of_reference_uid == ss.frame_of_reference_uid for s in ss.structures)


def test_mim_breast_implant_has_point_rois_and_references_its_ct(shared_data: Path) -> None:
    folder = shared_data / "brachy_ldr_pd103_mim_ebgui"
    ss = read_rtstruct(folder / "RTSTRUCT.dcm")
    points = [s for s in ss.structures if s.role is StructureRole.POINT]
    assert [s.name for s in points] == [
        "Isocenter", "nipple", "needle entry", "table (needle entry)", "ct origin", "lat setup",
        "table (lat setup)", "midline",
    ]  # fmt: skip
    assert all(len(s.contours_mm) == 1 and s.contours_mm[0].shape == (1, 3) for s in points)
    assert ss.structure("Body").role is StructureRole.EXTERNAL
    assert (
        ss.structure("Skin").role is StructureRole.ORGAN_AT_RISK
    )  # no interpreted type, not an outline name
    assert len(ss.structure("CTV").contours_mm) == 12 and ss.structure("nipple").colour_rgb == (255, 255, 0)
    headers = ct_headers(folder / "CT")
    assert len(headers) == 40
    assert ss.referenced_series_uid == headers[0].SeriesInstanceUID
    assert set(ss.referenced_image_uids) == {h.SOPInstanceUID for h in headers}
    with pytest.raises(ValueError, match="'Isocenter' is a POINT structure"):
        structure_mask(ss.structure("Isocenter"), ct_grid(headers))


def test_varian_neck_structures_read_from_a_folder_with_their_ct(shared_data: Path) -> None:
    folder = shared_data / "hn_neck_vhm_dicomrttool"
    ss = read_rtstruct(folder)  # four CT files and the structure set
    assert [(s.number, s.name, s.role) for s in ss.structures] == [
        (13, "BODY", StructureRole.EXTERNAL),
        (23, "SpinalCord", StructureRole.ORGAN_AT_RISK),
    ]
    assert [s.colour_rgb for s in ss.structures] == [(0, 255, 0), (0, 64, 128)]
    assert [len(s.contours_mm) for s in ss.structures] == [4, 4]
    headers = ct_headers(folder, "CT_*")
    assert set(ss.referenced_image_uids) == {h.SOPInstanceUID for h in headers}
    assert ss.source.endswith("RS_Body_SpinalCord.dcm")
    # The cord lies inside the body on every slice.
    grid = ct_grid(headers)
    body, cord = (structure_mask(s, grid) for s in ss.structures)
    assert cord.any() and not np.any(cord & ~body)


def test_variseed_rectum_keeps_its_long_contour_stored_as_un(shared_data: Path) -> None:
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):  # VariSeed wrote UIDs with leading zeros
        ss = read_rtstruct(shared_data / "deb_octave_dicom" / "rtstruct.dcm")
    assert ss.names == ("Rectum", "Prostate irm", "Urethra", "Prostate")
    assert [s.number for s in ss.structures] == [2, 3, 1, 0]
    rectum = ss.structure("Rectum")
    sizes = sorted(len(c) for c in rectum.contours_mm)
    assert sizes == [16] * 7 + [3329]  # the 3329-point contour exceeds 64 KB: Explicit VR stored it as UN
    long = max(rectum.contours_mm, key=len)
    assert np.all(long[:, 2] == -35.0) and 45.9 < long[:, 0].min() < 46.0  # x (not z) is near +46
    heights = sorted({float(c[0, 2]) for c in rectum.contours_mm})
    assert heights == [-45.0, -40.0, -35.0, -30.0, -25.0, -20.0, -15.0, -10.0]  # it fills the -35 mm plane
    assert ss.structure("Prostate").role is StructureRole.ORGAN_AT_RISK  # VariSeed typed it ORGAN


def test_dicompyler_breast_plan_structures(shared_data: Path) -> None:
    ss = read_rtstruct(shared_data / "rt_breast_dicompyler" / "rtss.dcm")
    assert len(ss.structures) == 10 and ss.label == "CT_1"
    assert [s.name for s in ss.structures if s.is_empty] == ["Areola"]
    assert ss.structure("BODY").role is StructureRole.EXTERNAL
    assert ss.structure("Breast").role is StructureRole.TARGET
    assert (
        ss.structure("Lt Lung").role is StructureRole.ORGAN_AT_RISK
        and len(ss.structure("Lt Lung").contours_mm) == 165
    )


@pytest.mark.parametrize(("patient", "contours"), [("pat_1", 26), ("pat_2", 7), ("pat_3", 12), ("pat_4", 23)])
def test_lung_phantom_gtv_per_series(shared_data: Path, patient: str, contours: int) -> None:
    folder = shared_data / "rt_lung_radiomics_phantom_pycerr" / patient
    ss = read_rtstruct(next(folder.glob("DCM_RS_*.dcm")))
    (gtv,) = ss.structures
    assert gtv.name == "GTV-1" and gtv.role is StructureRole.TARGET and len(gtv.contours_mm) == contours
    ct = pydicom.dcmread(next(folder.glob("DCM_IMG_*.dcm")), stop_before_pixels=True)
    assert ss.referenced_series_uid == ct.SeriesInstanceUID
    assert gtv.frame_of_reference_uid == ct.FrameOfReferenceUID


def test_rt_utils_structure_sets_with_broken_references_read(shared_data: Path) -> None:
    folder = shared_data / "odd_rtutils" / "mock_data"
    present = {
        pydicom.dcmread(folder / f"ct_{i}.dcm", stop_before_pixels=True).SOPInstanceUID for i in (1, 2)
    }
    invalid = read_rtstruct(folder / "invalid_reference_rt.dcm")
    assert invalid.names == ("ROI-1", "ROI-2", "ROI-3", "ROI-4")
    assert all(len(s.contours_mm) == 3 for s in invalid.structures)
    assert len(invalid.referenced_image_uids) == 5 and len(set(invalid.referenced_image_uids) - present) == 3
    missing = read_rtstruct(folder / "non_existent_reference_rt.dcm")
    assert missing.referenced_series_uid == "" and missing.referenced_image_uids == ()
    assert len(read_rtstruct(shared_data / "odd_rtutils" / "empty" / "dummy_rt.dcm").structures) == 4
    # rt.dcm is in another frame of reference than the CT beside it: rasterising onto it is refused.
    other = read_rtstruct(folder / "rt.dcm")
    ct_grid_ = ct_grid(ct_headers(folder, "ct_*.dcm"))
    with pytest.raises(ValueError, match="frame of reference"):
        structure_mask(other.structures[0], ct_grid_)


def test_pydicom_test_structure_set(shared_data: Path) -> None:
    ss = read_rtstruct(shared_data / "pkg_pydicom" / "rtstruct.dcm")
    assert [(s.name, s.role, len(s.contours_mm)) for s in ss.structures] == [
        ("patient", StructureRole.EXTERNAL, 3),
        ("Isocenter 1", StructureRole.POINT, 1),
        ("Isocenter 2", StructureRole.POINT, 1),
    ]
    assert ss.label == "sep30"


def test_hdr_structure_sets_skip_open_contours_with_a_warning(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = shared_data / "brachy_hdr_pdr_varian_pytg43"
    with caplog.at_level(logging.WARNING, logger="guidance.dicomio.rtstruct"):
        hdr = read_rtstruct(folder / "HDR" / "RS.HDR.dcm")
    skipped = [r for r in caplog.records if "OPEN_" in r.getMessage()]
    assert len(skipped) == 14 and "'Applicator1'" in skipped[0].getMessage()
    assert len(hdr.structures) == 17
    assert (
        hdr.structure("Water").role is StructureRole.OTHER and len(hdr.structure("Water").contours_mm) == 99
    )
    assert (
        hdr.structure("HRCTV").role is StructureRole.TARGET and len(hdr.structure("HRCTV").contours_mm) == 27
    )
    assert hdr.structure("tandem").is_empty and hdr.structure("1.5cm").role is StructureRole.POINT
    pdr = read_rtstruct(folder / "PDR" / "RS.PDR.dcm")
    assert (
        pdr.structure("ctv").role is StructureRole.TARGET
        and pdr.structure("BODY").role is StructureRole.EXTERNAL
    )
    oncentra = read_rtstruct(
        shared_data / "brachy_hdr_oncentra_mcbrachy" / "HDR_prostate_oncentra_rtstruct.dcm"
    )
    assert oncentra.names == ("Target", "Rectum", "Urethra", "Bladder", "PenileBulb", "ColVesical")
    assert len(oncentra.structure("Target").contours_mm) == 109  # 0.5 mm ultrasound steps


def test_oblique_contours_of_a_rotated_ct_rasterise_to_their_own_volume(shared_data: Path) -> None:
    ss = read_rtstruct(shared_data / "brachy_hdr_pdr_varian_pytg43" / "rotated" / "RS.dcm")
    ctv = ss.structure("HR-CTV")
    areas = [polygon_area_mm2(c) for c in ctv.contours_mm]
    expected_cc = sum(areas) * 2.0 / 1000  # 21 planes 2 mm apart along a tilted normal, no holes
    bounds = ctv.bounds_mm()
    grid = Grid.from_bounds(
        bounds[0] - 3, bounds[1] + 3, 1.0, ctv.frame_of_reference_uid
    )  # axial: oblique to it
    assert structure_volume_cc(ctv, grid, subsamples=2) == pytest.approx(expected_cc, rel=0.01)


# --- a real structure on its own CT grid ---------------------------------------------------


def test_lung_gtv_on_its_ct_grid_matches_independent_references(shared_data: Path) -> None:
    from matplotlib.path import Path as PolygonPath  # an independent point-in-polygon test

    folder = shared_data / "rt_lung_radiomics_phantom_pycerr" / "pat_3"
    headers = ct_headers(folder, "DCM_IMG_*.dcm")
    grid = ct_grid(headers)
    (gtv,) = read_rtstruct(next(folder.glob("DCM_RS_*.dcm"))).structures
    # Volume: shoelace area x 3 mm slab per plane (one contour per plane).
    expected_cc = sum(polygon_area_mm2(c) for c in gtv.contours_mm) * 3.0 / 1000
    fraction = structure_fraction(gtv, grid)
    assert float(fraction.sum()) * grid.voxel_volume_cc == pytest.approx(expected_cc, rel=0.005)
    # Mask: voxel centres inside each contour, slice by slice, by matplotlib.
    mask = structure_mask(gtv, grid)
    expected = np.zeros(grid.shape, dtype=bool)
    centres = grid.voxel_centres_mm()
    for contour in gtv.contours_mm:
        (s,) = np.nonzero(np.isclose(centres[:, 0, 0, 2], contour[0, 2]))[0]
        inside = PolygonPath(contour[:, :2]).contains_points(centres[s, :, :, :2].reshape(-1, 2))
        expected[s] = inside.reshape(grid.shape[1:])
    assert int(np.sum(mask != expected)) == 0
    assert expected.sum() > 300


# --- errors --------------------------------------------------------------------------------


def test_source_without_or_with_several_structure_sets_is_an_error(shared_data: Path) -> None:
    neck = shared_data / "hn_neck_vhm_dicomrttool"
    with pytest.raises(DicomInputError, match=r"found 0 among 4 datasets \(4 CT\)"):
        read_rtstruct(sorted(neck.glob("CT_*.dcm")))
    with pytest.raises(DicomInputError, match=r"found 3 among 5 datasets \(2 CT, 3 RTSTRUCT\)") as error:
        read_rtstruct(shared_data / "odd_rtutils" / "mock_data")
    assert len(error.value.paths) == 3 and all("_rt" in p or p.endswith("rt.dcm") for p in error.value.paths)


def test_point_count_mismatch_names_the_roi(shared_data: Path) -> None:
    ds = pydicom.dcmread(shared_data / "hn_neck_vhm_dicomrttool" / "RS_Body_SpinalCord.dcm")
    contour = ds.ROIContourSequence[1].ContourSequence[2]
    contour.NumberOfContourPoints = int(contour.NumberOfContourPoints) + 1
    with pytest.raises(DicomInputError, match=r"ROI 23 'SpinalCord': contour 2 has NumberOfContourPoints"):
        read_rtstruct(ds)
    contour.ContourGeometricType = "CURVED"
    with pytest.raises(DicomInputError, match="unknown ContourGeometricType 'CURVED'"):
        read_rtstruct(ds)


# --- writing -------------------------------------------------------------------------------


coordinates = st.floats(-400, 400)
points = st.tuples(coordinates, coordinates, coordinates).map(lambda p: np.array([p]))
polygons = st.tuples(
    st.lists(st.tuples(coordinates, coordinates), min_size=3, max_size=30), st.floats(-900, 900)
).map(lambda xy_z: np.column_stack([np.array(xy_z[0]), np.full(len(xy_z[0]), xy_z[1])]))
names = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=16)


@st.composite
def structures(draw: st.DrawFn) -> list[Structure]:
    """1-5 structures of every role: points, or 0-3 polygons at random heights; numbered or not."""
    numbered = draw(st.booleans())
    result = []
    for i, name in enumerate(draw(st.lists(names, min_size=1, max_size=5))):
        role = draw(st.sampled_from(StructureRole))
        contours = draw(
            st.lists(points, min_size=1, max_size=3)
            if role is StructureRole.POINT
            else st.lists(polygons, max_size=3)
        )
        colour = draw(st.none() | st.tuples(*[st.integers(0, 255)] * 3))
        number = 10 * (i + 1) if numbered else 0
        result.append(Structure(name, role, tuple(contours), number=number, colour_rgb=colour))
    return result


@SETTINGS
@given(written=structures())
def test_write_read_round_trip(written: list[Structure]) -> None:
    context = StudyContext()
    ds = write_rtstruct(written, context, label="round trip")
    ss = read_rtstruct(from_bytes(to_bytes(ds)))
    assert isinstance(ss, StructureSet) and ss.label == "round trip"
    assert ss.frame_of_reference_uid == context.frame_of_reference_uid
    assert ss.study_instance_uid == context.study_instance_uid and ss.sop_instance_uid == ds.SOPInstanceUID
    assert len(ss.structures) == len(written)
    for before, after in zip(written, ss.structures, strict=True):
        assert (after.name, after.role, after.colour_rgb) == (before.name, before.role, before.colour_rgb)
        assert after.number == (before.number or after.number)
        assert after.frame_of_reference_uid == context.frame_of_reference_uid
        assert len(after.contours_mm) == len(before.contours_mm)
        for a, b in zip(after.contours_mm, before.contours_mm, strict=True):
            assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-3)


def test_written_file_is_strictly_valid_and_read_by_dicompyler(
    shared_data: Path, dicompyler: SimpleNamespace
) -> None:
    neck = read_rtstruct(shared_data / "hn_neck_vhm_dicomrttool" / "RS_Body_SpinalCord.dcm").structures
    frame = neck[0].frame_of_reference_uid
    seed = Structure("seed 1", StructureRole.POINT, (np.array([[1.5, -20.25, 3.0]]),), frame, number=30)
    written = (*neck, seed)
    context = StudyContext(frame_of_reference_uid=frame)
    data = to_bytes(write_rtstruct(written, context))
    with config.strict_reading():  # invalid values raise; pytest turns warnings into errors
        ds = from_bytes(data)
        for element in ds.iterall():
            _ = element.value
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and ds.Modality == "RTSTRUCT"
    parser = dicompyler.dicomparser.DicomParser(ds)
    found = parser.GetStructures()
    assert [found[n]["name"] for n in sorted(found)] == [s.name for s in written]
    for structure in written:
        planes = parser.GetStructureCoordinates(structure.number)
        counts = sorted(p["num_points"] for plane in planes.values() for p in plane)
        assert counts == sorted(len(c) for c in structure.contours_mm)


def test_contours_reference_the_ct_slice_they_lie_on(shared_data: Path) -> None:
    headers = ct_headers(shared_data / "hn_neck_vhm_dicomrttool", "CT_*")
    grid = ct_grid(headers)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[1:, 200:260, 230:300] = True
    mask[2, 220:240, 250:270] = False  # a hole: two contours on that slice
    target = structure_from_mask(mask, grid, "GTV", StructureRole.TARGET, colour_rgb=(255, 0, 0))
    assert target.frame_of_reference_uid == grid.frame_of_reference_uid
    ds = write_rtstruct([target], context_of(headers[0]), referenced_ct=headers)
    series = (
        ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    )
    assert series.SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == [
        h.SOPInstanceUID for h in headers
    ]
    by_slice = {h.SOPInstanceUID: s for s, h in enumerate(headers)}
    referenced = [
        by_slice[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
        for c in ds.ROIContourSequence[0].ContourSequence
    ]
    assert referenced == [1, 2, 2, 3]
    ss = read_rtstruct(from_bytes(to_bytes(ds)))
    assert np.array_equal(structure_mask(ss.structure("GTV"), grid), mask)
    assert ss.referenced_series_uid == headers[0].SeriesInstanceUID


def test_contour_data_over_64_kb_is_written_implicit_vr() -> None:
    t = np.linspace(0, 2 * np.pi, 3000, endpoint=False)
    ring = np.column_stack([123.4567 * np.cos(t), 123.4567 * np.sin(t), np.full(3000, -17.25)])
    ds = write_rtstruct([Structure("BODY", StructureRole.EXTERNAL, (ring,))], StudyContext())
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    back = from_bytes(to_bytes(ds))
    assert back.ROIContourSequence[0].ContourSequence[0]["ContourData"].VR == "DS"
    assert np.allclose(read_rtstruct(back).structures[0].contours_mm[0], ring, atol=1e-4)


def test_interpreted_types_follow_roles_and_names() -> None:
    square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0.0]])
    written = [
        Structure("GTV", StructureRole.TARGET, (square,)),
        Structure("PTV_5mm", StructureRole.TARGET, (square,)),
        Structure("ctv high", StructureRole.TARGET, (square,)),
        Structure("Cord", StructureRole.ORGAN_AT_RISK, (square,)),
        Structure("Skin", StructureRole.EXTERNAL, (square,)),
        Structure("seed 1", StructureRole.POINT, (square[:1],)),
        Structure("ring", StructureRole.OTHER, ()),
    ]
    ds = write_rtstruct(written, StudyContext())
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == [
        "GTV", "PTV", "CTV", "ORGAN", "EXTERNAL", "MARKER", "CONTROL",
    ]  # fmt: skip
    assert [c.ContourSequence[0].ContourGeometricType for c in ds.ROIContourSequence[:6]] == [
        "CLOSED_PLANAR"
    ] * 5 + ["POINT"]
    assert "ContourSequence" not in ds.ROIContourSequence[6]
    assert [r.ROINumber for r in ds.StructureSetROISequence] == list(range(1, 8))


def test_writer_references_and_refuses_inconsistent_input(shared_data: Path) -> None:
    context = StudyContext()
    square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0.0]])
    elsewhere = Structure("GTV", StructureRole.TARGET, (square,), frame_of_reference_uid="1.2.3")
    with pytest.raises(ValueError, match=r"frame of reference '1\.2\.3'"):
        write_rtstruct([elsewhere], context)
    with pytest.raises(ValueError, match="POINT structure 'seeds'"):
        write_rtstruct([Structure("seeds", StructureRole.POINT, (square,))], context)
    headers = ct_headers(shared_data / "hn_neck_vhm_dicomrttool", "CT_*")
    with pytest.raises(ValueError, match="build the StudyContext from the CT"):
        write_rtstruct([], context, referenced_ct=headers)
    by_uid = write_rtstruct([], context, referenced_series_uid="1.2.3.4")
    series = (
        by_uid.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence
    )
    assert series[0].SeriesInstanceUID == "1.2.3.4" and "ContourImageSequence" not in series[0]
    assert read_rtstruct(from_bytes(to_bytes(by_uid))).referenced_series_uid == "1.2.3.4"
    with pytest.raises(ValueError, match="is not the CT's series"):
        write_rtstruct([], context_of(headers[0]), referenced_ct=headers, referenced_series_uid="1.2.3")
