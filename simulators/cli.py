"""The ``python -m simulators`` command: a scanner on the command line.

``python -m simulators push DIR --to HOST:PORT``    send a folder of DICOM files like a scanner
``python -m simulators replay DIR --to HOST:PORT``  re-send a recorded session with its timing
``python -m simulators case --out DIR --seed N``    write a synthetic case (plan, scans, ground truth)
``python -m simulators procedure --to HOST:PORT``   stream a synthetic procedure live (plan, then scans)

Exit status: 0 when every instance was stored, 1 when some were not, 2 for
bad arguments or unreadable input.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guidance.dicomio.errors import DicomInputError
from simulators.case import CaseSize, PlanOptions, stream_case, write_case
from simulators.phantom import TumourLocation
from simulators.procedure import ScenarioName
from simulators.push import (
    AssociationMode,
    PushOptions,
    PushSummary,
    PushTarget,
    SliceOrder,
    push,
    tls_context,
)
from simulators.replay import ReplayOptions, replay

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:11112); got {text!r}")
    return host.strip("[]"), int(port)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
    return value


def _add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, metavar="DIR", help="folder (searched recursively) or file")
    parser.add_argument("--to", required=True, type=_address, metavar="HOST:PORT", help="the Storage SCP")
    parser.add_argument("--called-ae", default="SEEDGUIDE", help="called AE title (default %(default)s)")
    parser.add_argument("--calling-ae", default="SIMULATOR", help="calling AE title (default %(default)s)")
    parser.add_argument(
        "--per-image", action="store_true", help="one association per image (default: per series)"
    )
    parser.add_argument(
        "--order",
        choices=[o.value for o in SliceOrder],
        default=SliceOrder.POSITION.value,
        help="slice order within a series (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffles and duplicates (default 0)")
    parser.add_argument(
        "--duplicates", type=int, default=0, metavar="K", help="resend K instances per series"
    )
    parser.add_argument(
        "--rate", type=_positive, metavar="IMAGES_PER_S", help="pace (default: as fast as possible)"
    )
    parser.add_argument(
        "--attempts", type=int, default=3, help="sends per instance before giving up (default 3)"
    )
    parser.add_argument("--backoff", type=float, default=0.25, metavar="S", help="first retry wait (doubles)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificates (PEM); enables TLS")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="client private key (PEM)")
    parser.add_argument("--tls-server-name", help="name in the SCP's certificate (default: HOST)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators",
        description="Synthetic patients, plans and procedures; a DICOM sender that acts as a scanner.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    push_parser = commands.add_parser(
        "push",
        help="send a folder of DICOM files to a Storage SCP",
        description="Send DICOM files as a scanner would (C-STORE SCU).",
    )
    _add_push_arguments(push_parser)
    replay_parser = commands.add_parser(
        "replay",
        help="re-send a recorded session with its original timing",
        description="Re-send the series of a folder in time order, waiting the recorded gaps "
        "(AcquisitionDateTime, else ContentDate/Time, SeriesDate/Time, InstanceCreationDate/Time) "
        "divided by --speed, at most --max-gap seconds each.",
    )
    _add_push_arguments(replay_parser)
    replay_parser.add_argument("--speed", type=_positive, default=1.0, help="time compression (default 1)")
    replay_parser.add_argument(
        "--max-gap",
        type=float,
        default=60.0,
        metavar="S",
        help="longest wait between series in seconds (default 60; 'inf' for none)",
    )
    _add_case_commands(commands)
    return parser


def _add_case_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient, plan and procedure")
    parser.add_argument(
        "--scenario",
        choices=[s.value for s in ScenarioName],
        default="standard",
        help="how the procedure goes (default %(default)s)",
    )
    parser.add_argument(
        "--size",
        choices=[s.value for s in CaseSize],
        default=CaseSize.SMALL.value,
        help="planning CT preset (default %(default)s)",
    )
    parser.add_argument(
        "--location",
        choices=[s.value for s in TumourLocation],
        default=TumourLocation.NECK_NODE.value,
        help="where the recurrent tumour lies (default %(default)s)",
    )
    defaults = PlanOptions()
    parser.add_argument(
        "--prescription-gy", type=_positive, default=defaults.prescription_gy, metavar="GY",
        help="prescribed dose to the GTV (D90 goal; default %(default)s, the seed studies use 110-160)",
    )  # fmt: skip
    parser.add_argument(
        "--activity-mci", type=_positive, default=defaults.activity_mci, metavar="MCI",
        help="apparent activity of each I-125 seed (default %(default)s; 0.4-0.8 in the seed studies)",
    )  # fmt: skip


def _plan_options(args: argparse.Namespace) -> PlanOptions:
    return PlanOptions(prescription_gy=args.prescription_gy, activity_mci=args.activity_mci)


def _add_case_commands(commands: Any) -> None:
    case_parser = commands.add_parser(
        "case",
        help="write a synthetic case: plan, procedure scans and ground truth",
        description="Write DIR/plan/{CT,RS,RP}, DIR/scans/NN/*.dcm + truth.json and DIR/case.json.",
    )
    case_parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    _add_case_arguments(case_parser)
    live = commands.add_parser(
        "procedure",
        help="stream a synthetic procedure to a Storage SCP",
        description="Send the plan objects, then each intra-procedure scan after --interval seconds.",
    )
    live.add_argument("--to", required=True, type=_address, metavar="HOST:PORT", help="the Storage SCP")
    live.add_argument("--called-ae", default="SEEDGUIDE", help="called AE title (default %(default)s)")
    live.add_argument("--calling-ae", default="SIMULATOR", help="calling AE title (default %(default)s)")
    live.add_argument(
        "--interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between scans (default %(default)s)",
    )
    _add_case_arguments(live)


def _run_case(args: argparse.Namespace) -> int:
    if args.command == "case":
        summary = write_case(args.out, seed=args.seed, scenario=args.scenario, size=args.size,
                             location=args.location, options=_plan_options(args))  # fmt: skip
        logger.info("case %s: %s; %d scans", args.out, summary["plan"]["statement"], len(summary["scans"]))
        return EXIT_OK
    host, port = args.to
    target = PushTarget(host, port, args.called_ae, args.calling_ae)
    summaries = stream_case(
        target, seed=args.seed, scenario=args.scenario, size=args.size, location=args.location,
        interval_s=args.interval, options=_plan_options(args),
    )  # fmt: skip
    return _report(summaries)


def _options(args: argparse.Namespace) -> tuple[PushTarget, PushOptions]:
    tls = None
    if args.tls_ca is not None:
        tls = tls_context(args.tls_ca, args.tls_cert, args.tls_key)
    elif args.tls_cert is not None or args.tls_key is not None:
        raise ValueError("--tls-cert/--tls-key need --tls-ca (the CA that signed the SCP's certificate)")
    host, port = args.to
    target = PushTarget(host, port, args.called_ae, args.calling_ae, tls, args.tls_server_name)
    options = PushOptions(
        AssociationMode.IMAGE if args.per_image else AssociationMode.SERIES,
        args.order,
        args.seed,
        args.duplicates,
        args.rate,
        args.attempts,
        args.backoff,
    )
    return target, options


def _report(summaries: Sequence[PushSummary]) -> int:
    results = [r for s in summaries for r in s.results]
    failed = [r for r in results if not r.ok]
    for result in failed:
        status = "none" if result.status is None else f"0x{result.status:04X}"
        logger.error("not stored: %s (status %s, %s)", result.source, status, result.error or "no comment")
    logger.info("%d of %d request(s) stored", len(results) - len(failed), len(results))
    return EXIT_FAILED if failed or not results else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulators``: returns the process exit status."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        if args.command in ("case", "procedure"):
            return _run_case(args)
        target, options = _options(args)
        if args.command == "push":
            return _report([push(args.folder, target, options)])
        summary = replay(args.folder, target, ReplayOptions(args.speed, args.max_gap, options))
        return _report(summary.pushes)
    except (DicomInputError, ValueError, OSError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
