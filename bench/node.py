"""Throughput of the DICOM node against dcmtk's storescp, both fed by dcmtk's storescu.

A 200-slice 512 x 512 16-bit CT series (~105 MB) is written with pydicom, then
sent by ``storescu`` alternately to our node (``python -m dicom_node``, fsync
before every success), to ``storescp`` (``--output-directory``, no fsync) and
to a pynetdicom SCP whose handler stores nothing (the ceiling pynetdicom's
reactor sets for any handler), ``--rounds`` times each, with TCP_NODELAY set
for the dcmtk tools. storescu sends 128 KB PDUs to every receiver (dcmtk's
largest; the receivers accept them). Prints the seconds and MB/s of each run,
the load average, and the ratios of the medians.

    .venv/bin/python bench/node.py [--slices 200] [--rounds 2] [--max-pdu 0] [--baseline CHECKOUT]
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


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


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

    def handle(event: Any) -> int:
        event.encoded_dataset(include_meta=False)
        return 0x0000

    ae = AE(ae_title="SEEDGUIDE")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.maximum_pdu_size = 0
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, handle)])
    return 0


def run_once(
    kind: str, files: list[Path], work: Path, env: dict[str, str], max_pdu: int, baseline: Path | None = None
) -> float:
    """Start a fresh receiver of `kind`, send the series, stop it; return seconds."""
    port, out = free_port(), work / f"{kind}-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cwd = ROOT
    if kind == "baseline" and baseline is not None:  # another checkout of the node, e.g. the last commit
        cwd, env = baseline, dict(env, PYTHONPATH=str(baseline))
        kind = "node"
    if kind == "node":
        command = [
            sys.executable,
            "-m",
            "dicom_node",
            "--port",
            str(port),
            "--store",
            str(out),
            "--max-pdu",
            str(max_pdu),
            "--quiet-period",
            "1",
        ]
    elif kind == "pynetdicom":
        command = [sys.executable, str(Path(__file__).resolve()), "--null-scp", str(port)]
    else:
        command = [
            _dcmtk("storescp"),
            "-aet",
            "SEEDGUIDE",
            "--output-directory",
            str(out),
            "--max-pdu",
            "131072",
            str(port),
        ]
    os.sync()  # no receiver waits behind the writeback of the previous one's files
    log = (work / f"{kind}.log").open("ab")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=cwd)
    try:
        wait_listening(port)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-pdu", type=int, default=0, help="our node's max PDU (0 = unlimited)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="also run the node of this checkout (e.g. `git worktree` of the last commit)",
    )
    parser.add_argument("--null-scp", type=int, default=None, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_scp is not None:
        return null_scp(args.null_scp)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if _dcmtk("storescu") is None or _dcmtk("storescp") is None:
        logger.error("dcmtk (storescu, storescp) is not installed: apt-get install dcmtk")
        return 2
    env = dict(os.environ, TCP_NODELAY="1", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        series = work / "series"
        series.mkdir()
        total = write_series(series, args.slices)
        files = sorted(series.glob("*.dcm"))
        megabytes = total / 1e6
        logger.info("series: %d slices, %.1f MB", len(files), megabytes)
        os.sync()
        fsync_s = measure_fsync(work, total // len(files))
        logger.info("write+fsync+rename+fsync(dir) of one slice: %.2f ms", fsync_s * 1e3)
        times: dict[str, list[float]] = {"node": [], "storescp": [], "pynetdicom": []}
        if args.baseline is not None:
            times["baseline"] = []
        for _ in range(args.rounds):
            for kind in times:
                seconds = run_once(kind, files, work, env, args.max_pdu, args.baseline)
                times[kind].append(seconds)
                logger.info(
                    "%-10s %6.2f s  %7.1f MB/s  (load %.2f)",
                    kind,
                    seconds,
                    megabytes / seconds,
                    os.getloadavg()[0],
                )
    node, dcmtk, null = (statistics.median(times[k]) for k in ("node", "storescp", "pynetdicom"))
    for kind, runs in times.items():
        logger.info(
            "median %-10s %6.2f s  %7.1f MB/s",
            kind,
            statistics.median(runs),
            megabytes / statistics.median(runs),
        )
    logger.info(
        "throughput ratios: node / storescp = %.2f; pynetdicom storing nothing / storescp = %.2f; "
        "node / pynetdicom storing nothing = %.2f",
        dcmtk / node,
        dcmtk / null,
        null / node,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
