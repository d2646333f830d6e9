"""Benchmark of the rigid registration on clinical-size simulated scans.

Planning CT 512 x 512 x 80 (0.7 mm pixels, 2 mm slices; and 24 slices of 5 mm);
intra-procedure scans 512 x 512 x 15-20 around the tumour with 16 seeds, two needles
and their streaks, moved by a known rigid motion. Prints, per case, the wall time of
``register_rigid`` (the first case includes loading the numba kernels), the target
registration error over a box around the GTV (mean / max, mm) and the verdict, with
the load average: other processes on this 2-core machine slow it down.

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

from guidance.registration import register_rigid
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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    model = build_model(PhantomConfig(centre_z_mm=-10.0, gtv_volume_cc=15.0, location="neck_node"), 1)
    plannings = {2.0: _planning(model, 2.0, 80), 5.0: _planning(model, 5.0, 24)}
    cases = [
        ("2 mm plan, 2 mm scan x15, 3 mm / 2 deg", 2.0, 2.0, 15, ((1.0, -2.0, 1.0), (3.0, -1.0, 2.0))),
        ("2 mm plan, 2 mm scan x15, 10 mm / 5 deg", 2.0, 2.0, 15, ((-2.0, 3.0, -5.0), (-8.0, 5.0, -4.0))),
        ("5 mm plan, 1 mm scan x20, 5 mm / 3 deg", 5.0, 1.0, 20, ((2.0, -1.0, 3.0), (4.0, -3.0, 2.0))),
        ("2 mm plan, 5 mm scan x10, 5 mm / 3 deg", 2.0, 5.0, 10, ((2.0, -1.0, 3.0), (4.0, -3.0, 2.0))),
    ]
    for label, plan_mm, scan_mm, slices, (angles, shift) in cases:
        motion = _rigid(angles, shift)
        moving = _scan(model, motion, scan_mm, slices)
        fixed = plannings[plan_mm]
        started = time.perf_counter()
        result = register_rigid(fixed, moving)
        seconds = time.perf_counter() - started
        tre_mean, tre_max = _tre(model, motion, result.moving_to_fixed)
        logger.info(
            "%-42s %s vs %s: %.2f s, TRE mean %.2f max %.2f mm, %s (NCC %.3f, bone %.2f mm), load %s",
            label, moving.shape, fixed.shape, seconds, tre_mean, tre_max, result.verdict.value,
            result.quality.similarity_ncc, result.quality.bone_surface_distance_mm,
            ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        )  # fmt: skip
        for level in result.levels:
            logger.info("    level %s mm: %d points, %d iterations, NCC %.3f, %.2f s", level.spacing_mm,
                        level.points, level.iterations, level.ncc, level.seconds)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
