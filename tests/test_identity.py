"""Identity resolution on Spark: hand-made graphs with written-out clusters per rule,
a property test against the plain-Python reference model, and the O(log n) convergence on a long chain."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import identity_reference as rules  # the reference model (NsInfo comes with it)
from audience_activation.components import connected_components, star_labels
from audience_activation.config import IdentitySettings, NamespaceConfig, NamespacesConfig, NamespaceType
from audience_activation.identity import AsOfInputs, as_of, resolve_identities
from audience_activation.storage.base import ParquetCheckpoint

# E-mail and phone person ids carry the SHA-256 of the (trimmed, lower-cased) value, never the value.
EMAIL_M1 = "Email:sha256:" + hashlib.sha256(b"m1").hexdigest()
EMAIL_M = "Email:sha256:" + hashlib.sha256(b"m").hexdigest()

T = dt.datetime(2026, 11, 29)
DAY = dt.timedelta(days=1)
IDENTITY_MAP = "map<string, array<struct<id: string, primary: boolean>>>"
LINKS_DDL = "src_namespace string, src_id string, dst_namespace string, dst_id string, last_seen_at timestamp"
E1, E2, E3 = ("1" * 38, "2" * 38, "3" * 38)  # valid ECIDs

Clusters = dict[tuple[str, str], tuple[str, int]]


@pytest.fixture()
def checkpoint(spark: SparkSession, tmp_path: Path) -> Iterator[ParquetCheckpoint]:
    barrier = ParquetCheckpoint(spark, str(tmp_path / "scratch"))
    yield barrier
    barrier.cleanup()


def namespaces(**extra: NamespaceConfig) -> NamespacesConfig:
    return NamespacesConfig(namespaces=extra)


def fragments_df(spark: SparkSession, rows: Sequence[tuple[dict, dt.datetime]]) -> DataFrame:
    data = [({ns: [(i, k == 0) for k, i in enumerate(ids)] for ns, ids in imap.items()}, "ds", t) for imap, t in rows]
    return spark.createDataFrame(data, f"identityMap {IDENTITY_MAP}, dataset string, ingested_at timestamp")


def run(
    spark: SparkSession,
    checkpoint: ParquetCheckpoint,
    *,
    links: Sequence[tuple] = (),
    fragments: Sequence[tuple[dict, dt.datetime]] = (),
    events: Sequence[tuple[str, dict, dt.datetime]] = (),
    regions: Sequence[tuple[dict, dict]] = (),
    ns: NamespacesConfig | None = None,
    max_links: int = 50,
    max_graph: int = 50,
    cooccurrence: bool = True,
    at: dt.datetime = T,
    known_hubs: Sequence[tuple[str, str]] | None = None,
) -> tuple[Clusters, set[tuple[str, str, str | None, str]]]:
    """Run the Spark identity job on tiny inputs; return clusters and quarantine rows."""
    fragments_in = fragments_df(spark, fragments)
    events_in = spark.createDataFrame(
        [
            (key, t, "web", {n: [(i, True) for i in ids] for n, ids in imap.items()}) for key, imap, t in events
        ],  # t may be None
        f"_id string, timestamp timestamp, eventType string, identityMap {IDENTITY_MAP}",
    )
    links_in = spark.createDataFrame(list(links), LINKS_DDL)
    regions_in = spark.createDataFrame(
        [
            ({n: [(i, True) for i in ids] for n, ids in imap.items()}, {code: (t,) for code, t in caps.items()})
            for imap, caps in regions
        ],
        f"identityMap {IDENTITY_MAP}, userActivityRegions map<string, struct<captureTimestamp: timestamp>>",
    )
    inputs = as_of(fragments_in, events_in, links_in, regions_in, at)
    result = resolve_identities(
        inputs,
        ns or namespaces(),
        IdentitySettings(
            max_links_per_identity=max_links, max_identities_per_graph=max_graph, cooccurrence_links=cooccurrence
        ),
        checkpoint,
        None if known_hubs is None else spark.createDataFrame(list(known_hubs), "namespace string, id string"),
    )
    rows = result.clusters.collect()
    clusters = {(r.namespace, r.id): (r.person_id, r.graph_size) for r in rows}
    assert len(rows) == len(clusters), "identity_clusters must have one row per identity"
    quarantine = {(r.source_table, r.namespace, r.id, r.reason) for r in result.quarantine.collect()}
    return clusters, quarantine


def test_chain_is_one_person(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    clusters, quarantine = run(
        spark,
        checkpoint,
        links=[
            ("ECID", E1, "CRMID", "c1", T - DAY),
            ("CRMID", "c1", "Email", "m1", T - DAY),
            ("Email", "m1", "IDFA", "d1", T - DAY),
        ],
    )
    assert clusters == {
        ("ECID", E1): ("CRMID:c1", 4),
        ("CRMID", "c1"): ("CRMID:c1", 4),
        ("Email", "m1"): ("CRMID:c1", 4),
        ("IDFA", "d1"): ("CRMID:c1", 4),
    }
    assert quarantine == set()


def test_star_from_fragment_cooccurrence(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    fragment = ({"CRMID": ["c1"], "ECID": [E1, E2, E3], "Email": ["m1"]}, T - DAY)
    clusters, _ = run(spark, checkpoint, fragments=[fragment])
    assert set(clusters.values()) == {("CRMID:c1", 5)}
    assert len(clusters) == 5
    separate, _ = run(spark, checkpoint, fragments=[fragment], cooccurrence=False)
    assert separate == {
        ("CRMID", "c1"): ("CRMID:c1", 1),
        ("ECID", E1): (f"ECID:{E1}", 1),
        ("ECID", E2): (f"ECID:{E2}", 1),
        ("ECID", E3): (f"ECID:{E3}", 1),
        ("Email", "m1"): (EMAIL_M1, 1),
    }


def test_shared_device_goes_to_the_most_recent_login(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    clusters, _ = run(
        spark,
        checkpoint,
        links=[("ECID", E1, "CRMID", "alice", T - 20 * DAY), ("ECID", E1, "CRMID", "bob", T - DAY)],
    )
    assert clusters == {
        ("ECID", E1): ("CRMID:bob", 2),
        ("CRMID", "bob"): ("CRMID:bob", 2),
        ("CRMID", "alice"): ("CRMID:alice", 1),
    }


def test_unique_conflict_broken_by_priority_sum_then_link_order(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    # Same time: b-m (priority sum 3) before a-e (8) before m-e (9); m-e would join two CRMIDs: skipped.
    clusters, _ = run(
        spark,
        checkpoint,
        links=[
            ("CRMID", "a", "ECID", E1, T - DAY),
            ("CRMID", "b", "Email", "m", T - DAY),
            ("Email", "m", "ECID", E1, T - DAY),
        ],
    )
    assert clusters == {
        ("CRMID", "a"): ("CRMID:a", 2),
        ("ECID", E1): ("CRMID:a", 2),
        ("CRMID", "b"): ("CRMID:b", 2),
        ("Email", "m"): ("CRMID:b", 2),
    }
    # Same time and same priority sum: (CRMID, a, Email, m) sorts before (CRMID, b, Email, m).
    tie, _ = run(
        spark, checkpoint, links=[("Email", "m", "CRMID", "b", T - DAY), ("CRMID", "a", "Email", "m", T - DAY)]
    )
    assert tie == {("CRMID", "a"): ("CRMID:a", 2), ("Email", "m"): ("CRMID:a", 2), ("CRMID", "b"): ("CRMID:b", 1)}


def test_size_limit_evicts_the_oldest_cookie_first(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    clusters, quarantine = run(
        spark,
        checkpoint,
        max_graph=4,
        links=[
            ("CRMID", "c", "ECID", E2, T - 9 * DAY),  # the older cookie (E2 > E1, so not an id tie-break)
            ("CRMID", "c", "ECID", E1, T - 2 * DAY),
            ("CRMID", "c", "IDFA", "d", T - 20 * DAY),  # older still, but a device: cookies go first
            ("CRMID", "c", "Email", "m", T - 9 * DAY),
        ],
    )
    assert clusters == {
        ("CRMID", "c"): ("CRMID:c", 4),
        ("ECID", E1): ("CRMID:c", 4),
        ("IDFA", "d"): ("CRMID:c", 4),
        ("Email", "m"): ("CRMID:c", 4),
        ("ECID", E2): (f"ECID:{E2}", 1),
    }
    assert quarantine == {("identity_graph", "ECID", E2, "graph_size_eviction")}


def test_size_limit_then_devices_then_other_types_oldest_first(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    # Size 5, limit 2: surplus 3 = the cookie, the device, then the oldest other identity (Email, t-8).
    clusters, _ = run(
        spark,
        checkpoint,
        max_graph=2,
        links=[
            ("CRMID", "c", "ECID", E1, T - 1 * DAY),
            ("CRMID", "c", "IDFA", "d", T - 1 * DAY),
            ("CRMID", "c", "Email", "m", T - 8 * DAY),
            ("CRMID", "c", "Phone", "p", T - 3 * DAY),
        ],
    )
    assert clusters == {
        ("CRMID", "c"): ("CRMID:c", 2),
        ("Phone", "p"): ("CRMID:c", 2),
        ("ECID", E1): (f"ECID:{E1}", 1),
        ("IDFA", "d"): ("IDFA:d", 1),
        ("Email", "m"): (EMAIL_M, 1),
    }


def test_eviction_ties_by_namespace_and_id_then_resplit(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    # Chain Phone p - Email m - ECID e1 - CRMID c, plus ECID e2 on c; all links equally old; limit 4.
    # Surplus 1: a cookie, tie on time broken by id: e1 < e2, so e1 goes, which cuts the chain in two.
    clusters, _ = run(
        spark,
        checkpoint,
        max_graph=4,
        links=[
            ("Phone", "p", "Email", "m", T - DAY),
            ("Email", "m", "ECID", E1, T - DAY),
            ("ECID", E1, "CRMID", "c", T - DAY),
            ("ECID", E2, "CRMID", "c", T - DAY),
        ],
    )
    assert clusters == {
        ("Phone", "p"): (EMAIL_M, 2),
        ("Email", "m"): (EMAIL_M, 2),
        ("CRMID", "c"): ("CRMID:c", 2),
        ("ECID", E2): ("CRMID:c", 2),
        ("ECID", E1): (f"ECID:{E1}", 1),
    }


def test_hub_guardrail(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    links = [("IDFA", "hub", "ECID", e, T - DAY) for e in (E1, E2, E3)]
    below, quarantine = run(spark, checkpoint, links=links, max_links=3)
    assert set(below.values()) == {("IDFA:hub", 4)} and quarantine == set()  # IDFA (5) outranks ECID (7)
    links.append(("IDFA", "hub", "Email", "m", T - DAY))
    above, quarantine = run(spark, checkpoint, links=links, max_links=3)
    assert above == {
        ("IDFA", "hub"): ("IDFA:hub", 1),
        ("ECID", E1): (f"ECID:{E1}", 1),
        ("ECID", E2): (f"ECID:{E2}", 1),
        ("ECID", E3): (f"ECID:{E3}", 1),
        ("Email", "m"): (EMAIL_M, 1),
    }
    assert quarantine == {("identity_graph", "IDFA", "hub", "hub_identity")}


def test_a_known_hub_is_a_hub_whatever_its_count_in_the_part(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    """The streaming job resolves a part of the inputs: a hub of the whole input may have few links in it.
    Handed on as known, it is resolved as the whole input resolves it; an identity known as a hub that the part
    does not touch adds nothing."""
    part = [("IDFA", "hub", "ECID", e, T - DAY) for e in (E1, E2)]
    whole, _ = run(spark, checkpoint, links=[*part, ("IDFA", "hub", "Email", "m", T - DAY)], max_links=2)
    clusters, quarantine = run(spark, checkpoint, links=part, max_links=2, known_hubs=[("IDFA", "hub"), ("IDFA", "x")])
    assert clusters == {k: v for k, v in whole.items() if k != ("Email", "m")}
    assert clusters[("IDFA", "hub")] == ("IDFA:hub", 1)
    assert quarantine == {("identity_graph", "IDFA", "hub", "hub_identity")}
    unknown, _ = run(spark, checkpoint, links=part, max_links=2)
    assert unknown[("IDFA", "hub")] == ("IDFA:hub", 3)  # without it, the part keeps the hub's links


def test_invalid_identities_are_quarantined_with_each_reason(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    clusters, quarantine = run(
        spark,
        checkpoint,
        fragments=[
            ({"CRMID": ["c1"], "Email": ["  "], "ECID": ["123"]}, T - DAY),
            ({"CRMID": ["NuLL", "x" * 1025], "Email_LC_SHA256": ["abc", "A" * 64]}, T - DAY),
            ({"Email": ["anonymous"]}, T - DAY),
        ],
        events=[
            ("ev1", {"ECID": ["invalid"]}, T - DAY),
            ("ev2", {"ECID": [E1 + "\n"]}, T - DAY),
            ("ev3", {"ECID": [E2]}, None),
        ],
        links=[
            ("Email", "", "CRMID", "c1", T - DAY),
            (None, "x", "CRMID", "c1", T - DAY),
            ("ECID", E3, "CRMID", "c1", None),
        ],
    )
    assert clusters == {
        ("CRMID", "c1"): ("CRMID:c1", 1),
        # An e-mail-type namespace: even an already hashed value is hashed again in the person id (lower-cased).
        ("EMAIL_LC_SHA256", "A" * 64): (f"EMAIL_LC_SHA256:sha256:{hashlib.sha256(b'a' * 64).hexdigest()}", 1),
    }
    assert quarantine == {
        ("profile_fragments", "Email", "  ", "empty"),
        ("profile_fragments", "ECID", "123", "bad_ecid"),
        ("profile_fragments", "CRMID", "NuLL", "reserved_value"),
        ("profile_fragments", "CRMID", "x" * 1025, "too_long"),
        ("profile_fragments", "EMAIL_LC_SHA256", "abc", "bad_email_sha256"),
        ("profile_fragments", "Email", "anonymous", "reserved_value"),
        ("profile_fragments", "Email", "anonymous", "no_valid_identity"),
        ("experience_events", "ECID", "invalid", "reserved_value"),
        ("experience_events", "ECID", "invalid", "no_valid_identity"),
        ("experience_events", "ECID", E1 + "\n", "bad_ecid"),  # Java $ would accept the trailing newline
        ("experience_events", "ECID", E1 + "\n", "no_valid_identity"),
        ("experience_events", "ECID", E2, "missing_timestamp"),  # an event without a time takes no part
        ("identity_graph", "Email", "", "empty"),
        ("identity_graph", None, "x", "missing_namespace"),
        ("identity_graph", "ECID", E3, "missing_timestamp"),
    }


def test_non_people_namespaces_do_not_link(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    ns = namespaces(STORE=NamespaceConfig(type=NamespaceType.non_people, priority=20))
    clusters, _ = run(
        spark,
        checkpoint,
        ns=ns,
        links=[("STORE", "s1", "CRMID", "c1", T - DAY)],
        fragments=[({"STORE": ["s1"], "ECID": [E1]}, T - DAY)],
    )
    assert clusters == {
        ("STORE", "s1"): ("STORE:s1", 1),
        ("CRMID", "c1"): ("CRMID:c1", 1),
        ("ECID", E1): (f"ECID:{E1}", 1),
    }


def test_as_of_time_hides_later_rows(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    clusters, _ = run(
        spark,
        checkpoint,
        links=[("ECID", E1, "CRMID", "c1", T - DAY), ("ECID", E2, "CRMID", "c1", T + DAY)],
        fragments=[({"Email": ["late"]}, T + DAY)],
        events=[("ev", {"GAID": ["g"]}, T + DAY)],
        regions=[({"ECID": [E3]}, {"VA6": T + DAY})],
    )
    assert clusters == {("ECID", E1): ("CRMID:c1", 2), ("CRMID", "c1"): ("CRMID:c1", 2)}


def test_person_id_prefers_priority_and_unknown_namespaces_come_last(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    clusters, _ = run(
        spark, checkpoint, links=[("CUSTOM", "x", "ECID", E1, T - DAY)], regions=[({"ECID": [E2]}, {"OR2": T - DAY})]
    )
    assert clusters == {
        ("CUSTOM", "x"): (f"ECID:{E1}", 2),
        ("ECID", E1): (f"ECID:{E1}", 2),
        ("ECID", E2): (f"ECID:{E2}", 1),
    }


def test_email_lc_sha256_symbol_is_normalised(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    digest = "a" * 64
    clusters, _ = run(spark, checkpoint, links=[("Email_LC_SHA256", digest, "CRMID", "c", T - DAY)])
    assert clusters == {("EMAIL_LC_SHA256", digest): ("CRMID:c", 2), ("CRMID", "c"): ("CRMID:c", 2)}


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_long_chain_converges_in_logarithmic_rounds(
    spark: SparkSession, checkpoint: ParquetCheckpoint, order: str
) -> None:
    n = 10_000
    names = [f"N{i:06d}" for i in range(n)]
    if order == "shuffled":
        random.Random(7).shuffle(names)
    edges = spark.createDataFrame([(names[i], names[i + 1]) for i in range(n - 1)], "u string, v string")
    result = connected_components(edges, checkpoint)
    assert result.rounds <= 2 * math.log2(n) + 4
    assert result.labels.count() == n
    assert [r.component for r in result.labels.select("component").distinct().collect()] == ["N000000"]


def union_find_components(edges: list[tuple[str, str]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        a, b = find(u), find(v)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {node: find(node) for node in parent}


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(edges=st.lists(st.tuples(st.sampled_from("abcdefghijklmnop"), st.sampled_from("abcdefghijklmnop")), max_size=40))
def test_connected_components_match_union_find(
    spark: SparkSession, checkpoint: ParquetCheckpoint, edges: list[tuple[str, str]]
) -> None:
    """Random graphs (including paths hanging off two centres, the case a one-sided convergence test misses)."""
    proper = [(u, v) for u, v in edges if u != v]
    result = connected_components(spark.createDataFrame(edges or [("a", "a")], "u string, v string"), checkpoint)
    rows = result.labels.collect()
    labels = {r.node: r.component for r in rows}
    assert len(rows) == len(labels), "one label per node"
    assert labels == union_find_components(proper)


def test_two_centre_path_is_one_component(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    # a-c, c-d, d-e, e-b: after one round c hangs off both a and b; the loop must not stop there.
    edges = spark.createDataFrame([("a", "c"), ("c", "d"), ("d", "e"), ("e", "b")], "u string, v string")
    labels = {r.node: r.component for r in connected_components(edges, checkpoint).labels.collect()}
    assert labels == {"a": "a", "b": "a", "c": "a", "d": "a", "e": "a"}


def test_results_do_not_depend_on_partitioning(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    links = [
        ("ECID", E1, "CRMID", "c1", T - DAY),
        ("ECID", E1, "CRMID", "c2", T - 2 * DAY),
        ("Email", "m", "ECID", E2, T - DAY),
        ("Email", "m", "CRMID", "c2", T - 3 * DAY),
        ("IDFA", "d", "ECID", E3, T - DAY),
        ("IDFA", "d", "Email", "m", T - 5 * DAY),
    ]
    results = []
    for partitions in ("1", "7"):
        spark.conf.set("spark.sql.shuffle.partitions", partitions)
        try:
            results.append(run(spark, checkpoint, links=links, max_graph=3))
        finally:
            spark.conf.set("spark.sql.shuffle.partitions", "2")
    assert results[0] == results[1]


# -- property test against the plain-Python reference ---------------------------------------------------------

POOL = {
    "CRMID": ["c1", "c2", "c3"],
    "Email": ["m1", "m2"],
    "ECID": [E1, E2, "bad"],
    "IDFA": ["d1", "d2"],
    "STORE": ["s1"],
    "CUSTOM": ["x1", "null"],
}
REFERENCE_NS = {
    "CRMID": rules.NsInfo("cross_device", True, 1),
    "Email": rules.NsInfo("email", False, 2),
    "EMAIL_LC_SHA256": rules.NsInfo("email", False, 3),
    "Phone": rules.NsInfo("phone", False, 4),
    "IDFA": rules.NsInfo("device", False, 5),
    "GAID": rules.NsInfo("device", False, 6),
    "ECID": rules.NsInfo("cookie", False, 7),
    "AdCloud": rules.NsInfo("cookie", False, 8),
    "TNTID": rules.NsInfo("cookie", False, 9),
    "STORE": rules.NsInfo("non_people", False, 10),
}
identities = st.sampled_from([(ns, i) for ns, ids in POOL.items() for i in ids])
times = st.sampled_from([T - 3 * DAY, T - 2 * DAY, T - DAY, T + DAY])
graphs = st.fixed_dictionaries(
    {
        "links": st.lists(st.tuples(identities, identities, times), max_size=10),
        "fragments": st.lists(st.tuples(st.lists(identities, min_size=1, max_size=3), times), max_size=4),
        "regions": st.lists(identities, max_size=2),
    }
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(graph=graphs)
def test_spark_matches_the_reference_model(spark: SparkSession, checkpoint: ParquetCheckpoint, graph: dict) -> None:
    links = [(a[0], a[1], b[0], b[1], t) for a, b, t in graph["links"]]
    fragments = []
    for ids, t in graph["fragments"]:
        imap: dict[str, list[str]] = {}
        for ns, i in ids:
            if i not in imap.setdefault(ns, []):
                imap[ns].append(i)
        fragments.append((imap, t))
    regions = [({ns: [i]}, {"VA6": T - DAY}) for ns, i in graph["regions"]]
    ns_config = namespaces(STORE=NamespaceConfig(type=NamespaceType.non_people, priority=10))
    clusters, quarantine = run(
        spark, checkpoint, links=links, fragments=fragments, regions=regions, ns=ns_config, max_links=3, max_graph=4
    )

    expected_clusters, expected_quarantine = rules.resolve_identities(
        links,
        [rules.Record([(ns, i) for ns, ids in imap.items() for i in ids], t) for imap, t in fragments],
        [rules.Record([(ns, i) for ns, ids in imap.items() for i in ids], T - DAY) for imap, _ in regions],
        T,
        REFERENCE_NS,
        max_links_per_identity=3,
        max_identities_per_graph=4,
    )
    assert clusters == expected_clusters
    assert {
        (ns, i, reason) for _table, ns, i, reason in quarantine if reason != "no_valid_identity"
    } == expected_quarantine


def test_inputs_may_be_absent(spark: SparkSession, checkpoint: ParquetCheckpoint) -> None:
    inputs = AsOfInputs(
        fragments=fragments_df(spark, [({"CRMID": ["c"], "ECID": [E1]}, T - DAY)]),
        events=None,
        links=None,
        regions=None,
    )
    result = resolve_identities(inputs, namespaces(), IdentitySettings(), checkpoint)
    assert {(r.namespace, r.id, r.person_id, r.graph_size) for r in result.clusters.collect()} == {
        ("CRMID", "c", "CRMID:c", 2),
        ("ECID", E1, "CRMID:c", 2),
    }


def test_person_ids_hash_like_the_reference(spark: SparkSession) -> None:
    """The Spark column and the plain-Python rule give the same public person id (trim, case, unicode)."""
    from audience_activation.identity import NamespaceLookup, public_person_id

    raws = ["Email: Ünïcode@Example.COM\t", "Phone:+1 (555) 0100", "CRMID:c:1", "EMAIL_LC_SHA256:" + "A" * 64, "X:y"]
    lookup = NamespaceLookup(namespaces())
    got = [
        r["p"]
        for r in spark.createDataFrame([(raw,) for raw in raws], "raw string")
        .select(public_person_id(F.col("raw"), lookup).alias("p"))
        .collect()
    ]
    assert got == [rules.public_person_id(raw, lookup.rules_table()) for raw in raws]
    assert got[2] == "CRMID:c:1" and got[4] == "X:y"  # other namespaces unchanged


@pytest.mark.parametrize("size", [5_000, 100_000])
def test_a_record_with_thousands_of_identities_makes_hubs_without_its_pairs(
    spark: SparkSession, checkpoint: ParquetCheckpoint, size: int
) -> None:
    """A shared kiosk's fragment with ``size`` identities: each has ``size - 1`` co-occurrence neighbours, so all
    are hubs (quarantined, single persons), decided without building the record's pairs (12.5 million for 5,000,
    5 billion for 100,000: the session's 2 GB driver would not survive them). Other records are unaffected,
    and a crowd member's other links are dropped with it."""
    crowd = [f"{i:07d}" for i in range(size)]
    clusters, quarantine = run(
        spark,
        checkpoint,
        fragments=[
            ({"TNTID": crowd, "CRMID": ["c1"]}, T - 2 * DAY),
            ({"CRMID": ["c2"], "ECID": [E2]}, T - DAY),
        ],
        links=[("CRMID", "c1", "ECID", E1, T - DAY)],
    )
    assert len(clusters) == size + 4
    assert clusters[("CRMID", "c2")] == clusters[("ECID", E2)] == ("CRMID:c2", 2)
    assert clusters[("CRMID", "c1")] == ("CRMID:c1", 1) and clusters[("ECID", E1)] == (f"ECID:{E1}", 1)
    assert all(clusters[("TNTID", member)] == (f"TNTID:{member}", 1) for member in crowd)
    expected = {("profile_fragments", "TNTID", member, "hub_identity") for member in crowd}
    # c1 is a hub too; its first source is the identity graph (the explicit link) before profile fragments.
    assert quarantine == expected | {("identity_graph", "CRMID", "c1", "hub_identity")}


def test_linking_identities_are_computed_once_per_record(spark: SparkSession) -> None:
    """Records with two or more linking identities, sorted and distinct; the list's higher-order functions are
    not repeated by a filter (see columns.kept_once)."""
    from audience_activation.identity import linking_identities
    from audience_activation.identity_entries import record_entries
    from audience_activation.namespaces import NamespaceLookup

    fragments = fragments_df(
        spark,
        [
            ({"ECID": [E1], "CRMID": ["c1", "c1"]}, T - DAY),  # two distinct linking identities
            ({"ECID": [E2], "CRMID": [" "]}, T - DAY),  # one valid identity: no co-occurrence
            ({"CRMID": ["c2"]}, T - DAY),
        ],
    )
    records = record_entries(AsOfInputs(fragments=fragments, events=None, links=None, regions=None))
    linking = linking_identities(records, NamespaceLookup(namespaces()))
    plan = linking._jdf.queryExecution().executedPlan().toString()
    assert [line for line in plan.splitlines() if "Filter " in line and "lambdafunction" in line] == []
    assert [r["ids"] for r in linking.collect()] == [["CRMID\x00c1", f"ECID\x00{E1}"]]


REASONS = st.one_of(st.none(), st.sampled_from(["empty_id", "bad_ecid"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.one_of(st.none(), st.lists(REASONS, max_size=4)), max_size=12))
def test_has_valid_identity_is_any_null_reason(spark: SparkSession, records: list[list[str | None] | None]) -> None:
    """The compiled test (sorted reasons, nulls first) says what ``exists(reason is null)`` says, for records
    with no, only valid, only invalid and mixed identities; a null entries array (never produced) gives null,
    as ``exists`` does."""
    from audience_activation.identity_entries import has_valid_identity

    schema = "n int, entries array<struct<namespace: string, id: string, primary: boolean, reason: string>>"
    rows = [
        (n, None if r is None else [("ECID", str(k), False, x) for k, x in enumerate(r)]) for n, r in enumerate(records)
    ]
    df = spark.createDataFrame(rows, schema)
    got = {row["n"]: row["v"] for row in df.select("n", has_valid_identity(F.col("entries")).alias("v")).collect()}
    assert got == {n: None if r is None else any(x is None for x in r) for n, r in enumerate(records)}


def test_captured_by_needs_one_dated_capture_at_or_before_t(spark: SparkSession) -> None:
    """A region row existed at ``T`` when one capture is at or before it; later or undated captures alone do not
    count (null or false: both drop the row)."""
    from audience_activation.as_of import captured_by

    capture = "map<string, struct<captureTimestamp: timestamp>>"
    rows = [
        (1, {"va6": (T - DAY,), "or2": (T + DAY,)}),
        (2, {"va6": (T,)}),
        (3, {"va6": (T + DAY,)}),
        (4, {"va6": (None,), "or2": (T + DAY,)}),
        (5, {"va6": (None,), "or2": (T - DAY,)}),
        (6, {}),
        (7, None),
    ]
    df = spark.createDataFrame(rows, f"n int, userActivityRegions {capture}")
    t = F.lit(T).cast("timestamp")
    kept = [r["n"] for r in df.where(captured_by(t)).orderBy("n").collect()]
    assert kept == [1, 2, 5]
    assert [r["n"] for r in df.where(~F.coalesce(captured_by(t), F.lit(False))).orderBy("n").collect()] == [3, 4, 6, 7]


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        # One star centred on its smallest node: every node settled, labelled with the centre.
        ([("a", "b"), ("c", "a")], {"a": ("a", True), "b": ("a", True), "c": ("a", True)}),
        # c hangs off two centres: c is not settled (a and b are, each on its own).
        ([("a", "c"), ("c", "b")], {"a": ("a", True), "b": ("b", True), "c": ("a", False)}),
        # b hangs off a and is the centre of c: b is not settled.
        ([("a", "b"), ("b", "c")], {"a": ("a", True), "b": ("a", False), "c": ("b", True)}),
    ],
)
def test_star_labels_settle_only_finished_stars(
    spark: SparkSession, edges: list[tuple[str, str]], expected: dict[str, tuple[str, bool]]
) -> None:
    rows = star_labels(spark.createDataFrame(edges, "u string, v string")).collect()
    assert {r.node: (r.component, r.settled) for r in rows} == expected
