"""One micro-batch of the streaming job: the batch stages on the persons new rows can affect, merged into the
state of the previous run (docs/streaming.md).

Rules, in the order :func:`evaluate_micro_batch` applies them:

1. **New rows** (:func:`audience_activation.affected.new_rows`): rows of the input files added since the
   previous run's input versions, and rows whose time passed since its evaluation time; the affected persons
   are seeded from them and from the rows removed (a delete can split a person; the caller passes the changes
   with the rows a rewrite kept set aside, so a compaction seeds nothing).
   **Time-driven changes** seed too (:mod:`audience_activation.pql.time_dependence`): the events that entered
   or left an event window of a streamed segment between the previous ``T`` and this one (a member of
   "viewed in the last 24 hours" whose view is now 24 hours old), or every identity when a streamed segment
   reads the time otherwise (``birthDate occurs today``).
2. **Affected persons** (:func:`audience_activation.affected.resolve_affected`): their identities resolved
   exactly as a whole resolution would, and the previous persons that held any of them.
3. **Their profiles and events** from their full history, by the batch stages given only their clusters. A
   duplicated event (same ``_id``) counts once, its first copy by time among every copy in the inputs, as in a
   batch run: every copy of the affected persons' events is attributed before their own are kept
   (:mod:`audience_activation.pipeline.event_copies`), and the identities of every copy of a new event are seeds
   (an earlier copy can move it to another person).
   **A profile that cannot have changed is kept** (:func:`_kept_persons`): a person revisited unchanged (rule 7
   of :mod:`audience_activation.affected`: same identities, same person id) with at least one fragment in its
   previous profile, none of whose identities a new or removed fragment row holds, has the same fragments
   (a fragment is a person's by its primary identity, one of the person's), the same identity graph and so the
   same unified profile: its previous row is used, not merged again (events do not enter a profile, and with a
   fragment its row exists whatever its events; an events-only person is merged again, since an earlier copy of
   an event can take its last event away).
4. **Streamed segments**: every segment classified ``edge`` or ``streaming`` is evaluated for them (a
   streamed segment references streamed segments only, so ``inSegment`` is exact); ``batch`` segments are
   left to the batch job and keep their rows.
5. **Membership** of the affected persons (new person ids and previous ones) in the streamed segments, with
   the batch job's transitions, ``evaluation_method = streaming``; every other row is kept as it was.
6. **Activation** for the ``(destination, segment)`` pairs mapped both now and at the previous run and
   streamed: the batch job's activated sets, reasons and identity selection on the affected persons, diffed
   against their previous activation state; changes routed to edge or hub as the batch job does. Mapping
   changes (``backfill``, ``unmapped``) and new destinations are the batch job's: a micro-batch records the
   previous run's mappings unchanged.
7. **State after the micro-batch**: each state table of the previous run with the affected persons' rows
   (identities, for ``identity_clusters``) replaced by the new ones. The rows replaced and the rows written in
   their place are kept side by side (:class:`Replaced`): when they are the same rows, the table after the
   micro-batch is the table before it, and the job leaves it unwritten (an events-only micro-batch changes no
   cluster and no unified profile of a known person). The activation state's changed rows are read off the
   activation step's comparison instead (:func:`audience_activation.activation.state_changes`).
8. **Quarantine**: the new rows' invalid identities, rows without a valid identity or a time, and the hub and
   eviction rows of the identities resolved again (not of persons only revisited, rule 7 of
   :mod:`audience_activation.affected`).

Pure: DataFrames in, DataFrames out; the actions are the affected-persons closure's tests (anything to resolve,
did the neighbours grow the set, convergence).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .. import activation as activation_rules
from .. import affected as affected_rules
from .. import input_index, profile, tables
from .. import touching as touching_rules
from ..as_of import TIME_COLUMNS, AsOfInputs
from ..as_of import as_of as inputs_as_of
from ..columns import row_differences
from ..config import AppConfig, DestinationConfig
from ..identity_entries import invalid_identity_quarantine, link_entries, record_entries
from ..pql.classify import EvaluationMethod
from ..pql.compiler import window_changes
from ..pql.time_dependence import TimeDependence, combined
from ..schemas import EXPERIENCE_EVENTS
from . import event_copies, stages
from .model import Barrier, Inputs, PreviousState, Results, no_barrier

#: The evaluation method written to ``segment_membership`` by the streaming job.
STREAMING_METHOD = "streaming"

_STREAMED = (EvaluationMethod.EDGE, EvaluationMethod.STREAMING)
_QUARANTINE_COLUMNS = ("source_table", "namespace", "id", "row_key", "reason")


@dataclass(frozen=True)
class TableChange:
    """One input table between the previous run's version and the micro-batch's.

    Attributes:
        before: the table at the version the previous run read.
        added: the rows the table gained since (of the data files added, without the rows of removed files
            they hold again: :func:`audience_activation.columns.net_rows`).
        removed: the rows it lost since (likewise).
        removes: False when no row can have been lost (no data file was removed or changed in place): ``removed``
            is then empty, known without a query.
    """

    before: DataFrame
    added: DataFrame
    removed: DataFrame
    removes: bool = True

    def lost_rows(self) -> bool:
        """Whether the table lost any row since (a query only when a data file was removed or changed)."""
        return self.removes and not self.removed.isEmpty()


@dataclass(frozen=True)
class Changes:
    """Each input table's change since the previous run's input versions (None: unchanged, or absent)."""

    fragments: TableChange | None = None
    events: TableChange | None = None
    links: TableChange | None = None
    regions: TableChange | None = None

    def side(self, inputs: Inputs, which: str) -> AsOfInputs:
        """The four tables' ``before``, ``added`` or ``removed`` rows as read (``before`` of an unchanged table:
        as now), in an :class:`AsOfInputs` holder (not yet filtered as of ``T``)."""

        def pick(name: str) -> DataFrame | None:
            change: TableChange | None = getattr(self, name)
            if change is not None:
                return getattr(change, which)  # type: ignore[no-any-return]
            return getattr(inputs, name) if which == "before" else None  # type: ignore[no-any-return]

        return AsOfInputs(pick("fragments"), pick("events"), pick("links"), pick("regions"))


@dataclass(frozen=True)
class Replaced:
    """The rows of one state table a micro-batch replaces (rule 7) and the rows it writes in their place.

    Attributes:
        previous: the previous run's rows for the replaced keys, or None when it had no such table.
        new: the rows written for those keys.
    """

    previous: DataFrame | None
    new: DataFrame

    def differences(self) -> DataFrame | None:
        """The rows whose number of copies differs between the two sides
        (:func:`audience_activation.columns.row_differences`); None when the table changes whatever the rows (no
        previous table, other columns). Empty: the table is unchanged."""
        return None if self.previous is None else row_differences(self.previous, self.new)


@dataclass(frozen=True)
class MicroBatchResults:
    """A micro-batch's results: the state after it (whole tables) and what it changed.

    Attributes:
        results: as a batch run's (``clusters``, ``profiles``, ``membership``, ``state`` are the whole tables
            after the micro-batch; ``changes``, ``exclusions``, ``quarantine`` and ``evaluated`` are the
            micro-batch's own; ``segment_ids`` the streamed segments).
        new_rows: the new rows per input table (step 1).
        persons: ``person_id`` of every person the micro-batch revisited (new ids and previous ones).
        destinations: the destinations and mapped segments it activated (step 6).
        replaced: per state table (``identity_clusters``, ``unified_profiles``, ``segment_membership``), the rows
            it replaces and their replacement (step 7; the activation state's changes are ``state_changes``).
        hubs: ``namespace, id`` of the hubs its identity resolution found (hubs of the inputs it read, at ``T``;
            rule 8 of :mod:`audience_activation.affected`), or None when it resolved nothing.
        state_changes: the rows of ``activation_state`` it changes, with ``removed``
            (:func:`audience_activation.activation.state_changes`; what the stream appends to the state's log).
        settled: the settled persons after it (``namespace, id, person_id``, :mod:`audience_activation.settled`;
            not materialised), or None when they were not tracked.
    """

    results: Results
    new_rows: AsOfInputs
    persons: DataFrame
    destinations: list[DestinationConfig]
    replaced: dict[str, Replaced] = dataclasses.field(default_factory=dict)
    hubs: DataFrame | None = None
    state_changes: DataFrame | None = None
    settled: DataFrame | None = None


def streamed_segments(compiled: stages.Compiled) -> list[str]:
    """The segments classified ``edge`` or ``streaming``, in evaluation order."""
    classification = compiled.segments.classification
    return [s for s in compiled.segments.segment_ids if classification[s].method in _STREAMED]


def streamed_destinations(
    config: AppConfig, previous_mappings: dict[str, list[str]], streamed: list[str]
) -> list[DestinationConfig]:
    """Each configured destination that the previous run activated, with the segments mapped to it both now and
    then that are streamed (rule 6); destinations left with no segment are dropped."""
    kept = []
    for destination in config.destinations:
        before = set(previous_mappings.get(destination.id, ()))
        segments = [s for s in destination.segments if s in before and s in streamed]
        if destination.id in previous_mappings and segments:
            kept.append(destination.model_copy(update={"segments": segments}))
    return kept


def _replace(previous: DataFrame | None, new: DataFrame, keys: DataFrame, on: list[str]) -> DataFrame:
    """``previous`` without the rows matching ``keys`` on ``on``, plus ``new`` (rule 7)."""
    if previous is None:
        return new
    return previous.join(F.broadcast(keys), on=on, how="left_anti").unionByName(new.select(*previous.columns))


def _clusters_of(
    keys: DataFrame, clusters: DataFrame, identities: DataFrame, previous: DataFrame | None, barrier: Barrier
) -> DataFrame:
    """The rows of the clusters after the micro-batch (:func:`_replace` of ``previous`` by ``clusters``, the rows
    of ``identities``) for the identities ``keys``: those of the affected identities from ``clusters``, the others
    from ``previous``. Usually every key is an affected identity; the others are materialised first, so when there
    is none the adaptive plan sees an empty broadcast side and does not scan ``previous`` at all."""
    key = ["namespace", "id"]
    theirs = clusters.join(keys, on=key, how="left_semi")
    if previous is None:
        return theirs
    others = barrier(keys.join(identities, on=key, how="left_anti"))
    return theirs.unionByName(previous.join(others, on=key, how="left_semi").select(*clusters.columns))


def _narrow_events(as_of: AsOfInputs, index: input_index.InputsIndex, evaluation_time: dt.datetime) -> AsOfInputs:
    """``as_of`` with its events replaced by the index's kept rows of them (``_id``, ``timestamp``,
    ``identityMap``) as of ``T``: the same events, narrower and already in memory."""
    if index.events is None:
        return as_of
    rows = index.events.rows.drop("_list")
    return dataclasses.replace(as_of, events=inputs_as_of(None, rows, None, None, evaluation_time).events)


def _holding(records: DataFrame, index: input_index.TableIndex | None, identities: DataFrame) -> DataFrame:
    """The rows of ``records`` that hold one of ``identities`` (through the index, when there is one: those and
    rarely a row that does not, which the steps after drop as they join on an identity anyway)."""
    if index is None:
        return touching_rules.holding(records, identities)
    return input_index.holding(records, index, identities)


def _kept_persons(
    previous_profiles: DataFrame | None,
    affected: affected_rules.Affected,
    fragment_changes: list[DataFrame],
    columns: list[str],
    barrier: Barrier,
) -> DataFrame | None:
    """Rule 3's kept profiles: ``person_id`` of the persons revisited unchanged that have a fragment in their
    previous ``unified_profiles`` row and hold no identity of ``fragment_changes`` (the new and removed fragment
    rows), materialised (a narrow pass over the previous profiles: their rows are read once, where they are used);
    None when none can be kept (no previous profiles, no revisited person, or a previous table whose columns are
    not the profiles' ``columns`` now: the fragments' attributes changed)."""
    if previous_profiles is None or affected.revisited is None or set(previous_profiles.columns) != set(columns):
        return None
    candidates = affected.revisited
    if fragment_changes:
        touched = affected_rules.seed_identities(
            AsOfInputs(reduce(DataFrame.unionByName, fragment_changes), None, None, None)
        )
        stale = affected.clusters.join(touched, on=["namespace", "id"], how="left_semi").select("person_id")
        candidates = candidates.join(stale, on="person_id", how="left_anti")
    with_fragments = previous_profiles.where(F.col("fragment_count") > 0).select("person_id")
    return barrier(with_fragments.join(candidates, on="person_id", how="left_semi"))


def _revisiting_events(
    spark: SparkSession,
    compiled: stages.Compiled,
    streamed: list[str],
    as_of: AsOfInputs,
    changed: list[DataFrame],
    previous: PreviousState,
    evaluation_time: dt.datetime,
    barrier: Barrier,
) -> DataFrame:
    """The identities of rows that were there before whose persons the micro-batch revisits, in one pass over the
    events: every event sharing the copy key (:func:`event_copies.copy_key`) of one of the ``changed`` events (new or
    removed: an earlier copy can move an event's person, rule 3), and rule 1's time-driven seeds — the events
    that entered or left an event window of a streamed segment since the previous run's ``T``, or every identity
    when a streamed segment reads the time otherwise (``birthDate occurs today``; a superset of the rest)."""
    no_identities = spark.createDataFrame([], "namespace string, id string")
    dependence = combined(compiled.segments.time_dependence.get(s, TimeDependence()) for s in streamed)
    since = previous.evaluation_time
    time_moved = since is not None and since < evaluation_time
    if dependence.other and time_moved:
        return affected_rules.seed_identities(as_of)
    if as_of.events is None:
        return no_identities
    # Only the columns the identities are read from: the scan skips the rest of each event.
    narrow = list(event_copies.IDENTIFYING_EVENT_COLUMNS)
    events, hits = as_of.events.select(*narrow), []
    if changed:
        some = reduce(DataFrame.unionByName, (c.select(*narrow) for c in changed))
        # The keys are materialised first: a barrier measures them, so the join broadcasts them instead of
        # shuffling every event (:class:`~audience_activation.storage.base.LocalCheckpoint`).
        keys = barrier(
            some.select(event_copies.copy_key(some).alias("_key")).distinct().withColumn("_copy", F.lit(True))
        )
        events = events.withColumn("_key", event_copies.copy_key(events)).join(keys, on="_key", how="left")
        hits.append(F.col("_copy").isNotNull())
    if since is not None and time_moved and dependence.event_windows:
        timestamp = F.col(TIME_COLUMNS[EXPERIENCE_EVENTS])
        hits.append(window_changes(timestamp, dependence.event_windows, since, evaluation_time))
    if not hits:
        return no_identities
    revisiting = events.where(reduce(lambda a, b: a | b, hits)).select(*narrow)
    return affected_rules.seed_identities(AsOfInputs(None, revisiting, None, None))


def _quarantine(fresh: AsOfInputs, affected: affected_rules.Affected) -> DataFrame:
    """Rule 8, one row per distinct (source table, identity, reason), the smallest row key standing for the rest."""
    parts = [affected.quarantine.select(*_QUARANTINE_COLUMNS)]
    if fresh.undated is not None:
        parts.append(fresh.undated.select(*_QUARANTINE_COLUMNS))
    if any(t is not None for t in (fresh.fragments, fresh.events, fresh.regions)):
        links = None if fresh.links is None else link_entries(fresh.links)
        parts.append(invalid_identity_quarantine(record_entries(fresh), links).select(*_QUARANTINE_COLUMNS))
    return (
        reduce(DataFrame.unionByName, parts)
        .groupBy("source_table", "namespace", "id", "reason")
        .agg(F.min("row_key").alias("row_key"))
        .select(*_QUARANTINE_COLUMNS)
    )


def evaluate_micro_batch(
    inputs: Inputs,
    changes: Changes,
    previous: PreviousState,
    previous_profiles: DataFrame | None,
    config: AppConfig,
    evaluation_time: dt.datetime,
    *,
    barrier: Barrier = no_barrier,
    compiled: stages.Compiled | None = None,
    progress: Any = None,
    index: input_index.InputsIndex | None = None,
    known_hubs: DataFrame | None = None,
    settled: DataFrame | None = None,
) -> MicroBatchResults:
    """Everything a micro-batch at ``T`` computes (rules in the module docstring); nothing is written.

    Args:
        inputs: the input tables at the versions the micro-batch reads.
        changes: each input's change since the previous run's input versions.
        previous: the previous completed run (batch or streaming) and its state; required.
        previous_profiles: its ``unified_profiles``, or None when it wrote none.
        config: the configuration.
        evaluation_time: ``T``.
        barrier: where results are materialised.
        compiled: :func:`stages.compile_run`'s result when the caller compiled already.
        progress: called with a one-line message as each step starts.
        index: the identity index of ``inputs`` (:mod:`audience_activation.input_index`), when the caller keeps
            one: the rows touching the affected identities are then looked up in it (same results, no scan).
        known_hubs: ``namespace, id`` of identities known to be hubs of ``inputs`` at ``T`` (rule 8 of
            :mod:`audience_activation.affected`; same results, fewer rows looked up).
        settled: ``namespace, id, person_id`` of the settled persons of the previous run's clusters
            (:mod:`audience_activation.settled`; same results, fewer persons resolved), empty when none is known;
            None: not tracked (``MicroBatchResults.settled`` is None).

    Raises:
        ValueError: no previous run (a stream continues from a batch run's state).
    """
    if previous.run is None:
        raise ValueError("a micro-batch continues from a completed run's state; there is none")
    say = progress or (lambda _message: None)
    compiled = compiled or stages.compile_run(config, inputs, evaluation_time)
    as_of = inputs_as_of(inputs.fragments, inputs.events, inputs.links, inputs.regions, evaluation_time)
    old, gone = changes.side(inputs, "before"), changes.side(inputs, "removed")
    before = inputs_as_of(old.fragments, old.events, old.links, old.regions, evaluation_time)
    fresh = affected_rules.new_rows(before, changes.side(inputs, "added"), previous.evaluation_time, evaluation_time)
    # The new rows are read by the seeds, the copies, the quarantine and the run counts, and each read would scan
    # every input again for the old rows whose time passed: materialised once (they are the micro-batch's rows).
    fresh = fresh.map(barrier)
    removed = inputs_as_of(gone.fragments, gone.events, gone.links, gone.regions, evaluation_time)
    say("resolving the identities of the affected persons")
    # Rows that can change the identity graph seed a resolution; the others only revisit their persons.
    seeds, revisit = affected_rules.split_seeds(fresh, config.namespaces, config.job.identity, barrier, settled)
    if any(t is not None for t in (removed.fragments, removed.events, removed.links, removed.regions)):
        seeds = seeds.unionByName(affected_rules.seed_identities(removed))  # a removed row can split a person
    # The seeds read only the events' identities and times: the index's narrow rows serve them when there is one.
    identified = as_of if index is None else _narrow_events(as_of, index, evaluation_time)
    spark = inputs.fragments.sparkSession
    streamed = streamed_segments(compiled)
    # The earlier copies of new events and the time-driven rows were there before (a new one is a new row):
    # they only revisit their persons.
    changed = [e for e in (fresh.events, removed.events) if e is not None]
    revisit = revisit.unionByName(
        _revisiting_events(spark, compiled, streamed, identified, changed, previous, evaluation_time, barrier)
    )
    lookup = None if index is None else (lambda ids: input_index.touching(index, ids, evaluation_time))
    affected = affected_rules.resolve_affected(
        as_of,
        seeds,
        previous.clusters,
        config.namespaces,
        config.job.identity,
        barrier,
        lookup,
        revisit,
        known_hubs,
        settled,
    )
    clusters = affected.clusters
    persons = barrier(clusters.select("person_id").unionByName(affected.previous_persons).distinct())

    all_clusters = _replace(previous.clusters, clusters, affected.identities, ["namespace", "id"])
    say("merging their profiles and attributing their events")
    events = None
    if as_of.events is not None:
        # Duplicates of an event count once, the first copy by time among all of them (rule 3): every copy of
        # the affected persons' events is attributed, then only their persons' events are kept. The candidates are
        # kept with their primary identity, which both the clusters' lookup and the attribution read (a candidate
        # without a valid identity is dropped here rather than by the attribution: the same events remain).
        wanted = event_copies.their_event_keys(as_of.events, index, affected, clusters, barrier)
        keyed = barrier(profile.with_primary_identity(event_copies.with_keys(as_of.events, wanted)))
        # Only the clusters of the candidates' primary identities: a few hundred thousand rows, where joining
        # every cluster shuffled the whole table (4.3 million rows at 1M persons) for any micro-batch.
        primary = keyed.select(F.col("primary_namespace").alias("namespace"), F.col("primary_id").alias("id"))
        keys = barrier(primary.distinct())
        their_clusters = barrier(_clusters_of(keys, clusters, affected.identities, previous.clusters, barrier))
        # Most candidates have no copy: those are attributed as they are, only the others de-duplicated.
        single, rest = event_copies.split_by_copies(keyed, barrier)
        attributed = profile.person_events_of_primary(single, their_clusters, copies=False).unionByName(
            profile.person_events_of_primary(rest, their_clusters)
        )
        events = barrier(attributed.join(persons, on="person_id", how="left_semi"))

    def merged_profiles(
        persons_clusters: DataFrame, identities: DataFrame, their_events: DataFrame | None
    ) -> DataFrame:
        # Only the fragments that hold one of their identities can be theirs (the stage joins on the primary one).
        fragments = (
            None
            if as_of.fragments is None
            else _holding(as_of.fragments, None if index is None else index.fragments, identities)
        )
        return stages.profiles(dataclasses.replace(as_of, fragments=fragments), their_events, persons_clusters, config)

    fragment_changes = [f for f in (fresh.fragments, removed.fragments) if f is not None]
    columns = profile.profile_schema(inputs.fragments.schema).fieldNames()
    kept = _kept_persons(previous_profiles, affected, fragment_changes, columns, barrier)
    if previous_profiles is None or kept is None:
        unified = barrier(merged_profiles(clusters, affected.identities, events))
    else:  # the others' profiles merged, the kept ones as they were
        others = clusters.join(kept, on="person_id", how="left_anti")
        their_events = None if events is None else events.join(kept, on="person_id", how="left_anti")
        merged = merged_profiles(others, others.select("namespace", "id"), their_events)
        unchanged = previous_profiles.join(kept, on="person_id", how="left_semi")
        unified = barrier(merged.unionByName(unchanged.select(*merged.columns)))

    say(f"evaluating {len(streamed)} streamed segments")
    evaluated = barrier(stages.segments(compiled, unified, events))
    in_streamed = F.col("segment_id").isin(streamed)
    # The previous rows of the revisited persons are read by their stage, by activation and by the comparison
    # of rule 7: materialised once.
    previous_membership = (
        None
        if previous.membership is None
        else barrier(previous.membership.where(in_streamed).join(persons, on="person_id", how="left_semi"))
    )
    membership = barrier(
        stages.membership(evaluated, streamed, previous_membership, evaluation_time, config, method=STREAMING_METHOD)
    )

    destinations = streamed_destinations(config, previous.mappings, streamed)
    say(f"activating {len(destinations)} destinations")
    mappings = activation_rules.mappings_frame(spark, destinations)
    previous_state = (
        None
        if previous.activation_state is None
        else barrier(
            previous.activation_state.join(
                F.broadcast(mappings), on=["destination_id", "segment_id"], how="left_semi"
            ).join(persons, on="person_id", how="left_semi")
        )
    )
    current = activation_rules.current_members(membership, unified, destinations, compiled.consents, config.namespaces)
    diff = activation_rules.diff_activations(
        current, previous_state, previous_membership, membership, mappings, mappings, evaluation_time, barrier
    )
    previous_clusters = affected.previous_clusters  # the previous persons' rows, found by the closure
    routed = stages.routing(
        diff.changes, clusters, as_of.regions, previous_clusters, config, evaluation_time, graphs_barrier=barrier
    )
    changes_out = barrier(routed, partition_by=("destination_id", "route"))

    # Every previous identity of the affected ones is in a previous person's (rule 2 of affected): their
    # previous rows are among ``previous_clusters`` (identity resolution gives each identity one row, with a
    # person id, so the rows of the replaced identities are exactly those).
    replaced = {
        tables.CLUSTERS.name: Replaced(
            None
            if previous_clusters is None
            else previous_clusters.join(affected.identities, on=["namespace", "id"], how="left_semi"),
            clusters,
        ),
        tables.PROFILES.name: Replaced(
            None if previous_profiles is None else previous_profiles.join(persons, on="person_id", how="left_semi"),
            unified,
        ),
        tables.MEMBERSHIP.name: Replaced(previous_membership, membership),
    }
    revisited = persons.crossJoin(F.broadcast(spark.createDataFrame([(s,) for s in streamed], "segment_id string")))
    pairs = persons.crossJoin(F.broadcast(mappings))
    results = Results(
        as_of=as_of,
        clusters=all_clusters,
        profiles=_replace(previous_profiles, unified, persons, ["person_id"]),
        events=events,
        evaluated=evaluated,
        membership=_replace(previous.membership, membership, revisited, ["person_id", "segment_id"]),
        changes=changes_out,
        state=_replace(previous.activation_state, diff.state, pairs, ["destination_id", "segment_id", "person_id"]),
        exclusions=diff.exclusions,
        quarantine=barrier(_quarantine(fresh, affected)),
        segment_ids=streamed,
        classification={
            k: getattr(v.method, "value", str(v.method)) for k, v in compiled.segments.classification.items()
        },
        cc_rounds=affected.rounds,
    )
    return MicroBatchResults(
        results=results,
        new_rows=fresh,
        persons=persons,
        destinations=destinations,
        replaced=replaced,
        hubs=affected.hubs if affected.rounds else None,
        state_changes=diff.state_changes,
        settled=affected.settled,
    )
