"""The copies of an event: the key every copy shares, and the events matched by it.

A duplicated event (same ``_id``) counts once in a batch run, its first copy by time among every copy in the
inputs (:func:`audience_activation.profile.event_key`). A micro-batch attributes only the affected persons' events,
so it must bring in every copy of each of them, wherever the copy's identities point (an earlier copy can move an
event to another person). The rules, as the micro-batch (:mod:`audience_activation.pipeline.micro_batch`, rule 3)
uses them:

1. **A narrow copy key** (:func:`copy_key`): read from ``_id``, time and identities only, so a scan skips the rest
   of each row; every copy of an event has the same one.
2. **Matched by its hash** (:func:`copy_hash`, :func:`with_keys`): the wanted keys' 64-bit hashes are broadcast
   and the events semi-joined to them; a collision brings in a whole group of events that belongs to another
   person and is dropped with that person's events.
3. **The affected persons' keys** (:func:`their_event_keys`): the hashes of the copy keys of the events that
   hold an affected identity, found in one pass (or through the identity index).
4. **Single events skip de-duplication** (:func:`split_by_copies`): an event whose key no other event holds and
   whose ``_id`` is its event key is attributed as it is.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .. import affected as affected_rules
from .. import input_index, profile
from .. import touching as touching_rules
from .model import Barrier

#: The columns of ``experience_events`` its identities are read from (:func:`identity_entries.record_entries`), in the
#: order :func:`copy_key` hashes them.
IDENTIFYING_EVENT_COLUMNS = touching_rules.RECORD_COLUMNS["events"]


def copy_key(events: DataFrame) -> Column:
    """A key every copy of an event shares, read from its ``_id``, time and identities only (a scan skips the
    rest of the row): its ``_id``, or for an event without one, a hash of those three
    (:func:`profile.event_key` of them). The copies of an event (same :func:`profile.event_key`) share it; events
    without ``_id`` that differ only elsewhere share it too, and finding those as well only revisits or attributes
    a few more events — each to its own person, by its own key — never fewer."""
    return profile.event_key(events.select(*IDENTIFYING_EVENT_COLUMNS))  # one column order for every caller


#: The copy key on whole event rows (double underscore, as ``profile.MERGE_KEY``: clear of the events' columns).
COPY_KEY = "__copy_key"


def copy_hash(key: Column) -> Column:
    """The 64-bit hash of a :func:`copy_key` value: what the events are matched by (8 bytes a key where the key
    itself is an ``_id`` of any length)."""
    return F.xxhash64(key)


def with_keys(events: DataFrame, hashes: DataFrame) -> DataFrame:
    """Every event of ``events`` whose :func:`copy_key` hashes (:func:`copy_hash`) to one of ``hashes``
    (``_key``, broadcast), with that key as :data:`COPY_KEY`.

    Matching by hash is exact for what the caller does with the events: every copy of an event has the same key,
    so a hash that matches takes in all of them; a key that only collides with a wanted one brings in an event
    group that is whole, which is attributed to its own person and dropped with the other persons' events.

    The hashes are always broadcast: they are at most one per event, 8 bytes each (a broadcast of a million takes
    a few tens of MB), where the other plan shuffles every event whole. Left to the lineage barrier's rule (then:
    results stored as deserialized rows in up to 64 MB), the copy keys themselves (``_id`` strings: ~740,000 in a
    105,000-event micro-batch at 1M persons, over 100 bytes each as stored) were not marked, and every event —
    456 MiB — was shuffled to meet them: 20 of the micro-batch's 155 task-seconds. A hash stored serialized takes
    ~11.5 bytes, so the barrier's rule (16 MB) alone would fail again at ~1.4 million keys."""
    keyed = events.withColumn(COPY_KEY, copy_key(events)).withColumn(COPY_HASH, copy_hash(F.col(COPY_KEY)))
    wanted = F.broadcast(hashes.withColumnRenamed("_key", COPY_HASH))
    return keyed.join(wanted, on=COPY_HASH, how="left_semi").drop(COPY_HASH)


#: The hash of :data:`COPY_KEY` while the events are matched (double underscore, clear of the events' columns).
COPY_HASH = "__copy_hash"


def split_by_copies(keyed: DataFrame, barrier: Barrier) -> tuple[DataFrame, DataFrame]:
    """``keyed`` (events with their :func:`copy_key` as :data:`COPY_KEY`) in two parts without that column:
    ``(single, rest)``. ``single``: the events no other event of ``keyed`` can share an event key with
    (:func:`profile.event_key`), for :func:`profile.person_events_of_primary` to attribute as they are; ``rest``:
    the others, de-duplicated as usual.

    An event is single when its copy key is held once and it has an ``_id`` that cannot be another event's key
    (not starting as a key made from a whole row, ``profile.ROW_KEY_PREFIX``): its event key is then that ``_id``,
    which every event with the same key shares as its copy key. The keys of the others are counted over the key
    column and materialised (few: a barrier measures them, so both parts are broadcast joins)."""
    unsure = F.col("_id").isNull() | F.col("_id").startswith(profile.ROW_KEY_PREFIX)
    counted = keyed.groupBy(COPY_KEY).agg(F.count(F.lit(1)).alias("_n"), F.max(unsure).alias("_unsure"))
    others = barrier(counted.where((F.col("_n") > 1) | F.col("_unsure")).select(COPY_KEY))
    single = keyed.join(others, on=COPY_KEY, how="left_anti").drop(COPY_KEY)
    rest = keyed.join(others, on=COPY_KEY, how="left_semi").drop(COPY_KEY)
    return single, rest


def their_event_keys(
    events: DataFrame,
    index: input_index.InputsIndex | None,
    affected: affected_rules.Affected,
    clusters: DataFrame,
    barrier: Barrier,
) -> DataFrame:
    """The :func:`copy_hash` of the :func:`copy_key` (``_key``) of the events that hold an affected identity,
    materialised.

    Without an index, one pass over the events' narrow columns: their identity lists exploded and matched, the
    keys kept (:func:`touching.held_by`). Through the index, the rows it finds, attributed to the affected
    clusters. The first can hold a few keys more (an event holding an affected identity whose primary identity
    is not affected): their copies are attributed to their own persons and dropped with the other persons'
    events."""
    if index is None or index.events is None:
        held = touching_rules.held_by(events, affected.identities, copy_hash(copy_key(events)))
        return barrier(held.select(F.col("_held").alias("_key")))
    holding = input_index.holding(events, index.events, affected.identities)
    theirs = profile.attach_persons(holding, clusters).drop("primary_namespace", "primary_id", "person_id")
    return barrier(theirs.select(copy_hash(copy_key(theirs)).alias("_key")).distinct())
