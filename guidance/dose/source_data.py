"""TG-43U1 source data of seed models, read from data files with their provenance.

Each seed model is one JSON file in ``guidance/dose/sources/``: the dose-rate
constant, the effective (active) length used by the line-source geometry
factor, the half-life, the radial dose function g_L(r), the 2D anisotropy
function F(r, theta) and the 1D anisotropy factor phi_an(r), plus where the
numbers come from (paper, tables, which public copy they were transcribed
from). Nothing here holds dosimetry constants in code.

Where no public copy of the consensus phi_an(r) was found, the file says
``"origin": "derived"`` and the loader derives phi_an at the F radii from F and
G_L as the solid-angle-weighted mean of the dose rate (the definition of phi_an
in TG-43U1); :attr:`SourceData.phi_an_origin` records it.

References
----------
Rivard MJ et al., Update of AAPM Task Group No. 43 Report: a revised AAPM
protocol for brachytherapy dose calculations, Med. Phys. 31, 633-674 (2004).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance.dose.tg43 import derive_anisotropy_factor

__all__ = ["SourceData", "available_source_models", "load_source_data", "source_data_from_dict"]

logger = logging.getLogger(__name__)

_PROVENANCE_KEYS = ("reference", "tables", "public_copy")


@dataclass(frozen=True, eq=False)
class SourceData:
    """TG-43U1 parameters of one seed model (arrays read-only).

    Parameters
    ----------
    model_id : str
        Identifier ("6711", "IAI-125A", ...).
    name, manufacturer : str
    isotope : str
        "I-125", "Pd-103" or "Cs-131".
    aliases : tuple of str
        Other names that resolve to this model (case-insensitive).
    dose_rate_constant_cgy_h_u : float
        Lambda, cGy h^-1 U^-1 (TG-43U1 eq. 3).
    effective_length_cm : float
        L of the line-source geometry factor G_L (TG-43U1 eq. 4).
    half_life_days : float
    g_r_cm, g_values : ndarray of shape (n,)
        Radial dose function g_L(r) nodes.
    f_r_cm : ndarray of shape (m,)
    f_theta_deg : ndarray of shape (t,)
        0-90 (symmetric about the transverse plane) or 0-180 degrees.
    f_values : ndarray of shape (t, m)
        F(r, theta), rows by angle.
    phi_an_r_cm, phi_an_values : ndarray of shape (p,)
        1D anisotropy factor phi_an(r).
    phi_an_origin : str
        "published" or "derived".
    provenance : dict of str to str
        reference, tables, public_copy, notes.
    alias_notes : str
        Why the aliases map here.
    """

    model_id: str
    name: str
    manufacturer: str
    isotope: str
    aliases: tuple[str, ...]
    dose_rate_constant_cgy_h_u: float
    effective_length_cm: float
    half_life_days: float
    g_r_cm: NDArray[np.float64]
    g_values: NDArray[np.float64]
    f_r_cm: NDArray[np.float64]
    f_theta_deg: NDArray[np.float64]
    f_values: NDArray[np.float64]
    phi_an_r_cm: NDArray[np.float64]
    phi_an_values: NDArray[np.float64]
    phi_an_origin: str
    provenance: dict[str, str]
    alias_notes: str = ""

    @property
    def f_symmetric(self) -> bool:
        """True when F is tabulated 0-90 degrees (mirror for 90-180)."""
        return bool(self.f_theta_deg[-1] <= 90.0)

    @property
    def mean_life_h(self) -> float:
        """tau = T1/2 / ln 2 in hours."""
        return float(self.half_life_days * 24.0 / np.log(2.0))


def _array(values: Any, what: str, origin: str) -> NDArray[np.float64]:
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{origin}: {what} is not numeric: {exc}") from exc
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{origin}: {what} contains NaN or infinite values")
    array.setflags(write=False)
    return array


def _increasing(array: NDArray[np.float64], what: str, origin: str) -> None:
    if array.ndim != 1 or array.size < 2 or np.any(np.diff(array) <= 0):
        raise ValueError(f"{origin}: {what} must be a strictly increasing list of >= 2 numbers; got {array}")


def _positive(value: Any, what: str, origin: str) -> float:
    number = float(value)
    if not (np.isfinite(number) and number > 0):
        raise ValueError(f"{origin}: {what} must be a positive number; got {value!r}")
    return number


def _radial(raw: dict[str, Any], origin: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r_cm = _array(raw["r_cm"], "radial_dose_function.r_cm", origin)
    values = _array(raw["g_l"], "radial_dose_function.g_l", origin)
    _increasing(r_cm, "radial_dose_function.r_cm", origin)
    if values.shape != r_cm.shape or np.any(values <= 0) or r_cm[0] <= 0:
        raise ValueError(f"{origin}: g_l must be positive, one value per radius (r > 0); got {values.shape}")
    return r_cm, values


def _anisotropy(
    raw: dict[str, Any], origin: str
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    r_cm = _array(raw["r_cm"], "anisotropy_function.r_cm", origin)
    theta = _array(raw["theta_deg"], "anisotropy_function.theta_deg", origin)
    values = _array(raw["f_rows_by_theta"], "anisotropy_function.f_rows_by_theta", origin)
    _increasing(r_cm, "anisotropy_function.r_cm", origin)
    _increasing(theta, "anisotropy_function.theta_deg", origin)
    if theta[0] != 0.0 or theta[-1] not in (90.0, 180.0):
        raise ValueError(
            f"{origin}: F angles must run from 0 to 90 or 0 to 180 degrees; got {theta.tolist()}"
        )
    if values.shape != (theta.size, r_cm.size) or np.any(values < 0):
        raise ValueError(
            f"{origin}: F must be non-negative with shape (angles, radii) = {(theta.size, r_cm.size)}; "
            f"got {values.shape}"
        )
    return r_cm, theta, values


def source_data_from_dict(raw: dict[str, Any], origin: str = "<dict>") -> SourceData:
    """Validate one parsed source data file and build its :class:`SourceData`.

    Raises
    ------
    ValueError
        Naming ``origin`` and the field that is missing or malformed.
    """
    try:
        g_r, g_values = _radial(raw["radial_dose_function"], origin)
        f_r, f_theta, f_values = _anisotropy(raw["anisotropy_function"], origin)
        length = _positive(raw["effective_length_cm"], "effective_length_cm", origin)
        factor = raw["anisotropy_factor"]
        provenance = {str(k): str(v) for k, v in raw["provenance"].items()}
        model_id = str(raw["model_id"]).strip()
        dose_rate_constant = _positive(
            raw["dose_rate_constant_cgy_h_u"], "dose_rate_constant_cgy_h_u", origin
        )
        half_life = _positive(raw["half_life_days"], "half_life_days", origin)
    except KeyError as exc:
        raise ValueError(f"{origin}: missing field {exc}") from exc
    missing = [key for key in _PROVENANCE_KEYS if not provenance.get(key)]
    if missing or not model_id:
        raise ValueError(f"{origin}: model_id and provenance fields {list(_PROVENANCE_KEYS)} are required")
    if factor.get("origin") == "derived":
        phi_r = f_r
        phi_values = derive_anisotropy_factor(f_r, f_theta, f_values, length)
        phi_values.setflags(write=False)
    else:
        phi_r = _array(factor["r_cm"], "anisotropy_factor.r_cm", origin)
        phi_values = _array(factor["phi_an"], "anisotropy_factor.phi_an", origin)
        _increasing(phi_r, "anisotropy_factor.r_cm", origin)
        if phi_values.shape != phi_r.shape or np.any(phi_values <= 0):
            raise ValueError(f"{origin}: phi_an must be positive, one value per radius")
    return SourceData(
        model_id=model_id,
        name=str(raw.get("name", model_id)),
        manufacturer=str(raw.get("manufacturer", "")),
        isotope=str(raw.get("isotope", "")),
        aliases=tuple(str(a) for a in raw.get("aliases", ())),
        dose_rate_constant_cgy_h_u=dose_rate_constant,
        effective_length_cm=length,
        half_life_days=half_life,
        g_r_cm=g_r,
        g_values=g_values,
        f_r_cm=f_r,
        f_theta_deg=f_theta,
        f_values=f_values,
        phi_an_r_cm=phi_r,
        phi_an_values=phi_values,
        phi_an_origin="derived" if factor.get("origin") == "derived" else "published",
        provenance=provenance,
        alias_notes=str(raw.get("alias_notes", "")),
    )


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


@functools.cache
def _library() -> dict[str, SourceData]:
    """All bundled models keyed by the normalised id and aliases (read once, on first use)."""
    library: dict[str, SourceData] = {}
    folder = resources.files("guidance.dose") / "sources"
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".json"):
            continue
        origin = f"guidance/dose/sources/{entry.name}"
        try:
            raw = json.loads(entry.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{origin}: not valid JSON: {exc}") from exc
        data = source_data_from_dict(raw, origin)
        for name in (data.model_id, *data.aliases):
            key = _key(name)
            if key in library and library[key] is not data:
                raise ValueError(f"{origin}: name {name!r} is already used by model {library[key].model_id}")
            library[key] = data
        logger.debug("loaded TG-43 source data %s from %s", data.model_id, origin)
    return library


def available_source_models() -> tuple[str, ...]:
    """Model ids of the bundled source data files, sorted."""
    return tuple(sorted({data.model_id for data in _library().values()}))


def load_source_data(model: str | SourceData) -> SourceData:
    """The source data of ``model`` (id or alias, case-insensitive); a SourceData passes through.

    Raises
    ------
    KeyError
        For an unknown name, listing the available models and their aliases.
    """
    if isinstance(model, SourceData):
        return model
    library = _library()
    data = library.get(_key(str(model)))
    if data is None:
        known = {d.model_id: list(d.aliases) for d in library.values()}
        raise KeyError(
            f"unknown seed model {model!r}; available models (with aliases): {known}. "
            "Map a planning system's source name explicitly (e.g. source_map={'selectSeed': '6711'})."
        )
    return data
