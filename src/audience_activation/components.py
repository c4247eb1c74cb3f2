"""Connected components of a large undirected graph in Spark: alternating large-star and small-star rounds.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014): logarithmic rounds in practice,
also on long chains. Nodes are strings whose binary order is the order the components are labelled by (the
smallest node of each component labels it). Used by identity resolution (docs/identity.md, step 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

#: Rounds after which :func:`connected_components` gives up (never reached in practice: rounds grow with the
#: logarithm of the component diameter).
MAX_CC_ROUNDS = 200

#: A lineage barrier: returns a DataFrame with the same rows whose plan no longer depends on the input's.
Checkpoint = Callable[[DataFrame], DataFrame]


def _large_star(edges: DataFrame) -> DataFrame:
    """Connect every neighbour larger than a node to the node's smallest neighbour (itself included).

    One aggregation of each node's neighbour list, then one row per larger neighbour: no self-join, so no part
    of the round is computed twice.
    """
    both = edges.select(F.col("u"), F.col("v")).unionByName(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))
    neighbours = both.groupBy("u").agg(F.collect_set("v").alias("ns"))
    smallest = F.least(F.array_min("ns"), F.col("u"))
    larger = F.filter("ns", lambda v: v > F.col("u"))
    return (
        neighbours.select(F.explode(larger).alias("node"), smallest.alias("centre"))
        .select(F.col("node").alias("u"), F.col("centre").alias("v"))
        .where(F.col("u") != F.col("v"))
        .distinct()
    )


def _small_star(edges: DataFrame) -> DataFrame:
    """Connect every node's smaller neighbours (and the node) to the smallest of them.

    One aggregation of each node's smaller neighbours, then one row per member: no self-join.
    """
    oriented = edges.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
    neighbours = oriented.groupBy("u").agg(F.collect_set("v").alias("ns"))
    members = F.array_union("ns", F.array(F.col("u")))
    return (
        neighbours.select(F.explode(members).alias("node"), F.array_min("ns").alias("centre"))
        .select(F.col("node").alias("u"), F.col("centre").alias("v"))
        .where(F.col("u") != F.col("v"))
        .distinct()
    )


def star_labels(edges: DataFrame) -> DataFrame:
    """Each node's candidate label and whether the edges around it already form a finished star:
    ``node, component, settled``.

    One aggregation per node over the edges oriented small → big: a node's ``parents`` are its smaller
    neighbours, and it is a ``centre`` when it has larger ones. The edges form one star per component, each
    centred on the component's smallest node, exactly when every node is settled: it hangs off at most one
    smaller node, and a node that hangs off a smaller node is no centre itself. (The second alone is not
    enough: a node can hang off two centres that still belong to one component.) When every node is settled,
    ``component`` (the single parent, or the node itself for a centre) is the node's component.
    """
    oriented = edges.select(F.greatest("u", "v").alias("big"), F.least("u", "v").alias("small"))
    ends = oriented.select(
        F.col("big").alias("node"), F.col("small").alias("parent"), F.lit(False).alias("centre")
    ).unionByName(
        oriented.select(
            F.col("small").alias("node"), F.lit(None).cast("string").alias("parent"), F.lit(True).alias("centre")
        )
    )
    per_node = ends.groupBy("node").agg(
        F.min("parent").alias("first"), F.max("parent").alias("last"), F.max("centre").alias("centre")
    )
    one_parent = F.col("first").isNull() | (F.col("first") == F.col("last"))
    root_or_leaf = F.col("first").isNull() | ~F.col("centre")
    return per_node.select(
        "node", F.coalesce("first", "node").alias("component"), (one_parent & root_or_leaf).alias("settled")
    )


@dataclass(frozen=True)
class Components:
    """Result of :func:`connected_components`: ``node, component`` per linked node, and the rounds used."""

    labels: DataFrame
    rounds: int


def connected_components(edges: DataFrame, checkpoint: Checkpoint) -> Components:
    """Label each node of an undirected graph with the smallest node of its component.

    Alternating large-star and small-star (Kiveris et al., SoCC 2014): logarithmic rounds in practice, also on
    long chains. Each round's edges go through ``checkpoint`` (a parquet write and re-read in the jobs) so the
    plan stays one round deep; every operation is deterministic, so AQE re-planning cannot change a result.

    Args:
        edges: ``u, v`` string node keys; self-loops and duplicates allowed.
        checkpoint: the lineage barrier.

    Returns:
        The labels of every node that has at least one edge, and the number of rounds.
    """
    current = checkpoint(edges.select("u", "v").where(F.col("u") != F.col("v")).distinct())
    rounds = 0
    while True:
        rounds += 1
        if rounds > MAX_CC_ROUNDS:
            raise RuntimeError(f"connected components did not converge in {MAX_CC_ROUNDS} rounds")
        current = checkpoint(_small_star(_large_star(current)))
        # The convergence test and the labels are one aggregation, materialised once: when every node is
        # settled, its rows are the answer (usually after the first round for identity graphs).
        labels = checkpoint(star_labels(current))
        if labels.where(~F.col("settled")).isEmpty():
            break
    log.info("connected components converged after %d round(s)", rounds)
    return Components(labels=labels.select("node", "component"), rounds=rounds)
