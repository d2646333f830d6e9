"""Structures (planar contours) to voxel masks and back.

How contours become a volume (DICOM PS3.3 C.8.8.6, ROI Contour Module):

- Each contour is a closed planar polygon; its last point joins its first.
- All contours lying in one plane combine by the even-odd rule: a point is
  inside when a ray from it crosses the plane's contours an odd number of
  times, so a contour inside another is a hole (how DICOM RT draws holes) and
  two disjoint contours are two islands.
- The contour planes share one normal, taken from the polygons themselves
  (their summed area vectors), never assumed axial. A point x belongs to the
  contour plane whose slab contains d = n . x, and is inside when its
  projection onto that plane is inside by the even-odd rule. Contours within
  0.1 mm of lying in the grid's slice planes take the grid's slice normal.
- Slabs: a plane's slab reaches half way to each neighbouring plane. On the
  outside of the first and last planes it reaches half the typical (median)
  plane spacing. A gap wider than 1.5 typical spacings (two
  separate parts of one ROI, or a slice the planner left empty) is not
  bridged: the planes on both sides reach half the typical spacing into it,
  as treatment planning systems do, rather than swelling into the gap. A
  structure with a single plane gets a slab of ``single_plane_thickness_mm``
  centred on it; by default the voxel's extent along the normal, so a contour
  drawn on one CT slice covers that slice.
- Slabs are half-open, [lower, upper), and so is the even-odd test (in the
  "row" direction of the sampling, a sample exactly on an edge counts on one
  side only), so polygons that tile a plane give every sample to exactly one.

Two implementations give the same answer where both apply:

- slice by slice, when the grid's slices are parallel to the contour planes
  (the usual axial CT or dose grid, any in-plane spacing, any slice direction
  sign, gantry tilt): a vectorised scanline fill in grid index coordinates;
- point by point otherwise (oblique grids): an even-odd test of every voxel
  centre or subsample, in chunks that bound memory.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance.structure import Structure, StructureRole
from guidance.volume import Grid

__all__ = [
    "RasterMethod",
    "mask_to_contours",
    "structure_fraction",
    "structure_mask",
    "structure_volume_cc",
]

logger = logging.getLogger(__name__)

#: Vertices may lie this far off their contour's plane (DS rounding, oblique CTs); contours
#: whose planes are closer than this share a plane; grid slices parallel to the contours within
#: this over the contours' extent are filled slice by slice.
_PLANE_TOLERANCE_MM = 0.1
#: A gap between contour planes wider than this many typical spacings is a gap in the structure.
_MAX_BRIDGED_GAP = 1.5
#: Contours with a smaller area are degenerate (a point or a line) and ignored.
_MIN_AREA_MM2 = 1e-6
#: Samples handled at once by the point-by-point path (about 100 bytes each).
_CHUNK_SAMPLES = 1 << 20
_MAX_SUBSAMPLES = 16


class RasterMethod(enum.Enum):
    """Which implementation fills the grid (both give the same answer where both apply)."""

    AUTO = "auto"
    SLICEWISE = "slicewise"
    POINTWISE = "pointwise"


@dataclass(frozen=True, eq=False)
class _Planes:
    """Contour planes of a structure along one normal, sorted, with their slabs (mm along normal)."""

    normal: NDArray[np.float64]
    position_mm: NDArray[np.float64]
    lower_mm: NDArray[np.float64]
    upper_mm: NDArray[np.float64]
    polygons: tuple[tuple[NDArray[np.float64], ...], ...]

    def lookup(self, d_mm: NDArray[np.float64]) -> NDArray[np.intp]:
        """Index of the plane whose slab [lower, upper) holds each d, or -1."""
        k = np.searchsorted(self.lower_mm, d_mm, side="right") - 1
        safe = np.clip(k, 0, None)
        found: NDArray[np.intp] = np.where((k >= 0) & (d_mm < self.upper_mm[safe]), k, -1)
        return found


def _area_vector(contour: NDArray[np.float64]) -> NDArray[np.float64]:
    """Newell's vector area of a closed polygon: normal times area, mm^2."""
    centred = contour - contour.mean(axis=0)
    area: NDArray[np.float64] = 0.5 * np.cross(centred, np.roll(centred, -1, axis=0)).sum(axis=0)
    return area


def _deviation_mm(contours: list[NDArray[np.float64]], normal: NDArray[np.float64]) -> float:
    """Largest distance of a vertex from its own contour's plane with this normal."""
    return max(float(np.max(np.abs(c @ normal - np.mean(c @ normal)))) for c in contours)


def _grid_slice_normal(grid: Grid) -> NDArray[np.float64]:
    """Unit normal of the grid's (row, column) planes, pointing along increasing slice index."""
    normal = np.cross(grid.affine[:3, 1], grid.affine[:3, 2])
    normal /= np.linalg.norm(normal)
    sign = 1.0 if normal @ grid.affine[:3, 0] >= 0 else -1.0
    result: NDArray[np.float64] = normal * sign
    return result


def _choose_normal(name: str, contours: list[NDArray[np.float64]], grid: Grid) -> NDArray[np.float64]:
    """The contours' common normal; the grid's slice normal when they agree within tolerance."""
    grid_normal = _grid_slice_normal(grid)
    if _deviation_mm(contours, grid_normal) <= _PLANE_TOLERANCE_MM:
        return grid_normal
    areas = np.array([_area_vector(c) for c in contours])
    reference = areas[np.argmax(np.linalg.norm(areas, axis=1))]
    total = np.sum(areas * np.where(areas @ reference >= 0, 1.0, -1.0)[:, np.newaxis], axis=0)
    normal: NDArray[np.float64] = total / np.linalg.norm(total)
    normal *= 1.0 if normal[np.argmax(np.abs(normal))] > 0 else -1.0
    deviation = _deviation_mm(contours, normal)
    if deviation > _PLANE_TOLERANCE_MM:
        raise ValueError(
            f"structure {name!r}: its contours are not planar and parallel: a vertex lies "
            f"{deviation:.3f} mm off its contour's plane (normal {np.round(normal, 4).tolist()}, "
            f"tolerance {_PLANE_TOLERANCE_MM} mm); DICOM CLOSED_PLANAR contours must be planar"
        )
    return normal


def _slabs(
    position_mm: NDArray[np.float64], single_thickness_mm: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper slab bounds of sorted plane positions (see the module docstring)."""
    if len(position_mm) == 1:
        half = single_thickness_mm / 2.0
        return position_mm - half, position_mm + half
    gaps = np.diff(position_mm)
    half = float(np.median(gaps)) / 2.0
    bridged = gaps <= _MAX_BRIDGED_GAP * 2.0 * half
    middle = position_mm[:-1] + gaps / 2.0
    lower = position_mm - half
    upper = position_mm + half
    lower[1:] = np.where(bridged, middle, lower[1:])
    upper[:-1] = np.where(bridged, middle, upper[:-1])
    return lower, upper


def _build_planes(
    structure: Structure, grid: Grid, single_plane_thickness_mm: float | None
) -> _Planes | None:
    """Group the structure's contours into planes along their normal; None when nothing has area."""
    contours = [
        c
        for c in structure.contours_mm
        if len(c) >= 3 and float(np.linalg.norm(_area_vector(c))) > _MIN_AREA_MM2
    ]
    if len(contours) < len(structure.contours_mm):
        logger.debug(
            "structure %r: %d contour(s) without area ignored",
            structure.name,
            len(structure.contours_mm) - len(contours),
        )
    if not contours:
        return None
    normal = _choose_normal(structure.name, contours, grid)
    centres = np.array([np.mean(c @ normal) for c in contours])
    order = np.argsort(centres, kind="stable")
    starts = np.concatenate([[0], np.nonzero(np.diff(centres[order]) > _PLANE_TOLERANCE_MM)[0] + 1])
    groups = np.split(order, starts[1:])
    position = np.array([np.mean(centres[g]) for g in groups])
    if single_plane_thickness_mm is None:
        single_plane_thickness_mm = float(np.sum(np.abs(grid.affine[:3, :3].T @ normal)))
    elif not single_plane_thickness_mm > 0:
        raise ValueError(f"single_plane_thickness_mm must be > 0; got {single_plane_thickness_mm}")
    lower, upper = _slabs(position, single_plane_thickness_mm)
    polygons = tuple(tuple(contours[i] for i in g) for g in groups)
    return _Planes(normal, position, lower, upper, polygons)


def _expand_ranges(lo: NDArray[np.intp], hi: NDArray[np.intp]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """All pairs (i, j) with lo[i] <= j < hi[i], as two flat arrays."""
    counts = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo)), counts)
    starts = np.cumsum(counts) - counts
    index = np.arange(int(counts.sum())) - starts[owner] + lo[owner]
    return owner, index


def _edges(polygons: list[NDArray[np.float64]]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Polygon edges (E, 2) as (key, cross) coordinates, each ordered so start key <= end key.

    Canonical order makes an edge shared by two polygons give bit-identical crossings in
    both, so the half-open rule gives a sample on it to exactly one. Edges parallel to the
    scan (equal keys) never cross a scanline and are dropped.
    """
    if not polygons:
        return np.zeros((0, 2)), np.zeros((0, 2))
    starts = np.concatenate(polygons)
    ends = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    swap = starts[:, 0] > ends[:, 0]
    p = np.where(swap[:, np.newaxis], ends, starts)
    q = np.where(swap[:, np.newaxis], starts, ends)
    keep = p[:, 0] < q[:, 0]
    return p[keep], q[keep]


def _crossings(
    p: NDArray[np.float64], q: NDArray[np.float64], keys: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """For sorted scan keys: (key index, cross coordinate) of each edge crossing, half-open in key."""
    lo = np.searchsorted(keys, p[:, 0], side="left")
    hi = np.searchsorted(keys, q[:, 0], side="left")
    edge, index = _expand_ranges(lo, hi)
    slope = (q[:, 1] - p[:, 1]) / (q[:, 0] - p[:, 0])
    cross = p[edge, 1] + (keys[index] - p[edge, 0]) * slope[edge]
    return index, cross


def _samples(start: int, count: int, subsamples: int) -> NDArray[np.float64]:
    """Index coordinates of the subsamples of voxels start..start+count-1 along one axis."""
    positions: NDArray[np.float64] = start - 0.5 + (np.arange(count * subsamples) + 0.5) / subsamples
    return positions


def _scanline_counts(
    p: NDArray[np.float64], q: NDArray[np.float64], shape: tuple[int, int], subsamples: int
) -> tuple[int, int, NDArray[np.int32]] | None:
    """Even-odd fill of one plane in (row, column) index coordinates.

    Returns (first row, first column, inside-sample counts per voxel) over the polygons'
    bounding box clipped to the grid, or None when no sample is inside.
    """
    if len(p) == 0:
        return None
    r0, r1 = max(0, math.floor(p[:, 0].min())), min(shape[0], math.ceil(q[:, 0].max()) + 1)
    c_all = np.concatenate([p[:, 1], q[:, 1]])
    c0, c1 = max(0, math.floor(c_all.min())), min(shape[1], math.ceil(c_all.max()) + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    ys, xs = _samples(r0, r1 - r0, subsamples), _samples(c0, c1 - c0, subsamples)
    row, cross = _crossings(p, q, ys)
    if len(row) == 0:
        return None
    width = len(xs) + 1
    first_right = np.searchsorted(xs, cross, side="left")  # samples at or right of the crossing
    toggles = np.bincount(row * width + first_right, minlength=len(ys) * width).reshape(len(ys), width)
    inside = np.cumsum(toggles[:, :-1], axis=1) & 1
    counts = inside.reshape(r1 - r0, subsamples, c1 - c0, subsamples).sum(axis=(1, 3), dtype=np.int32)
    return r0, c0, counts


def _fraction_slicewise(planes: _Planes, grid: Grid, subsamples: int) -> NDArray[np.float32]:
    """Occupancy on a grid whose (row, column) planes are parallel to the contour planes."""
    matrix, origin = grid.affine[:3, :3], grid.affine[:3, 3]
    n = planes.normal
    # Moving the contour plane by e mm along n moves its (row, column) image by e * shift.
    shift = np.linalg.solve(matrix, n)[1:]
    shift = np.zeros(2) if np.max(np.abs(shift)) < 1e-12 else shift
    edges = [_edges([grid.patient_to_index(c)[:, 1:] for c in polygons]) for polygons in planes.polygons]
    offsets = _samples(0, 1, subsamples)
    d = n @ origin + (np.arange(grid.shape[0])[:, np.newaxis] + offsets) * (n @ matrix[:, 0])
    plane = planes.lookup(d)
    out = np.zeros(grid.shape, dtype=np.float32)
    cache: dict[int, tuple[int, int, NDArray[np.int32]] | None] = {}
    for s in np.nonzero(np.any(plane >= 0, axis=1))[0]:
        parts = []
        for j in np.nonzero(plane[s] >= 0)[0]:
            k = int(plane[s, j])
            if shift.any():
                move = (d[s, j] - planes.position_mm[k]) * shift
                parts.append(
                    _scanline_counts(edges[k][0] + move, edges[k][1] + move, grid.shape[1:], subsamples)
                )
            else:
                if k not in cache:
                    cache[k] = _scanline_counts(edges[k][0], edges[k][1], grid.shape[1:], subsamples)
                parts.append(cache[k])
        _accumulate(out[s], [part for part in parts if part is not None], subsamples**3)
        cache = {int(k): cache[int(k)] for k in plane[s] if int(k) in cache}  # the next slice may reuse these
    return out


def _accumulate(
    out: NDArray[np.float32], parts: list[tuple[int, int, NDArray[np.int32]]], samples_per_voxel: int
) -> None:
    """Write the summed sample counts of sub-slices into one slice as fractions."""
    if not parts:
        return
    r0, c0 = min(p[0] for p in parts), min(p[1] for p in parts)
    r1, c1 = max(p[0] + p[2].shape[0] for p in parts), max(p[1] + p[2].shape[1] for p in parts)
    total = np.zeros((r1 - r0, c1 - c0), dtype=np.int64)
    for pr, pc, counts in parts:
        total[pr - r0 : pr - r0 + counts.shape[0], pc - c0 : pc - c0 + counts.shape[1]] += counts
    out[r0:r1, c0:c1] = total / samples_per_voxel


def _plane_basis(normal: NDArray[np.float64]) -> NDArray[np.float64]:
    """Two orthonormal in-plane axes (rows of the result) perpendicular to ``normal``."""
    helper = np.eye(3)[np.argmin(np.abs(normal))]
    first = np.cross(normal, helper)
    first /= np.linalg.norm(first)
    return np.stack([first, np.cross(normal, first)])


def _points_inside(
    key: NDArray[np.float64], cross: NDArray[np.float64], p: NDArray[np.float64], q: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Even-odd test of points (key, cross) against edges, with the scanline's tie rules."""
    order = np.argsort(key, kind="stable")
    index, crossing = _crossings(p, q, key[order])
    hits = index[crossing <= cross[order][index]]
    inside = np.empty(len(key), dtype=bool)
    inside[order] = (np.bincount(hits, minlength=len(key)) & 1).astype(bool)
    return inside


def _index_box(planes: _Planes, grid: Grid) -> tuple[NDArray[np.intp], NDArray[np.intp]] | None:
    """Voxel index range [lo, hi) that holds every slab, clipped to the grid."""
    corners = [
        polygon + (bound - planes.position_mm[k]) * planes.normal
        for k, polygons in enumerate(planes.polygons)
        for polygon in polygons
        for bound in (planes.lower_mm[k], planes.upper_mm[k])
    ]
    indices = grid.patient_to_index(np.concatenate(corners))
    lo = np.maximum(np.floor(indices.min(axis=0)), 0).astype(np.intp)
    hi = np.minimum(np.ceil(indices.max(axis=0)) + 1, grid.shape).astype(np.intp)
    return (lo, hi) if np.all(lo < hi) else None


def _blocks(lo: NDArray[np.intp], hi: NDArray[np.intp], per_voxel: int) -> list[tuple[int, int, int, int]]:
    """(s0, s1, r0, r1) blocks of the box with at most about _CHUNK_SAMPLES samples each."""
    columns = int(hi[2] - lo[2])
    rows = max(1, _CHUNK_SAMPLES // (columns * per_voxel))
    if rows < hi[1] - lo[1]:
        return [
            (s, s + 1, r, min(r + rows, int(hi[1])))
            for s in range(lo[0], hi[0])
            for r in range(lo[1], hi[1], rows)
        ]
    slices = max(1, rows // int(hi[1] - lo[1]))
    return [(s, min(s + slices, int(hi[0])), int(lo[1]), int(hi[1])) for s in range(lo[0], hi[0], slices)]


def _fraction_pointwise(planes: _Planes, grid: Grid, subsamples: int) -> NDArray[np.float32]:
    """Occupancy on any grid: even-odd test of every subsample, in bounded chunks."""
    out = np.zeros(grid.shape, dtype=np.float32)
    box = _index_box(planes, grid)
    if box is None:
        return out
    basis = _plane_basis(planes.normal)  # rows: cross axis, key axis
    edges = [_edges([c @ basis[::-1].T for c in polygons]) for polygons in planes.polygons]
    offsets = _samples(0, 1, subsamples)
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    for s0, s1, r0, r1 in _blocks(box[0], box[1], len(sub)):
        centres = np.stack(
            np.meshgrid(np.arange(s0, s1), np.arange(r0, r1), np.arange(box[0][2], box[1][2]), indexing="ij"),
            axis=-1,
        )
        points = grid.index_to_patient((centres[..., np.newaxis, :] + sub).reshape(-1, 3))
        plane = planes.lookup(points @ planes.normal)
        inside = np.zeros(len(points), dtype=bool)
        order = np.argsort(plane, kind="stable")
        starts = np.searchsorted(plane[order], np.arange(len(planes.polygons) + 1))
        for k in range(len(planes.polygons)):
            chosen = order[starts[k] : starts[k + 1]]
            projected = points[chosen] @ basis.T
            inside[chosen] = _points_inside(projected[:, 1], projected[:, 0], *edges[k])
        counts = inside.reshape(*centres.shape[:3], len(sub)).sum(axis=-1)
        out[s0:s1, r0:r1, box[0][2] : box[1][2]] = counts / len(sub)
    return out


def _check_inputs(structure: Structure, grid: Grid, subsamples: int, allow_frame_mismatch: bool) -> None:
    if structure.role is StructureRole.POINT:
        raise ValueError(
            f"structure {structure.name!r} is a POINT structure (role {structure.role.value}): "
            "points have no volume to rasterise"
        )
    if not isinstance(subsamples, int) or not 1 <= subsamples <= _MAX_SUBSAMPLES:
        raise ValueError(f"subsamples must be an int from 1 to {_MAX_SUBSAMPLES}; got {subsamples!r}")
    frames = {structure.frame_of_reference_uid, grid.frame_of_reference_uid} - {""}
    if len(frames) > 1 and not allow_frame_mismatch:
        raise ValueError(
            f"structure {structure.name!r} is in frame of reference {structure.frame_of_reference_uid!r} "
            f"but the grid is in {grid.frame_of_reference_uid!r}; register them first or pass "
            "allow_frame_mismatch=True"
        )


#: Fractions already computed, per structure (weakly held) and grid: a procedure rasterises
#: the same plan structures on the same dose and evaluation grids after every scan.
_CACHE: weakref.WeakKeyDictionary[Structure, OrderedDict[tuple[object, ...], NDArray[np.float32]]] = (
    weakref.WeakKeyDictionary()
)
_CACHE_PER_STRUCTURE = 8
_CACHE_LOCK = threading.Lock()


def _cached(structure: Structure, key: tuple[object, ...]) -> NDArray[np.float32] | None:
    with _CACHE_LOCK:
        entries = _CACHE.get(structure)
        if entries is None or key not in entries:
            return None
        entries.move_to_end(key)
        return entries[key].copy()


def _remember(structure: Structure, key: tuple[object, ...], fraction: NDArray[np.float32]) -> None:
    kept = fraction.copy()
    kept.setflags(write=False)
    with _CACHE_LOCK:
        entries = _CACHE.setdefault(structure, OrderedDict())
        entries[key] = kept
        while len(entries) > _CACHE_PER_STRUCTURE:
            entries.popitem(last=False)


def structure_fraction(
    structure: Structure,
    grid: Grid,
    *,
    subsamples: int = 4,
    single_plane_thickness_mm: float | None = None,
    method: str | RasterMethod = RasterMethod.AUTO,
    allow_frame_mismatch: bool = False,
) -> NDArray[np.float32]:
    """Fraction of each voxel inside the structure (partial volume), by uniform supersampling.

    Each voxel is sampled at ``subsamples**3`` points on a regular lattice in index space
    (also along the slice axis), not only near edges: edge-only supersampling biases D90.

    Parameters
    ----------
    structure : Structure
        Closed planar contours in LPS mm (see the module docstring for how they fill space).
    grid : Grid
        Target voxel grid, any orientation and spacing.
    subsamples : int
        Samples per voxel along each axis (1 samples only the centre), 1 to 16.
    single_plane_thickness_mm : float, optional
        Slab thickness of a structure with a single contour plane; default: the extent of
        one voxel of ``grid`` along the contour normal.
    method : {"auto", "slicewise", "pointwise"}
        "auto" fills slice by slice when the grid slices are parallel to the contours.
    allow_frame_mismatch : bool
        Structure and grid in different FrameOfReferenceUIDs is an error unless set.

    Returns
    -------
    ndarray of shape grid.shape, float32
        Occupancy in [0, 1]; all zeros for an empty structure or one outside the grid.
        A new array each call; results are cached per structure object and grid (a
        procedure rasterises the same plan structures on the same grids after every scan).

    Raises
    ------
    ValueError
        For a POINT structure, non-planar or non-parallel contours, mismatched frames, a
        bad option, or "slicewise" on a grid whose slices are not parallel to the contours.

    References
    ----------
    DICOM PS3.3 C.8.8.6, ROI Contour Module (closed planar contours, holes by even-odd).
    """
    _check_inputs(structure, grid, subsamples, allow_frame_mismatch)
    chosen = RasterMethod(method)
    key = (grid.shape, grid.affine.tobytes(), subsamples, single_plane_thickness_mm, chosen)
    found = _cached(structure, key)
    if found is not None:
        return found
    fraction = _fraction(structure, grid, subsamples, single_plane_thickness_mm, chosen)
    _remember(structure, key, fraction)
    return fraction


def _fraction(
    structure: Structure, grid: Grid, subsamples: int, single_plane_thickness_mm: float | None,
    chosen: RasterMethod,
) -> NDArray[np.float32]:  # fmt: skip
    planes = _build_planes(structure, grid, single_plane_thickness_mm)
    if planes is None:
        return np.zeros(grid.shape, dtype=np.float32)
    parallel = bool(np.array_equal(planes.normal, _grid_slice_normal(grid)))
    if chosen is RasterMethod.SLICEWISE and not parallel:
        raise ValueError(
            f"structure {structure.name!r}: the grid's slices are not parallel to its contours, "
            "so it cannot be filled slice by slice; use method='pointwise' or 'auto'"
        )
    if chosen is RasterMethod.POINTWISE or not parallel:
        return _fraction_pointwise(planes, grid, subsamples)
    return _fraction_slicewise(planes, grid, subsamples)


def structure_mask(
    structure: Structure,
    grid: Grid,
    *,
    single_plane_thickness_mm: float | None = None,
    method: str | RasterMethod = RasterMethod.AUTO,
    allow_frame_mismatch: bool = False,
) -> NDArray[np.bool_]:
    """True for voxels whose centre is inside the structure.

    Same rules and options as :func:`structure_fraction` with one sample per voxel.

    Returns
    -------
    ndarray of shape grid.shape, bool
    """
    fraction = structure_fraction(
        structure,
        grid,
        subsamples=1,
        single_plane_thickness_mm=single_plane_thickness_mm,
        method=method,
        allow_frame_mismatch=allow_frame_mismatch,
    )
    mask: NDArray[np.bool_] = fraction > 0.5
    return mask


def structure_volume_cc(
    structure: Structure,
    grid: Grid,
    *,
    subsamples: int = 4,
    single_plane_thickness_mm: float | None = None,
    allow_frame_mismatch: bool = False,
) -> float:
    """Volume of the part of the structure inside ``grid``, cm^3, from :func:`structure_fraction`."""
    fraction = structure_fraction(
        structure,
        grid,
        subsamples=subsamples,
        single_plane_thickness_mm=single_plane_thickness_mm,
        allow_frame_mismatch=allow_frame_mismatch,
    )
    return float(fraction.sum(dtype=np.float64)) * grid.voxel_volume_cc


def _simplify(outline: NDArray[np.float64]) -> NDArray[np.float64]:
    """Drop repeated vertices, zero-width spikes and vertices inside straight runs."""
    while len(outline) >= 3:
        outline = outline[np.any(outline != np.roll(outline, 1, axis=0), axis=1)]
        before, after = outline - np.roll(outline, 1, axis=0), np.roll(outline, -1, axis=0) - outline
        turning = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0
        if turning.all():
            break
        outline = outline[turning]
    return outline


def _slice_outlines(plane: NDArray[np.bool_]) -> list[NDArray[np.float64]]:
    """Pixel-edge outlines (outer borders and holes) of a 2-D mask, as (row, column) indices.

    The mask is upsampled 2x so that every pixel is a 2x2 block: OpenCV then traces the
    centres of boundary sub-pixels, and sub-pixel 2i lies on the edge i - 0.5 of pixel i
    while 2i + 1 lies on its edge i + 0.5. The outlines run along pixel edges, half a
    pixel from every pixel centre, so rasterising them gives back the same pixels.
    """
    import cv2  # heavy: only when outlines are wanted

    rows, columns = np.nonzero(plane.any(axis=1))[0], np.nonzero(plane.any(axis=0))[0]
    r0, c0 = int(rows[0]), int(columns[0])
    crop = plane[r0 : rows[-1] + 1, c0 : columns[-1] + 1]
    upsampled = np.pad(np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1), 1).astype(np.uint8)
    traced, _hierarchy = cv2.findContours(upsampled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    for contour in traced:
        sub_pixels = contour[:, 0, ::-1].astype(np.int64) - 1  # (row, column) in the upsampled crop
        outline = _simplify(((sub_pixels + 1) // 2 + np.array([r0, c0]) - 0.5).astype(np.float64))
        if len(outline) >= 3:
            outlines.append(outline)
    return outlines


def mask_to_contours(mask: NDArray[np.bool_], grid: Grid) -> tuple[NDArray[np.float64], ...]:
    """Closed planar contours (LPS mm) that outline a mask slice by slice.

    Each contour follows voxel edges in the plane of a grid slice (through the voxel
    centres along the slice axis); holes are separate contours, so the even-odd rule
    recovers them. Rasterising the result with :func:`structure_mask` on ``grid`` gives
    ``mask`` back exactly unless most non-empty slices are separated by empty ones (the
    slab rule bridges gaps up to 1.5 times the median contour plane spacing).

    Parameters
    ----------
    mask : ndarray of shape grid.shape, bool
    grid : Grid

    Returns
    -------
    tuple of ndarray of shape (n, 3), float64
        One polygon per outline or hole, LPS mm, in slice order.
    """
    if mask.shape != grid.shape:
        raise ValueError(f"mask shape {mask.shape} differs from grid shape {grid.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be a boolean array; got dtype {mask.dtype}")
    contours: list[NDArray[np.float64]] = []
    for s in np.nonzero(mask.any(axis=(1, 2)))[0]:
        for outline in _slice_outlines(mask[s]):
            indices = np.column_stack([np.full(len(outline), float(s)), outline])
            contours.append(grid.index_to_patient(indices))
    return tuple(contours)
