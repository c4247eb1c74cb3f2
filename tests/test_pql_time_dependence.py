"""Time dependence of segments (:mod:`audience_activation.pql.time_dependence`) and the event-window changes
compiled from it (:func:`audience_activation.pql.compiler.window_changes`)."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from audience_activation.pql import parse
from audience_activation.pql.compiler import window_changes
from audience_activation.pql.time_dependence import time_dependence


@pytest.mark.parametrize(
    ("pql", "windows", "other"),
    [
        ('homeAddress.countryCode = "US"', [], 0),
        (
            'select X from xEvent where X.eventType = "a" and X.timestamp occurs <= 24 hours before now',
            ["OccursWithin"],
            0,
        ),
        ('xEvent[eventType = "a" and timestamp occurs today].count() >= 2', ["OccursOn"], 0),
        ("exists X from xEvent where X.timestamp occurs after yesterday", ["OccursRelative"], 0),
        ('chain(xEvent, timestamp, [C0: WHAT(eventType = "v") WHEN(<= 1 hours before now)])', ["OccursWithin"], 0),
        # No time constant: nothing depends on the time.
        ("select X from xEvent where X.timestamp occurs before lastVisit", [], 0),
        # The time read otherwise: the profile, another event field, a date part.
        ("birthDate occurs today", [], 1),
        ("exists X from xEvent where X.shipDate occurs today", [], 1),
        ("currentMonth() = 12", [], 1),
        ("exists X from xEvent where X.timestamp occurs today and X.shipDate occurs today", ["OccursOn"], 1),
    ],
)
def test_time_dependence(pql: str, windows: list[str], other: int) -> None:
    found = time_dependence(parse(pql))
    assert [type(window).__name__ for window in found.event_windows] == windows
    assert len(found.other) == other
    assert found.time_dependent == bool(windows or other)


def _window(pql_test: str):  # type: ignore[no-untyped-def]
    [window] = time_dependence(parse(f"select X from xEvent where X.timestamp occurs {pql_test}")).event_windows
    return window


@pytest.mark.parametrize(
    ("test", "before", "after", "flipped", "kept"),
    [
        (
            "<= 24 hours before now",
            dt.datetime(2026, 11, 1, 12),
            dt.datetime(2026, 11, 1, 14),
            # left the window; entered it (was in the future)
            [dt.datetime(2026, 10, 31, 13), dt.datetime(2026, 11, 1, 13)],
            # inside at both times; outside at both
            [dt.datetime(2026, 11, 1, 10), dt.datetime(2026, 10, 31, 11), dt.datetime(2026, 11, 2)],
        ),
        (
            "today",
            dt.datetime(2026, 11, 1, 23),
            dt.datetime(2026, 11, 2, 1),
            [dt.datetime(2026, 11, 1, 22), dt.datetime(2026, 11, 2, 0, 30)],
            [dt.datetime(2026, 10, 31, 10), dt.datetime(2026, 11, 3, 10)],
        ),
    ],
)
def test_window_changes_marks_the_events_that_crossed_a_window_edge(
    spark: SparkSession, test: str, before: dt.datetime, after: dt.datetime, flipped: list, kept: list
) -> None:
    events = spark.createDataFrame(
        [(ts, True) for ts in flipped] + [(ts, False) for ts in kept], "ts timestamp, x boolean"
    )
    marked = events.select("x", window_changes(F.col("ts"), [_window(test)], before, after).alias("marked")).collect()
    assert [(row.x, row.marked) for row in marked] == [(True, True)] * len(flipped) + [(False, False)] * len(kept)


def test_no_window_marks_nothing(spark: SparkSession) -> None:
    events = spark.createDataFrame([(dt.datetime(2026, 11, 1),)], "ts timestamp")
    marked = events.select(window_changes(F.col("ts"), [], dt.datetime(2026, 1, 1), dt.datetime(2026, 12, 1)))
    assert marked.collect()[0][0] is False
