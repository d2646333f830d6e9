"""The ``seedguide`` command: one entry point, one subcommand per job.

``seedguide inspect PATH...``  what a folder of DICOM files holds, and what is wrong with it
``seedguide demo``             a simulated procedure through the guidance pipeline (headless)
``seedguide node``             the DICOM node alone, as a service
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dicom_node.server import add_arguments as add_node_arguments
from dicom_node.server import run as run_node
from guidance.dicomio.errors import DicomInputError
from guidance.dicomio.survey import Survey, survey
from seedguide.survey_text import format_survey, has_problems

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
        help="simulate a procedure and run every scan through the guidance pipeline (headless)",
        description="Plan a synthetic head-and-neck patient, simulate the procedure scan by scan and "
        "run each scan through the guidance pipeline (registration, needles, seeds, dose, metrics, "
        "cold spots, suggested seeds), printing one line per scan. The session folder OUT keeps the "
        "plan, the scans with their ground truth and each result.json (a new session replaces it).",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("seedguide-demo"), help="session folder (default: %(default)s)"
    )
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated patient and procedure")
    demo.add_argument(
        "--scenario",
        default="cold-spot",
        choices=["easy", "standard", "thick-slices", "cold-spot", "hard"],
        help="how the simulated procedure goes (default: %(default)s)",
    )

    node = commands.add_parser(
        "node",
        help="run the DICOM node alone: receive, store and announce series until SIGTERM",
        description="Run the DICOM node (Verification and Storage SCP) as a service; "
        "see docs/conformance.md.",
    )
    add_node_arguments(node)
    return parser


def _report(result: Survey, as_json: bool) -> int:
    if as_json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_survey(result))
    return EXIT_PROBLEMS if has_problems(result) else EXIT_OK


def _run_inspect(args: argparse.Namespace) -> int:
    try:
        result = survey(args.paths)
    except DicomInputError as exc:
        sys.stderr.write(f"seedguide inspect: error: {exc}\n")
        return EXIT_USAGE
    return _report(result, args.json)


def _run_demo(args: argparse.Namespace) -> int:
    import shutil

    from seedguide.demo import run_demo

    marker = args.out / "session.json"
    if args.out.exists() and any(args.out.iterdir()) and not marker.is_file():
        sys.stderr.write(f"seedguide demo: error: {args.out} exists and is not a demo session folder\n")
        return EXIT_USAGE
    # A session folder of an earlier demo is replaced, never merged with the new one.
    shutil.rmtree(args.out, ignore_errors=True)
    run_demo(args.out, seed=args.seed, scenario=args.scenario, write=sys.stdout)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``seedguide`` command; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.debug("arguments: %s", vars(args))
    handlers = {"inspect": _run_inspect, "demo": _run_demo, "node": run_node}
    return handlers[args.command](args)
