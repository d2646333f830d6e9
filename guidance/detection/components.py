"""Connected metal regions in a CT: labelled block-wise, cut at a level, or cut into intensity basins.

- :func:`components`: the 26-connected regions of a mask, found by labelling 4-voxel
  blocks first and only the boxes of their components at full resolution.
- :func:`parts_above`: a region's connected parts above a higher level.
- :func:`basin_parts` (:func:`basins`): a region cut into one part per peak that stands out.

On thick slices a low level joins seeds several millimetres apart (partial volume and
blur across slices, streaks): one connected region holds seeds whose peaks differ by a
factor of two (a seed inside one slice against one shared by two). A fixed higher cut
keeps the bright ones and loses the faint. :func:`basins` floods the region from its
brightest voxel down (a watershed by flooding): each new local maximum starts a basin, and
where two basins meet, the younger (lower peak) one survives only when its peak stands out
above the meeting level by ``persistence`` of its own height over the region's level;
otherwise it is a bump of its elder (noise, the two ends of one seed's marker) and merges.
Seeds touching each other show no such dip: they stay one basin, counted and split
later as a cluster.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Components", "basin_parts", "basins", "components", "parts_above"]

Components = list[tuple[tuple[slice, ...], NDArray[np.bool_]]]  # (box in image indices, voxels in it)

_BLOCK = 4
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def _block_any(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """True for each block of ``_BLOCK`` voxels a side (the last cut short) holding a ``mask`` voxel."""
    coarse = mask
    for axis in range(mask.ndim):
        head = (slice(None),) * axis
        out = coarse[(*head, slice(0, None, _BLOCK))].copy()
        for k in range(1, _BLOCK):
            part = coarse[(*head, slice(k, None, _BLOCK))]
            out[(*head, slice(0, part.shape[axis]))] |= part
        coarse = out
    return coarse


def components(mask: NDArray[np.bool_]) -> Components:
    """Bounding boxes (voxel slices) of the 26-connected regions of ``mask`` and their voxels in the box.

    The volume is labelled on blocks of ``_BLOCK`` voxels a side (a block is set when it
    holds a voxel of the mask); a region lies in one coarse component, so each component's
    box is labelled at full resolution on its own blocks. Only the few boxes around metal
    and bone are labelled, not the whole volume.
    """
    from scipy import ndimage

    coarse = _block_any(mask)
    coarse_labels, _ = ndimage.label(coarse, structure=_CONNECTIVITY)
    boxes: Components = []
    for label, coarse_box in enumerate(ndimage.find_objects(coarse_labels), start=1):
        if coarse_box is None:
            continue
        box = tuple(
            slice(sl.start * _BLOCK, min(sl.stop * _BLOCK, n))
            for sl, n in zip(coarse_box, mask.shape, strict=True)
        )
        own_blocks = coarse_labels[coarse_box] == label
        for axis in range(3):
            own_blocks = np.repeat(own_blocks, _BLOCK, axis=axis)
        own_blocks = own_blocks[tuple(slice(0, sl.stop - sl.start) for sl in box)]
        labels, _ = ndimage.label(mask[box] & own_blocks, structure=_CONNECTIVITY)
        boxes += _boxes(box, labels)
    # In the order of a whole-volume labelling: by each region's first voxel in raster order.
    first = [np.ravel_multi_index(tuple(np.argwhere(inside)[0] + [sl.start for sl in box]), mask.shape)
             for box, inside in boxes]  # fmt: skip
    return [boxes[i] for i in np.argsort(first, kind="stable")]


def parts_above(
    image: NDArray[Any], box: tuple[slice, ...], inside: NDArray[np.bool_], level: float
) -> Components:
    """The connected parts of a region's voxels above ``level`` (boxes in image indices)."""
    from scipy import ndimage

    labels, _ = ndimage.label(inside & (image[box] > level), structure=_CONNECTIVITY)
    return _boxes(box, labels)


def basin_parts(
    image: NDArray[Any], box: tuple[slice, ...], inside: NDArray[np.bool_], level: float, persistence: float
) -> Components:
    """A region cut into its intensity basins (:func:`basins`; boxes in image indices)."""
    return _boxes(box, basins(image[box].astype(np.float64), inside, level, persistence))


def _boxes(box: tuple[slice, ...], labels: NDArray[Any]) -> Components:
    """Each label's box (in image indices, ``labels`` covering ``box``) and its voxels there."""
    from scipy import ndimage

    return [
        (tuple(slice(b.start + sl.start, b.start + sl.stop) for b, sl in zip(box, local, strict=True)),
         labels[local] == k)
        for k, local in enumerate(ndimage.find_objects(labels), start=1)
        if local is not None
    ]  # fmt: skip


def basins(
    values: NDArray[np.float64], inside: NDArray[np.bool_], level: float, persistence: float
) -> NDArray[np.int64]:
    """Basin labels (1, 2, ...; 0 outside) of the 26-connected voxels ``inside`` a box.

    Parameters
    ----------
    values : ndarray, shape (S, R, C)
        Image values (HU) over the box.
    inside : ndarray of bool, shape (S, R, C)
        The region's voxels (all above ``level``).
    level : float
        The level that cut the region (HU): a peak's height is measured from it.
    persistence : float
        Fraction (0-1) of its height by which a younger peak must stand above the level where
        it meets an elder basin to stay a basin of its own.

    Returns
    -------
    ndarray of int64, shape (S, R, C)
        Labels numbered from the brightest basin's peak down.

    Raises
    ------
    ValueError
        If the shapes differ or ``persistence`` is outside [0, 1].
    """
    if values.shape != inside.shape or values.ndim != 3:
        raise ValueError(f"values {values.shape} and inside {inside.shape} must be the same 3-D shape")
    if not 0.0 <= persistence <= 1.0:
        raise ValueError(f"persistence must be within [0, 1]; got {persistence}")
    index = np.argwhere(inside)
    flat = values[inside].astype(np.float64)
    neighbours = _neighbours(inside)
    order = np.argsort(-flat, kind="stable")
    parent = np.full(len(flat), -1, dtype=np.int64)  # union-find over voxels; -1: not flooded yet
    peak = np.zeros(len(flat))
    for v in order:
        roots = {_root(parent, int(n)) for n in neighbours[v] if parent[n] >= 0}
        parent[v] = v
        peak[v] = flat[v]
        if not roots:
            continue
        elder = max(roots, key=lambda r: (peak[r], -r))
        parent[v] = elder
        for r in roots - {elder}:
            if peak[r] - flat[v] < persistence * (peak[r] - level):
                parent[r] = elder
    final = [_root(parent, v) for v in range(len(flat))]
    distinct = sorted(set(final), key=lambda r: (-peak[r], r))
    number = {r: k for k, r in enumerate(distinct, start=1)}
    labels = np.zeros(values.shape, dtype=np.int64)
    labels[tuple(index.T)] = [number[r] for r in final]
    return labels


def _root(parent: NDArray[np.int64], v: int) -> int:
    while parent[v] != v:
        parent[v] = parent[parent[v]]
        v = int(parent[v])
    return v


def _neighbours(inside: NDArray[np.bool_]) -> list[NDArray[np.int64]]:
    """For each voxel of ``inside`` (in ``argwhere`` order), the numbers of its 26-connected neighbours."""
    number = np.full(tuple(n + 2 for n in inside.shape), -1, dtype=np.int64)
    core = tuple(slice(1, n + 1) for n in inside.shape)
    number[core][inside] = np.arange(np.count_nonzero(inside))
    index = np.argwhere(inside) + 1
    found = []
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dz or dy or dx:
                    found.append(number[index[:, 0] + dz, index[:, 1] + dy, index[:, 2] + dx])
    table = np.stack(found, axis=1)
    return [row[row >= 0] for row in table]
