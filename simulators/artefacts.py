"""Metal streak artefacts of a CT slice: forward-project the metal, distort, back-project the error.

Model (per axial slice of the scan grid, parallel-beam geometry):

1. Sinogram of the metal only. Each metal voxel carries its attenuation excess
   mu * fraction (1/mm); its in-plane position is projected onto detector bins
   of one pixel width at ``angles`` views over 180 degrees (linear splatting), so
   p(theta, t) is the metal line integral (dimensionless) averaged over a bin.
2. Distortion of what the detector measures through metal:
   - beam hardening and scatter: the measured line integral saturates,
     p_m = (1 - exp(-kappa p)) / kappa, so the error p_m - p is negative and grows
     faster than p: dark bands along lines that join metal objects (their line
     integrals add), and through the long axis of each seed;
   - photon starvation: few photons reach the detector behind metal, so the
     measurement noise grows as eta (exp(gamma p) - 1) (zero away from metal),
     giving bright and dark streaky noise along the rays through metal. The log of
     a count of N photons has sd 1 / sqrt(N), and a detector counts at least one:
     the noise sd is at most 1 (a ray along a needle lying in the slice, p ~ 14-20,
     is starved, not measured with an error of exp(p) line integrals).
3. The error sinogram is pooled to the coarse reconstruction grid, ramp
   filtered (Ram-Lak, Kak & Slaney eq. 3.61-3.63) and back-projected; the error
   image (mu, 1/mm) becomes HU with mu_water and is added to the slice.

The amplitude scales with the amount of metal in the slice through p. The error
image is reconstructed on a grid of at most ``max_pixels`` per side (e.g. 128 for
a 512 image) and interpolated back: streaks are smooth across their width, and
this keeps a 512 x 512 x 100 scan within seconds.

References
----------
A. C. Kak and M. Slaney, Principles of Computerized Tomographic Imaging (IEEE Press,
1988), ch. 3.3 (filtered back-projection of parallel projections).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["StreakModel", "backproject", "backproject_reference", "streak_error_hu"]

#: Linear attenuation of water at the effective energy of a 120 kVp beam (~70 keV), 1/mm.
MU_WATER_PER_MM = 0.0195
_ANGLES_PER_CHUNK = 30
#: The sd of the log of a count of one photon: the largest noise a starved detector bin shows.
_ONE_PHOTON_SD = 1.0


@dataclass(frozen=True)
class StreakModel:
    """Parameters of the streak model (see the module docstring)."""

    angles: int = 180
    max_pixels: int = 128
    #: Saturation of the measured metal line integral (beam hardening), per unit line integral.
    kappa: float = 1.0
    #: Photon-starvation noise: sd = eta (exp(gamma p) - 1), p capped at ``p_cap``, sd at most 1.
    eta: float = 0.05
    gamma: float = 1.0
    p_cap: float = 16.0
    strength: float = 1.0
    #: Photon starvation floor: the largest metal line integral the detector can still
    #: measure (ln of the unattenuated counts over the count floor, less the tissue path).
    #: Beyond it the measurement saturates; None: no floor.
    starvation_p: float | None = None
    #: Reconstruction kernel: Ram-Lak times a Hann window (1.0, smooth, soft-tissue like) or
    #: bare Ram-Lak (0.0, sharp, bone like); values in between mix the two.
    hann: float = 1.0

    def __post_init__(self) -> None:
        if self.angles < 8 or self.max_pixels < 16:
            raise ValueError(f"StreakModel needs angles >= 8 and max_pixels >= 16; got {self}")
        if not (self.kappa > 0 and 0.0 <= self.hann <= 1.0 and self.eta >= 0 and self.strength >= 0):
            raise ValueError(
                f"StreakModel needs kappa > 0, eta >= 0, strength >= 0 and hann in [0, 1]; got {self}"
            )
        if self.starvation_p is not None and not self.starvation_p > 0:
            raise ValueError(f"StreakModel.starvation_p must be > 0 or None; got {self.starvation_p}")

    @classmethod
    def photon_limited(
        cls, photons_per_bin: float, *, tissue_line_integral: float = 4.0, kappa: float = 0.1,
        angles: int = 180, max_pixels: int = 512, hann: float = 0.0,
    ) -> StreakModel:  # fmt: skip
        """A low-dose scan whose rays through metal are counted with few photons.

        ``photons_per_bin`` photons reach one detector bin per view without the patient;
        the patient's tissue attenuates every ray by ``tissue_line_integral`` (about 200 mm
        of water) and the metal by its line integral p. Poisson counts
        N = N0 exp(-(p_t + p)) give a log measurement of sd 1 / sqrt(N), so the noise added
        by the metal is exp(p_t / 2) / sqrt(N0) (exp(p / 2) - 1): eta and gamma = 1/2. The
        detector cannot count fewer than one photon, so the measured metal line integral
        saturates at ln(N0) - p_t (``starvation_p``, also the noise cap). The streaks are
        reconstructed at full resolution with a sharp kernel (bare Ram-Lak), as a bone
        kernel shows them: thin, with bright flanks along the dark bands.
        """
        if not photons_per_bin > math.exp(tissue_line_integral):
            raise ValueError(
                f"StreakModel.photon_limited: photons_per_bin ({photons_per_bin}) must exceed "
                f"exp(tissue_line_integral) = {math.exp(tissue_line_integral):.0f}: one photon through tissue"
            )
        floor_p = math.log(photons_per_bin) - tissue_line_integral
        return cls(
            angles=angles, max_pixels=max_pixels, kappa=kappa, eta=math.exp(tissue_line_integral / 2.0)
            / math.sqrt(photons_per_bin), gamma=0.5, p_cap=floor_p, starvation_p=floor_p, hann=hann,
        )  # fmt: skip


def _ramp_kernel(n: int, tau_mm: float) -> NDArray[np.float64]:
    """Band-limited ramp filter h(k tau), k = -n..n (Kak & Slaney eq. 3.61)."""
    k = np.arange(-n, n + 1)
    h = np.zeros(2 * n + 1)
    h[n] = 1.0 / (4.0 * tau_mm**2)
    odd = k % 2 == 1
    h[odd] = -1.0 / (k[odd] ** 2 * math.pi**2 * tau_mm**2)
    return h


def _metal_sinogram(
    x_mm: NDArray[np.float64],
    y_mm: NDArray[np.float64],
    weight: NDArray[np.float64],
    thetas: NDArray[np.float64],
    n_bins: int,
    bin_mm: float,
) -> NDArray[np.float64]:
    """Bin-averaged line integrals (angles, n_bins) of point masses ``weight`` (mu x area, mm)."""
    t = (np.cos(thetas)[:, None] * x_mm + np.sin(thetas)[:, None] * y_mm) / bin_mm + n_bins / 2.0 - 0.5
    lower = np.floor(t).astype(np.int64)
    frac = t - lower
    rows = np.broadcast_to(np.arange(len(thetas))[:, None], t.shape)
    values = np.broadcast_to(weight / bin_mm, t.shape)
    sinogram = np.zeros((len(thetas), n_bins + 1))
    np.add.at(sinogram, (rows, np.clip(lower, 0, n_bins)), values * (1.0 - frac))
    np.add.at(sinogram, (rows, np.clip(lower + 1, 0, n_bins)), values * frac)
    return sinogram[:, :n_bins]


def backproject_reference(
    filtered: NDArray[np.float64], thetas: NDArray[np.float64], xc: NDArray[np.float64],
    yc: NDArray[np.float64], tau_mm: float,
) -> NDArray[np.float64]:  # fmt: skip
    """pi/K sum over views of the filtered projection at t = x cos + y sin (linear interpolation).

    The plain numpy form of :func:`backproject` (its reference in the tests).
    """
    n_bins = filtered.shape[1]
    image = np.zeros((len(yc), len(xc)))
    flat_x, flat_y = np.meshgrid(xc, yc)
    flat_x, flat_y = flat_x.ravel(), flat_y.ravel()
    for a0 in range(0, len(thetas), _ANGLES_PER_CHUNK):
        th = thetas[a0 : a0 + _ANGLES_PER_CHUNK]
        t = (np.cos(th)[:, None] * flat_x + np.sin(th)[:, None] * flat_y) / tau_mm + n_bins / 2.0 - 0.5
        lower = np.clip(np.floor(t).astype(np.int64), 0, n_bins - 2)
        frac = np.clip(t - lower, 0.0, 1.0)
        rows = filtered[a0 : a0 + _ANGLES_PER_CHUNK]
        left = np.take_along_axis(rows, lower, axis=1)
        right = np.take_along_axis(rows, lower + 1, axis=1)
        image += (left + frac * (right - left)).sum(axis=0).reshape(image.shape)
    result: NDArray[np.float64] = image * math.pi / len(thetas)
    return result


def backproject(
    filtered: NDArray[np.float64], thetas: NDArray[np.float64], xc: NDArray[np.float64],
    yc: NDArray[np.float64], tau_mm: float,
) -> NDArray[np.float64]:  # fmt: skip
    """Back-projection of a filtered parallel-beam sinogram onto a rectangular grid.

    Parameters
    ----------
    filtered : ndarray of shape (K, B), float
        Filtered projections, K views, B detector bins ``tau_mm`` wide centred on t = 0.
    thetas : ndarray of shape (K,)
        View angles, radians.
    xc, yc : ndarray of shape (C,) and (R,)
        Pixel centres along columns and rows, mm from the rotation centre.
    tau_mm : float
        Bin width, mm.

    Returns
    -------
    ndarray of shape (R, C), float64
        pi/K sum_k q_k(x cos theta_k + y sin theta_k) (Kak & Slaney eq. 3.45), linear
        interpolation between bins; the numba kernel :func:`simulators._kernels.backproject`.

    Raises
    ------
    ValueError
        On mismatched shapes, fewer than 2 bins, a non-positive bin width or non-finite input.
    """
    q = np.ascontiguousarray(filtered, dtype=np.float64)
    th = np.asarray(thetas, dtype=np.float64)
    x = np.ascontiguousarray(xc, dtype=np.float64)
    y = np.ascontiguousarray(yc, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] < 2 or th.shape != (q.shape[0],) or x.ndim != 1 or y.ndim != 1:
        raise ValueError(
            f"backproject: filtered must be (views, bins >= 2) with one angle per view and 1-D pixel "
            f"centres; got filtered {q.shape}, thetas {th.shape}, xc {x.shape}, yc {y.shape}"
        )
    if not tau_mm > 0 or not all(np.all(np.isfinite(a)) for a in (q, th, x, y)):
        raise ValueError(f"backproject: needs finite arrays and a bin width > 0 mm; got tau_mm={tau_mm}")
    from simulators import _kernels  # compiles on first use

    image = np.zeros((len(y), len(x)))
    _kernels.backproject(
        q, np.cos(th) / tau_mm, np.sin(th) / tau_mm, x, y, q.shape[1] / 2.0 - 0.5, image
    )
    result: NDArray[np.float64] = image * (math.pi / len(th))
    return result


def _interpolation_matrix(n_fine: int, factor: int) -> NDArray[np.float32]:
    """(n_fine, n_coarse) linear interpolation from coarse pixel centres to fine ones."""
    n_coarse = math.ceil(n_fine / factor)
    nodes = (np.arange(n_coarse) + 0.5) * factor - 0.5
    eye = np.eye(n_coarse)
    return np.stack([np.interp(np.arange(n_fine), nodes, eye[j]) for j in range(n_coarse)], axis=1).astype(
        np.float32
    )


def streak_error_hu(
    rows: NDArray[np.intp],
    columns: NDArray[np.intp],
    mu_excess_per_mm: NDArray[np.float64],
    shape: tuple[int, int],
    pixel_mm: tuple[float, float],
    model: StreakModel,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """The streak error of one slice, HU, shape (rows, columns).

    Parameters
    ----------
    rows, columns : ndarray of shape (n,), int
        Pixels of the slice that hold metal.
    mu_excess_per_mm : ndarray of shape (n,)
        Their attenuation above tissue: mu of the metal times its covered fraction, 1/mm.
    shape : (int, int)
        Rows and columns of the slice.
    pixel_mm : (float, float)
        Row and column spacing, mm.
    model : StreakModel
    rng : numpy Generator
        For the photon-starvation noise.
    """
    n_r, n_c = shape
    d_r, d_c = pixel_mm
    bin_mm = min(d_r, d_c)
    factor = max(1, math.ceil(max(n_r, n_c) / model.max_pixels))
    half_diagonal = 0.5 * math.hypot(n_r * d_r, n_c * d_c)
    n_coarse_bins = 2 * math.ceil(half_diagonal / (bin_mm * factor)) + 2
    n_bins = n_coarse_bins * factor
    thetas = np.arange(model.angles) * (math.pi / model.angles)
    x = (columns - (n_c - 1) / 2.0) * d_c
    y = (rows - (n_r - 1) / 2.0) * d_r
    p = _metal_sinogram(x, y, mu_excess_per_mm * d_r * d_c, thetas, n_bins, bin_mm)
    kappa = model.kappa
    measured = (-np.expm1(-kappa * p)) / kappa
    if model.starvation_p is not None:
        np.minimum(measured, model.starvation_p, out=measured)
    error = measured - p
    sd = np.minimum(model.eta * np.expm1(model.gamma * np.minimum(p, model.p_cap)), _ONE_PHOTON_SD)
    error += sd * rng.standard_normal(p.shape)
    coarse = error.reshape(model.angles, n_coarse_bins, factor).mean(axis=2) * model.strength
    tau = bin_mm * factor
    kernel = _ramp_kernel(n_coarse_bins, tau)
    size = 1 << (3 * n_coarse_bins).bit_length()
    # Ram-Lak apodised with a Hann window: the ringing of a bare ramp at the coarse grid is not CT-like.
    hann = 1.0 - model.hann * 0.5 * (1.0 - np.cos(np.pi * np.arange(size // 2 + 1) / (size // 2)))
    spectrum = np.fft.rfft(coarse, size, axis=1) * (np.fft.rfft(kernel, size) * hann)
    filtered = tau * np.fft.irfft(spectrum, size, axis=1)[:, n_coarse_bins : 2 * n_coarse_bins]
    xc = ((np.arange(math.ceil(n_c / factor)) + 0.5) * factor - 0.5 - (n_c - 1) / 2.0) * d_c
    yc = ((np.arange(math.ceil(n_r / factor)) + 0.5) * factor - 0.5 - (n_r - 1) / 2.0) * d_r
    image = backproject(filtered, thetas, xc, yc, tau).astype(np.float32)
    if factor > 1:
        image = _interpolation_matrix(n_r, factor) @ image @ _interpolation_matrix(n_c, factor).T
    hu: NDArray[np.float32] = image * np.float32(1000.0 / MU_WATER_PER_MM)
    return hu
