"""Activation: per destination, who is activated, what changed since the previous run and where it goes (docs/batch.md).

A person is *activated* for ``(destination, segment)`` when realized in the mapped segment, passing the
destination's consent condition, and holding at least one identity of the destination's namespaces (after
optional email hashing). Each run diffs the activated set against the destination's previous run and emits
change rows with a reason, routed to the edge-streaming output (one row per region captured within the edge
window) or the hub-batch output.

All functions are DataFrame → DataFrame; the job (:mod:`audience_activation.app`) reads and writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from . import tables
from .columns import IDENTITY_MAP_TYPE, as_utc, identity_map_entries, timestamp_literal
from .config import DestinationConfig, NamespacesConfig, RegionsConfig, Routing
from .membership import REALIZED
from .namespaces import NamespaceLookup

EMAIL = "Email"
EMAIL_LC_SHA256 = "EMAIL_LC_SHA256"

QUALIFIED = "qualified"
DISQUALIFIED = "disqualified"
CONSENT_GRANTED = "consent_granted"
CONSENT_REVOKED = "consent_revoked"
IDENTITY_ADDED = "identity_added"
IDENTITY_REMOVED = "identity_removed"
BACKFILL = "backfill"
UNMAPPED = "unmapped"
REASONS = (
    QUALIFIED,
    DISQUALIFIED,
    CONSENT_GRANTED,
    CONSENT_REVOKED,
    IDENTITY_ADDED,
    IDENTITY_REMOVED,
    BACKFILL,
    UNMAPPED,
)

EDGE = "edge_streaming"
HUB = "hub_batch"

EXCLUDED_CONSENT = "consent"
EXCLUDED_NO_IDENTITY = "no_matching_identity"

STATE_SCHEMA = tables.ACTIVATION_STATE.schema
MAPPING_SCHEMA = "destination_id string, segment_id string"


def hash_email(value: Column) -> Column:
    """SHA-256 hex of the trimmed, lower-cased email (the ``EMAIL_LC_SHA256`` normalisation)."""
    return F.sha2(F.lower(F.regexp_replace(value, r"^\s+|\s+$", "")), 256)


def accepted_identities(identity_map: Column, destination: DestinationConfig, lookup: NamespaceLookup) -> Column:
    """The identities a destination accepts, as an identity map; ``primary`` marks the highest-priority one.

    With ``hash_emails``, ``Email`` identities become ``EMAIL_LC_SHA256`` (de-duplicated against existing ones).
    """
    entries = F.transform(
        identity_map_entries(identity_map), lambda e: F.struct(e["namespace"].alias("ns"), e["id"].alias("id"))
    )
    if destination.hash_emails:
        # Hashes are lower-case hex; existing EMAIL_LC_SHA256 ids are lower-cased so the same hash sent in upper
        # case is de-duplicated against the one computed here.
        entries = F.transform(
            entries,
            lambda e: (
                F.when(e["ns"] == EMAIL, F.struct(F.lit(EMAIL_LC_SHA256).alias("ns"), hash_email(e["id"]).alias("id")))
                .when(e["ns"] == EMAIL_LC_SHA256, F.struct(e["ns"].alias("ns"), F.lower(e["id"]).alias("id")))
                .otherwise(e)
            ),
        )
    accepted = sorted(set(destination.namespaces))
    kept = F.array_distinct(F.filter(entries, lambda e: e["ns"].isin(accepted)))
    best = F.array_min(
        F.transform(
            kept, lambda e: F.struct(lookup.priority(e["ns"]).alias("p"), e["ns"].alias("ns"), e["id"].alias("id"))
        )
    )
    namespaces = F.array_sort(F.array_distinct(F.transform(kept, lambda e: e["ns"])))
    return F.map_from_entries(
        F.transform(
            namespaces,
            lambda ns: F.struct(
                ns.alias("key"),
                F.array_sort(
                    F.transform(
                        F.filter(kept, lambda e: e["ns"] == ns),
                        lambda e: F.struct(
                            e["id"].alias("id"), ((e["ns"] == best["ns"]) & (e["id"] == best["id"])).alias("primary")
                        ),
                    )
                ).alias("value"),
            ),
        )
    ).cast(IDENTITY_MAP_TYPE)


def mappings_frame(spark: SparkSession, destinations: Sequence[DestinationConfig]) -> DataFrame:
    """``destination_id, segment_id`` for every mapped segment."""
    rows = [(d.id, s) for d in destinations for s in d.segments]
    return spark.createDataFrame(rows, MAPPING_SCHEMA)


def current_members(
    membership: DataFrame,
    profiles: DataFrame,
    destinations: Sequence[DestinationConfig],
    consent: Mapping[str, Column | None],
    namespaces: NamespacesConfig,
) -> DataFrame:
    """Realized members of every mapped segment with the destination's view of them.

    Returns:
        ``destination_id, segment_id, person_id, consent_ok, identities, activated``.

    Args:
        membership: the membership state after this run.
        profiles: unified profiles (``person_id``, ``identityMap`` and the attributes consent conditions read).
        destinations: the configured destinations.
        consent: destination id -> compiled consent condition over the profile (None: no condition).
        namespaces: namespace priorities (for each map's primary identity).
    """
    spark = membership.sparkSession
    lookup = NamespaceLookup(namespaces)

    def consent_ok(destination: DestinationConfig) -> Column:
        condition = consent.get(destination.id)
        # A missing value does not pass a consent condition.
        return F.lit(True) if condition is None else F.coalesce(condition, F.lit(False))

    flags = profiles.select(
        "person_id",
        *[
            F.struct(
                consent_ok(d).alias("consent_ok"),
                accepted_identities(F.col("identityMap"), d, lookup).alias("identities"),
            ).alias(f"d{index}")
            for index, d in enumerate(destinations)
        ],
    )
    mapped = F.broadcast(mappings_frame(spark, destinations))
    members = (
        membership.where(F.col("status") == REALIZED)
        .select("person_id", "segment_id")
        .join(mapped, on="segment_id", how="inner")
    )
    view: Column = F.lit(None)
    for index, destination in enumerate(destinations):
        chosen = F.col(f"d{index}")
        is_it = F.col("destination_id") == destination.id
        view = F.when(is_it, chosen) if index == 0 else view.when(is_it, chosen)
    joined = members.join(flags, on="person_id", how="inner").select(
        "destination_id", "segment_id", "person_id", view.alias("v")
    )
    return joined.select(
        "destination_id",
        "segment_id",
        "person_id",
        F.coalesce(F.col("v.consent_ok"), F.lit(False)).alias("consent_ok"),
        F.col("v.identities").alias("identities"),
    ).withColumn("activated", F.col("consent_ok") & (F.size("identities") > 0))


REGIONS_SCHEMA = "person_id string, region string, captured_at timestamp"


def empty_regions(spark: SparkSession) -> DataFrame:
    """No person regions (``person_id, region, captured_at``)."""
    return spark.createDataFrame([], REGIONS_SCHEMA)


def person_regions(
    clusters: DataFrame,
    regions: DataFrame | None,
    evaluation_time: dt.datetime,
    edge_window_days: int,
) -> DataFrame:
    """``person_id, region, captured_at``: the regions where any identity of the person's graph was captured
    within ``[T - window, T]``, each with its latest capture."""
    if regions is None:
        return empty_regions(clusters.sparkSession)
    since = timestamp_literal(as_utc(evaluation_time) - dt.timedelta(days=edge_window_days))
    until = timestamp_literal(evaluation_time)
    captures = (
        regions.select(F.explode(identity_map_entries(F.col("identityMap"))).alias("i"), "userActivityRegions")
        .select(
            F.col("i.namespace").alias("namespace"),
            F.col("i.id").alias("id"),
            F.explode("userActivityRegions").alias("region", "c"),
        )
        .select("namespace", "id", "region", F.col("c.captureTimestamp").alias("captured_at"))
        .where((F.col("captured_at") >= since) & (F.col("captured_at") <= until))
    )
    return (
        captures.join(clusters.select("namespace", "id", "person_id"), on=["namespace", "id"], how="inner")
        .groupBy("person_id", "region")
        .agg(F.max("captured_at").alias("captured_at"))
    )


@dataclass(frozen=True)
class ActivationResult:
    """What one run's activation produces."""

    changes: DataFrame  # destination_id, segment_id, person_id, status, reason, last_qualification_time, identityMap
    state: DataFrame  # STATE_SCHEMA
    exclusions: DataFrame  # destination_id, reason, persons


def _with_previous_flags(
    joined: DataFrame,
    current_mappings: DataFrame,
    previous_mappings: DataFrame,
    previous_membership: DataFrame | None,
) -> DataFrame:
    """Add ``newly_mapped``, ``mapped`` (mapped at ``T``) and ``was_realized`` (at the previous run) flags."""
    newly_mapped = current_mappings.join(
        previous_mappings, on=["destination_id", "segment_id"], how="left_anti"
    ).select("destination_id", "segment_id", F.lit(True).alias("newly_mapped"))
    still_mapped = current_mappings.select("destination_id", "segment_id", F.lit(True).alias("mapped"))
    was_realized = (
        (
            previous_membership
            if previous_membership is not None
            else joined.sparkSession.createDataFrame([], "person_id string, segment_id string, status string")
        )
        .where(F.col("status") == REALIZED)
        .select("person_id", "segment_id", F.lit(True).alias("was_realized"))
    )
    return (
        joined.join(F.broadcast(newly_mapped), on=["destination_id", "segment_id"], how="left")
        .join(F.broadcast(still_mapped), on=["destination_id", "segment_id"], how="left")
        .join(was_realized, on=["person_id", "segment_id"], how="left")
    )


def _change_reasons() -> tuple[Column, Column]:
    """The reason of an added and of a removed row: the first that applies, in the documented order."""
    added = (
        F.when(F.coalesce(F.col("newly_mapped"), F.lit(False)), F.lit(BACKFILL))
        .when(~F.coalesce(F.col("was_realized"), F.lit(False)), F.lit(QUALIFIED))
        .when(F.col("p.consent_ok") == F.lit(False), F.lit(CONSENT_GRANTED))
        .otherwise(F.lit(IDENTITY_ADDED))
    )
    removed = (
        F.when(~F.coalesce(F.col("mapped"), F.lit(False)), F.lit(UNMAPPED))
        .when(F.col("c.activated").isNull(), F.lit(DISQUALIFIED))
        .when(~F.col("c.consent_ok"), F.lit(CONSENT_REVOKED))
        .otherwise(F.lit(IDENTITY_REMOVED))
    )
    return added, removed


def diff_activations(
    current: DataFrame,
    previous_state: DataFrame | None,
    previous_membership: DataFrame | None,
    membership: DataFrame,
    current_mappings: DataFrame,
    previous_mappings: DataFrame | None,
    evaluation_time: dt.datetime,
) -> ActivationResult:
    """Changes of the activated sets against the previous run, each with the first reason that applies.

    Added: ``backfill`` (segment newly mapped, or the destination's first run), ``qualified`` (not realized at
    the previous run), ``consent_granted`` (failed consent then), ``identity_added``. Removed: ``unmapped``
    (segment no longer mapped), ``disqualified`` (no longer realized), ``consent_revoked``, ``identity_removed``.
    Added rows carry the accepted identities at ``T``, removed rows the identities sent when the person was added.
    """
    spark = current.sparkSession
    t = timestamp_literal(evaluation_time)
    if previous_state is None:
        previous_state = spark.createDataFrame([], STATE_SCHEMA)
    if previous_mappings is None:
        previous_mappings = spark.createDataFrame([], MAPPING_SCHEMA)
    keys = ["destination_id", "segment_id", "person_id"]
    joined = current.alias("c").join(previous_state.alias("p"), on=keys, how="full_outer")
    now_on = F.coalesce(F.col("c.activated"), F.lit(False))
    was_on = F.coalesce(F.col("p.activated"), F.lit(False))

    flagged = _with_previous_flags(joined, current_mappings, previous_mappings, previous_membership)
    added_reason, removed_reason = _change_reasons()
    changes = flagged.where(now_on != was_on).select(
        *keys,
        F.when(now_on, F.lit(REALIZED)).otherwise(F.lit("exited")).alias("status"),
        F.when(now_on, added_reason).otherwise(removed_reason).alias("reason"),
        F.when(now_on, F.col("c.identities")).otherwise(F.col("p.identities_sent")).alias("identityMap"),
    )
    lqt = membership.select("person_id", "segment_id", F.col("last_qualification_time"))
    changes = changes.join(lqt, on=["person_id", "segment_id"], how="left").select(
        *keys,
        "status",
        "reason",
        F.coalesce("last_qualification_time", t).alias("last_qualification_time"),
        "identityMap",
    )
    state = joined.where(F.col("c.activated").isNotNull()).select(
        *keys,
        F.col("c.consent_ok").alias("consent_ok"),
        F.col("c.activated").alias("activated"),
        F.when(F.col("c.activated"), F.when(was_on, F.col("p.identities_sent")).otherwise(F.col("c.identities")))
        .cast(IDENTITY_MAP_TYPE)
        .alias("identities_sent"),
    )
    exclusions = (
        current.where(~F.col("activated"))
        .select(
            "destination_id",
            "person_id",
            F.when(~F.col("consent_ok"), F.lit(EXCLUDED_CONSENT))
            .otherwise(F.lit(EXCLUDED_NO_IDENTITY))
            .alias("reason"),
        )
        .groupBy("destination_id", "reason")
        .agg(F.countDistinct("person_id").alias("persons"))
    )
    return ActivationResult(changes=changes, state=state, exclusions=exclusions)


def route_changes(
    changes: DataFrame,
    destinations: Sequence[DestinationConfig],
    current_regions: DataFrame,
    previous_regions: DataFrame,
    current_persons: DataFrame,
    regions_config: RegionsConfig,
) -> DataFrame:
    """Add ``route`` (``edge_streaming`` or ``hub_batch``), ``region`` and ``dcs_region_id`` to change rows.

    A change of a ``regional`` destination goes to edge streaming, once per region captured within the edge
    window for any identity of the person's graph at ``T`` (``current_regions``) — or, for an exit of a
    ``person_id`` that no longer exists (not in ``current_persons``), of its graph at the previous run
    (``previous_regions``). Everything else goes to hub batch.
    """
    regional = [d.id for d in destinations if d.routing == Routing.regional]
    known = current_persons.select("person_id").distinct()
    gone_regions = previous_regions.join(known, on="person_id", how="left_anti")
    regions = current_regions.unionByName(gone_regions)
    codes = regions_config.regions
    dcs = (
        F.element_at(
            F.create_map(*[item for code, number in sorted(codes.items()) for item in (F.lit(code), F.lit(number))]),
            F.col("region"),
        )
        if codes
        else F.lit(None)
    )
    is_regional = F.col("destination_id").isin(regional) if regional else F.lit(False)
    edge = (
        changes.where(is_regional)
        .join(regions.select("person_id", "region"), on="person_id", how="inner")
        .select(*changes.columns, F.lit(EDGE).alias("route"), "region", dcs.cast("int").alias("dcs_region_id"))
    )
    hub = changes.join(
        edge.select("destination_id", "segment_id", "person_id").distinct(),
        on=["destination_id", "segment_id", "person_id"],
        how="left_anti",
    ).select(
        *changes.columns,
        F.lit(HUB).alias("route"),
        F.lit(None).cast("string").alias("region"),
        F.lit(None).cast("int").alias("dcs_region_id"),
    )
    return edge.unionByName(hub)


__all__ = [
    "ActivationResult",
    "REASONS",
    "STATE_SCHEMA",
    "accepted_identities",
    "current_members",
    "diff_activations",
    "hash_email",
    "mappings_frame",
    "person_regions",
    "route_changes",
]
