"""RT Plan of permanent seed implants: real plans, refusals, edited variants, round trips."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from guidance.dicomio.dataset import StudyContext, from_bytes, to_bytes
from guidance.dicomio.errors import DicomInputError, UnsupportedPlanError
from guidance.dicomio.rtplan import RT_PLAN_STORAGE, read_rtplan
from guidance.dicomio.rtplan_writer import write_rtplan
from guidance.plan import Isotope, Needle, Plan, Seed, SourceModel
from guidance.structure import Structure, StructureRole

ONCENTRA = "brachy_ldr_i125_oncentra_mcbrachy/RTPLAN104.dcm"
MIM = "brachy_ldr_pd103_mim_ebgui/RTPLAN.dcm"
ONCENTRA_FRAME = "1.2.826.0.1.3680043.10.424.1065521295955625296453884332443551799"
MODELS = {
    "6711": SourceModel("6711", Isotope.I125, 59.40, "GE Healthcare"),
    "IAI-125A": SourceModel("IAI-125A", Isotope.I125, 59.40, "IsoAid"),
    "TheraSeed 200": SourceModel("TheraSeed 200", Isotope.PD103, 16.991, "Theragenics"),
}


@pytest.fixture
def oncentra(shared_data: Path) -> Dataset:
    """A fresh copy of the Oncentra plan, to edit."""
    return pydicom.dcmread(shared_data / ONCENTRA)


def _channels(ds: Dataset) -> list[Dataset]:
    return [ch for setup in ds.ApplicationSetupSequence for ch in setup.get("ChannelSequence", [])]


@contextlib.contextmanager
def _strict_pydicom() -> Iterator[None]:
    """pydicom raising on every invalid value it reads or writes, warnings as errors."""
    settings_ = pydicom.config.settings
    saved = settings_.reading_validation_mode, settings_.writing_validation_mode
    settings_.reading_validation_mode = settings_.writing_validation_mode = pydicom.config.RAISE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
    finally:
        settings_.reading_validation_mode, settings_.writing_validation_mode = saved


def _round_trip(plan: Plan, context: StudyContext, **kwargs: str) -> tuple[Dataset, Plan]:
    with _strict_pydicom():
        written = from_bytes(to_bytes(write_rtplan(plan, context, **kwargs)))
        for element in written.iterall():
            _ = element.value  # every value decodes under RAISE
    return written, read_rtplan(written)


# ----------------------------------------------------------------------------- real plans


def test_oncentra_i125_plan_known_values(shared_data: Path, oncentra: Dataset) -> None:
    plan = read_rtplan(shared_data / ONCENTRA)
    assert len(plan.seeds) == 36
    assert plan.needles == ()  # one seed per channel, control points 1 mm apart: no needle
    assert plan.isotopes == {Isotope.I125}
    assert list(plan.sources) == ["Nucletron B.V. I-125"]  # no SourceModelID: manufacturer + isotope
    model = plan.sources["Nucletron B.V. I-125"]
    assert model.half_life_days == pytest.approx(59.4, abs=1e-5)
    np.testing.assert_array_equal(plan.seed_strengths_u, np.full(36, 0.75205701589584))
    assert plan.seed_strengths_u[0] == pytest.approx(0.752, abs=1e-3)
    assert plan.strength_reference_datetime == dt.datetime(2017, 3, 2, 12, 0)
    assert plan.prescription_gy == 144.0  # BrachyApplicationSetupDose, one fraction
    assert plan.frame_of_reference_uid == ONCENTRA_FRAME
    assert plan.structure_set_uid == "1.2.826.0.1.3680043.10.424.6377455315485968017200746515229809227"
    assert plan.sop_instance_uid == oncentra.SOPInstanceUID
    assert (plan.label, plan.treatment_type) == ("Onc Brachy Plan", "LDR")
    assert np.all(np.isnan(plan.seed_directions))
    # The seeds are the dwells of the raw control points: 36 channels x 4 control
    # points, weight 0 -> 100 at the first position; the 1 mm offset pair is no seed.
    channels = _channels(oncentra)
    assert (len(channels), sum(len(ch.BrachyControlPointSequence) for ch in channels)) == (36, 144)
    # 37 setups: one template-only setup without channels; a "---" placeholder source unused.
    assert len(oncentra.ApplicationSetupSequence) == 37
    assert [
        s.ApplicationSetupType for s in oncentra.ApplicationSetupSequence if "ChannelSequence" not in s
    ] == ["UNDEFINED"]
    assert oncentra.SourceSequence[1].SourceIsotopeName == "---"
    raw = np.array(
        [[float(v) for v in ch.BrachyControlPointSequence[1].ControlPoint3DPosition] for ch in channels]
    )
    np.testing.assert_allclose(plan.seed_positions_mm, raw, atol=1e-9)
    np.testing.assert_allclose(
        plan.seed_positions_mm[0], [4.41437557941849, 102.992799413546, -741.09951600424]
    )
    to_a_seed = np.linalg.norm(
        plan.seed_positions_mm - [28.0305446020046, 98.3547230259626, -733.27445632447], axis=1
    )
    assert np.min(to_a_seed) < 1e-9
    # The second control point pair (1 mm along +z, weight 0) is no seed.
    offset_pair = [4.41437557941849, 102.992799413546, -740.09951600424]
    assert np.min(np.linalg.norm(plan.seed_positions_mm - offset_pair, axis=1)) > 0.9
    # No duplicates: a post-implant plan, seeds as reconstructed, the closest two 1.45 mm apart.
    distances = np.linalg.norm(plan.seed_positions_mm[:, None] - plan.seed_positions_mm[None], axis=2)
    assert np.min(distances + np.eye(36) * 1e9) == pytest.approx(1.4517, abs=1e-4)


def test_mim_pd103_grid_known_values(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = pydicom.dcmread(shared_data / MIM)
    with caplog.at_level(logging.WARNING, logger="guidance.dicomio.rtplan"):
        plan = read_rtplan(shared_data / MIM)
    assert "FrameOfReferenceUID" in caplog.text
    assert plan.frame_of_reference_uid == ""
    assert len(plan.seeds) == 27 and plan.needles == ()
    assert plan.isotopes == {Isotope.PD103}
    assert plan.treatment_type == "MANUAL"
    assert raw.SourceSequence[0].SourceType == "Line"  # not a defined term: read anyway
    assert plan.sources["Pd-103"].half_life_days == pytest.approx(16.991, abs=1e-3)
    np.testing.assert_array_equal(plan.seed_strengths_u, np.full(27, 2.5))
    assert plan.strength_reference_datetime is None  # MIM writes the date empty
    assert plan.prescription_gy is None
    assert plan.structure_set_uid == "2.16.840.1.114362.1.11890052.25401198076.629448096.427.32"
    # 3 x 3 x 3 grid, 10 mm pitch along each axis.
    positions = plan.seed_positions_mm
    for axis in range(3):
        levels = np.unique(np.round(positions[:, axis], 2))
        assert len(levels) == 3
        np.testing.assert_allclose(np.diff(levels), 10.0, atol=1e-3)
    assert len({tuple(np.round(p, 2)) for p in positions}) == 27
    # Orientation from ControlPointOrientation (MIM writes [-0, -0, 1]).
    np.testing.assert_allclose(plan.seed_directions, np.tile([0.0, 0.0, 1.0], (27, 1)))


@pytest.mark.parametrize(
    ("relative", "kind"),
    [("brachy_hdr_pdr_varian_pytg43/HDR/RP.HDR.dcm", "HDR"),
     ("brachy_hdr_pdr_varian_pytg43/PDR/RP.PDR.dcm", "PDR"),
     ("brachy_hdr_pdr_varian_pytg43/rotated/RP.dcm", "PDR"),
     ("brachy_hdr_oncentra_mcbrachy/HDR_gyn_otp46_rtplan.dcm", "HDR"),
     ("brachy_hdr_oncentra_mcbrachy/HDR_prostate_oncentra_rtplan.dcm", "HDR")],
)  # fmt: skip
def test_hdr_and_pdr_plans_are_refused(shared_data: Path, relative: str, kind: str) -> None:
    with pytest.raises(
        UnsupportedPlanError, match=f"^{kind} plan: seedguide computes permanent seed implants only"
    ):
        read_rtplan(shared_data / relative)


def test_external_beam_and_truncated_plans_are_refused(shared_data: Path) -> None:
    with pytest.raises(UnsupportedPlanError, match="external-beam plan"):
        read_rtplan(shared_data / "pkg_pydicom/rtplan.dcm")
    with pytest.raises(
        DicomInputError, match=r"file is truncated: BeamSequence .* declares 976 bytes, only 711"
    ):
        read_rtplan(shared_data / "pkg_pydicom/rtplan_truncated.dcm")


def test_exactly_one_plan_in_source(shared_data: Path) -> None:
    folder = shared_data / "brachy_ldr_i125_oncentra_mcbrachy"  # CT, RTDOSE, RTPLAN, RTSTRUCT
    assert len(read_rtplan(folder).seeds) == 36
    with pytest.raises(DicomInputError, match=r"no RT Plan .* found 1 x CT, 1 x RTSTRUCT"):
        read_rtplan([folder / "CT0.dcm", folder / "RTSTRUCT109.dcm"])
    with pytest.raises(DicomInputError, match=r"2 RT Plans in source.*Onc Brachy Plan.*3by3by3seeds_Pd1"):
        read_rtplan([shared_data / ONCENTRA, shared_data / MIM])


def test_structures_are_attached(oncentra: Dataset) -> None:
    gtv = Structure("GTV", StructureRole.TARGET, (np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0.0]]),))
    plan = read_rtplan(oncentra, structures=[gtv])
    assert plan.structures == (gtv,) and plan.structure("gtv") is gtv


# ----------------------------------------------------------------------------- edited variants


def test_missing_frame_of_reference_is_empty_with_a_warning(
    oncentra: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    del oncentra.FrameOfReferenceUID
    with caplog.at_level(logging.WARNING, logger="guidance.dicomio.rtplan"):
        plan = read_rtplan(oncentra)
    assert plan.frame_of_reference_uid == "" and len(plan.seeds) == 36
    assert "no FrameOfReferenceUID" in caplog.text


def test_treatment_types(oncentra: Dataset) -> None:
    oncentra.BrachyTreatmentType = "PERMANENT"
    assert read_rtplan(oncentra).treatment_type == "PERMANENT"
    oncentra.BrachyTreatmentType = "MDR"
    with pytest.raises(UnsupportedPlanError, match=r"^MDR plan"):
        read_rtplan(oncentra)
    del oncentra.BrachyTreatmentType
    with pytest.raises(DicomInputError, match=r"BrachyTreatmentType .* is missing"):
        read_rtplan(oncentra)


def test_plan_without_seeds_is_an_error(oncentra: Dataset) -> None:
    for channel in _channels(oncentra):
        for cp in channel.BrachyControlPointSequence:
            cp.CumulativeTimeWeight = 0
    with pytest.raises(DicomInputError, match="plan has no seeds"):
        read_rtplan(oncentra)


def test_sources_that_are_not_seeds_are_refused(oncentra: Dataset) -> None:
    oncentra.SourceSequence[0].SourceIsotopeName = "Ir-192"
    with pytest.raises(UnsupportedPlanError, match="'Ir-192' is not a permanent-implant seed isotope"):
        read_rtplan(oncentra)
    oncentra.SourceSequence[0].SourceIsotopeName = "I-125"
    _channels(oncentra)[5].ReferencedSourceNumber = 2  # the "---" placeholder
    with pytest.raises(DicomInputError, match=r"uses source 2, a placeholder \(isotope '---'"):
        read_rtplan(oncentra)
    _channels(oncentra)[5].ReferencedSourceNumber = 7
    with pytest.raises(DicomInputError, match="source 7, which is not in SourceSequence"):
        read_rtplan(oncentra)
    _channels(oncentra)[5].ReferencedSourceNumber = 1
    oncentra.SourceSequence[0].SourceStrengthUnits = "DOSE_RATE_WATER"
    with pytest.raises(DicomInputError, match="SourceStrengthUnits DOSE_RATE_WATER"):
        read_rtplan(oncentra)


def test_half_life_falls_back_on_the_consensus_value(oncentra: Dataset) -> None:
    oncentra.SourceSequence[0].SourceIsotopeHalfLife = "0"
    assert read_rtplan(oncentra).sources["Nucletron B.V. I-125"].half_life_days == 59.40


def test_repeated_and_positionless_control_points(oncentra: Dataset) -> None:
    channel = _channels(oncentra)[0]
    points = channel.BrachyControlPointSequence
    for cp in list(points[:2]):  # the dwell again, then once more with a higher weight
        points.append(copy.deepcopy(cp))
    points[-1].CumulativeTimeWeight = 200
    assert len(read_rtplan(oncentra).seeds) == 36
    del points[1].ControlPoint3DPosition
    with pytest.raises(DicomInputError, match="control point 1: a dwell without ControlPoint3DPosition"):
        read_rtplan(oncentra)


def _dwell_points(positions: list[list[float]]) -> list[Dataset]:
    points = []
    for w, position in enumerate(positions):
        for weight in (w, w + 1):
            cp = Dataset()
            cp.ControlPointIndex = len(points)
            cp.ControlPointRelativePosition = 0
            cp.ControlPoint3DPosition = position
            cp.CumulativeTimeWeight = weight
            points.append(cp)
    return points


def test_channel_with_several_seeds_is_a_needle(oncentra: Dataset) -> None:
    channel = _channels(oncentra)[0]
    x, y, z = (float(v) for v in channel.BrachyControlPointSequence[0].ControlPoint3DPosition)
    channel.BrachyControlPointSequence = _dwell_points([[x, y, z], [x, y, z - 5], [x, y, z - 10]])
    plan = read_rtplan(oncentra)
    assert len(plan.seeds) == 38 and len(plan.needles) == 1
    needle = plan.needles[0]
    # Tip beyond the first (deepest) dwell, entry beyond the last, 5 mm each.
    np.testing.assert_allclose(needle.tip_mm, [x, y, z + 5], atol=1e-9)
    np.testing.assert_allclose(needle.entry_mm, [x, y, z - 15], atol=1e-9)
    assert needle.number == 1 and len(needle.seed_indices) == 3
    on_needle = [plan.seeds[i] for i in needle.seed_indices]
    np.testing.assert_allclose([s.position_mm[2] for s in on_needle], [z, z - 5, z - 10])  # tip first
    assert all(s.needle_index == 0 for s in on_needle)
    np.testing.assert_allclose(
        [s.direction for s in on_needle], np.tile([0, 0, 1.0], (3, 1))
    )  # along the needle
    assert sum(s.needle_index is None for s in plan.seeds) == 35


def test_seeds_off_a_line_are_no_needle(oncentra: Dataset, caplog: pytest.LogCaptureFixture) -> None:
    channel = _channels(oncentra)[0]
    x, y, z = (float(v) for v in channel.BrachyControlPointSequence[0].ControlPoint3DPosition)
    channel.BrachyControlPointSequence = _dwell_points([[x, y, z], [x, y, z - 5], [x + 3, y, z - 10]])
    with caplog.at_level(logging.WARNING, logger="guidance.dicomio.rtplan"):
        plan = read_rtplan(oncentra)
    assert len(plan.seeds) == 38 and plan.needles == ()
    assert "not on one line" in caplog.text


def test_prescription_from_dose_reference(oncentra: Dataset) -> None:
    target = Dataset()
    target.DoseReferenceNumber = 1
    target.DoseReferenceStructureType = "SITE"
    target.DoseReferenceType = "TARGET"
    target.TargetPrescriptionDose = "145.5"
    oncentra.DoseReferenceSequence = [target]
    assert read_rtplan(oncentra).prescription_gy == 145.5


def test_sources_dated_differently_are_brought_to_one_date(oncentra: Dataset) -> None:
    later = copy.deepcopy(oncentra.SourceSequence[0])
    later.SourceNumber = 3
    later.ReferenceAirKermaRate = "0.7"
    later.SourceStrengthReferenceDate = "20170401"  # 30 days after the first source's date
    oncentra.SourceSequence.append(later)
    _channels(oncentra)[3].ReferencedSourceNumber = 3
    plan = read_rtplan(oncentra)
    assert plan.strength_reference_datetime == dt.datetime(2017, 3, 2, 12, 0)
    assert len(plan.sources) == 1  # the same model, two strengths
    expected = 0.7 * 2.0 ** (30.0 / 59.4000015258789)  # decayed back 30 days
    assert plan.seeds[3].air_kerma_strength_u == pytest.approx(expected, rel=1e-12)
    assert plan.seeds[4].air_kerma_strength_u == 0.75205701589584


# ----------------------------------------------------------------------------- writing and round trips


def test_oncentra_round_trip_keeps_plan_and_matches_oncentra_totals(shared_data: Path) -> None:
    plan = read_rtplan(shared_data / ONCENTRA)
    written, again = _round_trip(plan, StudyContext(frame_of_reference_uid=ONCENTRA_FRAME))
    assert written.SOPClassUID == RT_PLAN_STORAGE and written.Modality == "RTPLAN"
    assert (written.RTPlanGeometry, written.BrachyTreatmentTechnique, written.BrachyTreatmentType) == (
        "PATIENT", "INTERSTITIAL", "LDR")  # fmt: skip
    assert written.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == plan.structure_set_uid
    assert written.DoseReferenceSequence[0].TargetPrescriptionDose == 144.0
    source = written.SourceSequence[0]
    assert len(written.SourceSequence) == 1 and source.SourceType == "CYLINDER"
    # Our totals are Oncentra's: sum of strength x mean life; channel time = mean life.
    setup = written.ApplicationSetupSequence[0]
    assert float(setup.TotalReferenceAirKerma) == pytest.approx(55683.3696365356, rel=1e-7)
    assert float(setup.ChannelSequence[0].ChannelTotalTime) == pytest.approx(7404142, abs=1.0)
    assert len(again.seeds) == 36
    np.testing.assert_allclose(again.seed_positions_mm, plan.seed_positions_mm, atol=1e-9)
    np.testing.assert_array_equal(again.seed_strengths_u, plan.seed_strengths_u)
    assert again.sources == plan.sources
    assert again.strength_reference_datetime == plan.strength_reference_datetime
    assert again.prescription_gy == 144.0 and again.needles == ()


def test_mim_round_trip_keeps_seeds_and_orientation(shared_data: Path) -> None:
    plan = read_rtplan(shared_data / MIM)
    context = StudyContext()
    written, again = _round_trip(plan, context, treatment_type="MANUAL")
    assert written.RTPlanGeometry == "PATIENT"  # the plan's own structure set is referenced
    assert again.frame_of_reference_uid == context.frame_of_reference_uid
    assert len(again.seeds) == 27 and again.treatment_type == "MANUAL"
    np.testing.assert_allclose(again.seed_positions_mm, plan.seed_positions_mm, atol=1e-9)
    np.testing.assert_allclose(again.seed_directions, plan.seed_directions, atol=1e-7)
    assert again.sources == plan.sources and again.strength_reference_datetime is None


def _seed(position: list[float], strength: float, model: str, direction: list[float] | None = None,
          needle: int | None = None) -> Seed:  # fmt: skip
    return Seed(np.array(position, dtype=float), direction, strength, model, needle)


def test_needles_with_mixed_strengths_empty_and_single_seed_round_trip() -> None:
    context = StudyContext()
    seeds = [
        _seed([0, 0, 40], 0.5, "6711", needle=0),
        _seed([0, 0, 32], 0.6, "6711", [0, 0, -1], needle=0),  # another strength on the same needle
        _seed([0, 0, 24], 0.5, "IAI-125A", needle=0),
        _seed([20, 0, 30], 0.5, "6711", needle=2),  # the only seed of needle 2
        _seed([50, 50, 0], 0.5, "6711"),  # free, orientation unknown
        _seed([60, 50, 0], 0.5, "6711", [1, 0, 0]),  # free, orientation known
    ]
    needles = [
        Needle([0, 0, -20], [0, 0, 45], (0, 1, 2), number=12, label="A3"),
        Needle([10, 0, -20], [10, 0, 45], (), number=0),  # inserted, no seeds yet
        Needle([20, 0, -20], [20, 0, 36], (3,), number=7),
    ]
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
    plan = Plan(context.frame_of_reference_uid, seeds, needles, dict(MODELS), prescription_gy=145.0,
                strength_reference_datetime=when, label="H&N implant")  # fmt: skip
    written, again = _round_trip(plan, context)
    assert written.RTPlanGeometry == "TREATMENT_DEVICE"  # no structure set to refer to
    assert len(written.SourceSequence) == 3  # (6711, 0.5), (6711, 0.6), (IAI-125A, 0.5)
    assert len(written.ApplicationSetupSequence[0].ChannelSequence) == 3 + 1 + 1 + 2
    assert [n.number for n in again.needles] == [12, 2, 7]
    assert [n.label for n in again.needles] == ["A3", "", ""]
    for read_needle, needle in zip(again.needles, needles, strict=True):
        np.testing.assert_allclose(read_needle.tip_mm, needle.tip_mm, atol=1e-9)
        np.testing.assert_allclose(read_needle.entry_mm, needle.entry_mm, atol=1e-9)
    assert [len(n.seed_indices) for n in again.needles] == [3, 0, 1]
    _assert_same_seeds(again, plan)
    assert again.strength_reference_datetime == when and again.prescription_gy == 145.0
    assert again.label == "H&N implant" and again.treatment_type == "LDR"


def _assert_same_seeds(read: Plan, plan: Plan) -> None:
    """Every seed back at its place with its strength, model, orientation and needle."""
    assert len(read.seeds) == len(plan.seeds)
    used = {s.source_model_id for s in plan.seeds}
    assert {k: read.sources[k] for k in used} == {k: plan.sources[k] for k in used}
    matched = set()
    for seed in plan.seeds:
        distances = np.linalg.norm(read.seed_positions_mm - seed.position_mm, axis=1)
        j = int(np.argmin(distances))
        assert distances[j] < 1e-3 and j not in matched
        matched.add(j)
        back = read.seeds[j]
        assert back.air_kerma_strength_u == seed.air_kerma_strength_u
        assert back.source_model_id == seed.source_model_id
        assert back.needle_index == seed.needle_index
        if seed.orientation_known:
            np.testing.assert_allclose(back.direction, seed.direction, atol=1e-6)
        elif seed.needle_index is not None:  # a seed in a needle lies along it
            np.testing.assert_allclose(back.direction, read.needles[seed.needle_index].direction, atol=1e-9)
        else:
            assert not back.orientation_known


@st.composite
def _unit_vectors(draw: st.DrawFn) -> NDArray[np.float64]:
    vector = np.array(draw(st.tuples(*[st.floats(-1, 1)] * 3)))
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0.1 else np.array([0.0, 0.0, 1.0])


@st.composite
def _seed_plans(draw: st.DrawFn) -> Plan:
    kinds = st.tuples(st.sampled_from(sorted(MODELS)), st.floats(0.2, 2.0).map(lambda u: round(u, 6)))
    directions = st.one_of(st.none(), _unit_vectors())
    seeds: list[Seed] = []
    needles: list[Needle] = []
    for k in range(draw(st.integers(0, 3))):
        axis = draw(_unit_vectors())
        tip = np.array([-300.0 + 150.0 * k, 0.0, 0.0]) + np.array(draw(st.tuples(*[st.floats(-20, 20)] * 3)))
        gap, spacing, tail = draw(st.floats(2.5, 10)), draw(st.floats(4.5, 10)), draw(st.floats(10, 60))
        first = len(seeds)
        for j in range(draw(st.integers(0, 4))):
            model, strength = draw(kinds)
            seeds.append(Seed(tip - axis * (gap + j * spacing), draw(directions), strength, model, k))
        entry = tip - axis * (gap + max(len(seeds) - first - 1, 0) * spacing + tail)
        label = draw(st.sampled_from(["", "A3", "needle 7"]))
        needles.append(Needle(entry, tip, tuple(range(first, len(seeds))), draw(st.integers(0, 99)), label))
    cells = draw(
        st.lists(st.tuples(*[st.integers(0, 4)] * 3), unique=True, min_size=0 if seeds else 1, max_size=6)
    )
    for cell in cells:
        offset = np.array(draw(st.tuples(*[st.floats(0, 10)] * 3)))
        model, strength = draw(kinds)
        seeds.append(Seed(200.0 + 20.0 * np.array(cell) + offset, draw(directions), strength, model))
    return Plan(
        "1.2.826.0.1.3680043.8.498.1",
        seeds,
        needles,
        dict(MODELS),
        prescription_gy=draw(st.one_of(st.none(), st.floats(50, 200).map(lambda d: round(d, 3)))),
        strength_reference_datetime=draw(st.one_of(st.none(), st.datetimes(dt.datetime(2000, 1, 1),
                                                                            dt.datetime(2040, 1, 1)))),
    )  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(_seed_plans())
def test_random_seed_plans_round_trip(plan: Plan) -> None:
    context = StudyContext(frame_of_reference_uid=plan.frame_of_reference_uid)
    _, again = _round_trip(plan, context, structure_set_uid="1.2.826.0.1.3680043.8.498.2")
    _assert_same_seeds(again, plan)
    assert len(again.needles) == len(plan.needles)
    for k, (read_needle, needle) in enumerate(zip(again.needles, plan.needles, strict=True)):
        np.testing.assert_allclose(read_needle.tip_mm, needle.tip_mm, atol=1e-3)
        np.testing.assert_allclose(read_needle.entry_mm, needle.entry_mm, atol=1e-3)
        assert read_needle.number == (needle.number or k + 1) and read_needle.label == needle.label
        assert sorted(again.seeds[i].needle_index for i in read_needle.seed_indices) == [k] * len(
            needle.seed_indices
        )
    assert again.strength_reference_datetime == plan.strength_reference_datetime
    assert again.prescription_gy == plan.prescription_gy
    assert again.structure_set_uid == "1.2.826.0.1.3680043.8.498.2"


def test_writer_refuses_what_would_not_read_back() -> None:
    context = StudyContext()
    frame = context.frame_of_reference_uid
    good = [_seed([0, 0, 0], 0.5, "6711")]
    with pytest.raises(ValueError, match="plan has no seeds"):
        write_rtplan(Plan(frame, (), (), dict(MODELS)), context)
    with pytest.raises(ValueError, match="context's frame"):
        write_rtplan(Plan("1.2.3", good, (), dict(MODELS)), context)
    with pytest.raises(ValueError, match="treatment_type"):
        write_rtplan(Plan(frame, good, (), dict(MODELS)), context, treatment_type="HDR")
    with pytest.raises(ValueError, match="strength 0"):
        write_rtplan(Plan(frame, [_seed([0, 0, 0], 0.0, "6711")], (), dict(MODELS)), context)
    off_line = [_seed([0, 0, 0], 0.5, "6711", needle=0), _seed([3, 0, 10], 0.5, "6711", needle=0)]
    with pytest.raises(ValueError, match="off the line of needle 0"):
        write_rtplan(Plan(frame, off_line, [Needle([0, 0, -10], [0, 0, 20], (0, 1))], dict(MODELS)), context)
    short = [_seed([0, 0, 0], 0.5, "6711", needle=0)]
    with pytest.raises(ValueError, match=r"needles shorter than 10\.0 mm"):
        write_rtplan(Plan(frame, short, [Needle([0, 0, -3], [0, 0, 3], (0,))], dict(MODELS)), context)
    with pytest.raises(ValueError, match="needles the plan does not have"):
        write_rtplan(Plan(frame, [_seed([0, 0, 0], 0.5, "6711", needle=3)], (), dict(MODELS)), context)
    twice = [Needle([0, 0, -20], [0, 0, 20], (0,)), Needle([0, 0, -20], [0, 0, 21], (0,))]
    with pytest.raises(ValueError, match="seed 0 is on needles"):
        write_rtplan(Plan(frame, good, twice, dict(MODELS)), context)


def test_written_file_is_valid_for_strict_pydicom(shared_data: Path) -> None:
    plan = read_rtplan(shared_data / ONCENTRA)
    with _strict_pydicom():
        data = to_bytes(
            write_rtplan(
                plan, StudyContext(frame_of_reference_uid=ONCENTRA_FRAME), sop_instance_uid="1.2.3.4"
            )
        )
        ds = pydicom.dcmread(io.BytesIO(data))
        text = str(ds)  # decodes every element
    assert ds.SOPInstanceUID == "1.2.3.4" and ds.file_meta.MediaStorageSOPClassUID == RT_PLAN_STORAGE
    assert "Control Point 3D Position" in text and ds.OperatorsName == ""
