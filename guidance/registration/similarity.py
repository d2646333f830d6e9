"""Normalised cross-correlation of sample points under a rigid motion, with its gradient.

The motion has six parameters: three rotation angles about the centre of the
sample points (scaled by :data:`ARM_MM`, so that one unit moves a point at that
distance by about 1 mm, like one unit of translation) and three translations, mm.
A point p maps to R (p - c) + c + t, with R = Rz Ry Rx.

:class:`Similarity` evaluates through the numba kernel
:func:`guidance.registration._kernels.ncc_gradient`; :func:`weighted_ncc` is the
numpy statement of the same arithmetic (and its reference in the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.registration.pyramid import Level

__all__ = ["ARM_MM", "Samples", "Similarity", "motion_matrix", "weighted_ncc"]

#: Lever arm that converts the rotation parameters to about-millimetres.
ARM_MM = 50.0


def _rotations(angles: NDArray[np.float64]) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
    """R = Rz Ry Rx of the angles (rad) and dR / d angle for each angle."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    drx = np.array([[0, 0, 0], [0, -sx, -cx], [0, cx, -sx]])
    dry = np.array([[-sy, 0, cy], [0, 0, 0], [-cy, 0, -sy]])
    drz = np.array([[-sz, -cz, 0], [cz, -sz, 0], [0, 0, 0]])
    return rz @ ry @ rx, [rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx]


def motion_matrix(params: NDArray[np.float64], centre_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """4x4 rigid transform of the six parameters, rotating about ``centre_mm``."""
    rotation, _ = _rotations(np.asarray(params[:3], dtype=np.float64) / ARM_MM)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre_mm + params[3:] - rotation @ centre_mm
    return matrix


def weighted_ncc(
    f: NDArray[np.float64], m: NDArray[np.float64], w: NDArray[np.float64]
) -> tuple[float, NDArray[np.float64]]:
    """Weighted normalised cross-correlation of f and m and its derivative with respect to each f_i."""
    total = float(w.sum())
    if total <= 0 or len(f) < 2:
        return 0.0, np.zeros_like(f)
    df = f - float(w @ f) / total
    dm = m - float(w @ m) / total
    sff, smm, sfm = float(w @ (df * df)), float(w @ (dm * dm)), float(w @ (df * dm))
    if sff <= 1e-12 or smm <= 1e-12:
        return 0.0, np.zeros_like(f)
    norm = math.sqrt(sff * smm)
    ncc = sfm / norm
    return ncc, w * (dm / norm - ncc * df / sff)


@dataclass(frozen=True, eq=False)
class Samples:
    """Points of the moving scan (mm, moving frame), their HU and weights."""

    points_mm: NDArray[np.float64]
    values: NDArray[np.float64]
    weights: NDArray[np.float64]


class Similarity:
    """1 - NCC between moving samples and the fixed level sampled under a motion.

    The samples are first mapped by ``base`` (moving -> fixed, 4x4); the motion of
    the parameters is applied after it, about the centre of the mapped samples.
    """

    def __init__(self, fixed: Level, samples: Samples, base: NDArray[np.float64]) -> None:
        self.fixed = fixed
        self.samples = samples
        self.points = samples.points_mm @ base[:3, :3].T + base[:3, 3]
        self.centre = self.points.mean(axis=0) if len(self.points) else np.zeros(3)
        inverse = np.linalg.inv(fixed.affine)
        self._to_index = inverse
        self._valid = fixed.valid
        n = len(self.points)
        self._values = np.zeros(n)
        self._gradients = np.zeros((n, 3))
        self._ok = np.zeros(n, dtype=np.bool_)
        self._sums = np.zeros((3, 4))
        self.evaluations = 0

    def sample(self, params: NDArray[np.float64]) -> int:
        """Sample the fixed level at the moved points; returns the number inside and valid."""
        from guidance.registration import _kernels

        matrix = self._to_index @ motion_matrix(params, self.centre)
        self.evaluations += 1
        count: int = _kernels.sample_trilinear(
            self.fixed.image, self._valid, matrix, self.points, self._values, self._gradients, self._ok
        )
        return count

    def _evaluate(self, params: NDArray[np.float64]) -> float:
        """Sample at ``params`` and return the NCC; the gradient sums are left in ``self._sums``."""
        from guidance.registration import _kernels

        matrix = self._to_index @ motion_matrix(params, self.centre)
        self.evaluations += 1
        ncc, _ = _kernels.ncc_gradient(
            self.fixed.image, self._valid, matrix, self.points, self.centre, self.samples.values,
            self.samples.weights, self._values, self._gradients, self._ok, self._sums,
        )  # fmt: skip
        return float(ncc)

    def ncc(self, params: NDArray[np.float64]) -> float:
        """NCC at ``params`` (0 when fewer than 2 points overlap)."""
        return self._evaluate(params)

    def loss_and_gradient(self, params: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        """1 - NCC and its gradient with respect to the six parameters."""
        ncc = self._evaluate(params)
        # d value / d mm = (d index / d mm)^T (d value / d index): sums over points of
        # d NCC / d f_i * gradient_i (in mm) and of its outer product with the lever arm.
        to_index = self._to_index[:3, :3]
        moment = to_index.T @ self._sums[:, 1:]
        _, derivatives = _rotations(np.asarray(params[:3], dtype=np.float64) / ARM_MM)
        gradient = np.empty(6)
        for k in range(3):
            gradient[k] = float(np.sum(derivatives[k] * moment)) / ARM_MM
        gradient[3:] = to_index.T @ self._sums[:, 0]
        return 1.0 - ncc, -gradient
