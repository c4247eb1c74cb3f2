"""Membership state transitions and retention."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession

from audience_activation.membership import MEMBERSHIP_SCHEMA, qualifying_pairs, segment_overlap, update_membership

T = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
T0 = dt.datetime(2026, 11, 1)
NAIVE_T = dt.datetime(2026, 11, 29)
DAY = dt.timedelta(days=1)


def test_transitions_and_retention(spark: SparkSession) -> None:
    previous = spark.createDataFrame(
        [
            ("p1", "s1", "realized", T0, T0, "batch"),
            ("p2", "s1", "realized", T0, T0, "streaming"),
            ("p3", "s1", "exited", NAIVE_T - 10 * DAY, T0, "batch"),
            ("p4", "s1", "exited", NAIVE_T - 31 * DAY, T0, "batch"),
            ("p5", "s1", "exited", NAIVE_T - 5 * DAY, T0, "streaming"),
        ],
        MEMBERSHIP_SCHEMA,
    )
    qualifying = spark.createDataFrame(
        [("p1", "s1"), ("p3", "s1"), ("p6", "s1"), ("p6", "s2")], "person_id string, segment_id string"
    )
    state = update_membership(previous, qualifying, T, retention_days=30)
    rows = sorted(tuple(r) for r in state.collect())
    assert rows == [
        ("p1", "s1", "realized", T0, NAIVE_T, "batch"),  # still qualifies: unchanged
        ("p2", "s1", "exited", NAIVE_T, NAIVE_T, "batch"),  # stops qualifying: exited at T
        ("p3", "s1", "realized", NAIVE_T, NAIVE_T, "batch"),  # exited then qualifies again
        ("p5", "s1", "exited", NAIVE_T - 5 * DAY, NAIVE_T, "streaming"),  # exited, within retention
        ("p6", "s1", "realized", NAIVE_T, NAIVE_T, "batch"),
        ("p6", "s2", "realized", NAIVE_T, NAIVE_T, "batch"),
    ]  # p4 exited 31 days ago: purged


def test_first_run_and_qualifying_pairs(spark: SparkSession) -> None:
    evaluated = spark.createDataFrame(
        [("p1", True, False), ("p2", False, False), ("p3", True, True)], "person_id string, `a-b` boolean, c boolean"
    )
    pairs = qualifying_pairs(evaluated, ["a-b", "c"])
    assert sorted(tuple(r) for r in pairs.collect()) == [("p1", "a-b"), ("p3", "a-b"), ("p3", "c")]
    state = update_membership(None, pairs, T, retention_days=30)
    assert sorted((r.person_id, r.segment_id, r.status) for r in state.collect()) == [
        ("p1", "a-b", "realized"),
        ("p3", "a-b", "realized"),
        ("p3", "c", "realized"),
    ]


def test_segment_overlap(spark: SparkSession) -> None:
    state = spark.createDataFrame(
        [
            ("p1", "a", "realized", T0, T0, "batch"),
            ("p1", "b", "realized", T0, T0, "batch"),
            ("p2", "a", "realized", T0, T0, "batch"),
            ("p2", "b", "exited", T0, T0, "batch"),
        ],
        MEMBERSHIP_SCHEMA,
    )
    assert sorted(tuple(r) for r in segment_overlap(state).collect()) == [
        ("a", "a", 2),
        ("a", "b", 1),
        ("b", "a", 1),
        ("b", "b", 1),
    ]
