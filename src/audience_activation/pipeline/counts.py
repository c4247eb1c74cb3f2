"""The run log's counts as one small DataFrame, computed from the inputs and a run's results.

Every input row is accounted for: ``rows.<table>.total`` equals the sum of that table's other categories, each
counted by its own predicate (or from the results), so a row counted twice or not at all shows up as a
difference. Categories: ``after_t`` (not yet existing at ``T``), ``missing_timestamp``, ``no_valid_identity``,
``invalid_link`` (an end invalid), ``ignored_by_merge_policy``, ``duplicate_id`` (an event ``_id`` seen
before) and ``used``. The "existed at ``T``" predicates are those of :mod:`audience_activation.as_of`.

The result has one row per count — ``measure, subject, detail, reason, count`` — that
:meth:`audience_activation.runlog.RunCounts.from_rows` turns into the typed counts; the job layer collects it
(a few hundred rows at most: one per category, reason, segment and destination route).
"""

from __future__ import annotations

import datetime as dt
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .. import as_of, profile
from ..columns import timestamp_literal
from ..config import AppConfig
from ..membership import REALIZED
from ..schemas import EXPERIENCE_EVENTS, IDENTITY_GRAPH, PROFILE_FRAGMENTS, REGION_INFORMATION
from .model import Inputs, Results

COUNT_COLUMNS = ("measure", "subject", "detail", "reason", "count")


def _count_if(condition: Column) -> Column:
    return F.sum(F.when(condition, F.lit(1)).otherwise(F.lit(0)))


def _measure(df: DataFrame, measure: str, subject: Column, detail: Column, reason: Column, count: Column) -> DataFrame:
    return df.select(
        F.lit(measure).alias("measure"),
        subject.cast("string").alias("subject"),
        detail.cast("string").alias("detail"),
        reason.cast("string").alias("reason"),
        count.cast("long").alias("count"),
    )


def _categories(df: DataFrame, table: str, **categories: Column) -> DataFrame:
    """One aggregation over ``df`` turned into one row per category."""
    row = df.agg(*[value.alias(name) for name, value in categories.items()])
    pairs = F.array(*[F.struct(F.lit(name).alias("k"), F.col(name).alias("v")) for name in categories])
    exploded = row.select(F.inline(pairs))
    return _measure(exploded, "rows", F.lit(table), F.lit(None), F.col("k"), F.coalesce(F.col("v"), F.lit(0)))


def _fragment_rows(fragments: DataFrame, profiles: DataFrame, config: AppConfig, t: Column) -> list[DataFrame]:
    valid = profile.primary_identity(F.col("identityMap")).isNotNull()
    at_t = as_of.existed_at(PROFILE_FRAGMENTS, t)
    policy = config.job.merge_policy
    listed = F.col("dataset").isin(list(policy.datasets)) if hasattr(policy, "datasets") else F.lit(True)
    categories = _categories(
        fragments,
        PROFILE_FRAGMENTS,
        total=F.count(F.lit(1)),
        missing_timestamp=_count_if(F.col("ingested_at").isNull()),
        after_t=_count_if(F.col("ingested_at") > t),
        no_valid_identity=_count_if(at_t & ~valid),
        ignored_by_merge_policy=_count_if(at_t & valid & ~listed),
    )
    used = profiles.agg(F.sum("fragment_count").alias("n"))
    return [
        categories,
        _measure(used, "rows", F.lit(PROFILE_FRAGMENTS), F.lit(None), F.lit("used"), F.coalesce("n", F.lit(0))),
    ]


def _event_rows(events: DataFrame, person_events: DataFrame | None, t: Column) -> list[DataFrame]:
    valid = profile.primary_identity(F.col("identityMap")).isNotNull()
    at_t = as_of.existed_at(EXPERIENCE_EVENTS, t)
    distinct = F.countDistinct(F.when(at_t & valid, profile.event_key(events)))
    parts = [
        _categories(
            events,
            EXPERIENCE_EVENTS,
            total=F.count(F.lit(1)),
            missing_timestamp=_count_if(F.col("timestamp").isNull()),
            after_t=_count_if(F.col("timestamp") > t),
            no_valid_identity=_count_if(at_t & ~valid),
            duplicate_id=_count_if(at_t & valid) - distinct,
        )
    ]
    if person_events is not None:
        used = person_events.agg(F.count(F.lit(1)).alias("n"))
        parts.append(_measure(used, "rows", F.lit(EXPERIENCE_EVENTS), F.lit(None), F.lit("used"), F.col("n")))
    return parts


def _link_rows(links: DataFrame, t: Column) -> DataFrame:
    at_t = as_of.existed_at(IDENTITY_GRAPH, t)
    ends_valid = as_of.valid_link_ends()
    return _categories(
        links,
        IDENTITY_GRAPH,
        total=F.count(F.lit(1)),
        missing_timestamp=_count_if(F.col("last_seen_at").isNull()),
        after_t=_count_if(F.col("last_seen_at") > t),
        invalid_link=_count_if(at_t & ~ends_valid),
        used=_count_if(at_t & ends_valid),
    )


def _region_rows(regions: DataFrame, t: Column) -> DataFrame:
    valid = profile.primary_identity(F.col("identityMap")).isNotNull()
    captured = F.coalesce(as_of.captured_by(t), F.lit(False))
    return _categories(
        regions,
        REGION_INFORMATION,
        total=F.count(F.lit(1)),
        after_t=_count_if(~captured),
        no_valid_identity=_count_if(captured & ~valid),
        used=_count_if(captured & valid),
    )


def row_accounting(
    inputs: Inputs, results: Results, config: AppConfig, evaluation_time: dt.datetime
) -> list[DataFrame]:
    """Where every input row went (see the module docstring), as count rows per input table present."""
    t = timestamp_literal(evaluation_time)
    parts = _fragment_rows(inputs.fragments, results.profiles, config, t)
    if inputs.events is not None:
        parts += _event_rows(inputs.events, results.events, t)
    if inputs.links is not None:
        parts.append(_link_rows(inputs.links, t))
    if inputs.regions is not None:
        parts.append(_region_rows(inputs.regions, t))
    return parts


def run_counts(inputs: Inputs, results: Results, config: AppConfig, evaluation_time: dt.datetime) -> DataFrame:
    """Every count of the run log as rows ``measure, subject, detail, reason, count`` (see the module docstring).

    Measures: ``rows`` (subject table, reason category), ``quarantine`` (reason), ``persons``, ``members``
    (subject segment; segments without members have no row), ``changes`` (subject destination, detail route,
    reason) and ``exclusions`` (subject destination, reason).
    """
    none = F.lit(None)
    quarantine = results.quarantine.groupBy("reason").count()
    realized = results.membership.where(F.col("status") == REALIZED).groupBy("segment_id").count()
    changes = results.changes.groupBy("destination_id", "route", "reason").count()
    parts = [
        *row_accounting(inputs, results, config, evaluation_time),
        _measure(quarantine, "quarantine", none, none, F.col("reason"), F.col("count")),
        _measure(results.profiles.agg(F.count(F.lit(1)).alias("n")), "persons", none, none, none, F.col("n")),
        _measure(realized, "members", F.col("segment_id"), none, none, F.col("count")),
        _measure(changes, "changes", F.col("destination_id"), F.col("route"), F.col("reason"), F.col("count")),
        _measure(results.exclusions, "exclusions", F.col("destination_id"), none, F.col("reason"), F.col("persons")),
    ]
    return reduce(DataFrame.unionByName, parts)
