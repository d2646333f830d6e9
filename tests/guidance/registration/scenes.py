"""Simulated planning CT / intra-procedure scan pairs with a known rigid motion (test helpers)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.volume import Grid, Volume
from simulators.phantom import PatientModel, PhantomConfig, build_model, planning_grid
from simulators.render import ScannerConfig, render_scan

#: The CT couch: a slab under the patient that stays put in the scanner frame (y, mm).
_TABLE_Y_MM = (74.0, 78.0)
_TABLE_HU = 300.0


def rigid(
    angles_deg: tuple[float, float, float],
    shift_mm: tuple[float, float, float],
    centre_mm: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Rotation Rz Ry Rx (degrees) about ``centre_mm`` followed by a shift."""
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    centre = np.zeros(3) if centre_mm is None else np.asarray(centre_mm, dtype=np.float64)
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx
    matrix[:3, 3] = centre + np.asarray(shift_mm) - matrix[:3, :3] @ centre
    return matrix


def _add_table(volume_hu: NDArray[np.float32], grid: Grid) -> None:
    """Paint the couch shell (scanner frame) where the image shows air, in place (the patient lies on it)."""
    rows = np.arange(grid.shape[1], dtype=np.float64) * grid.affine[1, 1] + grid.affine[1, 3]
    on_table = (rows >= _TABLE_Y_MM[0]) & (rows <= _TABLE_Y_MM[1])
    band = volume_hu[:, on_table, :]
    band[band < -300.0] = _TABLE_HU
    volume_hu[:, on_table, :] = band


@dataclass(frozen=True, eq=False)
class Scene:
    model: PatientModel
    fixed: Volume
    moving: Volume
    moving_to_fixed: NDArray[np.float64]
    gtv_points_scan_mm: NDArray[np.float64]

    def tre_mm(self, estimate: NDArray[np.float64]) -> tuple[float, float]:
        """Mean and max distance over the GTV box between truth- and estimate-mapped points."""
        p = self.gtv_points_scan_mm
        truth = p @ self.moving_to_fixed[:3, :3].T + self.moving_to_fixed[:3, 3]
        found = p @ estimate[:3, :3].T + estimate[:3, 3]
        distance = np.linalg.norm(truth - found, axis=1)
        return float(distance.mean()), float(distance.max())


def planning(
    seed: int = 1, *, size: int = 160, pixel_mm: float = 1.2, thickness_mm: float = 2.0, slices: int = 40
) -> tuple[PatientModel, Volume]:
    """A planning CT of a neck-node patient around its tumour, with the couch and noise."""
    config = PhantomConfig(
        rows=size,
        columns=size,
        pixel_spacing_mm=pixel_mm,
        slice_thickness_mm=thickness_mm,
        slices=slices,
        centre_z_mm=-10.0,
        gtv_volume_cc=15.0,
        location="neck_node",
    )
    model = build_model(config, seed)
    grid = planning_grid(config)
    image = np.array(render_scan(model, grid, noise_seed=seed + 100).volume.array)
    _add_table(image, grid)
    return model, Volume.on_grid(grid, image, modality="CT")


def scene(
    model: PatientModel,
    fixed: Volume,
    planning_to_scan: NDArray[np.float64],
    *,
    size: int = 160,
    pixel_mm: float = 1.2,
    thickness_mm: float = 2.0,
    slices: int = 15,
    metal: bool = True,
    streaks: bool = True,
    noise_seed: int = 7,
) -> Scene:
    """An intra-procedure scan of ``slices`` slices around the tumour (scanner frame) after a motion."""
    centre = model.tumour.centre_mm
    config = PhantomConfig(
        rows=size,
        columns=size,
        pixel_spacing_mm=pixel_mm,
        slice_thickness_mm=thickness_mm,
        slices=slices,
        centre_z_mm=float(centre[2]),
    )
    grid = planning_grid(config)
    seeds = np.array(
        [np.add(centre, (dx, dy, dz)) for dx in (-5.0, 5.0) for dy in (-5.0, 5.0) for dz in (-4.0, 4.0)]
    )
    entries = np.array([np.add(centre, (50.0, -40.0, dz)) for dz in (-5.0, 5.0)])
    tips = np.array([np.add(centre, (0.0, 0.0, dz)) for dz in (-5.0, 5.0)])
    objects = (
        {
            "seed_positions_mm": seeds,
            "seed_directions": np.tile([0.0, 0.0, 1.0], (len(seeds), 1)),
            "needle_entries_mm": entries,
            "needle_tips_mm": tips,
        }
        if metal
        else {}
    )
    rendered = render_scan(
        model,
        grid,
        planning_to_scan=planning_to_scan,
        scanner=ScannerConfig(streaks=streaks),
        noise_seed=noise_seed,
        **objects,
    )
    image = np.array(rendered.volume.array)
    _add_table(image, grid)
    moving = Volume.on_grid(grid, image, modality="CT")
    r = model.tumour.radius_mm
    box = np.array([[x, y, z] for x in (-r, 0, r) for y in (-r, 0, r) for z in (-r, 0, r)]) + centre
    box_scan = box @ planning_to_scan[:3, :3].T + planning_to_scan[:3, 3]
    return Scene(model, fixed, moving, np.linalg.inv(planning_to_scan), box_scan)
