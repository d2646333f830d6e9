"""Our RT Structure Set + RT Dose, read by an independent implementation (dicompyler-core).

A sphere of radius R (contours every 2 mm) in a point-like dose field
D(r) = D0 (r0 / r)^2 has a known DVH: the fraction of the sphere receiving at
least d lies within r_d = r0 sqrt(D0 / d), so D90 = D0 (r0 / (R 0.9^(1/3)))^2.
dicompyler-core computes the DVH from our two files on its own (its own
contour rasterisation and dose interpolation); it must agree with that answer
and with our rasteriser's volume.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from guidance.dicomio.dataset import StudyContext, from_bytes, to_bytes
from guidance.dicomio.rtdose import write_rtdose
from guidance.dicomio.rtstruct import write_rtstruct
from guidance.rasterise import structure_volume_cc
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume

RADIUS_MM, D0_GY, R0_MM = 15.0, 150.0, 10.0


def _sphere(context: StudyContext) -> Structure:
    contours = []
    for z in np.arange(-14.0, 14.01, 2.0):
        r = math.sqrt(RADIUS_MM**2 - z**2)
        angles = np.linspace(0.0, 2.0 * math.pi, 120, endpoint=False)
        contours.append(np.column_stack([r * np.cos(angles), r * np.sin(angles), np.full(angles.size, z)]))
    return Structure("GTV", StructureRole.TARGET, tuple(contours), context.frame_of_reference_uid, 1)


@pytest.mark.parametrize("spacing_mm", [1.0, 2.0])
def test_dicompyler_dvh_of_our_files_matches_the_known_answer(
    dicompyler: SimpleNamespace, spacing_mm: float
) -> None:
    context = StudyContext()
    gtv = _sphere(context)
    grid = Grid.from_bounds([-20, -20, -16], [20, 20, 16], spacing_mm, context.frame_of_reference_uid)
    distance_mm = np.linalg.norm(grid.voxel_centres_mm(), axis=-1)
    dose_gy = D0_GY * (R0_MM / np.maximum(distance_mm, 1.0)) ** 2
    plan_uid = "1.2.826.0.1.3680043.8.498.1"
    rtstruct = from_bytes(to_bytes(write_rtstruct([gtv], context)))
    rtdose = from_bytes(
        to_bytes(write_rtdose(Volume.on_grid(grid, dose_gy), context, referenced_plan_uid=plan_uid))
    )

    # dicompyler samples the dose at in-plane points; refine them to 0.5 mm on the coarser grid.
    dvh = dicompyler.dvhcalc.get_dvh(rtstruct, rtdose, 1, interpolation_resolution=(0.5, 0.5))

    expected_d90 = D0_GY * (R0_MM / (RADIUS_MM * 0.9 ** (1 / 3))) ** 2
    assert dvh.D90.value == pytest.approx(expected_d90, rel=0.02)
    # Volume: dicompyler's and ours from the same contours agree (both see the 2 mm slab stack).
    ours_cc = structure_volume_cc(gtv, Grid.from_bounds([-20, -20, -16], [20, 20, 16], 1.0))
    assert dvh.volume == pytest.approx(ours_cc, rel=0.02)
    assert ours_cc == pytest.approx(4 / 3 * math.pi * RADIUS_MM**3 / 1000, rel=0.03)
