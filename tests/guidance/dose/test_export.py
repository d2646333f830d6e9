"""RT Dose export with DVHs: round trips, ROI numbering shared with the RT Structure Set writer,
thinning of singular DVHs, and the must-show: dicompyler-core reads our RT Dose + RT Structure
Set and finds our D90."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from guidance.dicomio.dataset import StudyContext, from_bytes, to_bytes
from guidance.dicomio.rtdose import DvhType, DvhVolumeUnits, read_dvhs, read_rtdose
from guidance.dicomio.rtstruct import read_rtstruct, write_rtstruct
from guidance.dose.dvh import cumulative_dvh
from guidance.dose.export import MAX_DVH_BINS, dicom_dvh, export_rtdose, roi_numbers
from guidance.structure import StructureRole
from guidance.volume import Grid, Volume
from tests.guidance.dose import dvh_phantoms as ph

PLAN_UID = "1.2.826.0.1.3680043.8.498.7"


@pytest.fixture(scope="module")
def case() -> tuple[StudyContext, Volume, list]:
    context = StudyContext()
    frame = context.frame_of_reference_uid
    grid = Grid.from_bounds([-20, -20, -18], [20, 20, 18], 1.0, frame)
    structures = [
        ph.sphere(frame=frame, number=0),
        ph.sphere(
            4.0, name="Cord", role=StructureRole.ORGAN_AT_RISK, centre_mm=(0, 14, 0), frame=frame, number=0
        ),
    ]
    return context, ph.point_dose(grid), structures


def test_rtdose_with_dvhs_round_trips(case: tuple[StudyContext, Volume, list]) -> None:
    context, dose, structures = case
    curves = [cumulative_dvh(dose, s) for s in structures]
    rtstruct = write_rtstruct(structures, context)
    ds = export_rtdose(
        dose,
        context,
        plan_uid=PLAN_UID,
        structure_set_uid=rtstruct.SOPInstanceUID,
        dvhs=curves,
        structures=structures,
    )
    back = from_bytes(to_bytes(ds))
    assert back.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rtstruct.SOPInstanceUID
    assert back.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == PLAN_UID
    # uint32 pixels: quantised to DoseGridScaling = max / (2^32 - 256), read back within half a step
    np.testing.assert_allclose(read_rtdose(back).array, dose.array, rtol=0, atol=dose.array.max() / 2**32)
    # Oncentra-like ROI number 0: both writers renumber 1..n, so the DVHs name the right ROIs
    written = {s.name: s.number for s in read_rtstruct(from_bytes(to_bytes(rtstruct))).structures}
    assert written == roi_numbers(structures) == {"GTV": 1, "Cord": 2}
    for curve, dvh in zip(curves, read_dvhs(back), strict=True):
        assert dvh.referenced_roi_number == written[curve.structure_name]
        assert dvh.dvh_type is DvhType.CUMULATIVE and dvh.volume_units is DvhVolumeUnits.CM3
        edges = dvh.dose_bin_edges_gy  # the GTV holds the singular source: its DVH is thinned
        assert edges.size == min(curve.dose_bins_gy.size, MAX_DVH_BINS + 1)
        np.testing.assert_allclose(edges[:1000], curve.dose_bins_gy[:1000], atol=1e-9)
        expected = np.interp(edges[:-1], curve.dose_bins_gy, curve.volume_cc)
        np.testing.assert_allclose(dvh.cumulative_volumes, expected, atol=1e-6)
        assert dvh.maximum_dose_gy == pytest.approx(curve.max_dose_gy)
        assert dvh.mean_dose_gy == pytest.approx(curve.mean_dose_gy)


def test_dicompyler_finds_our_d90_in_our_files(
    case: tuple[StudyContext, Volume, list], dicompyler: SimpleNamespace
) -> None:
    context, dose, structures = case
    curve = cumulative_dvh(dose, structures[0])
    rtstruct = from_bytes(to_bytes(write_rtstruct(structures, context)))
    rtdose = from_bytes(
        to_bytes(
            export_rtdose(
                dose,
                context,
                plan_uid=PLAN_UID,
                structure_set_uid=rtstruct.SOPInstanceUID,
                dvhs=[curve],
                structures=structures,
            )
        )
    )
    theirs = dicompyler.dvhcalc.get_dvh(rtstruct, rtdose, 1, interpolation_resolution=(0.5, 0.5))
    assert theirs.D90.value == pytest.approx(curve.dose_at_percent(90), rel=0.02)
    assert theirs.volume == pytest.approx(curve.total_volume_cc, rel=0.02)
    # dicompyler also reads the DVH we stored: the same curve
    stored = dicompyler.dicomparser.DicomParser(rtdose).GetDVHs()[1]
    assert stored.volume == pytest.approx(curve.total_volume_cc, rel=1e-6)
    assert stored.D90.value == pytest.approx(curve.dose_at_percent(90), abs=0.1)  # to a bin


def test_a_singular_dvh_is_thinned_exactly_at_the_kept_edges(case: tuple[StudyContext, Volume, list]) -> None:
    _, dose, structures = case
    curve = cumulative_dvh(dose, structures[0], bin_width_gy=0.01)  # max 13789 Gy: 1.4 million bins
    assert curve.dose_bins_gy.size > 1_000_000
    dvh = dicom_dvh(curve, 1)
    assert dvh.volumes.size <= MAX_DVH_BINS
    edges = dvh.dose_bin_edges_gy
    assert edges[-1] == pytest.approx(curve.dose_bins_gy[-1])
    np.testing.assert_allclose(
        dvh.cumulative_volumes, np.interp(edges[:-1], curve.dose_bins_gy, curve.volume_cc), atol=1e-6
    )
    np.testing.assert_allclose(np.diff(edges)[:100], 0.01)  # low-dose bins kept as computed


def test_export_refuses_what_it_cannot_reference(case: tuple[StudyContext, Volume, list]) -> None:
    context, dose, structures = case
    curve = cumulative_dvh(dose, structures[0])
    with pytest.raises(ValueError, match="structure_set_uid"):
        export_rtdose(dose, context, plan_uid=PLAN_UID, dvhs=[curve])
    with pytest.raises(ValueError, match="ROI number 0"):
        export_rtdose(dose, context, plan_uid=PLAN_UID, structure_set_uid="1.2.3", dvhs=[curve])
    with pytest.raises(ValueError, match="no structure of that name"):
        export_rtdose(
            dose,
            context,
            plan_uid=PLAN_UID,
            structure_set_uid="1.2.3",
            dvhs=[curve],
            structures=structures[1:],
        )
    with pytest.raises(ValueError, match="distinct"):
        roi_numbers([structures[0], structures[0]])
    plain = from_bytes(to_bytes(export_rtdose(dose, context, plan_uid=PLAN_UID)))
    assert "DVHSequence" not in plain and "ReferencedStructureSetSequence" not in plain


def test_oncentra_dose_and_dvhs_reexported(shared_data: Path, dicompyler: SimpleNamespace) -> None:
    folder = shared_data / "brachy_ldr_i125_oncentra_mcbrachy"
    dose = read_rtdose(folder / "RTDOSE99.dcm")
    structure_set = read_rtstruct(folder / "RTSTRUCT109.dcm")
    kept = [s for s in structure_set.structures if not s.is_empty]
    curves = [cumulative_dvh(dose, s, allow_outside=True) for s in kept]
    context = StudyContext(frame_of_reference_uid=dose.frame_of_reference_uid)
    ds = from_bytes(
        to_bytes(
            export_rtdose(
                dose,
                context,
                plan_uid=PLAN_UID,
                structure_set_uid=structure_set.sop_instance_uid,
                dvhs=curves,
                structures=kept,
            )
        )
    )
    dvhs = read_dvhs(ds)
    assert [d.referenced_roi_number for d in dvhs] == [1, 2, 3, 4, 5]  # target's ROI Number 0 renumbered
    parsed = dicompyler.dicomparser.DicomParser(ds).GetDVHs()
    assert parsed[1].D90.value == pytest.approx(curves[0].dose_at_percent(90), abs=0.1)  # to a bin
