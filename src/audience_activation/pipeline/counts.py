"""The run log's counts as one small DataFrame, computed from the inputs and a run's results.

Every input row is accounted for: ``rows.<table>.total`` equals the sum of that table's other categories, so a
row counted twice or not at all shows up as a difference. The inputs are scanned for their time columns only
(``total``, ``missing_timestamp``, ``after_t``); every other category is counted on results the run has
materialised anyway (the records as of ``T`` with their validated identities, the profiles, the person events),
so counting re-runs no lineage: the sum checks that the rows as of ``T`` are exactly the rows the stages saw.
Categories: ``after_t`` (not yet existing at ``T``), ``missing_timestamp``, ``no_valid_identity``,
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

from .. import as_of
from ..columns import timestamp_literal
from ..config import AppConfig
from ..identity_entries import has_valid_identity
from ..membership import REALIZED
from ..schemas import EXPERIENCE_EVENTS, IDENTITY_GRAPH, PROFILE_FRAGMENTS, REGION_INFORMATION
from .micro_batch import MicroBatchResults
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


def _category_rows(row: DataFrame, table: str, names: list[str]) -> DataFrame:
    """A one-row DataFrame with a column per category turned into one count row per category."""
    pairs = F.array(*[F.struct(F.lit(name).alias("k"), F.col(name).alias("v")) for name in names])
    exploded = row.select(F.inline(pairs))
    return _measure(exploded, "rows", F.lit(table), F.lit(None), F.col("k"), F.coalesce(F.col("v"), F.lit(0)))


def _categories(df: DataFrame, table: str, **categories: Column) -> DataFrame:
    """One aggregation over ``df`` turned into one row per category."""
    row = df.agg(*[value.alias(name) for name, value in categories.items()])
    return _category_rows(row, table, list(categories))


def _records_of(records: DataFrame, table: str) -> DataFrame:
    return records.where(F.col("source_table") == F.lit(table))


def _time_categories(df: DataFrame, table: str, t: Column) -> DataFrame:
    """``total``, ``missing_timestamp`` and ``after_t`` of an input table, reading only its time column."""
    time = F.col(as_of.TIME_COLUMNS[table])
    return _categories(
        df.select(time),
        table,
        total=F.count(F.lit(1)),
        missing_timestamp=_count_if(time.isNull()),
        after_t=_count_if(time > t),
    )


def _fragment_rows(
    fragments: DataFrame, records: DataFrame, profiles: DataFrame, config: AppConfig, t: Column
) -> list[DataFrame]:
    policy = config.job.merge_policy
    listed = F.col("dataset").isin(list(policy.datasets)) if hasattr(policy, "datasets") else F.lit(True)
    valid = has_valid_identity(F.col("entries"))
    used = profiles.agg(F.sum("fragment_count").alias("n"))
    return [
        _time_categories(fragments, PROFILE_FRAGMENTS, t),
        _categories(
            _records_of(records, PROFILE_FRAGMENTS),
            PROFILE_FRAGMENTS,
            no_valid_identity=_count_if(~valid),
            ignored_by_merge_policy=_count_if(valid & ~listed),
        ),
        _measure(used, "rows", F.lit(PROFILE_FRAGMENTS), F.lit(None), F.lit("used"), F.coalesce("n", F.lit(0))),
    ]


def _event_rows(events: DataFrame, records: DataFrame, person_events: DataFrame | None, t: Column) -> list[DataFrame]:
    valid = has_valid_identity(F.col("entries"))
    parts = [_time_categories(events, EXPERIENCE_EVENTS, t)]
    at_t = _records_of(records, EXPERIENCE_EVENTS).agg(
        _count_if(~valid).alias("no_valid_identity"), _count_if(valid).alias("valid")
    )
    kept = (
        person_events.agg(F.count(F.lit(1)).alias("used"))
        if person_events is not None
        else at_t.sparkSession.range(1).select(F.lit(0).alias("used"))
    )
    # Person events hold each distinct event key of the valid events at T once: the rest are duplicates.
    split = at_t.crossJoin(kept).withColumn("duplicate_id", F.col("valid") - F.col("used"))
    parts.append(_category_rows(split, EXPERIENCE_EVENTS, ["no_valid_identity", "duplicate_id", "used"]))
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


def _region_rows(regions: DataFrame, records: DataFrame, t: Column) -> list[DataFrame]:
    valid = has_valid_identity(F.col("entries"))
    captured = F.coalesce(as_of.captured_by(t), F.lit(False))
    return [
        _categories(
            regions.select("userActivityRegions"),
            REGION_INFORMATION,
            total=F.count(F.lit(1)),
            after_t=_count_if(~captured),
        ),
        _categories(
            _records_of(records, REGION_INFORMATION),
            REGION_INFORMATION,
            no_valid_identity=_count_if(~valid),
            used=_count_if(valid),
        ),
    ]


def row_accounting(
    inputs: Inputs, results: Results, config: AppConfig, evaluation_time: dt.datetime
) -> list[DataFrame]:
    """Where every input row went (see the module docstring), as count rows per input table present.

    The inputs are scanned only for their time columns (``total``, ``missing_timestamp``, ``after_t``); every
    other category is counted on materialised results: the records as of ``T`` with their validated identities
    (``no_valid_identity``, ``ignored_by_merge_policy``, region rows ``used``), the unified profiles (fragments
    ``used``) and the person events (events ``used``; the other valid events as of ``T`` are ``duplicate_id``).
    """
    t = timestamp_literal(evaluation_time)
    records = results.records
    if records is None:
        raise ValueError("the run counts need the results' records (identity resolution's materialised input)")
    parts = _fragment_rows(inputs.fragments, records, results.profiles, config, t)
    if inputs.events is not None:
        parts += _event_rows(inputs.events, records, results.events, t)
    if inputs.links is not None:
        parts.append(_link_rows(inputs.links, t))
    if inputs.regions is not None:
        parts += _region_rows(inputs.regions, records, t)
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


def micro_batch_counts(micro: MicroBatchResults) -> DataFrame:
    """The run-log counts of a streaming micro-batch, as rows like :func:`run_counts`'.

    Measures: ``rows`` (subject input table, reason ``new``: the micro-batch's new rows), ``quarantine``
    (reason), ``persons`` (persons it revisited), ``members`` (realized members per segment in the membership
    after it, every person), ``changes`` and ``exclusions`` (its own).
    """
    none = F.lit(None)
    results = micro.results
    fresh = micro.new_rows
    new = [
        _measure(df.agg(F.count(F.lit(1)).alias("n")), "rows", F.lit(table), none, F.lit("new"), F.col("n"))
        for table, df in (
            (PROFILE_FRAGMENTS, fresh.fragments),
            (EXPERIENCE_EVENTS, fresh.events),
            (IDENTITY_GRAPH, fresh.links),
            (REGION_INFORMATION, fresh.regions),
        )
        if df is not None
    ]
    quarantine = results.quarantine.groupBy("reason").count()
    realized = results.membership.where(F.col("status") == REALIZED).groupBy("segment_id").count()
    changes = results.changes.groupBy("destination_id", "route", "reason").count()
    persons = micro.persons.agg(F.count(F.lit(1)).alias("n"))
    parts = [
        *new,
        _measure(quarantine, "quarantine", none, none, F.col("reason"), F.col("count")),
        _measure(persons, "persons", none, none, none, F.col("n")),
        _measure(realized, "members", F.col("segment_id"), none, none, F.col("count")),
        _measure(changes, "changes", F.col("destination_id"), F.col("route"), F.col("reason"), F.col("count")),
        _measure(results.exclusions, "exclusions", F.col("destination_id"), none, F.col("reason"), F.col("persons")),
    ]
    return reduce(DataFrame.unionByName, parts)
