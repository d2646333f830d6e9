"""Benchmark of the TG-43U1 dose engine: 120 seeds, 60 cc sphere + 15 mm margin, 1 mm grid.

Reports the evaluations per second (voxels x seeds / wall time) of the table
kernel (first call, including compilation or cache load, and a warm call),
the exact numba kernel and the plain numpy reference (on a subset of the seeds,
per evaluation), the speed-up over numpy, the time to add 5 seeds to an
existing dose, and the table's largest error against the exact formalism.

Run: ``.venv/bin/python bench/dose.py``
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from guidance.dose import Tg43Options, add_seeds, auto_dose_grid, dose_on_grid, load_source_data
from guidance.dose.lookup import lookup_error
from guidance.volume import Volume

logger = logging.getLogger("bench.dose")

_TARGET_CC = 60.0
_N_SEEDS = 120
_STRENGTH_U = 0.6 * 1.270  # 0.6 mCi I-125


def _seeds(rng: np.random.Generator, n: int, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    direction = rng.normal(size=(n, 3))
    radial = radius_mm * rng.uniform(0.0, 1.0, n) ** (1 / 3)
    unit = rng.normal(size=(n, 3))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return unit * radial[:, np.newaxis], direction / np.linalg.norm(direction, axis=1, keepdims=True)


def _timed(label: str, evaluations: float, function):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = function()
    elapsed = time.perf_counter() - started
    logger.info("%-34s %8.3f s  %10.3g evaluations/s", label, elapsed, evaluations / elapsed)
    return result, elapsed


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    rng = np.random.default_rng(2024)
    radius = (3.0 * _TARGET_CC * 1000.0 / (4.0 * np.pi)) ** (1 / 3)
    grid = auto_dose_grid(np.array([[-radius] * 3, [radius] * 3]), margin_mm=15.0, spacing_mm=1.0)
    positions, directions = _seeds(rng, _N_SEEDS, radius - 3.0)
    strengths = np.full(_N_SEEDS, _STRENGTH_U)
    voxels = int(np.prod(grid.shape))
    evaluations = float(voxels * _N_SEEDS)
    logger.info("grid %s = %d voxels, %d seeds: %.3g evaluations", grid.shape, voxels, _N_SEEDS, evaluations)
    source = load_source_data("6711")

    def run(method: str, k: int = _N_SEEDS) -> Volume:
        return dose_on_grid(grid, positions[:k], directions[:k], strengths[:k], source, method=method)

    _timed("table, first call (compile/cache)", evaluations, lambda: run("table"))
    dose, table_s = _timed("table, warm", evaluations, lambda: run("table"))
    _timed("exact numba, first call", evaluations, lambda: run("exact"))
    exact, exact_s = _timed("exact numba, warm", evaluations, lambda: run("exact"))
    subset = 12
    _, numpy_s = _timed(
        f"numpy reference ({subset} seeds)", voxels * subset, lambda: run("reference", subset)
    )
    numpy_rate, table_rate = voxels * subset / numpy_s, evaluations / table_s
    logger.info("table speed-up over numpy reference: %.1fx (exact numba: %.1fx)",
                table_rate / numpy_rate, evaluations / exact_s / numpy_rate)  # fmt: skip
    new_positions, new_directions = _seeds(rng, 5, radius)
    add = lambda: add_seeds(dose, new_positions, new_directions, np.full(5, _STRENGTH_U), source)  # noqa: E731
    add()
    _timed("add 5 seeds (warm)", voxels * 5.0, add)
    far = np.linalg.norm(
        grid.voxel_centres_mm().reshape(-1, 3)[:, np.newaxis] - positions[np.newaxis], axis=2
    )
    away = far.min(axis=1).reshape(grid.shape) >= 1.0
    ratio = dose.array[away] / exact.array[away]
    logger.info("table vs exact on this grid (voxels >= 1 mm from every seed): max |ratio - 1| = %.2e",
                np.max(np.abs(ratio - 1)))  # fmt: skip
    logger.info("table vs exact, 6711 random points 1 mm-15 cm: max relative error %.2e",
                lookup_error(source, Tg43Options()))  # fmt: skip
    inside = grid.voxel_centres_mm().reshape((*grid.shape, 3))
    in_target = np.linalg.norm(inside, axis=-1) <= radius
    logger.info("target D90 (this random implant): %.1f Gy", np.percentile(dose.array[in_target], 10))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
