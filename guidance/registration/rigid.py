"""Intensity-based rigid registration of an intra-procedure CT onto the planning CT.

Coarse to fine over block-averaged pyramid levels (by default about 4, 2 and 1 mm):

1. Each level of both images: HU windowed and block-averaged; metal (seeds,
   needles) and a margin around it left out of both; outside the body set to
   air (the couch stays put while the patient moves); a box filter along the axes
   where the other image has thicker slices (:mod:`guidance.registration.pyramid`).
   The planning CT's levels can be reduced once per session (:func:`prepare_fixed`);
   each registration crops them around the scan. Moving-scan levels too large to
   build are only sampled (:mod:`guidance.registration.levels`).
2. Samples: up to ``max_points`` voxels of the moving scan's body (and the air
   just around it, so the body outline counts), bone weighted more; the coarse
   translation search scores a random subset of them.
3. Similarity: normalised cross-correlation (same modality, both in HU) of the
   samples and the fixed image trilinearly sampled at their mapped positions,
   with its analytic gradient (:mod:`guidance.registration.similarity`).
4. Optimiser: L-BFGS-B over six parameters (rotations about the samples' centre,
   translations); on the coarsest level first an exhaustive translation search.
   Without an initial transform the start is the identity plus the in-plane shift
   of the body centres.
5. Quality: NCC (finest level), overlap (the body of the coarsest level), bone
   surface distance (finest level built for both images) and a verdict
   (:mod:`guidance.registration.quality`).

The whole registration runs with BLAS on one thread (``threadpoolctl``): its
thousands of tiny BLAS calls (L-BFGS-B) cost milliseconds each when threads must
be woken on a busy machine (measured on 2 cores under load: 2-3 s with the default
threads, 0.3-0.8 s with one). The limit is process-wide while it lasts.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from guidance.registration.levels import MovingLevel, PreparedFixed, fixed_level, mask_settings, moving_levels
from guidance.registration.pyramid import Level, crop_box
from guidance.registration.quality import bone_surface_distance_mm, overlap_fraction, verdict
from guidance.registration.result import (
    STAGE,
    LevelReport,
    Provenance,
    RegistrationOptions,
    RegistrationQuality,
    RegistrationResult,
)
from guidance.registration.similarity import ARM_MM, Samples, Similarity, motion_matrix
from guidance.volume import Volume

__all__ = ["prepare_fixed", "register_rigid"]

logger = logging.getLogger(__name__)

#: Extra crop margin (mm) of the fixed image around the mapped moving scan on the finer levels.
_FINE_MARGIN_MM = 12.0
#: Local optimisations started from the best translations of the coarse search.
_STARTS = 4
#: Sample points scoring each translation of the coarse search (a random subset of the level's).
_SEARCH_POINTS = 5000


def _validated_initial(initial: ArrayLike | None) -> NDArray[np.float64]:
    if initial is None:
        return np.eye(4)
    matrix = np.asarray(initial, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"initial_moving_to_fixed must be a finite 4x4 matrix; got shape {matrix.shape}")
    rotation = matrix[:3, :3]
    if (
        not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
        or np.linalg.det(rotation) <= 0
        or not np.allclose(matrix[3], [0, 0, 0, 1])
    ):
        raise ValueError(
            "initial_moving_to_fixed must be rigid: a proper rotation, a translation, last row 0 0 0 1"
        )
    return matrix.copy()


def _options(values: dict[str, Any]) -> RegistrationOptions:
    known = set(RegistrationOptions.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown registration option(s) {unknown}; known: {sorted(known)}")
    return RegistrationOptions(**values)


def _blur_mm(image: Volume, other: Volume) -> NDArray[np.float64]:
    """Per axis of ``image``: the other image's spacing along it when coarser, else 0."""
    axes, other_axes = image.grid.axes, other.grid.axes
    along = np.abs(axes @ other_axes.T) @ other.spacing_mm
    result: NDArray[np.float64] = np.where(along > image.spacing_mm * 1.2, along, 0.0)
    return result


def _body_centre_shift(fixed: Level, moving: Level, base: NDArray[np.float64]) -> NDArray[np.float64]:
    """Shift (fixed frame) bringing the moving body's centre onto the fixed body's, across the slice axis.

    Only the fixed body within the moving scan's slab counts (a partial scan covers
    part of the planning range); along the slice axis no shift is made.
    """
    moving_mm = np.argwhere(moving.body) @ moving.affine[:3, :3].T + moving.affine[:3, 3]
    fixed_mm = np.argwhere(fixed.body) @ fixed.affine[:3, :3].T + fixed.affine[:3, 3]
    if len(moving_mm) == 0 or len(fixed_mm) == 0:
        return np.zeros(3)
    mapped = moving_mm @ base[:3, :3].T + base[:3, 3]
    normal = base[:3, :3] @ (moving.affine[:3, 0] / np.linalg.norm(moving.affine[:3, 0]))
    heights = mapped @ normal
    in_slab = np.abs(fixed_mm @ normal - heights.mean()) <= (np.ptp(heights) / 2.0 + 1e-6)
    if not in_slab.any():
        return np.zeros(3)
    shift = fixed_mm[in_slab].mean(axis=0) - mapped.mean(axis=0)
    result: NDArray[np.float64] = shift - (shift @ normal) * normal
    return result


def _subset(samples: Samples, count: int, rng: np.random.Generator) -> Samples:
    """At most ``count`` of the samples, chosen at random."""
    if len(samples.values) <= count:
        return samples
    keep = np.sort(rng.choice(len(samples.values), count, replace=False))
    return Samples(samples.points_mm[keep], samples.values[keep], samples.weights[keep])


def _coarse_search(
    similarity: Similarity, half_mm: float, step_mm: float, keep: int
) -> list[NDArray[np.float64]]:
    """The ``keep`` best translations on a grid within +-half_mm that are local maxima of the NCC.

    Translations only, so the starts apply to any Similarity of the same base transform.
    """
    offsets = np.arange(-half_mm, half_mm + 1e-9, step_mm) if half_mm > 0 else np.zeros(1)
    n = len(offsets)
    scores = np.empty((n, n, n))
    for i, j, k in itertools.product(range(n), repeat=3):
        scores[i, j, k] = similarity.ncc(np.array([0.0, 0.0, 0.0, offsets[i], offsets[j], offsets[k]]))
    from scipy import ndimage

    peaks = scores >= ndimage.maximum_filter(scores, size=3, mode="nearest")
    order = np.argsort(-np.where(peaks, scores, -np.inf), axis=None)[:keep]
    starts = [
        np.array([0.0, 0.0, 0.0, *offsets[list(np.unravel_index(flat, scores.shape))]])
        for flat in order
        if peaks.reshape(-1)[flat]
    ]
    return starts or [np.zeros(6)]


def _optimise(
    similarity: Similarity, start: NDArray[np.float64], options: RegistrationOptions
) -> tuple[NDArray[np.float64], int]:
    from scipy import optimize

    rotation = math.radians(options.max_rotation_deg) * ARM_MM
    bounds = [(-rotation, rotation)] * 3 + [(-options.max_translation_mm, options.max_translation_mm)] * 3
    found = optimize.minimize(
        similarity.loss_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": options.max_iterations, "ftol": 1e-10, "gtol": 1e-7},
    )  # fmt: skip
    return np.asarray(found.x, dtype=np.float64), int(found.nit)


def _motion_beyond(
    delta: NDArray[np.float64], centre: NDArray[np.float64], options: RegistrationOptions
) -> bool:
    angle = math.degrees(math.acos(float(np.clip((np.trace(delta[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))
    shift = float(np.linalg.norm(delta[:3, :3] @ centre + delta[:3, 3] - centre))
    return angle > options.max_rotation_deg * 0.98 or shift > options.max_translation_mm * 0.98


def _fixed_level(
    fixed: Volume | PreparedFixed, moving: Volume, level_mm: float, base: NDArray[np.float64],
    margin_mm: float, options: RegistrationOptions,
) -> Level | None:  # fmt: skip
    """The fixed image's level cropped around the mapped moving scan (None: no overlap)."""
    volume = fixed.volume if isinstance(fixed, PreparedFixed) else fixed
    upper = np.asarray(moving.shape, dtype=np.float64) - 1.0
    corners = moving.index_to_patient(
        np.array(list(itertools.product(*zip(np.zeros(3), upper, strict=True))))
    )
    box = crop_box(volume, corners @ base[:3, :3].T + base[:3, 3], margin_mm)
    if box is None:
        return None
    return fixed_level(fixed, level_mm, box, mask_settings(options), _blur_mm(volume, moving))


def _run_level(
    index: int, fixed: Level, moving: MovingLevel, base: NDArray[np.float64], options: RegistrationOptions,
    initialise: bool,
) -> tuple[NDArray[np.float64], LevelReport, Similarity]:  # fmt: skip
    """Register on one level; returns the new moving -> fixed transform."""
    started = time.perf_counter()
    rng = np.random.default_rng([options.random_seed, index])
    if initialise and moving.dense is not None:
        shift = _body_centre_shift(fixed, moving.dense, base)
        base = motion_matrix(np.array([0.0, 0.0, 0.0, *shift]), np.zeros(3)) @ base
    similarity = Similarity(fixed, moving.samples(options, rng), base)
    starts = [np.zeros(6)]
    if index == 0 and options.search_mm > 0:
        search = Similarity(fixed, _subset(similarity.samples, _SEARCH_POINTS, rng), base)
        starts = _coarse_search(search, options.search_mm, float(fixed.spacing_mm.max()), _STARTS)
    tried = [_optimise(similarity, start, options) for start in starts]
    params, iterations = min(tried, key=lambda found: 1.0 - similarity.ncc(found[0]))
    ncc = similarity.ncc(params)
    result = motion_matrix(params, similarity.centre) @ base
    spacing = tuple(float(v) for v in moving.spacing_mm)
    report = LevelReport((spacing[0], spacing[1], spacing[2]), len(similarity.points), iterations, ncc,
                         time.perf_counter() - started)  # fmt: skip
    logger.debug(
        "registration level %d: spacing %s, NCC %.4f, %d iterations", index, spacing, ncc, iterations
    )
    return result, report, similarity


def _quality(
    fixed: Volume, fixed_levels: list[Level], moving_levels: list[MovingLevel], similarity: Similarity,
    transform: NDArray[np.float64], at_bound: bool, options: RegistrationOptions,
) -> RegistrationQuality:  # fmt: skip
    """NCC on the finest level, overlap of the coarsest body, bone on the finest built level; the verdict."""
    final = Similarity(similarity.fixed, similarity.samples, transform)
    ncc = final.ncc(np.zeros(6))
    samples = similarity.samples
    bone = samples.values > options.bone_hu
    bone_samples = Samples(samples.points_mm[bone], samples.values[bone], samples.weights[bone])
    bone_ncc = (
        Similarity(similarity.fixed, bone_samples, transform).ncc(np.zeros(6)) if bone.sum() > 2 else math.nan
    )
    coarse = moving_levels[0].dense
    assert coarse is not None  # the coarsest moving level is always built
    body_mm = np.argwhere(coarse.body) @ coarse.affine[:3, :3].T + coarse.affine[:3, 3]
    overlap = overlap_fraction(fixed.grid, body_mm, transform)
    built = max(k for k in range(len(fixed_levels)) if moving_levels[k].dense is not None)
    moving_built = moving_levels[built].dense
    assert moving_built is not None
    bone_mm, bone_points = bone_surface_distance_mm(
        fixed_levels[built], moving_built, transform, options.bone_hu
    )
    outcome, reasons = verdict(options, ncc=ncc, overlap=overlap, bone_mm=bone_mm, bone_points=bone_points,
                               at_bound=at_bound)  # fmt: skip
    return RegistrationQuality(ncc, overlap, bone_ncc, bone_mm, bone_points, outcome, reasons)


def _failed(
    fixed: Volume, moving: Volume, transform: NDArray[np.float64], options: RegistrationOptions
) -> RegistrationQuality:
    corners = moving.grid.voxel_centres_mm()[:: max(1, moving.shape[0] - 1), ::8, ::8].reshape(-1, 3)
    overlap = overlap_fraction(fixed.grid, corners, transform)
    outcome, reasons = verdict(options, ncc=math.nan, overlap=overlap, bone_mm=math.nan, bone_points=0,
                               at_bound=False)  # fmt: skip
    return RegistrationQuality(math.nan, overlap, math.nan, math.nan, 0, outcome, reasons)


def prepare_fixed(planning_ct: Volume, **options: Any) -> PreparedFixed:
    """Reduce the planning CT to its pyramid levels once, for every registration of a session.

    Parameters
    ----------
    planning_ct : Volume
        The planning CT (the fixed image of every registration of the procedure), HU.
    **options
        Fields of :class:`~guidance.registration.result.RegistrationOptions`; the
        levels of ``levels_mm`` are reduced now (others on first use).

    Returns
    -------
    PreparedFixed
        Pass it as ``fixed`` to :func:`register_rigid` (with the same options, or the
        levels are reduced again on first use); the results equal those of the Volume
        up to the body outline at the edges of the crop.

    Raises
    ------
    ValueError
        Unknown or invalid options, or ``planning_ct`` not a Volume.
    """
    settings = _options(options)
    prepared = PreparedFixed(planning_ct)
    masks = mask_settings(settings)
    for level_mm in settings.levels_mm:
        prepared.level(level_mm, masks)
    return prepared


def register_rigid(
    fixed: Volume | PreparedFixed,
    moving: Volume,
    *,
    initial_moving_to_fixed: ArrayLike | None = None,
    **options: Any,
) -> RegistrationResult:
    """Rigidly register an intra-procedure CT (moving) onto the planning CT (fixed).

    Parameters
    ----------
    fixed : Volume or PreparedFixed
        The planning CT, HU, indexed (slice, row, column) with its index -> LPS mm
        affine; or the same prepared once by :func:`prepare_fixed` for a session (its
        pyramid is then not reduced again for every scan).
    moving : Volume
        The intra-procedure scan, HU; any slice thickness, a partial range (10-20
        slices) is expected. Seeds, needles and their streaks may be in either image.
    initial_moving_to_fixed : array_like of shape (4, 4), optional
        Starting transform (e.g. the previous scan's in a session). Without it: the
        identity plus the in-plane shift of the body centres.
    **options
        Fields of :class:`~guidance.registration.result.RegistrationOptions`.

    Returns
    -------
    RegistrationResult
        ``moving_to_fixed`` maps moving-frame LPS mm into the planning frame; the
        quality report holds the verdict (PASS / DOUBT / FAIL) and its reasons.

    Raises
    ------
    ValueError
        Unknown or invalid options, a non-rigid initial transform, or images that are not 3-D.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 (the patient coordinates both affines map to); DICOM PS3.3
    C.20.2 (Spatial Registration: the 4x4 ``moving_to_fixed`` is a FrameOfReferenceTransformationMatrix).
    """
    import scipy.optimize  # noqa: F401  (loads SciPy's OpenBLAS before the limit is applied)

    with threadpool_limits(limits=1, user_api="blas"):
        return _register(fixed, moving, initial_moving_to_fixed, options)


def _register(
    fixed: Volume | PreparedFixed,
    moving: Volume,
    initial_moving_to_fixed: ArrayLike | None,
    options: dict[str, Any],
) -> RegistrationResult:
    from guidance import __version__

    started = time.perf_counter()
    settings = _options(options)
    for name, image in (("fixed", fixed), ("moving", moving)):
        if not isinstance(image, Volume) and not (name == "fixed" and isinstance(image, PreparedFixed)):
            raise ValueError(f"{name} must be a guidance.volume.Volume; got {type(image).__name__}")
    initial = _validated_initial(initial_moving_to_fixed)
    volume = fixed.volume if isinstance(fixed, PreparedFixed) else fixed
    masks = mask_settings(settings)
    moving_pyramid = moving_levels(moving, settings.levels_mm, masks, _blur_mm(moving, volume))
    transform, reports = initial, []
    fixed_levels: list[Level] = []
    similarity: Similarity | None = None
    for index, (level_mm, moving_level) in enumerate(zip(settings.levels_mm, moving_pyramid, strict=True)):
        margin = settings.search_mm + 20.0 if index == 0 else _FINE_MARGIN_MM + level_mm
        level = _fixed_level(fixed, moving, level_mm, transform, margin, settings)
        if level is None:
            break
        fixed_levels.append(level)
        transform, report, similarity = _run_level(
            index, level, moving_level, transform, settings,
            initialise=index == 0 and initial_moving_to_fixed is None,
        )  # fmt: skip
        reports.append(report)
    if similarity is None:
        quality = _failed(volume, moving, transform, settings)
    else:
        centre = moving.index_to_patient((np.asarray(moving.shape) - 1.0) / 2.0)[0]
        at_bound = _motion_beyond(
            transform @ np.linalg.inv(initial), initial[:3, :3] @ centre + initial[:3, 3], settings
        )
        quality = _quality(volume, fixed_levels, moving_pyramid, similarity, transform, at_bound, settings)
    seconds = time.perf_counter() - started
    parameters = {**settings.to_dict(), "initial_moving_to_fixed": initial.tolist(),
                  "initial_given": initial_moving_to_fixed is not None}  # fmt: skip
    logger.info("rigid registration %s in %.2f s: NCC %.3f, bone %.2f mm", quality.verdict.value, seconds,
                quality.similarity_ncc, quality.bone_surface_distance_mm)  # fmt: skip
    transform.setflags(write=False)
    return RegistrationResult(
        transform, quality, tuple(reports), Provenance(STAGE, parameters, __version__, seconds)
    )
