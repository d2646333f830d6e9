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

Then the quality, per scan, of every scan of a simulated procedure in each scenario of
:mod:`simulators.procedure`, easy to hard (1-5 mm slices, clusters, heavy streaks): seeds
found / true, false positives, mean and max position error, orientation error where
reported, needle tip and angle errors; and the detection suite of the tests (two renderers,
pixels 0.3-1 mm, slices 1-5 mm, clusters of 2-4 seeds), per renderer and slice thickness.
A found seed matches a true one within 2 mm in-plane and, along the slice axis, within half
a slice plus 0.5 mm (a seed lying in one thick slice is placed within that slice).

Run: ``.venv/bin/python bench/detection.py [--timing-only]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
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
ROOT = Path(__file__).resolve().parent.parent
_SCENARIOS = ("easy", "standard", "thick-slices", "cold-spot", "hard")


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
    t_mask, mask = _best(lambda: needle_mask(needles, volume.grid, ct=volume))
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


def _visible_needles(
    grid: Grid, entries: NDArray[np.float64], tips: NDArray[np.float64], min_mm: float = 8.0
) -> NDArray[np.bool_]:
    """Needles with at least ``min_mm`` of their length inside the scanned range (the others
    show a few millimetres at most, which no detector can tell from a seed)."""
    seen = np.zeros(len(tips), dtype=bool)
    for k, (entry, tip) in enumerate(zip(entries, tips, strict=True)):
        t = np.linspace(0.0, 1.0, 200)[:, None]
        inside = grid.contains_index(grid.patient_to_index(entry + t * (tip - entry)))
        seen[k] = float(np.linalg.norm(tip - entry)) * float(inside.mean()) >= min_mm
    return seen


def _within_scan(grid: Grid, seeds_mm: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Seeds whose centre lies inside the scanned slab (half a slice beyond the first and last
    slice centres): a seed beyond shows a sliver at most."""
    index = grid.patient_to_index(seeds_mm) if len(seeds_mm) else np.zeros((0, 3))
    inside: NDArray[np.bool_] = np.all((index >= -0.5) & (index <= np.array(grid.shape) - 0.5), axis=1)
    return inside


def procedure_rows(scenarios: tuple[str, ...] = _SCENARIOS) -> None:
    """Detection on every scan of a simulated procedure per scenario, against its ground truth."""
    from simulators.case import phantom_config, plan_case
    from simulators.phantom import make_patient
    from simulators.procedure import render_procedure_scan, simulate_procedure

    sys.path.insert(0, str(ROOT))
    from tests.guidance.detection.suite import measure_scan

    logger.info("quality per scan of a simulated procedure (scenario, scan, slice thickness):")
    patient = make_patient(phantom_config("small"), seed=1)
    plan = plan_case(patient).plan
    for name in scenarios:
        procedure = simulate_procedure(patient, plan, name, seed=1)
        for scan in procedure.scans:
            rendered = render_procedure_scan(patient, procedure, scan)
            truth = rendered.truth
            entries = np.array(truth.needle_entries_scan_mm).reshape(-1, 3)
            tips = np.array(truth.needle_tips_scan_mm).reshape(-1, 3)
            seen = _visible_needles(rendered.volume.grid, entries, tips)
            seeds = np.array(truth.seeds_scan_mm).reshape(-1, 3)
            within = _within_scan(rendered.volume.grid, seeds)
            quality = measure_scan(
                rendered.volume, seeds[within], np.array(truth.seed_directions_scan).reshape(-1, 3)[within],
                entries[seen], tips[seen],
            )  # fmt: skip
            thickness = float(scan.grid.spacing_mm[0])
            logger.info("%-12s scan %d, %.0f mm, %d of %d seeds and %d of %d needles in range: %s", name,
                        scan.index, thickness, int(within.sum()), len(within), int(seen.sum()), len(seen),
                        quality.row())  # fmt: skip


def suite_rows() -> None:
    """The tests' detection suite, summed per renderer and slice thickness."""
    sys.path.insert(0, str(ROOT))
    from tests.guidance.detection.suite import Tally
    from tests.guidance.detection.suite import measure as suite_measure
    from tests.guidance.detection.test_suite import _DENSE_SCANS, _NEEDLE_SCANS, _SEED_SCANS

    groups: dict[str, Tally] = {}
    for condition in _SEED_SCANS + _DENSE_SCANS + _NEEDLE_SCANS:
        kind = "dense" if condition.dense else "needles" if condition.needles else "seeds"
        key = f"{condition.renderer:9s} {kind:7s} {condition.thickness_mm:3.0f} mm"
        groups.setdefault(key, Tally()).add(suite_measure(condition))
    logger.info("the tests' detection suite (renderer, kind, slice thickness):")
    for key, tally in groups.items():
        logger.info("suite %s: %s", key, tally.row())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing-only", action="store_true", help="skip the quality tables")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run("1 mm slices", _scene(1.0, 100))
    run("5 mm slices", _scene(5.0, 20))
    run("1 mm slices, 100 seeds", _scene(1.0, 100, 100))
    if not args.timing_only:
        for name in ("guidance", "simulators"):
            logging.getLogger(name).setLevel(logging.WARNING)
        procedure_rows()
        suite_rows()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
