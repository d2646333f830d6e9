"""Push like a scanner: to dcmtk storescp, to our node (a subprocess) and to a recording SCP."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from guidance.dicomio.dataset import StudyContext, save
from simulators.push import (
    AssociationMode,
    InstanceResult,
    PushOptions,
    PushTarget,
    SliceOrder,
    collect_instances,
    push,
    tls_context,
)

from .peers import ct_series, free_port, make_pki, our_node, recording_scp, storescp

pytestmark = pytest.mark.network
WHEN = dt.datetime(2024, 5, 6, 9, 30, 0)
FAST = PushOptions(backoff_s=0.05)
# pynetdicom 3.0 shuts down but does not close the socket of a refused connection (transport.py,
# AssociationSocket.connect): the ResourceWarning is theirs, raised when the socket is collected.
REFUSED_SOCKET_LEAK = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _target(port: int, called_ae: str = "SEEDGUIDE") -> PushTarget:
    return PushTarget("127.0.0.1", port, called_ae=called_ae, calling_ae="SCANNER", timeout_s=10)


@pytest.fixture
def series_dir(tmp_path: Path) -> Path:
    """Five CT slices saved under names unrelated to their order (names are SOP Instance UIDs)."""
    folder = tmp_path / "series"
    save(ct_series(StudyContext(), WHEN, slices=5), folder)
    return folder


def test_in_order_by_position_whatever_the_file_names(series_dir: Path) -> None:
    with recording_scp() as scp:
        summary = push(series_dir, _target(scp.port), FAST)
    assert summary.ok and summary.associations == 1
    assert [r.position_mm for r in scp.received] == [0.0, 2.5, 5.0, 7.5, 10.0]
    assert [r.status for r in summary.results] == [0] * 5
    # The only context proposed for these Explicit VR files is accepted with their own syntax.
    assert {r.transfer_syntax for r in scp.received} == {ExplicitVRLittleEndian}


def test_shuffled_order_is_seeded(series_dir: Path) -> None:
    orders = []
    with recording_scp() as scp:
        for seed in (3, 3, 11):
            scp.received.clear()
            push(series_dir, _target(scp.port), PushOptions(order=SliceOrder.SHUFFLED, seed=seed))
            orders.append([r.position_mm for r in scp.received])
    assert orders[0] == orders[1], "the same seed must give the same order"
    assert sorted(orders[0]) == [0.0, 2.5, 5.0, 7.5, 10.0]
    expected = [0.0, 2.5, 5.0, 7.5, 10.0]
    random.Random(3).shuffle(expected)
    assert orders[0] == expected and orders[0] != sorted(orders[0])
    assert orders[2] != orders[0]


def test_per_image_associations_and_progress_callback(series_dir: Path) -> None:
    seen: list[tuple[InstanceResult, int, int]] = []
    with recording_scp() as scp:
        summary = push(series_dir, _target(scp.port), PushOptions(association="image"),
                       progress=lambda result, done, planned: seen.append((result, done, planned)))
    assert summary.ok and summary.associations == 5 and len(scp.received) == 5
    assert [(done, planned) for _, done, planned in seen] == [(k, 5) for k in range(1, 6)]
    assert PushOptions(association="image").association is AssociationMode.IMAGE


def test_pacing_rate_within_20_percent(tmp_path: Path) -> None:
    save(ct_series(StudyContext(), WHEN, slices=12), tmp_path)
    with recording_scp() as scp:
        summary = push(tmp_path, _target(scp.port), PushOptions(images_per_s=20.0))
    times = [r.at_s for r in scp.received]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert summary.ok and len(times) == 12
    assert rate == pytest.approx(20.0, rel=0.2)


def test_retry_after_failure_status(series_dir: Path) -> None:
    # Out of resources (0xA700, PS3.4 B.2.3) on the first request, then success.
    with recording_scp(statuses=[0xA700]) as scp:
        summary = push(series_dir, _target(scp.port), FAST)
    assert summary.ok
    assert [r.attempts for r in summary.results] == [2, 1, 1, 1, 1]
    assert len(scp.received) == 6 and len(scp.stored()) == 5
    assert scp.received[0].sop_instance_uid == scp.received[1].sop_instance_uid


def test_retries_are_bounded(series_dir: Path) -> None:
    with recording_scp(statuses=[0xA700] * 6) as scp:
        summary = push(series_dir, _target(scp.port), PushOptions(max_attempts=3, backoff_s=0.01))
    assert not summary.ok
    assert [(r.status, r.attempts) for r in summary.failed] == [(0xA700, 3), (0xA700, 3)]
    assert len(scp.received) == 6 + 3 and len(scp.stored()) == 3


@REFUSED_SOCKET_LEAK
def test_retries_until_the_peer_comes_up(series_dir: Path) -> None:
    port = free_port()
    # Association attempts at ~0, 0.2, 0.6, 1.4 s: the peer starts at 0.5 s.
    with recording_scp(port=port, delay_s=0.5) as scp:
        summary = push(series_dir, _target(port), PushOptions(max_attempts=5, backoff_s=0.2))
    assert summary.ok and len(scp.stored()) == 5


@REFUSED_SOCKET_LEAK
def test_gives_up_when_nobody_listens(series_dir: Path) -> None:
    summary = push(series_dir, _target(free_port()), PushOptions(max_attempts=2, backoff_s=0.01))
    assert len(summary.failed) == 5 and summary.associations == 0
    assert all(r.status is None and "association" in r.error for r in summary.failed)


def test_in_memory_datasets_are_sent() -> None:
    datasets = ct_series(StudyContext(), WHEN, slices=3)
    with recording_scp() as scp:
        summary = push(datasets, _target(scp.port))
    assert summary.ok
    assert [r.sop_instance_uid for r in scp.received] == [str(ds.SOPInstanceUID) for ds in datasets]


def test_to_storescp_files_arrive_unchanged(series_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    rle = shared_data / "pkg_pydicom" / "MR_small_RLE.dcm"
    with storescp(tmp_path / "out", tmp_path / "storescp.log") as port:
        summary = push([series_dir, rle], _target(port, "STORESCP"), FAST)
    assert summary.ok and len(summary.results) == 6
    received = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, (tmp_path / "out").iterdir())}
    assert len(received) == 6
    for path in [*series_dir.iterdir(), rle]:
        sent = pydicom.dcmread(path)
        got = received[str(sent.SOPInstanceUID)]
        assert got.PixelData == sent.PixelData
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
    # RLE pixel data is sent as it is: no transcoding (PS3.5 A.4.2).
    assert received[str(pydicom.dcmread(rle).SOPInstanceUID)].file_meta.TransferSyntaxUID == RLELossless


def test_duplicates_are_stored_once_by_our_node(series_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with our_node(store, tmp_path / "node.log") as port:
        summary = push(series_dir, _target(port), PushOptions(duplicates=2, order="shuffled", seed=5))
    assert summary.ok and len(summary.results) == 7
    assert sum(r.duplicate for r in summary.results) == 2
    files = sorted(store.rglob("*.dcm"))
    assert len(files) == 5 and all(f.name.endswith("__v1.dcm") for f in files)
    sent = {p.name.split(".", 1)[1].removesuffix(".dcm") for p in series_dir.iterdir()}
    assert {f.name.removesuffix("__v1.dcm") for f in files} == sent
    first = pydicom.dcmread(files[0])
    original = next(i for i in collect_instances(series_dir) if i.sop_instance_uid == first.SOPInstanceUID)
    assert np.array_equal(first.pixel_array, original.dataset().pixel_array)


def test_tls_with_a_client_certificate_to_our_node(series_dir: Path, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    store = tmp_path / "store"
    tls_args = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                "--tls-ca", str(pki / "ca.pem"), "--tls-require-client-cert"]
    context = tls_context(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    with our_node(store, tmp_path / "node.log", *tls_args) as port:
        target = PushTarget("127.0.0.1", port, calling_ae="SCANNER", tls=context, timeout_s=10)
        summary = push(series_dir, target, FAST)
    assert summary.ok and summary.associations == 1 and len(list(store.rglob("*.dcm"))) == 5
    # (The node's own tests check that it refuses clients without a certificate.)


def test_cli_push_exit_status(series_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "simulators", "push", str(series_dir), "--calling-ae", "SCANNER"]
    with storescp(tmp_path / "out", tmp_path / "storescp.log") as port:
        done = subprocess.run([*command, "--to", f"127.0.0.1:{port}", "--called-ae", "STORESCP"],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out").iterdir())) == 5
    assert "5 of 5 request(s) stored" in done.stderr
    refused = subprocess.run([*command, "--to", f"127.0.0.1:{free_port()}", "--attempts", "1"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused.stderr
    bad = subprocess.run([*command, "--to", "nowhere"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="images_per_s"):
        PushOptions(images_per_s=0)
    with pytest.raises(ValueError, match="max_attempts"):
        PushOptions(max_attempts=0)
    with pytest.raises(ValueError, match="called_ae"):
        PushTarget("127.0.0.1", 104, called_ae="A" * 17)
    assert PushOptions(backoff_s=0.25, max_backoff_s=1.0).backoff(4) == 1.0
