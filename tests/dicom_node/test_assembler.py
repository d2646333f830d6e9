"""Series assembly: quiet period, reopening, checks, kinds, subscribers."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from dicom_node.assembler import Assembler, SeriesKind, SeriesReady
from dicom_node.index import StoredInstance
from dicom_node.validation import InstanceHeader

QUIET_S = 0.2


def _instance(series: str, k: int, *, z_mm: float | None = None, sop_class: str = "1.2.840.10008.5.1.4.1.1.2",
              modality: str = "CT", in_acquisition: int | None = None, version: int = 1) -> StoredInstance:
    z = k * 2.0 if z_mm is None else z_mm
    header = InstanceHeader(
        sop_class_uid=sop_class, sop_instance_uid=f"{series}.{k}", study_instance_uid="1.2.3",
        series_instance_uid=series, modality=modality, instance_number=k + 1,
        image_position_mm=(0.0, 0.0, z), image_orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        images_in_acquisition=in_acquisition,
    )
    return StoredInstance(header, Path(f"/store/{series}/{k}__v{version}.dcm"), version, 100, 10,
                          1000.0 + k, "SCANNER")


@pytest.fixture
def assembler():
    asm = Assembler(quiet_period_s=QUIET_S)
    asm.start()
    yield asm
    asm.stop()


def _next(q: queue.Queue[SeriesReady], timeout_s: float = 3.0) -> SeriesReady:
    return q.get(timeout=timeout_s)


def test_series_announced_after_quiet_period_sorted_along_the_normal(assembler: Assembler) -> None:
    q = assembler.subscribe_queue()
    start = time.monotonic()
    for k in (3, 0, 2, 1):
        assembler.submit(_instance("1.9", k, z_mm=-2.0 * k))  # slice order opposite to instance order
    ready = _next(q)
    assert time.monotonic() - start >= QUIET_S
    assert ready.instance_count == 4 and ready.revision == 1 and ready.kind is SeriesKind.IMAGES
    assert [p.name for p in ready.paths] == ["3__v1.dcm", "2__v1.dcm", "1__v1.dcm", "0__v1.dcm"]
    assert ready.warnings == ()
    assert (ready.first_arrival, ready.last_arrival) == (1000.0, 1003.0)


def test_gaps_are_warnings_and_a_late_instance_reopens_the_series(assembler: Assembler) -> None:
    q = assembler.subscribe_queue()
    for k in (0, 1, 3, 4):
        assembler.submit(_instance("1.8", k, in_acquisition=5))
    first = _next(q)
    assert first.instance_count == 4
    assert any("InstanceNumber gaps: missing 3" in w for w in first.warnings)
    assert any("gap(s) in slice positions" in w and "2.00 to 6.00" in w for w in first.warnings)
    assert any("ImagesInAcquisition is 5 but 4" in w for w in first.warnings)
    assembler.submit(_instance("1.8", 2, in_acquisition=5))
    second = _next(q)
    assert (second.revision, second.instance_count, second.warnings) == (2, 5, ())
    assembler.submit(_instance("1.8", 2, in_acquisition=5))  # a resend of the same version changes nothing
    with pytest.raises(queue.Empty):
        q.get(timeout=3 * QUIET_S)


def test_parallel_series_and_plan_objects(assembler: Assembler) -> None:
    q = assembler.subscribe_queue()
    for k in range(6):
        assembler.submit(_instance("1.5", k))
        assembler.submit(_instance("1.6", k))
    assembler.submit(_instance("1.7", 0, sop_class="1.2.840.10008.5.1.4.1.1.481.5", modality="RTPLAN"))
    got = {r.series_instance_uid: r for r in (_next(q), _next(q), _next(q))}
    assert got["1.5"].instance_count == got["1.6"].instance_count == 6
    assert got["1.7"].kind is SeriesKind.PLAN and got["1.7"].modality == "RTPLAN"


def test_a_failing_subscriber_does_not_stop_the_others(assembler: Assembler, caplog) -> None:
    def broken(ready: SeriesReady) -> None:
        raise RuntimeError("subscriber bug")

    assembler.subscribe(broken)
    q = assembler.subscribe_queue()
    assembler.submit(_instance("1.4", 0))
    assert _next(q).series_instance_uid == "1.4"
    assert "subscriber bug" in caplog.text


def test_stop_flushes_pending_series() -> None:
    asm = Assembler(quiet_period_s=60.0)
    q = asm.subscribe_queue()
    asm.start()
    asm.submit(_instance("1.3", 0))
    asm.stop()
    assert q.get_nowait().series_instance_uid == "1.3"


def test_known_instances_are_merged_when_a_series_is_first_seen() -> None:
    known = [_instance("1.2", k) for k in range(3)]
    asm = Assembler(quiet_period_s=QUIET_S, known_instances=lambda uid: known if uid == "1.2" else [])
    q = asm.subscribe_queue()
    asm.start()
    asm.submit(_instance("1.2", 3))
    ready = q.get(timeout=3.0)
    asm.stop()
    assert ready.instance_count == 4 and ready.warnings == ()
