"""Pyramid levels of both images of a registration, and the moving scan's sample points.

- The planning CT (fixed) is the same for every scan of a procedure:
  :func:`guidance.registration.prepare_fixed` reduces it once to every pyramid level and keeps them in a
  :class:`PreparedFixed`, which :func:`guidance.registration.register_rigid` takes in
  place of the Volume; each registration then only crops the kept levels around the
  scan (and blurs the crop when the scan has thicker slices). Without it the levels
  are reduced from the crop on every call (the same blocks, so the same result up to
  the body outline at the crop's edges).
- The moving scan: levels up to :data:`DENSE_VOXELS` voxels are built in full. A
  larger one (the 1 mm level of a 512 x 512 x 80 scan has 21 million voxels), once
  a level of about 2 mm is built, is never built: its sample points are drawn within
  the body and metal masks of the finest built level and their values computed
  straight from the scan (:func:`guidance.registration._kernels.sparse_values`), so
  the level costs the time of its ``max_points`` samples, not of its voxels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.registration.pyramid import (
    Level,
    MaskSettings,
    aligned_box,
    block_factors,
    blur_level,
    box_weights,
    crop_level,
    grow,
    reduce_level,
)
from guidance.registration.result import RegistrationOptions
from guidance.registration.similarity import Samples
from guidance.volume import Volume

__all__ = ["DENSE_VOXELS", "MovingLevel", "PreparedFixed", "fixed_level", "mask_settings", "moving_levels"]

#: Moving-scan levels with more voxels than this are sampled, not built ...
DENSE_VOXELS = 2_000_000
#: ... once a level with pixels this fine (mm) is built to hold their masks.
GUIDE_MM = 2.5
_AIR_HU = -1000.0


def mask_settings(options: RegistrationOptions) -> MaskSettings:
    """The options that shape a level before blurring (the key of the kept fixed levels)."""
    return MaskSettings(options.metal_hu, options.metal_margin_mm, options.body_hu, options.window_hu,
                        options.couch_opening_mm)  # fmt: skip


class PreparedFixed:
    """The planning CT with its pyramid levels, kept for every registration of a session.

    Made by :func:`guidance.registration.prepare_fixed`; pass it to
    :func:`guidance.registration.register_rigid` as ``fixed``. Levels of other
    options (level sizes, HU levels, margins) than those prepared are reduced on first
    use and kept too. Safe to share between threads (the store is locked); the kept
    arrays must not be modified.

    Parameters
    ----------
    volume : Volume
        The planning CT, HU.
    """

    def __init__(self, volume: Volume) -> None:
        if not isinstance(volume, Volume):
            raise ValueError(f"the planning CT must be a guidance.volume.Volume; got {type(volume).__name__}")
        self.volume = volume
        self._levels: dict[tuple[float, MaskSettings], Level] = {}
        self._lock = threading.Lock()

    def level(self, level_mm: float, masks: MaskSettings) -> Level:
        """The whole (unblurred) level of ``level_mm``, reduced on first use."""
        key = (float(level_mm), masks)
        with self._lock:
            found = self._levels.get(key)
            if found is None:
                found = reduce_level(self.volume, level_mm, masks)
                self._levels[key] = found
        return found

    @property
    def levels_kept(self) -> int:
        """Number of levels kept."""
        return len(self._levels)


def fixed_level(
    fixed: Volume | PreparedFixed,
    level_mm: float,
    box: tuple[NDArray[np.int64], NDArray[np.int64]],
    masks: MaskSettings,
    blur_mm: NDArray[np.float64],
) -> Level:
    """The fixed image's level over the whole blocks within ``box`` (volume index [lo, hi)), blurred.

    From a :class:`PreparedFixed`, the kept level's slices within the box, whole.
    """
    if isinstance(fixed, PreparedFixed):
        volume = fixed.volume
        factors = block_factors(volume.spacing_mm, level_mm, volume.shape)
        kept = fixed.level(level_mm, masks)
        lo, hi = aligned_box(factors, box, volume.shape)
        lo[1:], hi[1:] = 0, kept.image.shape[1:]  # whole slices: a view of the kept level, not a copy
        level = crop_level(kept, lo, hi)
    else:
        level = reduce_level(fixed, level_mm, masks, box)
    return blur_level(level, blur_mm)


@dataclass(frozen=True, eq=False)
class MovingLevel:
    """One level of the moving scan: built (``dense``) or sampled within ``guide``'s masks.

    Parameters
    ----------
    volume : Volume
    factors : ndarray of int
        Block size of the level (voxels of ``volume`` per level voxel, per axis).
    affine : ndarray of shape (4, 4)
        Level index -> LPS mm.
    blur_mm : ndarray of shape (3,)
        Box filter widths along the level's axes (see :func:`~guidance.registration.pyramid.blur_level`).
    dense : Level or None
        The built level, or None when it is sampled.
    guide : Level
        Body and metal masks of a sampled level: the finest built level (``dense`` itself when built).
    """

    volume: Volume
    factors: NDArray[np.int64]
    affine: NDArray[np.float64]
    blur_mm: NDArray[np.float64]
    dense: Level | None
    guide: Level

    @property
    def spacing_mm(self) -> NDArray[np.float64]:
        spacing: NDArray[np.float64] = np.linalg.norm(self.affine[:3, :3], axis=0)
        return spacing

    def samples(self, options: RegistrationOptions, rng: np.random.Generator) -> Samples:
        """Up to ``max_points`` voxels of the body (and the air just around it) outside the metal zone."""
        if self.dense is not None:
            index, values = _dense_samples(self.dense, options.max_points, rng)
        else:
            index, values = self._sparse_samples(options, rng)
        points = index.astype(np.float64) @ self.affine[:3, :3].T + self.affine[:3, 3]
        weights = np.where(values > options.bone_hu, options.bone_weight, 1.0)
        return Samples(points, values, weights)

    def _maps(self) -> list[NDArray[np.int64]]:
        """Per axis: the guide cell holding each level voxel's centre."""
        guide_factors = np.rint(self.guide.spacing_mm / self.volume.spacing_mm).astype(np.int64)
        shape = np.asarray(self.volume.shape, dtype=np.int64) // self.factors
        return [
            np.minimum((np.arange(n) * f + (f - 1) // 2) // g, size - 1).astype(np.int64)
            for n, f, g, size in zip(shape, self.factors, guide_factors, self.guide.body.shape, strict=True)
        ]

    def _sparse_samples(
        self, options: RegistrationOptions, rng: np.random.Generator
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        from guidance.registration import _kernels

        maps = self._maps()
        keep = grow(self.guide.body)
        index = _draw(keep & ~self.guide.metal, maps, options.max_points, rng)
        weights = [box_weights(self.blur_mm[a] / self.spacing_mm[a]).astype(np.float64) for a in range(3)]
        values = np.empty(len(index))
        _kernels.sparse_values(
            self.volume.array, self.factors, float(options.window_hu[0]), float(options.window_hu[1]), keep,
            maps[0], maps[1], maps[2], index, weights[0], weights[1], weights[2], _AIR_HU, values,
        )  # fmt: skip
        return index, values


def _dense_samples(
    level: Level, max_points: int, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    index = np.flatnonzero(grow(level.body) & ~level.metal)
    if len(index) > max_points:
        index = np.sort(rng.choice(index, max_points, replace=False))
    values = level.image.reshape(-1)[index].astype(np.float64)
    return np.column_stack(np.unravel_index(index, level.image.shape)).astype(np.int64), values


def _draw(
    candidates: NDArray[np.bool_], maps: list[NDArray[np.int64]], wanted: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Up to ``wanted`` distinct level voxels, uniformly among those whose guide cell is a candidate."""
    shape = tuple(len(m) for m in maps)
    counts = [np.bincount(m, minlength=n) for m, n in zip(maps, candidates.shape, strict=True)]
    total = float(np.einsum("ijk,i,j,k->", candidates.astype(np.float64), *counts))
    if total <= wanted:
        return np.argwhere(candidates[np.ix_(*maps)]).astype(np.int64)
    size = int(np.prod(shape))
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < wanted:
        draw = rng.integers(0, size, int(1.3 * (wanted - len(chosen)) * size / total) + 64)
        s, r, c = np.unravel_index(draw, shape)
        chosen = np.union1d(chosen, draw[candidates[maps[0][s], maps[1][r], maps[2][c]]])
    if len(chosen) > wanted:
        chosen = np.sort(rng.choice(chosen, wanted, replace=False))
    return np.column_stack(np.unravel_index(chosen, shape)).astype(np.int64)


def moving_levels(
    moving: Volume, levels_mm: tuple[float, ...], masks: MaskSettings, blur_mm: NDArray[np.float64]
) -> list[MovingLevel]:
    """The moving scan's levels, coarse to fine.

    Built: the first, those up to :data:`DENSE_VOXELS` voxels, and any while no level
    with pixels up to :data:`GUIDE_MM` is built (so the masks of a sampled level are
    never coarser than that); the others are sampled within the finest built one.
    """
    found: list[MovingLevel] = []
    guide: Level | None = None
    for level_mm in levels_mm:
        factors = block_factors(moving.spacing_mm, level_mm, moving.shape)
        affine = np.array(moving.affine, dtype=np.float64)
        affine[:3, 3] = affine[:3, :3] @ ((factors - 1) / 2.0) + affine[:3, 3]
        affine[:3, :3] = affine[:3, :3] * factors
        voxels = int(np.prod(np.asarray(moving.shape) // factors))
        dense = None
        if guide is None or voxels <= DENSE_VOXELS or float(guide.spacing_mm[1:].max()) > GUIDE_MM:
            dense = blur_level(reduce_level(moving, level_mm, masks), blur_mm)
            guide = dense
        found.append(MovingLevel(moving, factors, affine, blur_mm, dense, guide))
    return found
