"""The activation state's log: the rows a micro-batch appends (``activation.state_changes``, checked against a
reference that compares whole rows) and the state read back from the table and its log."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from audience_activation import state_log, tables
from audience_activation.activation import activation_state, compare_activations, state_changes
from audience_activation.columns import row_differences

LOG_SCHEMA = tables.ACTIVATION_STATE_LOG.schema
STATE_SCHEMA = tables.ACTIVATION_STATE.schema

#: ``(destination, segment, person, consent_ok, activated, identities_sent)``
A1 = ("aam", "s1", "p1", True, True, {"ECID": [("e1", True)]})
A2 = ("aam", "s1", "p2", True, False, None)
B1 = ("cja", "s1", "p1", False, False, None)


def state(spark: SparkSession, *rows: tuple) -> DataFrame:
    return spark.createDataFrame(list(rows), STATE_SCHEMA)


def log(spark: SparkSession, *rows: tuple) -> DataFrame:
    return spark.createDataFrame(list(rows), LOG_SCHEMA)


def collected(df: DataFrame) -> list[tuple]:
    """Rows as tuples (the identity maps as sorted item lists), sorted."""
    out = []
    for row in df.collect():
        values = row.asDict(recursive=True)
        ids = values.get("identities_sent")
        if ids is not None:
            values["identities_sent"] = sorted((k, [tuple(i.values()) for i in v]) for k, v in ids.items())
        out.append(tuple(values[c] for c in df.columns))
    return sorted(out, key=repr)


def test_no_log_is_the_table_itself(spark: SparkSession) -> None:
    table = state(spark, A1, A2)
    assert state_log.current_state(table, None) is table


def test_the_highest_generation_of_a_key_holds_and_removed_rows_drop_it(spark: SparkSession) -> None:
    table = state(spark, A1, A2, B1)
    changes = log(
        spark,
        ("aam", "s1", "p1", True, False, None, 3, False),  # p1 deactivated at generation 3...
        ("aam", "s1", "p1", True, True, {"IDFA": [("d1", False)]}, 5, False),  # ...and activated again at 5
        ("aam", "s1", "p2", None, None, None, 4, True),  # p2 is no longer a member
        ("cja", "s1", "p1", None, None, None, 1, True),  # removed at 1, back at 2
        ("cja", "s1", "p1", True, True, {"ECID": [("e1", True)]}, 2, False),
        ("cja", "s1", "p9", False, False, None, 2, False),  # a new member
    )
    assert collected(state_log.current_state(table, changes)) == collected(
        state(
            spark,
            ("aam", "s1", "p1", True, True, {"IDFA": [("d1", False)]}),
            ("cja", "s1", "p1", True, True, {"ECID": [("e1", True)]}),
            ("cja", "s1", "p9", False, False, None),
        )
    )


KEY = ["destination_id", "segment_id", "person_id"]
MAPPINGS = "destination_id string, segment_id string"
CURRENT = (
    "destination_id string, segment_id string, person_id string, consent_ok boolean, activated boolean, "
    "identities map<string, array<struct<id: string, primary: boolean>>>"
)


def compared(spark: SparkSession, previous: DataFrame, current: list[tuple]) -> DataFrame:
    mappings = spark.createDataFrame([("aam", "s1"), ("cja", "s1")], MAPPINGS)
    return compare_activations(spark.createDataFrame(current, CURRENT), previous, mappings, mappings)


def reference_log(previous: DataFrame, new: DataFrame) -> DataFrame:
    """The log rows by comparing whole rows (maps by content): for each key whose row differs, its new row, else
    a removed row."""
    differences = row_differences(previous, new)
    assert differences is not None
    changed = differences.select(*KEY).distinct()
    kept = new.join(changed, on=KEY, how="left_semi").withColumn("removed", F.lit(False))
    gone = changed.join(new, on=KEY, how="left_anti").select(
        *KEY,
        F.lit(None).cast("boolean").alias("consent_ok"),
        F.lit(None).cast("boolean").alias("activated"),
        F.lit(None).cast(STATE_SCHEMA["identities_sent"].dataType).alias("identities_sent"),
        F.lit(True).alias("removed"),
    )
    return kept.unionByName(gone)


def test_state_changes_are_the_changed_rows_and_the_removed_keys(spark: SparkSession) -> None:
    previous = state(spark, A1, A2, B1)
    current = [
        ("aam", "s1", "p1", True, True, {"IDFA": [("d1", False)]}),  # stays activated: identities sent kept, no row
        ("aam", "s1", "p2", True, True, {"ECID": [("e2", True)]}),  # activated now: its new row
        ("aam", "s1", "p3", False, False, {}),  # a new member without consent: its row
    ]  # B1 is no member any more: a removed row
    assert collected(state_changes(compared(spark, previous, current))) == collected(
        log(
            spark,
            ("aam", "s1", "p2", True, True, {"ECID": [("e2", True)]}, 0, False),
            ("aam", "s1", "p3", False, False, None, 0, False),
            ("cja", "s1", "p1", None, None, None, 0, True),
        ).drop("generation")
    )
    assert collected(state_log.log_rows(state_changes(compared(spark, previous, current)), 7).where("removed")) == [
        ("cja", "s1", "p1", None, None, None, 7, True)
    ]


KEYS = [(d, "s1", p) for d in ("aam", "cja") for p in ("p1", "p2", "p3")]
IDS = st.sampled_from([{"ECID": [("e1", True)]}, {"IDFA": [("d1", False)], "ECID": [("e1", True)]}])
#: A member at T: (consent_ok, activated, identities accepted)
MEMBERS = st.dictionaries(
    st.sampled_from(KEYS),
    st.one_of(st.tuples(st.just(True), st.just(True), IDS), st.tuples(st.booleans(), st.just(False), st.just({}))),
    max_size=len(KEYS),
)
PROPERTY = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(first=MEMBERS, later=st.lists(MEMBERS, min_size=1, max_size=3))
def test_a_table_and_its_log_read_back_the_state_of_each_run(
    spark: SparkSession, first: dict, later: list[dict]
) -> None:
    """Property: the state written whole after a first run, then each later run's :func:`state_changes`
    appended as one generation, read back the state that run computed (:func:`activation_state`); and each
    run's changes are those of the reference, which compares whole rows."""
    members = lambda rows: [(*k, *v) for k, v in rows.items()]  # noqa: E731
    empty = state(spark)
    table = activation_state(compared(spark, empty, members(first)))
    now, changes = table, None
    for generation, rows in enumerate(later):
        both = compared(spark, now, members(rows))
        new = activation_state(both)
        appended = state_log.log_rows(state_changes(both), generation)
        assert collected(appended.drop("generation")) == collected(reference_log(now, new))
        # Each step's results are materialised: the plans would otherwise nest every step before them.
        changes = (appended if changes is None else changes.unionByName(appended)).localCheckpoint()
        now = state_log.current_state(table, changes).localCheckpoint()
        assert collected(now) == collected(new)
