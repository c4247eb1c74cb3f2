"""Job-level functions: read → transform → write, one per console subcommand.

These are the only library functions that do I/O, always through :mod:`audience_activation.storage`. The
console command (:mod:`audience_activation.cli`) and the ``jobs/*.py`` spark-submit scripts only parse
arguments, build the session and call them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from . import batch, demo_data, identity, recovery, runlog, segments
from .config import AppConfig
from .lease import LakeLease, LeaseLostError
from .schemas import (
    EXPERIENCE_EVENTS,
    IDENTITY_GRAPH,
    PROFILE_FRAGMENTS,
    REGION_INFORMATION,
)
from .session import build_session
from .storage import DeltaStorage, open_storage
from .storage.base import read_failure

log = logging.getLogger(__name__)

#: Called with a one-line progress message while long work runs.
Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def session_for(config: AppConfig) -> SparkSession:
    """The Spark session with the settings of ``job.yaml``."""
    spark_settings = config.job.spark
    return build_session(
        spark_settings.app_name,
        master=spark_settings.master,
        shuffle_partitions=spark_settings.shuffle_partitions,
        extra_conf=spark_settings.conf,
        delta_connector=config.job.storage.engine.value != "delta-rs",
    )


def storage_for(spark: SparkSession, config: AppConfig) -> DeltaStorage:
    """The storage engine of ``job.yaml`` (``storage.engine``)."""
    return open_storage(spark, config.job.storage.engine.value)


@dataclass(frozen=True)
class WrittenTable:
    """One table written by a job: where, which version, how many rows."""

    name: str
    location: str
    version: int
    rows: int


def write_demo_data(
    spark: SparkSession,
    config: AppConfig,
    *,
    persons: int,
    seed: int,
    as_of: dt.datetime,
    progress: Progress = _quiet,
) -> list[WrittenTable]:
    """Generate the demo inputs and write them (overwriting) to the configured input locations.

    Args:
        spark: the session.
        config: the configuration (lake root, table locations, storage engine).
        persons: how many persons to generate.
        seed: the generator seed.
        as_of: the anchor time of the generated timestamps.
        progress: receives a line per table.

    Returns:
        What was written, per table.
    """
    store = storage_for(spark, config)
    tables = demo_data.generate(spark, persons, seed=seed, as_of=as_of)
    written = []
    for name, df in tables.as_dict().items():
        location = config.job.table_location(name)
        progress(f"writing {name} to {location}")
        version = store.overwrite(
            df, location, commit_info={"job": "demo-data", "seed": str(seed), "persons": str(persons)}
        )
        rows = store.read(location, version).df.count()
        written.append(WrittenTable(name, location, version, rows))
        progress(f"wrote {name}: {rows:,} rows (version {version})")
    return written


@dataclass(frozen=True)
class InputReport:
    """What ``validate`` found: the storage engine, per input table its version (None if absent), and the
    evaluation method of every segment."""

    engine: str
    versions: dict[str, int | None] = field(default_factory=dict)
    classification: dict[str, str] = field(default_factory=dict)


def validate_inputs(spark: SparkSession, config: AppConfig) -> InputReport:
    """Check the input tables against CONTRACT §3 before any job runs.

    Raises:
        InputSchemaError: a required table is missing or a required column is missing or mistyped; the
            message names every table and column at fault.
        UnsupportedTableFeatureError: an input table needs a Delta reader feature the engine lacks.
    """
    store = storage_for(spark, config)
    frames, versions = batch.read_inputs(store, config)
    schemas = {name: None if df is None else df.schema for name, df in frames.items()}
    # Segments and consent conditions against the schemas the batch job will evaluate them on.
    fragments = spark.createDataFrame([], schemas[PROFILE_FRAGMENTS])
    event_schema = schemas[EXPERIENCE_EVENTS]
    profile_schema = batch.profile_schema(fragments)
    events_schema = batch.event_schema(spark.createDataFrame([], event_schema) if event_schema is not None else None)
    classification = segments.validate_segments(
        config, profile_schema, events_schema, files=config.segment_files, spark=spark
    )
    batch.compile_consents(config, profile_schema, runlog.default_evaluation_time())
    methods = {key: getattr(value.method, "value", str(value.method)) for key, value in classification.items()}
    return InputReport(engine=store.name, versions=versions, classification=methods)


QUARANTINE_PARTITIONS = ["run_id"]


@dataclass(frozen=True)
class IdentityRunSummary:
    """What the identity job did."""

    run_id: str
    evaluation_time: dt.datetime
    engine: str
    input_versions: dict[str, int | None]
    identities: int
    persons: int
    largest_graph: int
    rounds: int
    quarantine: dict[str, int]
    versions_written: dict[str, int]


def run_identity_resolution(
    spark: SparkSession,
    config: AppConfig,
    *,
    evaluation_time: dt.datetime,
    progress: Progress = _quiet,
) -> IdentityRunSummary:
    """Resolve identities as of ``T`` and write ``identity_clusters`` (overwritten) and the identity rows of
    ``quarantine`` (partition ``run_id = identity-<T>``, replaced on a re-run of the same ``T``)."""
    store = storage_for(spark, config)
    run = runlog.run_id("identity", evaluation_time)
    # A writer like the batch job: one per lake, its commits undone if it fails (docs/reliability.md).
    lease = LakeLease(spark, store, config.job.lake.root, run, config.job.lease.timeout_seconds).acquire()
    commit_info = {"run_id": run, recovery.ATTEMPT_KEY: lease.attempt}
    clusters_location = config.job.table_location("identity_clusters")
    quarantine_location = config.job.table_location("quarantine")
    barrier = batch.scratch_space(spark, config, lease.attempt)
    handed_on = False
    try:
        batch.recover(spark, config, store, lease, progress)
        progress(f"reading input tables (run {run})")
        frames, versions = batch.read_inputs(store, config)
        inputs = identity.as_of(
            frames[PROFILE_FRAGMENTS],
            frames[EXPERIENCE_EVENTS],
            frames[IDENTITY_GRAPH],
            frames[REGION_INFORMATION],
            evaluation_time,
        )
        progress("resolving identities: links, hub guardrail, connected components, unique namespaces, size limit")
        result = identity.resolve_identities(inputs, config.namespaces, config.job.identity, barrier)
        progress(f"connected components converged after {result.rounds} round(s); writing identity_clusters")
        lease.check()
        clusters_version = store.overwrite(result.clusters, clusters_location, commit_info=commit_info)
        lease.check()
        quarantine = result.quarantine.select(F.lit(run).alias("run_id"), "*")
        quarantine_version = store.replace_partitions(
            quarantine,
            quarantine_location,
            {"run_id": run},
            partition_by=QUARANTINE_PARTITIONS,
            commit_info=commit_info,
        )
    except LeaseLostError:
        handed_on = True
        raise
    except Exception as exc:
        handed_on = batch.undo_failed_attempt(store, config, lease, run)
        clean = read_failure(exc, batch.input_locations(config))
        if clean is not None:
            raise clean from exc
        raise
    finally:
        batch.cleanup_scratch(barrier, config)
        if not handed_on:
            lease.release()
    written = store.read(clusters_location, clusters_version).df
    stats = written.agg(
        F.count(F.lit(1)).alias("identities"),
        F.countDistinct("person_id").alias("persons"),
        F.max("graph_size").alias("largest"),
    ).first()
    if stats is None:  # pragma: no cover - an aggregation without grouping always returns one row
        raise RuntimeError("no statistics row")
    reasons = {
        row["reason"]: row["count"]
        for row in store.read(quarantine_location, quarantine_version)
        .df.where(F.col("run_id") == run)
        .groupBy("reason")
        .count()
        .collect()
    }
    return IdentityRunSummary(
        run_id=run,
        evaluation_time=evaluation_time,
        engine=store.name,
        input_versions=versions,
        identities=int(stats["identities"]),
        persons=int(stats["persons"]),
        largest_graph=int(stats["largest"] or 0),
        rounds=result.rounds,
        quarantine=dict(sorted(reasons.items())),
        versions_written={"identity_clusters": clusters_version, "quarantine": quarantine_version},
    )


__all__ = [
    "IdentityRunSummary",
    "run_identity_resolution",
    "InputReport",
    "WrittenTable",
    "session_for",
    "storage_for",
    "validate_inputs",
    "write_demo_data",
]
