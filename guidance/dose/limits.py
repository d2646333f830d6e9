"""Dose limits of organs at risk, from a TOML file, overridable per patient.

A limit is a maximum, in Gy, of one organ-at-risk metric (``d0_1cc_gy``,
``d1cc_gy``, ``d2cc_gy``, ``dmax_gy``, ``dmean_gy``; see
:class:`guidance.dose.metrics.OrganMetrics`). Limits are given per role (every
organ at risk) and per structure name (case-insensitive); a name's limits
override its role's, metric by metric.

Re-irradiation (a simple, explicit model): by default a limit applies to the
dose of this implant alone. For a re-irradiated patient, give the dose the
organ already received (``prior_dose_gy``, per structure and metric, in the
same physical Gy terms as the limit); the limit is then cumulative and this
implant may add ``limit - prior``. No biological conversion (EQD2, repair
between courses) is made, and adding a DVH point of two courses assumes their
hottest volumes coincide, the conservative assumption: the prior dose must be
stated by the clinician in the terms of the limit.

Status of a metric against its allowance ``a`` (limit minus prior dose):
FAIL when it exceeds ``a``; WARN when it exceeds ``a x (1 - warn_margin_percent /
100)``; PASS otherwise; NOT_EVALUATED when the metric is undefined (e.g. D2cc
of an organ smaller than 2 cc).

File format::

    warn_margin_percent = 10.0          # optional, default 10

    [roles.organ_at_risk]               # every organ at risk
    d2cc_gy = 100.0

    [structures."spinal cord"]          # one structure, by name
    d0_1cc_gy = 45.0

    [prior_dose_gy."spinal cord"]       # per patient: dose already received
    d0_1cc_gy = 20.0
"""

from __future__ import annotations

import enum
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from guidance.structure import StructureRole

__all__ = [
    "OAR_METRICS",
    "DoseLimits",
    "DoseLimitsError",
    "LimitStatus",
    "limit_status",
    "load_dose_limits",
]

#: Metrics a limit may name (fields of OrganMetrics, Gy).
OAR_METRICS = ("d0_1cc_gy", "d1cc_gy", "d2cc_gy", "dmax_gy", "dmean_gy")
_TOP_LEVEL = ("warn_margin_percent", "roles", "structures", "prior_dose_gy")


class DoseLimitsError(ValueError):
    """A dose-limit file or table is malformed."""


class LimitStatus(enum.Enum):
    """Outcome of comparing a metric with its limit."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    NOT_EVALUATED = "not_evaluated"


def _key(name: str) -> str:
    return name.strip().casefold()


def _metric_table(table: Any, where: str) -> Mapping[str, float]:
    if not isinstance(table, Mapping):
        raise DoseLimitsError(f"{where} must be a table of metric = Gy; got {table!r}")
    values: dict[str, float] = {}
    for metric, value in table.items():
        if metric not in OAR_METRICS:
            raise DoseLimitsError(f"{where}: unknown metric {metric!r}; known: {', '.join(OAR_METRICS)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DoseLimitsError(f"{where}.{metric} must be a finite number of Gy; got {value!r}")
        if value < 0:
            raise DoseLimitsError(f"{where}.{metric} must be >= 0 Gy; got {value}")
        values[metric] = float(value)
    return MappingProxyType(values)


def _tables(
    tables: Any, where: str, keys: type[str] | type[StructureRole]
) -> Mapping[str, Mapping[str, float]]:
    if not isinstance(tables, Mapping):
        raise DoseLimitsError(f"{where} must be a table of tables; got {tables!r}")
    result: dict[str, Mapping[str, float]] = {}
    for name, table in tables.items():
        if keys is StructureRole:
            try:
                name = StructureRole(name).value
            except ValueError:
                known = ", ".join(role.value for role in StructureRole)
                raise DoseLimitsError(f"{where}: unknown role {name!r}; known: {known}") from None
        key = _key(str(name))
        if key in result:
            raise DoseLimitsError(f"{where}: {name!r} is given twice (names are case-insensitive)")
        result[key] = _metric_table(table, f"{where}.{name}")
    return MappingProxyType(result)


@dataclass(frozen=True)
class DoseLimits:
    """Organ-at-risk dose limits and, per patient, prior doses (see the module docstring).

    Parameters
    ----------
    by_role : mapping of role value -> {metric: limit Gy}
    by_name : mapping of structure name (case-insensitive) -> {metric: limit Gy}
    prior_dose_gy : mapping of structure name -> {metric: Gy already received}
    warn_margin_percent : float
        WARN within this percentage below the allowance, 0 to 100.
    """

    by_role: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    by_name: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    prior_dose_gy: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    warn_margin_percent: float = 10.0

    def __post_init__(self) -> None:
        margin = self.warn_margin_percent
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 100:
            raise DoseLimitsError(f"warn_margin_percent must be a number in [0, 100); got {margin!r}")
        object.__setattr__(self, "warn_margin_percent", float(margin))
        object.__setattr__(self, "by_role", _tables(self.by_role, "roles", StructureRole))
        object.__setattr__(self, "by_name", _tables(self.by_name, "structures", str))
        object.__setattr__(self, "prior_dose_gy", _tables(self.prior_dose_gy, "prior_dose_gy", str))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "dose limits") -> DoseLimits:
        """Build from a parsed TOML document; unknown keys are errors naming ``source``."""
        unknown = sorted(set(data) - set(_TOP_LEVEL))
        if unknown:
            raise DoseLimitsError(f"{source}: unknown key(s) {unknown}; allowed: {', '.join(_TOP_LEVEL)}")
        try:
            return cls(
                by_role=data.get("roles", {}),
                by_name=data.get("structures", {}),
                prior_dose_gy=data.get("prior_dose_gy", {}),
                warn_margin_percent=data.get("warn_margin_percent", 10.0),
            )
        except DoseLimitsError as exc:
            raise DoseLimitsError(f"{source}: {exc}") from None

    def with_patient(
        self,
        *,
        limits: Mapping[str, Mapping[str, float]] | None = None,
        prior_dose_gy: Mapping[str, Mapping[str, float]] | None = None,
    ) -> DoseLimits:
        """A copy with per-patient limits (merged over the named ones) and prior doses (replacing them)."""
        merged: dict[str, dict[str, float]] = {name: dict(table) for name, table in self.by_name.items()}
        for name, table in (limits or {}).items():
            merged.setdefault(_key(name), {}).update(table)
        prior = self.prior_dose_gy if prior_dose_gy is None else prior_dose_gy
        return replace(self, by_name=merged, prior_dose_gy=prior)

    def limits_for(self, name: str, role: StructureRole | str) -> dict[str, float]:
        """{metric: limit Gy} of a structure: its role's, overridden by its name's."""
        limits = dict(self.by_role.get(StructureRole(role).value, {}))
        limits.update(self.by_name.get(_key(name), {}))
        return limits

    def prior_for(self, name: str, metric: str) -> float:
        """Dose already received by the structure in this metric, Gy (0 if none given)."""
        return self.prior_dose_gy.get(_key(name), {}).get(metric, 0.0)


def load_dose_limits(path: str | os.PathLike[str]) -> DoseLimits:
    """Read :class:`DoseLimits` from a TOML file (format in the module docstring).

    Raises
    ------
    DoseLimitsError
        Invalid TOML, unknown keys, roles or metrics, or non-numeric limits; the
        message names the file and the key.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DoseLimitsError(f"{file}: not valid TOML: {exc}") from None
    return DoseLimits.from_mapping(data, source=str(file))


def limit_status(value_gy: float | None, allowed_gy: float, warn_margin_percent: float) -> LimitStatus:
    """PASS, WARN or FAIL of a metric against the dose it may reach (see the module docstring)."""
    if value_gy is None or not math.isfinite(value_gy):
        return LimitStatus.NOT_EVALUATED
    if value_gy > allowed_gy:
        return LimitStatus.FAIL
    if value_gy > allowed_gy * (1.0 - warn_margin_percent / 100.0):
        return LimitStatus.WARN
    return LimitStatus.PASS
