"""TG-43U1 dose calculation of permanent seed implants, DVHs, dose metrics and RT Dose export.

Importing this package reads no data file and compiles nothing: source data
are read on first use, numba kernels compile on the first dose computation.
"""

from guidance.dose.dvh import DoseVolumeHistogramCurve, cumulative_dvh
from guidance.dose.engine import (
    DoseMethod,
    DoseQuantity,
    add_seeds,
    auto_dose_grid,
    dose_at_points,
    dose_of_plan,
    dose_on_grid,
    seed_contributions,
    strength_scale,
)
from guidance.dose.export import export_rtdose
from guidance.dose.limits import DoseLimits, LimitStatus, load_dose_limits
from guidance.dose.metrics import DoseReport, OrganMetrics, TargetMetrics, evaluate_plan_dose
from guidance.dose.source_data import SourceData, available_source_models, load_source_data
from guidance.dose.tg43 import FExtrapolation, GInterpolation, Tg43Options

__all__ = [
    "DoseLimits",
    "DoseMethod",
    "DoseQuantity",
    "DoseReport",
    "DoseVolumeHistogramCurve",
    "FExtrapolation",
    "GInterpolation",
    "LimitStatus",
    "OrganMetrics",
    "SourceData",
    "TargetMetrics",
    "Tg43Options",
    "add_seeds",
    "auto_dose_grid",
    "available_source_models",
    "cumulative_dvh",
    "dose_at_points",
    "dose_of_plan",
    "dose_on_grid",
    "evaluate_plan_dose",
    "export_rtdose",
    "load_dose_limits",
    "load_source_data",
    "seed_contributions",
    "strength_scale",
]
