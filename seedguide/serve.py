"""``seedguide serve``: the DICOM node, the guidance pipeline and the session folder for a live procedure.

The plan comes from a folder (``--plan DIR``) or is awaited from the planning
system (``--wait-for-plan``); each scan pushed by the scanner is analysed as
soon as its series is complete and its one-line summary printed (and shown in
the viewer unless ``--headless``). Stop with Ctrl-C or SIGTERM: the node
finishes open associations, queued scans are analysed, nothing received is lost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from dicom_node.config import ConfigError
from dicom_node.server import config_from_args
from guidance.dicomio.dataset import load_datasets
from guidance.dicomio.errors import DicomInputError
from guidance.pipeline import GuidanceResult
from seedguide.forward import parse_destination
from seedguide.live import viewer_possible
from seedguide.service import GuidanceService, Published

__all__ = ["add_serve_arguments", "printer", "run_serve", "scan_summary"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def scan_summary(index: int, result: GuidanceResult, prescription_gy: float | None, seconds: float) -> str:
    """One line an operator reads after a scan: is the target covered, and if not, what to add."""
    verdict = result.registration.quality.verdict.value if result.registration is not None else "not run"
    seeds = len(result.seeds.seeds) if result.seeds is not None else 0
    needles = len(result.needles.needles) if result.needles is not None else 0
    d90 = result.target_d90_gy
    coverage = "no D90"
    if d90 is not None and prescription_gy:
        coverage = f"D90 {d90:.1f} Gy ({100 * d90 / prescription_gy:.0f}% of {prescription_gy:g})"
    cold = result.cold_spots.cold_spots if result.cold_spots is not None else ()
    largest = f", largest {max(c.volume_cc for c in cold):.2f} cc" if cold else ""
    suggested = len(result.suggestions.suggestions) if result.suggestions is not None else 0
    return (
        f"scan {index}: registration {verdict}, {needles} needle(s), {seeds} seed(s) found, {coverage}, "
        f"{len(cold)} cold spot(s){largest}, {suggested} seed(s) suggested, "
        f"{len(result.warnings)} warning(s), {seconds:.1f} s"
    )


def printer(write: TextIO, prescription_gy: Callable[[], float | None]) -> Callable[[Published], None]:
    """A subscriber printing each result's summary and warnings."""

    def _print(published: Published) -> None:
        if not published.complete:
            return  # the line comes with the suggestions
        seconds = published.published_at - published.announced_at
        write.write(scan_summary(published.record.index, published.result, prescription_gy(), seconds) + "\n")
        for warning in published.result.warnings:
            write.write(f"  warning: {warning}\n")
        write.flush()

    return _print


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """``seedguide serve`` options: plan source, working folder, viewer, and the node's options."""
    from dicom_node.server import add_arguments

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--plan", type=Path, metavar="DIR",
                        help="folder with the planning CT, RT Structure Set and RT Plan")  # fmt: skip
    source.add_argument("--wait-for-plan", action="store_true",
                        help="wait for the planning system to send the plan to the node")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="working folder: DIR/store (received files), DIR/session (the session); "
                        "default seedguide-YYYYmmdd-HHMMSS")  # fmt: skip
    parser.add_argument("--headless", action="store_true", help="no viewer: print one line per scan")
    parser.add_argument("--verification", action="store_true",
                        help="the scans verify a finished implant (post-implant CT): planned seeds not found "
                        "are reported missing")  # fmt: skip
    parser.add_argument("--export-to", metavar="AE@HOST:PORT",
                        help="send each scan's DICOM exports (RT Dose, RT Structure Set, RT Plan) to this "
                        "Storage SCP, e.g. the planning system or a PACS")  # fmt: skip
    add_arguments(parser)


def _plan_files(folder: Path) -> list[Path]:
    loaded = load_datasets(folder, stop_before_pixels=True)
    return [item.path for item in loaded if item.path is not None]


def run_serve(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM / SIGINT (or ``stop`` is set); returns the exit status."""
    try:
        config = config_from_args(args)
        plan_files = _plan_files(args.plan) if args.plan is not None else None
        out = args.out or Path(f"seedguide-{dt.datetime.now():%Y%m%d-%H%M%S}")
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out} is not empty: each procedure needs a new working folder")
        export_to = parse_destination(args.export_to, config.ae_title) if args.export_to else None
        service = GuidanceService(out, config, plan_files=plan_files, export_to=export_to,
                                  verification=args.verification)  # fmt: skip
    except (ConfigError, DicomInputError, FileExistsError, ValueError) as exc:
        sys.stderr.write(f"seedguide serve: error: {exc}\n")
        return EXIT_USAGE
    service.subscribe(
        printer(sys.stdout, lambda: service.bundle.plan.prescription_gy if service.bundle else None)
    )
    if not args.headless and viewer_possible("serve"):
        from seedguide.live import run_with_viewer

        def _procedure(publish: Callable[[Published], None], set_plan: Any, stop: threading.Event) -> int:
            service.subscribe(publish)
            service.subscribe_plan(set_plan)
            return _serve(service, out, config.ae_title, stop)

        return run_with_viewer(_procedure, title="seedguide")
    stop = stop or threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _serve(service, out, config.ae_title, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve(service: GuidanceService, out: Path, ae_title: str, stop: threading.Event) -> int:
    try:
        service.start()
    except OSError as exc:
        sys.stderr.write(f"seedguide serve: error: cannot start the node: {exc}\n")
        return EXIT_ERROR
    host, port = service.node.address
    sys.stdout.write(f"listening on {host}:{port} as {ae_title}; working folder {out}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        service.stop()
    sys.stdout.write(f"session folder: {out / 'session'}\n")
    return EXIT_ERROR if service.failures else EXIT_OK
