"""Where a seed lies along the slice axis of thick slices, from how much of it each slice sees.

A slice of thickness ``T`` sees an object through its slice sensitivity profile (SSP): the
DICOM header gives its full width at half maximum (Slice Thickness, PS3.3 C.7.6.2), not its
shape. With contiguous slices the slices' centroid (their positions weighted by how much of
the seed each sees) moves with the seed only where the profiles overlap: it is a staircase
smoothed by the profile's edges. A seed 0.8 mm thin lying in a slice whose profile is flat
over its middle (axial scans, a trapezoid) shows the same sums anywhere in that middle; the
centroid pulls every seed towards its slice's centre, up to the flat top's half width. The
edges of helical profiles are Gaussian-like and give the centroid more slope.

So the centroid is inverted through each profile a scanner may have (FWHM = ``T``: the
slice's box convolved with a Gaussian of sigma 0.2-0.3 T, helical; or with a box of 0.2-0.6 T,
axial trapezoids), over the offsets that the measured centroid allows within its noise; the
seed is placed at the middle of all of them (the least worst error over the profiles).

The seed's own extent along the slice axis (its axis' projection plus its diameter across)
enters each profile's prediction: a steep seed spans slices by itself.

References
----------
Polacin A, Kalender WA, Marchal G. Evaluation of section sensitivity profiles and image noise
in spiral CT. Radiology 1992;185:29-35 (helical profiles against axial ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "PROFILES", "SliceStack", "SliceSums", "matched_slice_sums", "offset_in_slice_mm",
    "predicted_centroid_mm",
]  # fmt: skip

#: The slice sensitivity profiles a seed's position is robust to, as (edge, width in slice
#: thicknesses): the slice's box convolved with a Gaussian of that sigma, or with a box of
#: that width. Each has a FWHM of one slice thickness and, with contiguous slices, sums to 1.
PROFILES: tuple[tuple[str, float], ...] = (
    ("gaussian", 0.2), ("gaussian", 0.25), ("gaussian", 0.3),
    ("box", 0.2), ("box", 0.4), ("box", 0.6),
)  # fmt: skip

_STEP = 0.02  # of a slice thickness: the sampling of the profiles along the slice axis
_OFFSETS = np.linspace(-0.5, 0.5, 101)  # the offsets from the slice centre tried, slice thicknesses


@dataclass(frozen=True, eq=False)
class SliceSums:
    """How much of a seed each slice sees, by a filter matched to its in-plane footprint.

    The amplitude of slice ``index[i]`` is ``signal[i] / weight[i]`` (1 where a slice sees
    all of the footprint's excess), its noise's sd ``sqrt(noise[i]) / weight[i]``. Kept as
    sums so that two parts of one seed add up (:meth:`joined`).
    """

    index: NDArray[np.int64]  # the slices' indices in the volume
    signal: NDArray[np.float64]  # sum over the footprint of template x (HU - the slice's background)
    weight: NDArray[np.float64]  # sum of template^2 over the slice's usable pixels
    noise: NDArray[np.float64]  # sum of template^2 x the slice's noise variance

    def amplitudes(self) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        """The slices' indices, amplitudes and their noise sds (slices without usable pixels left out)."""
        used = self.weight > 0
        weight = self.weight[used]
        return self.index[used], self.signal[used] / weight, np.sqrt(self.noise[used]) / weight

    def joined(self, other: SliceSums) -> SliceSums:
        """The sums of two parts of one seed, slice by slice."""
        index = np.union1d(self.index, other.index)
        sums = []
        for name in ("signal", "weight", "noise"):
            total = np.zeros(len(index))
            for part in (self, other):
                np.add.at(total, np.searchsorted(index, part.index), getattr(part, name))
            sums.append(total)
        return SliceSums(index, *sums)


def matched_slice_sums(
    values: NDArray[np.float32], background_hu: NDArray[np.float64], noise_sd_hu: NDArray[np.float64],
    template: NDArray[np.float64], usable: NDArray[np.bool_], first_slice: int,
) -> SliceSums:
    """Each slice's sums of its excess over its background weighted by an in-plane template.

    Parameters
    ----------
    values : ndarray of shape (S, R, C)
        HU of a box of the volume around the seed.
    background_hu, noise_sd_hu : ndarray of shape (S,)
        Each slice's background level and noise sd there.
    template : ndarray of shape (R, C)
        The seed's in-plane footprint: its excess summed over the slices (the matched filter;
        the signed excess is summed, so noise adds nothing on average, unlike clipped excess).
    usable : ndarray of bool, shape (S, R, C)
        Pixels that belong to no other candidate or needle.
    first_slice : int
        The box's first slice's index in the volume.
    """
    squared = template * template
    excess = values.astype(np.float64) - background_hu[:, None, None]
    signal = np.einsum("srp,rp->s", np.where(usable, excess, 0.0), template)
    weight = np.einsum("srp,rp->s", usable.astype(np.float64), squared)
    noise = weight * noise_sd_hu.astype(np.float64) ** 2
    index = np.arange(first_slice, first_slice + values.shape[0], dtype=np.int64)
    return SliceSums(index, signal, weight, noise)


@dataclass(frozen=True, eq=False)
class SliceStack:
    """A region's box on thick slices, kept so that any part of its footprint can be matched.

    ``template`` is the region's in-plane footprint (its excess summed over the slices);
    :meth:`sums` matches a part of it (a seed of a cluster) over every slice.
    """

    values: NDArray[np.float32]  # (S, R, C) HU
    background_hu: NDArray[np.float64]  # (S,)
    noise_sd_hu: NDArray[np.float64]  # (S,)
    template: NDArray[np.float64]  # (R, C)
    usable: NDArray[np.bool_]  # (S, R, C): pixels of no other candidate or needle
    first_index: tuple[int, int, int]  # the box's first voxel's index in the volume

    def sums(self, part: NDArray[np.bool_] | None = None) -> SliceSums:
        """The matched sums of the footprint's pixels ``part`` (R, C; all of them by default)."""
        template = self.template if part is None else np.where(part, self.template, 0.0)
        return matched_slice_sums(self.values, self.background_hu, self.noise_sd_hu, template, self.usable,
                                  self.first_index[0])  # fmt: skip


def _box(z: NDArray[np.float64], width: float) -> NDArray[np.float64]:
    if width < _STEP:
        kernel = np.zeros_like(z)
        kernel[len(z) // 2] = 1.0
        return kernel
    # Edge samples weighted by how much of them is inside: the box's area is exactly its width.
    inside: NDArray[np.float64] = np.clip((width / 2.0 - np.abs(z)) / _STEP + 0.5, 0.0, 1.0)
    return inside


def _kernel(z: NDArray[np.float64], edge: str, width: float) -> NDArray[np.float64]:
    if edge == "box" or width < _STEP:
        return _box(z, width)
    return np.exp(-0.5 * (z / width) ** 2)


def _convolved(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.convolve(a, b, mode="same")
    total = float(out.sum())
    result: NDArray[np.float64] = out / total if total > 0 else out
    return result


@lru_cache(maxsize=512)
def _centroid_curve(edge: str, width: float, extent: float, across: float) -> NDArray[np.float64]:
    """The slices' centroid (slice thicknesses from the nearest slice's centre) at each of ``_OFFSETS``.

    Lengths in slice thicknesses: the profile's edge ``width``, the seed's ``extent`` along
    the slice axis and its diameter ``across`` (a uniform segment blurred by a box).
    """
    z = np.arange(-3.0, 3.0 + _STEP / 2, _STEP)
    profile = _convolved(_box(z, 1.0), _kernel(z, edge, width))
    seed = _convolved(_box(z, extent), _box(z, across))
    # How much of a seed centred at u a slice centred at 0 sees: the profile correlated with it.
    seen = np.convolve(profile, seed[::-1], mode="same")
    slices = np.array([-1.0, 0.0, 1.0])
    sums = np.interp(slices[None, :] - _OFFSETS[:, None], z, seen, left=0.0, right=0.0)
    curve: NDArray[np.float64] = (sums @ slices) / np.maximum(sums.sum(axis=1), 1e-12)
    return curve


def predicted_centroid_mm(
    offset_mm: float, *, thickness_mm: float, extent_mm: float, diameter_mm: float, edge: str, width: float
) -> float:
    """The slices' centroid a seed at ``offset_mm`` from a slice's centre shows through one profile, mm.

    Parameters
    ----------
    offset_mm : float
        The seed's centre along the slice axis from the centre of its slice, within half a thickness.
    thickness_mm : float
        The slice thickness and spacing (contiguous slices).
    extent_mm, diameter_mm : float
        The seed's axis' length along the slice axis, and its diameter across it projected there.
    edge, width : str, float
        One of :data:`PROFILES`.
    """
    curve = _centroid_curve(edge, width, _rounded(extent_mm / thickness_mm),
                            _rounded(diameter_mm / thickness_mm))  # fmt: skip
    return float(np.interp(offset_mm / thickness_mm, _OFFSETS, curve)) * thickness_mm


def offset_in_slice_mm(
    centroid_mm: float, tolerance_mm: float, *, thickness_mm: float, extent_mm: float, diameter_mm: float
) -> tuple[float, float]:
    """The seed's offset from its slice's centre along the slice axis, mm, from the slices' centroid.

    Parameters
    ----------
    centroid_mm : float
        The centroid of the slice axis positions of the seed's slice and its two neighbours,
        weighted by how much of the seed each sees, from the centre of the slice seeing most.
    tolerance_mm : float
        How far the measured centroid may be from a profile's prediction (its noise), mm.
    thickness_mm : float
        The slice thickness and spacing.
    extent_mm, diameter_mm : float
        The seed's axis' length along the slice axis (4.5 mm x |cos| of its angle to it) and
        its diameter projected there (0.8 mm x |sin|).

    Returns
    -------
    offset_mm : float
        The middle of the offsets, within half a slice, that any of :data:`PROFILES` allows.
    uncertainty_mm : float
        Half their range: how far the seed may be from ``offset_mm`` whichever the profile.

    Raises
    ------
    ValueError
        If the thickness is not positive or a length or the tolerance is negative.
    """
    if not thickness_mm > 0:
        raise ValueError(f"thickness_mm must be positive, got {thickness_mm}")
    if min(tolerance_mm, extent_mm, diameter_mm) < 0:
        raise ValueError(
            f"tolerance_mm, extent_mm and diameter_mm must not be negative, got "
            f"{tolerance_mm}, {extent_mm}, {diameter_mm}"
        )
    measured = centroid_mm / thickness_mm
    tolerance = tolerance_mm / thickness_mm
    low, high = np.inf, -np.inf
    for edge, width in PROFILES:
        curve = _centroid_curve(edge, width, _rounded(extent_mm / thickness_mm),
                                _rounded(diameter_mm / thickness_mm))  # fmt: skip
        distance = np.abs(curve - measured)
        allowed = _OFFSETS[distance <= max(float(distance.min()), tolerance) + 1e-12]
        low, high = min(low, float(allowed.min())), max(high, float(allowed.max()))
    return 0.5 * (low + high) * thickness_mm, 0.5 * (high - low) * thickness_mm


def _rounded(value: float) -> float:
    """Lengths rounded to the profiles' sampling (so that the curves are cached)."""
    return round(round(float(value) / _STEP) * _STEP, 6)
