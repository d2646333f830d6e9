"""Dose metrics of an implant: target coverage, conformity, homogeneity, organ-at-risk doses.

Target (each structure with role TARGET), with prescription dose P:

- D90, D50, D100: dose received by at least 90, 50, 100% of the target (Gy);
- V100, V150, V200: part of the target receiving at least 100, 150, 200% of P,
  in % of the target volume and in cm^3;
- DHI = (V100 - V150) / V100, the dose homogeneity index;
- COIN = c1 x c2, the conformal index of Baltas et al. 1998, with
  c1 = PTV_ref / PTV (the target's fraction covered by P) and c2 = PTV_ref /
  V_ref, V_ref the volume enclosed by the prescription isodose. V_ref is
  measured within the whole dose grid, intersected with the body outline (role
  EXTERNAL) when one is given with contours; if the prescription isodose
  reaches the grid's faces, V_ref may be underestimated (COIN overestimated)
  and the report says so. With several targets, each COIN uses the same V_ref
  (the isodose around all of them), so c2 is low by construction.

Organs at risk (role ORGAN_AT_RISK): D0.1cc, D1cc, D2cc (the dose the hottest
0.1, 1, 2 cm^3 receive at least), Dmax and Dmean. Dmax is the raw maximum
sample, singular when a seed lies in or next to the organ: D0.1cc is its robust
counterpart. A D_v of an organ smaller than v cm^3 is undefined (None).

References
----------
D. Baltas et al., "A conformal index (COIN) to evaluate implant quality and dose
specification in brachytherapy", Int J Radiat Oncol Biol Phys 40 (1998) 515-524.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from guidance import __version__
from guidance.dose.dvh import DoseVolumeHistogramCurve, cumulative_dvh, isodose_volume
from guidance.dose.limits import DoseLimits, LimitStatus, limit_status
from guidance.provenance import Provenance
from guidance.structure import Structure, StructureRole
from guidance.volume import Volume

__all__ = [
    "DoseReport",
    "LimitCheck",
    "OrganMetrics",
    "Provenance",
    "TargetMetrics",
    "evaluate_plan_dose",
    "organ_metrics",
    "target_metrics",
]

logger = logging.getLogger(__name__)

STAGE = "dose_metrics"


@dataclass(frozen=True)
class TargetMetrics:
    """Coverage, homogeneity and conformity of one target (see the module docstring)."""

    structure_name: str
    roi_number: int
    prescription_gy: float
    volume_cc: float
    d90_gy: float
    d50_gy: float
    d100_gy: float
    d90_percent_of_prescription: float
    v100_percent: float
    v100_cc: float
    v150_percent: float
    v150_cc: float
    v200_percent: float
    v200_cc: float
    dhi: float
    coin: float
    c1: float
    c2: float
    reference_isodose_volume_cc: float
    reference_volume_within: str
    reference_isodose_truncated: bool
    min_dose_gy: float
    max_dose_gy: float
    mean_dose_gy: float

    def to_dict(self) -> dict[str, Any]:
        """Plain values (str, int, float, bool) for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class OrganMetrics:
    """Doses of one organ at risk; D_v of an organ smaller than v cm^3 is None."""

    structure_name: str
    roi_number: int
    volume_cc: float
    volume_outside_grid_cc: float
    d0_1cc_gy: float | None
    d1cc_gy: float | None
    d2cc_gy: float | None
    dmax_gy: float
    dmean_gy: float
    dmin_gy: float

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class LimitCheck:
    """One organ metric compared with its limit: allowed = limit - prior dose."""

    structure_name: str
    metric: str
    value_gy: float | None
    limit_gy: float
    prior_dose_gy: float
    allowed_gy: float
    status: LimitStatus

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (status as its string value)."""
        values = asdict(self)
        values["status"] = self.status.value
        return values


@dataclass(frozen=True)
class DoseReport:
    """Metrics of every target and organ at risk, limit checks, warnings and provenance."""

    prescription_gy: float
    targets: tuple[TargetMetrics, ...]
    organs: tuple[OrganMetrics, ...]
    checks: tuple[LimitCheck, ...]
    warnings: tuple[str, ...]
    provenance: Provenance
    dvhs: tuple[DoseVolumeHistogramCurve, ...] = field(default=(), compare=False, repr=False)

    @property
    def worst_status(self) -> LimitStatus:
        """FAIL if any check fails, else WARN if any warns, else PASS."""
        statuses = {check.status for check in self.checks}
        for status in (LimitStatus.FAIL, LimitStatus.WARN):
            if status in statuses:
                return status
        return LimitStatus.PASS

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists for result.json (the DVH curves are not included)."""
        return {
            "prescription_gy": self.prescription_gy,
            "targets": [t.to_dict() for t in self.targets],
            "organs": [o.to_dict() for o in self.organs],
            "checks": [c.to_dict() for c in self.checks],
            "worst_status": self.worst_status.value,
            "warnings": list(self.warnings),
            "provenance": self.provenance.to_dict(),
        }


def target_metrics(
    curve: DoseVolumeHistogramCurve,
    prescription_gy: float,
    reference_isodose_volume_cc: float,
    *,
    reference_volume_within: str = "",
    reference_isodose_truncated: bool = False,
) -> TargetMetrics:
    """Target metrics from its DVH and the prescription isodose volume V_ref (cm^3)."""
    _check_prescription(prescription_gy)
    if curve.truncated:
        raise ValueError(
            f"target {curve.structure_name!r}: {100 * curve.fraction_outside_grid:.1f}% of it lies outside "
            "the dose grid; target metrics need the whole target"
        )
    v100_cc = curve.volume_cc_at(prescription_gy)
    v150_cc = curve.volume_cc_at(1.5 * prescription_gy)
    c1 = v100_cc / curve.total_volume_cc
    c2 = v100_cc / reference_isodose_volume_cc if reference_isodose_volume_cc > 0 else 0.0
    d90 = curve.dose_at_percent(90.0)
    return TargetMetrics(
        structure_name=curve.structure_name,
        roi_number=curve.roi_number,
        prescription_gy=float(prescription_gy),
        volume_cc=curve.total_volume_cc,
        d90_gy=d90,
        d50_gy=curve.dose_at_percent(50.0),
        d100_gy=curve.dose_at_percent(100.0),
        d90_percent_of_prescription=100.0 * d90 / prescription_gy,
        v100_percent=100.0 * c1,
        v100_cc=v100_cc,
        v150_percent=curve.volume_percent_at(1.5 * prescription_gy),
        v150_cc=v150_cc,
        v200_percent=curve.volume_percent_at(2.0 * prescription_gy),
        v200_cc=curve.volume_cc_at(2.0 * prescription_gy),
        dhi=(v100_cc - v150_cc) / v100_cc if v100_cc > 0 else 0.0,
        coin=c1 * c2,
        c1=c1,
        c2=c2,
        reference_isodose_volume_cc=float(reference_isodose_volume_cc),
        reference_volume_within=reference_volume_within or "dose grid",
        reference_isodose_truncated=reference_isodose_truncated,
        min_dose_gy=curve.min_dose_gy,
        max_dose_gy=curve.max_dose_gy,
        mean_dose_gy=curve.mean_dose_gy,
    )


def organ_metrics(curve: DoseVolumeHistogramCurve) -> OrganMetrics:
    """Organ-at-risk metrics from its DVH (of the part inside the dose grid, if truncated)."""

    def dose_at(volume_cc: float) -> float | None:
        return curve.dose_at_cc(volume_cc) if volume_cc <= curve.total_volume_cc else None

    return OrganMetrics(
        structure_name=curve.structure_name,
        roi_number=curve.roi_number,
        volume_cc=curve.total_volume_cc,
        volume_outside_grid_cc=curve.volume_outside_grid_cc,
        d0_1cc_gy=dose_at(0.1),
        d1cc_gy=dose_at(1.0),
        d2cc_gy=dose_at(2.0),
        dmax_gy=curve.max_dose_gy,
        dmean_gy=curve.mean_dose_gy,
        dmin_gy=curve.min_dose_gy,
    )


def _check_prescription(prescription_gy: float) -> None:
    if isinstance(prescription_gy, bool) or not (math.isfinite(prescription_gy) and prescription_gy > 0):
        raise ValueError(f"prescription_gy must be a finite dose > 0 Gy; got {prescription_gy!r}")


def _checks(organ: OrganMetrics, role: StructureRole, limits: DoseLimits) -> list[LimitCheck]:
    checks = []
    for metric, limit_gy in sorted(limits.limits_for(organ.structure_name, role).items()):
        prior = limits.prior_for(organ.structure_name, metric)
        value = getattr(organ, metric)
        allowed = limit_gy - prior
        status = limit_status(value, allowed, limits.warn_margin_percent)
        checks.append(LimitCheck(organ.structure_name, metric, value, limit_gy, prior, allowed, status))
    return checks


def _external(structures: Sequence[Structure], notes: list[str]) -> Structure | None:
    outlines = [s for s in structures if s.role is StructureRole.EXTERNAL and not s.is_empty]
    if len(outlines) > 1:
        notes.append(f"several body outlines {[s.name for s in outlines]}: V_ref uses the first")
    return outlines[0] if outlines else None


#: Largest organ volume whose dose metric (D2cc) is reported.
_EXACT_UP_TO_CC = 2.0


def _organ_curves(
    dose: Volume, organs: Sequence[Structure], options: dict[str, Any], notes: list[str]
) -> list[DoseVolumeHistogramCurve]:
    curves = []
    beyond_gy = dose_beyond_grid_gy(dose)
    for organ in organs:
        curve = cumulative_dvh(dose, organ, allow_outside=True, **options)
        # The hottest 2 cc inside, all above what the dose reaches outside: D0.1cc..D2cc and Dmax are exact.
        if curve.truncated and curve.volume_cc_at(beyond_gy) < _EXACT_UP_TO_CC:
            notes.append(
                f"organ {organ.name!r}: {curve.volume_outside_grid_cc:.2f} cc "
                f"({100 * curve.fraction_outside_grid:.1f}%) outside the dose grid, where the dose may reach "
                f"{beyond_gy:.1f} Gy; its metrics are of the {curve.total_volume_cc:.2f} cc inside"
            )
        curves.append(curve)
    return curves


def dose_beyond_grid_gy(dose: Volume) -> float:
    """The most the dose reaches outside the grid: its maximum over the grid's faces, Gy.

    Seeds lie inside the dose grid, and away from sources a sum of TG-43 point-like
    fields falls off outward, so the dose beyond the faces stays below their maximum
    (for a 1/r^2 field exactly: it is subharmonic, so the maximum principle holds).
    """
    array = np.asarray(dose.array)
    faces = (array[[0, -1]], array[:, [0, -1]], array[:, :, [0, -1]])
    return float(max(face.max() for face in faces))


def _parameters(
    options: dict[str, Any], prescription_gy: float, limits: DoseLimits, dose: Volume
) -> dict[str, Any]:
    """The parameters of an evaluation, as plain values (provenance)."""
    return {
        **options,
        "prescription_gy": float(prescription_gy),
        "limits": {
            "by_role": {k: dict(v) for k, v in limits.by_role.items()},
            "by_name": {k: dict(v) for k, v in limits.by_name.items()},
            "prior_dose_gy": {k: dict(v) for k, v in limits.prior_dose_gy.items()},
            "warn_margin_percent": limits.warn_margin_percent,
        },
        "dose_grid_shape": list(dose.shape),
        "dose_grid_spacing_mm": [float(v) for v in dose.spacing_mm],
    }


def evaluate_plan_dose(
    dose: Volume,
    structures: Sequence[Structure],
    prescription_gy: float,
    limits: DoseLimits | None = None,
    *,
    bin_width_gy: float = 0.1,
    sampling_mm: float = 0.5,
    subsamples: int = 1,
) -> DoseReport:
    """Metrics of every target and organ at risk of an implant's dose, checked against limits.

    Parameters
    ----------
    dose : Volume
        Dose in Gy, shape (S, R, C), in the structures' frame of reference.
    structures : sequence of Structure
        Targets (role TARGET), organs at risk (ORGAN_AT_RISK) and optionally the
        body outline (EXTERNAL, bounds V_ref of COIN); others and empty ones are skipped.
    prescription_gy : float
        Prescription dose P, Gy.
    limits : DoseLimits, optional
        Organ-at-risk limits (none checked if not given).
    bin_width_gy, sampling_mm, subsamples
        DVH options, see :func:`guidance.dose.dvh.cumulative_dvh`.

    Returns
    -------
    DoseReport
        With the DVH curves, notes for the operator, and provenance (parameters, time).

    Raises
    ------
    DoseGridCoverageError
        If a target reaches outside the dose grid: its D90 would be wrong.
    ValueError
        No target, a bad prescription or option, mismatched frames.
    """
    started = time.perf_counter()
    _check_prescription(prescription_gy)
    limits = limits or DoseLimits()
    options: dict[str, Any] = {
        "bin_width_gy": bin_width_gy,
        "sampling_mm": sampling_mm,
        "subsamples": subsamples,
    }
    notes = [f"structure {s.name!r} has no contours: skipped" for s in structures if s.is_empty]
    targets = [s for s in structures if s.role is StructureRole.TARGET and not s.is_empty]
    organs = [s for s in structures if s.role is StructureRole.ORGAN_AT_RISK and not s.is_empty]
    if not targets:
        raise ValueError(f"no target (role TARGET with contours) among {[s.name for s in structures]}")
    body = _external(structures, notes)
    reference = isodose_volume(dose, prescription_gy, within=body, sampling_mm=sampling_mm)
    if reference.touches_grid_boundary:
        notes.append("the prescription isodose reaches the dose grid's faces: V_ref and COIN are uncertain")
    target_curves = [cumulative_dvh(dose, t, **options) for t in targets]
    organ_curves = _organ_curves(dose, organs, options, notes)
    target_results = tuple(
        target_metrics(
            curve,
            prescription_gy,
            reference.volume_cc,
            reference_volume_within=reference.within,
            reference_isodose_truncated=reference.touches_grid_boundary,
        )
        for curve in target_curves
    )
    organ_results = tuple(organ_metrics(curve) for curve in organ_curves)
    checks = tuple(
        check for organ in organ_results for check in _checks(organ, StructureRole.ORGAN_AT_RISK, limits)
    )
    for note in notes:
        logger.warning("%s", note)
    parameters = _parameters(options, prescription_gy, limits, dose)
    elapsed = time.perf_counter() - started
    logger.info("dose metrics of %d targets and %d organs in %.2f s", len(targets), len(organs), elapsed)
    return DoseReport(
        prescription_gy=float(prescription_gy),
        targets=target_results,
        organs=organ_results,
        checks=checks,
        warnings=tuple(notes),
        provenance=Provenance(STAGE, parameters, __version__, elapsed),
        dvhs=(*target_curves, *organ_curves),
    )
