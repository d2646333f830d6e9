"""Matching found seeds and needles to the plan through a known rigid transform."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from guidance.detection import (
    DetectedNeedle,
    DetectedSeed,
    MatchOptions,
    NeedleDetection,
    PlanMatch,
    SeedDetection,
    assign,
    match_to_plan,
)
from guidance.plan import Isotope, Needle, Plan, Seed, SourceModel
from guidance.provenance import Provenance

_SOURCE = {"6711": SourceModel("6711", Isotope.I125, 59.4)}


def _scan_to_plan() -> NDArray[np.float64]:
    """Rotation of 7 deg about an oblique axis and a shift of (4, -6, 9) mm."""
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    angle = math.radians(7.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    matrix = np.eye(4)
    matrix[:3, :3] = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    matrix[:3, 3] = [4.0, -6.0, 9.0]
    return matrix


def _to_scan(points: NDArray[np.float64]) -> NDArray[np.float64]:
    inverse = np.linalg.inv(_scan_to_plan())
    mapped: NDArray[np.float64] = points.reshape(-1, 3) @ inverse[:3, :3].T + inverse[:3, 3]
    return mapped


def _plan() -> Plan:
    """Four parallel needles 10 mm apart along -x, five seeds 5 mm apart on each."""
    seeds, needles = [], []
    for k in range(4):
        tip = np.array([10.0, 10.0 * k, 20.0])
        entry = tip + np.array([80.0, 0.0, 0.0])
        indices = []
        for j in range(5):
            indices.append(len(seeds))
            seeds.append(Seed(tip + np.array([2.0 + 5.0 * j, 0.0, 0.0]), [1.0, 0.0, 0.0], 0.6, "6711", k))
        needles.append(Needle(entry, tip, tuple(indices), k + 1))
    return Plan("1.2.3", tuple(seeds), tuple(needles), _SOURCE)


def _provenance(stage: str) -> Provenance:
    return Provenance(stage, {}, "test", 0.0)


def _found_seeds(plan: Plan) -> tuple[SeedDetection, dict[int, NDArray[np.float64]]]:
    """Planned seeds 3, 11, 17 removed; 0, 6, 12, 19 displaced (plan frame); two extras far away."""
    shifts = {0: np.array([1.0, 0.5, -0.5]), 6: np.array([-2.0, 1.0, 0.0]),
              12: np.array([0.0, 0.0, 3.0]), 19: np.array([0.5, -1.5, 1.0])}  # fmt: skip
    positions = []
    for i, seed in enumerate(plan.seeds):
        if i not in (3, 11, 17):
            positions.append(seed.position_mm + shifts.get(i, np.zeros(3)))
    positions += [np.array([60.0, 15.0, 40.0]), np.array([-20.0, -30.0, 20.0])]
    scan = _to_scan(np.array(positions))[::-1]  # found order differs from planned order
    found = tuple(DetectedSeed(p, [np.nan] * 3, 1.0) for p in scan)
    return SeedDetection(found, (), 1.0, (), _provenance("detection.seeds")), shifts


def _needle(entry: NDArray[np.float64], tip: NDArray[np.float64], *, in_scan: bool = True) -> DetectedNeedle:
    e, t = _to_scan(entry)[0], _to_scan(tip)[0]
    direction = (t - e) / np.linalg.norm(t - e)
    return DetectedNeedle(
        e, t, direction, float(np.linalg.norm(t - e)), 0.9, (), False, in_scan, np.zeros((0, 3))
    )


def _found_needles(plan: Plan) -> NeedleDetection:
    """Needle 0 as planned; 1 stopped 6 mm short; 2 tilted 4 deg about its entry; 3 missing; one extra."""
    n = plan.needles
    sideways = np.array([0.0, 0.5, 0.0])
    tilt = math.radians(4.0)
    tilted_tip = n[2].entry_mm + 80.0 * np.array([-math.cos(tilt), 0.0, math.sin(tilt)])
    needles = (
        _needle(np.array([50.0, 60.0, -20.0]), np.array([20.0, 30.0, 20.0])),  # extra, oblique
        _needle(n[2].entry_mm, tilted_tip),
        _needle(n[0].entry_mm + sideways, n[0].tip_mm + sideways, in_scan=False),
        _needle(n[1].entry_mm, n[1].tip_mm + np.array([6.0, 0.0, 0.0])),
    )
    return NeedleDetection(needles, (), _provenance("detection.needles"))


@pytest.fixture(scope="module")
def matched() -> tuple[Plan, PlanMatch, dict[int, NDArray[np.float64]]]:
    plan = _plan()
    seeds, shifts = _found_seeds(plan)
    result = match_to_plan(plan, scan_to_plan=_scan_to_plan(), seeds=seeds, needles=_found_needles(plan))
    return plan, result, shifts


def test_seeds_placed_missing_extra(matched: tuple[Plan, PlanMatch, dict[int, NDArray[np.float64]]]) -> None:
    plan, result, shifts = matched
    assert result.missing_seeds == (3, 11, 17)
    assert len(result.seeds) == 17
    # Found order was reversed: the two extras (appended last) are found indices 0 and 1.
    assert result.extra_seeds == (0, 1)
    for match in result.seeds:
        expected = shifts.get(match.planned_index, np.zeros(3))
        np.testing.assert_allclose(match.displacement_mm, expected, atol=1e-9)
        np.testing.assert_allclose(match.planned_mm, plan.seeds[match.planned_index].position_mm)
        assert match.distance_mm == pytest.approx(float(np.linalg.norm(expected)), abs=1e-9)
    assert float(result.seed_distances_mm.max()) == pytest.approx(3.0)


def test_needles_deviations(matched: tuple[Plan, PlanMatch, dict[int, NDArray[np.float64]]]) -> None:
    _, result, _ = matched
    assert result.missing_needles == (3,)
    assert result.extra_needles == (0,)
    by_plan = {m.planned_index: m for m in result.needles}
    assert {p: m.found_index for p, m in by_plan.items()} == {0: 2, 1: 3, 2: 1}
    as_planned, short, tilted = by_plan[0], by_plan[1], by_plan[2]
    assert np.all(np.isnan(as_planned.entry_deviation_mm)) and math.isnan(as_planned.entry_distance_mm)
    np.testing.assert_allclose(as_planned.tip_deviation_mm, [0.0, 0.5, 0.0], atol=1e-9)
    assert as_planned.angle_deg == pytest.approx(0.0, abs=1e-5)
    assert as_planned.tip_lateral_mm == pytest.approx(0.5)
    assert short.depth_error_mm == pytest.approx(-6.0)
    assert short.tip_lateral_mm == pytest.approx(0.0, abs=1e-9)
    assert short.entry_distance_mm == pytest.approx(0.0, abs=1e-9)
    assert tilted.angle_deg == pytest.approx(4.0)
    assert tilted.tip_lateral_mm == pytest.approx(80.0 * math.sin(math.radians(4.0)))
    assert tilted.depth_error_mm == pytest.approx(80.0 * (math.cos(math.radians(4.0)) - 1.0))
    assert tilted.track_distance_mm == pytest.approx(0.5 * 80.0 * math.sin(math.radians(4.0)))


def test_provenance_and_frame(matched: tuple[Plan, PlanMatch, dict[int, NDArray[np.float64]]]) -> None:
    _, result, _ = matched
    assert result.provenance.stage == "detection.matching"
    assert result.provenance.parameters == MatchOptions().to_dict()
    np.testing.assert_array_equal(result.scan_to_plan, _scan_to_plan())
    assert not result.scan_to_plan.flags.writeable


def test_hungarian_beats_greedy_and_gate() -> None:
    # Greedy nearest-first pairs found 0 with planned 1 (1.5 mm) and leaves planned 0 6.5 mm
    # from found 1, beyond the 5 mm gate; the assignment pairs both at 2.5 mm.
    cost = np.array([[2.5, 6.5], [1.5, 2.5]])
    assert sorted(assign(cost, 5.0)) == [(0, 0), (1, 1)]
    assert assign(cost, 2.0) == [(1, 0)]
    assert assign(np.zeros((0, 3)), 5.0) == []
    assert assign(np.array([[np.inf, np.nan]]), 5.0) == []


def test_nothing_found_and_bad_input() -> None:
    plan = _plan()
    empty = match_to_plan(plan, scan_to_plan=np.eye(4))
    assert empty.missing_seeds == tuple(range(20)) and empty.missing_needles == (0, 1, 2, 3)
    assert empty.seeds == () and empty.extra_seeds == ()
    scaled = np.diag([1.1, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="scan_to_plan must be rigid"):
        match_to_plan(plan, scan_to_plan=scaled)
    with pytest.raises(ValueError, match="finite 4x4"):
        match_to_plan(plan, scan_to_plan=np.eye(3))
    with pytest.raises(ValueError, match=r"MatchOptions\.seed_gate_mm"):
        MatchOptions(seed_gate_mm=0.0)
