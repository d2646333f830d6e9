"""Simulated intra-procedure scans with seeds and needles of known position (test helpers)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from guidance.plan import Plan
from guidance.volume import Grid, Volume
from simulators.phantom import Patient, PatientModel, PhantomConfig, build_model
from simulators.render import RenderedScan, ScannerConfig, render_scan


@dataclass(frozen=True, eq=False)
class Scene:
    volume: Volume
    seeds_mm: NDArray[np.float64]
    seed_directions: NDArray[np.float64]
    needle_entries_mm: NDArray[np.float64]
    needle_tips_mm: NDArray[np.float64]


def patient(seed: int = 3) -> PatientModel:
    config = PhantomConfig(rows=64, columns=64, slices=20, centre_z_mm=-10.0, gtv_volume_cc=15.0)
    return build_model(config, seed)


def scan_grid(
    centre_mm: NDArray[np.float64],
    *,
    size: int = 192,
    pixel_mm: float = 0.8,
    thickness_mm: float = 2.0,
    slices: int = 24,
) -> Grid:
    """An axial grid centred in-plane on the neck and along z on ``centre_mm``."""
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, thickness_mm]
    affine[:3, 1] = [0.0, pixel_mm, 0.0]
    affine[:3, 2] = [pixel_mm, 0.0, 0.0]
    affine[:3, 3] = [
        -(size - 1) / 2.0 * pixel_mm,
        -(size - 1) / 2.0 * pixel_mm + 8.0,
        centre_mm[2] - (slices - 1) / 2.0 * thickness_mm,
    ]
    return Grid((slices, size, size), affine, "1.2.3")


def seed_cloud(
    rng: np.random.Generator,
    centre_mm: NDArray[np.float64],
    n: int,
    *,
    half_extent_mm: tuple[float, float, float],
    min_gap_mm: float = 8.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``n`` seeds at least ``min_gap_mm`` apart in a box, directions within ~40 deg of +-x."""
    points: list[NDArray[np.float64]] = []
    while len(points) < n:
        p = centre_mm + rng.uniform(-1.0, 1.0, 3) * np.asarray(half_extent_mm)
        if all(np.linalg.norm(p - q) >= min_gap_mm for q in points):
            points.append(p)
    directions = np.array([1.0, 0.0, 0.0]) + rng.normal(scale=0.5, size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return np.array(points), directions


def render(
    model: PatientModel,
    grid: Grid,
    *,
    seeds: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
    needles: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
    noise_seed: int = 0,
    scanner: ScannerConfig | None = None,
) -> Scene:
    empty = np.zeros((0, 3))
    s_pos, s_dir = seeds if seeds is not None else (empty, empty)
    n_entry, n_tip = needles if needles is not None else (empty, empty)
    scan = render_scan(
        model,
        grid,
        seed_positions_mm=s_pos,
        seed_directions=s_dir,
        needle_entries_mm=n_entry,
        needle_tips_mm=n_tip,
        noise_seed=noise_seed,
        scanner=scanner,
    )
    return Scene(scan.volume, s_pos, s_dir, n_entry, n_tip)


@cache
def _small_case() -> tuple[Patient, Plan]:
    """The small simulated patient (phantom seed 1) and its plan, made once."""
    from simulators.case import phantom_config, plan_case
    from simulators.phantom import make_patient

    small = make_patient(phantom_config("small"), seed=1)
    return small, plan_case(small).plan


def procedure_scan(scenario: str, index: int) -> RenderedScan:
    """Scan ``index`` (from 0) of the simulated procedure of ``scenario`` on the small case (seed 1)."""
    from simulators.procedure import render_procedure_scan, simulate_procedure

    small, plan = _small_case()
    procedure = simulate_procedure(small, plan, scenario, seed=1)
    return render_procedure_scan(small, procedure, procedure.scans[index])
