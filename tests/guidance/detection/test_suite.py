"""The must-show figures of seed and needle detection, over a suite of simulated scans.

Two renderers (the simulator's and an independent one, :mod:`second_renderer`), pixel
sizes 0.3, 0.8 and 1 mm, slices 1, 2, 3 and 5 mm, two random implants each (12 separate
seeds plus chains of 2-4 and side-by-side pairs and triples: 26 seeds a scan), and needle
scans of the whole neck. The figures are summed over the suite and logged as a table.

Bounds the detection does not reach yet are strict expected failures: they name the
shortfall and turn into errors as soon as the bound is met (then remove the mark).
"""

from __future__ import annotations

import logging

import pytest

from tests.guidance.detection.suite import Condition, Tally, measure

logger = logging.getLogger(__name__)

_SEED_SCANS = [
    Condition(renderer, thickness, pixel, seed, extended_hu=renderer == "second" and seed == 1)
    for renderer, pixel, seeds in (
        ("simulator", 0.8, (0, 1)),
        ("simulator", 0.3, (2,)),
        ("second", 0.3, (0, 1)),
        ("second", 1.0, (0, 1)),
    )
    for thickness in (1.0, 2.0, 3.0, 5.0)
    for seed in seeds
]
_NEEDLE_SCANS = [
    Condition(renderer, thickness, pixel, 10, needles=True)
    for renderer, pixel in (("simulator", 0.8), ("second", 1.0))
    for thickness in (1.0, 2.0)
]


# The dense implant of a clinical-size case, cropped: 80 seeds on a 4 x 4 array of tracks
# 9 mm apart (5 seeds 8 mm apart on each, jittered 0.7 mm), without and with 8 needles of a
# next pass 4.5 mm beside the seed rows.
_DENSE_SCANS = [
    Condition(renderer, thickness, 0.7, 5, needles=needles, dense=True)
    for renderer in ("simulator", "second")
    for thickness in (1.0, 2.0, 3.0)
    for needles in (False, True)
]


def _total(conditions: list[Condition]) -> Tally:
    total = Tally()
    for condition in conditions:
        total.add(measure(condition))
    return total


def _by_thickness(*thicknesses: float) -> Tally:
    return _total([c for c in _SEED_SCANS if c.thickness_mm in thicknesses])


@pytest.fixture(scope="module")
def thin() -> Tally:
    for condition in _SEED_SCANS + _NEEDLE_SCANS + _DENSE_SCANS:
        logger.info("%s (seed %d): %s", condition.label, condition.seed, measure(condition).row())
    return _by_thickness(1.0, 2.0, 3.0)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_suite_is_large_enough_to_measure_the_rates(thin: Tally) -> None:
    # 99.5 % needs at least 200 seeds to allow a single miss.
    assert thin.true_seeds >= 500 and _by_thickness(5.0).true_seeds >= 150


def test_one_mm_slices_meet_every_seed_figure() -> None:
    tally = _by_thickness(1.0)
    assert tally.sensitivity >= 0.995 and tally.precision >= 0.995
    assert _mean(tally.position_errors_mm) <= 0.4 and max(tally.position_errors_mm) <= 1.0
    assert len(tally.orientation_errors_deg) >= 0.85 * tally.matched
    assert max(tally.orientation_errors_deg) <= 10.0


def test_two_mm_slices_rates_and_mean_error() -> None:
    tally = _by_thickness(2.0)
    assert tally.sensitivity >= 0.995 and tally.precision >= 0.995
    assert _mean(tally.position_errors_mm) <= 0.4


def test_two_mm_slices_max_error() -> None:
    assert max(_by_thickness(2.0).position_errors_mm) <= 1.0


def test_thin_slices_regression_floor(thin: Tally) -> None:
    """What the detection reaches today over 1-3 mm slices (both renderers); must not get worse."""
    assert thin.sensitivity >= 0.98 and thin.precision >= 0.98
    assert _mean(thin.position_errors_mm) <= 0.4


def test_orientation_where_reported(thin: Tally) -> None:
    assert len(thin.orientation_errors_deg) >= 100
    assert max(thin.orientation_errors_deg) <= 10.0


def test_thin_slices_rates(thin: Tally) -> None:
    assert thin.sensitivity >= 0.995 and thin.precision >= 0.995


def test_thin_slices_max_position_error(thin: Tally) -> None:
    assert max(thin.position_errors_mm) <= 1.0


def test_thick_slices_rates() -> None:
    """5 mm slices, both renderers: 180 of 182 seeds found, no false seed (0.989 / 1.000)."""
    thick = _by_thickness(5.0)
    assert thick.sensitivity >= 0.985 and thick.precision >= 0.995


def test_thick_slices_slice_axis_error() -> None:
    """5 mm slices: every seed found within 1.5 mm along the slice axis (at most 1.48 mm).

    Two steep touching seeds side by side across a slice boundary show the same slices as two
    end to end: they are placed between the two, 1.3 mm off (as a chain they were 2.0 mm off).
    """
    thick = _by_thickness(5.0)
    assert max(thick.slice_axis_errors_mm) <= 1.5


@pytest.fixture(scope="module")
def needles() -> Tally:
    return _total(_NEEDLE_SCANS)


@pytest.mark.parametrize("scan", [0, 2], ids=["simulator", "second"])
def test_needles_on_one_mm_slices(scan: int) -> None:
    tally = measure(_NEEDLE_SCANS[scan])
    assert _NEEDLE_SCANS[scan].thickness_mm == 1.0 and len(tally.tip_errors_mm) == 3
    assert max(tally.tip_errors_mm) <= 1.0
    assert max(tally.angle_errors_deg) <= 1.0
    # The seeds beside them: one 3 mm from a needle's axis, its edge under the needle's voxels, was
    # 10.3 degrees off; its orientation is now unknown.
    assert len(tally.orientation_errors_deg) >= 10 and max(tally.orientation_errors_deg) <= 10.0


def test_needles(needles: Tally) -> None:
    assert len(needles.tip_errors_mm) == 3 * len(_NEEDLE_SCANS)
    assert max(needles.tip_errors_mm) <= 1.0
    assert max(needles.angle_errors_deg) <= 1.0


def _dense(
    *, renderer: str | None = None, needles: bool, thicknesses: tuple[float, ...] = (1.0, 2.0, 3.0)
) -> Tally:
    return _total([
        c for c in _DENSE_SCANS
        if c.needles == needles and c.thickness_mm in thicknesses and renderer in (None, c.renderer)
    ])  # fmt: skip


def test_rows_of_seeds_are_not_needles() -> None:
    """Rows of 5 seeds 8 mm apart are straight and 36 mm long, but not continuous: no needle."""
    for condition in _DENSE_SCANS:
        if not condition.needles:
            assert measure(condition).found_needles == 0, condition.label


def test_dense_implant_seeds() -> None:
    tally = _dense(needles=False)
    assert tally.true_seeds == 480
    assert tally.sensitivity >= 0.995 and tally.precision >= 0.995
    assert _mean(tally.position_errors_mm) <= 0.4
    assert len(tally.orientation_errors_deg) >= 150 and max(tally.orientation_errors_deg) <= 10.0
    assert max(_dense(needles=False, thicknesses=(1.0, 2.0)).position_errors_mm) <= 1.0


def test_dense_implant_needles_beside_seed_rows() -> None:
    """All 8 needles 4.5 mm beside the seed rows, and the seeds beside them (second renderer)."""
    tally = _dense(renderer="second", needles=True)
    assert len(tally.tip_errors_mm) == 24 and tally.false_needles == 0
    assert max(tally.tip_errors_mm) <= 1.0 and max(tally.angle_errors_deg) <= 1.0
    assert tally.sensitivity >= 0.995 and tally.precision >= 0.995
    assert _mean(tally.position_errors_mm) <= 0.4
    assert max(_dense(renderer="second", needles=True, thicknesses=(1.0, 2.0)).position_errors_mm) <= 1.0


def test_dense_implant_max_position_error_on_three_mm_slices() -> None:
    assert max(_dense(needles=False, thicknesses=(3.0,)).position_errors_mm) <= 1.0


def test_dense_implant_needles_simulator() -> None:
    """The simulator's needles lying in one slice: its streak model's beam hardening saturates a
    measured metal line integral at 1, so the rays along each needle (steel line integral ~20)
    lose ~19 and the needles show 1100-2000 HU along their length on 1-2 mm slices, 800-1000 HU
    on 3 mm, under the metal level: they are found by the second search from 0.6 of it (none
    were found on 1-2 mm, 4 of 8 on 3 mm). The seed rows between two needles lie in the dark band
    joining them: on 3 mm slices they keep 0.24-0.33 of a seed's integral (12 of 80 were lost)."""
    tally = _dense(renderer="simulator", needles=True)
    assert len(tally.tip_errors_mm) == 24 and tally.false_needles == 0
    assert max(tally.tip_errors_mm) <= 1.0 and max(tally.angle_errors_deg) <= 1.0
    assert tally.sensitivity >= 0.995 and tally.precision >= 0.995
    assert _mean(tally.position_errors_mm) <= 0.4 and max(tally.position_errors_mm) <= 1.0


def test_dense_implant_needles_simulator_orientation() -> None:
    """The simulator's needles lying in the seed rows' 1 mm slices draw dark bands across the seeds,
    20-30 degrees off their axes: their principal axes were up to 14.0 degrees off (10 of 55 beyond
    7). A single seed near the slice plane takes the azimuth of its image's best mirror symmetry
    (:mod:`guidance.detection.mirror_axis`): at most 7.6. The 25 seeds whose edge a needle's voxels
    cut have their orientation unknown (reported so)."""
    tally = _dense(renderer="simulator", needles=True, thicknesses=(1.0,))
    assert len(tally.orientation_errors_deg) >= 55 and max(tally.orientation_errors_deg) <= 10.0


def test_seeds_beside_needles(needles: Tally) -> None:
    """The needle scans' seeds, one of them 3 mm from a needle's axis in the next 2 mm slice: its
    core was under the needle's mask (second renderer: lost; simulator: 1.11 mm off). The mask
    now leaves out what is brighter than the needle shows there: 48 of 48, at most 0.45 mm."""
    assert needles.sensitivity == 1.0 and needles.precision == 1.0
    assert max(needles.position_errors_mm) <= 1.0
