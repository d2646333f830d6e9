"""What the layers of one scan show, computed without Qt (safe in a worker thread).

:func:`build_scene` turns a :class:`~guidance.session.ScanData` and the plan into
plain arrays in the viewer's world (see :mod:`viewer.geometry`):

- the CT in HU on its own grid;
- the dose (Gy) resampled onto a *display grid* that shares the scan's slices and
  in-plane axes (so every CT slice has its dose slice), its isodose lines at
  :data:`ISODOSE_PERCENT` of the prescription (marching squares per slice) and the
  cold region (target voxels below the prescription);
- the outlines of the target and organs at risk, rasterised on a second display
  grid of the scan's slices (DICOM contours may lie between the scan's slices);
- seeds, needles, cold and hot spots as scan-index coordinates (napari draws a
  point on the nearest scan slice).

Colours are module constants, documented for the operator in docs/viewer.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from skimage import measure

from guidance.plan import Plan
from guidance.rasterise import structure_mask
from guidance.session import ScanData
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume, resample
from viewer.geometry import PlanMapping, canonical_volume, display_grid, plan_mapping, scan_index_of

__all__ = [
    "COLD_SPOT_RGBA",
    "HOT_SPOT_RGBA",
    "ISODOSE_PERCENT",
    "ISODOSE_RGBA",
    "SEED_STYLE",
    "TARGET_RGBA",
    "Lines",
    "Marks",
    "Scene",
    "build_scene",
    "primary_target",
    "structure_rgba",
]

logger = logging.getLogger(__name__)

#: Cold region (target below the prescription) and cold-spot markers: magenta, found nowhere else.
COLD_SPOT_RGBA = (1.0, 0.0, 1.0, 1.0)
#: Hot spots (organ regions above their limit, target above 200%).
HOT_SPOT_RGBA = (1.0, 0.45, 0.0, 1.0)
#: Outline of the target(s).
TARGET_RGBA = (1.0, 0.15, 0.15, 1.0)
#: Outline of an organ at risk without a DICOM ROI Display Color.
ORGAN_RGBA = (0.3, 0.9, 1.0, 1.0)
ISODOSE_PERCENT = (50, 100, 150, 200)
ISODOSE_RGBA = {
    50: (0.2, 0.5, 1.0, 1.0),
    100: (1.0, 1.0, 0.0, 1.0),
    150: (1.0, 0.55, 0.0, 1.0),
    200: (1.0, 1.0, 1.0, 1.0),
}
#: (symbol, face RGBA, size mm) of each seed kind.
SEED_STYLE: dict[str, tuple[str, tuple[float, float, float, float], float]] = {
    "planned": ("ring", (0.0, 0.8, 1.0, 1.0), 5.0),
    "found": ("disc", (0.1, 1.0, 0.2, 1.0), 3.5),
    "missing": ("x", (1.0, 0.2, 0.2, 1.0), 6.0),
    "suggested": ("star", (1.0, 0.85, 0.0, 1.0), 6.0),
}
_DOSE_SPACING_MM = 1.0
_STRUCTURE_SPACING_MM = 1.0
#: Largest angle between the plan's contour planes and the scan's slices for the slab outlines.
_ALIGNED_DEG = 3.0
#: Slab thickness of a structure drawn on a single plane, mm.
_SINGLE_PLANE_MM = 2.0


@dataclass(frozen=True, eq=False)
class Marks:
    """Points in scan-index coordinates (s, r, c) with per-point features."""

    coords: NDArray[np.float64]
    features: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Lines:
    """Paths (each an (n, 3) array of grid indices) with per-path colours and features."""

    paths: list[NDArray[np.float64]]
    colours: NDArray[np.float64]
    features: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Lines:
        return cls([], np.zeros((0, 4)), {})


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything the layers of one scan show; grids are in the scan frame (LPS mm)."""

    index: int
    scan: Volume
    mapping: PlanMapping
    prescription_gy: float
    dose_grid: Grid | None
    dose_gy: NDArray[np.float32] | None
    cold_labels: NDArray[np.uint8] | None
    isodose: Lines
    outline_grid: Grid | None
    outlines: Lines
    seeds: dict[str, Marks]
    cold_spots: Marks
    hot_spots: Marks
    needles: Lines
    result: Mapping[str, Any]

    @property
    def warnings(self) -> tuple[str, ...]:
        notes = [str(w) for w in self.result.get("warnings", ())]
        if not self.mapping.registered:
            notes.insert(0, "PLAN NOT REGISTERED to this scan: structures, dose and planned seeds "
                            "are drawn in the planning frame")  # fmt: skip
        return tuple(notes)


def _marks(grid: Grid, points_scan_mm: Sequence[Any], features: dict[str, list[Any]]) -> Marks:
    kept = [i for i, p in enumerate(points_scan_mm) if p is not None]
    coords = scan_index_of(grid, [points_scan_mm[i] for i in kept])
    return Marks(coords, {k: [v[i] for i in kept] for k, v in features.items()})


def _seed_marks(data: ScanData, plan: Plan, mapping: PlanMapping) -> dict[str, Marks]:
    grid, result = data.scan.grid, data.result
    planned = [mapping.to_scan(s.position_mm)[0] for s in plan.seeds]
    match = result.get("match") or {}
    missing = [int(i) for i in match.get("missing_seed_indices", ())]
    found = list(result.get("seeds") or ())
    suggestions = (result.get("suggestions") or {}).get("seeds") or []
    suggested = [
        s.get("position_scan_mm") or mapping.to_scan(s["position_plan_mm"])[0].tolist() for s in suggestions
    ]
    return {
        "planned": _marks(grid, planned, {"planned_index": list(range(len(planned)))}),
        "found": _marks(grid, [s["position_scan_mm"] for s in found], {
            "index": [s["index"] for s in found],
            "planned_index": [-1 if s.get("planned_index") is None else s["planned_index"] for s in found],
            "distance_to_plan_mm": [s.get("distance_to_plan_mm") or np.nan for s in found],
            "confidence": [s.get("confidence", np.nan) for s in found],
        }),
        "missing": _marks(grid, [planned[i] for i in missing if i < len(planned)],
                          {"planned_index": missing}),
        "suggested": _marks(grid, suggested, {
            "order": list(range(1, len(suggested) + 1)),
            "track": [s.get("track_label", "") for s in suggestions],
        }),
    }  # fmt: skip


def _spot_marks(grid: Grid, spots: Sequence[Mapping[str, Any]], mapping: PlanMapping, key: str) -> Marks:
    positions = [s.get("centroid_scan_mm") or mapping.to_scan(s["centroid_plan_mm"])[0] for s in spots]
    features: dict[str, list[Any]] = {
        "label": [str(s.get(key, "")) for s in spots],
        "volume_cc": [float(s.get("volume_cc") or 0.0) for s in spots],
    }
    return _marks(grid, positions, features)


def _needle_lines(data: ScanData, plan: Plan, mapping: PlanMapping) -> Lines:
    grid, result = data.scan.grid, data.result
    deviations = {m["found_index"]: m for m in (result.get("match") or {}).get("needles", ())}
    paths, colours = [], []
    features: dict[str, list[Any]] = {"kind": [], "needle": [], "tip_distance_mm": [], "angle_deg": []}
    for i, needle in enumerate(plan.needles):
        paths.append(scan_index_of(grid, mapping.to_scan(np.stack([needle.entry_mm, needle.tip_mm]))))
        colours.append((0.0, 0.8, 1.0, 0.6))
        for key, value in (("kind", "planned"), ("needle", needle.label or f"planned {i}"),
                           ("tip_distance_mm", np.nan), ("angle_deg", np.nan)):  # fmt: skip
            features[key].append(value)
    for needle in result.get("needles") or ():
        paths.append(scan_index_of(grid, [needle["entry_scan_mm"], needle["tip_scan_mm"]]))
        colours.append((0.1, 1.0, 0.2, 1.0))
        matched = deviations.get(needle["index"], {})
        features["kind"].append("found")
        features["needle"].append(f"found {needle['index']} -> planned {needle.get('planned_index')}")
        features["tip_distance_mm"].append(float(matched.get("tip_distance_mm") or np.nan))
        features["angle_deg"].append(float(matched.get("angle_deg") or np.nan))
    return Lines(paths, np.asarray(colours, dtype=np.float64).reshape(-1, 4), features)


def _box_corners(bounds: NDArray[np.float64]) -> NDArray[np.float64]:
    lo, hi = bounds
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _slice_paths(mask_or_values: NDArray[Any], level: float) -> list[NDArray[np.float64]]:
    """Marching-squares contours of every slice as (n, 3) (s, r, c) index paths."""
    paths = []
    for s in range(mask_or_values.shape[0]):
        plane = mask_or_values[s]
        if not np.any(plane >= level):
            continue
        padded = np.pad(plane.astype(np.float32), 1)  # closes outlines that touch the grid edge
        for contour in measure.find_contours(padded, level):
            if contour.shape[0] >= 3:
                paths.append(np.column_stack([np.full(len(contour), float(s)), contour - 1.0]))
    return paths


def _dose_layers(
    data: ScanData, mapping: PlanMapping, prescription_gy: float, target: Structure | None
) -> tuple[Grid | None, NDArray[np.float32] | None, NDArray[np.uint8] | None, Lines]:
    if data.dose is None:
        return None, None, None, Lines.empty()
    corners = mapping.to_scan(_box_corners(data.dose.grid.bounds_mm()))
    grid = display_grid(data.scan.grid, [corners], spacing_mm=_DOSE_SPACING_MM, margin_mm=0.0)
    if grid is None:
        return None, None, None, Lines.empty()
    in_plan = Grid(grid.shape, mapping.scan_to_plan @ grid.affine, data.dose.frame_of_reference_uid)
    dose = resample(data.dose, in_plan, fill_value=0.0, allow_frame_mismatch=True).array.astype(np.float32)
    paths, colours, levels = [], [], []
    for percent in ISODOSE_PERCENT:
        found = _slice_paths(dose, prescription_gy * percent / 100.0)
        paths += found
        colours += [ISODOSE_RGBA[percent]] * len(found)
        levels += [percent] * len(found)
    cold = None
    if target is not None:
        inside = structure_mask(target, in_plan, allow_frame_mismatch=True)
        cold = (inside & (dose < prescription_gy)).astype(np.uint8)
    lines = Lines(paths, np.asarray(colours, dtype=np.float64).reshape(-1, 4), {"percent": levels})
    return grid, dose, cold, lines


def structure_rgba(structure: Structure) -> tuple[float, float, float, float]:
    if structure.role is StructureRole.TARGET:
        return TARGET_RGBA
    if structure.colour_rgb is not None:
        r, g, b = structure.colour_rgb
        return (r / 255.0, g / 255.0, b / 255.0, 1.0)
    return ORGAN_RGBA


def _shown_structures(plan: Plan) -> list[Structure]:
    roles = (StructureRole.TARGET, StructureRole.ORGAN_AT_RISK)
    return [s for s in plan.structures if s.role in roles and not s.is_empty]


def _planes(structure: Structure) -> dict[float, list[NDArray[np.float64]]]:
    """Contours grouped by their plane's z (plan frame, mm; axial planning contours)."""
    planes: dict[float, list[NDArray[np.float64]]] = {}
    for contour in structure.contours_mm:
        if contour.shape[0] >= 3:
            planes.setdefault(round(float(contour[:, 2].mean()), 3), []).append(contour)
    return planes


def _slab_outlines(scan: Grid, structure: Structure, mapping: PlanMapping) -> list[NDArray[np.float64]]:
    """Each scan slice shows the contours of the nearest plan plane within half its slab (DICOM slab rule).

    Only for axial contours and scan slices within a few degrees of them: the out-of-plane
    error of drawing a contour on its nearest scan slice is then a fraction of a millimetre.
    """
    planes = _planes(structure)
    zs = np.array(sorted(planes))
    half_mm = 0.5 * (float(np.median(np.diff(zs))) if zs.size > 1 else _SINGLE_PLANE_MM)
    step_mm = float(scan.spacing_mm[0])
    mapped = {z: [scan.patient_to_index(mapping.to_scan(c)) for c in planes[z]] for z in planes}
    centre = {z: float(np.mean([m[:, 0].mean() for m in mapped[z]])) for z in planes}
    paths = []
    for k in range(scan.shape[0]):
        distance = {z: abs(centre[z] - k) * step_mm for z in planes}
        nearest = min(distance, key=distance.__getitem__)
        if distance[nearest] <= half_mm + 1e-6 or distance[nearest] <= 0.5 * step_mm:
            for m in mapped[nearest]:
                closed = np.vstack([m, m[:1]])  # DICOM contours are closed: the last point joins the first
                paths.append(np.column_stack([np.full(len(closed), float(k)), closed[:, 1:]]))
    return paths


def _axial_and_aligned(scan: Grid, plan: Plan, mapping: PlanMapping) -> bool:
    oblique = [c for s in _shown_structures(plan) for c in s.contours_mm if np.ptp(c[:, 2]) > 1e-3]
    plan_normal_in_scan = mapping.plan_to_scan[:3, :3] @ np.array([0.0, 0.0, 1.0])
    return not oblique and abs(float(plan_normal_in_scan @ scan.axes[0])) >= np.cos(np.deg2rad(_ALIGNED_DEG))


def _outline_layers(data: ScanData, plan: Plan, mapping: PlanMapping) -> tuple[Grid | None, Lines]:
    shown = _shown_structures(plan)
    if _axial_and_aligned(data.scan.grid, plan, mapping):
        paths, colours, names = [], [], []
        for structure in shown:
            found = _slab_outlines(data.scan.grid, structure, mapping)
            paths += found
            colours += [structure_rgba(structure)] * len(found)
            names += [structure.name] * len(found)
        lines = Lines(paths, np.asarray(colours, dtype=np.float64).reshape(-1, 4), {"structure": names})
        return data.scan.grid, lines
    return _rasterised_outlines(data, shown, plan, mapping)


def _rasterised_outlines(
    data: ScanData, shown: list[Structure], plan: Plan, mapping: PlanMapping
) -> tuple[Grid | None, Lines]:
    """Outlines of the structures rasterised on a grid of the scan's slices (any orientation; slower)."""
    boxes = [mapping.to_scan(_box_corners(s.bounds_mm())) for s in shown]
    spacing = max(_STRUCTURE_SPACING_MM, float(data.scan.grid.spacing_mm[1:].min()))
    grid = display_grid(data.scan.grid, boxes, spacing_mm=spacing, margin_mm=2.0)
    if grid is None:
        return None, Lines.empty()
    in_plan = Grid(grid.shape, mapping.scan_to_plan @ grid.affine, plan.frame_of_reference_uid)
    paths, colours, names = [], [], []
    for structure in shown:
        mask = structure_mask(structure, in_plan, allow_frame_mismatch=True)
        found = _slice_paths(mask, 0.5)
        paths += found
        colours += [structure_rgba(structure)] * len(found)
        names += [structure.name] * len(found)
    return grid, Lines(paths, np.asarray(colours, dtype=np.float64).reshape(-1, 4), {"structure": names})


def primary_target(plan: Plan) -> Structure | None:
    """The first non-empty target of the plan (the one the pipeline's coverage uses)."""
    return next((s for s in plan.structures if s.role is StructureRole.TARGET and not s.is_empty), None)


def build_scene(data: ScanData, plan: Plan, *, outlines: tuple[Grid | None, Lines] | None = None) -> Scene:
    """All layer data of one scan (see the module docstring); pure numpy, thread-safe.

    Parameters
    ----------
    data : ScanData
    plan : Plan
        The session's plan (planning frame).
    outlines : (Grid, Lines), optional
        Structure outlines already computed for the same scan grid and registration.
    """
    data = ScanData(data.index, canonical_volume(data.scan), data.result, data.dose, data.folder)
    result = data.result
    mapping = plan_mapping(result)
    prescription = float((result.get("metrics") or {}).get("prescription_gy") or plan.prescription_gy or 0.0)
    target = primary_target(plan)
    dose_grid, dose, cold, isodose = _dose_layers(data, mapping, prescription, target)
    outline_grid, outline_lines = outlines if outlines is not None else _outline_layers(data, plan, mapping)
    grid = data.scan.grid
    cold_spots = (result.get("coverage") or {}).get("cold_spots") or []
    hot_spots = result.get("hot_spots") or []
    return Scene(
        index=data.index,
        scan=data.scan,
        mapping=mapping,
        prescription_gy=prescription,
        dose_grid=dose_grid,
        dose_gy=dose,
        cold_labels=cold,
        isodose=isodose,
        outline_grid=outline_grid,
        outlines=outline_lines,
        seeds=_seed_marks(data, plan, mapping),
        cold_spots=_spot_marks(grid, cold_spots, mapping, "rank"),
        hot_spots=_spot_marks(grid, hot_spots, mapping, "structure_name"),
        needles=_needle_lines(data, plan, mapping),
        result=result,
    )
