"""A second, independent CT appearance of seeds and needles (test helper, no simulator code).

Everything differs from :mod:`simulators.render` on purpose, so that detection is not
tuned to one renderer's look:

- Geometry: feet-first axial grid (the slice axis runs to -z), rows along -y.
- Seeds: a capsule (hemispherical ends, 4.5 mm overall, 0.8 mm across) of titanium
  (6000 HU) around a silver marker rod (3.0 x 0.5 mm, 20000 HU); voxel coverage from
  jittered sub-samples.
- Needles: a steel tube (1.27 mm outer, 0.84 mm inner diameter, 7000 HU steel) with its
  lumen filled by a solid stylet (the hollow part is not seen at 0.3 mm either way).
- Background: soft tissue (45 HU), a fat layer (-95 HU), an air column (-1000 HU) and a
  bone plate (1300 HU cortex around 300 HU marrow).
- Slice profile: a trapezoid, flat over the middle 0.6 of the slice thickness and
  falling linearly to zero 0.7 thickness from the slice centre (full width at half
  maximum the thickness, at a tenth 1.3 x), sampled by sub-planes and sub-samples
  that reach into the neighbouring slices; in-plane point spread: a Gaussian core plus
  an exponential-like wider tail (two Gaussians, 85 % at ``psf_core_mm``, 15 % at 3x).
- Noise: band-pass (difference of Gaussians) correlated noise, not white-through-PSF,
  with sd ``noise_sd_hu``; plus a little quantum-like noise growing with the HU.
- Streaks: analytic, not back-projected: dark bands along the in-plane lines joining
  metal objects in a slice, and a star of bright and dark rays from each object with
  random angles and amplitude falling as 1/r.
- HU scale: 12-bit (clip at 3071) or extended (clip at 30710, as scanners with an
  extended CT scale store).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from guidance.volume import Grid, Volume

_SEED_RADIUS_MM = 0.4
_SEED_LENGTH_MM = 4.5
_CORE_RADIUS_MM = 0.25
_CORE_LENGTH_MM = 3.0
_NEEDLE_RADIUS_MM = 0.635


@dataclass(frozen=True)
class Appearance:
    """How the second scanner shows things."""

    noise_sd_hu: float = 18.0
    psf_core_mm: float = 0.45
    max_hu: float = 3071.0
    titanium_hu: float = 6000.0
    silver_hu: float = 20000.0
    steel_hu: float = 7000.0
    streak_hu: float = 220.0
    band_hu: float = 120.0
    #: Fat layer, air column and bone plate within 30 mm of the centre; False: soft tissue only
    #: (for implants larger than the tissue between them).
    anatomy: bool = True


def grid(
    centre_mm: NDArray[np.float64], *, pixel_mm: float, thickness_mm: float, size: int, slices: int
) -> Grid:
    """Feet-first axial grid: slice axis -z, rows along -y, columns along +x, centred on ``centre_mm``."""
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, -thickness_mm]
    affine[:3, 1] = [0.0, -pixel_mm, 0.0]
    affine[:3, 2] = [pixel_mm, 0.0, 0.0]
    half = np.array([(slices - 1) / 2.0, (size - 1) / 2.0, (size - 1) / 2.0])
    affine[:3, 3] = centre_mm - affine[:3, :3] @ half
    return Grid((slices, size, size), affine, "1.2.826.0.1.2")


_PROFILE_TOP, _PROFILE_BASE = 0.3, 0.7  # trapezoid half-widths, in slice thicknesses


def _profile(u: NDArray[np.float64]) -> NDArray[np.float64]:
    """Slice sensitivity at ``u`` slice thicknesses from the slice centre (1 in the flat top)."""
    ramp = (_PROFILE_BASE - np.abs(u)) / (_PROFILE_BASE - _PROFILE_TOP)
    result: NDArray[np.float64] = np.clip(ramp, 0.0, 1.0)
    return result


def _background(g: Grid, centre_mm: NDArray[np.float64], anatomy: bool = True) -> NDArray[np.float32]:
    """Tissue, fat, an air column and a bone plate (soft tissue only without ``anatomy``), over
    sub-planes about 0.25 mm apart weighted by the slice profile."""
    thickness = float(g.spacing_mm[0])
    n_sub = max(3, round(2 * _PROFILE_BASE * thickness / 0.25)) if g.shape[0] > 1 else 1
    offsets = ((np.arange(n_sub) + 0.5) / n_sub * 2 - 1) * _PROFILE_BASE if n_sub > 1 else np.zeros(1)
    weights = _profile(offsets) if n_sub > 1 else np.ones(1)
    total = np.zeros(g.shape, dtype=np.float32)
    for offset, weight in zip(offsets, weights / weights.sum(), strict=True):
        index = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in g.shape), indexing="ij"), -1)
        index[..., 0] += offset
        p = index @ np.asarray(g.affine)[:3, :3].T + np.asarray(g.affine)[:3, 3] - centre_mm
        x, y = p[..., 0], p[..., 1]
        image = np.full(g.shape, 45.0)
        image[(x / 70.0) ** 2 + ((y - 10.0) / 50.0) ** 2 > 1.0] = -1000.0  # air around the neck
        if anatomy:
            image[(y > 20.0) & (image > 0)] = -95.0  # fat under the skin
            image[np.hypot(x + 24.0, y + 6.0) < 5.0] = -1000.0  # airway
            plate = (np.abs(x - 19.0) < 3.0) & (np.abs(y + 20.0) < 8.0)
            image[plate] = 300.0
            image[plate & ((np.abs(x - 19.0) > 1.8) | (np.abs(y + 20.0) > 6.8))] = 1300.0
        total += np.float32(weight) * image.astype(np.float32)
    return total


def _capsule_cover(
    g: Grid, a: NDArray[np.float64], b: NDArray[np.float64], radius: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Voxels (index rows) near the capsule from a to b and the fraction of jittered sub-samples inside."""
    lo = np.floor(g.patient_to_index(np.vstack([a, b])).min(axis=0) - 2.0 / g.spacing_mm - 1).astype(int)
    hi = np.ceil(g.patient_to_index(np.vstack([a, b])).max(axis=0) + 2.0 / g.spacing_mm + 1).astype(int)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, np.array(g.shape) - 1)
    if np.any(hi < lo):
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    ranges = [np.arange(low, high + 1) for low, high in zip(lo, hi, strict=True)]
    index = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
    axis = b - a
    length_sq = max(float(axis @ axis), 1e-12)
    centres = g.index_to_patient(index.astype(np.float64))
    t = np.clip((centres - a) @ axis / length_sq, 0.0, 1.0)
    window = np.array([2 * _PROFILE_BASE if g.shape[0] > 1 else 1.0, 1.0, 1.0])  # sampled extent, voxels
    reach = radius + 0.5 * float(np.linalg.norm(g.spacing_mm * window))
    index = index[np.linalg.norm(centres - (a + t[:, None] * axis), axis=1) <= reach]
    per_axis = np.minimum(np.ceil(g.spacing_mm * window / 0.15).astype(int), 16)
    count = int(np.prod(per_axis))
    lattice = np.stack(np.meshgrid(*(np.arange(n) for n in per_axis), indexing="ij"), -1).reshape(-1, 3)
    sub = ((lattice + rng.uniform(size=(count, 3))) / per_axis - 0.5) * window
    weight = _profile(sub[:, 0]) if g.shape[0] > 1 else np.ones(count)
    weight = weight / weight.sum()
    fractions = np.zeros(len(index))
    for start in range(0, len(index), 4096):
        idx = index[start : start + 4096]
        samples = g.index_to_patient((idx[:, None, :] + sub[None]).reshape(-1, 3).astype(np.float64))
        t = np.clip((samples - a) @ axis / length_sq, 0.0, 1.0)
        inside = np.linalg.norm(samples - (a + t[:, None] * axis), axis=1) <= radius
        fractions[start : start + 4096] = inside.reshape(len(idx), count) @ weight
    keep = fractions > 0
    return index[keep], fractions[keep]


def _paint(
    image: NDArray[np.float32], parts: list[tuple[NDArray[np.int64], NDArray[np.float64], float]]
) -> None:
    """Replace background by metal in proportion to coverage (fractions of one voxel add up to 1)."""
    cover = np.zeros(image.shape)
    metal = np.zeros(image.shape)
    for index, fraction, hu in parts:
        np.add.at(cover, tuple(index.T), fraction)
        np.add.at(metal, tuple(index.T), fraction * hu)
    scale = 1.0 / np.maximum(cover, 1.0)
    image[...] = (image * (1.0 - cover * scale) + metal * scale).astype(np.float32)


def _blur(image: NDArray[np.float32], g: Grid, look: Appearance) -> NDArray[np.float32]:
    pixel = g.spacing_mm[1:]
    core = ndimage.gaussian_filter(image, (0.0, *(look.psf_core_mm / pixel)))
    tail = ndimage.gaussian_filter(image, (0.0, *(3.0 * look.psf_core_mm / pixel)))
    blurred = 0.85 * core + 0.15 * tail
    return blurred.astype(np.float32)


def _noise(g: Grid, look: Appearance, rng: np.random.Generator) -> NDArray[np.float32]:
    white = rng.standard_normal(g.shape).astype(np.float32)
    pixel = g.spacing_mm[1:]
    band = ndimage.gaussian_filter(white, (0.0, *(0.35 / pixel))) - ndimage.gaussian_filter(
        white, (0.0, *(1.6 / pixel))
    )
    sd = float(np.std(band))
    result: NDArray[np.float32] = band * np.float32(look.noise_sd_hu / max(sd, 1e-6))
    return result


def _streaks(
    image: NDArray[np.float32], g: Grid, objects: list[NDArray[np.float64]], look: Appearance,
    rng: np.random.Generator,
) -> None:  # fmt: skip
    """Star rays from each metal object crossing a slice, dark bands between pairs of them."""
    rows, columns = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in g.shape[1:]), indexing="ij")
    pixel = g.spacing_mm[1:]
    for s in range(g.shape[0]):
        in_slice = []
        for points in objects:
            index = g.patient_to_index(points)
            near = np.abs(index[:, 0] - s) <= 0.5
            if near.any():
                in_slice.append(index[near, 1:].mean(axis=0))
        for centre in in_slice:
            dr, dc = (rows - centre[0]) * pixel[0], (columns - centre[1]) * pixel[1]
            r = np.hypot(dr, dc) + 1.0
            angle = np.arctan2(dr, dc)
            rays = np.zeros_like(r)
            for theta, sign in zip(rng.uniform(0, np.pi, 6), rng.choice([-1.0, 1.0], 6), strict=True):
                rays += sign * np.exp(-0.5 * (np.sin(angle - theta) / 0.03) ** 2)
            image[s] += (look.streak_hu * rays / r).astype(np.float32)
        for i in range(len(in_slice)):
            for j in range(i + 1, len(in_slice)):
                a, b = in_slice[i] * pixel, in_slice[j] * pixel
                u = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
                w_r, w_c = rows * pixel[0] - a[0], columns * pixel[1] - a[1]
                across = np.abs(w_r * u[1] - w_c * u[0])
                # Shared among the pairs: beam hardening saturates, it does not add up without bound.
                depth = look.band_hu / max(1, len(in_slice) - 1)
                image[s] -= (depth * np.exp(-0.5 * (across / 1.5) ** 2)).astype(np.float32)


def render(
    g: Grid,
    centre_mm: NDArray[np.float64],
    *,
    seeds_mm: NDArray[np.float64],
    seed_directions: NDArray[np.float64],
    needle_entries_mm: NDArray[np.float64] | None = None,
    needle_tips_mm: NDArray[np.float64] | None = None,
    look: Appearance | None = None,
    noise_seed: int = 0,
) -> Volume:
    """The CT of the seeds and needles on ``g`` (HU, float32 whole numbers)."""
    look = look or Appearance()
    rng = np.random.default_rng(noise_seed)
    image = _background(g, centre_mm, look.anatomy)
    parts: list[tuple[NDArray[np.int64], NDArray[np.float64], float]] = []
    objects: list[NDArray[np.float64]] = []
    for centre, direction in zip(seeds_mm, seed_directions, strict=True):
        u = direction / np.linalg.norm(direction)
        half = _SEED_LENGTH_MM / 2.0 - _SEED_RADIUS_MM
        shell, f_shell = _capsule_cover(g, centre - half * u, centre + half * u, _SEED_RADIUS_MM, rng)
        half_core = _CORE_LENGTH_MM / 2.0 - _CORE_RADIUS_MM
        core, f_core = _capsule_cover(g, centre - half_core * u, centre + half_core * u, _CORE_RADIUS_MM, rng)
        parts += [(shell, f_shell, look.titanium_hu), (core, f_core, look.silver_hu - look.titanium_hu)]
        objects.append(centre + np.outer(np.linspace(-2.0, 2.0, 9), u))
    entries = np.zeros((0, 3)) if needle_entries_mm is None else needle_entries_mm
    tips = np.zeros((0, 3)) if needle_tips_mm is None else needle_tips_mm
    for entry, tip in zip(entries, tips, strict=True):
        # The steel ends at the tip: the capsule's rounded end stops one radius short of it.
        u = (tip - entry) / np.linalg.norm(tip - entry)
        index, fraction = _capsule_cover(g, entry, tip - _NEEDLE_RADIUS_MM * u, _NEEDLE_RADIUS_MM, rng)
        parts.append((index, fraction, look.steel_hu))
        objects.append(entry + np.outer(np.linspace(0.0, 1.0, 200), tip - entry))
    _paint(image, parts)
    image = _blur(image, g, look)
    image += _noise(g, look, rng) + (
        rng.standard_normal(g.shape).astype(np.float32) * np.sqrt(np.clip(image, 0.0, None)) * np.float32(0.3)
    )
    _streaks(image, g, objects, look, rng)
    np.clip(image, -1024.0, look.max_hu, out=image)
    return Volume(np.rint(image).astype(np.float32), np.asarray(g.affine), g.frame_of_reference_uid)
