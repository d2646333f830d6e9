"""Voxel grids in DICOM patient coordinates.

A :class:`Grid` is the geometry of a regular voxel grid: its shape, indexed
(slice, row, column), and the 4x4 affine that maps an index ``(s, r, c, 1)``
to a point in the DICOM patient coordinate system (LPS, millimetres). A
:class:`Volume` is a grid with its voxel values.

Nothing here assumes axial slices, equal spacing or a sign of the slice
direction: all of it is carried by the affine, which the DICOM readers build
from ImagePositionPatient, ImageOrientationPatient and PixelSpacing
(DICOM PS3.3 C.7.6.2.1.1).

Resampling onto another grid happens only through :func:`resample`; nothing in
this module changes a geometry behind the caller's back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Grid",
    "Interpolation",
    "Volume",
    "affine_from_dicom",
    "resample",
]

_AFFINE_ATOL = 1e-9


def _as_points(points_mm: ArrayLike, name: str) -> NDArray[np.float64]:
    points = np.asarray(points_mm, dtype=np.float64)
    if points.ndim == 1 and points.shape[0] == 3:
        points = points[np.newaxis, :]
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3) (or (3,) for one point); got shape {points.shape}")
    return points


def _validated_affine(affine: ArrayLike) -> NDArray[np.float64]:
    matrix = np.array(affine, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"affine must be a 4x4 matrix; got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("affine contains NaN or infinite values")
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0], atol=_AFFINE_ATOL):
        raise ValueError(f"affine last row must be [0, 0, 0, 1]; got {matrix[3].tolist()}")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ValueError("affine is singular: two grid axes are parallel or a spacing is zero")
    matrix.setflags(write=False)
    return matrix


def affine_from_dicom(
    first_position_mm: ArrayLike,
    orientation: ArrayLike,
    pixel_spacing_mm: ArrayLike,
    slice_step_mm: ArrayLike,
) -> NDArray[np.float64]:
    """Build the index -> patient affine of a slice stack from DICOM attributes.

    Parameters
    ----------
    first_position_mm : array_like of shape (3,)
        ImagePositionPatient of the first slice (index s = 0), LPS mm.
    orientation : array_like of shape (6,)
        ImageOrientationPatient: direction cosines of the first row (the
        direction of increasing column index) then of the first column (the
        direction of increasing row index).
    pixel_spacing_mm : array_like of shape (2,)
        PixelSpacing: (distance between rows, distance between columns), mm.
    slice_step_mm : array_like of shape (3,)
        Vector from slice s to slice s + 1 in LPS mm.

    Returns
    -------
    ndarray of shape (4, 4), float64
        Maps (s, r, c, 1) to (x, y, z, 1) in LPS mm.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1, Image Position and Image Orientation.
    """
    cosines = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    spacing = np.asarray(pixel_spacing_mm, dtype=np.float64).reshape(2)
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(slice_step_mm, dtype=np.float64).reshape(3)
    affine[:3, 1] = cosines[1] * spacing[0]  # row index runs along the column cosine
    affine[:3, 2] = cosines[0] * spacing[1]  # column index runs along the row cosine
    affine[:3, 3] = np.asarray(first_position_mm, dtype=np.float64).reshape(3)
    return affine


@dataclass(frozen=True, eq=False)
class Grid:
    """Geometry of a voxel grid indexed (slice, row, column).

    Parameters
    ----------
    shape : tuple of 3 ints
        Number of slices, rows and columns.
    affine : ndarray of shape (4, 4)
        Index (s, r, c, 1) -> LPS mm.
    frame_of_reference_uid : str
        DICOM FrameOfReferenceUID of the patient coordinates ("" if unknown).
    """

    shape: tuple[int, int, int]
    affine: NDArray[np.float64]
    frame_of_reference_uid: str = ""

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be 3 positive ints (slices, rows, columns); got {self.shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", _validated_affine(self.affine))

    @property
    def spacing_mm(self) -> NDArray[np.float64]:
        """Distance between neighbouring voxel centres along (slice, row, column), mm."""
        spacing: NDArray[np.float64] = np.linalg.norm(self.affine[:3, :3], axis=0)
        return spacing

    @property
    def axes(self) -> NDArray[np.float64]:
        """Unit vectors (rows of the result) of the slice, row and column axes in LPS."""
        axes: NDArray[np.float64] = (self.affine[:3, :3] / self.spacing_mm).T
        return axes

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cubic centimetres."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def index_to_patient(self, indices: ArrayLike) -> NDArray[np.float64]:
        """Map (n, 3) fractional (s, r, c) indices to (n, 3) LPS mm."""
        idx = _as_points(indices, "indices")
        points: NDArray[np.float64] = idx @ self.affine[:3, :3].T + self.affine[:3, 3]
        return points

    def patient_to_index(self, points_mm: ArrayLike) -> NDArray[np.float64]:
        """Map (n, 3) LPS mm points to (n, 3) fractional (s, r, c) indices."""
        points = _as_points(points_mm, "points_mm")
        inverse = np.linalg.inv(self.affine)
        indices: NDArray[np.float64] = points @ inverse[:3, :3].T + inverse[:3, 3]
        return indices

    def contains_index(self, indices: ArrayLike) -> NDArray[np.bool_]:
        """True for (n, 3) fractional indices that lie within the voxel centres' span."""
        idx = _as_points(indices, "indices")
        upper = np.asarray(self.shape, dtype=np.float64) - 1.0
        inside: NDArray[np.bool_] = np.all((idx >= -0.5) & (idx <= upper + 0.5), axis=1)
        return inside

    def voxel_centres_mm(self) -> NDArray[np.float64]:
        """LPS mm of every voxel centre, shape (S, R, C, 3). Memory: 24 bytes per voxel."""
        s, r, c = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in self.shape), indexing="ij")
        idx = np.stack([s, r, c], axis=-1)
        centres: NDArray[np.float64] = idx @ self.affine[:3, :3].T + self.affine[:3, 3]
        return centres

    def bounds_mm(self) -> NDArray[np.float64]:
        """Axis-aligned LPS box (2, 3) spanning the voxel centres: [min, max]."""
        corners = np.array(
            [
                [s, r, c]
                for s in (0, self.shape[0] - 1)
                for r in (0, self.shape[1] - 1)
                for c in (0, self.shape[2] - 1)
            ],
            dtype=np.float64,
        )
        points = self.index_to_patient(corners)
        return np.stack([points.min(axis=0), points.max(axis=0)])

    def same_geometry(self, other: Grid, *, atol_mm: float = 1e-4) -> bool:
        """True when both grids have the same shape, frame and affine (within atol_mm)."""
        return (
            self.shape == other.shape
            and self.frame_of_reference_uid == other.frame_of_reference_uid
            and bool(np.allclose(self.affine, other.affine, atol=atol_mm))
        )

    def is_axis_aligned(self, *, tol: float = 1e-6) -> bool:
        """True when every grid axis is parallel to a patient axis."""
        return bool(np.all(np.sum(np.abs(self.axes) > 1.0 - tol, axis=1) == 1))

    @classmethod
    def from_bounds(
        cls,
        lower_mm: ArrayLike,
        upper_mm: ArrayLike,
        spacing_mm: float | ArrayLike,
        frame_of_reference_uid: str = "",
    ) -> Grid:
        """An axial LPS-aligned grid whose voxel centres cover the box [lower_mm, upper_mm].

        The slice axis runs along +z (superior), rows along +y (posterior) and
        columns along +x (patient left), as in a standard axial CT.
        """
        lower = np.asarray(lower_mm, dtype=np.float64).reshape(3)
        upper = np.asarray(upper_mm, dtype=np.float64).reshape(3)
        step = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
        if np.any(step <= 0) or np.any(upper < lower):
            raise ValueError(f"need spacing_mm > 0 and upper_mm >= lower_mm; got {step}, {lower}, {upper}")
        counts_xyz = np.floor((upper - lower) / step + 1e-9).astype(int) + 1
        affine = np.eye(4)
        affine[:3, 0] = [0.0, 0.0, step[2]]
        affine[:3, 1] = [0.0, step[1], 0.0]
        affine[:3, 2] = [step[0], 0.0, 0.0]
        affine[:3, 3] = lower
        shape = (int(counts_xyz[2]), int(counts_xyz[1]), int(counts_xyz[0]))
        return cls(shape=shape, affine=affine, frame_of_reference_uid=frame_of_reference_uid)


@dataclass(frozen=True, eq=False)
class Volume:
    """Voxel values on a grid: array indexed (slice, row, column) + affine to LPS mm.

    The array is stored read-only (a view with ``writeable=False``); derive a
    new Volume with :meth:`with_array` rather than modifying it.

    Parameters
    ----------
    array : ndarray of shape (S, R, C)
        Voxel values (for CT: Hounsfield units; for dose: Gy).
    affine : ndarray of shape (4, 4)
        Index (s, r, c, 1) -> LPS mm.
    frame_of_reference_uid : str
        DICOM FrameOfReferenceUID ("" if unknown).
    metadata : dict
        Descriptive attributes (series UID, modality, units...): never geometry.
    """

    array: NDArray[Any]
    affine: NDArray[np.float64]
    frame_of_reference_uid: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"array must be 3-D (slice, row, column); got shape {array.shape}")
        view = array.view()
        view.setflags(write=False)
        object.__setattr__(self, "array", view)
        object.__setattr__(self, "affine", _validated_affine(self.affine))

    @property
    def grid(self) -> Grid:
        """The geometry of this volume without its values."""
        return Grid(self.shape, self.affine, self.frame_of_reference_uid)

    @property
    def shape(self) -> tuple[int, int, int]:
        s, r, c = self.array.shape
        return (s, r, c)

    @property
    def spacing_mm(self) -> NDArray[np.float64]:
        return self.grid.spacing_mm

    def index_to_patient(self, indices: ArrayLike) -> NDArray[np.float64]:
        return self.grid.index_to_patient(indices)

    def patient_to_index(self, points_mm: ArrayLike) -> NDArray[np.float64]:
        return self.grid.patient_to_index(points_mm)

    def with_array(self, array: ArrayLike, **metadata: Any) -> Volume:
        """A volume on the same grid with other values (same shape required)."""
        values = np.asarray(array)
        if values.shape != self.shape:
            raise ValueError(f"new array shape {values.shape} differs from the grid shape {self.shape}")
        return Volume(values, self.affine, self.frame_of_reference_uid, {**self.metadata, **metadata})

    @classmethod
    def on_grid(cls, grid: Grid, array: ArrayLike, **metadata: Any) -> Volume:
        """Wrap values computed on ``grid`` (shape must match)."""
        values = np.asarray(array)
        if values.shape != grid.shape:
            raise ValueError(f"array shape {values.shape} differs from grid shape {grid.shape}")
        return cls(values, grid.affine, grid.frame_of_reference_uid, dict(metadata))


class Interpolation(enum.Enum):
    """How :func:`resample` computes values between voxel centres."""

    NEAREST = "nearest"
    LINEAR = "linear"


def _is_axis_scaling(matrix: NDArray[np.float64]) -> bool:
    """Index map that scales and shifts each axis on its own (no rotation, no axis swap)."""
    linear = matrix[:3, :3]
    return bool(np.all(np.abs(linear - np.diag(np.diag(linear))) < 1e-12) and np.all(np.diag(linear) > 0))


def _separable_linear(
    source: NDArray[np.float32],
    scale: NDArray[np.float64],
    offset: NDArray[np.float64],
    shape: tuple[int, ...],
) -> NDArray[np.float32]:
    """Trilinear interpolation at index ``scale * j + offset``, one axis at a time (edge extension).

    The same values as ``ndimage.affine_transform(order=1, mode="nearest")`` for a diagonal
    map, without its per-voxel general transform: 10-30x faster on dose sample grids.
    """
    values: NDArray[np.float32] = source
    for axis in range(3):
        count = source.shape[axis]
        where = np.clip(scale[axis] * np.arange(shape[axis]) + offset[axis], 0.0, count - 1.0)
        low = np.minimum(np.floor(where).astype(np.intp), max(count - 2, 0))
        high = np.minimum(low + 1, count - 1)
        weight = (where - low).astype(np.float32)
        view: list[slice | None] = [None, None, None]
        view[axis] = slice(None)
        weight = weight[tuple(view)]
        values = np.take(values, low, axis=axis) * (1 - weight) + np.take(values, high, axis=axis) * weight
    return values.astype(np.float32, copy=False)


def resample(
    volume: Volume,
    target: Grid,
    *,
    interpolation: str | Interpolation = Interpolation.LINEAR,
    fill_value: float = 0.0,
    allow_frame_mismatch: bool = False,
) -> Volume:
    """Resample ``volume`` onto the voxel centres of ``target``.

    Parameters
    ----------
    volume : Volume
        Source values.
    target : Grid
        Geometry of the result; any orientation and spacing.
    interpolation : {"linear", "nearest"}
        Trilinear or nearest-neighbour interpolation in index space.
    fill_value : float
        Value of target voxels whose centre lies outside the source volume
        (beyond half a voxel past its outermost voxel centres). Within that
        last half voxel the edge value is used.
    allow_frame_mismatch : bool
        Resampling between different FrameOfReferenceUIDs is an error unless
        this is set (e.g. after a registration has mapped one into the other).

    Returns
    -------
    Volume
        On ``target``, float32 for linear interpolation, the source dtype for
        nearest (promoted to float when ``fill_value`` does not fit it).

    Raises
    ------
    ValueError
        If the frames of reference differ and ``allow_frame_mismatch`` is False.
    """
    from scipy import ndimage

    method = Interpolation(interpolation)
    frames = {volume.frame_of_reference_uid, target.frame_of_reference_uid}
    if len(frames - {""}) > 1 and not allow_frame_mismatch:
        raise ValueError(
            "volume and target grid are in different frames of reference "
            f"({volume.frame_of_reference_uid!r} vs {target.frame_of_reference_uid!r}); "
            "register them first or pass allow_frame_mismatch=True"
        )
    # target index -> patient -> source index, as one affine in index space.
    matrix = np.linalg.inv(volume.affine) @ target.affine
    if method is Interpolation.LINEAR:
        source: NDArray[Any] = volume.array.astype(np.float32, copy=False)
    else:
        source = volume.array
    # Edge extension, then fill outside the source voxels' extent (index -0.5 to n - 0.5):
    # a target centre inside the last half voxel takes the edge value, as the
    # source voxel covers it, instead of being dropped.
    if method is Interpolation.LINEAR and _is_axis_scaling(matrix):
        values = _separable_linear(source, np.diag(matrix)[:3], matrix[:3, 3], target.shape)
    else:
        values = ndimage.affine_transform(
            source,
            matrix[:3, :3],
            offset=matrix[:3, 3],
            output_shape=target.shape,
            order=1 if method is Interpolation.LINEAR else 0,
            mode="nearest",
            prefilter=False,
        )
    outside = ~_inside_source_extent(matrix, target.shape, volume.shape)
    if np.any(outside):
        if not np.can_cast(np.min_scalar_type(fill_value), values.dtype, "same_kind"):
            values = values.astype(np.result_type(values.dtype, np.float32))
        values[outside] = fill_value
    return Volume(values, target.affine, target.frame_of_reference_uid, dict(volume.metadata))


def _inside_source_extent(
    matrix: NDArray[np.float64], target_shape: tuple[int, int, int], source_shape: tuple[int, int, int]
) -> NDArray[np.bool_]:
    """True where a target voxel centre maps inside the source voxels' extent, slice by slice."""
    rows, cols = np.meshgrid(
        np.arange(target_shape[1], dtype=np.float64),
        np.arange(target_shape[2], dtype=np.float64),
        indexing="ij",
    )
    upper = np.asarray(source_shape, dtype=np.float64) - 0.5
    inside = np.empty(target_shape, dtype=bool)
    for s in range(target_shape[0]):
        ok = np.ones(rows.shape, dtype=bool)
        for axis in range(3):
            index = matrix[axis, 0] * s + matrix[axis, 1] * rows + matrix[axis, 2] * cols + matrix[axis, 3]
            ok &= (index >= -0.5 - 1e-9) & (index <= upper[axis] + 1e-9)
        inside[s] = ok
    return inside
