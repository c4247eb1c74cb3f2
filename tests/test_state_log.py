"""The activation state's log: the rows a micro-batch appends, and the state read back from the table and log."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession

from audience_activation import state_log, tables

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


def test_log_rows_hold_the_changed_keys_only(spark: SparkSession) -> None:
    previous = state(spark, A1, A2, B1)
    new = state(
        spark,
        A1,  # unchanged: no row
        ("aam", "s1", "p2", True, True, {"ECID": [("e2", True)]}),  # changed: its new row
        ("aam", "s2", "p2", True, False, None),  # new key: its row
    )  # B1 gone: a removed row
    assert collected(state_log.log_rows(previous, new, 7)) == collected(
        log(
            spark,
            ("aam", "s1", "p2", True, True, {"ECID": [("e2", True)]}, 7, False),
            ("aam", "s2", "p2", True, False, None, 7, False),
            ("cja", "s1", "p1", None, None, None, 7, True),
        )
    )
    assert state_log.log_rows(previous, previous, 8).isEmpty()


def test_an_identity_map_in_another_order_is_the_same_row(spark: SparkSession) -> None:
    """Maps compare by content: the same identities built in another order are no change."""
    ids = {"ECID": [("e1", True)], "IDFA": [("d1", False)]}
    previous = state(spark, ("aam", "s1", "p1", True, True, ids))
    new = state(spark, ("aam", "s1", "p1", True, True, dict(reversed(list(ids.items())))))
    assert state_log.log_rows(previous, new, 0).isEmpty()


KEYS = [(d, "s1", p) for d in ("aam", "cja") for p in ("p1", "p2", "p3")]
VALUES = st.sampled_from(
    [(True, True, {"ECID": [("e1", True)]}), (True, False, None), (False, False, None), (True, True, None)]
)
STATES = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=len(KEYS))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=STATES, later=st.lists(STATES, min_size=1, max_size=3))
def test_a_table_and_its_log_read_back_the_newest_state(spark: SparkSession, first: dict, later: list[dict]) -> None:
    """Property: written whole once, then each later state appended as :func:`log_rows` of the one before (one
    generation each), the table and its log read back the last state, whatever the changes."""
    frame = lambda rows: state(spark, *[(*k, *v) for k, v in rows.items()])  # noqa: E731
    table, changes, before = frame(first), None, first
    for generation, rows in enumerate(later):
        appended = state_log.log_rows(frame(before), frame(rows), generation)
        changes = appended if changes is None else changes.unionByName(appended)
        before = rows
    assert collected(state_log.current_state(table, changes)) == collected(frame(later[-1]))
