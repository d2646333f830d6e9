"""Candidate needle tracks: straight lines from a skin entry through the target.

A track is a straight needle path, entry at the skin (the edge of the body
mask) and tip at the deepest point of the target along it. Tracks come either
from a set of insertion directions (a cone around the preferred direction, or a
hemisphere: :func:`cone_directions`), each direction laid across the target as
a square or triangular lattice of parallel lines ``track_spacing_mm`` apart
(:func:`candidate_tracks`), or from the holes of a 3D-printed template, each an
entry point and a direction (:func:`template_tracks`).

A track is kept only when its whole path from the skin entry to its tip stays
more than ``margin_mm`` from every forbidden structure (bone, spinal cord,
carotid arteries, airway...). Distances to the forbidden voxels come from a
Euclidean distance transform on the masks' grid (exact for grids with
orthogonal axes; a gantry-tilted grid gets the per-axis spacings as an
approximation), looked up at the nearest voxel along the path sampled every
half voxel.

Candidate seed positions lie along each track inside the target, every
``seed_step_mm`` (5 mm by default: the minimum distance between seeds on a
needle), centred in each run of the track through the target (optionally with
the run's centre too: ``run_centres``).

All masks (target, body, forbidden) must share one grid: the CT's, or any grid
they were rasterised on (:func:`guidance.rasterise.structure_fraction`). Volumes
of fractions count as inside where the fraction is >= 0.5.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from guidance import __version__
from guidance.provenance import Provenance
from guidance.volume import Grid, Volume

__all__ = [
    "Track",
    "TrackCandidates",
    "candidate_tracks",
    "cone_directions",
    "template_tracks",
]

logger = logging.getLogger(__name__)

STAGE = "candidate_tracks"


@dataclass(frozen=True, eq=False)
class Track:
    """One straight needle track.

    Parameters
    ----------
    entry_mm : ndarray of shape (3,)
        Skin entry point (first body voxel along the line), LPS mm.
    direction : ndarray of shape (3,)
        Unit vector from the entry towards the tip (into the patient).
    target_depth_mm : tuple of 2 floats
        Depth from the entry, along ``direction``, of the first and the last
        (deepest) target point on the track, mm. The tip is at the deepest one.
    seed_positions_mm : ndarray of shape (k, 3)
        Candidate seed centres along the track inside the target, from the
        entry towards the tip, ``seed_step_mm`` apart within each run, LPS mm.
    clearance_mm : float
        Smallest distance from the path (entry to tip) to a forbidden voxel, mm
        (inf without forbidden masks).
    nearest_forbidden : str
        Name of the forbidden structure at ``clearance_mm`` ("" if none).
    label : str
        Where it came from: "direction 3, line (-1, 2)" or "template hole 7".
    """

    entry_mm: NDArray[np.float64]
    direction: NDArray[np.float64]
    target_depth_mm: tuple[float, float]
    seed_positions_mm: NDArray[np.float64]
    clearance_mm: float
    nearest_forbidden: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        for name in ("entry_mm", "direction", "seed_positions_mm"):
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def tip_mm(self) -> NDArray[np.float64]:
        """Deepest target point on the track, where the needle tip goes, LPS mm."""
        tip: NDArray[np.float64] = self.entry_mm + self.target_depth_mm[1] * self.direction
        return tip

    def path_mm(self, step_mm: float) -> NDArray[np.float64]:
        """Points from the entry to the tip every ``step_mm`` or less (both ends included), (n, 3)."""
        count = max(2, math.ceil(self.target_depth_mm[1] / step_mm) + 1)
        depths = np.linspace(0.0, self.target_depth_mm[1], count)
        path: NDArray[np.float64] = self.entry_mm + depths[:, np.newaxis] * self.direction
        return path


@dataclass(frozen=True, eq=False)
class TrackCandidates:
    """The feasible tracks and why the others were dropped.

    Parameters
    ----------
    tracks : tuple of Track
    rejected : dict of str to int
        Number of lines dropped per reason ("crosses <name>", "no skin entry
        inside the grid", "leaves the body before the tip", "longer than ...").
    provenance : Provenance
    """

    tracks: tuple[Track, ...]
    rejected: Mapping[str, int]
    provenance: Provenance = field(repr=False)


def cone_directions(
    axis: ArrayLike, *, half_angle_deg: float = 30.0, step_deg: float = 15.0
) -> NDArray[np.float64]:
    """Unit directions within ``half_angle_deg`` of ``axis``, about ``step_deg`` apart.

    Rings at polar angles 0, step, 2 step... <= half angle, each ring with
    round(360 sin(theta) / step) equally spaced azimuths, the first at a fixed
    reference azimuth (so the set is deterministic). ``half_angle_deg=90``
    gives a hemisphere.

    Returns
    -------
    ndarray of shape (n, 3), float64
        The axis itself first.
    """
    direction = _unit(axis, "axis")
    if not (0.0 <= half_angle_deg <= 90.0 and step_deg > 0.0):
        raise ValueError(f"need 0 <= half_angle_deg <= 90 and step_deg > 0; got {half_angle_deg}, {step_deg}")
    u, v = _perpendicular_basis(direction)
    result = [direction]
    rings = math.floor(half_angle_deg / step_deg + 1e-9)
    for ring in range(1, rings + 1):
        theta = math.radians(ring * step_deg)
        count = max(1, round(360.0 * math.sin(theta) / step_deg))
        for k in range(count):
            phi = 2.0 * math.pi * k / count
            result.append(
                math.cos(theta) * direction + math.sin(theta) * (math.cos(phi) * u + math.sin(phi) * v)
            )
    return np.array(result, dtype=np.float64)


def _unit(vector: ArrayLike, name: str) -> NDArray[np.float64]:
    array = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(array)) if array.shape == (3,) else 0.0
    if not (math.isfinite(norm) and norm > 1e-9):
        raise ValueError(f"{name} must be a finite non-zero 3-vector; got {array.tolist()}")
    unit: NDArray[np.float64] = array / norm
    return unit


def _perpendicular_basis(direction: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two unit vectors perpendicular to ``direction`` and to each other (deterministic)."""
    helper = np.eye(3)[int(np.argmin(np.abs(direction)))]
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(direction, u)


@dataclass(frozen=True, eq=False)
class _Scene:
    """Masks on one grid and the distance to the nearest forbidden voxel."""

    grid: Grid
    target: NDArray[np.bool_]
    body: NDArray[np.bool_]
    distance_mm: NDArray[np.float32]
    nearest_name: NDArray[np.int16]
    names: tuple[str, ...]

    @property
    def step_mm(self) -> float:
        return 0.5 * float(self.grid.spacing_mm.min())


def _mask(volume: Volume, name: str, grid: Grid) -> NDArray[np.bool_]:
    if not volume.grid.same_geometry(grid):
        raise ValueError(
            f"{name} is on another grid (shape {volume.shape}) than the target (shape {grid.shape}): "
            "rasterise every structure on the same grid"
        )
    if volume.array.dtype == np.bool_:
        return np.asarray(volume.array)
    mask: NDArray[np.bool_] = np.asarray(volume.array) >= 0.5
    return mask


def _scene(target: Volume, body: Volume, forbidden: Mapping[str, Volume]) -> _Scene:
    from scipy import ndimage

    grid = target.grid
    target_mask = _mask(target, "target", grid)
    if not target_mask.any():
        raise ValueError("target mask is empty: no voxel with a fraction >= 0.5")
    names = tuple(sorted(forbidden))
    distance = np.full(grid.shape, np.inf, dtype=np.float32)
    nearest = np.full(grid.shape, -1, dtype=np.int16)
    for k, name in enumerate(names):
        mask = _mask(forbidden[name], f"forbidden structure {name!r}", grid)
        if not mask.any():
            continue
        to_mask = ndimage.distance_transform_edt(~mask, sampling=grid.spacing_mm).astype(np.float32)
        closer = to_mask < distance
        distance[closer] = to_mask[closer]
        nearest[closer] = k
    return _Scene(grid, target_mask, _mask(body, "body", grid), distance, nearest, names)


def _lookup(scene: _Scene, points_mm: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Flat nearest-voxel indices of (..., 3) points and whether each is inside the grid."""
    shape = points_mm.shape[:-1]
    index = np.rint(scene.grid.patient_to_index(points_mm.reshape(-1, 3))).astype(np.intp)
    upper = np.asarray(scene.grid.shape) - 1
    inside = np.all((index >= 0) & (index <= upper), axis=1)
    flat = np.ravel_multi_index(tuple(np.clip(index, 0, upper).T), scene.grid.shape)
    return flat.reshape(shape), inside.reshape(shape)


def _line_track(
    scene: _Scene,
    anchor_mm: NDArray[np.float64],
    direction: NDArray[np.float64],
    depths_mm: NDArray[np.float64],
    *,
    seed_step_mm: float,
    margin_mm: float,
    max_length_mm: float,
    label: str,
    run_centres: bool = False,
) -> Track | str | None:
    """The track along one line, a reason for rejecting it, or None when it misses the target."""
    points = anchor_mm + depths_mm[:, np.newaxis] * direction
    flat, inside = _lookup(scene, points)
    in_target = inside & scene.target.reshape(-1)[flat]
    if not in_target.any():
        return None
    in_body = inside & scene.body.reshape(-1)[flat]
    first, last = np.flatnonzero(in_target)[[0, -1]]
    outside_before = np.flatnonzero(~in_body[: first + 1])
    if outside_before.size == 0:
        return "no skin entry inside the grid"
    start = int(outside_before[-1]) + 1
    if not in_body[start : last + 1].all():
        return "leaves the body before the tip"
    length = float(depths_mm[last] - depths_mm[start])
    if length > max_length_mm:
        return f"longer than {max_length_mm:g} mm"
    path_distance = scene.distance_mm.reshape(-1)[flat[start : last + 1]]
    worst = int(np.argmin(path_distance))
    clearance = float(path_distance[worst])
    nearest = (
        ""
        if not math.isfinite(clearance)
        else scene.names[scene.nearest_name.reshape(-1)[flat[start + worst]]]
    )
    if clearance <= margin_mm:
        return f"crosses {nearest} (+{margin_mm:g} mm margin)"
    entry = points[start]
    seeds = _seed_positions(
        depths_mm[start : last + 1] - depths_mm[start], in_target[start : last + 1], seed_step_mm, run_centres
    )
    return Track(
        entry_mm=entry,
        direction=direction,
        target_depth_mm=(float(depths_mm[first] - depths_mm[start]), length),
        seed_positions_mm=entry + seeds[:, np.newaxis] * direction,
        clearance_mm=clearance,
        nearest_forbidden=nearest,
        label=label,
    )


def _seed_positions(
    depths_mm: NDArray[np.float64], in_target: NDArray[np.bool_], step_mm: float, run_centres: bool = False
) -> NDArray[np.float64]:
    """Depths of candidate seeds: every ``step_mm``, centred in each run of the line inside the target,
    and the run's centre itself when ``run_centres`` (an even count of steps leaves it out)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], in_target.astype(np.int8), [0]])))
    result: list[NDArray[np.float64]] = []
    for begin, end in zip(edges[::2], edges[1::2], strict=True):
        low, high = float(depths_mm[begin]), float(depths_mm[end - 1])
        count = math.floor((high - low) / step_mm + 1e-9) + 1
        offset = 0.5 * ((high - low) - (count - 1) * step_mm)
        run = low + offset + step_mm * np.arange(count, dtype=np.float64)
        if run_centres and count % 2 == 0:
            run = np.insert(run, count // 2, 0.5 * (low + high))
        result.append(run)
    return np.concatenate(result) if result else np.zeros(0)


def _depths(grid: Grid, step_mm: float) -> NDArray[np.float64]:
    """Depths along a line through the grid, enough to cross it from any anchor inside it."""
    bounds = grid.bounds_mm()
    reach = float(np.linalg.norm(bounds[1] - bounds[0])) + float(grid.spacing_mm.max())
    count = math.ceil(2.0 * reach / step_mm) + 1
    return np.linspace(-reach, reach, count)


def _validate(track_spacing_mm: float, seed_step_mm: float, margin_mm: float, max_length_mm: float) -> None:
    for name, value in (
        ("track_spacing_mm", track_spacing_mm),
        ("seed_step_mm", seed_step_mm),
        ("max_length_mm", max_length_mm),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 mm; got {value}")
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise ValueError(f"margin_mm must be a finite distance >= 0 mm; got {margin_mm}")


_LATTICES = ("square", "triangular")


def _lattice(
    scene: _Scene, direction: NDArray[np.float64], spacing_mm: float, lattice: str = "square"
) -> list[tuple[tuple[int, int], NDArray[np.float64]]]:
    """(lattice index, anchor) of lines along ``direction`` spacing_mm apart across the target.

    A line is kept when it is the nearest lattice line of a target voxel centre
    (its Voronoi cell holds part of the target's footprint). The square
    lattice's basis is (u, v), the triangular one's (u, u / 2 + v sqrt(3) / 2)
    (each line has 6 neighbours ``spacing_mm`` away). The lattice is anchored
    at the target's centroid, so it does not depend on the grid extent.
    """
    centres = scene.grid.index_to_patient(np.argwhere(scene.target).astype(np.float64))
    centroid = centres.mean(axis=0)
    u, v = _perpendicular_basis(direction)
    second = (0.5, 0.5 * math.sqrt(3.0)) if lattice == "triangular" else (0.0, 1.0)
    basis = spacing_mm * np.array([[1.0, 0.0], list(second)])  # rows: lattice vectors in (u, v)
    footprint = np.unique(np.column_stack([(centres - centroid) @ u, (centres - centroid) @ v]), axis=0)
    oblique = np.rint(footprint @ np.linalg.inv(basis)).astype(int)
    offsets = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)])
    near = oblique[:, np.newaxis, :] + offsets[np.newaxis]  # (points, 9, 2): the nearest is among them
    distance = np.linalg.norm(near @ basis - footprint[:, np.newaxis, :], axis=-1)
    nearest = near[np.arange(near.shape[0]), np.argmin(distance, axis=1)]
    cells = np.unique(nearest, axis=0)
    return [
        ((int(i), int(j)), centroid + (i * basis[0, 0] + j * basis[1, 0]) * u + j * basis[1, 1] * v)
        for i, j in cells
    ]


def candidate_tracks(
    target: Volume,
    body: Volume,
    forbidden: Mapping[str, Volume] | None = None,
    *,
    directions: ArrayLike,
    track_spacing_mm: float = 7.0,
    seed_step_mm: float = 5.0,
    margin_mm: float = 3.0,
    max_length_mm: float = 200.0,
    lattice: str = "square",
    run_centres: bool = False,
) -> TrackCandidates:
    """Parallel lines ``track_spacing_mm`` apart across the target, for each direction, kept when clear.

    Parameters
    ----------
    target, body : Volume
        Masks (bool) or fractions (inside where >= 0.5) on one grid, (S, R, C).
    forbidden : mapping of str to Volume, optional
        Structures no needle may cross (bone, spinal cord, carotids, airway...), same grid.
    directions : array_like of shape (n, 3)
        Insertion directions (entry -> tip), e.g. from :func:`cone_directions`.
    track_spacing_mm : float
        Distance between neighbouring parallel lines (5-10 mm in practice).
    seed_step_mm : float
        Distance between candidate seed positions along a track.
    margin_mm : float
        Safety margin: the path must stay more than this from every forbidden voxel.
    max_length_mm : float
        Longest needle path from the skin entry to the tip.
    lattice : {"square", "triangular"}
        Arrangement of the parallel lines across each direction: a square grid
        (a template's) or a triangular (hexagonal) one, each line with 6
        neighbours ``track_spacing_mm`` away: the densest packing of lines
        that keep that distance (2 / sqrt(3) = 1.15 times as many per area as
        the square one), every point of the footprint within spacing / sqrt(3)
        of a line (spacing / sqrt(2) on the square one).
    run_centres : bool
        Also offer the centre of each run of a track through the target as a
        candidate seed when the ``seed_step_mm`` positions (centred in the run)
        leave it out, i.e. when their count is even: the position of a
        needle's single seed on a small target.

    Returns
    -------
    TrackCandidates
        Tracks in direction order, then lattice order (deterministic).

    Raises
    ------
    ValueError
        For masks on different grids, an empty target or bad options.
    """
    started = time.perf_counter()
    _validate(track_spacing_mm, seed_step_mm, margin_mm, max_length_mm)
    if lattice not in _LATTICES:
        raise ValueError(f"lattice must be one of {_LATTICES}; got {lattice!r}")
    units = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    units = np.array([_unit(d, f"directions[{k}]") for k, d in enumerate(units)]).reshape(-1, 3)
    scene = _scene(target, body, forbidden or {})
    depths = _depths(scene.grid, scene.step_mm)
    tracks: list[Track] = []
    rejected: dict[str, int] = {}
    for k, direction in enumerate(units):
        for (i, j), anchor in _lattice(scene, direction, track_spacing_mm, lattice):
            outcome = _line_track(
                scene,
                anchor,
                direction,
                depths,
                seed_step_mm=seed_step_mm,
                margin_mm=margin_mm,
                max_length_mm=max_length_mm,
                label=f"direction {k}, line ({i}, {j})",
                run_centres=run_centres,
            )
            _collect(outcome, tracks, rejected)
    parameters = {
        "directions": units.tolist(),
        "track_spacing_mm": track_spacing_mm,
        "lattice": lattice,
        "run_centres": run_centres,
        "seed_step_mm": seed_step_mm,
        "margin_mm": margin_mm,
        "max_length_mm": max_length_mm,
        "forbidden": list(scene.names),
    }
    return _result(tracks, rejected, parameters, started)


def _collect(outcome: Track | str | None, tracks: list[Track], rejected: dict[str, int]) -> None:
    if isinstance(outcome, Track):
        if outcome.seed_positions_mm.shape[0]:
            tracks.append(outcome)
    elif outcome is not None:
        rejected[outcome] = rejected.get(outcome, 0) + 1


def _result(
    tracks: list[Track], rejected: dict[str, int], parameters: dict[str, object], started: float
) -> TrackCandidates:
    elapsed = time.perf_counter() - started
    logger.info(
        "%d candidate tracks, %d lines rejected, in %.2f s", len(tracks), sum(rejected.values()), elapsed
    )
    provenance = Provenance(STAGE, parameters, __version__, elapsed)
    return TrackCandidates(tuple(tracks), dict(sorted(rejected.items())), provenance)


def template_tracks(
    entries_mm: ArrayLike,
    directions: ArrayLike,
    target: Volume,
    body: Volume,
    forbidden: Mapping[str, Volume] | None = None,
    *,
    seed_step_mm: float = 5.0,
    margin_mm: float = 3.0,
    max_length_mm: float = 200.0,
) -> TrackCandidates:
    """Tracks through the holes of a (3D-printed, non-coplanar) template.

    Each hole is a point on the needle's line (its exit from the template) and
    a direction; the track's entry is where that line enters the body. Holes
    whose line misses the target are left out silently (not counted as rejected);
    the others follow the rules of :func:`candidate_tracks`.

    Parameters
    ----------
    entries_mm : array_like of shape (n, 3)
        A point of each hole's line, LPS mm (outside or at the skin).
    directions : array_like of shape (n, 3)
        Each hole's direction into the patient.
    """
    started = time.perf_counter()
    _validate(1.0, seed_step_mm, margin_mm, max_length_mm)
    points = np.asarray(entries_mm, dtype=np.float64).reshape(-1, 3)
    units = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    if points.shape != units.shape or not np.all(np.isfinite(points)):
        raise ValueError(
            f"entries_mm {points.shape} and directions {units.shape} must be finite (n, 3) arrays"
        )
    scene = _scene(target, body, forbidden or {})
    depths = _depths(scene.grid, scene.step_mm)
    tracks: list[Track] = []
    rejected: dict[str, int] = {}
    for k, (point, direction) in enumerate(zip(points, units, strict=True)):
        outcome = _line_track(
            scene,
            point,
            _unit(direction, f"directions[{k}]"),
            depths,
            seed_step_mm=seed_step_mm,
            margin_mm=margin_mm,
            max_length_mm=max_length_mm,
            label=f"template hole {k}",
        )
        _collect(outcome, tracks, rejected)
    parameters = {
        "entries_mm": points.tolist(),
        "directions": units.tolist(),
        "seed_step_mm": seed_step_mm,
        "margin_mm": margin_mm,
        "max_length_mm": max_length_mm,
        "forbidden": list(scene.names),
    }
    return _result(tracks, rejected, parameters, started)
