"""Column helpers shared by every stage: XDM types, identityMap entries, namespace codes, literals, type shapes.

This module imports nothing from the project, so any stage (identities, profiles, activation, the PQL
compiler, storage) can use it without pulling in another stage.

Example:
    >>> from pyspark.sql import functions as F
    >>> df.select(F.inline(identity_map_entries(F.col("identityMap"))))  # doctest: +SKIP
    +---------------+---+-------+
    |      namespace| id|primary|
    +---------------+---+-------+
    |EMAIL_LC_SHA256|9a…|  false|
    +---------------+---+-------+
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

#: XDM identity map: namespace code -> identities of that namespace.
IDENTITY_MAP_TYPE = MapType(
    StringType(),
    ArrayType(StructType([StructField("id", StringType()), StructField("primary", BooleanType())])),
)

#: XDM "data capture region" field: region code -> last capture time.
USER_ACTIVITY_REGIONS_TYPE = MapType(StringType(), StructType([StructField("captureTimestamp", TimestampType())]))

#: Namespace codes written in another case that mean a standard namespace.
NAMESPACE_ALIASES = {"Email_LC_SHA256": "EMAIL_LC_SHA256"}


def as_utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime; a naive one is taken as UTC (never as the machine's local time)."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def timestamp_literal(value: dt.datetime) -> Column:
    """``value`` as a Spark ``timestamp`` literal (naive values are UTC).

    Example:
        >>> df.where(F.col("ingested_at") <= timestamp_literal(T))  # doctest: +SKIP
    """
    return F.lit(as_utc(value)).cast("timestamp")


def literal_map(values: Mapping[str, object]) -> Column:
    """A map literal with the entries of ``values`` in key order (deterministic plans)."""
    return F.create_map(*[item for key, value in sorted(values.items()) for item in (F.lit(key), F.lit(value))])


def normalize_namespace(namespace: Column) -> Column:
    """The namespace code the rules use: ``Email_LC_SHA256`` is read as ``EMAIL_LC_SHA256``; others as written."""
    column = namespace
    for alias, canonical in NAMESPACE_ALIASES.items():
        column = F.when(namespace == alias, F.lit(canonical)).otherwise(column)
    return column


def empty_identity_map() -> Column:
    """An empty ``identityMap`` literal."""
    return F.create_map().cast(IDENTITY_MAP_TYPE)


def identity_map_entries(identity_map: Column) -> Column:
    """``identityMap`` as an array of ``struct(namespace, id, primary)``: namespaces normalised, ``primary``
    false when missing, a null map or a null list read as empty. Order: map order, then list order."""
    return F.flatten(
        F.transform(
            F.map_entries(F.coalesce(identity_map, empty_identity_map())),
            lambda entry: F.transform(
                F.coalesce(entry["value"], F.array()),
                lambda item: F.struct(
                    normalize_namespace(entry["key"]).alias("namespace"),
                    item["id"].alias("id"),
                    F.coalesce(item["primary"], F.lit(False)).alias("primary"),
                ),
            ),
        )
    )


def identity_rows(records: DataFrame, *columns: str) -> DataFrame:
    """One row per identity of each record's ``identityMap``: ``namespace, id, primary`` and ``columns``; the row
    form of :func:`identity_map_entries` (same normalisation, a null map or list gives no row).

    Two generators instead of a flattened array: higher-order functions are interpreted element by element and
    turn off Spark's code generation for the whole projection, whereas ``explode`` is compiled (3-4x faster on
    the demo events, docs/performance.md). Use it where the identities are wanted as rows anyway.

    Example:
        >>> identity_rows(regions, "userActivityRegions")  # doctest: +SKIP
    """
    by_namespace = records.select(*columns, F.explode("identityMap").alias("_namespace", "_ids"))
    return by_namespace.select(
        *columns, normalize_namespace(F.col("_namespace")).alias("namespace"), F.explode("_ids").alias("_item")
    ).select(
        *columns,
        "namespace",
        F.col("_item.id").alias("id"),
        F.coalesce(F.col("_item.primary"), F.lit(False)).alias("primary"),
    )


def kept_once(value: Column, keep: Callable[[Column], Column]) -> Column:
    """``value`` as a one-element array when ``keep(value)`` holds, else an empty array: give it to ``F.explode``
    to keep the rows whose computed ``value`` passes ``keep``.

    A generator instead of ``withColumn`` + ``where``: Spark pushes a filter below the projection that computes
    its column, so an expensive ``value`` (higher-order functions over identity lists) would be evaluated twice
    per row, once for the filter and once for the column; a generator's output cannot be filtered before it
    runs, so ``value`` is evaluated once (docs/performance.md, "Evaluated once").

    Example:
        >>> df.select("time", F.explode(kept_once(ids, lambda v: F.size(v) > 1)).alias("ids"))  # doctest: +SKIP
    """
    return F.filter(F.array(value), keep)


def type_shape(data_type: DataType) -> object:
    """A type's JSON without nullability and metadata, so only names and types are compared."""

    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {
                key: strip(value)
                for key, value in node.items()
                if key not in ("nullable", "containsNull", "valueContainsNull", "metadata")
            }
        if isinstance(node, list):
            return [strip(value) for value in node]
        return node

    return strip(data_type.jsonValue())


def _has_map(data_type: DataType) -> bool:
    if isinstance(data_type, MapType):
        return True
    if isinstance(data_type, ArrayType):
        return _has_map(data_type.elementType)
    if isinstance(data_type, StructType):
        return any(_has_map(f.dataType) for f in data_type.fields)
    return False


def comparable(column: Column, data_type: DataType, *, stored_order: bool = False) -> Column:
    """``column`` (of type ``data_type``) with every map, at any depth, replaced by its entries sorted by key:
    equal maps become equal arrays whatever order their entries were built in, and the value can take part in
    set operations and sorting, which Spark refuses for maps. Values without a map are returned as they are; a
    null struct or map stays null. ``stored_order``: the entries in the order the map holds them instead, so two
    maps are equal only when they also hold their entries in the same order (as ``to_json`` and the row hashes
    that break ties see them).

    Example:
        >>> df.select(comparable(F.col("identityMap"), IDENTITY_MAP_TYPE).alias("identityMap"))  # doctest: +SKIP
    """
    if not _has_map(data_type):
        return column

    def inner(value: Column, value_type: DataType) -> Column:
        return comparable(value, value_type, stored_order=stored_order)

    if isinstance(data_type, MapType):  # map keys cannot hold maps; the values are made comparable first
        entries = F.map_entries(F.transform_values(column, lambda _key, value: inner(value, data_type.valueType)))
        return entries if stored_order else F.array_sort(entries)
    if isinstance(data_type, ArrayType):
        return F.transform(column, lambda element: inner(element, data_type.elementType))
    assert isinstance(data_type, StructType)
    fields = [inner(column[f.name], f.dataType).alias(f.name) for f in data_type.fields]
    return F.when(column.isNotNull(), F.struct(*fields))


def _can_hold_the_same_rows(one: DataFrame, other: DataFrame) -> bool:
    """Whether two DataFrames have the same column names (each once) with the same types, nullability aside."""
    types = {f.name: f.dataType for f in one.schema.fields}
    if set(types) != set(other.columns) or not len(types) == len(one.columns) == len(other.columns):
        return False
    return all(type_shape(types[f.name]) == type_shape(f.dataType) for f in other.schema.fields)


def row_differences(before: DataFrame, after: DataFrame) -> DataFrame | None:
    """The rows whose number of copies differs between ``before`` and ``after`` (as multisets, maps compared by
    content, columns matched by name; null equals null, as in ``exceptAll``): one row per such distinct row,
    with ``_surplus``, its copies in ``before`` minus those in ``after``. Empty exactly when the two hold the
    same rows. None when they cannot: other column names, or another type for a column (nullability aside).
    Values are grouped as Spark groups them: ``-0.0`` equals ``0.0`` and ``NaN`` equals ``NaN``.

    One aggregation over both sides (``exceptAll`` both ways would aggregate twice).

    Example:
        >>> row_differences(previous_rows, new_rows).isEmpty()  # doctest: +SKIP
        True
    """
    if not _can_hold_the_same_rows(before, after):
        return None
    types = {f.name: f.dataType for f in before.schema.fields}
    left = before.select(*[comparable(F.col(c), types[c]).alias(c) for c in before.columns])
    right = after.select(*[comparable(F.col(c), types[c]).alias(c) for c in before.columns])
    both = left.withColumn("_surplus", F.lit(1)).unionByName(right.withColumn("_surplus", F.lit(-1)))
    counted = both.groupBy(*before.columns).agg(F.sum("_surplus").alias("_surplus"))
    return counted.where(F.col("_surplus") != 0)


def net_rows(
    added: DataFrame, removed: DataFrame, materialise: Callable[[DataFrame], DataFrame] = lambda df: df
) -> tuple[DataFrame, DataFrame] | None:
    """``(added, removed)`` without the rows both hold: the rows two versions of a table gained and lost, as
    multisets, once the rows a rewrite kept as they were are set aside. A row with ``a`` copies in ``added`` and
    ``r`` in ``removed`` is left ``a - r`` times in the first when ``a > r``, ``r - a`` times in the second when
    ``r > a``, and in neither when ``a == r`` (a compaction moves every row to a new file: both sides come back
    empty). Rows are compared as :func:`row_differences` compares them (columns by name, null equals null) but
    for maps, which are the same only with the same entries in the same order (:func:`comparable`'s
    ``stored_order``): a compaction copies them as they are, whereas a rewrite that only reorders a map's entries
    can change a tie the pipeline breaks by the row's JSON or hash, so it stays a change on both sides. A row
    left is stored as the added side holds it when it has a copy there, and each side keeps its columns' order.
    None when the two cannot hold the same rows (other column names, or another type for a column): the caller
    keeps them as they are.

    Two steps, so that the rows a rewrite kept — usually nearly all — are counted, not carried: the rows' keys
    alone (the compared form of every column) are counted over both sides, by a hash aggregation, and the keys whose
    count is not zero are passed to ``materialise`` (a lineage barrier); then both sides are read again and only
    the rows holding one of those keys (a semi-join, broadcast when they are few) go on to pick each key's row,
    which is passed to ``materialise`` too and read by the two results. After a compaction few or no keys are left.
    When many are (a large delete or update), the semi-join shuffles too and the second pass costs more.

    Example:
        >>> added, removed = net_rows(changes.added, changes.removed)  # doctest: +SKIP
    """
    if not _can_hold_the_same_rows(added, removed):
        return None
    types = {f.name: f.dataType for f in added.schema.fields}
    columns = added.columns
    key = F.struct(*[comparable(F.col(f"`{c}`"), types[c], stored_order=True).alias(c) for c in columns])

    def keyed(side: DataFrame, surplus: int) -> DataFrame:
        return side.select(key.alias("_key"), F.lit(surplus).alias("_surplus"))

    counted = materialise(
        keyed(added, 1)
        .unionByName(keyed(removed, -1))
        .groupBy("_key")
        .agg(F.sum("_surplus").alias("_surplus"))
        .where(F.col("_surplus") != 0)
    )

    def holding(side: DataFrame, surplus: int) -> DataFrame:
        return side.select(
            key.alias("_key"), F.struct(*[F.col(f"`{c}`") for c in columns]).alias("_row"), F.lit(surplus).alias("_one")
        ).join(counted.select("_key"), "_key", "left_semi")

    found = materialise(
        holding(added, 1)
        .unionByName(holding(removed, -1))
        .groupBy("_key")
        .agg(F.max_by("_row", "_one").alias("_row"))  # the added side's copy when it has one
        .join(counted, "_key")
        .select("_row", "_surplus")
    )

    def copies(keep: Column, count: Column) -> DataFrame:
        repeated = F.array_repeat(F.col("_row"), count.cast("int"))
        return found.where(keep).select(F.explode(repeated).alias("_row")).select("_row.*")

    return (
        copies(F.col("_surplus") > 0, F.col("_surplus")).select(*[F.col(f"`{c}`") for c in columns]),
        copies(F.col("_surplus") < 0, -F.col("_surplus")).select(*[F.col(f"`{c}`") for c in removed.columns]),
    )


__all__ = [
    "IDENTITY_MAP_TYPE",
    "NAMESPACE_ALIASES",
    "USER_ACTIVITY_REGIONS_TYPE",
    "as_utc",
    "comparable",
    "empty_identity_map",
    "identity_map_entries",
    "identity_rows",
    "kept_once",
    "literal_map",
    "net_rows",
    "normalize_namespace",
    "row_differences",
    "timestamp_literal",
    "type_shape",
]


def entries_identity_map(entries: Column, best: Column) -> Column:
    """An identity map from a sorted, distinct ``array<struct(ns, id)>``: one key per namespace in order, ids in
    order, ``primary`` true for the entry equal to ``best`` (a ``struct(..., ns, id)``).

    ``entries`` and ``best`` should be column references (computed by an earlier projection): higher-order
    functions are evaluated per element, so an expression given here would be re-evaluated for every element.
    """
    namespaces = F.array_distinct(F.transform(entries, lambda e: e["ns"]))
    return F.map_from_entries(
        F.transform(
            namespaces,
            lambda ns: F.struct(
                ns.alias("key"),
                F.transform(
                    F.filter(entries, lambda e: e["ns"] == ns),
                    lambda e: F.struct(
                        e["id"].alias("id"), ((e["ns"] == best["ns"]) & (e["id"] == best["id"])).alias("primary")
                    ),
                ).alias("value"),
            ),
        )
    ).cast(IDENTITY_MAP_TYPE)
