"""The identities of the inputs, flattened and validated: the first step of identity resolution
(:mod:`audience_activation.identity`, docs/identity.md).

1. :func:`identity_entries` gives each record (fragment, event, region row) its ``identityMap`` as a list of
   ``namespace, id, primary`` entries, each with the :func:`~audience_activation.namespaces.invalid_reason` that
   rejects it (null when valid), computed with native Column functions; :func:`record_entries` does it for every
   record table of the inputs as of ``T``, with the table's time and row key.
2. :func:`link_entries` validates both ends of every ``identity_graph`` link the same way.
3. :func:`invalid_identity_quarantine`: one quarantine row per distinct (table, namespace, id, reason), from the
   records' invalid identities and the links' invalid ends; a record with no valid identity at all
   (:func:`has_valid_identity`) is filed under its smallest identity with :data:`NO_VALID_IDENTITY`.
4. :func:`valid_identities`: every valid identity seen, once.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .as_of import AsOfInputs, first_capture
from .columns import identity_map_entries, normalize_namespace
from .namespaces import invalid_reason
from .schemas import EXPERIENCE_EVENTS, IDENTITY_GRAPH, PROFILE_FRAGMENTS, REGION_INFORMATION

#: The quarantine reason of a record none of whose identities is valid.
NO_VALID_IDENTITY = "no_valid_identity"


def identity_entries(
    records: DataFrame, source_table: str, time: Column, row_key: Column, dataset: Column | None = None
) -> DataFrame:
    """One row per record with all its identities, validated.

    Args:
        records: a table with an ``identityMap`` column.
        source_table: its logical name (goes to quarantine rows).
        time: the record's time (its co-occurrence links' ``last_seen_at``).
        row_key: the record's key for quarantine rows (``_id`` for events), or a null literal.
        dataset: the fragment's dataset (null for other tables; the run counts read it).

    Returns:
        ``source_table, row_key, time, dataset, entries`` where ``entries`` is an array of
        ``struct(namespace, id, primary, reason)`` (``reason`` null when the identity is valid).
    """
    return records.select(
        F.lit(source_table).alias("source_table"),
        row_key.cast("string").alias("row_key"),
        time.cast("timestamp").alias("time"),
        (F.lit(None) if dataset is None else dataset).cast("string").alias("dataset"),
        F.transform(
            identity_map_entries(F.col("identityMap")),
            lambda e: F.struct(
                e["namespace"].alias("namespace"),
                e["id"].alias("id"),
                e["primary"].alias("primary"),
                invalid_reason(e["namespace"], e["id"]).alias("reason"),
            ),
        ).alias("entries"),
    )


def has_valid_identity(entries: Column) -> Column:
    """True for a record of :func:`identity_entries` with at least one valid identity (``entries`` not null).

    Without a lambda: the entries' reasons as an array (a struct field of an array is read directly), sorted
    with nulls first, so a record has a valid identity exactly when its first sorted reason is null. Spark
    interprets a higher-order function such as ``exists`` element by element and turns off code generation for
    the projection around it; this form is compiled (docs/performance.md, fifth round).

    Example:
        >>> records.where(~has_valid_identity(F.col("entries")))  # doctest: +SKIP
    """
    return (F.size(entries) > 0) & F.element_at(F.sort_array(entries["reason"]), 1).isNull()


def record_entries(inputs: AsOfInputs) -> DataFrame:
    """:func:`identity_entries` of every record table present (regions too; they create no links)."""
    parts = []
    if inputs.fragments is not None:
        parts.append(
            identity_entries(inputs.fragments, PROFILE_FRAGMENTS, F.col("ingested_at"), F.lit(None), F.col("dataset"))
        )
    if inputs.events is not None:
        parts.append(identity_entries(inputs.events, EXPERIENCE_EVENTS, F.col("timestamp"), F.col("_id")))
    if inputs.regions is not None:
        parts.append(identity_entries(inputs.regions, REGION_INFORMATION, first_capture(), F.lit(None)))
    if not parts:
        raise ValueError("no input table with identities")
    return reduce(DataFrame.unionByName, parts)


def link_entries(links: DataFrame) -> DataFrame:
    """Explicit links with both ends normalised and validated."""
    src_ns, dst_ns = normalize_namespace(F.col("src_namespace")), normalize_namespace(F.col("dst_namespace"))
    return links.select(
        src_ns.alias("src_ns"),
        F.col("src_id"),
        dst_ns.alias("dst_ns"),
        F.col("dst_id"),
        F.col("last_seen_at"),
        invalid_reason(src_ns, F.col("src_id")).alias("src_reason"),
        invalid_reason(dst_ns, F.col("dst_id")).alias("dst_reason"),
    )


def invalid_identity_quarantine(records: DataFrame, links: DataFrame | None) -> DataFrame:
    """Quarantine rows for invalid identities and for records with no valid identity.

    One row per distinct ``(source_table, namespace, id, reason)``; ``row_key`` is the smallest key of the
    rows concerned (events' ``_id``).
    """
    invalid = records.select("source_table", "row_key", F.explode("entries").alias("e")).where(
        F.col("e.reason").isNotNull()
    )
    identity_rows = invalid.select(
        "source_table",
        F.col("e.namespace").alias("namespace"),
        F.col("e.id").alias("id"),
        "row_key",
        F.col("e.reason").alias("reason"),
    )
    # A record none of whose identities is valid is itself quarantined, under its first identity.
    first = F.array_min(
        F.transform("entries", lambda e: F.struct(e["namespace"].alias("namespace"), e["id"].alias("id")))
    )
    no_valid = records.where(~has_valid_identity(F.col("entries"))).select(
        "source_table",
        first["namespace"].alias("namespace"),
        first["id"].alias("id"),
        "row_key",
        F.lit(NO_VALID_IDENTITY).alias("reason"),
    )
    parts = [identity_rows, no_valid]
    if links is not None:
        for side in ("src", "dst"):
            parts.append(
                links.where(F.col(f"{side}_reason").isNotNull()).select(
                    F.lit(IDENTITY_GRAPH).alias("source_table"),
                    F.col(f"{side}_ns").alias("namespace"),
                    F.col(f"{side}_id").alias("id"),
                    F.lit(None).cast("string").alias("row_key"),
                    F.col(f"{side}_reason").alias("reason"),
                )
            )
    return (
        reduce(DataFrame.unionByName, parts)
        .groupBy("source_table", "namespace", "id", "reason")
        .agg(F.min("row_key").alias("row_key"))
        .select("source_table", "namespace", "id", "row_key", "reason")
    )


def valid_identities(records: DataFrame, links: DataFrame | None) -> DataFrame:
    """Every distinct valid ``(namespace, id)`` seen in any input table."""
    parts = [
        records.select(F.explode("entries").alias("e"))
        .where(F.col("e.reason").isNull())
        .select(F.col("e.namespace").alias("namespace"), F.col("e.id").alias("id"))
    ]
    if links is not None:
        for side in ("src", "dst"):
            parts.append(
                links.where(F.col(f"{side}_reason").isNull()).select(
                    F.col(f"{side}_ns").alias("namespace"), F.col(f"{side}_id").alias("id")
                )
            )
    return reduce(DataFrame.unionByName, parts).distinct()
