"""Time one simulated intra-procedure scan: 512 x 512 x 100, 60 seeds, 8 needles, all artefacts.

The patient model is built once (not timed), a small scan warms up the imports and the
numba kernel (timed apart); the timed part is :func:`simulators.render.render_scan`
on a scan frame rigidly moved against the planning frame (3 degrees, a few mm), including the
background rendering, partial-volume metal, noise, blur and metal streaks. Target: 10 s.

    .venv/bin/python bench/simulate.py
"""

from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

from guidance.volume import Grid
from simulators.phantom import PhantomConfig, build_model
from simulators.render import render_scan

logger = logging.getLogger("bench.simulate")
TARGET_S = 10.0


def implant(centre: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8 needles from the tumour's side, 4 x 2 pattern 8 mm apart; 60 seeds 5 mm apart along them."""
    seeds, directions, entries, tips = [], [], [], []
    direction = np.array([-side, -0.3, 0.25])
    direction /= np.linalg.norm(direction)
    for k in range(8):
        offset = np.array([0.0, (k % 4 - 1.5) * 8.0, (k // 4 - 0.5) * 10.0])
        tip = centre + offset + 15.0 * direction
        entries.append(tip - 90.0 * direction)
        tips.append(tip)
        for j in range(8 if k < 4 else 7):
            seeds.append(tip - (3.0 + 5.0 * j) * direction)
            directions.append(direction)
    return np.array(seeds), np.array(directions), np.array(entries), np.array(tips)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = build_model(PhantomConfig(gtv_volume_cc=30.0), seed=2)
    centre = model.tumour.centre_mm
    seeds, directions, entries, tips = implant(centre, 1.0 if model.side == "left" else -1.0)
    angle = math.radians(3.0)
    transform = np.eye(4)
    transform[:3, :3] = [
        [math.cos(angle), -math.sin(angle), 0],
        [math.sin(angle), math.cos(angle), 0],
        [0, 0, 1],
    ]
    transform[:3, 3] = [2.0, -3.0, 4.0]
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, 1.25]
    affine[:3, 1] = [0.0, 0.7, 0.0]
    affine[:3, 2] = [0.7, 0.0, 0.0]
    affine[:3, 3] = [-178.85, -178.85, centre[2] - 62.0]
    grid = Grid((100, 512, 512), affine)
    # One-off costs of a process (OpenCV and SciPy imports, loading the cached numba kernel),
    # paid by the first scan of a procedure: timed apart on a small scan.
    small = Grid((4, 64, 64), affine)
    start = time.perf_counter()
    render_scan(model, small, seed_positions_mm=seeds[:2], seed_directions=directions[:2], noise_seed=0)
    warm_up = time.perf_counter() - start
    load_before = os.getloadavg()
    start = time.perf_counter()
    scan = render_scan(
        model, grid, seed_positions_mm=seeds, seed_directions=directions, needle_entries_mm=entries,
        needle_tips_mm=tips, planning_to_scan=transform, noise_seed=1,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    logger.info(
        "512x512x100 scan, %d seeds, %d needles: %.2f s (%.2f of the %.0f s target; first-use warm-up "
        "%.2f s apart); load average before %.2f, after %.2f; %d CPUs; HU range %.0f..%.0f",
        len(seeds), len(entries), seconds, seconds / TARGET_S, TARGET_S, warm_up, load_before[0],
        os.getloadavg()[0],
        os.cpu_count() or 0, float(scan.volume.array.min()), float(scan.volume.array.max()),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
