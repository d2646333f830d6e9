"""Rigid registration from corresponding landmarks: the manual fallback of the viewer.

The operator clicks the same anatomical points (a vertebral body, the tip of the
mandible, a calcification...) in the intra-procedure scan and in the planning CT;
:func:`register_landmarks` finds the proper rotation and translation that map the
first set onto the second in the least-squares sense (Kabsch / Horn, SVD), and
reports the residual of each pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["LandmarkRegistration", "register_landmarks"]

#: Points closer than this to a common line (mm, RMS) cannot fix a rotation about it.
_COLLINEAR_TOLERANCE_MM = 1e-3


@dataclass(frozen=True, eq=False)
class LandmarkRegistration:
    """A rigid transform fitted to landmark pairs, with its residuals.

    Parameters
    ----------
    moving_to_fixed : ndarray of shape (4, 4)
        Maps a point of the moving frame (intra-procedure scan, LPS mm) into the
        fixed frame (planning CT, LPS mm). Its rotation is proper (det = +1).
    residuals_mm : ndarray of shape (n,)
        Distance between each mapped moving point and its fixed point, mm.
    rms_mm : float
        Root mean square of ``residuals_mm``.
    """

    moving_to_fixed: NDArray[np.float64]
    residuals_mm: NDArray[np.float64]
    rms_mm: float

    @property
    def max_mm(self) -> float:
        """Largest residual, mm."""
        return float(self.residuals_mm.max())


def _points(value: ArrayLike, name: str) -> NDArray[np.float64]:
    points = np.asarray(value, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3) (LPS mm); got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return points


def register_landmarks(moving_points_mm: ArrayLike, fixed_points_mm: ArrayLike) -> LandmarkRegistration:
    """Least-squares rigid transform taking ``moving_points_mm`` onto ``fixed_points_mm``.

    Parameters
    ----------
    moving_points_mm : array_like of shape (n, 3)
        Landmarks in the moving frame (intra-procedure scan), LPS mm.
    fixed_points_mm : array_like of shape (n, 3)
        The same landmarks, in the same order, in the fixed frame (planning CT), LPS mm.

    Returns
    -------
    LandmarkRegistration
        The transform (proper rotation: a reflection is never returned, even when
        it would fit better, as for mirrored point sets) and per-point residuals.

    Raises
    ------
    ValueError
        Fewer than 3 pairs, different counts, non-finite values, or points that are
        (nearly) collinear in either set, which leave a rotation undetermined.

    References
    ----------
    W. Kabsch, Acta Cryst. A32 (1976) 922; B. K. P. Horn, J. Opt. Soc. Am. A 4 (1987) 629.
    The determinant correction is that of S. Umeyama, IEEE PAMI 13 (1991) 376.
    """
    moving = _points(moving_points_mm, "moving_points_mm")
    fixed = _points(fixed_points_mm, "fixed_points_mm")
    if moving.shape != fixed.shape:
        raise ValueError(
            f"moving_points_mm and fixed_points_mm must pair up; got {len(moving)} and {len(fixed)} points"
        )
    if len(moving) < 3:
        raise ValueError(f"a rigid landmark registration needs at least 3 point pairs; got {len(moving)}")
    moving_centre, fixed_centre = moving.mean(axis=0), fixed.mean(axis=0)
    a, b = moving - moving_centre, fixed - fixed_centre
    for name, centred in (("moving_points_mm", a), ("fixed_points_mm", b)):
        singular = np.linalg.svd(centred, compute_uv=False)
        off_line_rms = float(singular[1]) / np.sqrt(len(centred))
        if off_line_rms < _COLLINEAR_TOLERANCE_MM:
            raise ValueError(
                f"{name} are collinear (RMS distance from their common line {off_line_rms:.2g} mm): "
                "pick at least 3 landmarks that are not on one line"
            )
    u, _, vt = np.linalg.svd(a.T @ b)
    # Flip the weakest axis when the best orthogonal fit is a reflection.
    correction = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(vt.T @ u.T))) or 1.0])
    rotation = vt.T @ correction @ u.T
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = fixed_centre - rotation @ moving_centre
    residuals = np.linalg.norm(moving @ rotation.T + transform[:3, 3] - fixed, axis=1)
    transform.setflags(write=False)
    residuals.setflags(write=False)
    return LandmarkRegistration(transform, residuals, float(np.sqrt(np.mean(residuals**2))))
