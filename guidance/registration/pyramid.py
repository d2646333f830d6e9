"""Image pyramid levels of a CT for registration: block-averaged HU, metal zone, body.

A :class:`Level` is one CT reduced to about the level's voxel size by averaging
whole blocks of voxels (HU clipped to a window first, so a seed's 3071 HU cannot
spread), with

- its metal zone: blocks holding any voxel above the metal level, dilated by a
  margin (seeds, needles and the worst of their streaks are left out), and
- its body: the largest connected region above the body level after an in-plane
  opening (:func:`body_mask`); everything else (CT couch, immobilisation, air) is set to air, so the
  parts that stay put while the patient moves cannot pull the registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from guidance.volume import Volume

__all__ = [
    "Level",
    "MaskSettings",
    "aligned_box",
    "block_factors",
    "blur_level",
    "body_mask",
    "box_weights",
    "crop_box",
    "crop_level",
    "grow",
    "reduce_level",
]

_AIR_HU = -1000.0


@dataclass(frozen=True, eq=False)
class Level:
    """One pyramid level of a CT (arrays indexed slice, row, column).

    Parameters
    ----------
    image : ndarray of float32
        Block-averaged, windowed HU; outside the body set to air; blurred along the
        axes where the other image is coarser.
    affine : ndarray of shape (4, 4)
        Level index -> LPS mm.
    metal : ndarray of bool
        Metal zone (metal blocks dilated by the margin).
    body : ndarray of bool
        The patient's body (largest connected region, opened).
    """

    image: NDArray[np.float32]
    affine: NDArray[np.float64]
    metal: NDArray[np.bool_]
    body: NDArray[np.bool_]

    @cached_property
    def valid(self) -> NDArray[np.bool_]:
        """Voxels outside the metal zone (where the fixed image may be sampled)."""
        valid: NDArray[np.bool_] = ~self.metal
        return valid

    @property
    def spacing_mm(self) -> NDArray[np.float64]:
        spacing: NDArray[np.float64] = np.linalg.norm(self.affine[:3, :3], axis=0)
        return spacing


def block_factors(
    spacing_mm: NDArray[np.float64], level_mm: float, shape: tuple[int, ...]
) -> NDArray[np.int64]:
    """Whole block sizes that bring ``spacing_mm`` closest to ``level_mm`` (at least 1, at most the size)."""
    factors = np.maximum(1, np.rint(level_mm / spacing_mm)).astype(np.int64)
    result: NDArray[np.int64] = np.minimum(factors, np.asarray(shape, dtype=np.int64))
    return result


def crop_box(
    volume: Volume, corners_mm: NDArray[np.float64], margin_mm: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """Index box [lo, hi) of ``volume`` holding the points ``corners_mm`` plus a margin, or None if empty."""
    index = volume.patient_to_index(corners_mm)
    margin = margin_mm / volume.spacing_mm
    lo = np.maximum(np.floor(index.min(axis=0) - margin), 0).astype(np.int64)
    hi = np.minimum(np.ceil(index.max(axis=0) + margin) + 1, volume.shape).astype(np.int64)
    return (lo, hi) if np.all(hi > lo) else None


def _disk(radius_px: int) -> NDArray[np.uint8]:
    """In-plane disk of the given radius in pixels (an OpenCV structuring element)."""
    r = np.arange(-radius_px, radius_px + 1)
    disk: NDArray[np.uint8] = (r[:, None] ** 2 + r[None, :] ** 2 <= radius_px**2).astype(np.uint8)
    return disk


def _per_slice(mask: NDArray[np.bool_], disk: NDArray[np.uint8], erode: bool) -> NDArray[np.bool_]:
    """In-plane erosion or dilation of every slice by ``disk``, outside the image counting as empty."""
    import cv2

    operation = cv2.erode if erode else cv2.dilate
    source = np.ascontiguousarray(mask, dtype=np.uint8)
    result = np.empty_like(source)
    for index in range(source.shape[0]):
        operation(source[index], disk, dst=result[index], borderType=cv2.BORDER_CONSTANT, borderValue=0)
    done: NDArray[np.bool_] = result.view(np.bool_)
    return done


def grow(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Dilation by one voxel along each axis (6-connected), as ``scipy.ndimage.binary_dilation(mask)``."""
    grown = mask.copy()
    for axis in range(mask.ndim):
        lead = [slice(None)] * mask.ndim
        trail = [slice(None)] * mask.ndim
        lead[axis], trail[axis] = slice(1, None), slice(None, -1)
        grown[tuple(lead)] |= mask[tuple(trail)]
        grown[tuple(trail)] |= mask[tuple(lead)]
    return grown


def body_mask(mask: NDArray[np.bool_], pixel_mm: float, opening_mm: float) -> NDArray[np.bool_]:
    """The largest connected region of ``mask`` after an in-plane opening of radius ``opening_mm``.

    The opening cuts the thin shell of the CT couch (and immobilisation straps) where
    they touch the patient, so the couch is not part of the body; a dilation of the
    same radius within ``mask`` then restores the skin surface the opening trimmed.
    The in-plane morphology runs slice by slice in OpenCV (several times faster than
    ``scipy.ndimage`` with a one-slice-thick structure, and the same result).
    """
    from scipy import ndimage

    disk = _disk(max(1, round(opening_mm / pixel_mm)))
    opened = _per_slice(_per_slice(mask, disk, erode=True), disk, erode=False)
    labels, count = ndimage.label(opened)
    if count == 0:
        return opened
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    largest = labels == int(np.argmax(sizes))
    body: NDArray[np.bool_] = _per_slice(largest, disk, erode=False) & mask
    return body


def _coarse_body(mask: NDArray[np.bool_], pixel_mm: float, opening_mm: float) -> NDArray[np.bool_]:
    """:func:`body_mask` computed on every k-th pixel (about 2 mm apart) and spread back, for speed."""
    stride = max(1, int(2.0 / pixel_mm))
    if stride == 1:
        return body_mask(mask, pixel_mm, opening_mm)
    coarse = body_mask(mask[:, ::stride, ::stride], pixel_mm * stride, opening_mm)
    spread = np.repeat(np.repeat(coarse, stride, axis=1), stride, axis=2)[:, : mask.shape[1], : mask.shape[2]]
    body: NDArray[np.bool_] = _per_slice(spread, _disk(stride), erode=False) & mask
    return body


def _dilate_mm(
    mask: NDArray[np.bool_], spacing_mm: NDArray[np.float64], radius_mm: float
) -> NDArray[np.bool_]:
    from scipy import ndimage

    if radius_mm <= 0 or not mask.any():
        return mask
    # Only around the metal: a distance transform of the whole level would cost far more.
    reach = np.ceil(radius_mm / spacing_mm).astype(np.int64) + 1
    found = np.argwhere(mask)
    lo = np.maximum(found.min(axis=0) - reach, 0)
    hi = np.minimum(found.max(axis=0) + reach + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    zone = np.zeros(mask.shape, dtype=bool)
    zone[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing_mm) <= radius_mm
    return zone


@dataclass(frozen=True)
class MaskSettings:
    """The options that shape a level before any blur (HU window, metal zone, body)."""

    metal_hu: float
    metal_margin_mm: float
    body_hu: float
    window_hu: tuple[float, float]
    couch_opening_mm: float


def aligned_box(
    factors: NDArray[np.int64],
    box: tuple[NDArray[np.int64], NDArray[np.int64]],
    shape: tuple[int, ...],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Level index box [lo, hi) of the whole blocks (of the uncropped block grid) that a volume box touches.

    Blocks start at multiples of ``factors`` (as when the whole volume of ``shape`` is
    reduced), so a level reduced from a crop equals the same crop of the level of the
    whole volume. At least one block along each axis.
    """
    whole = np.maximum(np.asarray(shape, dtype=np.int64) // factors, 1)
    level_lo = np.clip(np.asarray(box[0], dtype=np.int64) // factors, 0, whole - 1)
    level_hi = np.clip(np.asarray(box[1], dtype=np.int64) // factors, level_lo + 1, whole)
    return level_lo, level_hi


def reduce_level(
    volume: Volume,
    level_mm: float,
    masks: MaskSettings,
    box: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
) -> Level:
    """Reduce ``volume`` (the whole blocks within ``box``, volume index [lo, hi)) to one unblurred level."""
    from guidance.registration import _kernels

    factors = block_factors(volume.spacing_mm, level_mm, volume.shape)
    whole = np.asarray(volume.shape, dtype=np.int64) // factors
    lo, hi = aligned_box(factors, box, volume.shape) if box is not None else (np.zeros(3, np.int64), whole)
    start, stop = lo * factors, hi * factors
    array = volume.array[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    if array.dtype not in (np.float32, np.int16):
        array = array.astype(np.float32)
    low, high = float(masks.window_hu[0]), float(masks.window_hu[1])
    if np.all(factors == 1):  # numpy's vectorised clip is several times faster than the block loop
        mean = np.clip(array, low, high, dtype=np.float32)
        hot = array > masks.metal_hu
    else:
        mean, hot = _kernels.block_reduce(array, factors, low, high, float(masks.metal_hu))
    affine = np.array(volume.affine, dtype=np.float64)
    affine[:3, 3] = affine[:3, :3] @ (start + (factors - 1) / 2.0) + affine[:3, 3]
    affine[:3, :3] = affine[:3, :3] * factors
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    metal = _dilate_mm(hot, spacing, masks.metal_margin_mm)
    body = _coarse_body(mean > masks.body_hu, float(min(spacing[1], spacing[2])), masks.couch_opening_mm)
    mean[~grow(body)] = np.float32(_AIR_HU)  # a new array: set to air in place
    return Level(mean, affine, metal, body)


def crop_level(level: Level, lo: NDArray[np.int64], hi: NDArray[np.int64]) -> Level:
    """The level index box [lo, hi) of ``level`` (C-contiguous: views for whole slices, else copies)."""
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, level.image.shape)
    if np.all(lo == 0) and np.all(hi == level.image.shape):
        return level
    cut = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    affine = np.array(level.affine)
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return Level(
        np.ascontiguousarray(level.image[cut]), affine, np.ascontiguousarray(level.metal[cut]),
        np.ascontiguousarray(level.body[cut]),
    )  # fmt: skip


def blur_level(level: Level, blur_mm: NDArray[np.float64]) -> Level:
    """``level`` with a box filter of ``blur_mm`` (per slice, row, column axis) applied to its image.

    ``blur_mm`` is, per axis, the slice thickness (box width, mm) of the other image
    when it is coarser: a box filter of that width along the axis makes a thin-slice
    image look like the thick-slice one (5 mm planning CT against 1-3 mm
    intra-procedure scans, or the reverse).
    """
    from scipy import ndimage

    image = level.image
    for axis in range(3):
        weights = box_weights(blur_mm[axis] / level.spacing_mm[axis])
        if len(weights) > 1 and axis == 0:
            image = _correlate_slices(image, weights)
        elif len(weights) > 1:
            image = ndimage.correlate1d(image, weights, axis=axis, mode="nearest")
    return level if image is level.image else Level(image, level.affine, level.metal, level.body)


def _correlate_slices(image: NDArray[np.float32], weights: NDArray[np.float32]) -> NDArray[np.float32]:
    """``scipy.ndimage.correlate1d(image, weights, axis=0, mode="nearest")``, a whole slice at a time.

    Several times faster than scipy's line-by-line pass across the slices.
    """
    count, half = image.shape[0], len(weights) // 2
    result = np.empty_like(image)
    for index in range(count):
        total = image[min(max(index - half, 0), count - 1)] * weights[0]
        for k in range(1, len(weights)):
            total += image[min(max(index + k - half, 0), count - 1)] * weights[k]
        result[index] = total
    return result


def box_weights(width_px: float) -> NDArray[np.float32]:
    """Weights of a centred box ``width_px`` voxels wide (fractional ends); [1] for widths up to 1.2."""
    if width_px <= 1.2:
        return np.ones(1, dtype=np.float32)
    half = width_px / 2.0
    reach = int(np.ceil(half - 0.5))
    k = np.arange(-reach, reach + 1, dtype=np.float64)
    overlap = np.clip(np.minimum(k + 0.5, half) - np.maximum(k - 0.5, -half), 0.0, 1.0)
    weights: NDArray[np.float32] = (overlap / overlap.sum()).astype(np.float32)
    return weights
