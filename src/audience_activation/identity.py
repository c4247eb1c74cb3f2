"""Identity resolution (docs/identity.md): from identity maps and links to ``identity_clusters``.

The steps, all DataFrame → DataFrame:

1. :mod:`audience_activation.identity_entries` flattens each record's ``identityMap`` (fragments, events,
   regions) as of ``T`` and validates every identity with native Column functions.
2. :func:`collect_links` gathers explicit links and (switchable) co-occurrence links, oriented so the
   smaller ``(namespace, id)`` is ``src``, without ``non_people``/``partner`` identities, de-duplicated
   keeping the newest ``last_seen_at``.
3. :func:`find_hubs` applies the hub guardrail (more than ``max_links_per_identity`` distinct neighbours).
4. :func:`connected_components` labels every identity with the smallest identity of its component, by
   alternating large-star / small-star rounds (Kiveris et al., SoCC 2014) with the lineage cut after every
   round by a caller-supplied barrier (a parquet write and re-read in the jobs).
5. :func:`resolve_components`: components with at most one identity per unique namespace and within the size
   limit are resolved in Spark directly (their person is the component); the others go through the
   plain-Python rules of :mod:`audience_activation.identity_rules` with ``applyInPandas``, one component per
   call, on the executors.
6. :func:`identity_clusters` gives every valid identity seen at ``T`` its ``person_id`` and ``graph_size``.

:func:`resolve_identities` chains them and also returns the ``quarantine`` rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from . import identity_rules as rules
from .as_of import AsOfInputs, as_of  # noqa: F401 - as_of re-exported (the identities job starts with it)
from .columns import kept_once
from .components import connected_components
from .config import IdentitySettings, NamespacesConfig
from .identity_entries import invalid_identity_quarantine, link_entries, record_entries, valid_identities
from .namespaces import NamespaceLookup, public_person_id
from .schemas import EXPERIENCE_EVENTS, IDENTITY_GRAPH, PROFILE_FRAGMENTS, REGION_INFORMATION

log = logging.getLogger(__name__)

#: A lineage barrier: returns a DataFrame with the same rows whose plan no longer depends on the input's.
Checkpoint = Callable[[DataFrame], DataFrame]


RESOLUTION_SOURCE_ORDER = (IDENTITY_GRAPH, PROFILE_FRAGMENTS, EXPERIENCE_EVENTS)

_RESOLVED_SCHEMA = "namespace string, id string, person_id string, graph_size int, evicted boolean"

#: Separates namespace and id in a node key; sorts below every other character, so the keys sort as
#: ``(namespace, id)`` pairs in binary order.
_KEY_SEPARATOR = "\u0000"


# -- step 2: links -------------------------------------------------------------------------------------------


def _source_rank(table: str) -> int:
    return RESOLUTION_SOURCE_ORDER.index(table)


def _record_identities(records: DataFrame, lookup: NamespaceLookup) -> DataFrame:
    """Per fragment or event with a time and two or more identities: ``time, source_rank`` and ``ids``, its
    distinct valid identities of linking namespaces as sorted :func:`node_key` strings.

    Strings, not ``(namespace, id)`` structs: Spark de-duplicates an array of strings with a hash set, an array
    of structs by comparing every pair of elements (hours for a record of 100,000 identities).
    """
    # A record with fewer than two identities cannot have two linking ones: skipped before any lambda runs
    # (most events carry one identity).
    candidates = (F.col("source_table") != REGION_INFORMATION) & F.col("time").isNotNull() & (F.size("entries") >= 2)
    return records.where(candidates).select(
        F.col("time"),
        F.when(F.col("source_table") == PROFILE_FRAGMENTS, F.lit(_source_rank(PROFILE_FRAGMENTS)))
        .otherwise(F.lit(_source_rank(EXPERIENCE_EVENTS)))
        .alias("source_rank"),
        linking_keys(F.col("entries"), lookup).alias("ids"),
    )


def linking_keys(entries: Column, lookup: NamespaceLookup) -> Column:
    """The distinct valid identities of linking namespaces among a record's ``entries``
    (:func:`~audience_activation.identity_entries.identity_entries`), as sorted :func:`node_key` strings: the
    identities its co-occurrence links join.

    Example:
        >>> records.where(F.size(linking_keys(F.col("entries"), lookup)) >= 2)  # doctest: +SKIP
    """
    return F.array_sort(
        F.array_distinct(
            F.transform(
                F.filter(entries, lambda e: e["reason"].isNull() & lookup.links(e["namespace"])),
                lambda e: node_key(e["namespace"], e["id"]),
            )
        )
    )


def identity_of_key(key: Column) -> Column:
    """``struct(namespace, id)`` of a :func:`node_key`."""
    parts = F.split(key, _KEY_SEPARATOR, 2)
    return F.struct(parts.getItem(0).alias("namespace"), parts.getItem(1).alias("id"))


def linking_identities(records: DataFrame, lookup: NamespaceLookup) -> DataFrame:
    """Records with at least two linking identities (the only ones that give co-occurrence links or make
    crowded hubs): ``time, source_rank, ids`` (see :func:`_record_identities`; the list is computed once per
    record, see :func:`columns.kept_once`)."""
    ids = _record_identities(records, lookup)
    return ids.select("time", "source_rank", F.explode(kept_once(F.col("ids"), lambda v: F.size(v) > 1)).alias("ids"))


def crowded_record_identities(
    records: DataFrame, lookup: NamespaceLookup, max_links_per_identity: int, linking: DataFrame | None = None
) -> DataFrame:
    """Identities of records with more than ``max_links_per_identity + 1`` linking identities:
    ``namespace, id, source_rank``.

    Co-occurrence links every identity of such a record to the ``k - 1 > max_links_per_identity`` others, so each
    of them is a hub whatever its other links: the guardrail is decided without building the record's
    ``k (k - 1) / 2`` pairs (12.5 million for a record of 5,000 identities), and the record contributes no link
    (all its identities' links are dropped as hub links). ``linking``: :func:`linking_identities` when already
    computed.
    """
    return (
        (linking if linking is not None else linking_identities(records, lookup))
        .where(F.size("ids") > max_links_per_identity + 1)
        .select(F.explode("ids").alias("key"), "source_rank")
        .select(identity_of_key(F.col("key")).alias("e"), "source_rank")
        .groupBy(F.col("e.namespace").alias("namespace"), F.col("e.id").alias("id"))
        .agg(F.min("source_rank").alias("source_rank"))
    )


def collect_links(
    records: DataFrame,
    links: DataFrame | None,
    lookup: NamespaceLookup,
    *,
    cooccurrence: bool = True,
    max_links_per_identity: int | None = None,
    linking: DataFrame | None = None,
) -> DataFrame:
    """Links between valid, linking identities: ``src_ns, src_id, dst_ns, dst_id, last_seen_at, source_rank``.

    ``src`` is the smaller ``(namespace, id)``; self-links are dropped; each pair appears once with its newest
    ``last_seen_at`` and the first source (identity_graph, profile_fragments, experience_events) it came from.
    With ``max_links_per_identity``, records with more linking identities than ``max_links_per_identity + 1``
    give no pairs: their identities are hubs (:func:`crowded_record_identities`), so at most
    ``(m + 1) m / 2`` pairs are built per record.
    """
    parts = []
    if links is not None:
        parts.append(
            links.where(F.col("src_reason").isNull() & F.col("dst_reason").isNull()).select(
                F.struct(F.col("src_ns").alias("namespace"), F.col("src_id").alias("id")).alias("a"),
                F.struct(F.col("dst_ns").alias("namespace"), F.col("dst_id").alias("id")).alias("b"),
                F.col("last_seen_at").alias("time"),
                F.lit(_source_rank(IDENTITY_GRAPH)).alias("source_rank"),
            )
        )
    if cooccurrence:
        linking = linking if linking is not None else linking_identities(records, lookup)
        if max_links_per_identity is not None:
            linking = linking.where(F.size("ids") <= max_links_per_identity + 1)
        # All pairs of one record's identities (bounded by the hub guardrail, see above).
        pairs = F.flatten(
            F.transform(
                "ids",
                lambda x, i: F.transform(
                    F.slice("ids", i + 2, F.greatest(F.size("ids"), F.lit(1))),
                    lambda y: F.struct(identity_of_key(x).alias("a"), identity_of_key(y).alias("b")),
                ),
            )
        )
        parts.append(
            linking.where(F.size("ids") > 1)
            .select("time", "source_rank", F.explode(pairs).alias("pair"))
            .select(F.col("pair.a").alias("a"), F.col("pair.b").alias("b"), "time", "source_rank")
        )
    if not parts:
        return records.sparkSession.createDataFrame(
            [], "src_ns string, src_id string, dst_ns string, dst_id string, last_seen_at timestamp, source_rank int"
        )
    oriented = reduce(DataFrame.unionByName, parts).select(
        F.least("a", "b").alias("src"), F.greatest("a", "b").alias("dst"), "time", "source_rank"
    )
    return (
        oriented.where(
            (F.col("src") != F.col("dst"))
            & lookup.links(F.col("src.namespace"))
            & lookup.links(F.col("dst.namespace"))
            & F.col("time").isNotNull()
        )
        .groupBy(
            F.col("src.namespace").alias("src_ns"),
            F.col("src.id").alias("src_id"),
            F.col("dst.namespace").alias("dst_ns"),
            F.col("dst.id").alias("dst_id"),
        )
        .agg(F.max("time").alias("last_seen_at"), F.min("source_rank").alias("source_rank"))
    )


# -- step 3: hub guardrail -------------------------------------------------------------------------------------


def _ends(links: DataFrame) -> DataFrame:
    """Each link twice, once per end: ``namespace, id, source_rank``."""
    return links.select(F.col("src_ns").alias("namespace"), F.col("src_id").alias("id"), "source_rank").unionByName(
        links.select(F.col("dst_ns").alias("namespace"), F.col("dst_id").alias("id"), "source_rank")
    )


def find_hubs(
    links: DataFrame,
    max_links_per_identity: int,
    crowded: DataFrame | None = None,
    known: DataFrame | None = None,
) -> DataFrame:
    """Identities with more than ``max_links_per_identity`` distinct neighbours: ``namespace, id, source_rank``.

    ``links`` holds each pair once, so an identity's link count is its number of distinct neighbours.
    ``crowded`` identities (:func:`crowded_record_identities`) are hubs whatever their count; their
    ``source_rank`` is the first source among their links and their crowded records. ``known`` identities
    (``namespace, id``: hubs of a larger input that ``links`` holds only part of, broadcast) are hubs whatever
    their count too, when ``links`` touch them.
    """
    ends = _ends(links).select("namespace", "id", "source_rank", F.lit(1).alias("link"), F.lit(False).alias("crowded"))
    if known is not None:
        flagged = F.broadcast(known.select("namespace", "id").distinct().withColumn("_known", F.lit(True)))
        ends = ends.join(flagged, on=["namespace", "id"], how="left").select(
            "namespace", "id", "source_rank", "link", F.coalesce("_known", "crowded").alias("crowded")
        )
    if crowded is not None:
        ends = ends.unionByName(
            crowded.select("namespace", "id", "source_rank", F.lit(0).alias("link"), F.lit(True).alias("crowded"))
        )
    return (
        ends.groupBy("namespace", "id")
        .agg(
            F.sum("link").alias("neighbours"),
            F.max("crowded").alias("crowded"),
            F.min("source_rank").alias("source_rank"),
        )
        .where((F.col("neighbours") > max_links_per_identity) | F.col("crowded"))
        .select("namespace", "id", "source_rank")
    )


def drop_hub_links(links: DataFrame, hubs: DataFrame) -> DataFrame:
    """Links not touching a hub (hubs are few: broadcast)."""
    hub_keys = F.broadcast(hubs.select("namespace", "id"))
    for side in ("src", "dst"):
        links = links.join(
            hub_keys.withColumnRenamed("namespace", f"{side}_ns").withColumnRenamed("id", f"{side}_id"),
            on=[f"{side}_ns", f"{side}_id"],
            how="left_anti",
        )
    return links


# -- step 4: connected components ---------------------------------------------------------------------------


def node_key(namespace: Column, identity: Column) -> Column:
    """A string key per identity whose binary order is the ``(namespace, id)`` order."""
    return F.concat(namespace, F.lit(_KEY_SEPARATOR), identity)


# -- step 5: persons per component ------------------------------------------------------------------------------


def _resolve_with_rules(
    ns_table: rules.NamespaceTable, max_identities_per_graph: int
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The per-component function for ``applyInPandas`` (runs on executors; stdlib rules only)."""

    def resolve(links: pd.DataFrame) -> pd.DataFrame:
        component = [
            rules.Link(row.src_ns, row.src_id, row.dst_ns, row.dst_id, row.last_seen_at)
            for row in links.itertuples(index=False)
        ]
        assignments, evictions = rules.resolve_component(component, ns_table, max_identities_per_graph)
        evicted = set(evictions)
        return pd.DataFrame(
            [(a.namespace, a.id, a.person_id, a.graph_size, (a.namespace, a.id) in evicted) for a in assignments],
            columns=["namespace", "id", "person_id", "graph_size", "evicted"],
        )

    return resolve


def resolve_components(
    links: DataFrame,
    nodes: DataFrame,
    lookup: NamespaceLookup,
    max_identities_per_graph: int,
    checkpoint: Checkpoint = lambda df: df,
) -> DataFrame:
    """Persons of every linked identity: ``namespace, id, person_id, graph_size, evicted``.

    Args:
        links: the links kept after the hub guardrail.
        nodes: ``component, namespace, id`` for every identity at an end of a link.
        lookup: namespace uniqueness and priorities.
        max_identities_per_graph: the graph size limit.

    A component with no two identities of one unique namespace and within the size limit is one graph: its
    person is its highest-priority identity, found in Spark by one aggregation per component. The others
    (conflicts or oversize) are resolved by :func:`identity_rules.resolve_component` per component with
    ``applyInPandas``; only their links go to Python.
    """
    unique_ns = F.when(lookup.unique(F.col("namespace")), F.col("namespace"))
    # Each node with its component's statistics: one window over the component (one shuffle and sort), not an
    # aggregation joined back to the nodes. Read twice (simple and complex components): materialised once.
    component = Window.partitionBy("component")
    size = F.count(F.lit(1)).over(component)
    one_per_unique_ns = F.count(unique_ns).over(component) == F.size(F.collect_set(unique_ns).over(component))
    labelled = checkpoint(
        nodes.select(
            "component",
            "namespace",
            "id",
            size.alias("size"),
            F.min(F.struct(lookup.priority(F.col("namespace")).alias("p"), "namespace", "id"))
            .over(component)
            .alias("best"),
            ((size <= max_identities_per_graph) & one_per_unique_ns).alias("simple"),
        )
    )
    simple = labelled.where("simple").select(
        "namespace",
        "id",
        F.concat(F.col("best.namespace"), F.lit(":"), F.col("best.id")).alias("person_id"),
        F.col("size").cast("int").alias("graph_size"),
        F.lit(False).alias("evicted"),
    )
    complex_nodes = labelled.where(~F.col("simple")).select(
        "component", F.col("namespace").alias("src_ns"), F.col("id").alias("src_id")
    )
    complex_links = links.join(complex_nodes, on=["src_ns", "src_id"], how="inner").select(
        "component", "src_ns", "src_id", "dst_ns", "dst_id", "last_seen_at"
    )
    resolved = complex_links.groupBy("component").applyInPandas(
        _resolve_with_rules(lookup.rules_table(), max_identities_per_graph), schema=_RESOLVED_SCHEMA
    )
    return simple.unionByName(resolved)


# -- step 6: outputs ---------------------------------------------------------------------------------------------


def identity_clusters(identities: DataFrame, resolved: DataFrame, lookup: NamespaceLookup) -> DataFrame:
    """One row per valid identity: its person, or itself as a single-identity person."""
    own = F.concat("namespace", F.lit(":"), "id")
    raw = F.when(F.col("evicted"), own).otherwise(F.coalesce("person_id", own))
    return identities.join(
        resolved.select("namespace", "id", "person_id", "graph_size", "evicted"), on=["namespace", "id"], how="left"
    ).select(
        "namespace",
        "id",
        public_person_id(raw, lookup).alias("person_id"),
        F.when(F.col("evicted"), F.lit(1))
        .otherwise(F.coalesce("graph_size", F.lit(1)))
        .cast("int")
        .alias("graph_size"),
    )


def _source_table(rank: Column) -> Column:
    column = F.lit(None).cast("string")
    for index, table in enumerate(RESOLUTION_SOURCE_ORDER):
        column = F.when(rank == index, F.lit(table)).otherwise(column)
    return column


@dataclass(frozen=True)
class IdentityResult:
    """What identity resolution produces."""

    clusters: DataFrame
    quarantine: DataFrame
    rounds: int
    #: :func:`record_entries` as materialised by the checkpoint (the run counts read it).
    records: DataFrame | None = None
    #: ``component, namespace, id`` of every linked identity: its connected component over the links kept after
    #: the hub guardrail, before the per-component rules (the streaming job's closure reads it).
    components: DataFrame | None = None
    #: ``namespace, id`` of the hubs (:func:`find_hubs`, materialised).
    hubs: DataFrame | None = None
    #: :func:`collect_links` (every pair once, before the hub guardrail; materialised): the streaming job reads
    #: the affected identities' neighbour counts off it (:func:`audience_activation.settled.settled_rows`).
    links: DataFrame | None = None


def resolve_identities(
    inputs: AsOfInputs,
    namespaces: NamespacesConfig,
    settings: IdentitySettings,
    checkpoint: Checkpoint,
    known_hubs: DataFrame | None = None,
) -> IdentityResult:
    """Identity resolution end to end: ``identity_clusters`` and the identity ``quarantine`` rows.

    Args:
        inputs: the input tables as of ``T`` (see :func:`as_of`); absent tables are ``None``.
        namespaces: namespace types, uniqueness and priorities.
        settings: limits and the co-occurrence switch.
        checkpoint: the lineage barrier used between connected-components rounds.
        known_hubs: ``namespace, id`` of identities known to be hubs of a larger input that ``inputs`` is a part
            of (the streaming job's part of the inputs): hubs here whatever their count in ``inputs``
            (:func:`find_hubs`).

    Returns:
        ``clusters`` (``namespace, id, person_id, graph_size``), ``quarantine``
        (``source_table, namespace, id, row_key, reason``) and the number of CC rounds.
    """
    lookup = NamespaceLookup(namespaces)
    records = checkpoint(record_entries(inputs))
    # The explicit links are read by the links, the quarantine and the identities: materialised once.
    explicit = None if inputs.links is None else checkpoint(link_entries(inputs.links))
    limit = settings.max_links_per_identity
    # Records with two or more linking identities, read by the links and by the crowded-record guardrail.
    linking = checkpoint(linking_identities(records, lookup)) if settings.cooccurrence_links else None
    links = checkpoint(
        collect_links(
            records,
            explicit,
            lookup,
            cooccurrence=settings.cooccurrence_links,
            max_links_per_identity=limit,
            linking=linking,
        )
    )
    crowded = crowded_record_identities(records, lookup, limit, linking) if linking is not None else None
    hubs = checkpoint(find_hubs(links, limit, crowded, known_hubs))
    kept = drop_hub_links(links, hubs)
    components = connected_components(
        kept.select(
            node_key(F.col("src_ns"), F.col("src_id")).alias("u"), node_key(F.col("dst_ns"), F.col("dst_id")).alias("v")
        ),
        checkpoint,
    )
    node = F.split(F.col("node"), _KEY_SEPARATOR, 2)
    nodes = components.labels.select("component", node.getItem(0).alias("namespace"), node.getItem(1).alias("id"))
    resolved = checkpoint(resolve_components(kept, nodes, lookup, settings.max_identities_per_graph, checkpoint))
    clusters = identity_clusters(valid_identities(records, explicit), resolved, lookup)
    # The first source of each evicted identity's links: the link ends are narrowed to the evicted identities
    # (usually few, so broadcast by adaptive execution) before they are aggregated.
    evicted = resolved.where("evicted").select("namespace", "id")
    evictions = (
        _ends(kept)
        .join(evicted, on=["namespace", "id"], how="left_semi")
        .groupBy("namespace", "id")
        .agg(F.min("source_rank").alias("source_rank"))
    )
    quarantine = reduce(
        DataFrame.unionByName,
        [
            invalid_identity_quarantine(records, explicit),
            *([inputs.undated] if inputs.undated is not None else []),
            hubs.select(
                _source_table(F.col("source_rank")).alias("source_table"),
                "namespace",
                "id",
                F.lit(None).cast("string").alias("row_key"),
                F.lit(rules.HUB_IDENTITY).alias("reason"),
            ),
            evictions.select(
                _source_table(F.col("source_rank")).alias("source_table"),
                "namespace",
                "id",
                F.lit(None).cast("string").alias("row_key"),
                F.lit(rules.GRAPH_SIZE_EVICTION).alias("reason"),
            ),
        ],
    )
    # One row per distinct (source table, identity, reason); the smallest row key stands for the rest.
    quarantine = (
        quarantine.groupBy("source_table", "namespace", "id", "reason")
        .agg(F.min("row_key").alias("row_key"))
        .select("source_table", "namespace", "id", "row_key", "reason")
    )
    return IdentityResult(
        clusters=clusters,
        quarantine=quarantine,
        rounds=components.rounds,
        records=records,
        components=nodes,
        hubs=hubs.select("namespace", "id"),
        links=links,
    )
