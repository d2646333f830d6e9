"""Plan types: validation, unit conversion, derived arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from guidance.plan import (
    Isotope,
    Needle,
    Plan,
    Seed,
    SourceModel,
    air_kerma_strength_from_mci,
    unit_direction,
)
from guidance.structure import Structure, StructureRole, role_from_dicom

I125 = SourceModel("6711", Isotope.I125, 59.40, "GE Healthcare")


@pytest.mark.parametrize(
    ("written", "isotope"),
    [("I-125", Isotope.I125), ("I125", Isotope.I125), ("125I", Isotope.I125), ("iodine-125", Isotope.I125),
     ("Pd-103", Isotope.PD103), ("PD103", Isotope.PD103), ("Cs-131", Isotope.CS131)],
)  # fmt: skip
def test_isotope_spellings(written: str, isotope: Isotope) -> None:
    assert Isotope.from_dicom(written) is isotope


@pytest.mark.parametrize("written", ["Ir-192", "---", "", "Co-60"])
def test_non_seed_isotopes_are_refused_by_name(written: str) -> None:
    with pytest.raises(ValueError, match="not a permanent-implant seed isotope"):
        Isotope.from_dicom(written)


def test_mean_life_of_i125() -> None:
    # tau = T1/2 / ln 2 = 59.40 d * 24 h / 0.6931 = 2056.7 h (TG-43U1).
    assert I125.mean_life_h == pytest.approx(2056.7, abs=0.05)


def test_activity_conversion_is_explicit_and_checked() -> None:
    assert air_kerma_strength_from_mci(0.6, Isotope.I125) == pytest.approx(0.762)
    assert air_kerma_strength_from_mci(1.0, "Pd-103") == pytest.approx(1.293)
    with pytest.raises(ValueError, match="give the strength in U"):
        air_kerma_strength_from_mci(1.0, Isotope.CS131)
    with pytest.raises(ValueError, match="non-negative"):
        air_kerma_strength_from_mci(-1.0, Isotope.I125)


def test_seed_direction_normalised_or_unknown() -> None:
    seed = Seed([1, 2, 3], [0, 0, 2], 0.76, "6711")
    np.testing.assert_allclose(seed.direction, [0, 0, 1])
    assert seed.orientation_known
    unknown = Seed([1, 2, 3], None, 0.76, "6711")
    assert not unknown.orientation_known
    assert np.all(np.isnan(unit_direction([np.nan, 0, 0])))
    with pytest.raises(ValueError, match="no length"):
        Seed([0, 0, 0], [0, 0, 0], 0.76, "6711")
    with pytest.raises(ValueError, match="finite"):
        Seed([0, math.inf, 0], None, 0.76, "6711")
    with pytest.raises(ValueError, match="air_kerma_strength_u"):
        Seed([0, 0, 0], None, -1.0, "6711")


def test_plan_arrays_and_checks() -> None:
    seeds = (Seed([0, 0, 0], [0, 0, 1], 0.8, "6711", 0), Seed([0, 0, 5], [0, 0, 1], 0.7, "6711", 0))
    needle = Needle([0, 0, -40], [0, 0, 5], (0, 1), number=1)
    gtv = Structure("GTV", "target", ([[0, 0, 0], [1, 0, 0], [0, 1, 0]],))
    plan = Plan("1.2.3", seeds, (needle,), {"6711": I125}, (gtv,), prescription_gy=140.0)
    assert plan.seed_positions_mm.shape == (2, 3)
    np.testing.assert_allclose(plan.seed_strengths_u, [0.8, 0.7])
    assert plan.isotopes == {Isotope.I125}
    assert plan.structure("gtv") is gtv
    assert plan.structures_with_role(StructureRole.TARGET) == (gtv,)
    assert needle.length_mm == pytest.approx(45.0)
    np.testing.assert_allclose(needle.direction, [0, 0, 1])
    with pytest.raises(KeyError, match="GTV"):
        plan.structure("PTV")
    with pytest.raises(ValueError, match=r"not in Plan\.sources"):
        Plan("1.2.3", seeds, (), {})
    with pytest.raises(ValueError, match="seed indices"):
        Plan("1.2.3", seeds, (Needle([0, 0, 0], [0, 0, 1], (5,)),), {"6711": I125})
    with pytest.raises(ValueError, match="prescription_gy"):
        Plan("1.2.3", seeds, (), {"6711": I125}, prescription_gy=0.0)


def test_plan_seed_arrays_of_an_empty_plan_have_shape() -> None:
    plan = Plan("", (), (), {})
    assert plan.seed_positions_mm.shape == (0, 3)
    assert plan.seed_directions.shape == (0, 3)


@pytest.mark.parametrize(
    ("interpreted", "name", "types", "role"),
    [
        ("GTV", "tumour", {"CLOSED_PLANAR"}, StructureRole.TARGET),
        ("ORGAN", "Cord", {"CLOSED_PLANAR"}, StructureRole.ORGAN_AT_RISK),
        ("EXTERNAL", "Body", {"CLOSED_PLANAR"}, StructureRole.EXTERNAL),
        ("", "CTV_60", {"CLOSED_PLANAR"}, StructureRole.TARGET),
        ("", "BODY", {"CLOSED_PLANAR"}, StructureRole.EXTERNAL),
        ("", "Rectum", {"CLOSED_PLANAR"}, StructureRole.ORGAN_AT_RISK),
        ("ORGAN", "seed 1", {"POINT"}, StructureRole.POINT),
        ("MARKER", "fiducial", set(), StructureRole.POINT),
        ("ORGAN", "BODY", {"CLOSED_PLANAR"}, StructureRole.EXTERNAL),
        ("ORGAN", "GTV_recurrence", {"CLOSED_PLANAR"}, StructureRole.TARGET),
        ("ORGAN", "Prostate", {"CLOSED_PLANAR"}, StructureRole.ORGAN_AT_RISK),
        ("CTV", "BODY", {"CLOSED_PLANAR"}, StructureRole.TARGET),
        ("", "Prostate", {"CLOSED_PLANAR"}, StructureRole.TARGET),
    ],
)
def test_role_from_dicom(interpreted: str, name: str, types: set[str], role: StructureRole) -> None:
    assert role_from_dicom(interpreted, name, types) is role


def test_structure_validation_and_bounds() -> None:
    square = np.array([[0, 0, 5], [10, 0, 5], [10, 10, 5], [0, 10, 5]], float)
    structure = Structure("Cord", StructureRole.ORGAN_AT_RISK, (square,))
    np.testing.assert_allclose(structure.bounds_mm(), [[0, 0, 5], [10, 10, 5]])
    with pytest.raises(ValueError, match="read-only"):
        structure.contours_mm[0][0, 0] = 1.0
    empty = Structure("Empty", "organ_at_risk", ())
    assert empty.is_empty
    with pytest.raises(ValueError, match="no contours"):
        empty.bounds_mm()
    with pytest.raises(ValueError, match="contour 0"):
        Structure("Bad", "target", (np.zeros((3, 2)),))
    with pytest.raises(ValueError, match="NaN"):
        Structure("Bad", "target", ([[0, 0, np.nan]],))
