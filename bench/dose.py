"""Benchmark of the TG-43U1 dose engine: 120 seeds, 60 cc sphere + 15 mm margin, 1 mm grid.

Reports the evaluations per second (voxels x seeds / wall time) of the table
kernel (first call, including compilation or cache load, and the best and
median of warm calls), the exact numba kernel and the plain numpy reference
(on a subset of the seeds, per evaluation), the speed-up over numpy, the time
to add 5 seeds to an existing dose, the table's largest error against the
exact formalism, and the largest difference of the table kernel (compiled with
fused multiply-add) from the same kernel compiled with plain arithmetic.
Targets on the 2-core development machine: warm table dose <= 0.5 s and >= 30x
the numpy reference; adding 5 seeds <= 0.05 s. Other processes share the
machine: the load average is printed with the figures.

Run: ``.venv/bin/python bench/dose.py``
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time

import numba
import numpy as np

from guidance.dose import (  # _kernels, engine: the kernel rebuilt without FMA, for comparison
    Tg43Options,
    _kernels,
    add_seeds,
    auto_dose_grid,
    dose_on_grid,
    engine,
    load_source_data,
)
from guidance.dose.lookup import lookup_error
from guidance.dose.source_data import SourceData
from guidance.volume import Grid, Volume

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


def _repeated(label: str, evaluations: float, function, repeats: int):  # type: ignore[no-untyped-def]
    """Best and median of ``repeats`` warm calls (other processes may hold a core for a while)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    best, median = min(times), statistics.median(times)
    logger.info("%-34s %8.3f s  %10.3g evaluations/s  (median of %d: %.3f s)",
                label, best, evaluations / best, repeats, median)  # fmt: skip
    return result, best


def _fma_difference(grid: Grid, positions: np.ndarray, directions: np.ndarray, source: SourceData) -> float:
    """Largest relative difference of the grid table kernel from its plain-arithmetic (no FMA) build."""
    plain = numba.njit(parallel=True, error_model="numpy")(_kernels.table_dose_rate_grid.py_func)
    strengths = np.ones(len(positions))
    _, seeds_cm, dirs, is_line, weights = engine._prepare(
        positions, directions, strengths, source, "rate_cgy_h", None, None
    )
    affine_cm = np.ascontiguousarray(grid.affine[:3] / 10.0)
    args = (grid.shape[1], grid.shape[2], affine_cm, seeds_cm, dirs, weights, is_line,
            *engine._table_args(source, Tg43Options()))  # fmt: skip
    fused, reference = np.zeros(int(np.prod(grid.shape))), np.zeros(int(np.prod(grid.shape)))
    _kernels.table_dose_rate_grid(*args, fused)
    plain(*args, reference)
    return float(np.max(np.abs(fused / reference - 1.0)))


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
    logger.info("load average %.2f %.2f %.2f, numba threads %d", *os.getloadavg(), numba.get_num_threads())
    source = load_source_data("6711")

    def run(method: str, k: int = _N_SEEDS) -> Volume:
        return dose_on_grid(grid, positions[:k], directions[:k], strengths[:k], source, method=method)

    _timed("table, first call (compile/cache)", evaluations, lambda: run("table"))
    dose, table_s = _repeated("table, warm (best)", evaluations, lambda: run("table"), 5)
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
    _repeated("add 5 seeds (warm, best)", voxels * 5.0, add, 7)
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
    logger.info("table kernel with FMA vs plain arithmetic (12 seeds): max relative difference %.2e",
                _fma_difference(grid, positions[:12], directions[:12], source))  # fmt: skip
    logger.info("load average %.2f %.2f %.2f", *os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
