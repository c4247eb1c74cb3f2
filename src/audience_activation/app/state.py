"""Reading what a run starts from: the input tables, the run log, the previous completed run's state.

Rules:

1. Inputs are read at their latest Delta versions (recorded in the run log); all their schemas are checked
   before anything else happens, and every problem of every table is reported at once.
2. "The state before this run" is never read from the outputs' latest versions: it is read at the versions
   recorded by the newest *completed* batch run older than ``T``. A run that failed after some commits, or a
   second run of the same ``T``, therefore computes exactly what a clean run computes.
3. A ``T`` older than the newest completed run is refused unless ``force`` (re-running history would overwrite
   newer state).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from .. import recovery, runlog, state_log, tables
from ..columns import timestamp_literal
from ..config import AppConfig
from ..pipeline import Inputs, PreviousState
from ..runlog import PreviousRun
from ..schemas import INPUT_TABLES, check_input_schemas
from ..storage import DeltaStorage, TableNotFoundError


class RunOrderError(RuntimeError):
    """``T`` is older than the newest completed run (pass ``force`` to run it anyway)."""


def read_inputs(store: DeltaStorage, config: AppConfig) -> tuple[Inputs, dict[str, int | None]]:
    """Every input table present and the Delta version read, after checking all their schemas.

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
    fragments = frames[tables.FRAGMENTS.name]
    if fragments is None:  # pragma: no cover - check_input_schemas requires the table
        raise ValueError("profile_fragments is required")
    inputs = Inputs(
        fragments=fragments,
        events=frames[tables.EVENTS.name],
        links=frames[tables.GRAPH.name],
        regions=frames[tables.REGIONS.name],
    )
    return inputs, versions


def completed_runs(store: DeltaStorage, config: AppConfig) -> DataFrame | None:
    """The ``activation_runs`` rows of completed batch runs and streaming micro-batches (they share one state),
    or None before the first run."""
    try:
        runs = store.read(tables.RUNS.location(config.job)).df
    except TableNotFoundError:
        return None
    return runs.where((F.col("status") == runlog.COMPLETED) & F.col("kind").isin(runlog.BATCH, runlog.STREAMING))


def _previous(row: Any) -> PreviousRun:
    return PreviousRun(
        run_id=row["run_id"],
        evaluation_time=runlog.as_utc(row["evaluation_time"]),
        output_versions={k: int(v) for k, v in (row["output_versions"] or {}).items()},
        mappings={k: list(v) for k, v in (row["mappings"] or {}).items()},
        input_versions={k: int(v) for k, v in (row["input_versions"] or {}).items()},
    )


def _newest_first(runs: DataFrame) -> DataFrame:
    # Micro-batches of a stream with a pinned T share it: the one that ended last is the newest.
    return runs.orderBy(F.col("evaluation_time").desc(), F.col("ended_at").desc(), F.col("run_id").desc())


def previous_run(runs: DataFrame | None, evaluation_time: dt.datetime, *, force: bool) -> PreviousRun | None:
    """The newest completed run older than ``T``, or a streaming micro-batch at ``T`` (one row collected);
    refuses ``T`` older than the newest completed run.

    Raises:
        RunOrderError: ``T`` is older than the newest completed run and ``force`` is false.
    """
    if runs is None:
        return None
    t = timestamp_literal(evaluation_time)
    # Compared in Spark: collected timestamps are converted with the driver's local zone, not UTC.
    newer = runs.where(F.col("evaluation_time") > t)
    if not force and not newer.isEmpty():
        newest = newer.agg(F.date_format(F.max("evaluation_time"), "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("t")).first()
        raise RunOrderError(
            f"evaluation time {runlog.as_utc(evaluation_time).isoformat()} is older than the newest completed run "
            f"({newest['t'] if newest else '?'}); re-running history would overwrite newer state. "
            f"Pass --force to run it anyway."
        )
    # Micro-batches at T itself are before a batch run at T (a stream with a pinned T, then the batch at it).
    before = (F.col("evaluation_time") < t) | ((F.col("kind") == runlog.STREAMING) & (F.col("evaluation_time") == t))
    row = _newest_first(runs.where(before)).limit(1).first()
    return None if row is None else _previous(row)


def latest_run(runs: DataFrame | None) -> PreviousRun | None:
    """The newest completed run, batch or streaming (by ``T``, then the one that ended last: micro-batches of
    one ``T`` follow each other); the state a streaming micro-batch continues from."""
    if runs is None:
        return None
    row = _newest_first(runs).limit(1).first()
    return None if row is None else _previous(row)


def completed_run(store: DeltaStorage, config: AppConfig, run_id: str) -> PreviousRun | None:
    """The completed run ``run_id`` (a replayed micro-batch that completed before its process died), or None."""
    runs = completed_runs(store, config)
    if runs is None:
        return None
    row = runs.where(F.col("run_id") == run_id).limit(1).first()
    return None if row is None else _previous(row)


def previous_state(store: DeltaStorage, config: AppConfig, previous: PreviousRun | None) -> PreviousState:
    """The previous run's membership, activation state and clusters at the versions it recorded (the activation
    state: ``activation_state`` with ``activation_state_log``'s changes, :mod:`audience_activation.state_log`)."""
    if previous is None:
        return PreviousState()
    frames: dict[str, DataFrame | None] = {}
    for spec in (*tables.STATE_TABLES, tables.ACTIVATION_STATE_LOG):
        version = previous.output_versions.get(spec.name)
        frames[spec.name] = None if version is None else store.read(spec.location(config.job), version).df
    activation_state = frames[tables.ACTIVATION_STATE.name]
    if activation_state is not None:
        activation_state = state_log.current_state(activation_state, frames[tables.ACTIVATION_STATE_LOG.name])
    return PreviousState(
        run=previous,
        membership=frames[tables.MEMBERSHIP.name],
        activation_state=activation_state,
        clusters=frames[tables.CLUSTERS.name],
    )


def activation_state(store: DeltaStorage, config: AppConfig, run: PreviousRun | None = None) -> DataFrame | None:
    """The activation state after ``run`` (default: the newest completed run, batch or streaming), as one table
    (:func:`audience_activation.state_log.current_state`); None before the first run. The way to read it:
    ``activation_state`` alone misses the streaming job's changes since it was last written whole.

    Example:
        >>> activation_state(storage_for(spark, config), config).where("activated").count()  # doctest: +SKIP
    """
    run = run or latest_run(completed_runs(store, config))
    return previous_state(store, config, run).activation_state


def destination_ids(config: AppConfig, previous: PreviousRun | None) -> list[str]:
    """Destinations to write: the configured ones, plus removed ones that still have members to exit."""
    ids = [d.id for d in config.destinations]
    if previous is not None:
        ids += [d for d in previous.mappings if d not in ids]
    return ids


def input_locations(config: AppConfig) -> list[str]:
    """The input tables' locations."""
    return [spec.location(config.job) for spec in tables.INPUTS]


def output_locations(config: AppConfig) -> list[str]:
    """Every output table of the lake that a run may have written (the run log first, activation state last)."""
    fixed = (tables.RUNS, tables.CLUSTERS, tables.PROFILES, tables.MEMBERSHIP, tables.QUARANTINE)
    locations = [spec.location(config.job) for spec in fixed]
    root = config.job.table_location("activation").rstrip("/")
    for destination_id in recovery.child_folders(root):
        locations += [spec.location(config.job, destination_id) for spec in tables.ACTIVATION_TABLES]
    return [*locations, tables.ACTIVATION_STATE_LOG.location(config.job), tables.ACTIVATION_STATE.location(config.job)]
