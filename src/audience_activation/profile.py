"""Unified profiles and person events (docs/batch.md, "Stages").

- :func:`primary_identity` picks a record's primary identity among its valid identities.
- :func:`attach_persons` gives fragments and events the ``person_id`` of their primary identity.
- :func:`keyed_fragments` keeps what the merge reads of each fragment: its primary identity, its merge key
  (computed from the fragment as stored) and its attributes.
- :func:`merge_fragments` merges each person's fragments field by field in **one** aggregation: every leaf
  of a nested struct, and every array or map as a whole, takes the non-null value of the winning fragment
  (``min_by`` over a policy key, nulls excluded), then the structs are rebuilt.
- :func:`unified_profiles` adds the person's whole identity graph as ``identityMap`` and the persons that
  have only events.
- :func:`person_events` de-duplicates events by ``_id`` (the first by timestamp) and attaches persons.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, LongType, MapType, StringType, StructField, StructType

from .columns import entries_identity_map, identity_map_entries
from .config import DatasetPrecedencePolicy, MergePolicy, NamespacesConfig
from .namespaces import NamespaceLookup, best_entry, invalid_reason
from .schemas import FRAGMENT_SYSTEM_COLUMNS

#: Columns a unified profile has besides the merged attributes.
PROFILE_SYSTEM_COLUMNS = ("person_id", "identityMap", "fragment_count")


def primary_identity(identity_map: Column) -> Column:
    """The record's primary identity among its valid identities, as an array of **at most one**
    ``struct(primary_namespace, primary_id)`` (empty when no identity is valid).

    ``primary = true`` first; when several or none are flagged, the first by namespace code then id (binary
    order). ``Email_LC_SHA256`` counts as ``EMAIL_LC_SHA256``.

    An array read with a generator (``F.inline``), not a nullable struct: the struct's null test, namespace and id
    would each evaluate the higher-order functions again (three validations of every identity per record), and a
    null filter on it can be pushed below the projection that computes it (docs/performance.md, "Evaluated
    once"). The generator evaluates the list once and emits no row for a record without a valid identity.
    """
    entries = F.transform(
        identity_map_entries(identity_map),
        lambda e: F.struct(
            (~e["primary"]).alias("not_primary"), e["namespace"].alias("namespace"), e["id"].alias("id")
        ),
    )
    valid = F.filter(entries, lambda e: invalid_reason(e["namespace"], e["id"]).isNull())
    return F.transform(
        F.slice(F.array_sort(valid), 1, 1),
        lambda e: F.struct(e["namespace"].alias("primary_namespace"), e["id"].alias("primary_id")),
    )


def attach_persons(records: DataFrame, clusters: DataFrame) -> DataFrame:
    """Add ``person_id`` and ``primary_namespace``/``primary_id`` (records without a valid identity are dropped;
    the identity step quarantined them as ``no_valid_identity``).

    Args:
        records: fragments or events (with ``identityMap``).
        clusters: ``identity_clusters`` (``namespace, id, person_id``); one row per identity.
    """
    return with_primary_identity(records).join(
        _person_keys(clusters), on=["primary_namespace", "primary_id"], how="inner"
    )


def with_primary_identity(records: DataFrame) -> DataFrame:
    """``records`` with ``primary_namespace, primary_id`` (:func:`primary_identity`); a record without a valid
    identity has no row."""
    return records.select("*", F.inline(primary_identity(F.col("identityMap"))))


#: The columns :func:`with_primary_identity` adds.
_PRIMARY = ["primary_namespace", "primary_id"]


def _person_keys(clusters: DataFrame) -> DataFrame:
    """``primary_namespace, primary_id, person_id``: the clusters as the join key of records' primary identities."""
    return clusters.select(F.col("namespace").alias("primary_namespace"), F.col("id").alias("primary_id"), "person_id")


def _leaf_paths(schema: StructType, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], DataType]]:
    """Paths of the leaves to merge: scalars, arrays and maps (taken whole); structs are descended into."""
    leaves: list[tuple[tuple[str, ...], DataType]] = []
    for field in schema.fields:
        path = (*prefix, field.name)
        if isinstance(field.dataType, StructType) and field.dataType.fields:
            leaves.extend(_leaf_paths(field.dataType, path))
        else:
            leaves.append((path, field.dataType))
    return leaves


def _column(path: tuple[str, ...]) -> Column:
    column = F.col(f"`{path[0]}`")
    for part in path[1:]:
        column = column.getField(part)
    return column


def _leaf_name(path: tuple[str, ...]) -> str:
    return "__leaf__" + "__".join(f"{len(part)}_{part}" for part in path)


def _rebuild(schema: StructType, prefix: tuple[str, ...] = ()) -> list[Column]:
    """Nested structs from the merged leaves; a struct whose leaves are all null is null."""
    columns = []
    for field in schema.fields:
        path = (*prefix, field.name)
        if isinstance(field.dataType, StructType) and field.dataType.fields:
            children = _rebuild(field.dataType, path)
            leaves = [F.col(_leaf_name(p)) for p, _ in _leaf_paths(field.dataType, path)]
            any_set = reduce(lambda a, b: a | b, [leaf.isNotNull() for leaf in leaves])
            columns.append(F.when(any_set, F.struct(*children)).alias(field.name))
        else:
            columns.append(F.col(_leaf_name(path)).alias(field.name))
    return columns


def attribute_schema(fragment_schema: StructType) -> StructType:
    """The profile attribute columns of the fragments (everything but identityMap, dataset, ingested_at)."""
    return StructType([f for f in fragment_schema.fields if f.name not in FRAGMENT_SYSTEM_COLUMNS])


def profile_schema(fragment_schema: StructType) -> StructType:
    """The schema of ``unified_profiles`` for fragments of this schema (to compile segments before any job)."""
    return StructType(
        [
            StructField("person_id", StringType()),
            StructField("identityMap", fragment_schema["identityMap"].dataType),
            *attribute_schema(fragment_schema).fields,
            StructField("fragment_count", LongType()),
        ]
    )


def event_schema(events_schema: StructType | None) -> StructType | None:
    """The schema of the person events (``person_id`` + event columns), or None without events."""
    if events_schema is None:
        return None
    return StructType([StructField("person_id", StringType()), *events_schema.fields])


def merge_key(policy: MergePolicy, schema: StructType) -> Column:
    """A key whose minimum is the winning fragment (docs/configuration.md, merge policies).

    ``timestamp_ordered``: latest ``ingested_at``, then ``dataset`` ascending, then the fragment's primary
    ``(namespace, id)``. ``dataset_precedence``: earliest listed dataset, then latest ``ingested_at``, then the
    primary identity. Last, a hash of the fragment's whole row as stored (``schema``: the fragments' columns).
    """
    newest_first = -F.unix_micros(F.col("ingested_at"))
    # Last resort for fragments equal on every rule (e.g. one identity loaded twice in a batch): a 64-bit hash of
    # the whole row, so the result never depends on the order Spark sees them in. A hash, not the row itself:
    # the key is held once per merged leaf in the aggregation buffer.
    tie = [F.col("primary_namespace").alias("ns"), F.col("primary_id").alias("id"), row_hash(schema).alias("row")]
    if isinstance(policy, DatasetPrecedencePolicy):
        rank = F.array_position(F.array(*[F.lit(d) for d in policy.datasets]), F.col("dataset"))
        return F.struct(rank.alias("rank"), newest_first.alias("time"), *tie)
    return F.struct(newest_first.alias("time"), F.col("dataset").alias("dataset"), *tie)


def _has_map(data_type: DataType) -> bool:
    if isinstance(data_type, MapType):
        return True
    if isinstance(data_type, StructType):
        return any(_has_map(f.dataType) for f in data_type.fields)
    if isinstance(data_type, ArrayType):
        return _has_map(data_type.elementType)
    return False


def _hashable(column: Column, data_type: DataType) -> Column:
    """``column`` in a form ``xxhash64`` accepts (it rejects maps): a map as its entries, deeper maps as JSON."""
    if isinstance(data_type, MapType) and not (_has_map(data_type.keyType) or _has_map(data_type.valueType)):
        return F.map_entries(column)
    return F.to_json(column) if _has_map(data_type) else column


def row_hash(schema: StructType) -> Column:
    """xxHash64 of a whole row of ``schema`` (maps hashed as their entries): a compact, deterministic last
    tie-breaker, computed natively (no per-row JSON)."""
    return F.xxhash64(*[_hashable(F.col(f"`{f.name}`"), f.dataType) for f in schema.fields])


def used_fragments(fragments: DataFrame, policy: MergePolicy) -> DataFrame:
    """The fragments a policy uses: ``dataset_precedence`` ignores datasets it does not list."""
    if isinstance(policy, DatasetPrecedencePolicy):
        return fragments.where(F.col("dataset").isin(list(policy.datasets)))
    return fragments


#: The merge key column of :func:`keyed_fragments`.
MERGE_KEY = "__merge_key"


def keyed_fragments(fragments: DataFrame, policy: MergePolicy) -> DataFrame:
    """The fragments the policy uses, with what the merge reads and nothing else: ``primary_namespace,
    primary_id`` (the primary identity, fragments without a valid one dropped), ``__merge_key`` and the
    attribute columns.

    The key, with its hash of the whole row, is computed here from the fragment as stored, before persons are
    attached: ``identityMap``, ``dataset`` and ``ingested_at`` then do not travel through the join and the merge.
    """
    return with_primary_identity(used_fragments(fragments, policy)).select(
        "primary_namespace",
        "primary_id",
        merge_key(policy, fragments.schema).alias(MERGE_KEY),
        *[F.col(f"`{f.name}`") for f in attribute_schema(fragments.schema).fields],
    )


def merge_fragments(fragments: DataFrame) -> DataFrame:
    """One row per person: ``person_id``, ``fragment_count`` and the merged attribute columns.

    Args:
        fragments: :func:`keyed_fragments` with ``person_id`` (joined on the primary identity).
    """
    attributes = StructType(
        [
            f
            for f in fragments.schema.fields
            if f.name not in ("person_id", "primary_namespace", "primary_id", MERGE_KEY)
        ]
    )
    key = F.col(MERGE_KEY)
    leaves = _leaf_paths(attributes)
    merged = fragments.groupBy("person_id").agg(
        F.count(F.lit(1)).alias("fragment_count"),
        *[
            F.min_by(_column(path), F.when(_column(path).isNotNull(), key)).alias(_leaf_name(path))
            for path, _ in leaves
        ],
    )
    return merged.select("person_id", "fragment_count", *_rebuild(attributes))


def graph_identity_maps(clusters: DataFrame, namespaces: NamespacesConfig) -> DataFrame:
    """``person_id, identityMap`` with every identity of the person's graph; ``primary`` marks the
    highest-priority identity (lowest priority number, ties by namespace then id).

    One aggregation collects each person's identities; the map is built from the sorted list with higher-order
    functions (in two projections, so the best identity is found once per person).
    """
    lookup = NamespaceLookup(namespaces)
    collected = clusters.groupBy("person_id").agg(
        F.array_sort(F.collect_list(F.struct(F.col("namespace").alias("ns"), F.col("id").alias("id")))).alias(
            "_entries"
        )
    )
    with_best = collected.select("person_id", "_entries", best_entry(F.col("_entries"), lookup).alias("_best"))
    return with_best.select("person_id", entries_identity_map(F.col("_entries"), F.col("_best")).alias("identityMap"))


#: How :func:`event_key` starts for an event without ``_id`` (an ``_id`` that starts so could share its key).
ROW_KEY_PREFIX = "\u0000row:"


def event_key(events: DataFrame) -> Column:
    """The de-duplication key of an event: its ``_id``, or for an event without one, a hash of the whole row
    (such events are each kept once, never merged with each other)."""
    row = F.to_json(F.struct(*[F.col(f"`{c}`") for c in events.columns]))
    return F.coalesce(F.col("_id"), F.concat(F.lit(ROW_KEY_PREFIX), F.sha2(row, 256)))


def person_events(events: DataFrame, clusters: DataFrame) -> DataFrame:
    """Events with the ``person_id`` of their primary identity, de-duplicated by ``_id`` (the first by timestamp).

    Events without a valid identity are dropped first (the identity step quarantined them), so a duplicate whose
    earliest copy has no valid identity still counts once.
    """
    return person_events_of_primary(with_primary_identity(events), clusters)


def person_events_of_primary(events: DataFrame, clusters: DataFrame, *, copies: bool = True) -> DataFrame:
    """:func:`person_events` of events that carry their primary identity already (:func:`with_primary_identity`,
    e.g. materialised once for another use too); the result has the events' own columns and ``person_id``.

    ``copies=False`` says that no two rows of ``events`` share an :func:`event_key`: each event is then its own
    first copy and is attributed as it is, without the ordering (a hash of every whole row) and the aggregation of
    wide rows by key that de-duplication costs. ``clusters`` must then hold one row per identity, as
    ``identity_clusters`` does (the aggregation would also collapse repeated cluster rows).
    """
    plain = events.drop(*_PRIMARY)
    columns = [F.col(f"`{c}`") for c in plain.columns]
    attributed = events.join(_person_keys(clusters), on=_PRIMARY, how="inner").drop(*_PRIMARY)
    if not copies:
        return attributed.select(*columns, "person_id")
    first = attributed.groupBy(event_key(plain).alias("_key")).agg(
        F.min_by(F.struct(*columns, F.col("person_id")), F.struct("timestamp", row_hash(plain.schema))).alias("e")
    )
    return first.select("e.*")


def unified_profiles(
    fragments: DataFrame,
    events: DataFrame | None,
    clusters: DataFrame,
    policy: MergePolicy,
    namespaces: NamespacesConfig,
) -> DataFrame:
    """Unified profiles (docs/batch.md): ``person_id, identityMap, <merged attributes>, fragment_count``.

    A row for every person with at least one fragment used by the merge policy or at least one event.

    Args:
        fragments: fragments as of ``T``.
        events: events with ``person_id`` (:func:`person_events`), or None.
        clusters: ``identity_clusters``.
        policy: the merge policy.
        namespaces: namespace priorities (to flag each graph's primary identity).
    """
    keyed = keyed_fragments(fragments, policy).join(
        _person_keys(clusters), on=["primary_namespace", "primary_id"], how="inner"
    )
    merged = merge_fragments(keyed)
    if events is not None:  # persons with events only get a profile too (a full outer join: merged read once)
        merged = merged.join(events.select("person_id").distinct(), on="person_id", how="full_outer")
    attributes = [c for c in merged.columns if c not in ("person_id", "fragment_count")]
    return merged.join(graph_identity_maps(clusters, namespaces), on="person_id", how="left").select(
        "person_id",
        "identityMap",
        *[F.col(f"`{c}`") for c in attributes],
        F.coalesce(F.col("fragment_count"), F.lit(0)).cast("long").alias("fragment_count"),
    )


__all__ = [
    "PROFILE_SYSTEM_COLUMNS",
    "ROW_KEY_PREFIX",
    "attach_persons",
    "attribute_schema",
    "graph_identity_maps",
    "keyed_fragments",
    "merge_fragments",
    "person_events",
    "person_events_of_primary",
    "primary_identity",
    "unified_profiles",
    "used_fragments",
    "with_primary_identity",
]
