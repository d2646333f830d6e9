"""Time needle and seed detection on a clinical-size simulated intra-procedure scan.

512 x 512 x 100 axial scan, 0.3 mm pixels, 1 mm slices (and, for comparison, the same
field with 5 mm slices), 30 seeds in the tumour and 2 needles with their streaks; and the
target case: the same 512 x 512 x 100 scan with 100 seeds (5 mm apart or more) and 2 needles. The
patient and the scan are rendered once (not timed); the timed stages are
:func:`guidance.detection.detect_needles`, :func:`guidance.detection.needle_mask` and
:func:`guidance.detection.detect_seeds` (with the needle mask), each run ``REPEATS`` times
(the best time is printed, the first run includes imports). Prints the seconds per stage,
the total against the 1 s target (seeds and needles together), how many needles and seeds
were found, and the load average: other processes on this 2-core machine slow it down.

Run: ``.venv/bin/python bench/detection.py``
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance.detection import detect_needles, detect_seeds, needle_mask
from guidance.volume import Grid, Volume
from simulators.phantom import PhantomConfig, build_model
from simulators.render import render_scan

logger = logging.getLogger("bench.detection")
TARGET_S = 1.0
REPEATS = 3


def _grid(centre_mm: NDArray[np.float64], thickness_mm: float, slices: int) -> Grid:
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, thickness_mm]
    affine[:3, 1] = [0.0, 0.3, 0.0]
    affine[:3, 2] = [0.3, 0.0, 0.0]
    affine[:3, 3] = [-255.5 * 0.3, -255.5 * 0.3 + 8.0, centre_mm[2] - (slices - 1) / 2.0 * thickness_mm]
    return Grid((slices, 512, 512), affine, "1.2.3")


def _scene(thickness_mm: float, slices: int, count: int = 30) -> tuple[Volume, NDArray[np.float64]]:
    model = build_model(
        PhantomConfig(rows=64, columns=64, slices=20, centre_z_mm=-10.0, gtv_volume_cc=15.0), 3
    )
    c = model.tumour.centre_mm
    rng = np.random.default_rng(0)
    seeds: list[NDArray[np.float64]] = []
    half, gap = (np.array([16.0, 16.0, 20.0]), 7.0) if count <= 30 else (np.array([22.0, 22.0, 30.0]), 5.0)
    while len(seeds) < count:
        p = c + rng.uniform(-1.0, 1.0, 3) * half
        if all(np.linalg.norm(p - q) >= gap for q in seeds):
            seeds.append(p)
    directions = np.tile([1.0, 0.0, 0.0], (count, 1))
    entries = np.array([[70.0, c[1], c[2] - 3], [c[0] - 10, c[1] - 65, c[2] + 10]])
    tips = np.array([[c[0] + 8, c[1] + 2, c[2] + 4], [c[0] - 4, c[1] + 5, c[2] - 5]])
    scan = render_scan(
        model, _grid(c, thickness_mm, slices), seed_positions_mm=np.array(seeds), seed_directions=directions,
        needle_entries_mm=entries, needle_tips_mm=tips, noise_seed=1,
    )  # fmt: skip
    return scan.volume, np.array(seeds)


def _matched(found_mm: NDArray[np.float64], true_mm: NDArray[np.float64]) -> int:
    """True seeds with a found seed within 2 mm (one to one)."""
    from scipy.optimize import linear_sum_assignment

    if len(found_mm) == 0:
        return 0
    distance = np.linalg.norm(true_mm[:, None, :] - found_mm[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(np.where(distance <= 2.0, distance, 1e6))
    return int(np.count_nonzero(distance[rows, cols] <= 2.0))


def _best(function: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def run(label: str, scene: tuple[Volume, NDArray[np.float64]]) -> None:
    volume, true_seeds = scene
    load_before = os.getloadavg()
    t_needles, needles = _best(lambda: detect_needles(volume))
    t_mask, mask = _best(lambda: needle_mask(needles, volume.grid))
    t_seeds, seeds = _best(lambda: detect_seeds(volume, exclude_mask=mask))
    total = t_needles + t_mask + t_seeds
    logger.info(
        "%s %s: needles %.3f s (%d found of 2), needle mask %.3f s, seeds %.3f s (%d found, %d of %d "
        "true within 2 mm); total %.3f s (%.2f of the %.1f s target); load average before %.2f, after %.2f; "
        "%d CPUs",
        label, volume.shape, t_needles, len(needles.needles), t_mask, t_seeds, len(seeds.seeds),
        _matched(seeds.positions_mm, true_seeds), len(true_seeds), total,
        total / TARGET_S, TARGET_S, load_before[0], os.getloadavg()[0], os.cpu_count() or 0,
    )  # fmt: skip


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run("1 mm slices", _scene(1.0, 100))
    run("5 mm slices", _scene(5.0, 20))
    run("1 mm slices, 100 seeds", _scene(1.0, 100, 100))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
