"""Unified profiles: both merge policies field by field, arrays/maps whole, primaries, event attribution."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from audience_activation.config import DatasetPrecedencePolicy, NamespacesConfig, TimestampOrderedPolicy
from audience_activation.profile import (
    attach_persons,
    person_events,
    person_events_of_primary,
    primary_identity,
    unified_profiles,
    with_primary_identity,
)

T = dt.datetime(2026, 11, 29)
DAY = dt.timedelta(days=1)
IMAP = "map<string, array<struct<id: string, primary: boolean>>>"
FRAGMENTS_DDL = f"""identityMap {IMAP}, dataset string, ingested_at timestamp,
    person struct<name: struct<firstName: string, lastName: string>>,
    loyalty struct<tier: string, points: bigint>, interests array<string>, prefs map<string, string>"""
CLUSTERS_DDL = "namespace string, id string, person_id string, graph_size int"
E1, E9 = "1" * 38, "9" * 38  # valid ECIDs (38 digits)


@pytest.fixture()
def clusters(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        [
            ("CRMID", "c1", "CRMID:c1", 3),
            ("ECID", E1, "CRMID:c1", 3),
            ("Email", "m1", "CRMID:c1", 3),
            ("CRMID", "c2", "CRMID:c2", 1),
            ("ECID", E9, f"ECID:{E9}", 1),
        ],
        CLUSTERS_DDL,
    )


@pytest.fixture()
def fragments(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        [
            # crm, oldest: full name, gold, interests [a]
            ({"CRMID": [("c1", True)]}, "crm", T - 3 * DAY, (("Ann", "Lee"),), ("gold", 10), ["a"], {"k": "crm"}),
            # web, newest: lower-case first name only, no loyalty, interests [b, c]
            ({"ECID": [(E1, True)]}, "web", T - DAY, (("ann", None),), None, ["b", "c"], None),
            # loyalty, middle: points only
            (
                {"Email": [("m1", False)], "CRMID": [("c1", False)]},
                "loyalty",
                T - 2 * DAY,
                None,
                (None, 99),
                None,
                {"k": "loy"},
            ),
            # same time as web, dataset "aaa" sorts first: wins ties on ingested_at
            ({"ECID": [(E1, True)]}, "aaa", T - DAY, None, ("silver", None), None, None),
            # another person
            ({"CRMID": [("c2", True)]}, "crm", T - DAY, (("Bob", "Kim"),), None, None, None),
        ],
        FRAGMENTS_DDL,
    )


def evaluations_of(df: DataFrame, needle: str) -> int:
    """How many times ``needle`` appears in the physical plan (each appearance is evaluated per row)."""
    return str(df._jdf.queryExecution().executedPlan().toString()).count(needle)


def by_person(df: DataFrame) -> dict[str, dict]:
    return {row["person_id"]: row.asDict(recursive=True) for row in df.collect()}


def test_timestamp_ordered_merges_leaf_by_leaf(spark: SparkSession, fragments: DataFrame, clusters: DataFrame) -> None:
    profiles = by_person(unified_profiles(fragments, None, clusters, TimestampOrderedPolicy(), NamespacesConfig()))
    c1 = profiles["CRMID:c1"]
    assert c1["person"] == {"name": {"firstName": "ann", "lastName": "Lee"}}
    assert c1["loyalty"] == {"tier": "silver", "points": 99}
    assert c1["interests"] == ["b", "c"]  # arrays whole from the newest fragment that has one
    assert c1["prefs"] == {"k": "loy"}
    assert c1["fragment_count"] == 4
    assert c1["identityMap"] == {
        "CRMID": [{"id": "c1", "primary": True}],
        "ECID": [{"id": E1, "primary": False}],
        "Email": [{"id": "m1", "primary": False}],
    }
    assert profiles["CRMID:c2"]["person"] == {"name": {"firstName": "Bob", "lastName": "Kim"}}
    assert profiles["CRMID:c2"]["loyalty"] is None  # a struct with no value anywhere stays null
    assert set(profiles) == {"CRMID:c1", "CRMID:c2"}


def test_dataset_precedence_ignores_unlisted_datasets(
    spark: SparkSession, fragments: DataFrame, clusters: DataFrame
) -> None:
    policy = DatasetPrecedencePolicy(type="dataset_precedence", datasets=["crm", "loyalty"])
    profiles = by_person(unified_profiles(fragments, None, clusters, policy, NamespacesConfig()))
    c1 = profiles["CRMID:c1"]
    assert c1["person"] == {"name": {"firstName": "Ann", "lastName": "Lee"}}
    assert c1["loyalty"] == {"tier": "gold", "points": 10}
    assert c1["interests"] == ["a"]
    assert c1["prefs"] == {"k": "crm"}
    assert c1["fragment_count"] == 2


def test_persons_with_only_events_get_a_profile(spark: SparkSession, fragments: DataFrame, clusters: DataFrame) -> None:
    events = spark.createDataFrame(
        [
            ("ev1", T - DAY, "web", {"ECID": [(E9, True)]}),
            ("ev1", T - 2 * DAY, "web", {"ECID": [(E9, True)]}),  # duplicate _id: the first by timestamp counts
            ("ev2", T - DAY, "web", {"ECID": [(E1, False)], "CRMID": [("c2", True)]}),
        ],
        f"_id string, timestamp timestamp, eventType string, identityMap {IMAP}",
    )
    attributed = person_events(events, clusters)
    assert sorted((r["_id"], r["person_id"], r["timestamp"]) for r in attributed.collect()) == [
        ("ev1", f"ECID:{E9}", T - 2 * DAY),
        ("ev2", "CRMID:c2", T - DAY),  # the primary identity decides
    ]
    profiles = by_person(
        unified_profiles(fragments, attributed, clusters, TimestampOrderedPolicy(), NamespacesConfig())
    )
    assert profiles[f"ECID:{E9}"]["fragment_count"] == 0
    assert profiles[f"ECID:{E9}"]["person"] is None
    assert profiles[f"ECID:{E9}"]["identityMap"] == {"ECID": [{"id": E9, "primary": True}]}


def test_primary_identity_rules(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            ({"ECID": [(E1, False)], "CRMID": [("c1", False)]},),  # none flagged: first by namespace
            ({"ECID": [(E1, True)], "CRMID": [("c1", False)]},),  # flagged wins
            ({"ECID": [("123", True)], "Email": [("m", False)]},),  # flagged but invalid: next valid
            ({"ECID": [("bad", True)]},),  # no valid identity
            ({"Email_LC_SHA256": [("a" * 64, False)], "Email": [("z", False)]},),  # alias normalised
        ],
        f"identityMap {IMAP}",
    )
    got = [r[0] for r in df.select(primary_identity(df["identityMap"])).collect()]
    assert [None if not g else (g[0]["primary_namespace"], g[0]["primary_id"]) for g in got] == [
        ("CRMID", "c1"),
        ("ECID", E1),
        ("Email", "m"),
        None,
        ("EMAIL_LC_SHA256", "a" * 64),
    ]
    assert all(len(g) <= 1 for g in got)


def test_event_dedupe_ignores_copies_without_a_valid_identity(spark: SparkSession, clusters: DataFrame) -> None:
    events = spark.createDataFrame(
        [
            ("ev1", T - 3 * DAY, "web", {"ECID": [("bad", True)]}),  # earliest copy: no valid identity
            ("ev1", T - 2 * DAY, "web", {"ECID": [(E9, True)]}),
            (None, T - DAY, "web", {"ECID": [(E9, True)]}),  # no _id: kept, once per distinct row
            (None, T - DAY, "web", {"ECID": [(E9, True)]}),
            (None, T - 2 * DAY, "web", {"ECID": [(E9, True)]}),
        ],
        f"_id string, timestamp timestamp, eventType string, identityMap {IMAP}",
    )
    got = sorted((r["_id"] or "", r["timestamp"], r["person_id"]) for r in person_events(events, clusters).collect())
    assert got == [("", T - 2 * DAY, f"ECID:{E9}"), ("", T - DAY, f"ECID:{E9}"), ("ev1", T - 2 * DAY, f"ECID:{E9}")]


def test_events_without_copies_are_attributed_as_they_are(spark: SparkSession, clusters: DataFrame) -> None:
    """``copies=False`` (the stream's events that share no key) attributes each event as it is: the rows and
    columns de-duplication gives for such events, a column named like the helpers kept; events with copies are
    de-duplicated as always."""
    events = spark.createDataFrame(
        [
            ("ev2", T - DAY, "app", {"ECID": [(E1, True)]}, "x"),
            ("ev3", T - DAY, "web", {"CRMID": [("c2", True)]}, None),
            (None, T - 3 * DAY, "web", {"CRMID": [("c2", True)]}, "y"),  # no _id, one row
            ("ev4", T - DAY, "web", {"ECID": [("bad", True)]}, "z"),  # no valid identity: no person
        ],
        f"_id string, timestamp timestamp, eventType string, identityMap {IMAP}, _key string",
    )
    as_is = person_events_of_primary(with_primary_identity(events), clusters, copies=False)
    deduplicated = person_events(events, clusters)

    assert (
        as_is.columns == deduplicated.columns == ["_id", "timestamp", "eventType", "identityMap", "_key", "person_id"]
    )
    rows = sorted((r["_id"] or "", r["timestamp"], r["_key"], r["person_id"]) for r in as_is.collect())
    assert rows == [
        ("", T - 3 * DAY, "y", "CRMID:c2"),
        ("ev2", T - DAY, "x", "CRMID:c1"),
        ("ev3", T - DAY, None, "CRMID:c2"),
    ]
    assert rows == sorted((r["_id"] or "", r["timestamp"], r["_key"], r["person_id"]) for r in deduplicated.collect())
    copied = events.unionByName(events.where("_id = 'ev2'").withColumn("timestamp", F.lit(T - 2 * DAY)))
    assert person_events_of_primary(with_primary_identity(copied), clusters, copies=False).count() == 4  # as told
    assert sorted(r["timestamp"] for r in person_events(copied, clusters).where("_id = 'ev2'").collect()) == [
        T - 2 * DAY
    ]


def test_attaching_persons_evaluates_the_primary_identity_once(
    spark: SparkSession, clusters: DataFrame, tmp_path: Path
) -> None:
    """The identities are validated once per record: the plan holds the validation (here its ECID pattern) once,
    not once per use of the primary identity (its null test, its namespace, its id). Read from files, as the
    job does: the optimiser folds small local DataFrames away."""
    spark.createDataFrame(
        [("ev1", T - DAY, {"ECID": [(E9, True)]}), ("ev2", T - DAY, {"ECID": [("bad", True)]})],
        f"_id string, timestamp timestamp, identityMap {IMAP}",
    ).write.parquet(str(tmp_path / "events"))
    events = spark.read.parquet(str(tmp_path / "events"))
    attached = attach_persons(events, clusters)
    assert evaluations_of(attached, "^[0-9]{38}") == 1
    assert [(r["_id"], r["primary_namespace"], r["primary_id"], r["person_id"]) for r in attached.collect()] == [
        ("ev1", "ECID", E9, f"ECID:{E9}")
    ]
