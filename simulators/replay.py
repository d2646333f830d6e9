"""Replay a recorded session: re-send its series with their original timing, or faster.

A recorded session is any folder of DICOM series (a node's store, an export
of a procedure, a folder written by the simulators). Each series is placed in
time by the first of these that its instances carry, the earliest value over
its instances being the series' time:

1. AcquisitionDateTime (0008,002A) — when the scanner acquired the data;
2. ContentDate (0008,0023) + ContentTime (0008,0033) — when the images were made;
3. SeriesDate (0008,0021) + SeriesTime (0008,0031) — when the series started;
4. InstanceCreationDate (0008,0012) + InstanceCreationTime (0008,0013).

A date without a time (or a time without a date) is not used. A UTC offset
in a DT value (``&ZZXX``) is dropped: the times are compared as local wall
clock times, as DA/TM values are (PS3.5 6.2).

Series are sent in time order; the gap between the start of one series and
the start of the next is the gap between their times divided by ``speed``,
and at most ``max_gap_s`` so that a session that lasted hours does not block
(a series that took longer to send than its gap starts at once). Each series
is sent with :func:`simulators.push.push`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from guidance.dicomio.dataset import DatasetSource
from guidance.dicomio.errors import DicomInputError
from simulators.push import (
    Instance,
    ProgressCallback,
    PushOptions,
    PushSummary,
    PushTarget,
    collect_instances,
    push,
)

__all__ = [
    "TIME_SOURCES",
    "RecordedSeries",
    "ReplayOptions",
    "ReplaySummary",
    "plan_replay",
    "replay",
    "schedule",
    "series_time",
]

logger = logging.getLogger(__name__)

#: The attributes a series time is taken from, in order of preference.
TIME_SOURCES: tuple[str, ...] = (
    "AcquisitionDateTime",
    "ContentDate+ContentTime",
    "SeriesDate+SeriesTime",
    "InstanceCreationDate+InstanceCreationTime",
)


@dataclass(frozen=True)
class RecordedSeries:
    """One series of a recorded session, its time and where that time came from."""

    series_instance_uid: str
    time: dt.datetime
    time_source: str
    instances: tuple[Instance, ...] = field(repr=False)


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay.

    Attributes
    ----------
    speed : float
        Real gaps are the recorded gaps divided by ``speed`` (2: twice as fast).
    max_gap_s : float
        Longest real wait between the starts of two series (``math.inf``: no limit).
    push : PushOptions
        How each series is sent.
    """

    speed: float = 1.0
    max_gap_s: float = 60.0
    push: PushOptions = field(default_factory=PushOptions)

    def __post_init__(self) -> None:
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"ReplayOptions speed must be a positive finite number; got {self.speed}")
        if not self.max_gap_s >= 0:
            raise ValueError(f"ReplayOptions max_gap_s must be >= 0; got {self.max_gap_s}")


@dataclass(frozen=True)
class ReplaySummary:
    """The push summary of each replayed series, with its planned and actual start (s from the first)."""

    series: tuple[RecordedSeries, ...]
    pushes: tuple[PushSummary, ...]
    planned_start_s: tuple[float, ...]
    actual_start_s: tuple[float, ...]

    @property
    def ok(self) -> bool:
        """True when every instance of every series was stored."""
        return all(p.ok for p in self.pushes)


def _datetime(date: object, clock: object) -> dt.datetime | None:
    if date in (None, "") or clock in (None, ""):
        return None
    try:
        day, moment = DA(str(date)), TM(str(clock))
    except ValueError:
        return None
    if day is None or moment is None:
        return None
    return dt.datetime.combine(day, dt.time(moment.hour, moment.minute, moment.second, moment.microsecond))


def _instance_time(ds: Dataset, source: str) -> dt.datetime | None:
    if source == "AcquisitionDateTime":
        value = ds.get("AcquisitionDateTime")
        if value in (None, ""):
            return None
        try:
            parsed = DT(str(value))
        except ValueError:
            return None
        return None if parsed is None else parsed.replace(tzinfo=None)
    date_keyword, time_keyword = source.split("+")
    return _datetime(ds.get(date_keyword), ds.get(time_keyword))


def series_time(instances: Sequence[Instance]) -> tuple[dt.datetime, str]:
    """The time of a series and the attribute(s) it came from (see the module docstring).

    Raises
    ------
    DicomInputError
        If no instance carries any of :data:`TIME_SOURCES`.
    """
    for source in TIME_SOURCES:
        times = [t for t in (_instance_time(i.header, source) for i in instances) if t is not None]
        if times:
            return min(times), source
    uid = instances[0].series_instance_uid if instances else "?"
    raise DicomInputError(f"series {uid} has no time to replay it at: none of {', '.join(TIME_SOURCES)} "
                          "(DICOM PS3.3 C.7.3.1, C.7.6.1, C.12.1) is present",
                          [i.name for i in instances[:10]])


def plan_replay(source: DatasetSource) -> list[RecordedSeries]:
    """The series in ``source`` (headers only), sorted by time then SeriesNumber.

    Raises
    ------
    DicomInputError
        If ``source`` holds no instance, or a series has no time.
    """
    instances = collect_instances(source)
    if not instances:
        raise DicomInputError("nothing to replay: no DICOM instance found", [str(source)])
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.series_instance_uid, []).append(instance)
    series = []
    for uid, members in groups.items():
        when, where = series_time(members)
        series.append(RecordedSeries(uid, when, where, tuple(members)))

    def number(s: RecordedSeries) -> int:
        value = s.instances[0].header.get("SeriesNumber")
        return int(value) if value not in (None, "") else 0

    return sorted(series, key=lambda s: (s.time, number(s)))


def schedule(series: Sequence[RecordedSeries], options: ReplayOptions) -> list[float]:
    """Planned start of each series, in seconds after the first: scaled gaps, each capped at max_gap_s."""
    starts = [0.0]
    for before, after in itertools.pairwise(series):
        gap_s = (after.time - before.time).total_seconds() / options.speed
        starts.append(starts[-1] + min(gap_s, options.max_gap_s))
    return starts[: len(series)]


def replay(
    source: DatasetSource,
    target: PushTarget,
    options: ReplayOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> ReplaySummary:
    """Re-send the series of a recorded session with their (scaled, capped) original gaps.

    Parameters
    ----------
    source : folder, files or datasets
        The recorded session.
    target : PushTarget
        The Storage SCP.
    options : ReplayOptions, optional
        Speed, longest wait and how each series is pushed.
    progress : callable, optional
        Passed to :func:`simulators.push.push` for every series.

    Returns
    -------
    ReplaySummary
        Each series' push summary, planned and actual start times.

    Raises
    ------
    DicomInputError
        If there is nothing to replay or a series has no time.
    """
    options = options or ReplayOptions()
    series = plan_replay(source)
    planned = schedule(series, options)
    logger.info("replaying %d series at speed %g (longest wait %g s): %.1f s planned", len(series),
                options.speed, options.max_gap_s, planned[-1])
    pushes, actual = [], []
    start = time.monotonic()
    for recorded, at_s in zip(series, planned, strict=True):
        delay = start + at_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        actual.append(time.monotonic() - start)
        logger.info("series %s (%s %s, %s): start at %.2f s (planned %.2f s)", recorded.series_instance_uid,
                    recorded.time_source, recorded.time.isoformat(), f"{len(recorded.instances)} instance(s)",
                    actual[-1], at_s)
        pushes.append(push(list(recorded.instances), target, options.push, progress=progress))
    return ReplaySummary(tuple(series), tuple(pushes), tuple(planned), tuple(actual))
