"""Writing outputs: each DataFrame conformed to its table's spec and written in the spec's mode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import SparkSession

from .. import recovery, tables
from ..config import AppConfig
from ..pipeline import Output
from ..runlog import RunSummary
from ..storage import DeltaStorage
from ..storage.base import ParquetCheckpoint


def write(store: DeltaStorage, config: AppConfig, output: Output, run_id: str, commit_info: Mapping[str, str]) -> int:
    """Write one output in its mode (the output's, else its table's); returns the committed version.

    ``overwrite`` tables are replaced; ``run_partition`` tables get partition ``run_id = <run_id>`` replaced;
    ``append`` adds the rows.
    """
    spec = output.spec
    mode = output.mode or spec.mode
    location = spec.location(config.job, output.destination_id)
    df = spec.conform(output.df)
    properties = dict(spec.properties) or None
    if mode is tables.WriteMode.OVERWRITE:
        return store.overwrite(df, location, commit_info=commit_info, properties=properties)
    if mode is tables.WriteMode.APPEND:
        return store.append(df, location, commit_info=commit_info, properties=properties)
    if mode is tables.WriteMode.RUN_PARTITION:
        return store.replace_partitions(
            df,
            location,
            {tables.RUN_ID: run_id},
            partition_by=list(spec.partition_by),
            commit_info=commit_info,
            properties=properties,
        )
    raise ValueError(f"{spec.name} is not written by the jobs")  # pragma: no cover - inputs are never written


def emptied_log(spark: SparkSession) -> Output:
    """``activation_state_log`` emptied (an overwrite with no row): written whenever ``activation_state`` is
    written whole, so the log holds only the changes since (:mod:`audience_activation.state_log`)."""
    spec = tables.ACTIVATION_STATE_LOG
    return Output(spec, spark.createDataFrame([], spec.schema), mode=tables.WriteMode.OVERWRITE)


def with_log_emptied(spark: SparkSession, outputs: Sequence[Output]) -> list[Output]:
    """``outputs`` with :func:`emptied_log` committed right after ``activation_state``."""
    done: list[Output] = []
    for output in outputs:
        done.append(output)
        if output.spec is tables.ACTIVATION_STATE:
            done.append(emptied_log(spark))
    return done


def record_run(
    spark: SparkSession,
    store: DeltaStorage,
    config: AppConfig,
    summary: RunSummary,
    mappings: Mapping[str, Sequence[str]],
    error: str | None,
    commit_info: Mapping[str, str],
) -> int:
    """Write (or replace) the run's ``activation_runs`` row."""
    row = spark.createDataFrame([summary.as_row(mappings, error)], tables.RUNS.schema)
    return write(store, config, Output(tables.RUNS, row), summary.run_id, commit_info)


def scratch_space(spark: SparkSession, config: AppConfig, name: str) -> ParquetCheckpoint:
    """A lineage barrier writing under ``<lake>/_scratch/<name>`` (deleted by :func:`cleanup_scratch`, with
    ``_scratch`` itself when empty; folders of runs that were killed are swept by the next run)."""
    return ParquetCheckpoint(spark, recovery.scratch_folder(config.job.lake.root, name))


def cleanup_scratch(barrier: ParquetCheckpoint, config: AppConfig) -> None:
    """Delete a barrier's files, and ``_scratch`` when nothing else is in it."""
    barrier.cleanup()
    recovery.remove_if_empty(f"{config.job.lake.root.rstrip('/')}/{recovery.SCRATCH}")
