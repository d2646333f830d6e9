"""The text form of a DICOM survey, as ``seedguide inspect`` prints it."""

from __future__ import annotations

from guidance.dicomio.survey import DoseSummary, PlanSummary, SeriesSummary, StructureSetSummary, Survey

__all__ = ["format_survey", "has_problems"]


def has_problems(result: Survey) -> bool:
    """True when any series, structure set, plan or dose cannot be used as it is."""
    groups = (result.series, result.structure_sets, result.plans, result.doses)
    return any(item.problems for group in groups for item in group)


def _series_line(s: SeriesSummary) -> str:
    where = f"series {s.modality} {s.series_instance_uid} '{s.description}'"
    if not (s.readable and s.shape and s.spacing_mm):
        return f"{where}: {s.instances} instance(s)"
    return (
        f"{where}: {s.shape[0]} slices of {s.shape[1]}x{s.shape[2]}, spacing (slice, row, column) "
        f"{s.spacing_mm} mm, first slice at {s.first_position_mm} mm, HU {s.hu_range}"
    )


def _structure_set_line(ss: StructureSetSummary) -> str:
    names = ", ".join(f"{r.name} ({r.role}{', empty' if r.empty else ''})" for r in ss.structures)
    return f"structure set '{ss.label}' {ss.sop_instance_uid}: {len(ss.structures)} ROI(s): {names}"


def _plan_line(p: PlanSummary) -> str:
    where = f"plan '{p.label}' {p.sop_instance_uid}"
    if not p.readable:
        return f"{where}: not usable"
    prescription = f"{p.prescription_gy} Gy" if p.prescription_gy is not None else "not given"
    return (
        f"{where} ({p.treatment_type}): {p.seeds} seed(s) of {'/'.join(p.isotopes) or '-'} "
        f"(model {', '.join(p.source_models) or '-'}), strength {p.strengths_u} U at "
        f"{p.strength_reference_datetime}, {p.needles} needle(s), prescription {prescription}"
    )


def _dose_line(d: DoseSummary) -> str:
    if not d.readable:
        return f"dose {d.sop_instance_uid}: not usable"
    return (
        f"dose {d.sop_instance_uid}: grid {d.shape}, spacing {d.spacing_mm} mm, "
        f"max {d.max_gy} Gy ({d.summation_type})"
    )


def format_survey(result: Survey) -> str:
    """One line per object found, each followed by its problems, then the non-DICOM files."""
    entries: list[tuple[str, list[str]]] = [
        *((_series_line(s), s.problems) for s in result.series),
        *((_structure_set_line(ss), ss.problems) for ss in result.structure_sets),
        *((_plan_line(p), p.problems) for p in result.plans),
        *((_dose_line(d), d.problems) for d in result.doses),
    ]
    lines = [f"{result.files} DICOM file(s) under {', '.join(result.paths)}"]
    for headline, problems in entries:
        lines.append(headline)
        lines.extend(f"  PROBLEM: {problem}" for problem in problems)
    lines.extend(f"not DICOM: {path}" for path in result.unreadable)
    return "\n".join(lines) + "\n"
