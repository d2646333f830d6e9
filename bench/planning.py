"""Benchmark of the seed planner: quality on spheres against a uniform 1 cm loading, and suggestion time.

(1) Spherical targets of 1.5, 5, 15, 40, 60 and 140 cm^3 at the centre of a body
box, I-125 model 6711 seeds of 0.762 U, prescription 145 Gy, target mask
(fraction) on a 2 mm grid, candidate tracks parallel to +Y on a triangular
5 mm lattice (the densest arrangement of needles 5 mm apart; the needle
direction of the uniform loading too; a 30 degree cone of directions about
+Y, 7 mm apart, gave more seeds: the oblique tracks block each other under
the 5 mm track distance) with candidate seeds every 2.5 mm and at the centre
of each track's chord (the 140 cm^3 case: seeds every 5 mm, on a 3 mm mask
grid with 3 mm optimiser sample points, to keep the run within a few minutes). For each: the optimiser's seed
count and wall time (numba kernels warmed up first), and its D90, V100 and V150
verified independently (:func:`guidance.dose.dose_on_grid` on a 1 mm
grid, :func:`guidance.dose.cumulative_dvh` of the analytic sphere's contours).
Baselines: a uniform 1 cm lattice of seed positions (through the centre)
clipped to the sphere, seed axes along +Y, evaluated the same way, (a) at the
same strength (0.762 U): it under-doses the small targets and over-doses the
large ones; (b) at the strength that makes its D90 exactly the prescription
(dose is linear in strength: 0.762 U x prescription / D90 of (a)), which is
what a uniform loading is in practice (the seed strength is ordered for the
volume). The planner is run twice per case: at 0.762 U (compared with (a)
where (a) reaches the prescription) and at the strength of (b) (same seed
strength, both at D90 >= prescription). Per case and overall, the bench prints
whether the planner uses fewer seeds than the uniform loading at equal or
better coverage (D90 >= prescription, V100 as good), with V150 and the total
air-kerma strength (seeds x U) of both.

(2) Suggestion time: the 60 cm^3 plan with 3 of its seeds removed; the time of
:func:`guidance.coverage.suggest_seeds` once the current dose is known (target <= 2 s).

The load average is printed at the start and the end (the machine is shared).

Run: ``.venv/bin/python bench/planning.py``
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from guidance.coverage import SuggestionOptions, suggest_seeds
from guidance.dose import auto_dose_grid, cumulative_dvh, dose_on_grid
from guidance.planning import (
    PlacementOptions,
    PlacementResult,
    SeedSet,
    candidate_tracks,
    cone_directions,
    optimise_seed_placement,
)
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume

logger = logging.getLogger("bench.planning")

_VOLUMES_CC = (1.5, 5.0, 15.0, 40.0, 60.0, 140.0)
_COARSE_CC = 140.0  # 3 mm mask grid and 3 mm optimiser samples: 200 s with 2 mm samples, 57 s with 3 mm
_PRESCRIPTION_GY = 145.0
_STRENGTH_U = 0.762
_MODEL = "6711"
_AXIS = (0.0, 1.0, 0.0)
_DIRECTIONS = cone_directions(_AXIS, half_angle_deg=30.0, step_deg=15.0)  # of the suggestions (part 2)
_TRACK_SPACING_MM = 5.0
_LATTICE = "triangular"
_SEED_STEP_MM = 2.5
_COARSE_SEED_STEP_MM = 5.0  # 140 cm^3: 2.5 mm steps doubled its 1300 candidates, 72 s at load 2.8
_OPTIONS = PlacementOptions(prescription_gy=_PRESCRIPTION_GY, strength_u=_STRENGTH_U, source_model=_MODEL)


def radius_mm(volume_cc: float) -> float:
    return float((3.0 * volume_cc * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0))


def _sphere_fraction(grid: Grid, radius: float) -> Volume:
    """Fraction of each voxel inside a ball at the origin (3 x 3 x 3 subsamples), as the tests' phantoms."""
    centres = grid.voxel_centres_mm()
    offsets = (np.arange(3) - 1.0) / 3.0 * grid.spacing_mm[0]
    fraction = np.zeros(grid.shape)
    for dx in offsets:
        for dy in offsets:
            for dz in offsets:
                fraction += np.linalg.norm(centres + np.array([dx, dy, dz]), axis=-1) <= radius
    return Volume.on_grid(grid, (fraction / 27.0).astype(np.float32))


def _sphere_structure(radius: float) -> Structure:
    """The sphere contoured as DICOM would: 180-gons on axial planes 2 mm apart."""
    angles = np.linspace(0.0, 2.0 * math.pi, 180, endpoint=False)
    top = math.floor((radius - 0.5) / 2.0) * 2.0
    contours = []
    for z in np.arange(-top, top + 1e-9, 2.0):
        r = math.sqrt(radius**2 - z**2)
        contours.append(np.column_stack([r * np.cos(angles), r * np.sin(angles), np.full(angles.size, z)]))
    return Structure("GTV", StructureRole.TARGET, tuple(contours), "", 1)


@dataclass(frozen=True)
class _Row:
    """Seed count, verified D90 / V100 / V150, wall time; ``strength_u`` per seed."""

    n_seeds: int
    d90_gy: float
    v100_percent: float
    v150_percent: float
    seconds: float = float("nan")
    strength_u: float = _STRENGTH_U

    @property
    def total_u(self) -> float:
        return self.n_seeds * self.strength_u


@dataclass(frozen=True)
class _Case:
    target: Volume
    body: Volume
    result: PlacementResult


def _phantom(volume_cc: float, spacing_mm: float) -> tuple[Volume, Volume]:
    """Target fraction and body box (skin 15 mm or more outside the sphere)."""
    half_width = max(40.0, radius_mm(volume_cc) + 15.0)
    grid = Grid.from_bounds([-half_width] * 3, [half_width] * 3, spacing_mm)
    edge = half_width - spacing_mm
    body = np.all(np.abs(grid.voxel_centres_mm()) <= edge, axis=-1)
    return _sphere_fraction(grid, radius_mm(volume_cc)), Volume.on_grid(grid, body)


def _evaluate(volume_cc: float, positions_mm: NDArray[np.float64], strength_u: float = _STRENGTH_U) -> _Row:
    """D90, V100, V150 of the sphere's contours in a 1 mm dose grid of the seeds (axes along +Y)."""
    radius = radius_mm(volume_cc)
    grid = Grid.from_bounds([-radius - 3.0] * 3, [radius + 3.0] * 3, 1.0)
    directions = np.tile(_AXIS, (positions_mm.shape[0], 1))
    strengths = np.full(positions_mm.shape[0], strength_u)
    dose = dose_on_grid(grid, positions_mm, directions, strengths, _MODEL)
    curve = cumulative_dvh(dose, _sphere_structure(radius))
    return _Row(
        positions_mm.shape[0],
        curve.dose_at_percent(90.0),
        curve.volume_percent_at(_PRESCRIPTION_GY),
        curve.volume_percent_at(1.5 * _PRESCRIPTION_GY),
        strength_u=strength_u,
    )


def _evaluate_result(volume_cc: float, result: PlacementResult, seconds: float) -> _Row:
    """As :func:`_evaluate`, with the optimiser's own seed axes (along their tracks)."""
    radius = radius_mm(volume_cc)
    grid = Grid.from_bounds([-radius - 3.0] * 3, [radius + 3.0] * 3, 1.0)
    seeds = result.new_seed_set(_MODEL)
    dose = dose_on_grid(grid, seeds.positions_mm, seeds.directions, seeds.strengths_u, _MODEL)
    curve = cumulative_dvh(dose, _sphere_structure(radius))
    return _Row(
        len(seeds),
        curve.dose_at_percent(90.0),
        curve.volume_percent_at(_PRESCRIPTION_GY),
        curve.volume_percent_at(1.5 * _PRESCRIPTION_GY),
        seconds,
        float(seeds.strengths_u[0]) if len(seeds) else _STRENGTH_U,
    )


def _uniform_lattice(volume_cc: float) -> NDArray[np.float64]:
    """1 cm lattice points (one at the centre) inside the sphere."""
    radius = radius_mm(volume_cc)
    steps = np.arange(-np.floor(radius / 10.0), np.floor(radius / 10.0) + 1) * 10.0
    points = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    inside: NDArray[np.float64] = points[np.linalg.norm(points, axis=1) <= radius]
    return inside


def _plan(volume_cc: float, strength_u: float = _STRENGTH_U) -> tuple[_Case, float]:
    spacing = 3.0 if volume_cc == _COARSE_CC else 2.0
    step = _COARSE_SEED_STEP_MM if volume_cc == _COARSE_CC else _SEED_STEP_MM
    target, body = _phantom(volume_cc, spacing)
    options = replace(_OPTIONS, sample_spacing_mm=spacing, strength_u=strength_u)
    started = time.perf_counter()
    tracks = candidate_tracks(
        target,
        body,
        directions=[_AXIS],
        track_spacing_mm=_TRACK_SPACING_MM,
        seed_step_mm=step,
        lattice=_LATTICE,
        run_centres=True,
    )
    result = optimise_seed_placement(tracks, target, options=options, body=body)
    return _Case(target, body, result), time.perf_counter() - started


def _comparison(opt: _Row, base: _Row) -> str:
    """At one seed strength: 'yes' (fewer seeds, D90 >= P, V100 as good), 'equal', 'no', or why not."""
    if opt.d90_gy < _PRESCRIPTION_GY:
        return "no (planner D90 < P)"
    if base.d90_gy < _PRESCRIPTION_GY - 0.05:
        return f"n/a (uniform D90 {base.d90_gy:.0f} < P)"
    fewer = opt.n_seeds < base.n_seeds and opt.v100_percent >= min(base.v100_percent, 90.0)
    if fewer:
        return "yes"
    return "equal" if opt.n_seeds == base.n_seeds else "no"


def _log_header() -> None:
    logger.info(
        "%6s | %-36s | %-17s || %-6s | %-36s | %-21s",
        "", "planner at 0.762 U (Gy, %, s)", "uniform at 0.762 U", "U/seed",
        "planner at the scaled strength", "uniform, D90 = P",
    )  # fmt: skip
    logger.info(
        "%6s | %4s %6s %5s %5s %6s %5s | %4s %6s %5s || %6s | %4s %6s %5s %5s %6s %5s | %4s %5s %5s | %s",
        "cc", "n", "D90", "V100", "V150", "time", "sumU", "n", "D90", "V150",
        "", "n", "D90", "V100", "V150", "time", "sumU", "n", "V150", "sumU", "fewer seeds: same U | scaled U",
    )  # fmt: skip


def _log_case(volume_cc: float, rows: tuple[_Row, _Row, _Row, _Row]) -> None:
    opt, base, opt_s, scaled = rows
    logger.info(
        "%6.1f | %4d %6.1f %5.1f %5.1f %6.1f %5.1f | %4d %6.1f %5.1f || %6.3f "
        "| %4d %6.1f %5.1f %5.1f %6.1f %5.1f | %4d %5.1f %5.1f | %s | %s%s",
        volume_cc, opt.n_seeds, opt.d90_gy, opt.v100_percent, opt.v150_percent, opt.seconds, opt.total_u,
        base.n_seeds, base.d90_gy, base.v150_percent,
        scaled.strength_u, opt_s.n_seeds, opt_s.d90_gy, opt_s.v100_percent, opt_s.v150_percent, opt_s.seconds,
        opt_s.total_u, scaled.n_seeds, scaled.v150_percent, scaled.total_u,
        _comparison(opt, base), _comparison(opt_s, scaled),
        "  (3 mm mask grid and samples, 5 mm seed steps)" if volume_cc == _COARSE_CC else "",
    )  # fmt: skip


def _quality() -> dict[float, _Case]:
    _log_header()
    cases: dict[float, _Case] = {}
    verdicts: dict[str, list[str]] = {"same": [], "scaled": []}
    reached = True
    for volume_cc in _VOLUMES_CC:
        case, seconds = _plan(volume_cc)
        cases[volume_cc] = case
        opt = _evaluate_result(volume_cc, case.result, seconds)
        lattice = _uniform_lattice(volume_cc)
        base = _evaluate(volume_cc, lattice)
        scaled = _evaluate(volume_cc, lattice, _STRENGTH_U * _PRESCRIPTION_GY / base.d90_gy)
        case_s, seconds_s = _plan(volume_cc, scaled.strength_u)
        opt_s = _evaluate_result(volume_cc, case_s.result, seconds_s)
        _log_case(volume_cc, (opt, base, opt_s, scaled))
        verdicts["same"].append(_comparison(opt, base))
        verdicts["scaled"].append(_comparison(opt_s, scaled))
        reached &= opt.d90_gy >= _PRESCRIPTION_GY and opt_s.d90_gy >= _PRESCRIPTION_GY
        for result in (case.result, case_s.result):
            if not result.reached:
                logger.info("        planner statement: %s", result.statement)
    logger.info("planner D90 >= %.0f Gy on every case, at both strengths: %s", _PRESCRIPTION_GY, reached)
    for key, label in (("same", "at 0.762 U"), ("scaled", "at the scaled uniform strength")):
        counts = {v: sum(x.startswith(v) for x in verdicts[key]) for v in ("yes", "equal", "no", "n/a")}
        logger.info(
            "fewer seeds than the uniform loading %s at equal or better coverage: %d yes, %d equal, %d no, "
            "%d not comparable (uniform below P) of %d cases",
            label, counts["yes"], counts["equal"], counts["no"], counts["n/a"], len(verdicts[key]),
        )  # fmt: skip
    comparable = [v for key in verdicts for v in verdicts[key] if not v.startswith("n/a")]
    logger.info(
        "verdict: fewer seeds at equal or better coverage on every comparable case: %s",
        all(v == "yes" for v in comparable),
    )
    return cases


def _suggestion_time(case: _Case) -> None:
    seeds = case.result.new_seed_set(_MODEL)
    keep = np.setdiff1d(np.arange(len(seeds)), np.linspace(0, len(seeds) - 1, 3).astype(int))
    current = SeedSet(seeds.positions_mm[keep], seeds.directions[keep], seeds.strengths_u[keep], _MODEL)
    grid = auto_dose_grid(case.target, margin_mm=10.0, spacing_mm=1.0)
    dose = dose_on_grid(grid, current.positions_mm, current.directions, current.strengths_u, _MODEL)
    directions = tuple((float(x), float(y), float(z)) for x, y, z in _DIRECTIONS)
    options = SuggestionOptions(directions=directions)
    started = time.perf_counter()
    report = suggest_seeds(dose, current, case.target, _PRESCRIPTION_GY, body=case.body, options=options)
    seconds = time.perf_counter() - started
    logger.info(
        "suggestion, 60 cc with 3 of %d seeds removed: %.2f s (target <= 2 s: %s); "
        "D90 %.1f -> %s Gy with %d suggested seeds (%s)",
        len(seeds), seconds, seconds <= 2.0, report.current_d90_gy,
        "n/a" if report.predicted_d90_gy is None else f"{report.predicted_d90_gy:.1f}",
        len(report.suggestions), report.statement,
    )  # fmt: skip


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("guidance").setLevel(logging.WARNING)  # the table only, not each stage's summary
    logger.info("load average at start %.2f %.2f %.2f", *os.getloadavg())
    _evaluate(1.5, np.zeros((1, 3)))  # numba compilation or cache load, outside the timings
    started = time.perf_counter()
    cases = _quality()
    _suggestion_time(cases[60.0])
    elapsed = time.perf_counter() - started
    logger.info("total %.1f s; load average at end %.2f %.2f %.2f", elapsed, *os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
