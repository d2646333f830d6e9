"""Analytic anatomy of the synthetic head-and-neck patient, in millimetres.

Every part of the patient is a signed-distance-like function of a point
(x, y, z) in the patient's own frame (DICOM LPS: x to the patient's left,
y posterior, z superior; z = 0 about the level of the third cervical vertebra):
negative inside, positive outside, and close to the true distance in mm near
the surface (first-order approximations for ellipses: (q - 1) / |grad q|).
Nothing here knows about voxels, so any grid, resolution or scan frame can be
rendered from the same description by evaluating the functions at its voxel
centres (see :mod:`simulators.phantom`).

The Hounsfield units of the tissues are typical values of non-contrast CT at
120 kVp (fat -100, muscle 50, cancellous bone ~400, cortical bone ~1200, air
-1000); they are descriptive constants of the phantom, not data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["PART_NAMES", "AnatomyParameters", "Arrays", "part_box_mm", "part_distance_mm"]

Arrays = NDArray[np.float32]

HU_AIR = -1000.0
HU_FAT = -100.0
HU_SKIN = 40.0
HU_MUSCLE = 50.0
HU_PAROTID = 10.0
HU_BLOOD = 45.0
HU_CSF = 12.0
HU_CORD = 35.0
HU_DISC = 90.0
HU_CANCELLOUS = 400.0
HU_CORTICAL = 1200.0
HU_TUMOUR = 65.0
#: Thickness of the cortical shell of bones, mm.
CORTEX_MM = 1.5

_FAR_MM = 1.0e4
#: Bones and glands stay at least this deep under the skin, whatever the body's size.
_BONE_DEPTH_MM = 4.0


@dataclass(frozen=True)
class AnatomyParameters:
    """Sizes and positions of the normal anatomy (mm, patient frame), drawn per patient."""

    neck_half_width_mm: float = 60.0
    neck_half_depth_mm: float = 60.0
    neck_centre_y_mm: float = 8.0
    head_half_width_mm: float = 71.0
    head_half_depth_mm: float = 80.0
    head_centre_y_mm: float = 0.0
    #: Neck -> head transition: z of its middle and its half width (smoothstep).
    transition_z_mm: float = 2.0
    transition_half_mm: float = 12.0
    skin_mm: float = 2.0
    fat_mm: float = 8.0
    vertebra_y_mm: float = 25.0
    vertebra_period_mm: float = 16.0
    disc_mm: float = 4.0
    canal_y_mm: float = 42.0
    canal_radius_mm: float = 7.0
    cord_radius_mm: float = 4.5
    mandible_bottom_z_mm: float = 12.0
    mandible_top_z_mm: float = 40.0
    mandible_half_width_mm: float = 45.0
    mandible_half_depth_mm: float = 54.0
    mandible_centre_y_mm: float = -10.0
    parotid_x_mm: float = 50.0
    parotid_y_mm: float = 16.0
    parotid_z_mm: float = 30.0
    carotid_x_mm: float = 21.0
    carotid_y_mm: float = 8.0
    jugular_x_mm: float = 30.0
    jugular_y_mm: float = 12.0


def _smoothstep(z: Arrays, middle: float, half: float) -> Arrays:
    t = np.clip((z - (middle - half)) / (2.0 * half), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _blend(z: Arrays, low: float, high: float, middle: float, half: float) -> Arrays:
    w = _smoothstep(z, middle, half)
    return (low + (high - low) * w).astype(np.float32)


def _ellipse_sdf(dx: Arrays, dy: Arrays, a: Arrays | float, b: Arrays | float) -> Arrays:
    """First-order signed distance to the ellipse (dx/a)^2 + (dy/b)^2 = 1, mm."""
    u, v = dx / a, dy / b
    q = np.sqrt(u * u + v * v)
    grad = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    d: Arrays = (q - 1.0) * q / np.maximum(grad, 1e-6)
    return d


def body_distance(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    """Outer skin surface: an elliptic cross-section widening from neck to head."""
    t = (p.transition_z_mm, p.transition_half_mm)
    a = _blend(z, p.neck_half_width_mm, p.head_half_width_mm, *t)
    b = _blend(z, p.neck_half_depth_mm, p.head_half_depth_mm, *t)
    cy = _blend(z, p.neck_centre_y_mm, p.head_centre_y_mm, *t)
    return _ellipse_sdf(x, y - cy, a, b)


def _airway(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    # Trachea/larynx (anterior) -> oropharynx (flat, behind the tongue) -> nasopharynx.
    cy = _blend(z, -16.0, 7.0, -20.0, 14.0) + _blend(z, 0.0, -6.0, 42.0, 8.0)
    a = _blend(z, 9.0, 12.0, -20.0, 14.0) + _blend(z, 0.0, 2.0, 42.0, 8.0)
    b = _blend(z, 7.5, 5.0, -20.0, 14.0) + _blend(z, 0.0, 4.0, 42.0, 8.0)
    return _ellipse_sdf(x, y - cy, a, b)


def _vertebral_body(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    plane = _ellipse_sdf(x, y - p.vertebra_y_mm, 9.5, 8.0)
    phase = np.mod(z, p.vertebra_period_mm)
    disc = np.minimum(phase, p.vertebra_period_mm - phase) - p.disc_mm / 2.0  # > 0 in bone
    return np.maximum(plane, -disc)


def _vertebrae(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    """Cervical vertebrae: bodies (with discs between), neural arch, processes."""
    r = np.sqrt(x * x + (y - p.canal_y_mm) ** 2)
    arch = np.maximum(r - (p.canal_radius_mm + 4.0), p.canal_radius_mm - r)
    spinous = np.maximum(np.abs(x) - 3.0, np.abs(y - (p.canal_y_mm + 11.0)) - 5.0)
    transverse = np.maximum(np.abs(x) - 20.0, np.abs(y - (p.canal_y_mm - 3.0)) - 3.5)
    bone = np.minimum(np.minimum(_vertebral_body(p, x, y, z), arch), np.minimum(spinous, transverse))
    return np.maximum(bone, body_distance(p, x, y, z) + _BONE_DEPTH_MM)


def _canal(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    return np.sqrt(x * x + (y - p.canal_y_mm) ** 2) - p.canal_radius_mm


def _cord(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    return np.sqrt(x * x + (y - p.canal_y_mm) ** 2) - p.cord_radius_mm


def _mandible(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    """A U-shaped bony arch (body and angles), 9 mm thick, only between its z limits."""
    ring = np.abs(
        _ellipse_sdf(x, y - p.mandible_centre_y_mm, p.mandible_half_width_mm, p.mandible_half_depth_mm)
    )
    d = np.maximum(ring - 4.5, y - (p.mandible_centre_y_mm + 26.0))
    d = np.maximum(d, np.maximum(p.mandible_bottom_z_mm - z, z - p.mandible_top_z_mm))
    return np.maximum(d, body_distance(p, x, y, z) + _BONE_DEPTH_MM)


def _parotid(side: float) -> Callable[[AnatomyParameters, Arrays, Arrays, Arrays], Arrays]:
    def distance(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
        dx, dy, dz = x - side * p.parotid_x_mm, y - p.parotid_y_mm, z - p.parotid_z_mm
        q = np.sqrt((dx / 9.0) ** 2 + (dy / 14.0) ** 2 + (dz / 18.0) ** 2)
        return np.maximum((q - 1.0) * 9.0, body_distance(p, x, y, z) + _BONE_DEPTH_MM)

    return distance


def _vessel(side: float, which: str) -> Callable[[AnatomyParameters, Arrays, Arrays, Arrays], Arrays]:
    def distance(p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
        if which == "carotid":
            cx, cy, radius = p.carotid_x_mm, p.carotid_y_mm, 3.5
        else:
            cx, cy, radius = p.jugular_x_mm, p.jugular_y_mm, 5.0
        # Vessels run up the neck, drifting a little posterior-medially towards the skull base.
        cx_z = side * (cx - 0.06 * np.clip(z, -60.0, 60.0))
        cy_z = cy + 0.05 * np.clip(z, -60.0, 60.0)
        return np.sqrt((x - cx_z) ** 2 + (y - cy_z) ** 2) - radius

    return distance


_Distance = Callable[[AnatomyParameters, Arrays, Arrays, Arrays], Arrays]

#: name -> (distance function, patient-frame box (lower, upper) given the parameters).
_PARTS: dict[str, _Distance] = {
    "BODY": body_distance,
    "Airway": _airway,
    "Vertebrae": _vertebrae,
    "SpinalCanal": _canal,
    "SpinalCord": _cord,
    "Mandible": _mandible,
    "Parotid_L": _parotid(1.0),
    "Parotid_R": _parotid(-1.0),
    "Carotid_L": _vessel(1.0, "carotid"),
    "Carotid_R": _vessel(-1.0, "carotid"),
    "Jugular_L": _vessel(1.0, "jugular"),
    "Jugular_R": _vessel(-1.0, "jugular"),
}
PART_NAMES = tuple(_PARTS)


def part_distance_mm(name: str, p: AnatomyParameters, x: Arrays, y: Arrays, z: Arrays) -> Arrays:
    """Signed-distance-like value of part ``name`` at points (x, y, z) mm: < 0 inside."""
    return _PARTS[name](p, x, y, z).astype(np.float32, copy=False)


def part_box_mm(name: str, p: AnatomyParameters) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A patient-frame box (lower, upper), mm, that holds the whole part (with a margin)."""
    half_w = max(p.neck_half_width_mm, p.head_half_width_mm) + 2.0
    y0 = min(p.neck_centre_y_mm - p.neck_half_depth_mm, p.head_centre_y_mm - p.head_half_depth_mm) - 2.0
    y1 = max(p.neck_centre_y_mm + p.neck_half_depth_mm, p.head_centre_y_mm + p.head_half_depth_mm) + 2.0
    boxes = {
        "BODY": ((-half_w, y0, -_FAR_MM), (half_w, y1, _FAR_MM)),
        "Airway": ((-20.0, -30.0, -_FAR_MM), (20.0, 20.0, _FAR_MM)),
        "Vertebrae": ((-27.0, 12.0, -_FAR_MM), (27.0, p.canal_y_mm + 27.0, _FAR_MM)),
        "SpinalCanal": ((-9.0, p.canal_y_mm - 9.0, -_FAR_MM), (9.0, p.canal_y_mm + 9.0, _FAR_MM)),
        "SpinalCord": ((-6.0, p.canal_y_mm - 6.0, -_FAR_MM), (6.0, p.canal_y_mm + 6.0, _FAR_MM)),
        "Mandible": (
            (-p.mandible_half_width_mm - 8.0, p.mandible_centre_y_mm - p.mandible_half_depth_mm - 8.0,
             p.mandible_bottom_z_mm - 2.0),
            (p.mandible_half_width_mm + 8.0, p.mandible_centre_y_mm + 30.0, p.mandible_top_z_mm + 2.0),
        ),
    }  # fmt: skip
    for side, suffix in ((1.0, "_L"), (-1.0, "_R")):
        cx, cy, cz = side * p.parotid_x_mm, p.parotid_y_mm, p.parotid_z_mm
        boxes["Parotid" + suffix] = ((cx - 12.0, cy - 17.0, cz - 21.0), (cx + 12.0, cy + 17.0, cz + 21.0))
        for vessel in ("Carotid", "Jugular"):
            boxes[vessel + suffix] = (
                (min(0.0, side * 50.0), -10.0, -_FAR_MM),
                (max(0.0, side * 50.0), 30.0, _FAR_MM),
            )
    lower, upper = boxes[name]
    return np.array(lower, dtype=np.float64), np.array(upper, dtype=np.float64)
