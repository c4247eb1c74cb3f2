"""The streaming job: Spark Structured Streaming over the input tables' Delta versions, one micro-batch at a time
evaluating only the persons its new rows affect (docs/streaming.md).

:func:`run_stream` starts a streaming query on :mod:`audience_activation.stream_source` (offsets: the inputs'
Delta versions and the micro-batch's ``T``) with ``foreachBatch(`` :func:`process_micro_batch` ``)``. A
micro-batch, in order:

1. takes the lake lease (waiting, with a progress message, while a batch run holds it) and undoes what a
   killed run left, as the batch job does;
2. skips itself when its run id (``streaming-<T>-<micro-batch id>``) already completed: a replay after the
   process died between the run-log commit and Spark's own commit log writes nothing twice;
3. reads the newest completed run at or before ``T`` (batch or streaming: one state), the inputs at the
   micro-batch's versions (never older than that run's) and each input's changed rows since that run's input
   versions;
4. evaluates :func:`audience_activation.pipeline.micro_batch.evaluate_micro_batch` and commits, **first**, the
   changed destinations' edge and hub tables (partition ``run_id``; what a destination waits for, so their commit
   does not wait for the state tables' writes), then, in the batch job's order, the state tables, the activation
   state (its changed rows appended to ``activation_state_log``, or the state written whole and the log emptied),
   quarantine and, last, its ``activation_runs`` row (kind ``streaming``, the previous run's mappings, its
   counts). The order matters for latency only: a failed or killed micro-batch's commits are all undone (step 5),
   whichever came first. A state table whose replaced rows the micro-batch would write back unchanged is not
   written: its ``output_versions`` entry is the version the micro-batch read (``unified_profiles`` is written
   without that comparison when new fragment rows came in). Nor is a destination's edge or hub table it has no
   change row for, or the quarantine when it has no row: its entry is the table's latest version (an empty
   partition would add a version to every such table per micro-batch). These rules are
   :mod:`audience_activation.app.stream_outputs`;
5. on failure, restores every table it committed and records a failed row, as the batch job does; the query
   stops and the stream raises the micro-batch's own error (a lease, input or configuration error keeps its
   exit code).

A micro-batch whose ``T`` is older than the newest completed run (a batch run started while the stream was
stopped) is skipped when that run read all of its input versions, and refused otherwise. So is a micro-batch
whose run id completed before: skipped when that run read its input versions (a replay), refused when it read
older ones (the same ``T`` pinned again after the stream's checkpoint was deleted, which numbers the micro-batches
from 0 again).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from .. import pipeline, recovery, runlog, tables
from ..columns import net_rows
from ..config import AppConfig
from ..lease import LakeLease, LeaseHeldError, LeaseLostError
from ..logs import quiet_jvm_loggers
from ..pipeline.micro_batch import Changes, MicroBatchResults, TableChange, evaluate_micro_batch
from ..runlog import FAILED, RunCounts, RunSummary
from ..schemas import INPUT_TABLES, check_input_schemas
from ..segments import streamed_time_dependence
from ..storage import DeltaStorage, TableNotFoundError
from ..storage.base import LocalCheckpoint
from ..stream_source import SOURCE_NAME, InputVersions, offset_time
from . import state, stream_outputs, writer
from .batch import commit_outputs, fail_attempt, recover
from .context import OnCommit, Progress, no_hook, quiet, storage_for
from .index_cache import InputIndexCache
from .known_hubs import KnownHubs

log = logging.getLogger(__name__)

#: Trigger of a stream that processes what is there, then stops.
AVAILABLE_NOW = "available-now"
#: How long a micro-batch waits between attempts to take a lease another run holds.
LEASE_WAIT_SECONDS = 5.0


class StreamStartError(RuntimeError):
    """The stream cannot start (no completed run to continue from)."""


@dataclass
class StreamSummary:
    """What a stream did until it stopped: one run summary per micro-batch it processed."""

    query_id: str = ""
    checkpoint: str = ""
    micro_batches: list[RunSummary] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def checkpoint_location(config: AppConfig, given: str | None) -> str:
    """The query's checkpoint: ``given``, else ``<lake>/_checkpoints/stream``."""
    return given or f"{config.job.lake.root.rstrip('/')}/_checkpoints/stream"


def _acquire(lease: LakeLease, progress: Progress) -> LakeLease:
    """Take the lease, waiting while another run holds it (a batch run's lease is held for its whole run)."""
    while True:
        try:
            return lease.acquire()
        except LeaseHeldError as exc:
            progress(f"waiting for the lake lease: {str(exc).splitlines()[0]}")
            time.sleep(LEASE_WAIT_SECONDS)


def _read(
    store: DeltaStorage,
    config: AppConfig,
    until: dict[str, int],
    since: dict[str, int],
    barrier: LocalCheckpoint,
    progress: Progress,
) -> tuple[pipeline.Inputs, Changes, dict[str, int | None]]:
    """The inputs at the micro-batch's versions (never older than the previous run's) and their changed rows
    since the previous run's versions. When rows were removed since (a compaction, a delete or an update rewrote
    files, a deletion vector hid rows), the rows added again as they were are no change: once every schema is
    checked, they are set aside from both sides (:func:`audience_activation.columns.net_rows`), so they neither
    seed affected persons nor count as new.

    Raises:
        TableNotFoundError: an input the previous run read is gone (deleted): its removed rows cannot be read."""
    frames: dict[str, DataFrame | None] = {}
    changed: dict[str, TableChange | None] = {}
    versions: dict[str, int | None] = {}
    schemas: dict[str, StructType | None] = {}
    for name in INPUT_TABLES:
        location = config.job.table_location(name)
        target = max(until.get(name, -1), since.get(name, -1))
        if target < 0:
            frames[name] = changed[name] = versions[name] = schemas[name] = None
            continue
        try:
            snapshot = store.read(location, target)
        except TableNotFoundError as exc:
            if since.get(name) is not None:  # its rows are gone, and nothing tells whose they were
                raise TableNotFoundError(
                    f"{location}: {name} was read by the previous run (version {since[name]}) and is gone: a "
                    f"micro-batch cannot tell whose rows it held. Run the batch job (it reads the inputs as they "
                    f"are), then start the stream from it (delete the stream's checkpoint)"
                ) from exc
            frames[name] = changed[name] = versions[name] = schemas[name] = None
            continue
        frames[name], versions[name], schemas[name] = snapshot.df, snapshot.version, snapshot.df.schema
        start = since.get(name)
        if start is not None and start >= snapshot.version:
            changed[name] = None
            continue
        delta = store.read_changes(location, start, snapshot.version)
        old = store.read(location, start).df if start is not None else delta.removed
        changed[name] = TableChange(before=old, added=delta.added, removed=delta.removed, removes=delta.removes)
    check_input_schemas(schemas)  # malformed appended input: stops before anything is written, naming it
    for name, change in changed.items():
        if change is not None and since.get(name) is not None and change.lost_rows():
            net = net_rows(change.added, change.removed, barrier)
            if net is not None:  # None: the schema changed in between, every row of both sides counts
                changed[name] = TableChange(before=change.before, added=net[0], removed=net[1])
                progress(f"{name}: rows removed since version {since[name]}: those added again are no change")
    fragments = frames[tables.FRAGMENTS.name]
    if fragments is None:  # pragma: no cover - check_input_schemas requires the table
        raise TableNotFoundError(f"{config.job.table_location(tables.FRAGMENTS.name)}: profile_fragments is required")
    inputs = pipeline.Inputs(
        fragments=fragments,
        events=frames[tables.EVENTS.name],
        links=frames[tables.GRAPH.name],
        regions=frames[tables.REGIONS.name],
    )
    changes = Changes(**{tables.INPUT_FIELDS[name]: df for name, df in changed.items()})
    return inputs, changes, versions


def _covers(run: runlog.PreviousRun, versions: dict[str, int]) -> bool:
    """Whether ``run`` read every input at least at ``versions`` (a later run did a micro-batch's work)."""
    return all(run.input_versions.get(name, -1) >= version for name, version in versions.items())


def _completed_before(
    store: DeltaStorage, config: AppConfig, run: str, versions: dict[str, int], progress: Progress
) -> bool:
    """Whether micro-batch ``run`` completed before (a replay after its process died once its run-log row was
    written): then it is skipped. A completed run with that id that did not read ``versions`` is another
    micro-batch — the same ``T`` pinned again after the stream's checkpoint was deleted, which numbers the
    micro-batches from 0 again — and skipping would leave the new rows unprocessed: refused.

    Raises:
        state.RunOrderError: the run id is taken by a run that read older input versions.
    """
    done = state.completed_run(store, config, run)
    if done is None:
        return False
    if not _covers(done, versions):
        raise state.RunOrderError(
            f"micro-batch {run}: a completed run with this id read older input versions "
            f"({dict(sorted(done.input_versions.items()))}); the stream's checkpoint was deleted and the same "
            f"evaluation time pinned again. Delete the checkpoint again (it holds this micro-batch's offsets) and "
            f"pin a later --evaluation-time (or none: the clock)"
        )
    progress(f"micro-batch {run} completed before: skipped")
    return True


def _count(micro: MicroBatchResults) -> RunCounts:
    rows = pipeline.micro_batch_counts(micro).collect()
    return RunCounts.from_rows([row.asDict() for row in rows], micro.results.segment_ids)


def process_micro_batch(
    spark: SparkSession,
    config: AppConfig,
    batch_id: int,
    evaluation_time: dt.datetime,
    versions: dict[str, int],
    *,
    progress: Progress = quiet,
    on_commit: OnCommit = no_hook,
    index_cache: InputIndexCache | None = None,
    known_hubs: KnownHubs | None = None,
) -> RunSummary | None:
    """Process one micro-batch (steps in the module docstring); None when it had completed already.

    ``index_cache``: the running stream's identity index of the inputs, brought to the versions read (without
    it, every lookup of the affected persons' rows scans the inputs). ``known_hubs``: the hubs the running
    stream's earlier micro-batches found, handed to this one's identity resolution when they still hold, and
    updated once it completed (:mod:`audience_activation.app.known_hubs`)."""
    store = storage_for(spark, config)
    run = runlog.stream_run_id(evaluation_time, batch_id)
    if _completed_before(store, config, run, versions, progress):
        return None
    lease = _acquire(LakeLease(spark, store, config.job.lake.root, run, config.job.lease.timeout_seconds), progress)
    summary = RunSummary(
        run_id=run, evaluation_time=runlog.as_utc(evaluation_time), engine=store.name, kind=runlog.STREAMING
    )
    summary.started_at = dt.datetime.now(dt.timezone.utc)
    # A micro-batch's parts are small: kept in the executors' block stores, not written as parquet.
    barrier = LocalCheckpoint()
    commit_info = {"run_id": run, recovery.ATTEMPT_KEY: lease.attempt}
    mappings: dict[str, list[str]] = {}
    handed_on = False
    try:
        recover(spark, config, store, lease, progress)
        if _completed_before(store, config, run, versions, progress):  # completed while we waited for the lease
            return None
        previous_run = state.latest_run(state.completed_runs(store, config))
        if previous_run is None:
            raise StreamStartError("no completed run to continue from: run the batch job first")
        if previous_run.evaluation_time > summary.evaluation_time:
            if _covers(previous_run, versions):
                progress(f"micro-batch {run}: {previous_run.run_id} (a later T) already read these versions: skipped")
                return None
            raise state.RunOrderError(
                f"micro-batch {run} is older than the completed run {previous_run.run_id}, which did not read all of "
                f"its input versions; delete the stream's checkpoint to restart it from that run"
            )
        mappings = previous_run.mappings
        summary.previous_run = previous_run.run_id
        inputs, changes, summary.input_versions = _read(
            store, config, versions, previous_run.input_versions, barrier, progress
        )
        previous = state.previous_state(store, config, previous_run)
        profiles_version = previous_run.output_versions.get(tables.PROFILES.name)
        previous_profiles = (
            None if profiles_version is None else store.read(tables.PROFILES.location(config.job), profiles_version).df
        )
        index = None if index_cache is None else index_cache.update(summary.input_versions)
        hubs = None
        if known_hubs is not None:
            hubs = known_hubs.for_micro_batch(spark, config, previous_run, summary.input_versions, changes)
        if known_hubs is not None and hubs is not None:
            progress(f"{len(known_hubs)} hub(s) known from the previous micro-batches: their rows are not looked up")
        micro = evaluate_micro_batch(
            inputs, changes, previous, previous_profiles, config, summary.evaluation_time,
            barrier=barrier, progress=progress, index=index, known_hubs=hubs,
            settled=None if known_hubs is None else known_hubs.settled(),
        )  # fmt: skip
        found = [] if known_hubs is None else known_hubs.found(micro.hubs)
        if known_hubs is not None:
            known_hubs.found_settled(micro.settled)
        summary.classification = micro.results.classification
        summary.cc_rounds = micro.results.cc_rounds
        destinations = [d.id for d in micro.destinations]
        summary.counts = _count(micro)
        unchanged = stream_outputs.unchanged_tables(store, config, micro, previous_run, progress, summary.counts)
        outputs = pipeline.batch_outputs(micro.results, run, summary.evaluation_time, destinations)
        empty = stream_outputs.tables_without_rows(store, config, outputs, summary.counts)
        if empty:
            progress(f"no rows for {len(empty)} of the per-run tables (change tables, quarantine): not written")
        unchanged.update(empty)
        state_outputs, state_kept = stream_outputs.state_outputs(
            spark, store, config, micro, previous_run, barrier, progress
        )
        unchanged.update(state_kept)
        lease.check()
        outputs = [
            written
            for output in outputs
            for written in (state_outputs if output.spec is tables.ACTIVATION_STATE else [output])
            if written.key not in unchanged
        ]
        # The destinations' change rows first (step 4): what a destination waits for is committed before the state.
        outputs.sort(key=lambda output: output.spec not in tables.ACTIVATION_TABLES)
        commit_outputs(store, config, outputs, summary, lease, commit_info, progress, on_commit)
        summary.output_versions.update(unchanged)
        summary.ended_at = dt.datetime.now(dt.timezone.utc)
        summary.status = runlog.COMPLETED
        lease.check()
        writer.record_run(spark, store, config, summary, mappings, None, commit_info)
        on_commit("activation_runs")
        if known_hubs is not None:
            known_hubs.remember(run, config, found)
    except LeaseLostError:
        handed_on = True
        raise
    except Exception as exc:
        if summary.output_versions:
            summary.status = FAILED
            summary.ended_at = dt.datetime.now(dt.timezone.utc)
            summary.counts = RunCounts()  # its rows are rolled back: a failed row counts nothing, as a batch run's
            handed_on = fail_attempt(spark, config, store, lease, summary, mappings, exc, progress)
        raise
    finally:
        barrier.cleanup()
        if not handed_on:
            lease.release()
    return summary


def _start_offsets(store: DeltaStorage, config: AppConfig) -> tuple[dict[str, int], str]:
    """The input versions and ``T`` of the newest completed run (where a new stream starts)."""
    newest = state.latest_run(state.completed_runs(store, config))
    if newest is None:
        raise StreamStartError(
            "no completed run to continue from: run the batch job first (audience-activation run), then start the "
            "stream"
        )
    return newest.input_versions, offset_time(newest.evaluation_time)


def run_stream(
    spark: SparkSession,
    config: AppConfig,
    *,
    trigger: str = AVAILABLE_NOW,
    evaluation_time: dt.datetime | None = None,
    checkpoint: str | None = None,
    max_versions_per_trigger: int | None = None,
    progress: Progress = quiet,
    on_commit: OnCommit = no_hook,
) -> StreamSummary:
    """Run the streaming job until it has nothing left (``available-now``) or until stopped (a processing-time
    trigger such as ``"30 seconds"``; Ctrl-C stops it after the current micro-batch).

    When a streamed segment depends on the time (an event window, ``today``...), a trigger that finds no new
    commit ``job.stream.sweep_interval_seconds`` after the last micro-batch's ``T`` still runs one (a sweep),
    so that time-driven exits happen without new rows.

    Args:
        spark: the session.
        config: the configuration.
        trigger: ``available-now`` or a processing-time interval.
        evaluation_time: pins every micro-batch's ``T`` (tests, backfills); default: each micro-batch's
            planning time.
        checkpoint: the query's checkpoint location (default ``<lake>/_checkpoints/stream``).
        max_versions_per_trigger: at most this many input commits per micro-batch.
        progress: one-line progress messages.
        on_commit: called after each table commit (tests inject failures).

    Raises:
        StreamStartError: no completed run to continue from.
    """
    store = storage_for(spark, config)
    start_versions, start_time = _start_offsets(store, config)
    summary = StreamSummary(checkpoint=checkpoint_location(config, checkpoint))
    spark.dataSource.register(InputVersions)
    locations = {name: config.job.table_location(name) for name in INPUT_TABLES}
    reader = (
        spark.readStream.format(SOURCE_NAME)
        .option("tables", json.dumps(locations))
        .option("startVersions", json.dumps(start_versions))
        .option("startTime", start_time)
    )
    if evaluation_time is not None:
        reader = reader.option("evaluationTime", offset_time(evaluation_time))
    if max_versions_per_trigger is not None:
        reader = reader.option("maxVersionsPerTrigger", str(max_versions_per_trigger))
    sweep = config.job.stream.sweep_interval_seconds
    if sweep and streamed_time_dependence(config).time_dependent:
        reader = reader.option("sweepSeconds", str(sweep))

    index_cache = InputIndexCache(store, config, progress) if config.job.stream.identity_index else None
    known_hubs = KnownHubs()
    failures: list[BaseException] = []
    stopping = threading.Event()  # Ctrl-C: no micro-batch starts any more
    stop_logs = _StopLogs()

    def stop_before(batch_id: int, cause: BaseException | None = None) -> NoReturn:
        """A micro-batch planned after Ctrl-C: left unfinished, so a restart runs it (same offsets and T)."""
        failures.append(_StopRequested(batch_id))
        stop_logs.silence(spark, query)
        raise failures[-1] from cause

    def handle(batch: DataFrame, batch_id: int) -> None:
        if stopping.is_set():
            stop_before(batch_id)
        try:
            rows = batch.collect()  # one row per input commit of the micro-batch (bounded by the rate limit)
        except BaseException as exc:
            if stopping.is_set():  # cancelled by the stop: nothing was written
                stop_before(batch_id, exc)
            failures.append(exc)
            raise
        if not rows:
            return
        t = runlog.parse_utc_time(rows[0]["evaluation_time"])
        versions = {k: int(v) for k, v in rows[0]["versions"].items()}
        commits = sum(1 for row in rows if row["table"] is not None)
        kind = f"{commits} input commit(s)" if commits else "sweep (no new commit)"
        progress(f"micro-batch {batch_id}: {kind}, T = {offset_time(t)}")
        try:
            done = process_micro_batch(
                spark, config, batch_id, t, versions,
                progress=progress, on_commit=on_commit, index_cache=index_cache, known_hubs=known_hubs,
            )  # fmt: skip
        except BaseException as exc:
            failures.append(exc)  # re-raised as itself once the query has stopped (not as a streaming error)
            raise
        if done is None:
            summary.skipped.append(runlog.stream_run_id(t, batch_id))
        else:
            summary.micro_batches.append(done)

    stream = reader.load().writeStream.foreachBatch(handle).option("checkpointLocation", summary.checkpoint)
    now = trigger == AVAILABLE_NOW
    query = (stream.trigger(availableNow=True) if now else stream.trigger(processingTime=trigger)).start()
    summary.query_id = str(query.id)
    progress(f"stream {summary.query_id} started (checkpoint {summary.checkpoint}, trigger {trigger})")
    try:
        _await(query, stopping, progress)
    except StreamingQueryException as exc:
        if failures and isinstance(failures[0], _StopRequested):
            progress(f"micro-batch {failures[0].batch_id} was planned but not started: the restart runs it")
        elif failures:
            raise failures[0] from exc
        else:
            raise
    finally:
        stop_logs.restore()
        if index_cache is not None:
            index_cache.close()
        known_hubs.close()
    return summary


class _StopLogs:
    """While a query ends because of :class:`_StopRequested`, the error logs that ending prints (py4j's
    traceback of the callback, Spark's "terminated with error" with three copies of it) say nothing the user
    needs: they are turned off, and set back when the stream returns (best effort; once set back, never turned
    off again by a late micro-batch)."""

    PY4J = "py4j.clientserver"

    def __init__(self) -> None:
        self._restore: list[Callable[[], None]] = []
        self._closed = False

    def silence(self, spark: SparkSession, query: StreamingQuery) -> None:
        if self._closed or self._restore:
            return
        py4j = logging.getLogger(self.PY4J)
        level = py4j.level
        py4j.setLevel(logging.CRITICAL)
        self._restore.append(lambda: py4j.setLevel(level))
        try:
            execution = query._jsq.streamingQuery()  # noqa: SLF001 - StreamingQueryWrapper -> StreamExecution
            name = execution.getClass().getName()
        except Exception as exc:  # noqa: BLE001 - logging settings never stop a stream
            log.debug("could not find the stream's execution class: %s", exc)
            return
        jvm = spark.sparkContext._jvm  # noqa: SLF001 - log4j is reached through the JVM gateway
        self._restore.append(quiet_jvm_loggers(jvm, [name], "OFF"))

    def restore(self) -> None:
        self._closed = True
        restore, self._restore = self._restore, []
        for undo in reversed(restore):
            undo()


class _StopRequested(Exception):
    """Raised in place of a micro-batch planned after Ctrl-C: nothing is written and Spark does not record the
    micro-batch as done, so the restarted stream runs it with the same offsets."""

    def __init__(self, batch_id: int) -> None:
        super().__init__(f"stopped before micro-batch {batch_id}")
        self.batch_id = batch_id


def _await(query: StreamingQuery, stopping: threading.Event, progress: Progress) -> None:
    """Wait for the query to end; the first Ctrl-C stops it after the current micro-batch, a second cancels it.

    PySpark's own SIGINT handler cancels every running job at once (a micro-batch would fail half-way and be
    rolled back), so it is replaced while the stream runs, in the main thread only. After the first Ctrl-C the
    query is stopped as soon as no trigger is active; a micro-batch Spark starts before that (the next trigger
    is due at once when micro-batches take longer than the interval) sees ``stopping`` and ends the query
    without writing. Raises the query's error, if it failed."""

    def on_interrupt(_signum: int, _frame: object) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()
        progress("stopping after the current micro-batch (Ctrl-C again to cancel it)")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if main else None
    try:
        while not query.awaitTermination(1):
            if stopping.is_set():
                while query.isActive and query.status.get("isTriggerActive"):
                    time.sleep(0.5)
                query.stop()
                query.awaitTermination()  # raises when the query failed before it was stopped
                return
    except KeyboardInterrupt:  # the second Ctrl-C: the query is stopped too, not left running
        with contextlib.suppress(Exception):
            query.stop()
        raise
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
