"""The batch job (CONTRACT §1, §6, §7, §8): identities → profiles → segments → membership → activation.

:func:`run_batch` reads the inputs at their latest Delta versions, evaluates everything at ``T`` and writes,
each in its own atomic commit:

1. ``identity_clusters`` (overwrite) and ``unified_profiles`` (overwrite);
2. ``segment_membership`` (overwrite: the state after this run);
3. per destination, ``activation/<id>/edge_streaming`` and ``activation/<id>/hub_batch`` (partition
   ``run_id``, replaced on a re-run of the same ``T``), then ``activation_state`` (overwrite);
   ``segment_membership`` and the activation tables have Delta's Change Data Feed on, so downstream systems
   can stream each run's changes (``readChangeFeed``);
4. ``quarantine`` (partition ``run_id``) and, last, the ``activation_runs`` row (partition ``run_id``) with
   ``status = completed`` and the versions this run wrote.

**Re-runs.** The state "before this run" is never read from the tables' latest versions: it is read at the
versions recorded by the newest *completed* run older than ``T``. So a run that failed after some commits, or
a second run of the same ``T``, computes exactly what a clean run computes, and every output it replaces gets
the same rows (idempotent). A ``T`` older than the newest completed run is refused unless ``force``.

:func:`preview_batch` computes the same results and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from . import activation, identity, membership, profile, recovery, runlog
from .config import AppConfig, ConfigError, DestinationConfig
from .lease import LakeLease, LeaseLostError
from .pql import compiler
from .pql.validation import SegmentDefinitionError
from .schemas import (
    EXPERIENCE_EVENTS,
    IDENTITY_GRAPH,
    INPUT_TABLES,
    PROFILE_FRAGMENTS,
    REGION_INFORMATION,
    InputSchemaError,
    check_input_schemas,
)
from .segments import compile_segments
from .storage import DeltaStorage, TableNotFoundError, open_storage
from .storage.base import CHANGE_DATA_FEED, DamagedTableError, ParquetCheckpoint, read_failure

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
#: Called with a table's logical name right after its commit (progress output; tests inject failures here).
OnCommit = Callable[[str], None]

KIND = "batch"
COMPLETED = "completed"
FAILED = "failed"

RUNS_SCHEMA = (
    "run_id string, kind string, evaluation_time timestamp, started_at timestamp, ended_at timestamp, "
    "status string, storage_engine string, input_versions map<string, bigint>, "
    "output_versions map<string, bigint>, counts map<string, bigint>, mappings map<string, array<string>>, "
    "error string"
)
QUARANTINE_COLUMNS = ("run_id", "source_table", "namespace", "id", "row_key", "reason")
EDGE_COLUMNS = (*activation.OUTPUT_COLUMNS, "region", "dcs_region_id")


class RunOrderError(RuntimeError):
    """``T`` is older than the newest completed run (pass ``force`` to run it anyway)."""


def _quiet(_message: str) -> None:
    return None


def _no_hook(_table: str) -> None:
    return None


@dataclass(frozen=True)
class PreviousRun:
    """The newest completed run older than ``T``: where the state before this run is."""

    run_id: str
    evaluation_time: dt.datetime
    output_versions: dict[str, int]
    mappings: dict[str, list[str]]


@dataclass
class RunSummary:
    """What a run (or a preview) did; printed at the end and stored in ``activation_runs``."""

    run_id: str
    evaluation_time: dt.datetime
    engine: str
    status: str = COMPLETED
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    previous_run: str | None = None
    input_versions: dict[str, int | None] = field(default_factory=dict)
    output_versions: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    classification: dict[str, str] = field(default_factory=dict)
    cc_rounds: int = 0


# -- run log ---------------------------------------------------------------------------------------------------


def completed_runs(store: DeltaStorage, config: AppConfig) -> DataFrame | None:
    """The ``activation_runs`` rows of completed batch runs, or None before the first run."""
    try:
        runs = store.read(config.job.table_location("activation_runs")).df
    except TableNotFoundError:
        return None
    return runs.where((F.col("status") == COMPLETED) & (F.col("kind") == KIND))


def previous_run(runs: DataFrame | None, evaluation_time: dt.datetime, *, force: bool) -> PreviousRun | None:
    """The newest completed run strictly older than ``T``; refuses ``T`` older than the newest completed run.

    Raises:
        RunOrderError: ``T`` is older than the newest completed run and ``force`` is false.
    """
    if runs is None:
        return None
    t = F.lit(runlog.as_utc(evaluation_time)).cast("timestamp")
    # Compared in Spark: collected timestamps are converted with the driver's local zone, not UTC.
    newer = runs.where(F.col("evaluation_time") > t)
    if not force and not newer.isEmpty():
        newest = newer.agg(F.date_format(F.max("evaluation_time"), "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("t")).first()
        raise RunOrderError(
            f"evaluation time {runlog.as_utc(evaluation_time).isoformat()} is older than the newest completed run "
            f"({newest['t'] if newest else '?'}); re-running history would overwrite newer state. "
            f"Pass --force to run it anyway."
        )
    row = runs.where(F.col("evaluation_time") < t).orderBy(F.col("evaluation_time").desc()).limit(1).first()
    if row is None:
        return None
    return PreviousRun(
        run_id=row["run_id"],
        evaluation_time=runlog.as_utc(row["evaluation_time"]),
        output_versions={k: int(v) for k, v in (row["output_versions"] or {}).items()},
        mappings={k: list(v) for k, v in (row["mappings"] or {}).items()},
    )


def _runs_row(spark: SparkSession, summary: RunSummary, mappings: dict[str, list[str]], error: str | None) -> DataFrame:
    return spark.createDataFrame(
        [
            (
                summary.run_id,
                KIND,
                summary.evaluation_time,
                summary.started_at,
                summary.ended_at,
                summary.status,
                summary.engine,
                {k: v for k, v in summary.input_versions.items() if v is not None},
                summary.output_versions,
                summary.counts,
                mappings,
                error,
            )
        ],
        RUNS_SCHEMA,
    )


# -- the computation -----------------------------------------------------------------------------------------


@dataclass
class BatchResults:
    """Every result of one evaluation at ``T``, before anything is written."""

    clusters: DataFrame
    profiles: DataFrame
    membership: DataFrame
    changes: DataFrame  # routed change rows of every destination
    state: DataFrame
    exclusions: DataFrame
    quarantine: DataFrame
    evaluated: DataFrame
    events: DataFrame | None  # de-duplicated person events
    segment_ids: list[str]
    classification: dict[str, str]
    cc_rounds: int


def read_inputs(store: DeltaStorage, config: AppConfig) -> tuple[dict[str, DataFrame | None], dict[str, int | None]]:
    """Read every input table present with the Delta version read, after checking all their schemas.

    Raises:
        InputSchemaError: malformed input, naming every table and column at fault.
    """
    frames: dict[str, DataFrame | None] = {}
    versions: dict[str, int | None] = {}
    schemas: dict[str, StructType | None] = {}
    for name in INPUT_TABLES:
        try:
            snapshot = store.read(config.job.table_location(name))
        except TableNotFoundError:
            frames[name] = versions[name] = schemas[name] = None
            continue
        frames[name], versions[name], schemas[name] = snapshot.df, snapshot.version, snapshot.df.schema
    check_input_schemas(schemas)
    return frames, versions


def profile_schema(fragments: DataFrame) -> StructType:
    """The schema of ``unified_profiles`` for the given fragments (to compile segments before any job)."""
    attributes = profile.attribute_schema(fragments.schema)
    return StructType(
        [
            StructField("person_id", StringType()),
            StructField("identityMap", fragments.schema["identityMap"].dataType),
            *attributes.fields,
            StructField("fragment_count", LongType()),
        ]
    )


def event_schema(events: DataFrame | None) -> StructType | None:
    """The schema of the person events (``person_id`` + event columns)."""
    if events is None:
        return None
    return StructType([StructField("person_id", StringType()), *events.schema.fields])


def compile_consents(config: AppConfig, schema: StructType, evaluation_time: dt.datetime) -> dict[str, Any]:
    """Each destination's consent condition compiled to a Column over the unified profile.

    Raises:
        ConfigError: naming destinations.yaml and the destination, with the PQL position.
    """
    sources = [(f"consent:{d.id}", d.consent) for d in config.destinations if d.consent]
    if not sources:
        return {}
    try:
        compiled = compiler.compile_segments(sources, schema, None, evaluation_time)
    except SegmentDefinitionError as error:
        lines = [f"destination '{p.segment_id.removeprefix('consent:')}': consent: {p.error}" for p in error.problems]
        raise ConfigError(config.destinations_file, "\n".join(lines), item=error.problems[0].segment_id) from error
    return {d.id: compiled.columns.get(f"consent:{d.id}") for d in config.destinations}


def evaluate(
    spark: SparkSession,
    config: AppConfig,
    frames: dict[str, DataFrame | None],
    evaluation_time: dt.datetime,
    previous: PreviousRun | None,
    previous_tables: dict[str, DataFrame | None],
    barrier: ParquetCheckpoint,
    progress: Progress = _quiet,
) -> BatchResults:
    """Everything a run computes, as DataFrames (nothing is written).

    Args:
        spark: the session.
        config: the configuration.
        frames: the input tables (None when absent).
        evaluation_time: ``T``.
        previous: the previous completed run, or None.
        previous_tables: ``segment_membership``, ``activation_state`` and ``identity_clusters`` as the previous
            run left them (None when absent).
        barrier: the lineage barrier (parquet under the lake's scratch folder).
        progress: one-line progress messages.
    """
    fragments = frames[PROFILE_FRAGMENTS]
    if fragments is None:  # pragma: no cover - check_input_schemas requires the table
        raise ValueError("profile_fragments is required")
    events_in = frames[EXPERIENCE_EVENTS]
    # Compile first: a bad segment or consent condition fails before any Spark job runs.
    profiles_schema = profile_schema(fragments)
    compiled = compile_segments(config, profiles_schema, event_schema(events_in), evaluation_time)
    consents = compile_consents(config, profiles_schema, evaluation_time)

    progress("resolving identities")
    inputs = identity.as_of(fragments, events_in, frames[IDENTITY_GRAPH], frames[REGION_INFORMATION], evaluation_time)
    resolved = identity.resolve_identities(inputs, config.namespaces, config.job.identity, barrier)
    clusters = barrier(resolved.clusters)

    progress("merging profiles and attributing events")
    events = None
    if inputs.events is not None:
        events = barrier(profile.person_events(inputs.events, clusters))
    profiles = barrier(
        profile.unified_profiles(
            inputs.fragments if inputs.fragments is not None else fragments,
            events,
            clusters,
            config.job.merge_policy,
            config.namespaces,
        )
    )

    progress(f"evaluating {len(compiled.segment_ids)} segments in one pass")
    evaluated = barrier(compiled.evaluate(profiles, events if compiled.needs_events else None))
    qualifying = membership.qualifying_pairs(evaluated, list(compiled.segment_ids))
    new_membership = barrier(
        membership.update_membership(
            previous_tables.get("segment_membership"),
            qualifying,
            evaluation_time,
            retention_days=config.job.membership.exited_retention_days,
            method=KIND,
        )
    )

    progress(f"activating {len(config.destinations)} destinations")
    destinations: list[DestinationConfig] = list(config.destinations)
    current = activation.current_members(new_membership, profiles, destinations, consents, config.namespaces)
    previous_mappings = None
    if previous is not None:
        rows = [(d, s) for d, segments in previous.mappings.items() for s in segments]
        previous_mappings = spark.createDataFrame(rows, activation.MAPPING_SCHEMA)
    diff = activation.diff_activations(
        current,
        previous_tables.get("activation_state"),
        previous_tables.get("segment_membership"),
        new_membership,
        activation.mappings_frame(spark, destinations),
        previous_mappings,
        evaluation_time,
    )
    window = config.job.activation.edge_window_days
    current_regions = activation.person_regions(clusters, inputs.regions, evaluation_time, window)
    previous_clusters = previous_tables.get("identity_clusters")
    previous_regions = (
        activation.person_regions(previous_clusters, inputs.regions, evaluation_time, window)
        if previous_clusters is not None
        else spark.createDataFrame([], "person_id string, region string, captured_at timestamp")
    )
    changes = barrier(
        activation.route_changes(
            diff.changes, destinations, current_regions, previous_regions, clusters, config.regions
        )
    )
    return BatchResults(
        clusters=clusters,
        profiles=profiles,
        membership=new_membership,
        changes=changes,
        state=barrier(diff.state),
        exclusions=diff.exclusions,
        quarantine=resolved.quarantine,
        evaluated=evaluated,
        events=events,
        segment_ids=list(compiled.segment_ids),
        classification={
            k: v.method.value if hasattr(v.method, "value") else str(v.method)
            for k, v in compiled.classification.items()
        },
        cc_rounds=resolved.rounds,
    )


def _previous_tables(
    store: DeltaStorage, config: AppConfig, previous: PreviousRun | None
) -> dict[str, DataFrame | None]:
    tables: dict[str, DataFrame | None] = {
        "segment_membership": None,
        "activation_state": None,
        "identity_clusters": None,
    }
    if previous is None:
        return tables
    for name in tables:
        version = previous.output_versions.get(name)
        if version is not None:
            tables[name] = store.read(config.job.table_location(name), version).df
    return tables


def _counts(rows: dict[str, int], results: BatchResults) -> dict[str, int]:
    """The run log counts (small aggregations over already materialised results)."""
    counts: dict[str, int] = dict(rows)
    for row in results.quarantine.groupBy("reason").count().collect():
        counts[f"quarantine.{row['reason']}"] = int(row["count"])
    counts["persons"] = int(results.profiles.count())
    realized = results.membership.where(F.col("status") == membership.REALIZED).groupBy("segment_id").count()
    members = {row["segment_id"]: int(row["count"]) for row in realized.collect()}
    for segment_id in results.segment_ids:
        counts[f"members.{segment_id}"] = members.get(segment_id, 0)
    for row in results.changes.groupBy("destination_id", "route", "reason").count().collect():
        counts[f"changes.{row['destination_id']}.{row['route']}.{row['reason']}"] = int(row["count"])
    for row in results.exclusions.collect():
        counts[f"exclusions.{row['destination_id']}.{row['reason']}"] = int(row["persons"])
    return dict(sorted(counts.items()))


def _count_if(condition: Any) -> Any:
    return F.sum(F.when(condition, F.lit(1)).otherwise(F.lit(0)))


def row_accounting(
    frames: dict[str, DataFrame | None],
    results: BatchResults,
    config: AppConfig,
    evaluation_time: dt.datetime,
) -> dict[str, int]:
    """Where every input row went (CONTRACT §8: nothing is lost silently, the counts add up).

    ``rows.<table>.total`` equals the sum of that table's other ``rows.<table>.*`` counts; each part is
    counted by its own predicate (or from the results), so a row counted twice or not at all shows up as a
    difference. Categories: ``after_t`` (not yet existing at ``T``), ``missing_timestamp``,
    ``no_valid_identity``, ``invalid_link`` (an end invalid), ``ignored_by_merge_policy``, ``duplicate_id``
    (an event ``_id`` seen before) and ``used``.
    """
    t = F.lit(runlog.as_utc(evaluation_time)).cast("timestamp")
    out: dict[str, int] = {}

    def record(table: str, row: Any) -> None:
        for key, value in row.asDict().items():
            out[f"rows.{table}.{key}"] = int(value or 0)

    fragments = frames[PROFILE_FRAGMENTS]
    if fragments is not None:
        valid = profile.primary_identity(F.col("identityMap")).isNotNull()
        at_t = F.col("ingested_at") <= t
        policy = config.job.merge_policy
        listed = F.col("dataset").isin(list(policy.datasets)) if hasattr(policy, "datasets") else F.lit(True)
        row = fragments.agg(
            F.count(F.lit(1)).alias("total"),
            _count_if(F.col("ingested_at").isNull()).alias("missing_timestamp"),
            _count_if(F.col("ingested_at") > t).alias("after_t"),
            _count_if(at_t & ~valid).alias("no_valid_identity"),
            _count_if(at_t & valid & ~listed).alias("ignored_by_merge_policy"),
        ).first()
        record(PROFILE_FRAGMENTS, row)
        used = results.profiles.agg(F.sum("fragment_count").alias("used")).first()
        out[f"rows.{PROFILE_FRAGMENTS}.used"] = int((used["used"] if used else 0) or 0)
    events = frames[EXPERIENCE_EVENTS]
    if events is not None:
        valid = profile.primary_identity(F.col("identityMap")).isNotNull()
        at_t = F.col("timestamp") <= t
        row = events.agg(
            F.count(F.lit(1)).alias("total"),
            _count_if(F.col("timestamp").isNull()).alias("missing_timestamp"),
            _count_if(F.col("timestamp") > t).alias("after_t"),
            _count_if(at_t & ~valid).alias("no_valid_identity"),
            (_count_if(at_t & valid) - F.countDistinct(F.when(at_t & valid, profile.event_key(events)))).alias(
                "duplicate_id"
            ),
        ).first()
        record(EXPERIENCE_EVENTS, row)
        out[f"rows.{EXPERIENCE_EVENTS}.used"] = int(results.events.count()) if results.events is not None else 0
    links = frames[IDENTITY_GRAPH]
    if links is not None:
        at_t = F.col("last_seen_at") <= t
        ends_valid = (
            identity.invalid_reason(identity.normalize_namespace(F.col("src_namespace")), F.col("src_id")).isNull()
            & identity.invalid_reason(identity.normalize_namespace(F.col("dst_namespace")), F.col("dst_id")).isNull()
        )
        row = links.agg(
            F.count(F.lit(1)).alias("total"),
            _count_if(F.col("last_seen_at").isNull()).alias("missing_timestamp"),
            _count_if(F.col("last_seen_at") > t).alias("after_t"),
            _count_if(at_t & ~ends_valid).alias("invalid_link"),
            _count_if(at_t & ends_valid).alias("used"),
        ).first()
        record(IDENTITY_GRAPH, row)
    regions = frames[REGION_INFORMATION]
    if regions is not None:
        captured = F.exists(F.map_values("userActivityRegions"), lambda c: c["captureTimestamp"] <= t)
        valid = profile.primary_identity(F.col("identityMap")).isNotNull()
        row = regions.agg(
            F.count(F.lit(1)).alias("total"),
            _count_if(~F.coalesce(captured, F.lit(False))).alias("after_t"),
            _count_if(F.coalesce(captured, F.lit(False)) & ~valid).alias("no_valid_identity"),
            _count_if(F.coalesce(captured, F.lit(False)) & valid).alias("used"),
        ).first()
        record(REGION_INFORMATION, row)
    return out


def scratch_space(spark: SparkSession, config: AppConfig, name: str) -> ParquetCheckpoint:
    """A lineage barrier writing under ``<lake>/_scratch/<name>`` (deleted by its ``cleanup``, with
    ``_scratch`` itself when empty; folders of runs that were killed are swept by the next run)."""
    return ParquetCheckpoint(spark, recovery.scratch_folder(config.job.lake.root, name))


def cleanup_scratch(barrier: ParquetCheckpoint, config: AppConfig) -> None:
    barrier.cleanup()
    recovery.remove_if_empty(f"{config.job.lake.root.rstrip('/')}/{recovery.SCRATCH}")


def _destination_ids(config: AppConfig, previous: PreviousRun | None) -> list[str]:
    """Destinations to write: the configured ones, plus removed ones that still have members to exit."""
    ids = [d.id for d in config.destinations]
    if previous is not None:
        ids += [d for d in previous.mappings if d not in ids]
    return ids


def _start(
    spark: SparkSession,
    config: AppConfig,
    store: DeltaStorage,
    evaluation_time: dt.datetime,
    force: bool,
    progress: Progress,
) -> tuple[RunSummary, dict[str, DataFrame | None], PreviousRun | None]:
    """Read the inputs and find the previous completed run (refusing an older ``T``)."""
    run = runlog.run_id(KIND, evaluation_time)
    summary = RunSummary(run_id=run, evaluation_time=runlog.as_utc(evaluation_time), engine=store.name)
    summary.started_at = dt.datetime.now(dt.timezone.utc)
    frames, summary.input_versions = read_inputs(store, config)
    previous = previous_run(completed_runs(store, config), evaluation_time, force=force)
    summary.previous_run = previous.run_id if previous else None
    progress(f"previous completed run: {summary.previous_run or 'none (first run)'}")
    return summary, frames, previous


def input_locations(config: AppConfig) -> list[str]:
    """The input tables' locations."""
    return [config.job.table_location(name) for name in INPUT_TABLES]


def output_locations(config: AppConfig) -> list[str]:
    """Every output table of the lake that a run may have written (the run log first)."""
    location = config.job.table_location
    names = ("activation_runs", "identity_clusters", "unified_profiles", "segment_membership", "quarantine")
    tables = [location(name) for name in names]
    root = location("activation").rstrip("/")
    for destination_id in recovery.child_folders(root):
        tables += [config.job.activation_table(destination_id, kind) for kind in (activation.EDGE, activation.HUB)]
    return [*tables, location("activation_state")]


def recover(spark: SparkSession, config: AppConfig, store: DeltaStorage, lease: LakeLease, progress: Progress) -> None:
    """Under a fresh lease: undo what earlier attempts that did not complete left, sweep scratch folders."""
    recovery.sweep_scratch(config.job.lake.root, keep=lease.attempt)
    if not lease.pending:
        return
    dead = lease.previous
    progress(f"undoing the outputs of {dead.run_id if dead else 'an earlier run'}, which did not complete")
    tag = {"run_id": lease.run_id, recovery.ATTEMPT_KEY: recovery.recovery_tag(lease.attempt)}
    restored = recovery.rollback(store, output_locations(config), lease.pending, commit_info_=tag, sweep_files=True)
    progress(f"restored {len(restored)} table(s) to their versions before that run")
    if dead is not None and dead.run_id != lease.run_id and dead.run_id.startswith(f"{KIND}-"):
        # The run log says what happened to it (a re-run of the same T records its own outcome instead).
        t = dt.datetime.strptime(dead.run_id.removeprefix(f"{KIND}-"), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        killed = RunSummary(run_id=dead.run_id, evaluation_time=t, engine=store.name, status=FAILED)
        killed.started_at, killed.ended_at = dead.acquired_at, dead.renewed_at
        error = (
            f"did not complete (its process stopped while holding the lake lease); its commits were rolled back "
            f"by {lease.run_id}"
        )
        store.replace_partitions(
            _runs_row(spark, killed, {}, error),
            config.job.table_location("activation_runs"),
            {"run_id": dead.run_id},
            partition_by=["run_id"],
            commit_info=tag,
        )
    lease.settle()


def _evaluate_run(
    spark: SparkSession,
    config: AppConfig,
    store: DeltaStorage,
    frames: dict[str, DataFrame | None],
    previous: PreviousRun | None,
    barrier: ParquetCheckpoint,
    progress: Progress,
    summary: RunSummary,
) -> BatchResults:
    """:func:`evaluate` against the previous run's recorded state; notes the classification and CC rounds."""
    previous_tables = _previous_tables(store, config, previous)
    results = evaluate(spark, config, frames, summary.evaluation_time, previous, previous_tables, barrier, progress)
    summary.classification = results.classification
    summary.cc_rounds = results.cc_rounds
    return results


def run_batch(
    spark: SparkSession,
    config: AppConfig,
    *,
    evaluation_time: dt.datetime,
    force: bool = False,
    progress: Progress = _quiet,
    on_commit: OnCommit = _no_hook,
) -> RunSummary:
    """Run the batch job at ``T`` and write every output (see the module docstring for the order).

    Raises:
        LeaseHeldError: another run holds the lake's lease (nothing was read or written).
        RunOrderError: ``T`` older than the newest completed run without ``force``.
        InputSchemaError: malformed input, before anything is written.
        ConfigError: invalid segments or consent conditions, before anything is written.
    """
    store = open_storage(spark, config.job.storage.engine.value)
    run = runlog.run_id(KIND, evaluation_time)
    progress(f"run {run} (storage engine {store.name})")
    lease = LakeLease(spark, store, config.job.lake.root, run, config.job.lease.timeout_seconds).acquire()
    summary = RunSummary(run_id=run, evaluation_time=runlog.as_utc(evaluation_time), engine=store.name)
    mappings = {d.id: list(d.segments) for d in config.destinations}
    barrier = scratch_space(spark, config, lease.attempt)
    commit_info = {"run_id": run, recovery.ATTEMPT_KEY: lease.attempt}
    location = config.job.table_location
    handed_on = False
    try:
        recover(spark, config, store, lease, progress)
        summary, frames, previous = _start(spark, config, store, evaluation_time, force, progress)
        results = _evaluate_run(spark, config, store, frames, previous, barrier, progress, summary)

        def write(name: str, version: int) -> None:
            summary.output_versions[name] = version
            on_commit(name)
            lease.check()

        lease.check()
        progress("writing identity_clusters, unified_profiles and segment_membership")
        write(
            "identity_clusters",
            store.overwrite(results.clusters, location("identity_clusters"), commit_info=commit_info),
        )
        write(
            "unified_profiles", store.overwrite(results.profiles, location("unified_profiles"), commit_info=commit_info)
        )
        write(
            "segment_membership",
            store.overwrite(
                results.membership, location("segment_membership"), commit_info=commit_info, properties=CHANGE_DATA_FEED
            ),
        )

        t = F.lit(runlog.as_utc(evaluation_time)).cast("timestamp")
        stamped = results.changes.select(F.lit(run).alias("run_id"), t.alias("evaluated_at"), "*")
        for destination_id in _destination_ids(config, previous):
            rows = stamped.where(F.col("destination_id") == destination_id)
            edge = rows.where(F.col("route") == activation.EDGE).select(*EDGE_COLUMNS)
            hub = rows.where(F.col("route") == activation.HUB).select(*activation.OUTPUT_COLUMNS)
            for kind, df in ((activation.EDGE, edge), (activation.HUB, hub)):
                progress(f"writing activation/{destination_id}/{kind}")
                version = store.replace_partitions(
                    df,
                    config.job.activation_table(destination_id, kind),
                    {"run_id": run},
                    partition_by=["run_id"],
                    commit_info=commit_info,
                    properties=CHANGE_DATA_FEED,
                )
                write(f"activation/{destination_id}/{kind}", version)
        write("activation_state", store.overwrite(results.state, location("activation_state"), commit_info=commit_info))

        quarantine = results.quarantine.select(F.lit(run).alias("run_id"), *QUARANTINE_COLUMNS[1:])
        write(
            "quarantine",
            store.replace_partitions(
                quarantine, location("quarantine"), {"run_id": run}, partition_by=["run_id"], commit_info=commit_info
            ),
        )
        progress("counting")
        summary.counts = _counts(row_accounting(frames, results, config, evaluation_time), results)
        summary.ended_at = dt.datetime.now(dt.timezone.utc)
        summary.status = COMPLETED
        lease.check()
        store.replace_partitions(
            _runs_row(spark, summary, mappings, None),
            location("activation_runs"),
            {"run_id": run},
            partition_by=["run_id"],
            commit_info=commit_info,
        )
        on_commit("activation_runs")
    except LeaseLostError:
        handed_on = True  # the lake is another run's now: that run undoes this attempt's commits
        raise
    except (ConfigError, InputSchemaError, RunOrderError):
        raise  # rejected before anything was written: nothing to record
    except Exception as exc:
        # A damaged input, named (the Spark error reading it is the cause).
        clean = exc if isinstance(exc, DamagedTableError) else read_failure(exc, input_locations(config))
        if clean is None or summary.output_versions:
            summary.status = FAILED
            summary.ended_at = dt.datetime.now(dt.timezone.utc)
            handed_on = _fail(spark, config, store, lease, summary, mappings, clean or exc, progress)
        if clean is not None and clean is not exc:
            raise clean from exc
        raise
    finally:
        cleanup_scratch(barrier, config)
        if not handed_on:
            lease.release()
    return summary


def undo_failed_attempt(
    store: DeltaStorage, config: AppConfig, lease: LakeLease, run: str, progress: Progress = _quiet
) -> bool:
    """Restore every output the lease's attempt committed (and the attempts it inherited) to its state before.

    Returns:
        True when the roll-back itself failed and the lease was handed on (``abandoned``) for the next run to
        finish it.
    """
    tag = {"run_id": run, recovery.ATTEMPT_KEY: recovery.rollback_tag(lease.attempt)}
    try:
        restored = recovery.rollback(store, output_locations(config), [lease.attempt, *lease.pending], commit_info_=tag)
    except Exception:  # noqa: BLE001 - the original error is what the user needs to see
        log.exception("could not roll back the outputs of the failed run %s; the next run will", run)
        lease.release(abandoned=True)
        return True
    if restored:
        progress(f"run failed: restored {len(restored)} table(s) to their versions before the run")
    return False


def _fail(
    spark: SparkSession,
    config: AppConfig,
    store: DeltaStorage,
    lease: LakeLease,
    summary: RunSummary,
    mappings: dict[str, list[str]],
    exc: Exception,
    progress: Progress,
) -> bool:
    """A run failed: restore every output it committed (and any it inherited), then record the failure.

    Returns:
        True when the lease was handed on (``abandoned``) because the roll-back itself failed.
    """
    if undo_failed_attempt(store, config, lease, summary.run_id, progress):
        return True
    tag = {"run_id": summary.run_id, recovery.ATTEMPT_KEY: recovery.rollback_tag(lease.attempt)}
    try:
        store.replace_partitions(
            _runs_row(spark, summary, mappings, f"{type(exc).__name__}: {exc}"[:2000]),
            config.job.table_location("activation_runs"),
            {"run_id": summary.run_id},
            partition_by=["run_id"],
            commit_info=tag,
        )
    except Exception:  # noqa: BLE001 - the original error is what the user needs to see
        log.exception("could not record the failed run %s", summary.run_id)
    return False


def preview_batch(
    spark: SparkSession,
    config: AppConfig,
    *,
    evaluation_time: dt.datetime,
    force: bool = False,
    progress: Progress = _quiet,
) -> RunSummary:
    """What :func:`run_batch` would do at ``T``: member counts per segment and change counts per destination,
    route and reason. Writes nothing and takes no lease (scratch files of the lineage barrier are deleted)."""
    store = open_storage(spark, config.job.storage.engine.value)
    progress(f"preview of {runlog.run_id(KIND, evaluation_time)} (storage engine {store.name})")
    summary, frames, previous = _start(spark, config, store, evaluation_time, force, progress)
    barrier = scratch_space(spark, config, f"{recovery.PREVIEW_PREFIX}{uuid.uuid4().hex}")
    try:
        results = _evaluate_run(spark, config, store, frames, previous, barrier, progress, summary)
        summary.counts = _counts(row_accounting(frames, results, config, evaluation_time), results)
    except Exception as exc:
        clean = read_failure(exc, input_locations(config))
        if clean is not None:
            raise clean from exc
        raise
    finally:
        cleanup_scratch(barrier, config)
    return summary


def summary_json(summary: RunSummary) -> str:
    """The summary as JSON (for logs and notebooks)."""
    return json.dumps(summary.__dict__, default=str, indent=2, sort_keys=True)
