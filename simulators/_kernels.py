# mypy: disable-error-code="no-untyped-def"
"""numba kernels of the CT simulator (private; called through simulators.artefacts).

Compiled on first call (``njit`` without signatures, ``cache=True``), so importing
simulators does no JIT work. Each kernel is tested against the numpy reference it
replaces in tests/simulators/test_kernels.py.

- :func:`backproject`: unweighted sum over views of a filtered parallel-beam sinogram,
  linearly interpolated at t = x cos(theta) + y sin(theta) for every pixel of a
  rectangular grid (Kak & Slaney ch. 3.3, eq. 3.45 discretised).
"""

from __future__ import annotations

import math

import numba


@numba.njit(cache=True)
def backproject(filtered, cosines, sines, xc, yc, offset, image):
    """Add sum_k interp(filtered[k], x cos_k + y sin_k + offset) to ``image[row, column]``.

    ``cosines`` and ``sines`` are already divided by the bin width, ``offset`` is the
    fractional bin of t = 0; bins are clamped to [0, n_bins - 2] with weights in [0, 1]
    (the same clamping as the numpy reference).
    """
    n_views, n_bins = filtered.shape
    last = n_bins - 2
    for i in range(yc.shape[0]):
        for j in range(xc.shape[0]):
            total = 0.0
            for k in range(n_views):
                t = cosines[k] * xc[j] + sines[k] * yc[i] + offset
                lower = min(max(math.floor(t), 0), last)
                frac = min(max(t - lower, 0.0), 1.0)
                left = filtered[k, lower]
                total += left + frac * (filtered[k, lower + 1] - left)
            image[i, j] += total
