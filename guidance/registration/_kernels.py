# mypy: disable-error-code="no-untyped-def"
"""numba kernels of the rigid registration (private; called through guidance.registration).

Compiled on first call (``njit`` without signatures, ``cache=True``), so importing
guidance.registration does no JIT work. Each kernel is tested against numpy/scipy
in tests/guidance/registration/test_kernels.py.

- :func:`block_reduce`: mean of HU clipped to a window over non-overlapping blocks
  and whether the block holds metal (the image pyramid and its metal map in one pass).
- :func:`sample_trilinear`: trilinear value and its index-space gradient at points
  given in mm, with a validity mask looked up at the nearest voxel.
- :func:`sparse_values`: values of a (blurred, masked) pyramid level at a few voxels
  straight from the volume, for levels too large to build.
- :func:`ncc_gradient`: the samples and, in the same call, the weighted NCC and
  the per-point sums its gradient needs (no temporary arrays, no BLAS).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, parallel=True)
def block_reduce(image, factors, low, high, hot_above):
    """Block mean of clip(image, low, high) and whether the block holds a voxel above ``hot_above``.

    Partial edge blocks are dropped.
    """
    fs, fr, fc = factors[0], factors[1], factors[2]
    ns, nr, nc = image.shape[0] // fs, image.shape[1] // fr, image.shape[2] // fc
    mean = np.empty((ns, nr, nc), dtype=np.float32)
    hot = np.empty((ns, nr, nc), dtype=np.bool_)
    scale = 1.0 / (fs * fr * fc)
    for s in numba.prange(ns):
        for r in range(nr):
            for c in range(nc):
                total = 0.0
                above = False
                for i in range(s * fs, s * fs + fs):
                    for j in range(r * fr, r * fr + fr):
                        for k in range(c * fc, c * fc + fc):
                            v = float(image[i, j, k])
                            above = above or v > hot_above
                            total += min(max(v, low), high)
                mean[s, r, c] = total * scale
                hot[s, r, c] = above
    return mean, hot


@numba.njit(cache=True)
def sample_trilinear(volume, valid, matrix, points, values, gradients, ok):
    """Trilinear samples of ``volume`` at ``matrix`` @ (points, 1) (index space).

    ``values[i]`` and ``gradients[i]`` (d value / d index along s, r, c) are written where
    the point lies within the voxel centres' span and its nearest voxel is ``valid``;
    ``ok[i]`` says which points those are. Returns the number of ok points.
    """
    ns, nr, nc = volume.shape
    count = 0
    for i in range(points.shape[0]):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        u = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2] * z + matrix[0, 3]
        v = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2] * z + matrix[1, 3]
        w = matrix[2, 0] * x + matrix[2, 1] * y + matrix[2, 2] * z + matrix[2, 3]
        if not (0.0 <= u <= ns - 1 and 0.0 <= v <= nr - 1 and 0.0 <= w <= nc - 1):
            ok[i] = False
            continue
        if not valid[int(u + 0.5), int(v + 0.5), int(w + 0.5)]:
            ok[i] = False
            continue
        s0 = min(math.floor(u), max(ns - 2, 0))
        r0 = min(math.floor(v), max(nr - 2, 0))
        c0 = min(math.floor(w), max(nc - 2, 0))
        s1, r1, c1 = min(s0 + 1, ns - 1), min(r0 + 1, nr - 1), min(c0 + 1, nc - 1)
        a, b, c = u - s0, v - r0, w - c0
        v000, v001 = volume[s0, r0, c0], volume[s0, r0, c1]
        v010, v011 = volume[s0, r1, c0], volume[s0, r1, c1]
        v100, v101 = volume[s1, r0, c0], volume[s1, r0, c1]
        v110, v111 = volume[s1, r1, c0], volume[s1, r1, c1]
        e00 = v000 + c * (v001 - v000)
        e01 = v010 + c * (v011 - v010)
        e10 = v100 + c * (v101 - v100)
        e11 = v110 + c * (v111 - v110)
        f0 = e00 + b * (e01 - e00)
        f1 = e10 + b * (e11 - e10)
        values[i] = f0 + a * (f1 - f0)
        gradients[i, 0] = f1 - f0
        gradients[i, 1] = (1.0 - a) * (e01 - e00) + a * (e11 - e10)
        d0 = (1.0 - b) * (v001 - v000) + b * (v011 - v010)
        d1 = (1.0 - b) * (v101 - v100) + b * (v111 - v110)
        gradients[i, 2] = (1.0 - a) * d0 + a * d1
        ok[i] = True
        count += 1
    return count


@numba.njit(cache=True)
def ncc_gradient(volume, valid, matrix, points, centre, moving, weights, values, gradients, ok, out):
    """Weighted NCC of the fixed ``volume`` sampled at the moved ``points`` and the ``moving`` values.

    Samples as :func:`sample_trilinear`, then over the ok points: the weighted NCC and,
    in ``out`` (3 x 4), the sums of d NCC / d f_i times the index-space gradient
    (column 0) and times that gradient's outer product with ``points[i] - centre``
    (columns 1-3). Returns (NCC, number of ok points); NCC 0 and ``out`` 0 when
    fewer than 2 points are ok or either side is flat.
    """
    count = sample_trilinear(volume, valid, matrix, points, values, gradients, ok)
    out[:, :] = 0.0
    sw = swf = swm = 0.0
    for i in range(points.shape[0]):
        if ok[i]:
            sw += weights[i]
            swf += weights[i] * values[i]
            swm += weights[i] * moving[i]
    if count < 2 or sw <= 0.0:
        return 0.0, count
    mf, mm = swf / sw, swm / sw
    sff = smm = sfm = 0.0
    for i in range(points.shape[0]):
        if ok[i]:
            df, dm = values[i] - mf, moving[i] - mm
            sff += weights[i] * df * df
            smm += weights[i] * dm * dm
            sfm += weights[i] * df * dm
    if sff <= 1e-12 or smm <= 1e-12:
        return 0.0, count
    norm = math.sqrt(sff * smm)
    ncc = sfm / norm
    for i in range(points.shape[0]):
        if ok[i]:
            d = weights[i] * ((moving[i] - mm) / norm - ncc * (values[i] - mf) / sff)
            for a in range(3):
                g = d * gradients[i, a]
                out[a, 0] += g
                for b in range(3):
                    out[a, 1 + b] += g * (points[i, b] - centre[b])
    return ncc, count


@numba.njit(cache=True)
def sparse_values(image, factors, low, high, keep, map0, map1, map2, index, w0, w1, w2, air, out):
    """Values of a level at ``index`` (n x 3 level indices) without building the level.

    A level voxel is the mean of clip(image, low, high) over its block of ``factors``
    voxels, or ``air`` where ``keep`` (a coarser mask) is False at the cell
    (``map0[s]``, ``map1[r]``, ``map2[c]``); ``w0``, ``w1``, ``w2`` are centred filter weights
    along each axis (edges repeated), as :func:`block_reduce`, masking and
    ``scipy.ndimage.correlate1d(mode="nearest")`` in turn would give.
    """
    fs, fr, fc = factors[0], factors[1], factors[2]
    ns, nr, nc = image.shape[0] // fs, image.shape[1] // fr, image.shape[2] // fc
    h0, h1, h2 = len(w0) // 2, len(w1) // 2, len(w2) // 2
    scale = 1.0 / (fs * fr * fc)
    for i in range(index.shape[0]):
        total = 0.0
        for a in range(len(w0)):
            s = min(max(index[i, 0] + a - h0, 0), ns - 1)
            for b in range(len(w1)):
                r = min(max(index[i, 1] + b - h1, 0), nr - 1)
                for d in range(len(w2)):
                    c = min(max(index[i, 2] + d - h2, 0), nc - 1)
                    value = air
                    if keep[map0[s], map1[r], map2[c]]:
                        block = 0.0
                        for p in range(s * fs, s * fs + fs):
                            for q in range(r * fr, r * fr + fr):
                                for t in range(c * fc, c * fc + fc):
                                    block += min(max(float(image[p, q, t]), low), high)
                        value = block * scale
                    total += w0[a] * w1[b] * w2[d] * value
        out[i] = total
