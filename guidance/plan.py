"""Plan types of a permanent seed implant: sources, seeds, needles, the plan.

Positions are LPS millimetres in the plan's frame of reference; air-kerma
strength is in U (1 U = 1 uGy m^2 h^-1 = 1 cGy cm^2 h^-1, AAPM TG-43U1).
Activity in mCi is accepted only through :func:`air_kerma_strength_from_mci`,
an explicit conversion with its factor stated.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from guidance.structure import Structure, StructureRole

__all__ = [
    "Isotope",
    "Needle",
    "Plan",
    "Seed",
    "SourceModel",
    "air_kerma_strength_from_mci",
    "unit_direction",
]


class Isotope(enum.Enum):
    """Radionuclides of permanent seed implants, by their DICOM SourceIsotopeName."""

    I125 = "I-125"
    PD103 = "Pd-103"
    CS131 = "Cs-131"

    @classmethod
    def from_dicom(cls, name: str) -> Isotope:
        """Parse the spellings planning systems write: "I-125", "I125", "125I", "Iodine-125"..."""
        key = "".join(ch for ch in name.upper() if ch.isalnum())
        aliases = {
            "I125": cls.I125, "125I": cls.I125, "IODINE125": cls.I125,
            "PD103": cls.PD103, "103PD": cls.PD103, "PALLADIUM103": cls.PD103,
            "CS131": cls.CS131, "131CS": cls.CS131, "CESIUM131": cls.CS131, "CAESIUM131": cls.CS131,
        }  # fmt: skip
        if key not in aliases:
            raise ValueError(
                f"isotope {name!r} is not a permanent-implant seed isotope "
                f"(expected one of {[i.value for i in cls]})"
            )
        return aliases[key]

    @property
    def half_life_days(self) -> float:
        """Consensus half-life (AAPM TG-43U1 Table I; Cs-131 from TG-43U1S1 addendum)."""
        return {Isotope.I125: 59.40, Isotope.PD103: 16.991, Isotope.CS131: 9.7}[self]


# Apparent activity -> air-kerma strength for I-125 seeds sold in mCi:
# 1.270 U per mCi (the factor used by TG-43 for I-125, apparent activity).
_U_PER_MCI = {Isotope.I125: 1.270, Isotope.PD103: 1.293}


def air_kerma_strength_from_mci(activity_mci: float, isotope: Isotope | str) -> float:
    """Convert apparent activity (mCi) to air-kerma strength (U).

    Factors: I-125 1.270 U/mCi, Pd-103 1.293 U/mCi (air-kerma rate constants
    of the apparent-activity convention, AAPM TG-43 (1995); the vendor's own
    factor wins where the certificate gives one).

    Raises
    ------
    ValueError
        For a negative activity or an isotope without an agreed factor (Cs-131:
        give its strength in U from the certificate).
    """
    iso = Isotope(isotope) if isinstance(isotope, str) else isotope
    if iso not in _U_PER_MCI:
        raise ValueError(f"no agreed mCi -> U factor for {iso.value}; give the strength in U")
    if not math.isfinite(activity_mci) or activity_mci < 0:
        raise ValueError(f"activity_mci must be a finite non-negative number; got {activity_mci}")
    return activity_mci * _U_PER_MCI[iso]


def unit_direction(direction: ArrayLike | None) -> NDArray[np.float64]:
    """Normalise a direction to unit length; None or NaN means unknown (NaN row)."""
    if direction is None:
        return np.full(3, np.nan)
    vector = np.asarray(direction, dtype=np.float64).reshape(3)
    if np.any(np.isnan(vector)):
        return np.full(3, np.nan)
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"direction {vector.tolist()} has no length; use None for 'unknown'")
    return vector / norm


@dataclass(frozen=True)
class SourceModel:
    """Reference to a seed model: which TG-43 data set describes it.

    Parameters
    ----------
    model_id : str
        Identifier of the dosimetry data (e.g. "6711", "IAI-125A"), or what the
        plan calls the source when it names no model.
    isotope : Isotope
    half_life_days : float
        As given by the plan (or the consensus value).
    manufacturer : str
    """

    model_id: str
    isotope: Isotope
    half_life_days: float
    manufacturer: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "isotope", Isotope(self.isotope))
        if not (self.half_life_days > 0 and math.isfinite(self.half_life_days)):
            raise ValueError(f"half_life_days must be positive; got {self.half_life_days}")

    @property
    def mean_life_h(self) -> float:
        """Mean life tau = T1/2 / ln 2, in hours (total dose = initial rate x tau)."""
        return self.half_life_days * 24.0 / math.log(2.0)


@dataclass(frozen=True, eq=False)
class Seed:
    """One seed: where it is, which way it points, how strong it is.

    Parameters
    ----------
    position_mm : ndarray of shape (3,)
        Centre of the seed, LPS mm.
    direction : ndarray of shape (3,)
        Unit vector along the seed's long axis; NaN for "orientation unknown"
        (the dose engine then uses the TG-43 point-source form).
    air_kerma_strength_u : float
        At the plan's strength reference date.
    source_model_id : str
        Key into :attr:`Plan.sources`.
    needle_index : int or None
        Index into :attr:`Plan.needles` of the needle that carries it.
    """

    position_mm: NDArray[np.float64]
    direction: NDArray[np.float64]
    air_kerma_strength_u: float
    source_model_id: str
    needle_index: int | None = None

    def __post_init__(self) -> None:
        position = np.array(self.position_mm, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(position)):
            raise ValueError(f"seed position must be finite; got {position.tolist()}")
        position.setflags(write=False)
        direction = unit_direction(self.direction)
        direction.setflags(write=False)
        object.__setattr__(self, "position_mm", position)
        object.__setattr__(self, "direction", direction)
        if not (self.air_kerma_strength_u >= 0 and math.isfinite(self.air_kerma_strength_u)):
            raise ValueError(f"air_kerma_strength_u must be >= 0; got {self.air_kerma_strength_u}")

    @property
    def orientation_known(self) -> bool:
        return not bool(np.any(np.isnan(self.direction)))


@dataclass(frozen=True, eq=False)
class Needle:
    """A needle track: entry at the skin (or template) and tip, LPS mm.

    Parameters
    ----------
    entry_mm, tip_mm : ndarray of shape (3,)
    seed_indices : tuple of int
        Indices into :attr:`Plan.seeds` of the seeds dropped from this needle,
        from the tip back towards the entry.
    number : int
        Channel number in the plan (1-based), 0 if not from DICOM.
    label : str
    """

    entry_mm: NDArray[np.float64]
    tip_mm: NDArray[np.float64]
    seed_indices: tuple[int, ...] = ()
    number: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        for name in ("entry_mm", "tip_mm"):
            point = np.array(getattr(self, name), dtype=np.float64).reshape(3)
            if not np.all(np.isfinite(point)):
                raise ValueError(f"needle {name} must be finite; got {point.tolist()}")
            point.setflags(write=False)
            object.__setattr__(self, name, point)
        object.__setattr__(self, "seed_indices", tuple(int(i) for i in self.seed_indices))

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.tip_mm - self.entry_mm))

    @property
    def direction(self) -> NDArray[np.float64]:
        """Unit vector from entry to tip (NaN if entry and tip coincide)."""
        length = self.length_mm
        if length < 1e-9:
            return np.full(3, np.nan)
        return (self.tip_mm - self.entry_mm) / length


@dataclass(frozen=True, eq=False)
class Plan:
    """A permanent seed implant plan in one frame of reference.

    Parameters
    ----------
    frame_of_reference_uid : str
        "" when the plan does not say (some planning systems omit it).
    seeds : tuple of Seed
    needles : tuple of Needle
    sources : dict of str to SourceModel
        Keyed by :attr:`Seed.source_model_id`.
    structures : tuple of Structure
    prescription_gy : float or None
        Total prescribed dose to the target.
    strength_reference_datetime : datetime or None
        When the seeds had the air-kerma strengths given.
    planning_ct_series_uid : str
        SeriesInstanceUID of the planning CT ("" if unknown).
    structure_set_uid : str
        SOPInstanceUID of the RT Structure Set the plan refers to ("" if none).
    sop_instance_uid : str
        SOPInstanceUID of the RT Plan ("" if not from DICOM).
    label : str
    treatment_type : str
        BrachyTreatmentType as written (LDR, MANUAL, PERMANENT).
    """

    frame_of_reference_uid: str
    seeds: tuple[Seed, ...]
    needles: tuple[Needle, ...] = ()
    sources: dict[str, SourceModel] = field(default_factory=dict)
    structures: tuple[Structure, ...] = ()
    prescription_gy: float | None = None
    strength_reference_datetime: dt.datetime | None = None
    planning_ct_series_uid: str = ""
    structure_set_uid: str = ""
    sop_instance_uid: str = ""
    label: str = ""
    treatment_type: str = "LDR"

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "needles", tuple(self.needles))
        object.__setattr__(self, "structures", tuple(self.structures))
        missing = sorted({s.source_model_id for s in self.seeds} - set(self.sources))
        if missing:
            raise ValueError(f"seeds refer to source models {missing} that are not in Plan.sources")
        for k, needle in enumerate(self.needles):
            bad = [i for i in needle.seed_indices if not 0 <= i < len(self.seeds)]
            if bad:
                raise ValueError(f"needle {k} refers to seed indices {bad} outside 0..{len(self.seeds) - 1}")
        if self.prescription_gy is not None and not (self.prescription_gy > 0):
            raise ValueError(f"prescription_gy must be positive; got {self.prescription_gy}")

    @property
    def seed_positions_mm(self) -> NDArray[np.float64]:
        """Seed centres, shape (n, 3), LPS mm."""
        return np.array([s.position_mm for s in self.seeds], dtype=np.float64).reshape(-1, 3)

    @property
    def seed_directions(self) -> NDArray[np.float64]:
        """Seed axes, shape (n, 3), unit vectors or NaN rows for unknown orientation."""
        return np.array([s.direction for s in self.seeds], dtype=np.float64).reshape(-1, 3)

    @property
    def seed_strengths_u(self) -> NDArray[np.float64]:
        """Air-kerma strength of each seed at the reference date, shape (n,), U."""
        return np.array([s.air_kerma_strength_u for s in self.seeds], dtype=np.float64)

    @property
    def isotopes(self) -> set[Isotope]:
        return {self.sources[s.source_model_id].isotope for s in self.seeds}

    def structures_with_role(self, role: StructureRole | str) -> tuple[Structure, ...]:
        wanted = StructureRole(role)
        return tuple(s for s in self.structures if s.role is wanted)

    def structure(self, name: str) -> Structure:
        """The structure called ``name`` (case-insensitive).

        Raises
        ------
        KeyError
            Naming the structures the plan does have.
        """
        for candidate in self.structures:
            if candidate.name.lower() == name.lower():
                return candidate
        raise KeyError(f"no structure {name!r} in plan; it has {[s.name for s in self.structures]}")
