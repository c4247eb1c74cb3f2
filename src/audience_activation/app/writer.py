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
    """Write one output in its table's mode; returns the committed version.

    ``overwrite`` tables are replaced; ``run_partition`` tables get partition ``run_id = <run_id>`` replaced.
    """
    spec = output.spec
    location = spec.location(config.job, output.destination_id)
    df = spec.conform(output.df)
    properties = dict(spec.properties) or None
    if spec.mode is tables.WriteMode.OVERWRITE:
        return store.overwrite(df, location, commit_info=commit_info, properties=properties)
    if spec.mode is tables.WriteMode.RUN_PARTITION:
        return store.replace_partitions(
            df,
            location,
            {tables.RUN_ID: run_id},
            partition_by=list(spec.partition_by),
            commit_info=commit_info,
            properties=properties,
        )
    raise ValueError(f"{spec.name} is not written by the jobs")  # pragma: no cover - inputs are never written


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
