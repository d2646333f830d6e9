"""Extra-seed suggestions on a sphere with one missing lattice seed: position, D90 verified independently."""

from __future__ import annotations

import numpy as np
import pytest

from guidance.coverage import SuggestionOptions, SuggestionReport, suggest_seeds
from guidance.dose import DoseLimits, add_seeds, cumulative_dvh
from guidance.planning import Feasibility, SeedSet
from guidance.volume import Volume
from tests.guidance.dose.dvh_phantoms import sphere
from tests.guidance.planning import phantoms
from tests.guidance.test_coldspots import AXIS, LATTICE_MM, MISSING, NEEDLES, RADIUS_MM, STRENGTH_U, _dose

# The full lattice gives D90 about 200 Gy, without the seed at (10, 0, 0) about 159 Gy.
PRESCRIPTION_GY = 180.0
KEEP = [k for k in range(7) if k != MISSING]
ORGAN_BOX_MM = ([18.0, -4.0, -4.0], [26.0, 4.0, 4.0])  # 8 mm beyond the missing seed


@pytest.fixture(scope="module")
def current() -> tuple[Volume, SeedSet]:
    seeds = SeedSet(LATTICE_MM[KEEP], np.tile(AXIS, (len(KEEP), 1)), np.full(len(KEEP), STRENGTH_U), "6711")
    return _dose(KEEP), seeds


@pytest.fixture(scope="module")
def masks() -> tuple[Volume, Volume]:
    grid = phantoms.grid()
    return phantoms.sphere_fraction(grid, RADIUS_MM), phantoms.body(grid)


def _suggest(
    current: tuple[Volume, SeedSet],
    masks: tuple[Volume, Volume],
    *,
    organs: dict[str, Volume] | None = None,
    limits: DoseLimits | None = None,
) -> SuggestionReport:
    target, body = masks
    return suggest_seeds(
        current[0],
        current[1],
        target,
        PRESCRIPTION_GY,
        body=body,
        needles_existing=NEEDLES,
        organs=organs,
        limits=limits,
    )


@pytest.fixture(scope="module")
def report(current: tuple[Volume, SeedSet], masks: tuple[Volume, Volume]) -> SuggestionReport:
    return _suggest(current, masks)


def test_missing_seed_is_suggested_back(report: SuggestionReport, current: tuple[Volume, SeedSet]) -> None:
    assert report.reached and report.feasibility is Feasibility.REACHED
    assert report.statement.startswith("reached")
    assert 1 <= len(report.suggestions) <= 3
    distances = np.linalg.norm(report.positions_mm - LATTICE_MM[MISSING], axis=1)
    assert distances.min() < 5.0
    assert report.current_d90_gy < PRESCRIPTION_GY
    assert report.predicted_d90_gy is not None and report.predicted_d90_gy >= PRESCRIPTION_GY
    assert report.predicted_v100_percent is not None and report.predicted_v150_percent is not None
    # Independently: the current dose plus the suggested seeds, DVH of the contoured sphere.
    directions = np.array([s.direction for s in report.suggestions])
    strengths = [s.strength_u for s in report.suggestions]
    after = add_seeds(current[0], report.positions_mm, directions, strengths, "6711")
    d90 = cumulative_dvh(after, sphere(RADIUS_MM)).dose_at_percent(90.0)
    assert d90 >= PRESCRIPTION_GY
    assert d90 == pytest.approx(report.predicted_d90_gy, rel=0.03)


def test_suggestion_details(report: SuggestionReport) -> None:
    best = report.suggestions[
        int(np.argmin(np.linalg.norm(report.positions_mm - LATTICE_MM[MISSING], axis=1)))
    ]
    assert best.strength_u == pytest.approx(STRENGTH_U)  # the median of the current seeds
    np.testing.assert_allclose(best.entry_mm + best.depth_mm * best.direction, best.position_mm, atol=1e-9)
    assert best.entry_mm[1] == pytest.approx(-39.0, abs=1.5)  # the body's face
    assert best.needle_index == MISSING and best.track_label == f"needle {MISSING}"  # re-insertion
    assert best.cold_spot_rank == report.cold_spots.cold_spots[0].rank
    assert best.cold_spot_gain_gy > 20.0
    assert best.d90_gain_alone_gy > PRESCRIPTION_GY - report.current_d90_gy
    assert report.provenance.stage == "seed_suggestions"
    assert best.to_dict()["needle_index"] == MISSING


def test_covered_target_needs_no_seed(masks: tuple[Volume, Volume]) -> None:
    seeds = SeedSet(LATTICE_MM, np.tile(AXIS, (7, 1)), np.full(7, STRENGTH_U), "6711")
    covered = _suggest((_dose(list(range(7))), seeds), masks)
    assert covered.suggestions == () and covered.reached
    assert "already covered" in covered.statement
    assert covered.placement is None and covered.predicted_d90_gy == covered.current_d90_gy >= PRESCRIPTION_GY


def test_organ_limit_gives_an_honest_statement(
    current: tuple[Volume, SeedSet], masks: tuple[Volume, Volume]
) -> None:
    organ = phantoms.box_mask(phantoms.grid(), *ORGAN_BOX_MM)
    # The current seeds give the organ about 68 Gy (D0.1cc); the missing seed would add much more.
    limits = DoseLimits(by_name={"cord": {"d0_1cc_gy": 75.0}})
    blocked = _suggest(current, masks, organs={"cord": organ}, limits=limits)
    assert blocked.feasibility is Feasibility.ORGAN_LIMIT and not blocked.reached
    assert "cannot reach prescription without exceeding cord d0_1cc_gy limit" in blocked.statement
    assert blocked.predicted_d90_gy is not None and blocked.predicted_d90_gy < PRESCRIPTION_GY
    (check,) = blocked.predicted_checks
    assert check.structure_name == "cord" and check.value_gy is not None and check.value_gy <= 75.0
    assert [o.structure_name for o in blocked.predicted_organs] == ["cord"]


def test_deterministic(
    report: SuggestionReport, current: tuple[Volume, SeedSet], masks: tuple[Volume, Volume]
) -> None:
    again = _suggest(current, masks)
    np.testing.assert_array_equal(again.positions_mm, report.positions_mm)
    assert again.statement == report.statement
    assert [s.to_dict() for s in again.suggestions] == [s.to_dict() for s in report.suggestions]


def test_bad_inputs(current: tuple[Volume, SeedSet], masks: tuple[Volume, Volume]) -> None:
    target, body = masks
    with pytest.raises(ValueError, match=r"options\.directions"):
        suggest_seeds(current[0], current[1], target, PRESCRIPTION_GY, body=body)
    with pytest.raises(ValueError, match="strength_u"):
        SuggestionOptions(strength_u=0.0)
    with pytest.raises(ValueError, match="strength_u"):
        suggest_seeds(
            current[0], SeedSet.empty(), target, PRESCRIPTION_GY, body=body, needles_existing=NEEDLES
        )


def test_statement_follows_the_verified_dose_when_an_organ_limit_stops_the_search(
    current: tuple[Volume, SeedSet], masks: tuple[Volume, Volume]
) -> None:
    # At an 80 Gy limit the search stops short of its safety goal (1.02 x prescription)
    # because of the organ, but the verified D90 still reaches the prescription: that
    # is "reached", never "cannot reach ... (D90 above the prescription)".
    organ = phantoms.box_mask(phantoms.grid(), *ORGAN_BOX_MM)
    limits = DoseLimits(by_name={"cord": {"d0_1cc_gy": 80.0}})
    result = _suggest(current, masks, organs={"cord": organ}, limits=limits)
    assert result.predicted_d90_gy is not None
    if result.predicted_d90_gy >= PRESCRIPTION_GY:
        assert result.feasibility is Feasibility.REACHED and result.reached
        assert result.statement.startswith("reached: D90")
    else:
        assert result.feasibility is Feasibility.ORGAN_LIMIT
        assert "cannot reach prescription" in result.statement
