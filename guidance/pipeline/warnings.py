"""Operator warnings about one scan: registration doubt, seeds missing, needles or target cut by the scan."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from guidance.registration import Verdict
from guidance.structure import StructureRole

if TYPE_CHECKING:
    from guidance.detection import NeedleDetection, PlanMatch, SeedDetection
    from guidance.plan import Plan
    from guidance.registration import RegistrationResult
    from guidance.volume import Volume

__all__ = ["scan_warnings", "target_outside_fraction"]


def target_outside_fraction(scan: Volume, plan: Plan, scan_to_plan: NDArray[np.float64]) -> float:
    """Fraction of the targets' contour points (plan frame) that map outside the scan's extent."""
    targets = [s for s in plan.structures_with_role(StructureRole.TARGET) if not s.is_empty]
    if not targets:
        return 0.0
    points = np.concatenate([t.points_mm for t in targets])
    plan_to_scan = np.linalg.inv(scan_to_plan)
    in_scan = points @ plan_to_scan[:3, :3].T + plan_to_scan[:3, 3]
    inside = scan.grid.contains_index(scan.grid.patient_to_index(in_scan))
    return float(1.0 - np.mean(inside))


def _registration(registration: RegistrationResult | None) -> list[str]:
    if registration is None or registration.quality.verdict is not Verdict.DOUBT:
        return []
    reasons = "; ".join(registration.quality.reasons)
    return [f"registration DOUBT ({reasons}): check the overlay before relying on seed positions and dose"]


def _detection(needles: NeedleDetection | None, seeds: SeedDetection | None) -> list[str]:
    out = []
    if needles is not None:
        cut = [k for k, n in enumerate(needles.needles) if n.tip_outside_scan]
        if cut:
            out.append(f"needle tip(s) {cut} lie outside the scan range: tip positions are not measured")
    if seeds is not None and not seeds.seeds:
        out.append("no seed found in the scan")
    return out


def _matching(match: PlanMatch | None, plan: Plan, verification: bool) -> list[str]:
    if match is None:
        return []
    out = []
    if match.missing_seeds:
        count = len(match.missing_seeds)
        if verification:
            out.append(f"{count} of {len(plan.seeds)} planned seeds missing: {list(match.missing_seeds)}")
        else:
            out.append(f"{count} of {len(plan.seeds)} planned seeds not (yet) found")
    if match.extra_seeds:
        out.append(f"{len(match.extra_seeds)} found seed(s) match no planned seed: {list(match.extra_seeds)}")
    return out


def scan_warnings(
    scan: Volume,
    plan: Plan,
    registered: tuple[RegistrationResult | None, NDArray[np.float64] | None],
    found: tuple[NeedleDetection | None, SeedDetection | None, PlanMatch | None],
    verification: bool,
) -> list[str]:
    """Warnings for the operator, most serious first."""
    registration, transform = registered
    needles, seeds, match = found
    out = _registration(registration)
    if transform is not None:
        outside = target_outside_fraction(scan, plan, transform)
        if outside > 0:
            out.append(
                f"target truncated: {100 * outside:.0f}% of its contour lies outside the scan range; "
                "seeds there are not seen and the dose is underestimated"
            )
    return [*out, *_detection(needles, seeds), *_matching(match, plan, verification)]
