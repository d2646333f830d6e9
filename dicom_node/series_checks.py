"""Consistency checks and slice ordering of an assembled image series (pure functions).

DICOM has no "series complete" message (PS3.4 B), so the announcement of a series
lists what looks incomplete: gaps in Instance Number (0020,0013), gaps or
duplicates in the slice positions along the slice normal (from Image Position /
Orientation (Patient), PS3.3 C.7.6.2.1.1) and fewer instances than Images in
Acquisition (0020,1002) announces.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Sequence

from dicom_node.index import StoredInstance

_GAP_FACTOR = 1.5  # a step this many times the median step is a missing slice
_SAME_POSITION_MM = 1e-3
_SAME_ORIENTATION = 1e-4
_MAX_LISTED = 10


def _normal(orientation: Sequence[float]) -> tuple[float, float, float]:
    r, c = orientation[:3], orientation[3:]
    return (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])


def slice_positions_mm(instances: Sequence[StoredInstance]) -> list[float] | None:
    """Position of each instance along the slice normal of the first one, mm; None without full geometry."""
    geometry = [(i.header.image_position_mm, i.header.image_orientation) for i in instances]
    if not geometry or any(p is None or o is None for p, o in geometry):
        return None
    first = geometry[0][1]
    if first is None:
        return None
    normal = _normal(first)
    return [sum(a * b for a, b in zip(p or (), normal, strict=True)) for p, _ in geometry]


def sort_instances(instances: Sequence[StoredInstance]) -> list[StoredInstance]:
    """Instances in slice order along the normal if all have geometry, else by Instance Number, then path."""
    positions = slice_positions_mm(instances)
    if positions is not None:
        order = sorted(range(len(instances)),
                       key=lambda k: (positions[k], instances[k].header.instance_number or 0))
        return [instances[k] for k in order]
    big = 1 << 62
    return sorted(instances, key=lambda i: (i.header.instance_number if i.header.instance_number is not None
                                            else big, str(i.path)))


def _listed(values: Sequence[object]) -> str:
    text = ", ".join(str(v) for v in values[:_MAX_LISTED])
    return text + (f" and {len(values) - _MAX_LISTED} more" if len(values) > _MAX_LISTED else "")


def _number_warnings(instances: Sequence[StoredInstance]) -> list[str]:
    numbers = [i.header.instance_number for i in instances if i.header.instance_number is not None]
    warnings = []
    repeated = sorted(n for n, count in Counter(numbers).items() if count > 1)
    if repeated:
        warnings.append(f"InstanceNumber repeated: {_listed(repeated)}")
    if numbers:
        present = set(numbers)
        missing = [n for n in range(min(numbers), max(numbers) + 1) if n not in present]
        if missing:
            span = f"{min(numbers)}-{max(numbers)}"
            warnings.append(f"InstanceNumber gaps: missing {_listed(missing)} (of {span})")
    return warnings


def _position_warnings(instances: Sequence[StoredInstance]) -> list[str]:
    orientations = [i.header.image_orientation for i in instances]
    first = orientations[0]
    if first is None or any(
        o is None or max(abs(a - b) for a, b in zip(o, first, strict=True)) > _SAME_ORIENTATION
        for o in orientations
    ):
        return ["ImageOrientationPatient differs between instances: slice positions not checked"]
    positions = sorted(slice_positions_mm(instances) or [])
    steps = [b - a for a, b in itertools.pairwise(positions)]
    warnings = []
    duplicates = [round(positions[k], 3) for k, s in enumerate(steps) if s < _SAME_POSITION_MM]
    if duplicates:
        warnings.append(f"several instances at slice position(s) {_listed(duplicates)} mm")
    real = [s for s in steps if s >= _SAME_POSITION_MM]
    if real:
        median = statistics.median(real)
        gaps = [f"{positions[k]:.2f} to {positions[k + 1]:.2f}" for k, s in enumerate(steps)
                if s > _GAP_FACTOR * median]
        if gaps:
            warnings.append(f"gap(s) in slice positions (median step {median:.3f} mm): {_listed(gaps)} mm")
    return warnings


def series_warnings(instances: Sequence[StoredInstance]) -> tuple[str, ...]:
    """Warnings for an image series that looks incomplete or inconsistent (empty tuple if none)."""
    if len(instances) < 2:
        return ()
    warnings = _number_warnings(instances)
    if all(i.header.image_position_mm is not None for i in instances):
        warnings += _position_warnings(instances)
    announced = [i.header.images_in_acquisition for i in instances if i.header.images_in_acquisition]
    if announced and max(announced) > len(instances):
        warnings.append(f"ImagesInAcquisition is {max(announced)} but {len(instances)} instance(s) received")
    return tuple(warnings)
