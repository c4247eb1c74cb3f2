"""Settled persons: new rows that only re-state a person's links change no person (rule 9 of
:mod:`audience_activation.affected`; docs/streaming.md, "Settled persons").

Most events and fragments a stream sees carry identities that already co-occurred — a cookie and the login it
was seen with yesterday — and many links it sees were seen before. With co-occurrence links on, each such record
has two linking identities, and each link two ends, and would seed a resolution of its person (rule 1 of
:mod:`audience_activation.affected`). The rules, in the order a micro-batch applies them:

1. **Settled** (:func:`settled_rows`). A person a resolution found is settled when it has at least two
   identities, they form one connected component (after the hub guardrail) that holds no other identity — one
   component, one person: no unique-namespace replay split it and no eviction cut it — and every identity ``i``
   of it has ``outside(i) + size - 1 <= max_links_per_identity``, where ``outside(i)`` counts its distinct
   neighbours (before the guardrail) outside the person (the hubs its links reach) and ``size`` is the
   person's ``graph_size``. The resolution must hold every link of the person's identities (the closed set of
   :func:`audience_activation.affected.resolve_affected` does).
2. **Re-stating rows** (:func:`restating`). A new fragment or event whose linking identities all belong to one
   settled person of the previous clusters, or a new link whose two ends (valid, of linking namespaces) do,
   changes nothing: its links join identities of one component (the component stays as it is); no identity can
   cross the hub limit, even linked to every other identity of its person (the bound of rule 1), and the record
   is not crowded (it has at most ``size <= max_links_per_identity + 1`` linking identities); a component
   without a unique-namespace conflict and within the size limit is one person whatever its links' times and
   sources, so its ``person_id`` (the best identity) and ``graph_size`` stay. Such a row only revisits its
   person (rule 7 of ``affected``) instead of seeding a resolution; a record's other identities are treated as
   any record's (an identity the clusters do not hold seeds).
3. **Still true later.** While the inputs only gain rows and ``T`` moves forward, a settled person stays
   settled until a row adds a neighbour outside it or a new identity: such a row holds one of its identities
   and seeds its resolution (or is one of rule 2, which adds neither). Rows re-stating it add neighbours inside
   it only, which rule 1's bound already counts.
4. **Replaced by each resolution** (:func:`settled_after`): the facts of every person resolved again are
   dropped (the closed set holds whole previous persons) and the settled persons among the new ones added.
   Any subset of the settled persons gives the same results (an identity not known to be settled is resolved
   as before), so a stream may forget them at any time: a running stream keeps them in memory between
   micro-batches under the conditions of the known hubs (:mod:`audience_activation.app.known_hubs`), and
   starts without them.

Pure: DataFrames in, DataFrames out.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .config import IdentitySettings
from .identity import IdentityResult, identity_of_key

#: A lineage barrier (see :class:`audience_activation.pipeline.Barrier`).
Checkpoint = Callable[[DataFrame], DataFrame]

_KEY = ["namespace", "id"]


def restating(linking: DataFrame, settled: DataFrame) -> DataFrame:
    """The lists of linking identities (``_linking``: :func:`audience_activation.identity.linking_keys` of new
    records, distinct) that all belong to one settled person (rule 2): a record holding one of them only re-states
    its person's links.

    ``settled``: ``namespace, id, person_id``, one row per identity
    (:attr:`audience_activation.affected.Affected.settled`). A list counts when every identity of it is found
    there with one ``person_id``; an identity not found (unknown, or of a person that is not settled) leaves its
    list out.

    Example:
        >>> restating(candidates, settled).collect()  # doctest: +SKIP
    """
    keys = linking.select("_linking", F.explode("_linking").alias("_key"))
    identities = keys.select("_linking", identity_of_key(F.col("_key")).alias("_e")).select(
        "_linking", F.col("_e.namespace").alias("namespace"), F.col("_e.id").alias("id")
    )
    # Inner join, the lists' side small: the settled identities are many, and a missing one leaves its list short.
    found = settled.select(*_KEY, "person_id").join(identities, on=_KEY, how="inner")
    per_list = found.groupBy("_linking").agg(
        F.count(F.lit(1)).alias("_found"), F.countDistinct("person_id").alias("_persons")
    )
    return per_list.where((F.col("_found") == F.size("_linking")) & (F.col("_persons") == 1)).select("_linking")


def settled_rows(resolved: IdentityResult, clusters: DataFrame, max_links_per_identity: int) -> DataFrame:
    """``namespace, id, person_id`` of every identity of the settled persons among ``clusters`` (rule 1).

    ``resolved``: a resolution of a part of the inputs that holds every link of the identities of ``clusters``
    (the closed set of :func:`audience_activation.affected.resolve_affected`: their neighbour counts and
    components are those of the whole input); ``clusters``: its rows for those identities (whole persons). A
    person is settled when it has at least two identities, its identities form one component that holds no other
    identity (``graph_size`` identities), and every identity ``i`` of it has ``outside(i) + graph_size - 1 <=
    max_links_per_identity``, ``outside(i)`` being its distinct neighbours (before the hub guardrail) that are
    not of its person.
    """
    if resolved.links is None or resolved.components is None:
        raise ValueError("settled persons need the resolution's links and components")
    persons = clusters.select(*_KEY, "person_id", "graph_size").where(F.col("graph_size") >= 2)
    links = resolved.links
    ends = links.select(
        F.col("src_ns").alias("namespace"), F.col("src_id").alias("id"), F.col("dst_ns"), F.col("dst_id")
    ).unionByName(
        links.select(
            F.col("dst_ns").alias("namespace"),
            F.col("dst_id").alias("id"),
            F.col("src_ns").alias("dst_ns"),
            F.col("src_id").alias("dst_id"),
        )
    )
    others = clusters.select(
        F.col("namespace").alias("dst_ns"), F.col("id").alias("dst_id"), F.col("person_id").alias("_other")
    )
    outside = F.col("_other").isNull() | (F.col("_other") != F.col("person_id"))
    per_identity = (
        ends.join(persons, on=_KEY, how="inner")
        .join(others, on=["dst_ns", "dst_id"], how="left")
        .groupBy(*_KEY, "person_id")
        .agg(F.sum(outside.cast("int")).alias("_outside"))
    )
    bound = per_identity.groupBy("person_id").agg(
        F.max("_outside").alias("_outside"), F.count(F.lit(1)).alias("_linked")
    )
    sizes = resolved.components.groupBy("component").agg(F.count(F.lit(1)).alias("_nodes"))
    whole = (
        resolved.components.join(persons, on=_KEY, how="inner")
        .join(sizes, on="component", how="inner")
        .groupBy("person_id", "graph_size")
        .agg(
            F.countDistinct("component").alias("_components"),
            F.count(F.lit(1)).alias("_members"),
            F.max("_nodes").alias("_nodes"),
        )
    )
    size = F.col("graph_size")
    settled = whole.join(bound, on="person_id", how="inner").where(
        (F.col("_components") == 1)
        & (F.col("_members") == size)
        & (F.col("_nodes") == size)
        & (F.col("_linked") == size)
        & (F.col("_outside") + size - 1 <= max_links_per_identity)
    )
    return persons.join(settled.select("person_id"), on="person_id", how="left_semi").select(*_KEY, "person_id")


def settled_after(
    settled: DataFrame | None,
    identities: DataFrame,
    resolved: IdentityResult,
    clusters: DataFrame,
    settings: IdentitySettings,
    checkpoint: Checkpoint,
) -> DataFrame | None:
    """Rule 4: ``settled`` without the identities resolved again (``identities``, whole previous persons), plus the
    settled persons among their new ``clusters``. None when settled persons are not tracked."""
    if settled is None:
        return None
    kept = settled.select(*_KEY, "person_id").join(identities, on=_KEY, how="left_anti")
    return kept.unionByName(checkpoint(settled_rows(resolved, clusters, settings.max_links_per_identity)))
