"""Where things go on the screen: the viewer's world frame and the maps into it.

The viewer's world is the *current scan's* patient frame (DICOM LPS, mm,
PS3.3 C.7.6.2.1.1) with napari's axis order (z, y, x) = (S, P, L): napari shows
the last two world axes as screen rows (down) and columns (right), so an axial
slice appears with posterior down (anterior up) and the patient's left on the
screen's right: the radiological convention.

Plan-frame objects (structures, dose, planned and suggested seeds, cold spots)
reach the scan frame through the inverse of the registration's
``scan_to_plan_matrix_mm`` (a PS3.3 C.20.2 Frame of Reference Transformation
Matrix). Without a usable registration they are drawn in their own frame (an
identity map) and the viewer says so.

Nothing here imports Qt or napari: these are plain numpy functions, run in
worker threads and tested on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from guidance.volume import Grid, Volume

__all__ = [
    "NAPARI_FROM_LPS",
    "PlanMapping",
    "canonical_volume",
    "display_grid",
    "napari_affine",
    "plan_mapping",
    "scan_index_of",
]

#: (x, y, z, 1) LPS -> (z, y, x, 1) napari world: a permutation, its own inverse.
NAPARI_FROM_LPS = np.array(
    [[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def napari_affine(index_to_lps: ArrayLike) -> NDArray[np.float64]:
    """Layer affine (data index (s, r, c) -> napari world (S, P, L) mm) of a grid affine."""
    matrix: NDArray[np.float64] = NAPARI_FROM_LPS @ np.asarray(index_to_lps, dtype=np.float64)
    return matrix


@dataclass(frozen=True)
class PlanMapping:
    """How plan-frame positions reach the scan frame.

    Parameters
    ----------
    plan_to_scan : ndarray of shape (4, 4)
        Plan-frame LPS mm -> scan-frame LPS mm (identity when ``registered`` is False).
    registered : bool
        A usable registration was applied.
    verdict : str
        ``pass``, ``doubt``, ``fail`` or ``missing``.
    reasons : tuple of str
    """

    plan_to_scan: NDArray[np.float64]
    registered: bool
    verdict: str
    reasons: tuple[str, ...] = ()

    @property
    def scan_to_plan(self) -> NDArray[np.float64]:
        return np.asarray(np.linalg.inv(self.plan_to_scan), dtype=np.float64)

    def to_scan(self, points_plan_mm: ArrayLike) -> NDArray[np.float64]:
        """(n, 3) plan-frame mm -> (n, 3) scan-frame mm."""
        points = np.asarray(points_plan_mm, dtype=np.float64).reshape(-1, 3)
        mapped: NDArray[np.float64] = points @ self.plan_to_scan[:3, :3].T + self.plan_to_scan[:3, 3]
        return mapped


def plan_mapping(result: Mapping[str, Any]) -> PlanMapping:
    """The plan -> scan map of a ``seedguide.result/1`` dictionary (see docs/result-schema.md).

    A registration that is absent, unused (FAIL) or not a finite rigid 4x4 gives the identity
    with ``registered=False``: the caller must then warn that the plan is shown unregistered.
    """
    registration = result.get("registration")
    if not registration:
        return PlanMapping(np.eye(4), False, "missing", ("the registration stage did not run",))
    verdict = str(registration.get("verdict", "missing"))
    reasons = tuple(str(r) for r in registration.get("reasons", ()))
    matrix = np.asarray(registration.get("scan_to_plan_matrix_mm"), dtype=np.float64)
    usable = bool(registration.get("used", False)) and matrix.shape == (4, 4)
    if usable and np.all(np.isfinite(matrix)) and abs(np.linalg.det(matrix[:3, :3])) > 1e-6:
        return PlanMapping(np.asarray(np.linalg.inv(matrix), dtype=np.float64), True, verdict, reasons)
    return PlanMapping(np.eye(4), False, verdict, (*reasons, "registration not used by the pipeline"))


def scan_index_of(grid: Grid, points_scan_mm: ArrayLike) -> NDArray[np.float64]:
    """(n, 3) scan-frame mm -> (n, 3) fractional (s, r, c) indices of ``grid`` (empty-safe)."""
    points = np.asarray(points_scan_mm, dtype=np.float64).reshape(-1, 3)
    if points.shape[0] == 0:
        return np.zeros((0, 3))
    return grid.patient_to_index(points)


def display_grid(
    scan: Grid, boxes_scan_mm: list[NDArray[np.float64]], *, spacing_mm: float, margin_mm: float = 5.0
) -> Grid | None:
    """A grid sharing the scan's slices and in-plane axes, at ``spacing_mm`` in-plane, over the boxes.

    Dose, isodose lines, structure outlines and cold regions are drawn on it: its
    slices are exactly the scan's (napari shows them with the CT slice they belong
    to) and only the region of interest is sampled (cheap).

    Parameters
    ----------
    scan : Grid
        The scan's grid (scan frame).
    boxes_scan_mm : list of ndarray of shape (k, 3)
        Points (e.g. box corners) in the scan frame that the grid must cover.
    spacing_mm : float
        In-plane spacing, mm (never finer than the scan's).

    Returns
    -------
    Grid or None
        None when no box reaches the scanned slices.
    """
    if not boxes_scan_mm:
        return None
    points = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 3) for b in boxes_scan_mm])
    index = scan.patient_to_index(points)
    step = np.maximum(np.asarray([1.0, *(spacing_mm / scan.spacing_mm[1:])]), [1.0, 1.0, 1.0])
    margin = np.asarray([0.0, *(margin_mm / scan.spacing_mm[1:])])
    lower = np.floor(index.min(axis=0) - margin)
    upper = np.ceil(index.max(axis=0) + margin)
    lower = np.maximum(lower, 0.0)
    upper = np.minimum(upper, np.asarray(scan.shape, dtype=np.float64) - 1.0)
    if np.any(upper < lower):
        return None
    shape = tuple(int(n) for n in np.floor((upper - lower) / step + 1e-9).astype(int) + 1)
    # index of the new grid -> scan index: diag(step) then offset lower.
    to_scan_index = np.diag([*step, 1.0])
    to_scan_index[:3, 3] = lower
    return Grid((shape[0], shape[1], shape[2]), scan.affine @ to_scan_index, scan.frame_of_reference_uid)


def canonical_volume(volume: Volume) -> Volume:
    """The same voxels and geometry, with array axes permuted and flipped to run along +S, +P, +L.

    napari slices a layer correctly only when its affine does not mix or mirror the
    displayed and sliced axes; a scan stored with a negative slice step (slices
    sorted head to foot) or with columns towards the patient's right would be
    drawn mirrored or warned about. The array is a view (no copy).

    Raises
    ------
    ValueError
        If the volume is so oblique that an array axis has no dominant patient axis.
    """
    directions = NAPARI_FROM_LPS[:3, :3] @ volume.affine[:3, :3]  # column a: world (z, y, x) of array axis a
    order = [int(np.argmax(np.abs(directions[w]))) for w in range(3)]
    if sorted(order) != [0, 1, 2]:
        raise ValueError(
            f"cannot align the volume's axes with the patient axes (affine {volume.affine.tolist()})"
        )
    to_old = np.zeros((4, 4))
    to_old[3, 3] = 1.0
    array = np.transpose(volume.array, order)
    for w, a in enumerate(order):
        if directions[w, a] < 0:
            to_old[a, w], to_old[a, 3] = -1.0, volume.shape[a] - 1.0
            array = np.flip(array, axis=w)
        else:
            to_old[a, w] = 1.0
    if order == [0, 1, 2] and np.all(np.diag(to_old)[:3] > 0):
        return volume
    return Volume(array, volume.affine @ to_old, volume.frame_of_reference_uid, dict(volume.metadata))
