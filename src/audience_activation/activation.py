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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from . import tables
from .columns import (
    IDENTITY_MAP_TYPE,
    NAMESPACE_ALIASES,
    as_utc,
    empty_identity_map,
    identity_rows,
    timestamp_literal,
)
from .config import DestinationConfig, NamespacesConfig, RegionsConfig, Routing
from .membership import REALIZED

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


def accepted_namespaces(destination: DestinationConfig, namespaces: NamespacesConfig) -> list[str]:
    """The namespaces a destination's identity map can hold, highest priority first (lowest priority number,
    then code): its ``namespaces``, without ``Email`` when it hashes e-mails (they arrive as
    ``EMAIL_LC_SHA256``)."""
    accepted = set(destination.namespaces)
    if destination.hash_emails:
        accepted.discard(EMAIL)
    priorities = namespaces.priorities()
    return sorted(accepted, key=lambda ns: (priorities.get(ns, namespaces.unknown_priority), ns))


def _ids_of(identity_map: Column, namespace: str) -> Column:
    """The ids of ``namespace`` in an identity map (its aliases' too), as ``array<string>``; empty when none."""
    keys = [namespace, *[alias for alias, canonical in NAMESPACE_ALIASES.items() if canonical == namespace]]
    # ``list.id`` of an array of structs is the array of its ids: no higher-order function (docs/performance.md).
    lists = [F.coalesce(identity_map[key]["id"], F.array().cast("array<string>")) for key in keys]
    return lists[0] if len(lists) == 1 else F.concat(*lists)


def _merges_hashed_emails(destination: DestinationConfig, namespace: str) -> bool:
    """Whether the destination's ``namespace`` list also holds its hashed ``Email`` ids."""
    return destination.hash_emails and namespace == EMAIL_LC_SHA256


def _id_list(identity_map: Column, namespace: str, *, with_hashed_emails: bool) -> Column:
    """The sorted distinct non-null ids of ``namespace``; with ``with_hashed_emails``, the ``Email`` ids hashed
    (:func:`hash_email`) join the lower-cased ``EMAIL_LC_SHA256`` ids."""
    ids = _ids_of(identity_map, namespace)
    if with_hashed_emails:
        ids = F.concat(F.transform(_ids_of(identity_map, EMAIL), hash_email), F.transform(ids, F.lower))
    # sort_array, not array_sort (a higher-order function: its comparator is a lambda); array_except with a null
    # keeps each non-null id once (profiles hold valid identities only, so no id is null there anyway).
    return F.sort_array(F.array_except(ids, F.array(F.lit(None).cast("string"))))


def accepted_id_lists(
    identity_map: Column, destination: DestinationConfig, namespaces: NamespacesConfig
) -> list[tuple[str, Column]]:
    """Per namespace of :func:`accepted_namespaces` (in its order), the sorted distinct ids the destination gets.

    With ``hash_emails``, ``Email`` ids are hashed (:func:`hash_email`) into ``EMAIL_LC_SHA256`` with the
    existing ones, lower-cased so that the same hash sent in upper case is de-duplicated against the one computed
    here. The namespaces are known from the configuration, so each list is one plain expression over the map
    (no higher-order function over the namespaces).
    """
    return [
        (namespace, _id_list(identity_map, namespace, with_hashed_emails=_merges_hashed_emails(destination, namespace)))
        for namespace in accepted_namespaces(destination, namespaces)
    ]


def _flag_first(is_best: Column) -> Callable[[Column, Column], Column]:
    """``(id, index) -> struct(id, primary)``, primary for the first id of the best namespace."""
    return lambda identity, index: F.struct(identity.alias("id"), (is_best & (index == 0)).alias("primary"))


def id_lists_identity_map(lists: list[tuple[str, Column]]) -> Column:
    """The identity map of :func:`accepted_id_lists` (namespaces without ids left out, keys sorted); ``primary``
    marks the first id of the first namespace that has ids (the lists come highest priority first, ids sorted).

    Give column references for the lists (an earlier projection): each is read several times here.
    """
    entries = []
    none_before: Column = F.lit(True)
    for namespace, ids in lists:
        is_best = none_before & (F.size(ids) > 0)
        entries.append(
            (
                namespace,
                F.struct(
                    F.lit(namespace).alias("key"),
                    F.transform(ids, _flag_first(is_best)).alias("value"),
                ),
            )
        )
        none_before = none_before & (F.size(ids) == 0)
    in_key_order = [entry for _, entry in sorted(entries, key=lambda item: item[0])]
    if not in_key_order:
        return empty_identity_map()
    return F.map_from_entries(F.filter(F.array(*in_key_order), lambda e: F.size(e["value"]) > 0)).cast(
        IDENTITY_MAP_TYPE
    )


def accepted_identities(identity_map: Column, destination: DestinationConfig, namespaces: NamespacesConfig) -> Column:
    """The identities a destination accepts, as an identity map; ``primary`` marks the highest-priority one.

    With ``hash_emails``, ``Email`` identities become ``EMAIL_LC_SHA256`` (de-duplicated against existing ones).
    One expression, for single values and tests; :func:`current_members` computes the id lists in a projection
    of their own so that none is evaluated twice.
    """
    return id_lists_identity_map(accepted_id_lists(identity_map, destination, namespaces))


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

    def consent_ok(destination: DestinationConfig) -> Column:
        condition = consent.get(destination.id)
        # A missing value does not pass a consent condition.
        return F.lit(True) if condition is None else F.coalesce(condition, F.lit(False))

    # Two projections: the id lists first, then each destination's map reads them as columns (an inlined list
    # would be evaluated once per use). Destinations share lists: a namespace's list differs only where e-mails
    # are hashed into it, so each (namespace, hashed or not) list is computed once for all destinations.
    shared: dict[tuple[str, bool], str] = {}
    lists: dict[int, list[tuple[str, str]]] = {}
    for i, destination in enumerate(destinations):
        lists[i] = []
        for namespace in accepted_namespaces(destination, namespaces):
            variant = (namespace, _merges_hashed_emails(destination, namespace))
            name = shared.setdefault(variant, f"l{len(shared)}")
            lists[i].append((namespace, name))
    listed = profiles.select(
        "person_id",
        *[consent_ok(d).alias(f"c{i}") for i, d in enumerate(destinations)],
        *[
            _id_list(F.col("identityMap"), namespace, with_hashed_emails=hashed).alias(name)
            for (namespace, hashed), name in shared.items()
        ],
    )
    flags = listed.select(
        "person_id",
        *[
            F.struct(
                F.col(f"c{i}").alias("consent_ok"),
                id_lists_identity_map([(ns, F.col(name)) for ns, name in lists[i]]).alias("identities"),
            ).alias(f"d{i}")
            for i in lists
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


REGIONS_SCHEMA = "person_id string, region string"


def empty_regions(spark: SparkSession) -> DataFrame:
    """No person regions (``person_id, region``)."""
    return spark.createDataFrame([], REGIONS_SCHEMA)


def _captures(regions: DataFrame, evaluation_time: dt.datetime, edge_window_days: int) -> DataFrame:
    """``namespace, id, region, captured_at``: every capture of ``region_information`` within ``[T - window, T]``."""
    since = timestamp_literal(as_utc(evaluation_time) - dt.timedelta(days=edge_window_days))
    until = timestamp_literal(evaluation_time)
    return (
        identity_rows(regions, "userActivityRegions")
        .select("namespace", "id", F.explode("userActivityRegions").alias("region", "c"))
        .select("namespace", "id", "region", F.col("c.captureTimestamp").alias("captured_at"))
        .where((F.col("captured_at") >= since) & (F.col("captured_at") <= until))
    )


def edge_regions(
    clusters: DataFrame,
    previous_clusters: DataFrame | None,
    regions: DataFrame | None,
    evaluation_time: dt.datetime,
    edge_window_days: int,
    checkpoint: Callable[[DataFrame], DataFrame] | None = None,
) -> DataFrame:
    """``person_id, region``: the regions a change of a person goes to on the edge (:func:`route_changes`).

    The regions where an identity of the person's graph at ``T`` (``clusters``) was captured within
    ``[T - window, T]`` — or, for a ``person_id`` that no longer exists (none of ``clusters``), of its graph at the
    previous run (``previous_clusters``; None before the first run). Both graphs are matched against the
    captures together: one pass over ``region_information``. ``checkpoint`` (the streaming job's barrier)
    materialises the two graphs together first: a union loses its parts' broadcast marks, and a micro-batch's
    graphs are small enough to broadcast to the captures.

    Example:
        >>> edge_regions(clusters, previous_clusters, regions, T, 14)  # doctest: +SKIP
    """
    if regions is None:
        return empty_regions(clusters.sparkSession)
    graphs = clusters.select("namespace", "id", "person_id")
    if previous_clusters is not None:
        # A previous graph counts only for a person id that no longer exists (most persons keep theirs).
        vanished = previous_clusters.join(clusters.select("person_id"), on="person_id", how="left_anti")
        graphs = graphs.unionByName(vanished.select("namespace", "id", "person_id"))
    if checkpoint is not None:
        graphs = checkpoint(graphs)
    return (
        _captures(regions, evaluation_time, edge_window_days)
        .join(graphs, on=["namespace", "id"], how="inner")
        .select("person_id", "region")
        .distinct()
    )


@dataclass(frozen=True)
class ActivationResult:
    """What one run's activation produces."""

    changes: DataFrame  # destination_id, segment_id, person_id, status, reason, last_qualification_time, identityMap
    state: DataFrame  # STATE_SCHEMA
    exclusions: DataFrame  # destination_id, reason, persons
    state_changes: DataFrame  # STATE_SCHEMA + removed: the rows of ``state`` that changed (state_changes)


def compare_activations(
    current: DataFrame,
    previous_state: DataFrame | None,
    current_mappings: DataFrame,
    previous_mappings: DataFrame | None,
) -> DataFrame:
    """The activated sets at ``T`` side by side with the previous run's: one row per ``(destination, segment,
    person)`` in either, the input of :func:`activation_changes` and :func:`activation_state`.

    Returns:
        ``destination_id, segment_id, person_id``; the current view ``c_consent_ok, c_activated, c_identities``
        (null when not a mapped member at ``T``); the previous state ``p_consent_ok, p_activated,
        p_identities_sent`` (null when not in it); ``newly_mapped`` and ``mapped`` (the segment was not mapped
        to the destination at the previous run / is mapped at ``T``).
    """
    spark = current.sparkSession
    if previous_state is None:
        previous_state = spark.createDataFrame([], STATE_SCHEMA)
    if previous_mappings is None:
        previous_mappings = spark.createDataFrame([], MAPPING_SCHEMA)
    keys = ["destination_id", "segment_id", "person_id"]
    mapping_keys = ["destination_id", "segment_id"]
    newly_mapped = current_mappings.join(previous_mappings, on=mapping_keys, how="left_anti").select(
        *mapping_keys, F.lit(True).alias("newly_mapped")
    )
    still_mapped = current_mappings.select(*mapping_keys, F.lit(True).alias("mapped"))
    now = current.select(
        *keys,
        F.col("consent_ok").alias("c_consent_ok"),
        F.col("activated").alias("c_activated"),
        F.col("identities").alias("c_identities"),
    )
    before = previous_state.select(
        *keys,
        F.col("consent_ok").alias("p_consent_ok"),
        F.col("activated").alias("p_activated"),
        F.col("identities_sent").alias("p_identities_sent"),
    )
    return (
        now.join(before, on=keys, how="full_outer")
        .join(F.broadcast(newly_mapped), on=mapping_keys, how="left")
        .join(F.broadcast(still_mapped), on=mapping_keys, how="left")
    )


def _change_reasons() -> tuple[Column, Column]:
    """The reason of an added and of a removed row: the first that applies, in the documented order."""
    added = (
        F.when(F.coalesce(F.col("newly_mapped"), F.lit(False)), F.lit(BACKFILL))
        .when(~F.coalesce(F.col("was_realized"), F.lit(False)), F.lit(QUALIFIED))
        .when(F.col("p_consent_ok") == F.lit(False), F.lit(CONSENT_GRANTED))
        .otherwise(F.lit(IDENTITY_ADDED))
    )
    removed = (
        F.when(~F.coalesce(F.col("mapped"), F.lit(False)), F.lit(UNMAPPED))
        .when(F.col("c_activated").isNull(), F.lit(DISQUALIFIED))
        .when(~F.col("c_consent_ok"), F.lit(CONSENT_REVOKED))
        .otherwise(F.lit(IDENTITY_REMOVED))
    )
    return added, removed


def _now_on() -> Column:
    return F.coalesce(F.col("c_activated"), F.lit(False))


def _was_on() -> Column:
    return F.coalesce(F.col("p_activated"), F.lit(False))


def activation_changes(
    compared: DataFrame,
    previous_membership: DataFrame | None,
    membership: DataFrame,
    evaluation_time: dt.datetime,
) -> DataFrame:
    """Change rows of :func:`compare_activations`' rows whose activated flag differs, each with the first reason
    that applies (see :func:`diff_activations`), its ``last_qualification_time`` (the membership's, else ``T``)
    and the identities: those accepted at ``T`` for an added row, those sent when added for a removed one.

    Only the changed rows are joined with the memberships, so a run with few changes does little work here. The
    memberships are looked up **per person** (each person's segments in one row), so the change rows are
    partitioned by ``person_id`` once, and routing's join with each person's regions (also by ``person_id``)
    reuses that partitioning instead of shuffling the change rows, identities and all, a second time.
    """
    keys = ["destination_id", "segment_id", "person_id"]
    changed = compared.where(_now_on() != _was_on())
    if previous_membership is not None:
        was_realized = (
            previous_membership.where(F.col("status") == REALIZED)
            .groupBy("person_id")
            .agg(F.collect_set("segment_id").alias("_was_realized"))
        )
        changed = changed.join(was_realized, on="person_id", how="left").withColumn(
            "was_realized", F.when(F.array_contains("_was_realized", F.col("segment_id")), F.lit(True))
        )
    else:
        changed = changed.withColumn("was_realized", F.lit(None).cast("boolean"))
    times = membership.groupBy("person_id").agg(
        F.map_from_entries(F.collect_list(F.struct("segment_id", "last_qualification_time"))).alias("_lqt")
    )
    lqt = F.try_element_at(F.col("_lqt"), F.col("segment_id"))
    added_reason, removed_reason = _change_reasons()
    return changed.join(times, on="person_id", how="left").select(
        *keys,
        F.when(_now_on(), F.lit(REALIZED)).otherwise(F.lit("exited")).alias("status"),
        F.when(_now_on(), added_reason).otherwise(removed_reason).alias("reason"),
        F.coalesce(lqt, timestamp_literal(evaluation_time)).alias("last_qualification_time"),
        F.when(_now_on(), F.col("c_identities")).otherwise(F.col("p_identities_sent")).alias("identityMap"),
    )


def activation_state(compared: DataFrame) -> DataFrame:
    """``activation_state`` after the run: every mapped member at ``T`` with its consent and activated flags and,
    when activated, the identities sent when it was added (kept from the previous run while it stays)."""
    return compared.where(F.col("c_activated").isNotNull()).select(
        "destination_id",
        "segment_id",
        "person_id",
        F.col("c_consent_ok").alias("consent_ok"),
        F.col("c_activated").alias("activated"),
        F.when(F.col("c_activated"), F.when(_was_on(), F.col("p_identities_sent")).otherwise(F.col("c_identities")))
        .cast(IDENTITY_MAP_TYPE)
        .alias("identities_sent"),
    )


def state_changes(compared: DataFrame) -> DataFrame:
    """The rows of :func:`activation_state` that differ from the previous state's, with ``removed``: for each key
    whose row changes, its new row (``removed`` false), or its key alone (``removed`` true, no values) when it has
    no row any more. A filter of ``compared``, no comparison of rows: a key's row changes exactly when it is in
    only one of the two states or its ``consent_ok`` or ``activated`` flag differs, since its
    ``identities_sent`` are null while it is not activated and kept from the previous state while it stays
    activated (so they change only with the flag).
    """
    changed = ~F.col("c_activated").eqNullSafe(F.col("p_activated")) | ~F.col("c_consent_ok").eqNullSafe(
        F.col("p_consent_ok")
    )
    gone = F.col("c_activated").isNull()
    rows = activation_state(compared.where(changed & ~gone)).withColumn("removed", F.lit(False))
    keys = compared.where(changed & gone).select("destination_id", "segment_id", "person_id")
    removed = keys.select(
        *keys.columns,
        F.lit(None).cast("boolean").alias("consent_ok"),
        F.lit(None).cast("boolean").alias("activated"),
        F.lit(None).cast(IDENTITY_MAP_TYPE).alias("identities_sent"),
        F.lit(True).alias("removed"),
    )
    return rows.unionByName(removed)


def activation_exclusions(compared: DataFrame) -> DataFrame:
    """``destination_id, reason, persons``: mapped members at ``T`` not activated, by the first reason (consent
    failed, else no identity of the destination's namespaces)."""
    return (
        compared.where(~F.col("c_activated"))
        .select(
            "destination_id",
            "person_id",
            F.when(~F.col("c_consent_ok"), F.lit(EXCLUDED_CONSENT))
            .otherwise(F.lit(EXCLUDED_NO_IDENTITY))
            .alias("reason"),
        )
        .groupBy("destination_id", "reason")
        .agg(F.countDistinct("person_id").alias("persons"))
    )


def diff_activations(
    current: DataFrame,
    previous_state: DataFrame | None,
    previous_membership: DataFrame | None,
    membership: DataFrame,
    current_mappings: DataFrame,
    previous_mappings: DataFrame | None,
    evaluation_time: dt.datetime,
    barrier: Callable[[DataFrame], DataFrame] = lambda df: df,
) -> ActivationResult:
    """Changes of the activated sets against the previous run, each with the first reason that applies.

    Added: ``backfill`` (segment newly mapped, or the destination's first run), ``qualified`` (not realized at
    the previous run), ``consent_granted`` (failed consent then), ``identity_added``. Removed: ``unmapped``
    (segment no longer mapped), ``disqualified`` (no longer realized), ``consent_revoked``, ``identity_removed``.
    Added rows carry the accepted identities at ``T``, removed rows the identities sent when the person was added.

    The comparison (:func:`compare_activations`) goes through ``barrier`` once; changes, state and exclusions
    are read from it.
    """
    compared = barrier(compare_activations(current, previous_state, current_mappings, previous_mappings))
    return ActivationResult(
        changes=activation_changes(compared, previous_membership, membership, evaluation_time),
        state=activation_state(compared),
        exclusions=activation_exclusions(compared),
        state_changes=state_changes(compared),
    )


def route_changes(
    changes: DataFrame,
    destinations: Sequence[DestinationConfig],
    regions: DataFrame,
    regions_config: RegionsConfig,
) -> DataFrame:
    """Add ``route`` (``edge_streaming`` or ``hub_batch``), ``region`` and ``dcs_region_id`` to change rows.

    A change of a ``regional`` destination goes to edge streaming, once per region of its person in ``regions``
    (``person_id, region``: :func:`edge_regions`, the regions captured within the edge window for its graph);
    everything else goes to hub batch.

    One join of the changes with each person's sorted region list, then one row per region (edge) or one row
    without a region (hub): no second pass over the changes.
    """
    regional = [d.id for d in destinations if d.routing == Routing.regional]
    per_person = regions.groupBy("person_id").agg(F.array_sort(F.collect_set("region")).alias("_regions"))
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
    edge_of = F.when(is_regional, F.col("_regions"))
    return (
        changes.join(per_person, on="person_id", how="left")
        .select(*changes.columns, F.explode_outer(edge_of).alias("region"))
        .select(
            *changes.columns,
            F.when(F.col("region").isNotNull(), F.lit(EDGE)).otherwise(F.lit(HUB)).alias("route"),
            "region",
            dcs.cast("int").alias("dcs_region_id"),
        )
    )


__all__ = [
    "ActivationResult",
    "REASONS",
    "STATE_SCHEMA",
    "accepted_id_lists",
    "accepted_identities",
    "accepted_namespaces",
    "id_lists_identity_map",
    "current_members",
    "activation_changes",
    "activation_exclusions",
    "activation_state",
    "compare_activations",
    "state_changes",
    "diff_activations",
    "hash_email",
    "mappings_frame",
    "edge_regions",
    "route_changes",
]
