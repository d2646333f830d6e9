"""A small bundled example case: a neck-like phantom, its structures and a seed plan.

It exists so that a newcomer (and ``seedguide demo``) has something real to
look at without any data from a hospital: a CT series, an RT Structure Set
and a brachytherapy RT Plan written by our own writers, linked by their UIDs.
It is deliberately simple (analytic ellipses and spheres, seeds on three
parallel needles); the full synthetic patients and procedures are built by
the phantom and procedure simulators.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from guidance.dicomio.ct import write_ct_series
from guidance.dicomio.dataset import StudyContext, save
from guidance.dicomio.rtplan_writer import write_rtplan
from guidance.dicomio.rtstruct import write_rtstruct
from guidance.plan import Isotope, Needle, Plan, Seed, SourceModel, air_kerma_strength_from_mci
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume

__all__ = ["ExampleCase", "build_example", "write_example"]

# Hounsfield units of the phantom's tissues.
_HU_AIR, _HU_FAT, _HU_MUSCLE, _HU_TUMOUR, _HU_BONE, _HU_CORD = -1000.0, -90.0, 45.0, 60.0, 700.0, 30.0


@dataclass(frozen=True)
class ExampleCase:
    """The example's planning CT, structures and plan, in one frame of reference."""

    ct: Volume
    structures: tuple[Structure, ...]
    plan: Plan
    context: StudyContext


def _ellipse(
    centre: tuple[float, float], radii: tuple[float, float], z_mm: float, n: int = 48
) -> NDArray[np.float64]:
    angles = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.column_stack(
        [centre[0] + radii[0] * np.cos(angles), centre[1] + radii[1] * np.sin(angles), np.full(n, z_mm)]
    )


def _phantom_grid(frame_uid: str) -> Grid:
    # 128 x 128 pixels of 1.5 mm, 40 slices of 2.5 mm, axial, centred on the neck.
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, 2.5]
    affine[:3, 1] = [0.0, 1.5, 0.0]
    affine[:3, 2] = [1.5, 0.0, 0.0]
    affine[:3, 3] = [-95.25, -95.25, -50.0]
    return Grid((40, 128, 128), affine, frame_uid)


def _structures(grid: Grid) -> tuple[Structure, ...]:
    z_values = grid.index_to_patient(
        np.column_stack([np.arange(grid.shape[0]), np.zeros((grid.shape[0], 2))])
    )[:, 2]
    body = [_ellipse((0.0, 0.0), (70.0, 60.0), z) for z in z_values]
    cord = [_ellipse((0.0, 32.0), (5.0, 5.0), z, 24) for z in z_values]
    gtv_centre, gtv_radius = np.array([-30.0, -10.0, 0.0]), 15.0
    gtv = []
    for z in z_values:
        half_chord_sq = gtv_radius**2 - (z - gtv_centre[2]) ** 2
        if half_chord_sq > 1.0:
            r = math.sqrt(half_chord_sq)
            gtv.append(_ellipse((gtv_centre[0], gtv_centre[1]), (r, r), z, 36))
    frame = grid.frame_of_reference_uid
    return (
        Structure("BODY", StructureRole.EXTERNAL, tuple(body), frame, 1, (0, 128, 0)),
        Structure("GTV", StructureRole.TARGET, tuple(gtv), frame, 2, (255, 0, 0)),
        Structure("SpinalCord", StructureRole.ORGAN_AT_RISK, tuple(cord), frame, 3, (255, 255, 0)),
    )


def _ct_values(grid: Grid) -> NDArray[np.float32]:
    centres = grid.voxel_centres_mm()
    x, y, z = centres[..., 0], centres[..., 1], centres[..., 2]
    hu = np.full(grid.shape, _HU_AIR, dtype=np.float32)
    hu[(x / 70.0) ** 2 + (y / 60.0) ** 2 <= 1.0] = _HU_FAT
    hu[(x / 62.0) ** 2 + (y / 52.0) ** 2 <= 1.0] = _HU_MUSCLE
    hu[(x**2 + (y - 30.0) ** 2) <= 14.0**2] = _HU_BONE  # vertebra around the canal
    hu[(x**2 + (y - 32.0) ** 2) <= 5.0**2] = _HU_CORD
    hu[((x + 30.0) ** 2 + (y + 10.0) ** 2 + z**2) <= 15.0**2] = _HU_TUMOUR
    return hu


def _plan(structures: tuple[Structure, ...], frame_uid: str) -> Plan:
    model = SourceModel("6711", Isotope.I125, 59.40, "GE Healthcare (Oncura)")
    strength_u = air_kerma_strength_from_mci(0.6, Isotope.I125)
    seeds: list[Seed] = []
    needles: list[Needle] = []
    # Three needles entering from the patient's right-anterior side (-x, -y), 8 mm apart.
    direction = np.array([1.0, 1.0, 0.0]) / math.sqrt(2.0)
    for k, offset in enumerate((-8.0, 0.0, 8.0)):
        tip = np.array([-30.0, -10.0, offset]) + 12.0 * direction
        first = len(seeds)
        for j in range(4):
            seeds.append(Seed(tip - (2.0 + 7.5 * j) * direction, direction, strength_u, model.model_id, k))
        needles.append(
            Needle(tip - 80.0 * direction, tip, tuple(range(first, len(seeds))), k + 1, f"N{k + 1}")
        )
    return Plan(
        frame_of_reference_uid=frame_uid,
        seeds=tuple(seeds),
        needles=tuple(needles),
        sources={model.model_id: model},
        structures=structures,
        prescription_gy=120.0,
        strength_reference_datetime=dt.datetime(2026, 1, 5, 12, 0),
        label="Example",
    )


def build_example(context: StudyContext | None = None) -> ExampleCase:
    """Build the example case in memory (deterministic: no randomness)."""
    ctx = context or StudyContext(patient_id="SEEDGUIDE-EXAMPLE", patient_name="EXAMPLE^NECK")
    grid = _phantom_grid(ctx.frame_of_reference_uid)
    structures = _structures(grid)
    ct = Volume.on_grid(grid, _ct_values(grid), modality="CT")
    return ExampleCase(ct, structures, _plan(structures, grid.frame_of_reference_uid), ctx)


def write_example(folder: str | os.PathLike[str], case: ExampleCase | None = None) -> list[Path]:
    """Write the example's CT series, RT Structure Set and RT Plan into ``folder``."""
    example = case or build_example()
    ct = write_ct_series(example.ct, example.context, series_number=1, series_description="Planning CT")
    rtstruct = write_rtstruct(example.structures, example.context, referenced_ct=ct, label="Example")
    rtplan = write_rtplan(example.plan, example.context, structure_set_uid=str(rtstruct.SOPInstanceUID))
    return save([*ct, rtstruct, rtplan], folder)
