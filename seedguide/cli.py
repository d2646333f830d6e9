"""The ``seedguide`` command: one entry point, one subcommand per job.

``seedguide inspect PATH...``  what a folder of DICOM files holds, and what is wrong with it
``seedguide demo``             a simulated procedure streamed into the node and analysed live
``seedguide serve``            node + guidance pipeline + session folder for a live procedure
``seedguide analyze``          one scan, with a plan or (post-implant) with its own structures
``seedguide view``             a recorded session in the viewer, or rendered to a PNG
``seedguide node``             the DICOM node alone, as a service
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicom_node.server import add_arguments as add_node_arguments
from dicom_node.server import run as run_node
from guidance.dicomio.errors import DicomInputError
from guidance.dicomio.survey import Survey, survey
from guidance.dose import available_source_models
from guidance.pipeline import GuidanceResult
from seedguide.live import viewer_possible
from seedguide.serve import add_serve_arguments, run_serve
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
        help="a simulated procedure streamed into the node and analysed live (start here)",
        description="Plan a synthetic head-and-neck patient, start the guidance service (DICOM node + "
        "pipeline) on a free loopback port, send it the plan as a planning system would and each "
        "intra-procedure scan as a scanner would; every scan is analysed as it arrives (registration, "
        "needles, seeds, dose, metrics, cold spots, suggested seeds) and summarised in one line. The "
        "working folder OUT keeps the node's store and the session (an earlier demo there is replaced).",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("seedguide-demo"), help="working folder (default: %(default)s)"
    )
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated patient and procedure")
    demo.add_argument(
        "--scenario",
        default="cold-spot",
        choices=["easy", "standard", "thick-slices", "cold-spot", "hard"],
        help="how the simulated procedure goes (default: %(default)s)",
    )
    demo.add_argument("--headless", action="store_true", help="no viewer: print one line per scan and exit")

    serve = commands.add_parser(
        "serve",
        help="live procedure: DICOM node + guidance pipeline + session folder (+ viewer)",
        description="Receive the plan (from --plan DIR, or sent by the planning system with "
        "--wait-for-plan) and every intra-procedure scan the scanner sends; analyse each scan when its "
        "series is complete and record it in DIR/session (result.json, DICOM exports). "
        "Stop with Ctrl-C or SIGTERM.",
    )
    add_serve_arguments(serve)

    view = commands.add_parser(
        "view",
        help="open a session folder in the viewer (or render it to a PNG)",
        description="Show a recorded session (scans, plan structures, dose, seeds, cold spots, DVH, metrics, "
        "suggestions; see docs/viewer.md). With --screenshot it renders the window to a PNG and exits.",
    )
    view.add_argument("session", type=Path, metavar="SESSION_DIR", help="folder holding session.json")
    view.add_argument("--scan", type=int, help="scan number to show (default: the last analysed)")
    view.add_argument("--screenshot", type=Path, metavar="PNG", help="render to this file and exit")
    view.add_argument("--part", default="window", choices=["window", "canvas", "dvh"],
                      help="what --screenshot renders (default: %(default)s)")  # fmt: skip

    analyze = commands.add_parser(
        "analyze",
        help="analyse one scan against a plan, or post-implant with its own structures",
        description="Run one CT series through the guidance pipeline and write OUT/result.json and "
        "OUT/exports (RT Dose, RT Structure Set with cold spots, RT Plan of the seeds found). With --plan "
        "the scan is registered to the planning CT; without it the structures must have been drawn on "
        "the scan (post-implant verification of a case planned elsewhere).",
    )
    analyze.add_argument("--scan", type=Path, required=True, metavar="DIR", help="the CT series")
    analyze.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    analyze.add_argument("--plan", type=Path, metavar="DIR", help="planning CT + RT Structure Set + RT Plan")
    analyze.add_argument(
        "--structures", type=Path, metavar="RS.dcm", help="RT Structure Set drawn on the scan"
    )
    analyze.add_argument("--prescription-gy", type=float, help="prescribed dose to the target, Gy")
    analyze.add_argument(
        "--source", help=f"TG-43 source model, one of {', '.join(available_source_models())}"
    )
    analyze.add_argument("--strength-u", type=float, help="air-kerma strength of each seed, U")
    analyze.add_argument(
        "--during-procedure", action="store_true",
        help="planned seeds not found are 'not yet implanted' rather than missing",
    )  # fmt: skip

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

    from seedguide.demo import DemoOptions, run_demo

    # An earlier demo left its session, or at least the node's store (stopped before the plan).
    markers = (args.out / "session" / "session.json", args.out / "store" / "index.sqlite")
    if args.out.exists() and any(args.out.iterdir()) and not any(m.is_file() for m in markers):
        sys.stderr.write(f"seedguide demo: error: {args.out} exists and is not a demo working folder\n")
        return EXIT_USAGE
    # A working folder of an earlier demo is replaced, never merged with the new one.
    shutil.rmtree(args.out, ignore_errors=True)
    options = DemoOptions(seed=args.seed, scenario=args.scenario)
    if not args.headless and viewer_possible("demo"):
        from seedguide.live import run_with_viewer

        def _procedure(publish: Any, set_plan: Any, stop: threading.Event) -> None:
            run_demo(args.out, options=options, write=sys.stdout, subscribers=(publish,),
                     plan_subscribers=(set_plan,), stop=stop)  # fmt: skip

        return run_with_viewer(_procedure, title="seedguide demo")
    published = run_demo(args.out, options=options, write=sys.stdout)
    return EXIT_OK if published else EXIT_PROBLEMS


def _run_view(args: argparse.Namespace) -> int:
    from seedguide.live import display_problem

    problem = display_problem()
    if problem is not None:
        sys.stderr.write(f"seedguide view: error: {problem}\n")
        return EXIT_USAGE
    if args.screenshot is not None:
        from viewer import screenshot_session

        try:
            written = screenshot_session(args.session, args.screenshot, scan=args.scan, part=args.part)
        except (FileNotFoundError, LookupError, ValueError) as exc:
            sys.stderr.write(f"seedguide view: error: {exc}\n")
            return EXIT_USAGE
        sys.stdout.write(f"written: {written}\n")
        return EXIT_OK
    import napari

    from viewer import open_session

    try:
        open_session(args.session, scan=args.scan)
    except (FileNotFoundError, LookupError, ValueError) as exc:
        sys.stderr.write(f"seedguide view: error: {exc}\n")
        return EXIT_USAGE
    napari.run()
    return EXIT_OK


def _run_analyze(args: argparse.Namespace) -> int:
    from seedguide.analyze import NoPlan, analyze
    from seedguide.serve import scan_summary

    no_plan = None
    needed = {"--structures": args.structures, "--prescription-gy": args.prescription_gy,
              "--source": args.source, "--strength-u": args.strength_u}  # fmt: skip
    if args.plan is None:
        missing = [flag for flag, value in needed.items() if value is None]
        if missing:
            sys.stderr.write(f"seedguide analyze: error: without --plan, give {', '.join(missing)}\n")
            return EXIT_USAGE
        no_plan = NoPlan(args.structures, args.prescription_gy, args.source, args.strength_u)
    elif any(value is not None for value in needed.values()):
        sys.stderr.write("seedguide analyze: error: --plan excludes --structures/--prescription-gy/--source/"
                         "--strength-u (they come from the plan)\n")  # fmt: skip
        return EXIT_USAGE
    try:
        result = analyze(args.scan, args.out, plan_dir=args.plan, no_plan=no_plan,
                         verification=not args.during_procedure)  # fmt: skip
    except (DicomInputError, ValueError, KeyError) as exc:
        sys.stderr.write(f"seedguide analyze: error: {exc}\n")
        return EXIT_USAGE
    prescription = args.prescription_gy if no_plan else None
    if result.dose_report is not None:
        prescription = result.dose_report.prescription_gy
    sys.stdout.write(scan_summary(1, result, prescription, sum(s.seconds for s in result.stages)) + "\n")
    sys.stdout.write(_metrics_text(result))
    for warning in result.warnings:
        sys.stdout.write(f"  warning: {warning}\n")
    sys.stdout.write(f"written: {args.out / 'result.json'} and {args.out / 'exports'}\n")
    return EXIT_OK


def _metrics_text(result: GuidanceResult) -> str:
    report = result.dose_report
    if report is None:
        return "  no dose metrics\n"
    lines = []
    for target in report.targets:
        lines.append(
            f"  {target.structure_name}: D90 {target.d90_gy:.1f} Gy, V100 {target.v100_percent:.1f}%, "
            f"V150 {target.v150_percent:.1f}%, V200 {target.v200_percent:.1f}%"
        )
    for organ in report.organs:
        doses = {"D0.1cc": organ.d0_1cc_gy, "D2cc": organ.d2cc_gy, "Dmax": organ.dmax_gy}
        shown = ", ".join(f"{k} {v:.1f} Gy" for k, v in doses.items() if v is not None)
        lines.append(f"  {organ.structure_name}: {shown}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``seedguide`` command; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.debug("arguments: %s", vars(args))
    handlers = {"inspect": _run_inspect, "demo": _run_demo, "node": run_node, "serve": run_serve,
                "analyze": _run_analyze, "view": _run_view}  # fmt: skip
    return handlers[args.command](args)
