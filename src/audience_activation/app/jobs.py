"""The other jobs: demo inputs, validation of configuration and inputs, identity resolution alone."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from .. import demo_data, pipeline, profile, recovery, runlog, segments, tables
from ..config import AppConfig
from ..lease import LakeLease, LeaseLostError
from ..pipeline import Output
from ..storage.base import read_failure
from . import state, writer
from .batch import recover, undo_failed_attempt
from .context import Progress, quiet, storage_for


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
    progress: Progress = quiet,
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
    generated = demo_data.generate(spark, persons, seed=seed, as_of=as_of)
    written = []
    for name, df in generated.as_dict().items():
        location = tables.by_name(name).location(config.job)
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
    """Check the input tables' schemas, then compile every segment and consent condition against them.

    Raises:
        InputSchemaError: a required table is missing or a required column is missing or mistyped; the
            message names every table and column at fault.
        UnsupportedTableFeatureError: an input table needs a Delta reader feature the engine lacks.
        ConfigError: a segment or consent condition that does not compile against the inputs.
    """
    store = storage_for(spark, config)
    inputs, versions = state.read_inputs(store, config)
    profile_schema = profile.profile_schema(inputs.fragments.schema)
    events_schema = profile.event_schema(inputs.events.schema if inputs.events is not None else None)
    classification = segments.validate_segments(
        config, profile_schema, events_schema, files=config.segment_files, spark=spark
    )
    segments.compile_consents(config, profile_schema, runlog.default_evaluation_time())
    methods = {key: getattr(value.method, "value", str(value.method)) for key, value in classification.items()}
    return InputReport(engine=store.name, versions=versions, classification=methods)


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
    progress: Progress = quiet,
) -> IdentityRunSummary:
    """Resolve identities as of ``T`` (the batch job's identity stage) and write ``identity_clusters``
    (overwritten) and the identity rows of ``quarantine`` (partition ``run_id = identity-<T>``, replaced on a
    re-run of the same ``T``). Like the batch job it holds the lake lease and undoes its commits on failure."""
    store = storage_for(spark, config)
    run = runlog.run_id(runlog.IDENTITY, evaluation_time)
    lease = LakeLease(spark, store, config.job.lake.root, run, config.job.lease.timeout_seconds).acquire()
    commit_info = {"run_id": run, recovery.ATTEMPT_KEY: lease.attempt}
    barrier = writer.scratch_space(spark, config, lease.attempt)
    handed_on = False
    try:
        recover(spark, config, store, lease, progress)
        progress(f"reading input tables (run {run})")
        inputs, versions = state.read_inputs(store, config)
        progress("resolving identities: links, hub guardrail, connected components, unique namespaces, size limit")
        _, result = pipeline.identities(inputs, config, evaluation_time, barrier)
        progress(f"connected components converged after {result.rounds} round(s); writing identity_clusters")
        lease.check()
        clusters_version = writer.write(store, config, Output(tables.CLUSTERS, result.clusters), run, commit_info)
        lease.check()
        quarantine = result.quarantine.select(F.lit(run).alias(tables.RUN_ID), "*")
        quarantine_version = writer.write(store, config, Output(tables.QUARANTINE, quarantine), run, commit_info)
    except LeaseLostError:
        handed_on = True
        raise
    except Exception as exc:
        handed_on = undo_failed_attempt(store, config, lease, run)
        clean = read_failure(exc, state.input_locations(config))
        if clean is not None:
            raise clean from exc
        raise
    finally:
        writer.cleanup_scratch(barrier, config)
        if not handed_on:
            lease.release()
    clusters = store.read(tables.CLUSTERS.location(config.job), clusters_version).df
    stats = clusters.agg(
        F.count(F.lit(1)).alias("identities"),
        F.countDistinct("person_id").alias("persons"),
        F.max("graph_size").alias("largest"),
    ).first()
    if stats is None:  # pragma: no cover - an aggregation without grouping always returns one row
        raise RuntimeError("no statistics row")
    quarantined = store.read(tables.QUARANTINE.location(config.job), quarantine_version).df
    reasons = {
        row["reason"]: row["count"]
        for row in quarantined.where(F.col(tables.RUN_ID) == run).groupBy("reason").count().collect()
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
        versions_written={tables.CLUSTERS.name: clusters_version, tables.QUARANTINE.name: quarantine_version},
    )
