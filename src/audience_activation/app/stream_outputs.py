"""What a streaming micro-batch writes, and the tables it leaves as they were (step 4 of
:mod:`audience_activation.app.stream`).

A micro-batch leaves unwritten the tables it would not change (and a few it cannot tell cheaply, below, are
written anyway), and records in its run-log row, for every table it did not write, the version that holds its
state. The rules, one function each:

1. **State tables replaced by the same rows** (:func:`unchanged_tables`) are not written: when the rows the
   micro-batch replaces equal the rows it would write, and the table is still at the version the micro-batch read,
   the run log records that version (``unified_profiles`` is not compared when new fragment rows came in).
2. **The activation state** (:func:`state_outputs`): its changed rows are appended to ``activation_state_log``
   while the state it continues from is the tables' latest versions and the log has room; otherwise it is
   written whole and the log emptied; when it appends and no row changed, nothing is written.
3. **Per-run tables without a row** (:func:`tables_without_rows`): a destination's edge or hub table with no
   change row of its route, and the quarantine with no row, are not written (an empty partition would add a
   version per micro-batch); the run log records their latest version. A table that does not exist yet is
   written, so it is created.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from .. import pipeline, runlog, state_log, tables
from ..config import AppConfig
from ..pipeline.micro_batch import MicroBatchResults
from ..runlog import RunCounts
from ..schemas import PROFILE_FRAGMENTS
from ..storage import DeltaStorage
from ..storage.base import LocalCheckpoint
from . import writer
from .context import Progress


def unchanged_tables(
    store: DeltaStorage,
    config: AppConfig,
    micro: MicroBatchResults,
    previous_run: runlog.PreviousRun,
    progress: Progress,
    counts: RunCounts,
) -> dict[str, int]:
    """The state tables the micro-batch leaves as they were, each with the version it read: they are not written,
    and the run log records that version.

    A table is left as it was when its replacement rows equal the rows they replace, and when its latest version
    is still the one the micro-batch read: a job that writes a state table without a run to continue from
    (``identities``, a forced batch run at an older ``T``) leaves a newer version, which the micro-batch then
    overwrites with the state it continues from, as before.

    ``unified_profiles`` is not compared when the micro-batch has new ``profile_fragments`` rows (``counts``): a
    new fragment with a valid identity adds to its person's ``fragment_count``, so the table changes, and the
    comparison would read every profile (1M rows: ~4 s of a micro-batch at 1M persons) to find that out. (A new
    fragment that changes no row — one without a valid identity, one the merge policy ignores, rows a compaction
    rewrote — then costs a write of the same rows, never a wrong table.)"""
    kept: dict[str, int] = {}
    new_fragments = counts.rows.get(PROFILE_FRAGMENTS, {}).get("new", 0)
    for name, replaced in micro.replaced.items():
        version = previous_run.output_versions.get(name)
        if version is None or store.version(tables.by_name(name).location(config.job)) != version:
            continue
        if name == tables.PROFILES.name and new_fragments:
            progress(f"{name}: {new_fragments} new fragment row(s): written without comparing")
            continue
        differences = replaced.differences()
        if differences is not None and differences.isEmpty():
            kept[name] = version
            progress(f"{name} unchanged: not rewritten (stays at version {version})")
    return kept


def state_outputs(
    spark: SparkSession,
    store: DeltaStorage,
    config: AppConfig,
    micro: MicroBatchResults,
    previous_run: runlog.PreviousRun,
    barrier: LocalCheckpoint,
    progress: Progress,
) -> tuple[list[pipeline.Output], dict[str, int]]:
    """How the micro-batch writes the activation state (:mod:`audience_activation.state_log`): the outputs to
    write in place of the whole ``activation_state``, and the state tables left as they were, with the version
    the micro-batch read.

    Its changed rows are appended to ``activation_state_log`` when the state it continues from is the tables'
    latest versions and the log stays within ``job.stream.state_log_max_rows``; nothing is written when no row
    changed. Otherwise (no state to append to, a table moved on since the run it continues from, the log full)
    the state is written whole and the log emptied."""
    state_spec, log_spec = tables.ACTIVATION_STATE, tables.ACTIVATION_STATE_LOG
    table_version = previous_run.output_versions.get(state_spec.name)
    log_version = previous_run.output_versions.get(log_spec.name)
    log_location = log_spec.location(config.job)
    log_exists = store.exists(log_location)
    whole = [pipeline.Output(state_spec, micro.results.state)]
    if log_exists:
        whole.append(writer.emptied_log(spark))

    def written_whole(reason: str) -> tuple[list[pipeline.Output], dict[str, int]]:
        progress(f"activation_state written whole: {reason}")
        return whole, {}

    changes = micro.state_changes
    if table_version is None or changes is None:
        return written_whole("no previous activation state to append to")
    if store.version(state_spec.location(config.job)) != table_version:
        return written_whole(
            f"activation_state is no longer at version {table_version}, which the previous run recorded"
        )
    if log_exists != (log_version is not None) or (log_exists and store.version(log_location) != log_version):
        return written_whole(f"its log is no longer at the version the previous run recorded ({log_version})")
    generation = 0 if log_version is None else log_version + 1
    rows = barrier(state_log.log_rows(changes, generation))
    changed = rows.count()
    kept = {state_spec.name: table_version} | ({} if log_version is None else {log_spec.name: log_version})
    if not changed:
        progress(f"activation_state unchanged: not rewritten (stays at version {table_version})")
        return [], kept
    logged = 0 if log_version is None else store.read(log_location, log_version).df.count()
    limit = config.job.stream.state_log_max_rows
    if logged + changed > limit:
        progress(f"activation_state log full ({logged} + {changed} rows > {limit}): the state is written whole")
        return whole, {}
    progress(f"activation_state: {changed} changed row(s) appended to its log ({logged} before)")
    return [pipeline.Output(log_spec, rows)], {state_spec.name: table_version}


def tables_without_rows(
    store: DeltaStorage, config: AppConfig, outputs: list[pipeline.Output], counts: RunCounts
) -> dict[str, int]:
    """The per-run outputs the micro-batch has no row for, each with the table's latest version: a destination's
    edge or hub table without a change row of its route, the quarantine without a row (step 4). Read from the
    micro-batch's counts, so no output is read to know it. A table that does not exist yet is written (created)."""
    routed = {(key.destination_id, key.route) for key, n in counts.changes.items() if n}
    found: dict[str, int] = {}
    for output in outputs:
        if output.spec.name in pipeline.ROUTES:
            empty = (output.destination_id, pipeline.ROUTES[output.spec.name]) not in routed
        else:
            empty = output.spec.name == tables.QUARANTINE.name and not any(counts.quarantine.values())
        location = output.spec.location(config.job, output.destination_id)
        if empty and store.exists(location):
            found[output.key] = store.version(location)
    return found
