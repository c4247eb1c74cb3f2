"""The stream source's offsets, called as Spark calls them (no Spark job runs): commits move the versions; with
no commit, a sweep moves ``T`` only, once the sweep interval has passed — and at most once under
``Trigger.AvailableNow``, which must end."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from pyspark.sql.streaming.datasource import ReadAllAvailable

from audience_activation.stream_source import TIME_KEY, InputVersionsReader, _Range, offset_time


def now() -> dt.datetime:
    """The wall clock at the call (not at import: the suite runs for an hour and the sweep interval is minutes)."""
    return dt.datetime.now(dt.timezone.utc)


def reader(tmp_path: Path, start: dt.datetime, **options: str) -> tuple[InputVersionsReader, dict]:
    tables = {"experience_events": str(tmp_path / "no-table-yet")}  # version -1: no commit ever
    given = {
        "tables": json.dumps(tables),
        "startVersions": json.dumps({"experience_events": -1}),
        "startTime": offset_time(start),
        **options,
    }
    source = InputVersionsReader(given)
    return source, source.initialOffset()


def test_no_commit_and_no_sweep_plans_nothing(tmp_path: Path) -> None:
    source, start = reader(tmp_path, now() - dt.timedelta(hours=1))
    assert source.latestOffset(start, ReadAllAvailable()) == start


def test_a_sweep_moves_t_only_once_the_interval_has_passed(tmp_path: Path) -> None:
    started = now()
    source, start = reader(tmp_path, started - dt.timedelta(hours=1), sweepSeconds="300")
    swept = source.latestOffset(start, ReadAllAvailable())
    assert swept["experience_events"] == -1 and swept[TIME_KEY] >= offset_time(started)
    assert list(source.read(_Range(start, swept))) == [(None, None, {"experience_events": -1}, swept[TIME_KEY])]
    recent, start = reader(tmp_path, now(), sweepSeconds="300")
    assert recent.latestOffset(start, ReadAllAvailable()) == start


def test_available_now_sweeps_at_most_once_and_ends(tmp_path: Path) -> None:
    source, start = reader(tmp_path, now() - dt.timedelta(hours=1), sweepSeconds="1")
    source.prepareForTriggerAvailableNow()
    swept = source.latestOffset(start, ReadAllAvailable())
    assert swept != start
    time.sleep(1.1)  # the sweep took longer than the interval: the query still ends (nothing after its start)
    assert source.latestOffset(swept, ReadAllAvailable()) == swept


def test_a_pinned_t_sweeps_once_to_it(tmp_path: Path) -> None:
    pinned = dt.datetime(2026, 11, 30, 0, 10, tzinfo=dt.timezone.utc)
    source, start = reader(
        tmp_path, pinned - dt.timedelta(minutes=10), sweepSeconds="300", evaluationTime=offset_time(pinned)
    )
    source.prepareForTriggerAvailableNow()
    swept = source.latestOffset(start, ReadAllAvailable())
    assert swept[TIME_KEY] == offset_time(pinned)
    assert source.latestOffset(swept, ReadAllAvailable()) == swept
