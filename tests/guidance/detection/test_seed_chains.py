"""Seeds dropped end to end along one needle: one thin connected region longer than a compact cluster.

Regression: in the pipeline's small simulated case three seeds 5 mm apart along an oblique
needle formed one region 16.0 mm across its bounding box; the extent cut for bone and
needles dropped it silently, and with it 3 of 14 seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from guidance.detection import SeedDetection, SeedOptions, detect_seeds
from guidance.volume import Volume
from tests.guidance.detection import scenes

_AXIS = np.array([0.88, -0.27, 0.39]) / np.linalg.norm([0.88, -0.27, 0.39])  # the case's needle


def _chains(thickness_mm: float) -> tuple[scenes.Scene, SeedDetection]:
    """Six separate seeds, a chain of three (5.0 mm pitch) and one of four (4.7 mm pitch)."""
    model = scenes.patient()
    centre = model.tumour.centre_mm
    rng = np.random.default_rng(1)
    grid = scenes.scan_grid(centre, thickness_mm=thickness_mm, slices=int(48 / thickness_mm))
    middle = centre + np.array([0.0, -8.0, 0.0])
    single, directions = scenes.seed_cloud(rng, middle, 6, half_extent_mm=(12.0, 6.0, 12.0))
    three = centre + np.array([-8.0, 14.0, -6.0]) + np.outer(np.arange(3) * 5.0, _AXIS)
    four = centre + np.array([-8.0, 24.0, 6.0]) + np.outer(np.arange(4) * 4.7, _AXIS)
    seeds = np.vstack([single, three, four])
    axes = np.vstack([directions, np.tile(_AXIS, (7, 1))])
    scene = scenes.render(model, grid, seeds=(seeds, axes), noise_seed=3)
    return scene, detect_seeds(scene.volume)


@pytest.fixture(scope="module", params=[1.0, 2.0])
def chains(request: pytest.FixtureRequest) -> tuple[scenes.Scene, SeedDetection]:
    return _chains(request.param)


def _nearest(truth: NDArray[np.float64], found: NDArray[np.float64]) -> NDArray[np.float64]:
    distance: NDArray[np.float64] = np.linalg.norm(truth[:, None] - found[None], axis=2).min(axis=1)
    return distance


def test_every_seed_of_a_chain_is_found(chains: tuple[scenes.Scene, SeedDetection]) -> None:
    scene, found = chains
    assert len(found.seeds) == len(scene.seeds_mm) == 13
    assert float(_nearest(scene.seeds_mm, found.positions_mm).max()) < 1.5
    assert sorted(s.cluster_size for s in found.seeds if s.split_from_cluster) == [3, 3, 3, 4, 4, 4, 4]
    assert not found.rejected


def _bar(half_length_mm: float, radius_mm: float) -> Volume:
    """A 2500 HU cylinder along x (1 mm voxels) plus one seed-sized 4.5 x 0.8 mm cylinder apart from it."""
    shape = (30, 60, 80)
    points = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    image = np.zeros(shape, dtype=np.float32)
    z, y, x = points[..., 0] - 15.0, points[..., 1], points[..., 2] - 40.0
    image[(np.hypot(z, y - 20.0) <= radius_mm) & (np.abs(x) <= half_length_mm)] = 2500.0
    image[(np.hypot(z, y - 45.0) <= 0.8) & (np.abs(x) <= 2.25)] = 2500.0
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, ::-1]  # index (k, j, i) -> (x=i, y=j, z=k)
    return Volume(image, affine, "1.2.3")


@pytest.mark.parametrize(
    ("half_length_mm", "radius_mm"),
    [(17.0, 0.8), (8.0, 4.0)],  # a needle-like rod 34 mm long; a bone-like block 16 x 8 x 8 mm
)
def test_long_or_wide_regions_are_not_seed_chains(half_length_mm: float, radius_mm: float) -> None:
    found = detect_seeds(_bar(half_length_mm, radius_mm), options=SeedOptions(single_seed_integral=None))
    assert len(found.seeds) == 1
    assert float(np.linalg.norm(found.positions_mm[0] - [40.0, 45.0, 15.0])) < 0.5


@pytest.mark.parametrize("face", ["first", "last"])
def test_seed_cut_by_the_first_or_last_slice_is_found_without_error(face: str) -> None:
    # Short intra-operative scans often cut a seed at their first or last slice: the
    # background shell around it must stop at the volume's faces.
    shape = (6, 40, 40)
    s, r, c = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    centre_s = 0.0 if face == "first" else shape[0] - 1.0
    inside = ((s - centre_s) / 2.2) ** 2 + ((r - 20.0) / 0.5) ** 2 + ((c - 20.0) / 0.5) ** 2 <= 1.0
    values = np.where(inside, 3000.0, 40.0).astype(np.float32)
    ct = Volume(values, np.diag([1.0, 1.0, 1.0, 1.0]), "1.2.3")
    found = detect_seeds(ct)
    assert len(found.seeds) == 1
    assert abs(found.seeds[0].position_mm[1] - 20.0) < 0.5 and abs(found.seeds[0].position_mm[2] - 20.0) < 0.5
