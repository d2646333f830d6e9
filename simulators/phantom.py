"""A synthetic head-and-neck patient with a recurrent tumour, in Hounsfield units.

The patient is described analytically in millimetres, in its own frame (the
planning frame, DICOM LPS: x to the patient's left, y posterior, z superior),
by :class:`PatientModel`: normal anatomy (:mod:`simulators.anatomy`), an
irregular seeded tumour (GTV) and a smooth tissue texture. Voxels come only
from :func:`render_patient`, which evaluates the model at the voxel centres of
any grid, including a grid in a scan frame rigidly moved against the planning
frame, so the planning CT and every intra-procedure scan show the same patient.

:func:`make_patient` builds a model from a :class:`PhantomConfig` and a seed,
renders the planning CT and delineates the structures (planar contours on the
CT slice planes, from the analytic masks). The same seed gives bit-identical
arrays and contours.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance.rasterise import mask_to_contours
from guidance.structure import Structure, StructureRole
from guidance.volume import Grid, Volume
from simulators import anatomy
from simulators.anatomy import AnatomyParameters, Arrays
from simulators.tumour import TumourShape, make_tumour, tumour_distance_mm

__all__ = [
    "Patient",
    "PatientModel",
    "PhantomConfig",
    "TumourLocation",
    "make_patient",
    "planning_grid",
    "render_patient",
    "structure_masks",
]

logger = logging.getLogger(__name__)

_SLICES_PER_CHUNK = 8


class TumourLocation(enum.Enum):
    """Where the recurrent tumour sits."""

    NASOPHARYNX = "nasopharynx"
    NECK_NODE = "neck_node"
    ORAL_CAVITY = "oral_cavity"
    PAROTID_BED = "parotid_bed"


@dataclass(frozen=True)
class PhantomConfig:
    """What patient to build and on which planning CT grid.

    Parameters
    ----------
    rows, columns : int
        In-plane size of the planning CT.
    pixel_spacing_mm : float
        In-plane spacing (square pixels), 0.3 to 2 mm.
    slice_thickness_mm : float
        Slice spacing (= thickness, contiguous slices), 0.5 to 5 mm.
    slices : int
        Number of slices; the stack is centred on ``centre_z_mm``.
    centre_z_mm : float
        Patient-frame z of the middle of the stack (0 is about C3).
    gtv_volume_cc : float
        Volume of the tumour, 1.5 to 140 cm^3.
    location : TumourLocation or str
    side : {"left", "right"} or None
        Side of a lateral tumour; None draws it from the seed.
    frame_of_reference_uid : str
    """

    rows: int = 512
    columns: int = 512
    pixel_spacing_mm: float = 0.7
    slice_thickness_mm: float = 2.0
    slices: int = 60
    centre_z_mm: float = 10.0
    gtv_volume_cc: float = 20.0
    location: TumourLocation = TumourLocation.NECK_NODE
    side: str | None = None
    frame_of_reference_uid: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "location", TumourLocation(self.location))
        checks = [
            ("rows", self.rows, 16, 2048),
            ("columns", self.columns, 16, 2048),
            ("pixel_spacing_mm", self.pixel_spacing_mm, 0.3, 2.0),
            ("slice_thickness_mm", self.slice_thickness_mm, 0.5, 5.0),
            ("slices", self.slices, 1, 1000),
            ("gtv_volume_cc", self.gtv_volume_cc, 1.5, 140.0),
        ]
        for name, value, low, high in checks:
            if not (low <= value <= high):
                raise ValueError(f"PhantomConfig.{name} must be within [{low}, {high}]; got {value}")
        if self.side not in (None, "left", "right"):
            raise ValueError(f"PhantomConfig.side must be 'left', 'right' or None; got {self.side!r}")


@dataclass(frozen=True, eq=False)
class Texture:
    """Smooth tissue inhomogeneity: a sum of plane waves, HU = sum a cos(k . x + phase)."""

    wave_vectors_per_mm: NDArray[np.float64]
    phases: NDArray[np.float64]
    amplitudes_hu: NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class PatientModel:
    """The analytic patient: anatomy, tumour and texture, all in mm in the planning frame."""

    anatomy: AnatomyParameters
    tumour: TumourShape
    texture: Texture
    location: TumourLocation
    side: str
    omitted_parts: tuple[str, ...] = ()

    def parameters(self) -> dict[str, Any]:
        """Plain JSON-serialisable description (for provenance)."""
        return {
            "anatomy": asdict(self.anatomy),
            "tumour_centre_mm": self.tumour.centre_mm.tolist(),
            "tumour_radius_mm": self.tumour.radius_mm,
            "location": self.location.value,
            "side": self.side,
            "omitted_parts": list(self.omitted_parts),
        }


@dataclass(frozen=True, eq=False)
class Patient:
    """A synthetic patient: planning CT, its structures and how it was made."""

    ct: Volume
    structures: tuple[Structure, ...]
    gtv_volume_cc: float
    location: TumourLocation
    parameters: dict[str, Any]
    model: PatientModel


def planning_grid(config: PhantomConfig) -> Grid:
    """The axial planning CT grid of ``config``: centred in x, y on the neck, in z on centre_z_mm."""
    step = config.pixel_spacing_mm
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, config.slice_thickness_mm]
    affine[:3, 1] = [0.0, step, 0.0]
    affine[:3, 2] = [step, 0.0, 0.0]
    affine[:3, 3] = [
        -(config.columns - 1) / 2.0 * step,
        -(config.rows - 1) / 2.0 * step,
        config.centre_z_mm - (config.slices - 1) / 2.0 * config.slice_thickness_mm,
    ]
    return Grid((config.slices, config.rows, config.columns), affine, config.frame_of_reference_uid)


def _anatomy(rng: np.random.Generator) -> AnatomyParameters:
    """Normal anatomy with a few per-patient variations (sizes +-6 %, fat 6-11 mm)."""
    base = AnatomyParameters()
    scale = 1.0 + rng.uniform(-0.06, 0.06, size=4)
    return replace(
        base,
        neck_half_width_mm=base.neck_half_width_mm * scale[0],
        neck_half_depth_mm=base.neck_half_depth_mm * scale[1],
        head_half_width_mm=base.head_half_width_mm * scale[2],
        head_half_depth_mm=base.head_half_depth_mm * scale[3],
        fat_mm=float(rng.uniform(6.0, 11.0)),
    )


def _texture(rng: np.random.Generator) -> Texture:
    """Six plane waves, wavelengths 25-60 mm, about 4 HU standard deviation in total."""
    n = 6
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelength = rng.uniform(25.0, 60.0, size=n)
    return Texture(
        wave_vectors_per_mm=directions * (2.0 * math.pi / wavelength)[:, np.newaxis],
        phases=rng.uniform(0.0, 2.0 * math.pi, size=n),
        amplitudes_hu=rng.uniform(1.5, 3.0, size=n),
    )


def build_model(config: PhantomConfig, seed: int) -> PatientModel:
    """The analytic patient of ``config`` drawn with ``seed`` (no voxels yet)."""
    rng = np.random.default_rng(seed)
    parts = _anatomy(rng)
    texture = _texture(rng)
    side_draw = "left" if rng.uniform() < 0.5 else "right"
    side = config.side or side_draw
    z_limits = (
        config.centre_z_mm - config.slices * config.slice_thickness_mm / 2.0,
        config.centre_z_mm + config.slices * config.slice_thickness_mm / 2.0,
    )
    tumour = make_tumour(
        rng, parts, config.location.value, 1.0 if side == "left" else -1.0, config.gtv_volume_cc, z_limits
    )
    # After a parotidectomy the gland of that side is gone; the tumour recurs in its bed.
    omitted = ("Parotid_L",) if side == "left" else ("Parotid_R",)
    return PatientModel(
        parts, tumour, texture, config.location, side,
        omitted if config.location is TumourLocation.PAROTID_BED else (),
    )  # fmt: skip


def _chunk_coordinates(
    affine: NDArray[np.float64], lo: NDArray[np.intp], hi: NDArray[np.intp]
) -> tuple[Arrays, Arrays, Arrays]:
    """Patient-frame x, y, z (float32) of the voxel centres of the index box [lo, hi)."""
    s, r, c = (np.arange(lo[k], hi[k], dtype=np.float64) for k in range(3))
    out = []
    for axis in range(3):
        row = affine[axis]
        value = (
            (row[0] * s + row[3])[:, None, None] + (row[1] * r)[None, :, None] + (row[2] * c)[None, None, :]
        )
        out.append(value.astype(np.float32))
    return out[0], out[1], out[2]


def _index_box(
    affine: NDArray[np.float64], box: tuple[NDArray[np.float64], NDArray[np.float64]], shape: tuple[int, ...]
) -> tuple[NDArray[np.intp], NDArray[np.intp]] | None:
    """Index range [lo, hi) of the voxels whose centres may lie in the patient box."""
    lower, upper = np.maximum(box[0], -1e4), np.minimum(box[1], 1e4)
    corners = np.array([[x, y, z] for x in (lower[0], upper[0]) for y in (lower[1], upper[1])
                        for z in (lower[2], upper[2])])  # fmt: skip
    inverse = np.linalg.inv(affine)
    idx = corners @ inverse[:3, :3].T + inverse[:3, 3]
    lo = np.maximum(np.floor(idx.min(axis=0)), 0).astype(np.intp)
    hi = np.minimum(np.ceil(idx.max(axis=0)) + 1, shape).astype(np.intp)
    return (lo, hi) if np.all(lo < hi) else None


def _effective_affine(grid: Grid, planning_to_scan: NDArray[np.float64] | None) -> NDArray[np.float64]:
    """Index of ``grid`` (in the scan frame) -> planning-frame mm."""
    if planning_to_scan is None:
        return np.asarray(grid.affine, dtype=np.float64)
    transform = np.asarray(planning_to_scan, dtype=np.float64)
    if transform.shape != (4, 4):
        raise ValueError(f"planning_to_scan must be a 4x4 matrix; got shape {transform.shape}")
    rotation = transform[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6) or np.linalg.det(rotation) < 0:
        raise ValueError("planning_to_scan must be a rigid transform (a proper rotation and a translation)")
    return np.asarray(np.linalg.inv(transform) @ grid.affine, dtype=np.float64)


def _paint_body(model: PatientModel, x: Arrays, y: Arrays, z: Arrays, out: Arrays) -> None:
    """Paint air, skin, subcutaneous fat and muscle into ``out`` (a chunk of slices)."""
    p = model.anatomy
    d_body = anatomy.body_distance(p, x, y, z)
    inside = d_body <= 0.0
    out[...] = np.where(inside, anatomy.HU_MUSCLE, anatomy.HU_AIR)
    out[inside & (d_body > -p.fat_mm)] = anatomy.HU_FAT
    out[inside & (d_body > -p.skin_mm)] = anatomy.HU_SKIN


_SOFT_PARTS = (
    ("Parotid_L", anatomy.HU_PAROTID), ("Parotid_R", anatomy.HU_PAROTID),
    ("Jugular_L", anatomy.HU_BLOOD), ("Jugular_R", anatomy.HU_BLOOD),
    ("Carotid_L", anatomy.HU_BLOOD), ("Carotid_R", anatomy.HU_BLOOD),
    ("Airway", anatomy.HU_AIR),
)  # fmt: skip


def _paint_part(model: PatientModel, name: str, affine: NDArray[np.float64], out: Arrays, s0: int) -> None:
    """Paint one part over ``out`` (a chunk of slices starting at s0) within its box."""
    if name in model.omitted_parts:
        return
    shape = (s0 + out.shape[0], out.shape[1], out.shape[2])
    if name == "GTV":
        box = model.tumour.box_mm()
    else:
        box = anatomy.part_box_mm(name, model.anatomy)
    found = _index_box(affine, box, shape)
    if found is None:
        return
    lo, hi = found
    lo[0] = max(lo[0], s0)
    if lo[0] >= hi[0]:
        return
    x, y, z = _chunk_coordinates(affine, lo, hi)
    view = out[lo[0] - s0 : hi[0] - s0, lo[1] : hi[1], lo[2] : hi[2]]
    if name == "GTV":
        view[tumour_distance_mm(model.tumour, x, y, z) <= 0.0] = anatomy.HU_TUMOUR
        return
    d = anatomy.part_distance_mm(name, model.anatomy, x, y, z)
    if name in ("Vertebrae", "Mandible"):
        shell = (d <= 0.0) & (d > -anatomy.CORTEX_MM)
        view[d <= -anatomy.CORTEX_MM] = anatomy.HU_CANCELLOUS
        view[shell] = anatomy.HU_CORTICAL
        if name == "Vertebrae":  # intervertebral discs: soft tissue between the bodies
            disc = anatomy.part_distance_mm("Vertebrae", replace(model.anatomy, disc_mm=0.0), x, y, z)
            view[(disc <= 0.0) & (d > 0.0) & (y < model.anatomy.vertebra_y_mm + 9.0)] = anatomy.HU_DISC
        return
    hu = dict(_SOFT_PARTS)
    hu.update({"SpinalCanal": anatomy.HU_CSF, "SpinalCord": anatomy.HU_CORD})
    view[d <= 0.0] = hu[name]


_PAINT_ORDER = (
    *(name for name, _ in _SOFT_PARTS), "GTV", "Mandible", "Vertebrae", "SpinalCanal", "SpinalCord",
)  # fmt: skip


def render_patient(
    model: PatientModel, grid: Grid, *, planning_to_scan: NDArray[np.float64] | None = None
) -> NDArray[np.float32]:
    """Hounsfield units of the patient at the voxel centres of ``grid``.

    Parameters
    ----------
    model : PatientModel
        Shapes in mm in the planning frame.
    grid : Grid
        Any geometry (orientation, spacing, shape). Its coordinates are the scan frame.
    planning_to_scan : ndarray of shape (4, 4), optional
        Rigid transform taking planning-frame mm to scan-frame mm (the patient moved
        on the table); identity when omitted.

    Returns
    -------
    ndarray of shape grid.shape, float32
        HU, noise-free and unblurred (sharp tissue boundaries at voxel centres).
    """
    affine = _effective_affine(grid, planning_to_scan)
    out = np.empty(grid.shape, dtype=np.float32)
    interpolation = _texture_nodes(affine, grid.shape)
    for s0 in range(0, grid.shape[0], _SLICES_PER_CHUNK):
        s1 = min(s0 + _SLICES_PER_CHUNK, grid.shape[0])
        lo, hi = np.array([s0, 0, 0]), np.array([s1, grid.shape[1], grid.shape[2]])
        x, y, z = _chunk_coordinates(affine, lo, hi)
        chunk = out[s0:s1]
        _paint_body(model, x, y, z, chunk)
        del x, y, z
        for name in _PAINT_ORDER:
            _paint_part(model, name, affine, chunk, s0)
        chunk += _texture_values(model.texture, affine, s0, s1, interpolation)
    return out


_Interpolation = list[tuple[NDArray[np.intp], Arrays]]


def _texture_nodes(
    affine: NDArray[np.float64], shape: tuple[int, int, int]
) -> tuple[list[NDArray[np.intp]], _Interpolation]:
    """Row and column texture nodes (~3 mm apart) and, per voxel, its left node and weight."""
    spacing = float(min(np.linalg.norm(affine[:3, 1]), np.linalg.norm(affine[:3, 2])))
    step = max(1, int(3.0 / spacing))
    nodes = [np.unique(np.append(np.arange(0, n, step), n - 1)) for n in shape[1:]]
    interpolation = []
    for n, node in zip(shape[1:], nodes, strict=True):
        if len(node) == 1:
            interpolation.append((np.zeros(n, dtype=np.intp), np.zeros(n, dtype=np.float32)))
            continue
        left = np.clip(np.searchsorted(node, np.arange(n), side="right") - 1, 0, len(node) - 2)
        frac = (np.arange(n) - node[left]) / (node[left + 1] - node[left])
        interpolation.append((left, frac.astype(np.float32)))
    return nodes, interpolation


def _texture_values(
    texture: Texture,
    affine: NDArray[np.float64],
    s0: int,
    s1: int,
    nodes_and_weights: tuple[list[NDArray[np.intp]], _Interpolation],
) -> Arrays:
    """The texture on slices s0..s1-1: evaluated every ~3 mm in-plane, linearly interpolated.

    The waves are 25 mm or longer, so interpolating from nodes at most 3 mm apart changes
    the texture by under 1 HU while costing a few passes per voxel instead of six cosines.
    """
    nodes, ((r_left, r_frac), (c_left, c_frac)) = nodes_and_weights
    s = np.arange(s0, s1, dtype=np.float64)
    points = (
        s[:, None, None, None] * affine[:3, 0]
        + nodes[0][None, :, None, None] * affine[:3, 1]
        + nodes[1][None, None, :, None] * affine[:3, 2]
        + affine[:3, 3]
    )
    phase = points @ texture.wave_vectors_per_mm.T + texture.phases
    field = (np.cos(phase) @ texture.amplitudes_hu).astype(np.float32)
    if field.shape[1] > 1:
        field = field[:, r_left] * (1.0 - r_frac[:, None]) + field[:, r_left + 1] * r_frac[:, None]
    else:
        field = np.repeat(field, len(r_left), axis=1)
    if field.shape[2] > 1:
        field = field[:, :, c_left] * (1.0 - c_frac) + field[:, :, c_left + 1] * c_frac
    else:
        field = np.repeat(field, len(c_left), axis=2)
    values: Arrays = field
    return values


def _part_mask(model: PatientModel, name: str, grid: Grid) -> NDArray[np.bool_]:
    """Voxel-centre mask of one structure on ``grid`` (planning frame)."""
    mask = np.zeros(grid.shape, dtype=bool)
    source = "BODY" if name == "Skin" else name
    box = model.tumour.box_mm() if name == "GTV" else anatomy.part_box_mm(source, model.anatomy)
    found = _index_box(grid.affine, box, grid.shape)
    if found is None:
        return mask
    lo, hi = found
    x, y, z = _chunk_coordinates(np.asarray(grid.affine), lo, hi)
    if name == "GTV":
        d = tumour_distance_mm(model.tumour, x, y, z)
    else:
        d = anatomy.part_distance_mm(source, model.anatomy, x, y, z)
    inside = d <= 0.0
    if name == "Skin":  # the outer 3 mm of the body
        inside &= d > -3.0
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = inside
    return mask


#: Delineated structures: name, role, display colour.
_STRUCTURES = (
    ("BODY", StructureRole.EXTERNAL, (0, 160, 0)),
    ("GTV", StructureRole.TARGET, (255, 0, 0)),
    ("SpinalCord", StructureRole.ORGAN_AT_RISK, (255, 255, 0)),
    ("Mandible", StructureRole.ORGAN_AT_RISK, (230, 230, 200)),
    ("Vertebrae", StructureRole.ORGAN_AT_RISK, (200, 200, 170)),
    ("Parotid_L", StructureRole.ORGAN_AT_RISK, (0, 200, 255)),
    ("Parotid_R", StructureRole.ORGAN_AT_RISK, (0, 120, 255)),
    ("Carotid_L", StructureRole.ORGAN_AT_RISK, (255, 80, 80)),
    ("Carotid_R", StructureRole.ORGAN_AT_RISK, (200, 40, 40)),
    ("Jugular_L", StructureRole.ORGAN_AT_RISK, (80, 80, 255)),
    ("Jugular_R", StructureRole.ORGAN_AT_RISK, (40, 40, 200)),
    ("Airway", StructureRole.ORGAN_AT_RISK, (150, 255, 150)),
    ("Skin", StructureRole.ORGAN_AT_RISK, (255, 180, 120)),
)


def structure_masks(model: PatientModel, grid: Grid) -> dict[str, NDArray[np.bool_]]:
    """Voxel-centre masks of every delineated structure on a grid in the planning frame."""
    return {
        name: _part_mask(model, name, grid) for name, _, _ in _STRUCTURES if name not in model.omitted_parts
    }


def make_patient(config: PhantomConfig | None = None, *, seed: int = 0, **overrides: Any) -> Patient:
    """Build a synthetic patient: model, planning CT and structures.

    Parameters
    ----------
    config : PhantomConfig, optional
        Defaults to ``PhantomConfig()``; ``overrides`` replace single fields
        (``make_patient(seed=3, gtv_volume_cc=40, location="oral_cavity")``).
    seed : int
        Seeds every random choice: the same seed and config give bit-identical
        arrays and contours.

    Returns
    -------
    Patient
        ``ct`` is the noise-free planning CT (:func:`render_patient`; the scanner's
        blur, noise and artefacts are :mod:`simulators.render`'s); structures are
        planar contours along voxel edges on the CT slice planes; empty ones
        (a part outside the scanned range) are left out.
    """
    cfg = replace(config or PhantomConfig(), **overrides)
    model = build_model(cfg, seed)
    grid = planning_grid(cfg)
    ct = Volume.on_grid(grid, render_patient(model, grid), modality="CT", units="HU")
    masks = structure_masks(model, grid)
    structures = []
    for number, (name, role, colour) in enumerate(_STRUCTURES, start=1):
        if name not in masks or not masks[name].any():
            logger.debug("structure %s is empty on this grid: left out", name)
            continue
        contours = mask_to_contours(masks[name], grid)
        structures.append(Structure(name, role, contours, grid.frame_of_reference_uid, number, colour))
    config_dict = {**asdict(cfg), "location": cfg.location.value}
    parameters = {**model.parameters(), "config": config_dict, "seed": seed}
    logger.info(
        "patient seed %d: %s tumour (%s side) %.1f cc, %d structures",
        seed, cfg.location.value, model.side, cfg.gtv_volume_cc, len(structures),
    )  # fmt: skip
    return Patient(ct, tuple(structures), model.tumour.volume_cc(), cfg.location, parameters, model)
