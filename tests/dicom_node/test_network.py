"""The node on the network: dcmtk and pynetdicom peers, concurrency, and every kind of bad input."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.assembler import SeriesKind
from dicom_node.config import CallerRule
from dicom_node.conformance import StoreStatus
from dicom_node.store import DurableWriter, dataset_offset, file_meta_bytes
from tests.dcmtk import dcmtk_tool

from .datasets import SeriesSpec, ct_slice, file_bytes, rt_plan, write
from .peers import associate, send, send_raw

pytestmark = pytest.mark.network
DCMTK_TIMEOUT = ["-to", "10", "-ta", "10", "-td", "10"]


def _series_files(folder: Path, spec: SeriesSpec, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write(ct_slice(spec, k), folder / f"ct{k:03d}.dcm") for k in range(count)]


def test_dcmtk_echoscu_and_storescu(start_node, tmp_path: Path) -> None:
    running = start_node()
    echo = subprocess.run(
        [
            dcmtk_tool("echoscu"),
            *DCMTK_TIMEOUT,
            "-aet",
            "SCANNER",
            "-aec",
            "SEEDGUIDE",
            "127.0.0.1",
            str(running.port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert echo.returncode == 0, echo.stderr
    spec = SeriesSpec()
    files = _series_files(tmp_path / "out", spec, 6)
    plan = rt_plan(spec)
    plan.file_meta.MediaStorageSOPClassUID = plan.SOPClassUID
    plan.file_meta.MediaStorageSOPInstanceUID = plan.SOPInstanceUID
    files.append(write(plan, tmp_path / "out" / "plan.dcm"))
    store = subprocess.run(
        [
            dcmtk_tool("storescu"),
            *DCMTK_TIMEOUT,
            "-aet",
            "SCANNER",
            "-aec",
            "SEEDGUIDE",
            "127.0.0.1",
            str(running.port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert store.returncode == 0, store.stderr
    got = {r.series_instance_uid: r for r in (running.next_series(), running.next_series())}
    ct, rt = got[spec.series_uid], got[plan.SeriesInstanceUID]
    assert ct.instance_count == 6 and ct.kind is SeriesKind.IMAGES and ct.revision == 1 and ct.warnings == ()
    assert [dcmread(p).InstanceNumber for p in ct.paths] == [1, 2, 3, 4, 5, 6]
    assert rt.kind is SeriesKind.PLAN and rt.instance_count == 1
    # stored as received: the dataset bytes equal those of the file storescu sent
    for sent, stored in zip(files[:6], ct.paths, strict=True):
        sent_bytes, stored_bytes = sent.read_bytes(), stored.read_bytes()
        assert stored_bytes[dataset_offset(stored_bytes) :] == sent_bytes[dataset_offset(sent_bytes) :]
    assert dcmread(ct.paths[0]).file_meta.SendingApplicationEntityTitle == "SCANNER"


def test_concurrent_associations_interleaved_series(start_node) -> None:
    # Senders start at different times on two cores: a longer quiet period keeps each
    # series in one announcement (a shorter one would announce it early, then again).
    running = start_node(quiet_period_s=2.0)
    specs = [SeriesSpec() for _ in range(3)]
    slices = {spec.series_uid: [ct_slice(spec, k) for k in range(12)] for spec in specs}
    # three senders, each carrying every third slice of every series, interleaved
    batches = [[slices[s.series_uid][k] for k in range(j, 12, 3) for s in specs] for j in range(3)]
    results: dict[int, list[int]] = {}

    def _send(j: int) -> None:
        results[j] = send(running.port, batches[j], calling_ae=f"SCANNER{j}")

    threads = [threading.Thread(target=_send, args=(j,)) for j in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(status == 0 for j in range(3) for status in results[j])
    announced = {r.series_instance_uid: r for r in (running.next_series() for _ in specs)}
    for spec in specs:
        ready = announced[spec.series_uid]
        assert ready.instance_count == 12 and ready.warnings == ()
        assert [round(float(dcmread(p).ImagePositionPatient[2]), 1) for p in ready.paths] == [
            k * 2.5 for k in range(12)
        ]
        assert len(list(ready.paths[0].parent.iterdir())) == 12  # each instance stored once
    # resending everything is acknowledged and stores nothing new
    assert send(running.port, batches[0]) == [0] * len(batches[0])
    assert running.node.store.index.counts() == (3, 3, 36)


def _rejection(assoc) -> tuple[int, int, int]:
    rsp = assoc.acceptor.primitive
    return rsp.result, rsp.result_source, rsp.diagnostic


def test_association_rejections(start_node, caplog) -> None:
    rules = (CallerRule("SCANNER"), CallerRule("CT_ONLY_REMOTE", ("127.0.0.2",)))
    running = start_node(allowed_callers=rules)
    wrong_called = associate(running.port, called_ae="NOT_US")
    assert wrong_called.is_rejected and _rejection(wrong_called) == (1, 1, 7)
    unknown_calling = associate(running.port, calling_ae="INTRUDER")
    assert unknown_calling.is_rejected and _rejection(unknown_calling) == (1, 1, 3)
    wrong_address = associate(running.port, calling_ae="CT_ONLY_REMOTE")
    assert wrong_address.is_rejected and _rejection(wrong_address) == (1, 1, 3)
    good = associate(running.port)
    assert good.is_established
    assert good.send_c_echo().Status == 0
    good.release()
    assert "to NOT_US rejected: Called AE title not recognised" in caplog.text
    assert "INTRUDER@127.0.0.1 to SEEDGUIDE rejected" in caplog.text
    assert "CT_ONLY_REMOTE@127.0.0.1 rejected: address not allowed" in caplog.text


def test_bad_datasets_get_the_right_status_and_lose_nothing(
    start_node, tmp_path: Path, monkeypatch, caplog
) -> None:
    running = start_node()
    spec = SeriesSpec()
    good = ct_slice(spec, 0)
    assert send(running.port, [good]) == [0]
    stored = running.next_series().paths[0]
    before = stored.read_bytes()

    full = file_bytes(ct_slice(spec, 1))
    offset = dataset_offset(full)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(full[: offset + (len(full) - offset) // 2 + 3])
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(full[:offset] + os.urandom(300) + b"\xff" * 64)
    mismatch = ct_slice(spec, 2)
    mismatch_bytes = file_bytes(mismatch)
    body = mismatch_bytes[dataset_offset(mismatch_bytes) :]
    meta = file_meta_bytes(
        sop_class_uid=mismatch.SOPClassUID,
        sop_instance_uid="1.2.3.77",
        transfer_syntax=ExplicitVRLittleEndian,
        calling_ae="X",
        called_ae="Y",
    )
    mismatch_file = tmp_path / "mismatch.dcm"
    mismatch_file.write_bytes(meta + body)
    results = send_raw(running.port, [truncated, garbage, mismatch_file], monkeypatch)
    assert [status for status, _ in results] == [
        StoreStatus.UNREADABLE_DATASET,
        StoreStatus.UNREADABLE_DATASET,
        StoreStatus.DATASET_DOES_NOT_MATCH,
    ]
    assert all(comment for _, comment in results)

    wrong_pixels = ct_slice(spec, 3)
    wrong_pixels.Columns = 20
    assert send(running.port, [wrong_pixels]) == [StoreStatus.PIXEL_DATA_LENGTH]
    assert "refused (0xC230)" in caplog.text and "refused (0xA900)" in caplog.text
    assert stored.read_bytes() == before
    assert sorted(p.name for p in stored.parent.iterdir()) == [stored.name]


class _FullDisk(DurableWriter):
    def _write_all(self, fd: int, data: bytes) -> None:
        os.write(fd, data[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_answers_out_of_resources(start_node, caplog) -> None:
    running = start_node(writer=_FullDisk())
    spec = SeriesSpec()
    assert send(running.port, [ct_slice(spec, 0)]) == [StoreStatus.OUT_OF_RESOURCES]
    assert "out of resources" in caplog.text and "No space left on device" in caplog.text
    folder = running.node.config.store_dir / spec.study_uid / spec.series_uid
    assert list(folder.iterdir()) == []
    assert running.node.store.index.counts() == (0, 0, 0)
