"""The durable store: raw bytes kept as received, duplicates once, versions, index rebuilt, full disk."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import UID

from dicom_node.index import Index
from dicom_node.store import (
    INDEX_NAME,
    DurableWriter,
    Store,
    StoreOutcome,
    dataset_offset,
    file_meta_bytes,
    safe_name,
)
from dicom_node.validation import validate_instance

from .datasets import SeriesSpec, ct_slice, file_bytes


def _received(ds, calling_ae: str = "SCANNER") -> tuple[bytes, int, bytes]:
    """What the handler builds: our file meta + the dataset bytes as a peer would send them."""
    raw = file_bytes(ds)
    body = raw[dataset_offset(raw):]
    meta = file_meta_bytes(sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
                           transfer_syntax=ds.file_meta.TransferSyntaxUID, calling_ae=calling_ae,
                           called_ae="SEEDGUIDE")
    return meta + body, len(meta), body


def _put(store: Store, ds, calling_ae: str = "SCANNER"):
    data, offset, _ = _received(ds, calling_ae)
    header = validate_instance(
        data, offset, transfer_syntax=UID(ds.file_meta.TransferSyntaxUID),
        request_sop_class_uid=ds.SOPClassUID, request_sop_instance_uid=ds.SOPInstanceUID,
    )
    return store.put(data, offset, header, calling_ae, time.time())


def test_file_holds_the_dataset_bytes_as_received(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    ds = ct_slice(SeriesSpec(), 0)
    result = _put(store, ds)
    _, _, body = _received(ds)
    written = result.instance.path.read_bytes()
    assert result.outcome is StoreOutcome.STORED
    assert written[result.instance.dataset_offset:] == body
    read = dcmread(result.instance.path)
    assert read.SOPInstanceUID == ds.SOPInstanceUID
    assert read.file_meta.SendingApplicationEntityTitle == "SCANNER"
    assert read.file_meta.ReceivingApplicationEntityTitle == "SEEDGUIDE"
    assert result.instance.path.parent.name == ds.SeriesInstanceUID
    assert result.instance.path.parent.parent.name == ds.StudyInstanceUID
    assert result.instance.path.name == f"{ds.SOPInstanceUID}__v1.dcm"
    store.close()


def test_identical_resend_is_stored_once_and_different_content_is_a_new_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    spec = SeriesSpec()
    ds = ct_slice(spec, 0)
    first = _put(store, ds)
    again = _put(store, ds, calling_ae="OTHER")  # same dataset from another sender: same content
    changed = ct_slice(spec, 0, sop_uid=ds.SOPInstanceUID, fill=7)
    newer = _put(store, changed)
    assert again.outcome is StoreOutcome.DUPLICATE and again.instance.path == first.instance.path
    assert newer.outcome is StoreOutcome.NEW_VERSION and newer.instance.version == 2
    files = sorted(p.name for p in first.instance.path.parent.iterdir())
    assert files == [f"{ds.SOPInstanceUID}__v1.dcm", f"{ds.SOPInstanceUID}__v2.dcm"]
    assert [i.path for i in store.series_instances(spec.series_uid)] == [newer.instance.path]
    # the older version is kept, untouched, for audit
    assert dcmread(first.instance.path).PixelData == ds.PixelData
    store.close()


def test_index_is_rebuilt_from_the_files(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    spec = SeriesSpec()
    for k in range(5):
        _put(store, ct_slice(spec, k))
    store.close()
    (root / INDEX_NAME).unlink()  # lose the cache entirely
    stale = root / spec.study_uid / spec.series_uid / ".1.2.3.999.partial"
    stale.write_bytes(b"half a file")
    reopened = Store(root)
    instances = reopened.series_instances(spec.series_uid)
    assert len(instances) == 5
    assert sorted(i.header.instance_number or 0 for i in instances) == [1, 2, 3, 4, 5]
    assert {i.calling_ae for i in instances} == {"SCANNER"}
    assert reopened.index.counts() == (1, 1, 5)
    assert not stale.exists()
    reopened.close()


def test_names_come_from_valid_uids_or_a_hash() -> None:
    assert safe_name("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
    for bad in ("../../etc/passwd", "1.2.03", "1.2.3/4", "", "1." * 40, "1.2\n", "1.2\x00"):
        name = safe_name(bad)
        assert name.startswith("h") and len(name) == 41 and name[1:].isalnum()
    assert safe_name("../x") != safe_name("../y")


class _FullDisk(DurableWriter):
    """Writes half the file, then fails as a full disk does."""

    def _write_all(self, fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_leaves_no_partial_file_and_keeps_what_was_stored(tmp_path: Path) -> None:
    root = tmp_path / "store"
    spec = SeriesSpec()
    store = Store(root)
    kept = _put(store, ct_slice(spec, 0))
    before = kept.instance.path.read_bytes()
    store.close()
    failing = Store(root, writer=_FullDisk())
    with pytest.raises(OSError) as info:
        _put(failing, ct_slice(spec, 1))
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in kept.instance.path.parent.iterdir()) == [kept.instance.path.name]
    assert kept.instance.path.read_bytes() == before
    assert len(failing.series_instances(spec.series_uid)) == 1
    failing.close()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_raises_enospc_and_leaves_no_partial_file(tiny_tmpfs: Path) -> None:
    store = Store(tiny_tmpfs / "store")
    spec = SeriesSpec(rows=128, columns=128)  # 32 KiB per slice: the 256 KiB disk fills up
    stored, error = [], None
    try:
        for k in range(20):
            stored.append(_put(store, ct_slice(spec, k)))
    except OSError as exc:
        error = exc
    finally:
        store.close()
    assert error is not None and error.errno == errno.ENOSPC
    folder = tiny_tmpfs / "store" / spec.study_uid / spec.series_uid
    assert sorted(p.name for p in folder.iterdir()) == sorted(r.instance.path.name for r in stored)
    for result in stored:
        assert dcmread(result.instance.path).InstanceNumber == result.instance.header.instance_number


def test_index_counts_studies_series_instances(tmp_path: Path) -> None:
    index = Index(tmp_path / "i.sqlite")
    assert index.counts() == (0, 0, 0)
    index.close()
