"""Replay a recorded session: series times from their attributes, and the gaps kept at the SCP."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from guidance.dicomio.dataset import StudyContext
from guidance.dicomio.errors import DicomInputError
from simulators.cli import main
from simulators.push import PushOptions, PushTarget, collect_instances
from simulators.replay import ReplayOptions, plan_replay, replay, schedule, series_time

from .peers import Received, ct_series, recording_scp, write_session

T0 = dt.datetime(2024, 5, 6, 9, 30, 0)


def _target(port: int) -> PushTarget:
    return PushTarget("127.0.0.1", port, calling_ae="SCANNER", timeout_s=10)


def _series_starts(received: list[Received]) -> list[float]:
    """Arrival time of the first instance of each series, in arrival order."""
    first: dict[str, float] = {}
    for item in received:
        first.setdefault(item.series_instance_uid, item.at_s)
    return sorted(first.values())


def _gaps(received: list[Received]) -> list[float]:
    starts = _series_starts(received)
    return [b - a for a, b in itertools.pairwise(starts)]


def _header(**values: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.3"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_series_time_attribute_precedence() -> None:
    everything = {"AcquisitionDateTime": "20240506093010.5+0200", "ContentDate": "20240506",
                  "ContentTime": "093020", "SeriesDate": "20240506", "SeriesTime": "093030",
                  "InstanceCreationDate": "20240506", "InstanceCreationTime": "093040"}
    expected = [("AcquisitionDateTime", dt.datetime(2024, 5, 6, 9, 30, 10, 500000)),
                ("ContentDate+ContentTime", dt.datetime(2024, 5, 6, 9, 30, 20)),
                ("SeriesDate+SeriesTime", dt.datetime(2024, 5, 6, 9, 30, 30)),
                ("InstanceCreationDate+InstanceCreationTime", dt.datetime(2024, 5, 6, 9, 30, 40))]
    values = dict(everything)
    for source, when in expected:
        instances = collect_instances(_header(**values))
        assert series_time(instances) == (when, source)
        for keyword in source.split("+"):
            del values[keyword]
    # A date without its time is not a time.
    with pytest.raises(DicomInputError, match="no time to replay"):
        series_time(collect_instances(_header(ContentDate="20240506")))


def test_series_time_is_the_earliest_instance() -> None:
    early, late = _header(ContentDate="20240506", ContentTime="101500"), _header(
        ContentDate="20240506", ContentTime="101459.25")
    late.SOPInstanceUID = "1.2.3.5"
    assert series_time(collect_instances([early, late])) == (
        dt.datetime(2024, 5, 6, 10, 14, 59, 250000), "ContentDate+ContentTime")


def test_plan_sorts_by_time_not_by_folder(tmp_path: Path) -> None:
    # series1 is the latest scan, series3 the earliest.
    write_session(tmp_path, [T0 + dt.timedelta(minutes=40), T0 + dt.timedelta(minutes=5), T0], slices=2)
    plan = plan_replay(tmp_path)
    assert [s.time for s in plan] == [T0, T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=40)]
    assert [s.instances[0].header.SeriesNumber for s in plan] == [3, 2, 1]
    assert {s.time_source for s in plan} == {"ContentDate+ContentTime"}
    assert schedule(plan, ReplayOptions(speed=10, max_gap_s=60)) == [0.0, 30.0, 90.0]
    assert schedule(plan, ReplayOptions(speed=1, max_gap_s=math.inf)) == [0.0, 300.0, 2400.0]


@pytest.mark.network
@pytest.mark.parametrize(("apart_s", "speed"), [(1, 1.0), (2, 2.0)])
def test_replay_keeps_the_gaps_within_10_percent(tmp_path: Path, apart_s: int, speed: float) -> None:
    write_session(tmp_path, [T0 + dt.timedelta(seconds=apart_s * k) for k in range(3)])
    with recording_scp() as scp:
        summary = replay(tmp_path, _target(scp.port), ReplayOptions(speed=speed))
    assert summary.ok and len(scp.stored()) == 15
    assert summary.planned_start_s == (0.0, 1.0, 2.0)
    for gap in _gaps(scp.received):
        assert gap == pytest.approx(1.0, rel=0.10)


@pytest.mark.network
def test_replay_caps_long_gaps(tmp_path: Path) -> None:
    # A session two hours long replays in about one second.
    write_session(tmp_path, [T0, T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)], slices=2)
    options = ReplayOptions(max_gap_s=0.5, push=PushOptions(order="shuffled", seed=1))
    with recording_scp() as scp:
        summary = replay(tmp_path, _target(scp.port), options)
    assert summary.ok and summary.planned_start_s == (0.0, 0.5, 1.0)
    for gap in _gaps(scp.received):
        assert gap == pytest.approx(0.5, rel=0.10)


@pytest.mark.network
def test_cli_replay(tmp_path: Path) -> None:
    session = write_session(tmp_path / "session", [T0, T0 + dt.timedelta(seconds=5)], slices=2)
    pynetdicom_logger = logging.getLogger("pynetdicom")
    level = pynetdicom_logger.level  # main() sets it: restore it for the tests that follow
    try:
        with recording_scp() as scp:
            status = main(["replay", str(tmp_path / "session"), "--to", f"127.0.0.1:{scp.port}",
                           "--called-ae", "RECORDER", "--speed", "10"])
    finally:
        pynetdicom_logger.setLevel(level)
    assert status == 0
    assert [r.series_instance_uid for r in scp.received] == [str(s[0].SeriesInstanceUID) for s in session
                                                             for _ in s]
    assert _gaps(scp.received)[0] == pytest.approx(0.5, rel=0.10)


def test_replay_refuses_bad_options_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        ReplayOptions(speed=0)
    with pytest.raises(ValueError, match="max_gap_s"):
        ReplayOptions(max_gap_s=-1)
    with pytest.raises(DicomInputError, match="nothing to replay"):
        plan_replay(tmp_path)
    assert ct_series(StudyContext(), T0, slices=1)[0].ContentTime == "093000"
