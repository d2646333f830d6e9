"""``GuidanceResult`` -> JSON-safe dict, schema ``seedguide.result/1`` (docs/result-schema.md).

Positions are LPS mm (DICOM PS3.3 C.7.6.2.1.1) in two frames: ``*_scan_mm`` in the
scan's patient frame, ``*_plan_mm`` in the planning CT's after registration (null
when no usable registration). NaN and infinities become null; unknown seed axes are null.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from guidance.pipeline.result import SCHEMA_VERSION
from guidance.pipeline.stages import apply_transform

if TYPE_CHECKING:
    from guidance.detection import DetectedNeedle, DetectedSeed
    from guidance.pipeline.result import GuidanceResult

__all__ = ["json_safe", "result_to_dict"]


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy to Python, NaN/inf to None, enums to their value, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _point(transform: NDArray[np.float64] | None, point_mm: NDArray[np.float64]) -> Any:
    return None if transform is None else apply_transform(transform, point_mm)[0].tolist()


def _axis(direction: NDArray[np.float64], transform: NDArray[np.float64] | None = None) -> Any:
    if not np.all(np.isfinite(direction)):
        return None
    return (direction if transform is None else transform[:3, :3] @ direction).tolist()


def _needle(
    k: int, needle: DetectedNeedle, transform: NDArray[np.float64] | None, planned: int | None
) -> Any:
    return {
        "index": k, "planned_index": planned,
        "entry_scan_mm": needle.entry_mm.tolist(), "tip_scan_mm": needle.tip_mm.tolist(),
        "entry_plan_mm": _point(transform, needle.entry_mm), "tip_plan_mm": _point(transform, needle.tip_mm),
        "direction_scan": _axis(needle.direction),
        "direction_plan": None if transform is None else _axis(needle.direction, transform),
        "length_in_body_mm": needle.length_in_body_mm, "confidence": needle.confidence,
        "tip_outside_scan": needle.tip_outside_scan, "entry_in_scan": needle.entry_in_scan,
        "reasons": list(needle.reasons),
    }  # fmt: skip


def _seed(k: int, seed: DetectedSeed, transform: NDArray[np.float64] | None, match: Any) -> Any:
    return {
        "index": k, "planned_index": None if match is None else match.planned_index,
        "position_scan_mm": seed.position_mm.tolist(),
        "position_plan_mm": _point(transform, seed.position_mm),
        "direction_scan": _axis(seed.direction),
        "direction_plan": None if transform is None else _axis(seed.direction, transform),
        "displacement_plan_mm": None if match is None else match.displacement_mm.tolist(),
        "distance_to_plan_mm": None if match is None else match.distance_mm,
        "confidence": seed.confidence, "cluster_size": seed.cluster_size,
        "split_from_cluster": seed.split_from_cluster, "reasons": list(seed.reasons),
    }  # fmt: skip


def _registration(result: GuidanceResult) -> Any:
    registration = result.registration
    if registration is None:
        return None
    return {
        "scan_to_plan_matrix_mm": registration.moving_to_fixed.tolist(),
        "used": result.scan_to_plan is not None,
        **registration.quality.to_dict(),
    }


def _detections(result: GuidanceResult) -> tuple[list[Any], list[Any]]:
    transform = result.scan_to_plan
    needle_plan = {m.found_index: m.planned_index for m in (result.match.needles if result.match else ())}
    seed_match = {m.found_index: m for m in (result.match.seeds if result.match else ())}
    needles = [] if result.needles is None else [
        _needle(k, n, transform, needle_plan.get(k)) for k, n in enumerate(result.needles.needles)
    ]  # fmt: skip
    seeds = [] if result.seeds is None else [
        _seed(k, s, transform, seed_match.get(k)) for k, s in enumerate(result.seeds.seeds)
    ]  # fmt: skip
    return needles, seeds


def _match(result: GuidanceResult) -> Any:
    match = result.match
    if match is None:
        return None
    return {
        "missing_seed_indices": list(match.missing_seeds), "extra_seed_indices": list(match.extra_seeds),
        "missing_needle_indices": list(match.missing_needles),
        "extra_needle_indices": list(match.extra_needles),
        "needles": [
            {"planned_index": m.planned_index, "found_index": m.found_index,
             "entry_deviation_mm": m.entry_deviation_mm.tolist(),
             "tip_deviation_mm": m.tip_deviation_mm.tolist(),
             "entry_distance_mm": m.entry_distance_mm, "tip_distance_mm": m.tip_distance_mm,
             "depth_error_mm": m.depth_error_mm, "tip_lateral_mm": m.tip_lateral_mm, "angle_deg": m.angle_deg,
             "track_distance_mm": m.track_distance_mm, "tip_outside_scan": m.tip_outside_scan}
            for m in match.needles
        ],
    }  # fmt: skip


def _dose(result: GuidanceResult) -> Any:
    dose = result.dose
    if dose is None:
        return None
    return {
        "grid_shape": list(dose.shape), "spacing_mm": dose.spacing_mm.tolist(),
        "affine_index_to_plan_mm": np.asarray(dose.grid.affine).tolist(),
        "bounds_plan_mm": dose.grid.bounds_mm().tolist(),
        "max_dose_gy": float(np.max(dose.array)) if dose.array.size else 0.0,
        "n_seeds": int(dose.metadata.get("n_seeds", 0)),
    }  # fmt: skip


def _plan_to_scan(result: GuidanceResult) -> NDArray[np.float64] | None:
    if result.scan_to_plan is None:
        return None
    inverse: NDArray[np.float64] = np.linalg.inv(result.scan_to_plan).astype(np.float64)
    return inverse


def _coverage(result: GuidanceResult) -> tuple[Any, Any]:
    cold = result.cold_spots
    if cold is None:
        return None, None
    back = _plan_to_scan(result)
    spots = [
        {**{("centroid_plan_mm" if k == "centroid_mm" else "bounds_plan_mm" if k == "bounds_mm" else k): v
            for k, v in spot.to_dict().items()},
         "centroid_scan_mm": _point(back, spot.centroid_mm)}
        for spot in cold.cold_spots
    ]  # fmt: skip
    hot = [
        {"structure_name": h.structure_name, "role": h.role.value, "metric": h.metric,
         "threshold_gy": h.threshold_gy, "limit_exceeded": h.limit_exceeded, "volume_cc": h.volume_cc,
         "max_dose_gy": h.max_dose_gy, "mean_dose_gy": h.mean_dose_gy,
         "centroid_plan_mm": h.centroid_mm.tolist(), "centroid_scan_mm": _point(back, h.centroid_mm)}
        for h in cold.hot_spots
    ]  # fmt: skip
    return {"target_volume_cc": cold.target_volume_cc, "cold_volume_cc": cold.cold_volume_cc,
            "cold_spots": spots}, hot  # fmt: skip


def _suggestions(result: GuidanceResult) -> Any:
    report = result.suggestions
    if report is None:
        return None
    back = _plan_to_scan(result)
    seeds = []
    for s in report.suggestions:
        values = s.to_dict()
        seeds.append({
            "position_plan_mm": values.pop("position_mm"), "entry_plan_mm": values.pop("entry_mm"),
            "direction_plan": values.pop("direction"), "position_scan_mm": _point(back, s.position_mm),
            "entry_scan_mm": _point(back, s.entry_mm), **values,
        })  # fmt: skip
    return {
        "feasibility": report.feasibility.value, "statement": report.statement,
        "current_d90_gy": report.current_d90_gy, "predicted_d90_gy": report.predicted_d90_gy,
        "predicted_v100_percent": report.predicted_v100_percent,
        "predicted_v150_percent": report.predicted_v150_percent, "seeds": seeds,
    }  # fmt: skip


def result_to_dict(result: GuidanceResult) -> dict[str, Any]:
    """The whole result as plain JSON values (schema in docs/result-schema.md)."""
    needles, seeds = _detections(result)
    cold, hot = _coverage(result)
    value = {
        "schema": SCHEMA_VERSION, "is_verification": result.is_verification,
        "scan_frame_of_reference_uid": result.scan_frame_of_reference_uid,
        "plan_frame_of_reference_uid": result.plan_frame_of_reference_uid,
        "registration": _registration(result), "needles": needles, "seeds": seeds, "match": _match(result),
        "dose": _dose(result),
        "metrics": None if result.dose_report is None else result.dose_report.to_dict(),
        "coverage": cold, "hot_spots": hot, "suggestions": _suggestions(result),
        "warnings": list(result.warnings),
        "stages": [
            {"stage": s.stage, "seconds": s.seconds, "ran": s.ran, "reason": s.reason,
             "provenance": None if s.provenance is None else s.provenance.to_dict()}
            for s in result.stages
        ],
    }  # fmt: skip
    safe: dict[str, Any] = json_safe(value)
    return safe
