"""The inputs as of ``T``: which rows existed at the evaluation time, and the rows that cannot be placed.

Rules (docs/batch.md, "Stages"): a fragment exists from its ``ingested_at``, an event from its ``timestamp``, a
link from its ``last_seen_at``; a ``region_information`` row exists once one of its captures is at or before
``T`` (later captures of it are dropped). Rows whose time is null are set aside as ``missing_timestamp``
quarantine rows. The run counts use the same predicates (:mod:`audience_activation.pipeline.counts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .columns import identity_map_entries, normalize_namespace, timestamp_literal
from .namespaces import invalid_reason
from .schemas import EXPERIENCE_EVENTS, IDENTITY_GRAPH, PROFILE_FRAGMENTS


@dataclass(frozen=True)
class AsOfInputs:
    """The input tables filtered to what existed at ``T``, and the rows without a time.

    ``undated`` holds quarantine rows (``source_table, namespace, id, row_key, reason``) for input rows whose
    time column is null: they cannot be placed before or after ``T`` and take no part in the run.
    """

    fragments: DataFrame | None
    events: DataFrame | None
    links: DataFrame | None
    regions: DataFrame | None
    undated: DataFrame | None = None

    def map(self, function: Callable[[DataFrame], DataFrame]) -> AsOfInputs:
        """The same holder with ``function`` applied to each table present (e.g. a lineage barrier)."""
        tables = (self.fragments, self.events, self.links, self.regions, self.undated)
        return AsOfInputs(*(None if df is None else function(df) for df in tables))


MISSING_TIMESTAMP = "missing_timestamp"

#: The column that says when a row of an input table came to exist (region rows: each capture's time).
TIME_COLUMNS = {PROFILE_FRAGMENTS: "ingested_at", EXPERIENCE_EVENTS: "timestamp", IDENTITY_GRAPH: "last_seen_at"}


def existed_at(table: str, t: Column) -> Column:
    """True for rows of ``table`` that existed at ``t`` (their time at or before it; null when undated)."""
    return F.col(TIME_COLUMNS[table]) <= t


def first_capture() -> Column:
    """The earliest dated capture of a ``region_information`` row (null when none is dated).

    The captures' times are read as an array directly (the field of an array of structs), not with a lambda, so
    the scan's projection stays compiled (docs/performance.md, fifth round).
    """
    return F.array_min(F.map_values("userActivityRegions")["captureTimestamp"])


def captured_by(t: Column) -> Column:
    """True for ``region_information`` rows with at least one capture at or before ``t`` (false or null
    otherwise: a row without a dated capture gives null): its :func:`first_capture` compared with ``t``."""
    return first_capture() <= t


def valid_link_ends() -> Column:
    """True for ``identity_graph`` rows whose two ends are valid identities."""
    return (
        invalid_reason(normalize_namespace(F.col("src_namespace")), F.col("src_id")).isNull()
        & invalid_reason(normalize_namespace(F.col("dst_namespace")), F.col("dst_id")).isNull()
    )


def _undated(records: DataFrame, table: str, time: Column, row_key: Column) -> DataFrame:
    first = F.array_min(identity_map_entries(F.col("identityMap")))
    return records.where(time.isNull()).select(
        F.lit(table).alias("source_table"),
        first["namespace"].alias("namespace"),
        first["id"].alias("id"),
        row_key.cast("string").alias("row_key"),
        F.lit(MISSING_TIMESTAMP).alias("reason"),
    )


def as_of(
    fragments: DataFrame | None,
    events: DataFrame | None,
    links: DataFrame | None,
    regions: DataFrame | None,
    evaluation_time: datetime,
) -> AsOfInputs:
    """Keep the rows that existed at ``T``: ``ingested_at``/``timestamp``/``last_seen_at`` at or before it;
    region rows with at least one capture at or before it (later captures of such a row are dropped).
    Rows whose time is null are set aside as ``missing_timestamp`` quarantine rows."""
    t = timestamp_literal(evaluation_time)
    undated = []
    regions_at_t = None
    if regions is not None:
        captures = F.map_filter("userActivityRegions", lambda _code, capture: capture["captureTimestamp"] <= t)
        regions_at_t = regions.where(captured_by(t)).withColumn("userActivityRegions", captures)
    if fragments is not None:
        undated.append(_undated(fragments, PROFILE_FRAGMENTS, F.col("ingested_at"), F.lit(None)))
    if events is not None:
        undated.append(_undated(events, EXPERIENCE_EVENTS, F.col("timestamp"), F.col("_id")))
    if links is not None:
        undated.append(
            links.where(F.col("last_seen_at").isNull()).select(
                F.lit(IDENTITY_GRAPH).alias("source_table"),
                normalize_namespace(F.col("src_namespace")).alias("namespace"),
                F.col("src_id").alias("id"),
                F.lit(None).cast("string").alias("row_key"),
                F.lit(MISSING_TIMESTAMP).alias("reason"),
            )
        )
    return AsOfInputs(
        fragments=None if fragments is None else fragments.where(existed_at(PROFILE_FRAGMENTS, t)),
        events=None if events is None else events.where(existed_at(EXPERIENCE_EVENTS, t)),
        links=None if links is None else links.where(existed_at(IDENTITY_GRAPH, t)),
        regions=regions_at_t,
        undated=reduce(DataFrame.unionByName, undated) if undated else None,
    )
