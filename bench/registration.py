"""Benchmark of the rigid registration on clinical-size simulated scans.

Planning CT 512 x 512 x 80 and x 60 (0.7 mm pixels, 2 mm slices; and 24 slices of 5 mm);
intra-procedure scans 512 x 512 x 10-20 around the tumour (and the issue's 512 x 512 x 80
scan at 1 mm against the 512 x 512 x 60 planning CT) with 16 seeds, two needles
and their streaks, moved by a known rigid motion. Each planning CT is prepared once
(``prepare_fixed``, as a session does when the plan is loaded; its time is printed).

Prints a table, per case: the wall time of ``register_rigid`` on the prepared planning CT
(the session's case) and its CPU time (all threads of this process: what the load average
does not inflate); the wall time outside the levels' optimisation (the scan's levels, the
crops of the planning levels, the quality check); the wall time with the plain planning
Volume ("cold": every level reduced again); the target registration error over a box around
the GTV (mean / max, mm) and the verdict, with the load average: other processes on this
2-core machine slow it down. Per level: points, iterations, NCC and time. An untimed warm-up
registration loads the numba kernels first. Exit status 1 when a case misses its target
(TRE max bound, PASS, <= 1.5 s both prepared and cold).

Run: ``.venv/bin/python bench/registration.py``
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time

import numpy as np
from numpy.typing import NDArray

from guidance.registration import PreparedFixed, prepare_fixed, register_rigid
from guidance.volume import Volume
from simulators.phantom import PatientModel, PhantomConfig, build_model, planning_grid
from simulators.render import render_scan

logger = logging.getLogger("bench.registration")


def _rigid(
    angles_deg: tuple[float, float, float], shift_mm: tuple[float, float, float]
) -> NDArray[np.float64]:
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx
    matrix[:3, 3] = shift_mm
    return matrix


def _planning(model: PatientModel, thickness_mm: float, slices: int) -> Volume:
    config = PhantomConfig(
        pixel_spacing_mm=0.7, slice_thickness_mm=thickness_mm, slices=slices, centre_z_mm=-10.0
    )
    grid = planning_grid(config)
    return render_scan(model, grid, noise_seed=1).volume


def _scan(model: PatientModel, motion: NDArray[np.float64], thickness_mm: float, slices: int) -> Volume:
    centre = model.tumour.centre_mm
    config = PhantomConfig(
        pixel_spacing_mm=0.7, slice_thickness_mm=thickness_mm, slices=slices, centre_z_mm=float(centre[2])
    )
    offsets = np.array([(dx, dy, dz) for dx in (-6, -2, 2, 6) for dy in (-4, 4) for dz in (-4, 4)], float)
    seeds = centre + offsets
    tips = np.array([np.add(centre, (0.0, 0.0, dz)) for dz in (-5.0, 5.0)])
    entries = np.add(tips, (50.0, -40.0, 0.0))
    rendered = render_scan(
        model, planning_grid(config), seed_positions_mm=seeds, seed_directions=np.tile([0, 0, 1.0], (16, 1)),
        needle_entries_mm=entries, needle_tips_mm=tips, planning_to_scan=motion, noise_seed=2,
    )  # fmt: skip
    return rendered.volume


def _tre(
    model: PatientModel, motion: NDArray[np.float64], estimate: NDArray[np.float64]
) -> tuple[float, float]:
    r = model.tumour.radius_mm
    box = (
        np.array([(x, y, z) for x in (-r, 0, r) for y in (-r, 0, r) for z in (-r, 0, r)])
        + model.tumour.centre_mm
    )
    scan = box @ motion[:3, :3].T + motion[:3, 3]
    found = scan @ estimate[:3, :3].T + estimate[:3, 3]
    distance = np.linalg.norm(found - box, axis=1)
    return float(distance.mean()), float(distance.max())


#: (label, planning slice mm / slices, scan slice mm / slices, (angles deg, shift mm), max TRE mm).
_CASES = [
    ("2mm plan x80, 2mm scan x15, 3mm / 2deg", 2.0, 80, 2.0, 15, ((1.0, -2.0, 1.0), (3.0, -1.0, 2.0)), 0.5),
    ("2mm plan x80, 2mm scan x15, 10mm / 5deg", 2.0, 80, 2.0, 15, ((-2, 3, -5.0), (-8.0, 5.0, -4.0)), 0.5),
    ("5mm plan x24, 1mm scan x20, 5mm / 3deg", 5.0, 24, 1.0, 20, ((2.0, -1.0, 3.0), (4.0, -3.0, 2.0)), 1.0),
    ("2mm plan x80, 5mm scan x10, 5mm / 3deg", 2.0, 80, 5.0, 10, ((2.0, -1.0, 3.0), (4.0, -3.0, 2.0)), 1.0),
    ("2mm plan x60, 1mm scan x80, 6mm / 3deg", 2.0, 60, 1.0, 80, ((1.0, 2.0, -3.0), (5.0, -3.0, 2.0)), 0.5),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    logger.setLevel(logging.INFO)
    model = build_model(PhantomConfig(centre_z_mm=-10.0, gtv_volume_cc=15.0, location="neck_node"), 1)
    plannings = {key: _planning(model, *key) for key in sorted({(c[1], c[2]) for c in _CASES})}
    warm = _scan(model, np.eye(4), 2.0, 10)
    started = time.perf_counter()
    register_rigid(plannings[(2.0, 80)], warm)  # loads the numba kernels; not timed below
    register_rigid(prepare_fixed(plannings[(2.0, 80)]), warm)
    logger.info("warm-up (numba kernels loaded): %.2f s", time.perf_counter() - started)
    prepared: dict[tuple[float, int], PreparedFixed] = {}
    for key, planning in plannings.items():
        started = time.perf_counter()
        prepared[key] = prepare_fixed(planning)
        logger.info("prepare_fixed, planning CT %s: %.2f s (once per session)",
                    "x".join(map(str, planning.shape)), time.perf_counter() - started)  # fmt: skip
    header = (f"{'case':42s} {'scan':>11s} {'planning':>11s} {'s':>5s} {'cpu s':>5s} {'prep+q':>6s}"
              f" {'cold s':>6s} {'TRE mean':>8s} {'TRE max':>7s}")  # fmt: skip
    logger.info("%s %-7s %s", header, "verdict", "load average (1, 5, 15 min)")
    failures = 0
    for label, plan_mm, plan_slices, scan_mm, slices, (angles, shift), bound_mm in _CASES:
        motion = _rigid(angles, shift)
        moving = _scan(model, motion, scan_mm, slices)
        fixed = plannings[(plan_mm, plan_slices)]
        started = time.perf_counter()
        cold = register_rigid(fixed, moving)
        cold_seconds = time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        result = register_rigid(prepared[(plan_mm, plan_slices)], moving)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        outside = seconds - sum(level.seconds for level in result.levels)
        tre_mean, tre_max = _tre(model, motion, result.moving_to_fixed)
        cold_max = _tre(model, motion, cold.moving_to_fixed)[1]
        passed = result.verdict.value == cold.verdict.value == "pass"
        ok = passed and max(tre_max, cold_max) <= bound_mm and max(seconds, cold_seconds) <= 1.5
        failures += not ok
        logger.info(
            "%-42s %11s %11s %5.2f %5.2f %6.2f %6.2f %8.2f %7.2f %-7s %s%s", label,
            "x".join(map(str, moving.shape)), "x".join(map(str, fixed.shape)), seconds, cpu, outside,
            cold_seconds, tre_mean, tre_max, result.verdict.value,
            ", ".join(f"{v:.2f}" for v in os.getloadavg()),
            "" if ok else f"  <- MISSED (TRE max <= {bound_mm} mm, pass, <= 1.5 s; cold: {cold_max:.2f} mm, "
            f"{cold.verdict.value})",
        )  # fmt: skip
        for level in result.levels:
            logger.info("    level %s mm: %d points, %d iterations, NCC %.3f, %.2f s",
                        tuple(round(v, 2) for v in level.spacing_mm), level.points, level.iterations,
                        level.ncc, level.seconds)  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
