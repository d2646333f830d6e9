"""Lower-bound study: can N-1 seeds anywhere reach the D90 of the uniform loading's N seeds?

For the spheres where the planner ties the uniform 1 cm loading of
bench/planning.py (5 and 15 cm^3) at the strength
that makes the uniform loading's D90 exactly the prescription P (part (b) of
that bench), this maximises the D90 of the sphere with one seed fewer at FREE
continuous positions: no needle tracks, only seeds >= 5 mm apart, seed axes
along +Y as the uniform loading's.

Method: the D90 of 8192 scrambled Sobol points in the ball (equal volumes) as
a smooth quantile (t such that sum sigma((d - t) / tau) = 90% of the points,
tau 2 Gy then 0.5 Gy), its gradient by forward differences of each seed's
own dose column (0.05 mm), maximised by SLSQP with the pairwise distance
constraints, from several starts: the uniform layout without each distinct
seed (by symmetry), those perturbed (1.5 mm, fixed seeds), and random layouts
inside the sphere. Each optimum is then evaluated exactly as the bench does
(:func:`guidance.dose.dose_on_grid` on a 1 mm grid, the D90 of the analytic
sphere's contours by :func:`guidance.dose.cumulative_dvh`) and the best one
printed, with the continuous (point-sample) D90 next to it. A best D90 below P
says the uniform loading's seed count cannot be beaten at that strength by
any layout, so neither by the planner's tracks; the study is not a proof (a
local optimiser from finitely many starts) but an honest search.

Run: ``.venv/bin/python bench/planning_bound.py [cc ...]`` (5 cm^3: about 30 s on an idle
2-core machine; 15 cm^3 takes minutes).
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
from numpy.typing import NDArray
from planning import _PRESCRIPTION_GY, _STRENGTH_U, _evaluate, _uniform_lattice, radius_mm
from scipy.optimize import minimize
from scipy.stats import qmc

from guidance.dose import dose_at_points

logger = logging.getLogger("bench.planning_bound")

_CASES_CC = (5.0, 15.0)
_MODEL = "6711"
_AXIS = np.array([0.0, 1.0, 0.0])
_MIN_DISTANCE_MM = 5.0
_STEP_MM = 0.05
_POINTS = 8192
_RANDOM_STARTS = 4
_PERTURBED_STARTS = 2


def _ball(radius: float) -> NDArray[np.float64]:
    """Scrambled Sobol points, uniform in the ball (fixed seed)."""
    cube = qmc.Sobol(3, scramble=True, seed=7).random(4 * _POINTS) * 2.0 - 1.0
    inside = cube[np.linalg.norm(cube, axis=1) <= 1.0][:_POINTS]
    return np.asarray(inside * radius, dtype=np.float64)


class _Objective:
    """Smooth D90 of the sample points and its gradient in the seed coordinates."""

    def __init__(self, points: NDArray[np.float64], strength_u: float) -> None:
        self.points, self.strength = points, strength_u
        self.tau = 2.0

    def column(self, position: NDArray[np.float64]) -> NDArray[np.float64]:
        """Dose of one seed at ``position`` (1, 3) at the sample points, Gy."""
        strength = np.array([self.strength])
        return np.asarray(dose_at_points(self.points, position, _AXIS[np.newaxis], strength, _MODEL))

    def columns(self, positions: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.column_stack([self.column(positions[j : j + 1]) for j in range(positions.shape[0])])

    def soft_d90(self, dose: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        """t with mean(sigma((dose - t) / tau)) = 0.9, and d t / d dose_i."""
        low, high = float(dose.min()) - 10 * self.tau, float(dose.max()) + 10 * self.tau
        for _ in range(60):
            t = 0.5 * (low + high)
            share = np.mean(1.0 / (1.0 + np.exp(-np.clip((dose - t) / self.tau, -50, 50))))
            low, high = (t, high) if share > 0.9 else (low, t)
        s = 1.0 / (1.0 + np.exp(-np.clip((dose - t) / self.tau, -50, 50)))
        slope = s * (1 - s)
        return t, slope / max(float(slope.sum()), 1e-12)

    def __call__(self, flat: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        positions = flat.reshape(-1, 3)
        columns = self.columns(positions)
        dose = columns.sum(axis=1)
        t, sensitivity = self.soft_d90(dose)
        grad = np.zeros_like(positions)
        for j in range(positions.shape[0]):
            for axis in range(3):
                moved = positions[j : j + 1].copy()
                moved[0, axis] += _STEP_MM
                column = self.column(moved)
                grad[j, axis] = sensitivity @ ((column - columns[:, j]) / _STEP_MM)
        return -t, -grad.reshape(-1)


def _spacing(flat: NDArray[np.float64]) -> NDArray[np.float64]:
    positions = flat.reshape(-1, 3)
    a, b = np.triu_indices(positions.shape[0], 1)
    return np.asarray(np.sum((positions[a] - positions[b]) ** 2, axis=1) - _MIN_DISTANCE_MM**2)


def _spacing_jacobian(flat: NDArray[np.float64]) -> NDArray[np.float64]:
    positions = flat.reshape(-1, 3)
    n = positions.shape[0]
    a, b = np.triu_indices(n, 1)
    jac = np.zeros((a.size, n, 3))
    diff = 2.0 * (positions[a] - positions[b])
    jac[np.arange(a.size), a] = diff
    jac[np.arange(a.size), b] = -diff
    return jac.reshape(a.size, -1)


def _optimise(objective: _Objective, start: NDArray[np.float64]) -> NDArray[np.float64]:
    constraint = {"type": "ineq", "fun": _spacing, "jac": _spacing_jacobian}
    flat = start.reshape(-1).copy()
    for tau in (2.0, 0.5):
        objective.tau = tau
        result = minimize(
            objective, flat, jac=True, method="SLSQP", constraints=[constraint],
            options={"maxiter": 150, "ftol": 1e-6},
        )  # fmt: skip
        flat = result.x
    return np.asarray(flat.reshape(-1, 3))


def _starts(volume_cc: float, lattice: NDArray[np.float64]) -> list[tuple[str, NDArray[np.float64]]]:
    """The uniform layout minus each distinct seed (by distance from the centre), perturbed, random."""
    rng = np.random.default_rng(11)
    radius = radius_mm(volume_cc)
    starts: list[tuple[str, NDArray[np.float64]]] = []
    distance = np.round(np.linalg.norm(lattice, axis=1), 3)
    for value in np.unique(distance):
        drop = int(np.flatnonzero(distance == value)[0])
        layout = np.delete(lattice, drop, axis=0)
        starts.append((f"uniform without a seed at {value:.1f} mm", layout))
        for k in range(_PERTURBED_STARTS):
            starts.append((f"  the same perturbed ({k})", layout + rng.normal(0.0, 1.5, layout.shape)))
    for k in range(_RANDOM_STARTS):
        raw = rng.uniform(-1.0, 1.0, (8 * lattice.shape[0], 3))
        raw = raw[np.linalg.norm(raw, axis=1) <= 0.8][: lattice.shape[0] - 1] * radius
        starts.append((f"random ({k})", raw))
    return starts


def _case(volume_cc: float) -> None:
    lattice = _uniform_lattice(volume_cc)
    strength = _STRENGTH_U * _PRESCRIPTION_GY / _evaluate(volume_cc, lattice).d90_gy
    objective = _Objective(_ball(radius_mm(volume_cc)), strength)
    started = time.perf_counter()
    best: tuple[float, float, str, NDArray[np.float64]] = (-np.inf, 0.0, "", lattice)
    for label, start in _starts(volume_cc, lattice):
        layout = _optimise(objective, start)
        ok = bool(np.all(_spacing(layout.reshape(-1)) >= -1e-6))
        d90 = _evaluate(volume_cc, layout, strength).d90_gy if ok else -np.inf
        sampled = -objective(layout.reshape(-1))[0]
        note = "" if ok else " spacing!"
        logger.info("  %-34s D90 %6.1f Gy (point samples %.1f)%s", label, d90, sampled, note)
        if d90 > best[0]:
            best = (d90, sampled, label, layout)
    d90, sampled, label, layout = best
    logger.info(
        "%5.1f cc at %.3f U/seed: uniform %d seeds D90 %.1f Gy; best D90 with %d free seeds %.1f Gy "
        "(%.1f%% of P; from %s); N-1 reaches P: %s; %.0f s",
        volume_cc, strength, lattice.shape[0], _evaluate(volume_cc, lattice, strength).d90_gy,
        lattice.shape[0] - 1, d90, 100 * d90 / _PRESCRIPTION_GY, label.strip(), d90 >= _PRESCRIPTION_GY,
        time.perf_counter() - started,
    )  # fmt: skip
    logger.info("        best layout (mm): %s", np.round(layout, 1).tolist())


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    cases = [float(v) for v in (argv if argv is not None else sys.argv[1:])] or list(_CASES_CC)
    for volume_cc in cases:
        _case(volume_cc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
