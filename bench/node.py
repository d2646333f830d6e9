"""Throughput of the DICOM node against dcmtk's storescp, both fed by dcmtk's storescu.

A 200-slice 512 x 512 16-bit CT series (~105 MB) is written with pydicom, then
sent by ``storescu`` (TCP_NODELAY) alternately, ``--rounds`` times each, to:

- ``node``: our node (``python -m dicom_node``), fsync of each file and of its
  folder before every success, advertising max PDU 0 (unlimited);
- ``node-16k``: the same node advertising a 16 KB max PDU (dcmtk's default);
- ``storescp``: dcmtk's ``storescp --output-directory`` (writes, never fsyncs)
  with ``--max-pdu 131072``;
- ``storescp-16k``: the same with its default max PDU (16 KB);
- ``pynetdicom``: a stock pynetdicom SCP whose handler stores nothing (what
  pynetdicom's own reactor allows any handler).

storescu never sends PDUs larger than 128 KB (dcmtk's limit), so ``node`` and
``storescp`` receive the same PDUs. Each receiver is probed with a C-ECHO
(``echoscu``) before the timed send. Prints the seconds and MB/s of each run with
the load average, the medians, and the throughput ratios of the medians.

    .venv/bin/python bench/node.py [--slices 200] [--rounds 3] [--baseline CHECKOUT]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

logger = logging.getLogger("bench.node")
ROOT = Path(__file__).resolve().parent.parent


def _dcmtk(name: str) -> str | None:
    """dcmtk's tool, not pynetdicom's console script of the same name in the environment."""
    scripts = Path(sysconfig.get_path("scripts")).resolve()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder and Path(folder).resolve() != scripts and shutil.which(name, path=folder):
            return shutil.which(name, path=folder)
    return None


def write_series(folder: Path, slices: int, size: int = 512) -> int:
    """Write a synthetic CT series; return its total size in bytes."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    total = 0
    for k in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "BENCH", "Bench^Node"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-250.0, -250.0, 1.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.98, 0.98], 1.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = rng.integers(-1000, 2000, (size, size), dtype=np.int16).tobytes()
        path = folder / f"ct{k:04d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        total += path.stat().st_size
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, env: dict[str, str], timeout_s: float = 20.0) -> None:
    """Wait until a C-ECHO succeeds: a whole association, released (a TCP probe would leave one half-open)."""
    command = [_dcmtk("echoscu"), "-to", "2", "-aet", "BENCH", "-aec", "SEEDGUIDE", "127.0.0.1", str(port)]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"no C-ECHO answer on port {port}")


def send(files: list[Path], port: int, env: dict[str, str]) -> float:
    """Run storescu over `files`; return the wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(
        [_dcmtk("storescu"), "-aet", "BENCH", "-aec", "SEEDGUIDE", "127.0.0.1", str(port), *map(str, files)],
        check=True,
        env=env,
        timeout=600,
        capture_output=True,
    )
    return time.perf_counter() - start


def null_scp(port: int) -> int:
    """A pynetdicom Storage SCP answering success without storing (``--null-scp PORT``); runs until killed."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    def handle(event: Any) -> int:
        event.encoded_dataset(include_meta=False)
        return 0x0000

    ae = AE(ae_title="SEEDGUIDE")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = 0
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, handle)])
    return 0


# What each receiver is given: max PDU it advertises (bytes, 0 = unlimited) and how it stores.
RECEIVERS = {
    "node": (0, "our node: fsync(file), rename, fsync(folder) before each success"),
    "node-16k": (16384, "our node, as above"),
    "storescp": (131072, "dcmtk storescp --output-directory: writes, never fsyncs"),
    "storescp-16k": (16384, "dcmtk storescp, as above (its default max PDU)"),
    "pynetdicom": (0, "stock pynetdicom SCP storing nothing"),
}


def receiver_command(kind: str, port: int, out: Path) -> list[str]:
    """The command line of receiver `kind` (a key of RECEIVERS, or ``baseline``) on `port`."""
    max_pdu = str(RECEIVERS.get(kind, RECEIVERS["node"])[0])
    if kind in ("node", "node-16k", "baseline"):
        return [sys.executable, "-m", "dicom_node", "--port", str(port), "--store", str(out),
                "--max-pdu", max_pdu, "--quiet-period", "1", "--allow", "BENCH"]
    if kind == "pynetdicom":
        return [sys.executable, str(Path(__file__).resolve()), "--null-scp", str(port)]
    return [str(_dcmtk("storescp")), "-aet", "SEEDGUIDE", "--output-directory", str(out),
            "--max-pdu", max_pdu, str(port)]


def run_once(
    kind: str, files: list[Path], work: Path, env: dict[str, str], baseline: Path | None = None
) -> float:
    """Start a fresh receiver of `kind`, send the series, stop it; return seconds."""
    port, out = free_port(), work / f"{kind}-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cwd = ROOT
    if kind == "baseline" and baseline is not None:  # another checkout of the node, e.g. the last commit
        cwd, env = baseline, dict(env, PYTHONPATH=str(baseline))
    os.sync()  # no receiver waits behind the writeback of the previous one's files
    log = (work / f"{kind}.log").open("ab")
    proc = subprocess.Popen(receiver_command(kind, port, out), env=env, stdout=log, stderr=log, cwd=cwd)
    try:
        wait_ready(port, env)
        seconds = send(files, port, env)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    stored = sum(1 for p in out.rglob("*") if p.is_file() and re.search(r"(\.dcm|^CT\.)", p.name))
    if kind != "pynetdicom" and stored != len(files):
        raise RuntimeError(f"{kind} stored {stored} of {len(files)} files")
    return seconds


def measure_fsync(folder: Path, size_bytes: int, count: int = 20) -> float:
    """Mean seconds of write + fsync(file) + rename + fsync(folder) of one slice-sized file."""
    data = os.urandom(size_bytes)
    start = time.perf_counter()
    for k in range(count):
        temp, final = folder / f".f{k}.partial", folder / f"f{k}.dcm"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        temp.rename(final)
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
    return (time.perf_counter() - start) / count


def report(times: dict[str, list[float]], megabytes: float, fsync_floor_s: float) -> None:
    """Log the medians, the throughput ratios of the medians and the best ratio the disk allows."""
    median = {kind: statistics.median(runs) for kind, runs in times.items()}
    for kind, seconds in median.items():
        logger.info("median %-13s %6.2f s  %7.1f MB/s  (%d runs)", kind, seconds, megabytes / seconds,
                    len(times[kind]))
    logger.info("throughput ratios of the medians (target: node / storescp >= 0.33):")
    for ours, theirs in (("node", "storescp"), ("node-16k", "storescp-16k"), ("node", "storescp-16k"),
                         ("pynetdicom", "storescp"), ("node", "pynetdicom"), ("node", "baseline")):
        if ours in median and theirs in median:
            logger.info("  %-12s / %-13s = %.2f", ours, theirs, median[theirs] / median[ours])
    if "storescp" in median:
        logger.info("fsync floor: any receiver that makes each slice durable before answering needs at least "
                    "%.2f s here (slices x write+fsync+rename+fsync(dir)), so node / storescp <= %.2f",
                    fsync_floor_s, median["storescp"] / fsync_floor_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=sorted(RECEIVERS), default=sorted(RECEIVERS),
                        help="receivers to run (default: all)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="also run the node of this checkout (e.g. `git worktree` of the last commit)")
    parser.add_argument("--null-scp", type=int, default=None, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_scp is not None:
        return null_scp(args.null_scp)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if any(_dcmtk(tool) is None for tool in ("storescu", "storescp", "echoscu")):
        logger.error("dcmtk (storescu, storescp, echoscu) is not installed: apt-get install dcmtk")
        return 2
    env = dict(os.environ, TCP_NODELAY="1", PYTHONPATH=str(ROOT))
    kinds = [kind for kind in RECEIVERS if kind in args.only] + (["baseline"] if args.baseline else [])
    for kind in kinds:
        max_pdu, what = RECEIVERS.get(kind, (0, f"the node of {args.baseline}"))
        logger.info("%-13s max PDU advertised %-9s %s", kind, max_pdu or "unlimited", what)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        series = work / "series"
        series.mkdir()
        total = write_series(series, args.slices)
        files = sorted(series.glob("*.dcm"))
        megabytes = total / 1e6
        logger.info("series: %d slices, %.1f MB; storescu sends PDUs of at most 128 KB",
                    len(files), megabytes)
        os.sync()
        fsync_s = measure_fsync(work, total // len(files))
        logger.info("write+fsync+rename+fsync(dir) of one slice here: %.2f ms", fsync_s * 1e3)
        for _ in range(args.rounds):
            for kind in kinds:
                seconds = run_once(kind, files, work, env, args.baseline)
                times[kind].append(seconds)
                logger.info("%-13s %6.2f s  %7.1f MB/s  (load %.2f)", kind, seconds, megabytes / seconds,
                            os.getloadavg()[0])
        fsync_after_s = measure_fsync(work, total // len(files))
        logger.info("write+fsync+rename+fsync(dir) of one slice after the runs: %.2f ms", fsync_after_s * 1e3)
    report(times, megabytes, len(files) * min(fsync_s, fsync_after_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
