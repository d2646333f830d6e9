"""Dose of permanent seed implants on points and grids (TG-43U1), the public API.

Inputs are LPS millimetres (DICOM patient coordinates), seed axes as unit
vectors (a NaN row means the orientation is unknown: that seed uses the 1D
point-source form, TG-43U1 eq. 11), air-kerma strengths in U at the strength
reference date. Outputs are the permanent-implant total dose in Gy
(initial dose rate x mean life / 100) or the initial dose rate in cGy/h.

Methods: "table" (default; numba kernel over the per-model look-up tables of
:mod:`guidance.dose.lookup`, within 0.1% of the exact formalism beyond the
minimum radius), "exact" (numba kernel of the full formalism) and
"reference" (the plain numpy implementation of :mod:`guidance.dose.tg43`).

Dose is additive over seeds: :func:`add_seeds` adds k new seeds to an
existing dose volume at the cost of k contributions, and
:func:`seed_contributions` gives each seed's dose separately (an influence
matrix for seed optimisation).

References
----------
Rivard MJ et al., Med. Phys. 31, 633-674 (2004) (TG-43U1), eq. 1, 4, 11.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from guidance.dose import tg43
from guidance.dose.source_data import SourceData, load_source_data
from guidance.volume import Grid, Volume

if TYPE_CHECKING:
    from guidance.plan import Plan

__all__ = [
    "DoseMethod",
    "DoseQuantity",
    "add_seeds",
    "auto_dose_grid",
    "dose_at_points",
    "dose_of_plan",
    "dose_on_grid",
    "seed_contributions",
    "strength_scale",
]

logger = logging.getLogger(__name__)

_MM_PER_CM = 10.0


class DoseQuantity(enum.Enum):
    """What a dose computation returns."""

    TOTAL_GY = "total_gy"
    RATE_CGY_H = "rate_cgy_h"

    @property
    def units(self) -> str:
        """Units as written in metadata (DICOM DoseUnits style for Gy)."""
        return "GY" if self is DoseQuantity.TOTAL_GY else "CGY/H"


class DoseMethod(enum.Enum):
    """How seed contributions are evaluated."""

    TABLE = "table"
    EXACT = "exact"
    REFERENCE = "reference"


def _points(points_mm: ArrayLike, name: str) -> NDArray[np.float64]:
    points = np.asarray(points_mm, dtype=np.float64)
    if points.ndim == 1 and points.shape == (3,):
        points = points[np.newaxis, :]
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3) in LPS mm; got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return points


def _seeds(
    positions_mm: ArrayLike, directions: ArrayLike | None, strengths_u: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    """Validated (positions mm, unit directions with 0 for 1D rows, is_line, strengths U)."""
    positions = _points(positions_mm, "seed_positions_mm").reshape(-1, 3)
    k = positions.shape[0]
    dirs = np.full((k, 3), np.nan) if directions is None else np.asarray(directions, dtype=np.float64)
    dirs = dirs.reshape(-1, 3) if dirs.size == 3 * k else dirs
    strengths = np.asarray(strengths_u, dtype=np.float64).reshape(-1)
    if dirs.shape != (k, 3) or strengths.shape != (k,):
        raise ValueError(
            f"{k} seed positions need seed_directions of shape ({k}, 3) and strengths_u of shape ({k},); "
            f"got {dirs.shape} and {strengths.shape}"
        )
    if not np.all(np.isfinite(strengths)) or np.any(strengths < 0):
        raise ValueError(f"strengths_u must be finite and >= 0 (U); got {strengths[~(strengths >= 0)]}")
    unknown = np.all(np.isnan(dirs), axis=1)
    partial = np.any(np.isnan(dirs), axis=1) & ~unknown
    norms = np.linalg.norm(np.where(unknown[:, np.newaxis], 1.0, dirs), axis=1)
    if np.any(partial) or np.any(~np.isfinite(norms)) or np.any(norms < 1e-9):
        bad = np.flatnonzero(partial | ~np.isfinite(norms) | (norms < 1e-9)).tolist()
        raise ValueError(f"seed_directions rows {bad} are neither a non-zero vector nor all NaN (unknown)")
    unit = np.where(unknown[:, np.newaxis], 0.0, dirs / norms[:, np.newaxis])
    return positions, unit, ~unknown, strengths


def strength_scale(
    source: SourceData,
    quantity: DoseQuantity | str,
    implant_datetime: dt.datetime | None,
    reference_datetime: dt.datetime | None,
) -> float:
    """Factor from "dose rate at the strength reference date" to the wanted quantity.

    exp(-(t_implant - t_reference) / tau) for the decay from the strength
    reference date to the implant, times tau / 100 for the total dose in Gy.

    Raises
    ------
    ValueError
        If only one of the two datetimes is given.
    """
    wanted = DoseQuantity(quantity)
    if (implant_datetime is None) != (reference_datetime is None):
        raise ValueError("give both implant_datetime and reference_datetime (or neither, for no decay)")
    scale = 1.0
    if implant_datetime is not None and reference_datetime is not None:
        elapsed_h = (implant_datetime - reference_datetime).total_seconds() / 3600.0
        scale = tg43.decay_factor(source.half_life_days, elapsed_h)
    if wanted is DoseQuantity.TOTAL_GY:
        scale *= tg43.mean_life_h(source.half_life_days) / 100.0
    return scale


def _model(source_model: str | SourceData) -> SourceData:
    try:
        return load_source_data(source_model)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from exc


def _accumulate(
    points_cm: NDArray[np.float64],
    seeds_cm: NDArray[np.float64],
    dirs: NDArray[np.float64],
    is_line: NDArray[np.bool_],
    weights: NDArray[np.float64],
    source: SourceData,
    method: DoseMethod,
    options: tg43.Tg43Options,
    out: NDArray[np.float64],
) -> None:
    """Add sum_k weights[k] * dose rate per U of seed k to ``out`` in place."""
    if seeds_cm.shape[0] == 0 or points_cm.shape[0] == 0:
        return
    if method is DoseMethod.REFERENCE:
        nan_dirs = np.where(is_line[:, np.newaxis], dirs, np.nan)
        out += tg43.dose_rate_reference(points_cm, seeds_cm, nan_dirs, weights, source, options)
        return
    from guidance.dose import _kernels

    if method is DoseMethod.EXACT:
        reference = float(tg43.geometry_factor_line(0.0, 1.0, source.effective_length_cm))
        exact: Any = _kernels.exact_dose_rate  # a numba dispatcher: untyped arguments
        exact(
            points_cm, seeds_cm, dirs, weights, is_line, source.effective_length_cm,
            source.dose_rate_constant_cgy_h_u / reference, tg43.minimum_radius_cm(source, options),
            source.g_r_cm, np.log(source.g_values), options.g_interpolation is tg43.GInterpolation.LOG_LINEAR,
            source.f_r_cm, source.f_theta_deg, source.f_values,
            options.f_extrapolation is tg43.FExtrapolation.LINEAR, source.phi_an_r_cm, source.phi_an_values,
            out,
        )  # fmt: skip
        return
    args = _table_args(source, options)
    _kernels.run_dynamic(_kernels.table_dose_rate, points_cm, seeds_cm, dirs, weights, is_line, *args, out)


def _table_args(source: SourceData, options: tg43.Tg43Options) -> tuple[Any, ...]:
    from guidance.dose.lookup import build_lookup_table, kernel_table

    table = kernel_table(build_lookup_table(source, options))
    return (
        table.pairs, table.n_q, table.half_offset, table.point, table.a0, table.inv_a_step, table.r_min_cm,
        table.columns,
    )  # fmt: skip


# (source, seed centres cm, unit directions (0 for 1D seeds), is_line, strength weights)
_Prepared = tuple[
    SourceData, NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]
]


def _prepare(
    seed_positions_mm: ArrayLike,
    seed_directions: ArrayLike | None,
    strengths_u: ArrayLike,
    source_model: str | SourceData,
    quantity: DoseQuantity | str,
    implant_datetime: dt.datetime | None,
    reference_datetime: dt.datetime | None,
) -> _Prepared:
    """(source, seeds cm, unit dirs, is_line, weights) from validated inputs."""
    source = _model(source_model)
    positions, dirs, is_line, strengths = _seeds(seed_positions_mm, seed_directions, strengths_u)
    scale = strength_scale(source, quantity, implant_datetime, reference_datetime)
    return source, positions / _MM_PER_CM, dirs, is_line, strengths * scale


def dose_at_points(
    points_mm: ArrayLike,
    seed_positions_mm: ArrayLike,
    seed_directions: ArrayLike | None,
    strengths_u: ArrayLike,
    source_model: str | SourceData,
    *,
    quantity: DoseQuantity | str = DoseQuantity.TOTAL_GY,
    implant_datetime: dt.datetime | None = None,
    reference_datetime: dt.datetime | None = None,
    method: DoseMethod | str = DoseMethod.TABLE,
    options: tg43.Tg43Options | None = None,
) -> NDArray[np.float64]:
    """Dose at points from seeds of one model.

    Parameters
    ----------
    points_mm : array_like of shape (n, 3)
        LPS mm.
    seed_positions_mm : array_like of shape (k, 3)
        Seed centres, LPS mm.
    seed_directions : array_like of shape (k, 3) or None
        Seed axes (normalised here); NaN rows (or None for all) = orientation
        unknown, 1D form.
    strengths_u : array_like of shape (k,)
        Air-kerma strength at ``reference_datetime``, U, >= 0.
    source_model : str or SourceData
        Model id or alias (see :func:`~guidance.dose.source_data.available_source_models`).
    quantity : {"total_gy", "rate_cgy_h"}
        Permanent-implant total dose (Gy) or initial dose rate (cGy/h).
    implant_datetime, reference_datetime : datetime or None
        Both or neither: the strengths decay from the reference date to the implant.
    method : {"table", "exact", "reference"}
    options : Tg43Options or None
        Interpolation conventions (defaults: log-linear g_L, nearest F beyond the table).

    Returns
    -------
    ndarray of shape (n,), float64

    Raises
    ------
    ValueError
        For malformed inputs or an unknown model (the message lists the available ones).
    """
    points = _points(points_mm, "points_mm")
    source, seeds_cm, dirs, is_line, weights = _prepare(
        seed_positions_mm, seed_directions, strengths_u, source_model, quantity, implant_datetime,
        reference_datetime,
    )  # fmt: skip
    out = np.zeros(points.shape[0])
    opts = options or tg43.Tg43Options()
    _accumulate(points / _MM_PER_CM, seeds_cm, dirs, is_line, weights, source, DoseMethod(method), opts, out)
    return out


def seed_contributions(
    points_mm: ArrayLike,
    seed_positions_mm: ArrayLike,
    seed_directions: ArrayLike | None,
    strengths_u: ArrayLike,
    source_model: str | SourceData,
    *,
    quantity: DoseQuantity | str = DoseQuantity.TOTAL_GY,
    implant_datetime: dt.datetime | None = None,
    reference_datetime: dt.datetime | None = None,
    options: tg43.Tg43Options | None = None,
) -> NDArray[np.float32]:
    """Dose of each seed separately at each point (table method): shape (n_points, n_seeds), float32.

    Row sums equal :func:`dose_at_points` (to float32 rounding). Give
    strengths of 1 U to get the dose per unit strength (an influence matrix).
    """
    from guidance.dose import _kernels

    points = _points(points_mm, "points_mm")
    source, seeds_cm, dirs, is_line, weights = _prepare(
        seed_positions_mm, seed_directions, strengths_u, source_model, quantity, implant_datetime,
        reference_datetime,
    )  # fmt: skip
    out = np.zeros((points.shape[0], seeds_cm.shape[0]), dtype=np.float32)
    if out.size:
        args = _table_args(source, options or tg43.Tg43Options())
        kernel = _kernels.table_contributions
        _kernels.run_dynamic(kernel, points / _MM_PER_CM, seeds_cm, dirs, weights, is_line, *args, out)
    return out


def auto_dose_grid(
    target: Volume | ArrayLike,
    *,
    margin_mm: float = 15.0,
    spacing_mm: float = 1.0,
    frame_of_reference_uid: str | None = None,
) -> Grid:
    """An axial grid covering a target plus a margin.

    Parameters
    ----------
    target : Volume or array_like of shape (2, 3)
        A mask volume (its non-zero voxel centres are covered) or an LPS box
        [min, max] in mm (e.g. structure bounds).
    margin_mm, spacing_mm : float
    frame_of_reference_uid : str or None
        Defaults to the mask's frame ("" for a box).
    """
    if not (margin_mm >= 0 and spacing_mm > 0):
        raise ValueError(f"need margin_mm >= 0 and spacing_mm > 0; got {margin_mm}, {spacing_mm}")
    if isinstance(target, Volume):
        indices = np.argwhere(target.array != 0)
        if indices.size == 0:
            raise ValueError("target mask is empty: no voxel to cover")
        centres = target.index_to_patient(indices.astype(np.float64))
        bounds = np.stack([centres.min(axis=0), centres.max(axis=0)])
        frame = target.frame_of_reference_uid if frame_of_reference_uid is None else frame_of_reference_uid
    else:
        bounds = np.asarray(target, dtype=np.float64)
        if bounds.shape != (2, 3) or not np.all(np.isfinite(bounds)) or np.any(bounds[1] < bounds[0]):
            raise ValueError(f"target bounds must be a finite (2, 3) box [min, max] in LPS mm; got {bounds}")
        frame = frame_of_reference_uid or ""
    return Grid.from_bounds(bounds[0] - margin_mm, bounds[1] + margin_mm, spacing_mm, frame)


def _grid_points_cm(grid: Grid) -> NDArray[np.float64]:
    return grid.voxel_centres_mm().reshape(-1, 3) / _MM_PER_CM


def _accumulate_grid(
    grid: Grid,
    prepared: _Prepared,
    method: DoseMethod,
    options: tg43.Tg43Options,
    out: NDArray[np.float64],
) -> None:
    """As :func:`_accumulate` on the voxel centres of ``grid`` (flat C-order ``out``)."""
    source, seeds_cm, dirs, is_line, weights = prepared
    if method is not DoseMethod.TABLE:
        _accumulate(_grid_points_cm(grid), seeds_cm, dirs, is_line, weights, source, method, options, out)
        return
    if seeds_cm.shape[0] == 0 or out.size == 0:
        return
    from guidance.dose import _kernels

    affine_cm = np.ascontiguousarray(grid.affine[:3] / _MM_PER_CM)
    _, n_rows, n_cols = grid.shape
    args = (n_rows, n_cols, affine_cm, seeds_cm, dirs, weights, is_line, *_table_args(source, options), out)
    _kernels.run_dynamic(_kernels.table_dose_rate_grid, *args)


def dose_on_grid(
    grid: Grid,
    seed_positions_mm: ArrayLike,
    seed_directions: ArrayLike | None,
    strengths_u: ArrayLike,
    source_model: str | SourceData,
    *,
    quantity: DoseQuantity | str = DoseQuantity.TOTAL_GY,
    implant_datetime: dt.datetime | None = None,
    reference_datetime: dt.datetime | None = None,
    method: DoseMethod | str = DoseMethod.TABLE,
    options: tg43.Tg43Options | None = None,
) -> Volume:
    """Dose at every voxel centre of ``grid`` (arguments as :func:`dose_at_points`).

    Returns
    -------
    Volume
        float64 dose on ``grid``; metadata: quantity, dose_units ("GY" or
        "CGY/H"), source_model, method, tg43_options, implant/reference
        datetimes (ISO), seed count, compute_time_s.
    """
    started = time.perf_counter()
    wanted, how = DoseQuantity(quantity), DoseMethod(method)
    opts = options or tg43.Tg43Options()
    prepared = _prepare(
        seed_positions_mm, seed_directions, strengths_u, source_model, wanted, implant_datetime,
        reference_datetime,
    )  # fmt: skip
    source, seeds_cm = prepared[0], prepared[1]
    out = np.zeros(int(np.prod(grid.shape)))
    _accumulate_grid(grid, prepared, how, opts, out)
    elapsed = time.perf_counter() - started
    logger.debug("dose of %d seeds on %s voxels in %.3f s", seeds_cm.shape[0], grid.shape, elapsed)
    return Volume.on_grid(
        grid, out.reshape(grid.shape), modality="RTDOSE", quantity=wanted.value, dose_units=wanted.units,
        source_model=source.model_id, method=how.value, tg43_options=repr(opts),
        n_seeds=int(seeds_cm.shape[0]),
        implant_datetime=None if implant_datetime is None else implant_datetime.isoformat(),
        reference_datetime=None if reference_datetime is None else reference_datetime.isoformat(),
        compute_time_s=elapsed,
    )  # fmt: skip


def add_seeds(
    dose: Volume,
    seed_positions_mm: ArrayLike,
    seed_directions: ArrayLike | None,
    strengths_u: ArrayLike,
    source_model: str | SourceData,
    *,
    implant_datetime: dt.datetime | None = None,
    reference_datetime: dt.datetime | None = None,
    method: DoseMethod | str = DoseMethod.TABLE,
    options: tg43.Tg43Options | None = None,
) -> Volume:
    """A new dose volume: ``dose`` plus the contributions of k more seeds (cost: k seeds only).

    The quantity (total Gy or rate) is that of ``dose`` (its metadata
    ``quantity``); the new seeds may be of another model.

    Raises
    ------
    ValueError
        If ``dose`` carries no ``quantity`` metadata (not made by this engine).
    """
    started = time.perf_counter()
    if dose.metadata.get("quantity") not in {q.value for q in DoseQuantity}:
        raise ValueError("dose volume has no 'quantity' metadata: make it with dose_on_grid or dose_of_plan")
    wanted = DoseQuantity(dose.metadata["quantity"])
    opts = options or tg43.Tg43Options()
    prepared = _prepare(
        seed_positions_mm, seed_directions, strengths_u, source_model, wanted, implant_datetime,
        reference_datetime,
    )  # fmt: skip
    # One copy of the existing dose (a Volume is immutable); the kernel then
    # adds the new seeds in place, voxel positions from the affine.
    out = np.array(dose.array, dtype=np.float64).reshape(-1)
    _accumulate_grid(dose.grid, prepared, DoseMethod(method), opts, out)
    n_seeds = int(dose.metadata.get("n_seeds", 0)) + int(prepared[1].shape[0])
    return dose.with_array(
        out.reshape(dose.shape), n_seeds=n_seeds, compute_time_s=time.perf_counter() - started
    )


def _plan_models(plan: Plan, source_map: Mapping[str, str | SourceData] | None) -> dict[str, SourceData]:
    """Source data for every Plan.sources key that a seed uses."""
    mapping = {key.lower(): value for key, value in (source_map or {}).items()}
    models: dict[str, SourceData] = {}
    for key in sorted({seed.source_model_id for seed in plan.seeds}):
        model_id = plan.sources[key].model_id
        chosen = mapping.get(key.lower(), mapping.get(model_id.lower(), model_id))
        try:
            models[key] = load_source_data(chosen)
        except KeyError as exc:
            raise ValueError(
                f"plan source {key!r} (model {model_id!r}) has no TG-43 data: {exc.args[0]} "
                f"Pass source_map={{{model_id!r}: '<model id>'}} if it is dosimetrically one of these."
            ) from exc
    return models


def dose_of_plan(
    plan: Plan,
    grid: Grid,
    *,
    source_map: Mapping[str, str | SourceData] | None = None,
    quantity: DoseQuantity | str = DoseQuantity.TOTAL_GY,
    implant_datetime: dt.datetime | None = None,
    method: DoseMethod | str = DoseMethod.TABLE,
    options: tg43.Tg43Options | None = None,
) -> Volume:
    """Dose of all seeds of ``plan`` on ``grid``.

    Parameters
    ----------
    source_map : mapping or None
        Plan source name or model id (case-insensitive) -> model id / SourceData,
        for planning-system names without consensus data (e.g. {"selectSeed": "6711"}).
        Nothing is mapped silently.
    implant_datetime : datetime or None
        With the plan's strength reference datetime, decays the strengths to the implant.
    """
    models = _plan_models(plan, source_map)
    reference = plan.strength_reference_datetime if implant_datetime is not None else None
    if implant_datetime is not None and reference is None:
        raise ValueError("implant_datetime given, but the plan has no strength reference datetime")
    keys = np.array([seed.source_model_id for seed in plan.seeds])
    wanted = DoseQuantity(quantity)
    zeros = np.zeros(grid.shape)
    dose = Volume.on_grid(grid, zeros, quantity=wanted.value, dose_units=wanted.units, n_seeds=0)
    for key, source in models.items():
        chosen = keys == key
        dose = add_seeds(
            dose, plan.seed_positions_mm[chosen], plan.seed_directions[chosen], plan.seed_strengths_u[chosen],
            source, implant_datetime=implant_datetime, reference_datetime=reference, method=method,
            options=options,
        )  # fmt: skip
    names = ",".join(source.model_id for source in models.values())
    return dose.with_array(
        dose.array, modality="RTDOSE", source_model=names, method=DoseMethod(method).value,
        tg43_options=repr(options or tg43.Tg43Options()), plan_sop_instance_uid=plan.sop_instance_uid,
        implant_datetime=None if implant_datetime is None else implant_datetime.isoformat(),
        reference_datetime=None if reference is None else reference.isoformat(),
    )  # fmt: skip
