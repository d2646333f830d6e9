"""CT of the synthetic patient with implanted seeds and needles, as a scanner would show it.

:func:`render_scan` is a pure function of the patient model, a scan grid, the
objects in the patient and a noise seed. The image is built as:

1. Background: :func:`simulators.phantom.render_patient` on the scan grid, whose
   frame is rigidly moved against the planning frame (``planning_to_scan``), at
   sub-planes ~1 mm apart within each slice, each weighted into the slices around
   it by the slice sensitivity profile (see 4).
2. Metal by partial volume: each seed (titanium capsule, a cylinder 4.5 mm long,
   0.8 mm across) and needle (18G steel, 1.27 mm across, entry to tip) covers a
   fraction f of each voxel near it, counted on a lattice of sub-samples at most
   ``max_substep_mm`` apart, in sub-slices at most 0.5 mm thick, each weighted into
   the slices around it by the slice sensitivity profile; the voxel becomes
   (1 - f) background + f metal HU. Effective metal HU: a seed 14000 (titanium
   shell around a silver or marker core), steel 9000 (a hollow needle seen as a solid
   rod); after partial volume and blur, seeds reach the 12-bit maximum as in real scans.
3. Noise: white Gaussian, scaled so that after step 4 its sd is ``noise_sd_hu``.
4. Resolution: in-plane Gaussian point spread (sigma ``psf_sigma_mm``); along the
   slice axis the slice sensitivity profile of helical CT: the slice's box convolved
   with a Gaussian of sigma ``slice_profile_sigma`` x the slice thickness (0.25: full
   width at half maximum about the thickness, at a tenth about 1.55 x). An object
   in a slice thus shows in its neighbours as much as its position in the slice
   puts it near them, as on a scanner (a box profile would hide where in a thick
   slice it lies).
5. Metal streaks: :mod:`simulators.artefacts` (forward projection of the metal,
   beam hardening and photon starvation, filtered back-projection of the error).
6. Saturation to [min_hu, max_hu] (3071 for a 12-bit scanner) and whole HU.

The ground truth of what was rendered is a JSON-serialisable :class:`ScanTruth`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from guidance.volume import Grid, Volume
from simulators.artefacts import StreakModel, streak_error_hu
from simulators.phantom import PatientModel, render_patient

__all__ = [
    "SILVER_CORE_SEED_MU_PER_MM",
    "RenderedScan",
    "ScanTruth",
    "ScannerConfig",
    "cylinder_fraction",
    "render_scan",
]

logger = logging.getLogger(__name__)

_SAMPLES_PER_BATCH = 1 << 20

#: What the detector sees of an I-125 seed with a silver marker core, as an attenuation
#: spread over the capsule (1/mm). A silver rod 0.5 mm across (0.196 mm^2), 3 mm long, of mu
#: ~3.1/mm (~2.9 cm^2/g x 10.5 g/cm^3 at ~70 keV) in a 4.5 x 0.8 mm capsule (0.50 mm^2) gives
#: 0.196 x 3.1 x 3 / (0.50 x 4.5) ~ 0.8/mm; 1.2/mm is the upper end (a longer or denser
#: marker, a softer beam), used for the hard scenario. Either is several times the 0.29/mm
#: of the HU the 12-bit image shows: a ray along a seed's axis carries a line integral of
#: ~4-5, enough to starve a low-dose detector of photons.
SILVER_CORE_SEED_MU_PER_MM = 1.2


@dataclass(frozen=True)
class ScannerConfig:
    """The scanner and the objects' CT appearance (see the module docstring)."""

    max_hu: float = 3071.0
    min_hu: float = -1024.0
    noise_sd_hu: float = 12.0
    psf_sigma_mm: float = 0.6
    slice_profile_sigma: float = 0.25
    slice_supersampling_mm: float = 1.0
    seed_hu: float = 14000.0
    needle_hu: float = 9000.0
    seed_length_mm: float = 4.5
    seed_diameter_mm: float = 0.8
    needle_diameter_mm: float = 1.27
    max_substep_mm: float = 0.2
    streaks: bool = True
    #: Attenuation (1/mm) of a seed and of a needle in the streak model: mu_water (1 + HU/1000)
    #: of their effective HU, so the projected metal is the metal the image shows.
    seed_mu_per_mm: float = 0.29
    needle_mu_per_mm: float = 0.19
    streak_model: StreakModel = field(default_factory=StreakModel)
    integer_hu: bool = True

    def __post_init__(self) -> None:
        if not self.max_hu > self.min_hu:
            raise ValueError(f"ScannerConfig: max_hu ({self.max_hu}) must exceed min_hu ({self.min_hu})")
        for name in ("noise_sd_hu", "psf_sigma_mm", "slice_profile_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"ScannerConfig.{name} must be >= 0; got {getattr(self, name)}")
        for name in ("max_substep_mm", "seed_length_mm", "seed_diameter_mm", "needle_diameter_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ScannerConfig.{name} must be > 0; got {getattr(self, name)}")


def _rows(points: NDArray[np.float64]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in points)


@dataclass(frozen=True)
class ScanTruth:
    """What was rendered: every position in the scan frame and in the planning frame, LPS mm."""

    seeds_planning_mm: tuple[tuple[float, ...], ...]
    seed_directions_planning: tuple[tuple[float, ...], ...]
    seeds_scan_mm: tuple[tuple[float, ...], ...]
    seed_directions_scan: tuple[tuple[float, ...], ...]
    needle_entries_planning_mm: tuple[tuple[float, ...], ...]
    needle_tips_planning_mm: tuple[tuple[float, ...], ...]
    needle_entries_scan_mm: tuple[tuple[float, ...], ...]
    needle_tips_scan_mm: tuple[tuple[float, ...], ...]
    planning_to_scan: tuple[tuple[float, ...], ...]
    grid_shape: tuple[int, int, int]
    grid_affine: tuple[tuple[float, ...], ...]
    frame_of_reference_uid: str
    noise_seed: int
    scanner: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, numbers and strings (``json.dumps`` takes it as is)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanTruth:
        """Inverse of :meth:`to_dict` (tuples restored)."""

        def rows(value: Any) -> tuple[tuple[float, ...], ...]:
            return tuple(tuple(float(v) for v in row) for row in value)

        points = ("_mm", "_planning", "_scan", "affine")
        values = {k: rows(v) for k, v in data.items() if k.endswith(points)}
        shape = tuple(int(n) for n in data["grid_shape"])
        return cls(
            **values,
            grid_shape=(shape[0], shape[1], shape[2]),
            frame_of_reference_uid=str(data["frame_of_reference_uid"]),
            noise_seed=int(data["noise_seed"]),
            scanner=dict(data["scanner"]),
        )


@dataclass(frozen=True, eq=False)
class RenderedScan:
    """A simulated CT scan (HU on the scan grid) and its ground truth."""

    volume: Volume
    truth: ScanTruth


def _points(value: ArrayLike | None, name: str) -> NDArray[np.float64]:
    if value is None:
        return np.zeros((0, 3))
    points = np.asarray(value, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
        raise ValueError(f"{name} must be a finite array of shape (n, 3); got shape {points.shape}")
    return points


def _rigid(planning_to_scan: ArrayLike | None) -> NDArray[np.float64]:
    transform = np.eye(4) if planning_to_scan is None else np.asarray(planning_to_scan, dtype=np.float64)
    rotation = transform[:3, :3] if transform.shape == (4, 4) else np.zeros((3, 3))
    rigid = (
        transform.shape == (4, 4)
        and np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
        and np.linalg.det(rotation) > 0
        and np.allclose(transform[3], [0, 0, 0, 1])
    )
    if not rigid:
        raise ValueError("planning_to_scan must be a 4x4 rigid transform (proper rotation + translation)")
    return transform


def _subsamples(spacing_mm: NDArray[np.float64], max_substep_mm: float) -> NDArray[np.float64]:
    """Sub-sample offsets in a voxel (index units, in [-0.5, 0.5)): a low-discrepancy R3 set.

    As many points as a regular lattice with ``max_substep_mm`` steps would have, but placed
    by the additive recurrence of the generalised golden ratio (Roberts' R3 sequence): a
    thin cylinder aligned with a regular lattice is counted with a bias of up to ~10 %,
    the quasi-random set stays within a few per cent in every orientation.
    """
    count = int(np.prod(np.maximum(1, np.ceil(spacing_mm / max_substep_mm))))
    phi = 1.2207440846057596  # real root of x^4 = x + 1
    alpha = 1.0 / phi ** np.arange(1, 4)
    points: NDArray[np.float64] = np.mod(0.5 + np.arange(1, count + 1)[:, None] * alpha, 1.0) - 0.5
    return points


def cylinder_fraction(
    grid: Grid, start_mm: ArrayLike, end_mm: ArrayLike, radius_mm: float, *, max_substep_mm: float = 0.2
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Fraction of each voxel covered by a solid cylinder from ``start_mm`` to ``end_mm``.

    Voxels whose centre is within radius + half a voxel diagonal of the axis segment are
    sub-sampled at as many quasi-random points as a lattice ``max_substep_mm`` apart has; a
    sample is inside when its projection onto the axis falls between the ends and its
    distance from the axis is at most ``radius_mm``.

    Returns
    -------
    (flat indices into grid.shape, fractions in (0, 1]) of the covered voxels.
    """
    a = np.asarray(start_mm, dtype=np.float64).reshape(3)
    b = np.asarray(end_mm, dtype=np.float64).reshape(3)
    length = float(np.linalg.norm(b - a))
    if length < 1e-9:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    axis = (b - a) / length
    spacing = grid.spacing_mm
    reach = radius_mm + 0.5 * float(np.linalg.norm(spacing))
    steps = max(2, math.ceil(length / (0.5 * float(spacing.min()))) + 1)
    along = grid.patient_to_index(a + np.linspace(0.0, length, steps)[:, None] * axis)
    half = np.ceil(reach / spacing).astype(int)
    offsets = np.stack(np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij"), -1).reshape(-1, 3)
    shape = np.array(grid.shape)
    near_axis = (np.rint(along).astype(np.int64)[:, None, :] + offsets).reshape(-1, 3)
    near_axis = near_axis[np.all((near_axis >= 0) & (near_axis < shape), axis=1)]
    # Unique voxels through their flat indices: a 1-D sort, much faster than unique rows.
    candidates = np.column_stack(
        np.unravel_index(np.unique(np.ravel_multi_index(near_axis.T, grid.shape)), grid.shape)
    )
    w = grid.index_to_patient(candidates.astype(np.float64)) - a
    t = np.clip(w @ axis, 0.0, length)
    near = np.linalg.norm(w - t[:, None] * axis, axis=1) <= reach
    candidates, w = candidates[near], w[near]
    sub = _subsamples(spacing, max_substep_mm) @ np.asarray(grid.affine)[:3, :3].T
    fractions = np.empty(len(candidates), dtype=np.float32)
    batch = max(1, _SAMPLES_PER_BATCH // len(sub))
    for i in range(0, len(candidates), batch):
        samples = w[i : i + batch, None, :] + sub[None, :, :]
        t_s = samples @ axis
        radial_sq = np.sum(samples * samples, axis=-1) - t_s * t_s
        inside = (t_s >= 0.0) & (t_s <= length) & (radial_sq <= radius_mm * radius_mm)
        fractions[i : i + batch] = inside.mean(axis=1)
    keep = fractions > 0
    flat = np.ravel_multi_index(tuple(candidates[keep].T), grid.shape).astype(np.int64)
    return flat, fractions[keep]


def slice_profile_weights(sub_slices: int, sigma: float) -> NDArray[np.float64]:
    """Weight of each of a slice's sub-slices in that slice and its neighbours, shape (sub_slices, 2 r + 1).

    ``weights[j, r + d]`` is the share of sub-slice ``j`` (of ``sub_slices`` equal
    ones) in slice ``k + d`` of the slice ``k`` it belongs to, from the profile
    box(thickness) convolved with a Gaussian of sigma ``sigma`` x thickness; each
    slice's weights over all sub-slices that reach it sum to 1. ``sigma`` 0 gives
    the box (each sub-slice counts 1 / sub_slices in its own slice only).
    """
    reach = math.ceil(0.5 + 4.0 * sigma) if sigma > 0 else 0
    centre = (np.arange(sub_slices) + 0.5) / sub_slices - 0.5  # sub-slice centres, slice units
    distance = centre[:, None] - np.arange(-reach, reach + 1)[None, :]
    if sigma > 0:
        weights = special.ndtr((distance + 0.5) / sigma) - special.ndtr((distance - 0.5) / sigma)
    else:
        weights = (np.abs(distance) < 0.5).astype(np.float64)
    result: NDArray[np.float64] = weights / weights.sum()
    return result


def _spread(per_sub_slice: list[NDArray[np.float32]], weights: NDArray[np.float64]) -> NDArray[np.float32]:
    """Sum sub-slice images into slices with ``weights`` (edge slices extended outward)."""
    n = per_sub_slice[0].shape[0]
    reach = (weights.shape[1] - 1) // 2
    total = np.zeros_like(per_sub_slice[0])
    for j, image in enumerate(per_sub_slice):
        padded = np.concatenate([image[:1]] * reach + [image] + [image[-1:]] * reach) if reach else image
        for d in range(-reach, reach + 1):
            # slice k receives sub-slice j of slice k - d
            total += np.float32(weights[j, reach + d]) * padded[reach - d: reach - d + n]
    return total


def _background(model: PatientModel, grid: Grid, transform: NDArray[np.float64], cfg: ScannerConfig) -> Any:
    """The patient on ``grid``: sub-planes ~slice_supersampling_mm apart, through the slice profile."""
    thickness = float(grid.spacing_mm[0])
    n_sub = max(1, round(thickness / cfg.slice_supersampling_mm))
    weights = slice_profile_weights(n_sub, cfg.slice_profile_sigma if grid.shape[0] > 1 else 0.0)
    planes = []
    for k in range(n_sub):
        affine = np.array(grid.affine)
        affine[:3, 3] += ((k + 0.5) / n_sub - 0.5) * affine[:3, 0]
        shifted = Grid(grid.shape, affine, grid.frame_of_reference_uid)
        planes.append(render_patient(model, shifted, planning_to_scan=transform).astype(np.float32))
    return _spread(planes, weights)


def _sub_slice_grid(grid: Grid, sub_slices: int) -> Grid:
    """``grid`` with each slice cut into ``sub_slices`` thinner ones (same extent)."""
    affine = np.array(grid.affine)
    affine[:3, 3] += (0.5 / sub_slices - 0.5) * affine[:3, 0]
    affine[:3, 0] /= sub_slices
    shape = (grid.shape[0] * sub_slices, grid.shape[1], grid.shape[2])
    return Grid(shape, affine, grid.frame_of_reference_uid)


def _through_profile(
    flat: NDArray[np.int64], frac: NDArray[np.float32], grid: Grid, sub_slices: int,
    weights: NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Sub-slice fractions (flat indices on the sub-slice grid) weighted into ``grid``'s slices."""
    per_slice = grid.shape[1] * grid.shape[2]
    fine_slice, in_plane = np.divmod(flat, per_slice)
    slice_, sub = np.divmod(fine_slice, sub_slices)
    reach = (weights.shape[1] - 1) // 2
    out_flat, out_frac = [], []
    for d in range(-reach, reach + 1):
        target = slice_ + d
        ok = (target >= 0) & (target < grid.shape[0])
        out_flat.append(target[ok] * per_slice + in_plane[ok])
        out_frac.append(frac[ok] * weights[sub[ok], reach + d])
    return np.concatenate(out_flat), np.concatenate(out_frac)


def _metal(
    grid: Grid,
    seeds: tuple[NDArray[np.float64], NDArray[np.float64]],
    needles: tuple[NDArray[np.float64], NDArray[np.float64]],
    cfg: ScannerConfig,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
    """Covered voxels (flat indices) with their seed and needle fractions (sum clipped to 1).

    Fractions are counted in sub-slices at most 0.5 mm thick and weighted into
    the slices by the slice sensitivity profile.
    """
    sub_slices = max(1, math.ceil(float(grid.spacing_mm[0]) / 0.5 - 1e-9))
    weights = slice_profile_weights(sub_slices, cfg.slice_profile_sigma if grid.shape[0] > 1 else 0.0)
    fine = _sub_slice_grid(grid, sub_slices)
    objects = [(c - 0.5 * cfg.seed_length_mm * u, c + 0.5 * cfg.seed_length_mm * u, cfg.seed_diameter_mm, 0)
               for c, u in zip(*seeds, strict=True)]
    objects += [(e, t, cfg.needle_diameter_mm, 1) for e, t in zip(*needles, strict=True)]
    parts: list[tuple[NDArray[np.int64], NDArray[np.float64], int]] = []
    for start, end, diameter, kind in objects:
        flat, frac = cylinder_fraction(fine, start, end, diameter / 2.0, max_substep_mm=cfg.max_substep_mm)
        parts.append((*_through_profile(flat, frac, grid, sub_slices, weights), kind))
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
    flat_all = np.concatenate([p[0] for p in parts])
    frac_all = np.concatenate([p[1] for p in parts])
    kind = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    voxels, inverse = np.unique(flat_all, return_inverse=True)
    seed_frac = np.bincount(inverse, weights=frac_all * (kind == 0), minlength=len(voxels))
    needle_frac = np.bincount(inverse, weights=frac_all * (kind == 1), minlength=len(voxels))
    total = seed_frac + needle_frac
    scale = 1.0 / np.maximum(total, 1.0)  # overlapping objects cannot fill more than the voxel
    keep = total > 1e-4  # profile tails far below what a scanner's 1 HU steps show
    return (voxels[keep], (seed_frac * scale)[keep].astype(np.float32),
            (needle_frac * scale)[keep].astype(np.float32))


def _gaussian_weights(sigma_px: float) -> NDArray[np.float64]:
    radius = max(1, math.ceil(4.0 * sigma_px))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma_px) ** 2)
    result: NDArray[np.float64] = w / w.sum()
    return result


def _kernels(grid: Grid, cfg: ScannerConfig) -> list[NDArray[np.float64]]:
    """1-D Gaussian weights along rows and columns (the slice profile is applied while rendering)."""
    d_row, d_col = (float(v) for v in grid.spacing_mm[1:])
    if cfg.psf_sigma_mm <= 0:
        return []
    return [_gaussian_weights(cfg.psf_sigma_mm / d_row), _gaussian_weights(cfg.psf_sigma_mm / d_col)]


def _blur_gain(grid: Grid, cfg: ScannerConfig) -> float:
    """Factor by which the blur scales the sd of white noise: sqrt of the product of sum(w^2)."""
    return math.sqrt(math.prod(float(np.sum(k**2)) for k in _kernels(grid, cfg)))


def _blur(image: NDArray[np.float32], grid: Grid, cfg: ScannerConfig) -> None:
    """In-plane point spread, in place (edges extended)."""
    import cv2  # heavy: only when rendering

    kernels = _kernels(grid, cfg)
    if kernels:
        kr, kc = kernels
        for s in range(image.shape[0]):
            image[s] = cv2.sepFilter2D(image[s], cv2.CV_32F, kc, kr, borderType=cv2.BORDER_REPLICATE)


def _add_streaks(
    image: NDArray[np.float32],
    voxels: NDArray[np.int64],
    mu_excess: NDArray[np.float64],
    grid: Grid,
    cfg: ScannerConfig,
    rng: np.random.Generator,
) -> None:
    per_slice = grid.shape[1] * grid.shape[2]
    slices = voxels // per_slice
    pixel_mm = (float(grid.spacing_mm[1]), float(grid.spacing_mm[2]))
    for s in np.unique(slices):
        chosen = slices == s
        rows, columns = np.divmod(voxels[chosen] - s * per_slice, grid.shape[2])
        image[s] += streak_error_hu(
            rows, columns, mu_excess[chosen], grid.shape[1:], pixel_mm, cfg.streak_model, rng
        )


def _transformed(
    points: NDArray[np.float64], transform: NDArray[np.float64], *, vectors: bool = False
) -> NDArray[np.float64]:
    moved: NDArray[np.float64] = points @ transform[:3, :3].T
    return moved if vectors else moved + transform[:3, 3]


def render_scan(
    model: PatientModel,
    grid: Grid,
    *,
    seed_positions_mm: ArrayLike | None = None,
    seed_directions: ArrayLike | None = None,
    needle_entries_mm: ArrayLike | None = None,
    needle_tips_mm: ArrayLike | None = None,
    planning_to_scan: ArrayLike | None = None,
    scanner: ScannerConfig | None = None,
    noise_seed: int = 0,
) -> RenderedScan:
    """Simulate one CT scan of the patient with seeds and needles in it.

    Parameters
    ----------
    model : PatientModel
        The patient (planning frame).
    grid : Grid
        The scan's voxel grid, in the scan frame (any orientation and spacing).
    seed_positions_mm, seed_directions : array_like of shape (n, 3)
        Seed centres and long axes in the planning frame (they move with the patient).
    needle_entries_mm, needle_tips_mm : array_like of shape (m, 3)
        Needle segments in the planning frame.
    planning_to_scan : array_like of shape (4, 4), optional
        Rigid transform from planning-frame mm to scan-frame mm; identity by default.
    scanner : ScannerConfig, optional
    noise_seed : int
        Seeds the image noise and the photon-starvation noise of the streaks.

    Returns
    -------
    RenderedScan
        HU (float32, whole numbers unless ``integer_hu`` is off) on ``grid``, and the truth.
    """
    cfg = scanner or ScannerConfig()
    transform = _rigid(planning_to_scan)
    seeds_p = _points(seed_positions_mm, "seed_positions_mm")
    dirs_p = _points(seed_directions, "seed_directions")
    entries_p = _points(needle_entries_mm, "needle_entries_mm")
    tips_p = _points(needle_tips_mm, "needle_tips_mm")
    if dirs_p.shape != seeds_p.shape or entries_p.shape != tips_p.shape:
        raise ValueError(
            f"need one direction per seed ({len(seeds_p)} seeds, {len(dirs_p)} directions) and one tip "
            f"per needle entry ({len(entries_p)} entries, {len(tips_p)} tips)"
        )
    norms = np.linalg.norm(dirs_p, axis=1)
    if np.any(norms < 1e-9):
        raise ValueError("seed_directions must be non-zero vectors (the seeds' long axes)")
    dirs_p = dirs_p / norms[:, None]
    seeds_s, dirs_s = _transformed(seeds_p, transform), _transformed(dirs_p, transform, vectors=True)
    entries_s, tips_s = _transformed(entries_p, transform), _transformed(tips_p, transform)
    noise_rng, streak_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(noise_seed).spawn(2))

    image = _background(model, grid, transform, cfg)
    voxels, seed_frac, needle_frac = _metal(grid, (seeds_s, dirs_s), (entries_s, tips_s), cfg)
    flat = image.reshape(-1)
    flat[voxels] = (
        flat[voxels] * (1.0 - seed_frac - needle_frac) + seed_frac * cfg.seed_hu + needle_frac * cfg.needle_hu
    )
    if cfg.noise_sd_hu > 0:
        # White noise filtered by the scanner's blur (correlated, like CT noise): added before
        # blurring, scaled so that its sd after blurring is noise_sd_hu.
        scale = np.float32(cfg.noise_sd_hu / _blur_gain(grid, cfg))
        image += noise_rng.standard_normal(grid.shape, dtype=np.float32) * scale
    _blur(image, grid, cfg)
    if cfg.streaks and len(voxels):
        mu_excess = seed_frac.astype(np.float64) * cfg.seed_mu_per_mm + needle_frac * cfg.needle_mu_per_mm
        _add_streaks(image, voxels, mu_excess, grid, cfg, streak_rng)
    np.clip(image, cfg.min_hu, cfg.max_hu, out=image)
    if cfg.integer_hu:
        np.rint(image, out=image)
    truth = ScanTruth(
        _rows(seeds_p), _rows(dirs_p), _rows(seeds_s), _rows(dirs_s),
        _rows(entries_p), _rows(tips_p), _rows(entries_s), _rows(tips_s),
        _rows(transform), grid.shape, _rows(np.asarray(grid.affine)), grid.frame_of_reference_uid,
        int(noise_seed), asdict(cfg),
    )  # fmt: skip
    logger.debug("rendered scan %s with %d seeds, %d needles", grid.shape, len(seeds_p), len(entries_p))
    return RenderedScan(Volume.on_grid(grid, image, modality="CT", units="HU"), truth)
