"""Segment membership state (docs/batch.md).

``segment_membership`` holds one row per ``(person_id, segment_id)`` with ``status`` (``realized`` or
``exited``), ``last_qualification_time`` (when the status last changed), ``evaluated_at`` (``T`` of the last
run) and ``evaluation_method`` (the kind of job that last changed the row).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from . import tables
from .columns import as_utc, timestamp_literal

REALIZED = "realized"
EXITED = "exited"
MEMBERSHIP_SCHEMA = tables.MEMBERSHIP.schema


def qualifying_pairs(evaluated: DataFrame, segment_ids: list[str]) -> DataFrame:
    """``person_id, segment_id`` for every true segment column of an evaluation result.

    Args:
        evaluated: ``person_id`` plus one boolean column per segment id.
        segment_ids: the segment columns.
    """
    if not segment_ids:
        return evaluated.select("person_id", F.lit(None).cast("string").alias("segment_id")).where(F.lit(False))
    stacked = F.explode(F.array(*[F.when(F.col(f"`{s}`"), F.lit(s)) for s in segment_ids]))
    return evaluated.select("person_id", stacked.alias("segment_id")).where(F.col("segment_id").isNotNull())


def update_membership(
    previous: DataFrame | None,
    qualifying: DataFrame,
    evaluation_time: dt.datetime,
    *,
    retention_days: int,
    method: str = "batch",
) -> DataFrame:
    """The membership state after a run at ``T``.

    - qualifies, and was absent or exited → ``realized`` at ``T``;
    - qualifies and was realized → unchanged (only ``evaluated_at`` moves to ``T``);
    - does not qualify and was realized → ``exited`` at ``T``;
    - exited rows whose ``last_qualification_time`` is more than ``retention_days`` before ``T`` are removed.

    Args:
        previous: the state before this run (``MEMBERSHIP_SCHEMA``), or None on the first run.
        qualifying: ``person_id, segment_id`` pairs that qualify at ``T`` (one row per pair).
        evaluation_time: ``T``.
        retention_days: exited-row retention.
        method: this job's kind (``batch`` or ``streaming``).
    """
    t = timestamp_literal(evaluation_time)
    if previous is None:
        previous = qualifying.sparkSession.createDataFrame([], MEMBERSHIP_SCHEMA)
    now = qualifying.select("person_id", "segment_id", F.lit(True).alias("qualifies"))
    joined = previous.alias("p").join(now.alias("n"), on=["person_id", "segment_id"], how="full_outer")
    qualifies = F.coalesce(F.col("n.qualifies"), F.lit(False))
    was_realized = F.col("p.status") == REALIZED
    enters = qualifies & ~F.coalesce(was_realized, F.lit(False))
    leaves = ~qualifies & F.coalesce(was_realized, F.lit(False))
    changed = enters | leaves
    state = joined.select(
        "person_id",
        "segment_id",
        F.when(qualifies, F.lit(REALIZED)).otherwise(F.lit(EXITED)).alias("status"),
        F.when(changed, t).otherwise(F.col("p.last_qualification_time")).alias("last_qualification_time"),
        t.alias("evaluated_at"),
        F.when(changed, F.lit(method)).otherwise(F.col("p.evaluation_method")).alias("evaluation_method"),
    )
    cutoff = F.lit(as_utc(evaluation_time) - dt.timedelta(days=retention_days)).cast("timestamp")
    return state.where(~((F.col("status") == EXITED) & (F.col("last_qualification_time") < cutoff)))


def segment_overlap(state: DataFrame) -> DataFrame:
    """``segment_a, segment_b, persons``: how many persons are realized in both segments (a = b: the size).

    Args:
        state: a membership state (``person_id, segment_id, status``).
    """
    realized = state.where(F.col("status") == REALIZED).select("person_id", "segment_id")
    left = realized.withColumnRenamed("segment_id", "segment_a")
    right = realized.withColumnRenamed("segment_id", "segment_b")
    return (
        left.join(right, on="person_id", how="inner")
        .groupBy("segment_a", "segment_b")
        .agg(F.count(F.lit(1)).alias("persons"))
    )
