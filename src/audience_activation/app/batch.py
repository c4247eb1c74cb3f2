"""The batch job: read → :func:`audience_activation.pipeline.evaluate` → write, under the lake's lease.

:func:`run_batch` takes the lake lease, undoes what an earlier killed run left, reads the inputs at their
latest Delta versions and the previous completed run's state, evaluates everything at ``T`` and commits, each
table in its own atomic commit, in this order:

1. ``identity_clusters``, ``unified_profiles`` and ``segment_membership`` (overwritten: the state after the run);
2. per destination, ``activation/<id>/edge_streaming`` and ``activation/<id>/hub_batch`` (partition ``run_id``,
   replaced on a re-run of the same ``T``), then ``activation_state`` (overwritten) and, on a lake a stream has
   run on, ``activation_state_log`` emptied (:mod:`audience_activation.state_log`);
3. ``quarantine`` (partition ``run_id``) and, last, the ``activation_runs`` row with ``status = completed``, the
   versions this run wrote and its counts.

A run that fails after some commits restores every table it wrote to its version before the run, then records
a ``failed`` row (docs/reliability.md). :func:`preview_batch` computes the same results and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from pyspark.sql import SparkSession

from .. import pipeline, recovery, runlog, tables
from ..config import AppConfig, ConfigError
from ..lease import LakeLease, LeaseLostError
from ..pipeline import Inputs, PreviousState, Results
from ..runlog import FAILED, RunCounts, RunSummary
from ..schemas import InputSchemaError
from ..storage import DeltaStorage
from ..storage.base import DamagedTableError, ParquetCheckpoint, read_failure
from . import state, writer
from .context import OnCommit, Progress, no_hook, quiet, storage_for

log = logging.getLogger(__name__)


def _start(
    config: AppConfig, store: DeltaStorage, evaluation_time: dt.datetime, force: bool, progress: Progress
) -> tuple[RunSummary, Inputs, PreviousState]:
    """Read the inputs, find the previous completed run (refusing an older ``T``) and its state."""
    run = runlog.run_id(runlog.BATCH, evaluation_time)
    summary = RunSummary(run_id=run, evaluation_time=runlog.as_utc(evaluation_time), engine=store.name)
    summary.started_at = dt.datetime.now(dt.timezone.utc)
    inputs, summary.input_versions = state.read_inputs(store, config)
    previous = state.previous_run(state.completed_runs(store, config), evaluation_time, force=force)
    summary.previous_run = previous.run_id if previous else None
    progress(f"previous completed run: {summary.previous_run or 'none (first run)'}")
    return summary, inputs, state.previous_state(store, config, previous)


def _evaluate(
    config: AppConfig,
    inputs: Inputs,
    previous: PreviousState,
    summary: RunSummary,
    barrier: ParquetCheckpoint,
    progress: Progress,
) -> Results:
    results = pipeline.evaluate(inputs, previous, config, summary.evaluation_time, barrier=barrier, progress=progress)
    summary.classification = results.classification
    summary.cc_rounds = results.cc_rounds
    return results


def _count(config: AppConfig, inputs: Inputs, results: Results, evaluation_time: dt.datetime) -> RunCounts:
    """The run log's counts: one small DataFrame, collected once."""
    rows = pipeline.run_counts(inputs, results, config, evaluation_time).collect()
    return RunCounts.from_rows([row.asDict() for row in rows], results.segment_ids)


def recover(spark: SparkSession, config: AppConfig, store: DeltaStorage, lease: LakeLease, progress: Progress) -> None:
    """Under a fresh lease: undo what earlier attempts that did not complete left, sweep scratch folders."""
    recovery.sweep_scratch(config.job.lake.root, keep=lease.attempt)
    if not lease.pending:
        return
    dead = lease.previous
    progress(f"undoing the outputs of {dead.run_id if dead else 'an earlier run'}, which did not complete")
    tag = {"run_id": lease.run_id, recovery.ATTEMPT_KEY: recovery.recovery_tag(lease.attempt)}
    outputs = state.output_locations(config)
    restored = recovery.rollback(store, outputs, lease.pending, commit_info_=tag, sweep_files=True)
    progress(f"restored {len(restored)} table(s) to their versions before that run")
    kind = runlog.STREAMING if dead is not None and dead.run_id.startswith(f"{runlog.STREAMING}-") else runlog.BATCH
    t = runlog.evaluation_time_of(dead.run_id, kind) if dead is not None else None
    if dead is not None and t is not None and dead.run_id != lease.run_id:
        # The run log says what happened to it (a re-run of the same T, or a replay of the same micro-batch,
        # records its own outcome instead).
        killed = RunSummary(run_id=dead.run_id, evaluation_time=t, engine=store.name, status=FAILED, kind=kind)
        killed.started_at, killed.ended_at = dead.acquired_at, dead.renewed_at
        error = (
            f"did not complete (its process stopped while holding the lake lease); its commits were rolled back "
            f"by {lease.run_id}"
        )
        writer.record_run(spark, store, config, killed, {}, error, tag)
    lease.settle()


def run_batch(
    spark: SparkSession,
    config: AppConfig,
    *,
    evaluation_time: dt.datetime,
    force: bool = False,
    progress: Progress = quiet,
    on_commit: OnCommit = no_hook,
) -> RunSummary:
    """Run the batch job at ``T`` and write every output (see the module docstring for the order).

    Raises:
        LeaseHeldError: another run holds the lake's lease (nothing was read or written).
        RunOrderError: ``T`` older than the newest completed run without ``force``.
        InputSchemaError: malformed input, before anything is written.
        ConfigError: invalid segments or consent conditions, before anything is written.
    """
    store = storage_for(spark, config)
    run = runlog.run_id(runlog.BATCH, evaluation_time)
    progress(f"run {run} (storage engine {store.name})")
    lease = LakeLease(spark, store, config.job.lake.root, run, config.job.lease.timeout_seconds).acquire()
    summary = RunSummary(run_id=run, evaluation_time=runlog.as_utc(evaluation_time), engine=store.name)
    mappings = {d.id: list(d.segments) for d in config.destinations}
    barrier = writer.scratch_space(spark, config, lease.attempt)
    commit_info = {"run_id": run, recovery.ATTEMPT_KEY: lease.attempt}
    handed_on = False
    try:
        recover(spark, config, store, lease, progress)
        summary, inputs, previous = _start(config, store, evaluation_time, force, progress)
        results = _evaluate(config, inputs, previous, summary, barrier, progress)
        lease.check()
        destinations = state.destination_ids(config, previous.run)
        outputs = pipeline.batch_outputs(results, run, summary.evaluation_time, destinations)
        if store.exists(tables.ACTIVATION_STATE_LOG.location(config.job)):  # a stream ran on this lake
            outputs = writer.with_log_emptied(spark, outputs)
        commit_outputs(store, config, outputs, summary, lease, commit_info, progress, on_commit)
        progress("counting")
        summary.counts = _count(config, inputs, results, summary.evaluation_time)
        summary.ended_at = dt.datetime.now(dt.timezone.utc)
        summary.status = runlog.COMPLETED
        lease.check()
        writer.record_run(spark, store, config, summary, mappings, None, commit_info)
        on_commit("activation_runs")
    except LeaseLostError:
        handed_on = True  # the lake is another run's now: that run undoes this attempt's commits
        raise
    except (ConfigError, InputSchemaError, state.RunOrderError):
        raise  # rejected before anything was written: nothing to record
    except Exception as exc:
        # A damaged input, named (the Spark error reading it is the cause).
        clean = exc if isinstance(exc, DamagedTableError) else read_failure(exc, state.input_locations(config))
        if clean is None or summary.output_versions:
            summary.status = FAILED
            summary.ended_at = dt.datetime.now(dt.timezone.utc)
            handed_on = fail_attempt(spark, config, store, lease, summary, mappings, clean or exc, progress)
        if clean is not None and clean is not exc:
            raise clean from exc
        raise
    finally:
        writer.cleanup_scratch(barrier, config)
        if not handed_on:
            lease.release()
    return summary


def undo_failed_attempt(
    store: DeltaStorage, config: AppConfig, lease: LakeLease, run: str, progress: Progress = quiet
) -> bool:
    """Restore every output the lease's attempt committed (and the attempts it inherited) to its state before.

    Returns:
        True when the roll-back itself failed and the lease was handed on (``abandoned``) for the next run to
        finish it.
    """
    tag = {"run_id": run, recovery.ATTEMPT_KEY: recovery.rollback_tag(lease.attempt)}
    outputs = state.output_locations(config)
    try:
        restored = recovery.rollback(store, outputs, [lease.attempt, *lease.pending], commit_info_=tag)
    except Exception:  # noqa: BLE001 - the original error is what the user needs to see
        log.exception("could not roll back the outputs of the failed run %s; the next run will", run)
        lease.release(abandoned=True)
        return True
    if restored:
        progress(f"run failed: restored {len(restored)} table(s) to their versions before the run")
    return False


def commit_outputs(
    store: DeltaStorage,
    config: AppConfig,
    outputs: list[pipeline.Output],
    summary: RunSummary,
    lease: LakeLease,
    commit_info: dict[str, str],
    progress: Progress,
    on_commit: OnCommit,
) -> None:
    """Commit each output in order, recording its version in ``summary``; the lease is checked after each."""
    for output in outputs:
        progress(f"writing {output.key}")
        summary.output_versions[output.key] = writer.write(store, config, output, summary.run_id, commit_info)
        on_commit(output.key)
        lease.check()


def fail_attempt(
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
        writer.record_run(spark, store, config, summary, mappings, f"{type(exc).__name__}: {exc}"[:2000], tag)
    except Exception:  # noqa: BLE001 - the original error is what the user needs to see
        log.exception("could not record the failed run %s", summary.run_id)
    return False


def preview_batch(
    spark: SparkSession,
    config: AppConfig,
    *,
    evaluation_time: dt.datetime,
    force: bool = False,
    progress: Progress = quiet,
) -> RunSummary:
    """What :func:`run_batch` would do at ``T``: member counts per segment and change counts per destination,
    route and reason. Writes nothing and takes no lease (scratch files of the lineage barrier are deleted)."""
    store = storage_for(spark, config)
    progress(f"preview of {runlog.run_id(runlog.BATCH, evaluation_time)} (storage engine {store.name})")
    summary, inputs, previous = _start(config, store, evaluation_time, force, progress)
    barrier = writer.scratch_space(spark, config, f"{recovery.PREVIEW_PREFIX}{uuid.uuid4().hex}")
    try:
        results = _evaluate(config, inputs, previous, summary, barrier, progress)
        summary.counts = _count(config, inputs, results, summary.evaluation_time)
    except Exception as exc:
        clean = read_failure(exc, state.input_locations(config))
        if clean is not None:
            raise clean from exc
        raise
    finally:
        writer.cleanup_scratch(barrier, config)
    return summary
