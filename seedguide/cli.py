"""The ``seedguide`` command: one entry point, one subcommand per job.

``seedguide inspect PATH...``  what a folder of DICOM files holds, and what is wrong with it
``seedguide demo``             the bundled example, written and inspected
``seedguide node``             the DICOM node alone, as a service
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from dicom_node.server import add_arguments as add_node_arguments
from dicom_node.server import run as run_node
from guidance.dicomio.errors import DicomInputError
from guidance.dicomio.survey import Survey, survey

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seedguide",
        description="Intraoperative CT guidance for permanent I-125 seed implants.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect",
        help="summarise the DICOM files in folders or files (series, structures, plans, doses)",
        description="Summarise what DICOM files hold: image series with their geometry, "
        "structure sets, seed plans (seed count, isotope, strength) and dose grids, with every "
        "problem the readers found. Exit status 1 when something cannot be used as it is.",
    )
    inspect.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or folder")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")

    demo = commands.add_parser(
        "demo",
        help="write the bundled example case (CT, structures, seed plan) and inspect it",
        description="Write the bundled example case (a neck-like phantom CT, its RT Structure Set "
        "and an I-125 seed RT Plan) to OUT/example (replacing the .dcm files of an earlier run) "
        "and show what seedguide reads from it.",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("seedguide-demo"), help="folder to write (default: %(default)s)"
    )
    demo.add_argument("--json", action="store_true", help="print the inspection as JSON")

    node = commands.add_parser(
        "node",
        help="run the DICOM node alone: receive, store and announce series until SIGTERM",
        description="Run the DICOM node (Verification and Storage SCP) as a service; "
        "see docs/conformance.md.",
    )
    add_node_arguments(node)
    return parser


def _has_problems(result: Survey) -> bool:
    groups = (result.series, result.structure_sets, result.plans, result.doses)
    return any(item.problems for group in groups for item in group)


def _print_survey(result: Survey, out: TextIO) -> None:
    write = out.write
    write(f"{result.files} DICOM file(s) under {', '.join(result.paths)}\n")
    for s in result.series:
        if s.readable and s.shape is not None and s.spacing_mm is not None:
            write(
                f"series {s.modality} {s.series_instance_uid} '{s.description}': {s.shape[0]} slices of "
                f"{s.shape[1]}x{s.shape[2]}, spacing (slice, row, column) {s.spacing_mm} mm, "
                f"first slice at {s.first_position_mm} mm, HU {s.hu_range}\n"
            )
        else:
            write(
                f"series {s.modality} {s.series_instance_uid} '{s.description}': {s.instances} instance(s)\n"
            )
        for problem in s.problems:
            write(f"  PROBLEM: {problem}\n")
    for ss in result.structure_sets:
        names = ", ".join(f"{r.name} ({r.role}{', empty' if r.empty else ''})" for r in ss.structures)
        write(f"structure set '{ss.label}' {ss.sop_instance_uid}: {len(ss.structures)} ROI(s): {names}\n")
        for problem in ss.problems:
            write(f"  PROBLEM: {problem}\n")
    for p in result.plans:
        if p.readable:
            write(
                f"plan '{p.label}' {p.sop_instance_uid} ({p.treatment_type}): {p.seeds} seed(s) of "
                f"{'/'.join(p.isotopes) or '-'} (model {', '.join(p.source_models) or '-'}), "
                f"strength {p.strengths_u} U at {p.strength_reference_datetime}, {p.needles} needle(s), "
                f"prescription {p.prescription_gy if p.prescription_gy is not None else 'not given'} Gy\n"
            )
        else:
            write(f"plan '{p.label}' {p.sop_instance_uid}: not usable\n")
        for problem in p.problems:
            write(f"  PROBLEM: {problem}\n")
    for d in result.doses:
        if d.readable:
            write(
                f"dose {d.sop_instance_uid}: grid {d.shape}, spacing {d.spacing_mm} mm, "
                f"max {d.max_gy} Gy ({d.summation_type})\n"
            )
        else:
            write(f"dose {d.sop_instance_uid}: not usable\n")
        for problem in d.problems:
            write(f"  PROBLEM: {problem}\n")
    for path in result.unreadable:
        write(f"not DICOM: {path}\n")


def _report(result: Survey, as_json: bool) -> int:
    if as_json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_survey(result, sys.stdout)
    return EXIT_PROBLEMS if _has_problems(result) else EXIT_OK


def _run_inspect(args: argparse.Namespace) -> int:
    try:
        result = survey(args.paths)
    except DicomInputError as exc:
        sys.stderr.write(f"seedguide inspect: error: {exc}\n")
        return EXIT_USAGE
    return _report(result, args.json)


def _run_demo(args: argparse.Namespace) -> int:
    from simulators.example import write_example

    folder = args.out / "example"
    # The example's files get new UIDs on every run: replace the previous run's
    # files rather than pile up several copies of the case.
    stale = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    for path in stale:
        path.unlink()
    paths = write_example(folder)
    logger.info("wrote the example case (%d files) to %s", len(paths), folder)
    return _report(survey([folder]), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``seedguide`` command; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.debug("arguments: %s", vars(args))
    handlers = {"inspect": _run_inspect, "demo": _run_demo, "node": run_node}
    return handlers[args.command](args)
