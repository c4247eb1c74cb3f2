"""The streaming job's affected persons: identity resolution on the part of the inputs that new rows touch
gives, for the affected identities, exactly the clusters of a resolution of every input — checked against the
plain-Python reference model on random graphs split into old and new rows, and on hand-made merges and splits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from random import Random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession

import identity_reference as rules
from audience_activation import input_index
from audience_activation.affected import (
    CLUSTER_COLUMNS,
    _previous_rows,
    _with_previous_persons,
    new_rows,
    resolve_affected,
    seed_identities,
    split_seeds,
)
from audience_activation.as_of import AsOfInputs, as_of
from audience_activation.config import IdentitySettings, NamespaceConfig, NamespacesConfig, NamespaceType
from audience_activation.storage.base import ParquetCheckpoint
from audience_activation.touching import holding, touching
from test_identity import POOL, REFERENCE_NS  # the identity tests' namespaces and identity pool

T = dt.datetime(2026, 11, 29)
DAY = dt.timedelta(days=1)
IDENTITY_MAP = "map<string, array<struct<id: string, primary: boolean>>>"
LINKS_DDL = "src_namespace string, src_id string, dst_namespace string, dst_id string, last_seen_at timestamp"
REGIONS_DDL = f"identityMap {IDENTITY_MAP}, userActivityRegions map<string, struct<captureTimestamp: timestamp>>"
E1, E2 = "1" * 38, "2" * 38  # valid ECIDs

NAMESPACES = NamespacesConfig(namespaces={"STORE": NamespaceConfig(type=NamespaceType.non_people, priority=10)})
Link = tuple[str, str, str, str, dt.datetime]
Fragment = tuple[dict[str, list[str]], dt.datetime]
Clusters = dict[tuple[str, str], tuple[str, int]]


@pytest.fixture(params=["scan", "index"])
def lookup(request: pytest.FixtureRequest) -> str:
    """How the rows touching the affected identities are found: by scanning the inputs (the default of
    :func:`resolve_affected`) or through the identity index the running stream keeps (:mod:`input_index`)."""
    return str(request.param)


@pytest.fixture()
def checkpoint(spark: SparkSession, tmp_path: Path) -> Iterator[ParquetCheckpoint]:
    barrier = ParquetCheckpoint(spark, str(tmp_path / "scratch"))
    yield barrier
    barrier.cleanup()


def frames(
    spark: SparkSession, links: Sequence[Link], fragments: Sequence[Fragment], regions: Sequence[tuple[str, str]]
) -> tuple[DataFrame, DataFrame, DataFrame]:
    fragment_rows = [
        ({ns: [(i, k == 0) for k, i in enumerate(ids)] for ns, ids in m.items()}, "ds", t) for m, t in fragments
    ]
    region_rows = [({ns: [(i, True)]}, {"VA6": (T - DAY,)}) for ns, i in regions]
    return (
        spark.createDataFrame(list(links), LINKS_DDL),
        spark.createDataFrame(fragment_rows, f"identityMap {IDENTITY_MAP}, dataset string, ingested_at timestamp"),
        spark.createDataFrame(region_rows, REGIONS_DDL),
    )


def reference(
    links: Sequence[Link], fragments: Sequence[Fragment], regions: Sequence[tuple[str, str]], limits: tuple[int, int]
) -> Clusters:
    return reference_with_hubs(links, fragments, regions, limits)[0]


def reference_with_hubs(
    links: Sequence[Link], fragments: Sequence[Fragment], regions: Sequence[tuple[str, str]], limits: tuple[int, int]
) -> tuple[Clusters, set[tuple[str, str]]]:
    """The reference model's clusters and its hubs."""
    clusters, quarantine = rules.resolve_identities(
        links,
        [rules.Record([(ns, i) for ns, ids in m.items() for i in ids], t) for m, t in fragments],
        [rules.Record([r], T - DAY) for r in regions],
        T,
        REFERENCE_NS,
        max_links_per_identity=limits[0],
        max_identities_per_graph=limits[1],
    )
    return clusters, {(ns, i) for ns, i, reason in quarantine if reason == rules.HUB_IDENTITY}


def affected(
    spark: SparkSession,
    checkpoint: ParquetCheckpoint,
    old: tuple[Sequence[Link], Sequence[Fragment], Sequence[tuple[str, str]]],
    new: tuple[Sequence[Link], Sequence[Fragment], Sequence[tuple[str, str]]],
    lookup: str,
    limits: tuple[int, int] = (3, 4),
    known_hubs: Callable[[set[tuple[str, str]]], set[tuple[str, str]]] | None = None,
) -> tuple[Clusters, set[tuple[str, str]], set[str], Clusters, Clusters]:
    """Run :func:`resolve_affected` on old + new rows, the previous clusters being the reference on the old;
    ``known_hubs`` picks the known hubs handed to it among the hubs of the old rows (rule 8).

    Returns the affected clusters, the affected identities, the previous persons, and the reference clusters
    before and after the new rows."""
    before, old_hubs = reference_with_hubs(*old, limits)
    after = reference(*(list(o) + list(n) for o, n in zip(old, new, strict=True)), limits)  # type: ignore[arg-type]
    links, fragments, regions = frames(spark, *(list(o) + list(n) for o, n in zip(old, new, strict=True)))
    new_links, new_fragments, new_regions = frames(spark, *new)
    previous = spark.createDataFrame(
        [(ns, i, p, size) for (ns, i), (p, size) in before.items()],
        "namespace string, id string, person_id string, graph_size int",
    )
    settings_ = IdentitySettings(max_links_per_identity=limits[0], max_identities_per_graph=limits[1])
    # As the stream seeds: rows that can change the graph are resolved, the others revisit their persons.
    seeds, adding = split_seeds(as_of(new_fragments, None, new_links, new_regions, T), NAMESPACES, settings_)
    find = None
    if lookup == "index":
        index = input_index.index_inputs(fragments, None, links, regions)
        find = lambda ids: input_index.touching(index, ids, T)  # noqa: E731
    known = None
    if known_hubs is not None:
        known = spark.createDataFrame(sorted(known_hubs(old_hubs)), "namespace string, id string")
    result = resolve_affected(
        as_of(fragments, None, links, regions, T),
        seeds,
        previous,
        NAMESPACES,
        settings_,
        checkpoint,
        find,
        adding,
        known,
    )
    rows_ = result.clusters.collect()
    clusters = {(r.namespace, r.id): (r.person_id, r.graph_size) for r in rows_}
    assert len(rows_) == len(clusters)  # one row per identity (a revisited row never beside a resolved one)
    identities = {(r.namespace, r.id) for r in result.identities.collect()}
    persons = {r.person_id for r in result.previous_persons.collect()}
    # The previous persons' cluster rows, found on the way: exactly theirs, one row per identity.
    assert result.previous_clusters is not None
    previous_rows = result.previous_clusters.collect()
    assert len(previous_rows) == len({(r.namespace, r.id) for r in previous_rows})
    assert {(r.namespace, r.id): (r.person_id, r.graph_size) for r in previous_rows} == {
        k: v for k, v in before.items() if v[0] in persons
    }
    return clusters, identities, persons, before, after


def check(
    clusters: Clusters, identities: set[tuple[str, str]], persons: set[str], before: Clusters, after: Clusters
) -> None:
    # Exact for the affected identities, and nothing else resolved.
    assert clusters == {k: after[k] for k in identities}
    # Every identity whose person changed (or that is new) is affected.
    assert {k for k, v in after.items() if before.get(k) != v} <= identities
    # Persons are whole: an affected identity's person, before and after, is affected entirely.
    assert {k for k, v in after.items() if v[0] in {after[i][0] for i in identities}} <= identities
    assert {k for k, v in before.items() if v[0] in persons} <= identities
    assert persons == {before[k][0] for k in identities if k in before}


def test_a_new_link_merges_two_persons(spark: SparkSession, checkpoint: ParquetCheckpoint, lookup: str) -> None:
    old_links = [("ECID", E1, "Email", "m1", T - 3 * DAY), ("ECID", E2, "CRMID", "c2", T - 3 * DAY)]
    untouched = [("IDFA", "d9", "Email", "m9", T - 3 * DAY)]
    new = [("Email", "m1", "CRMID", "c2", T - DAY)]
    clusters, identities, persons, before, after = affected(
        spark, checkpoint, (old_links + untouched, [], []), (new, [], []), lookup
    )
    check(clusters, identities, persons, before, after)
    assert identities == {("ECID", E1), ("Email", "m1"), ("ECID", E2), ("CRMID", "c2")}
    assert len({person for person, _ in clusters.values()}) == 1
    assert len(persons) == 2  # both earlier persons are revisited (they no longer exist)


def test_a_new_link_that_makes_a_hub_splits_its_person(
    spark: SparkSession, checkpoint: ParquetCheckpoint, lookup: str
) -> None:
    # ECID E1 links three devices (the limit); a fourth makes it a hub, and its person falls apart.
    old = [("ECID", E1, "IDFA", f"d{k}", T - 3 * DAY) for k in range(3)]
    new = [("ECID", E1, "IDFA", "d3", T - DAY)]
    clusters, identities, persons, before, after = affected(spark, checkpoint, (old, [], []), (new, [], []), lookup)
    check(clusters, identities, persons, before, after)
    assert len({person for person, _ in clusters.values()}) == 5


def test_a_component_split_by_a_unique_namespace_closes_over_both_parts(
    spark: SparkSession, checkpoint: ParquetCheckpoint, lookup: str
) -> None:
    # Two CRMIDs on one cookie: the replay keeps the older link, the newer CRMID is a person of its own.
    old = [("ECID", E1, "CRMID", "c1", T - 3 * DAY), ("ECID", E1, "CRMID", "c2", T - 2 * DAY)]
    # A new, older link of c2 elsewhere touches only c2's person; the component reaches c1's through E1.
    new = [("CRMID", "c2", "IDFA", "d1", T - 4 * DAY)]
    clusters, identities, persons, before, after = affected(spark, checkpoint, (old, [], []), (new, [], []), lookup)
    check(clusters, identities, persons, before, after)
    assert {("ECID", E1), ("CRMID", "c1")} <= identities


def test_a_known_hub_neighbour_is_resolved_as_a_hub_without_its_rows(
    spark: SparkSession, checkpoint: ParquetCheckpoint, lookup: str
) -> None:
    """Rule 8: a new record links E1, whose old link reaches a hub. Unknown, the hub joins the set (its rows are
    looked up, a second time); known, it stays out, and the persons are the same."""
    old = [("IDFA", "hub", "ECID", e, T - 3 * DAY) for e in (E1, E2, "3" * 38, "4" * 38)]
    new = [({"ECID": [E1], "Email": ["m1"]}, T - DAY)]
    hub = ("IDFA", "hub")
    for known in (None, lambda hubs: hubs):
        clusters, identities, persons, before, after = affected(
            spark, checkpoint, (old, [], []), ([], new, []), lookup, known_hubs=known
        )
        check(clusters, identities, persons, before, after)
        assert after[hub] == ("IDFA:hub", 1)
        assert (hub in identities) == (known is None)
    assert identities == {("ECID", E1), ("Email", "m1")}


def test_split_seeds_resolves_only_rows_that_can_change_the_graph(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    """Links and records with two or more linking identities can change persons; a record with one linking
    identity (a non-people identity beside it does not link), a region row of any size, and every record when
    co-occurrence links are off, can only add identities. An identity of both kinds of row is changing only.
    The same sets with the per-identity flags materialised (as the stream does)."""
    fragments = spark.createDataFrame(
        [
            ({"ECID": [(E1, True)]}, "ds", T - DAY),  # one identity
            ({"ECID": [(E2, True)], "Email": [("m2", False)]}, "ds", T - DAY),  # two linking identities
            ({"CRMID": [("c3", True)], "STORE": [("s1", False)]}, "ds", T - DAY),  # STORE is non_people
            ({"Email": [("m2", True)]}, "ds", T - DAY),  # also in a changing row
        ],
        f"identityMap {IDENTITY_MAP}, dataset string, ingested_at timestamp",
    )
    regions = spark.createDataFrame(
        [({"ECID": [("3" * 38, True)], "IDFA": [("d3", False)]}, {"VA6": (T - DAY,)})], REGIONS_DDL
    )
    links = spark.createDataFrame([("IDFA", "d1", "Email", "m1", T - DAY)], LINKS_DDL)
    rows_ = as_of(fragments, None, links, regions, T)

    def split(cooccurrence: bool) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        found = []
        for barrier in (None, checkpoint):
            settings_ = IdentitySettings(cooccurrence_links=cooccurrence)
            changing, adding = split_seeds(rows_, NAMESPACES, settings_, barrier)
            pairs = changing.collect(), adding.collect()
            assert all(len(rows) == len(set(rows)) for rows in pairs)  # each identity once
            found.append(tuple({(r.namespace, r.id) for r in rows} for rows in pairs))
        assert found[0] == found[1]
        return found[0]

    alone = {("ECID", E1), ("CRMID", "c3"), ("STORE", "s1"), ("ECID", "3" * 38), ("IDFA", "d3")}
    ends = {("IDFA", "d1"), ("Email", "m1")}
    assert split(True) == ({("ECID", E2), ("Email", "m2")} | ends, alone)
    assert split(False) == (ends, alone | {("ECID", E2), ("Email", "m2")})
    assert split(True)[0] | split(True)[1] == {(r.namespace, r.id) for r in seed_identities(rows_).collect()}


def test_a_row_that_repeats_a_known_identity_revisits_its_person_without_resolving(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    """Rule 7: a new single-identity fragment of a known identity gives its whole previous person, with its
    previous rows, and no resolution round; one of a new identity is resolved (a person of its own)."""
    old = [("ECID", E1, "Email", "m1", T - 3 * DAY), ("ECID", E2, "CRMID", "c2", T - 3 * DAY)]
    before = reference(old, [], [], (3, 4))
    previous = spark.createDataFrame(
        [(ns, i, p, size) for (ns, i), (p, size) in before.items()],
        "namespace string, id string, person_id string, graph_size int",
    )
    settings_ = IdentitySettings(max_links_per_identity=3, max_identities_per_graph=4)

    def run(new: list[Fragment]) -> tuple[Clusters, int]:
        links, fragments, regions = frames(spark, old, new, [])
        seeds, adding = split_seeds(as_of(frames(spark, [], new, [])[1], None, None, None, T), NAMESPACES, settings_)
        result = resolve_affected(
            as_of(fragments, None, links, regions, T), seeds, previous, NAMESPACES, settings_, checkpoint, None, adding
        )
        assert {r.person_id for r in result.previous_persons.collect()} <= {p for p, _ in before.values()}
        return {(r.namespace, r.id): (r.person_id, r.graph_size) for r in result.clusters.collect()}, result.rounds

    clusters, rounds = run([({"ECID": [E1]}, T - DAY)])
    assert rounds == 0
    assert clusters == {k: before[k] for k in (("ECID", E1), ("Email", "m1"))}
    new = [({"ECID": [E1]}, T - DAY), ({"CRMID": ["new"]}, T - DAY)]
    clusters, rounds = run(new)
    assert rounds == 1
    after = reference(old, new, [], (3, 4))
    assert clusters == {k: after[k] for k in (("ECID", E1), ("Email", "m1"), ("CRMID", "new"))}
    assert after[("CRMID", "new")][1] == 1 and after[("ECID", E1)] == before[("ECID", E1)]


def test_a_new_record_with_two_known_identities_merges_their_persons(
    spark: SparkSession, checkpoint: ParquetCheckpoint, lookup: str
) -> None:
    """A fragment holding identities of two persons links them (co-occurrence): it is resolved, not revisited."""
    old = [("ECID", E1, "Email", "m1", T - 3 * DAY), ("ECID", E2, "CRMID", "c2", T - 3 * DAY)]
    new = [({"Email": ["m1"], "CRMID": ["c2"]}, T - DAY)]
    clusters, identities, persons, before, after = affected(spark, checkpoint, (old, [], []), ([], new, []), lookup)
    check(clusters, identities, persons, before, after)
    assert identities == {("ECID", E1), ("Email", "m1"), ("ECID", E2), ("CRMID", "c2")}
    assert len({person for person, _ in clusters.values()}) == 1 and len(persons) == 2


identity = st.sampled_from([(ns, i) for ns, ids in POOL.items() for i in ids])
time = st.sampled_from([T - 3 * DAY, T - 2 * DAY, T - DAY, T + DAY])
links = st.lists(st.tuples(identity, identity, time).map(lambda v: (*v[0], *v[1], v[2])), max_size=6)


def _fragment(ids: list[tuple[str, str]], t: dt.datetime) -> Fragment:
    identity_map: dict[str, list[str]] = {}
    for ns, i in ids:
        if i not in identity_map.setdefault(ns, []):
            identity_map[ns].append(i)
    return identity_map, t


fragments = st.lists(st.builds(_fragment, st.lists(identity, min_size=1, max_size=3), time), max_size=3)
rows = st.tuples(links, fragments, st.lists(identity, max_size=1))


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(old=rows, new=rows, known=st.none() | st.randoms(use_true_random=False))
def test_affected_persons_match_a_whole_resolution(
    spark: SparkSession, checkpoint: ParquetCheckpoint, lookup: str, old: tuple, new: tuple, known: Random | None
) -> None:
    """Exact on random graphs, with or without known hubs (a random subset of the old rows' hubs, rule 8)."""
    if not any(new):
        return  # no new rows: nothing to seed from (the stream skips such a micro-batch)
    pick = None if known is None else (lambda hubs: {h for h in sorted(hubs) if known.random() < 0.7})
    check(*affected(spark, checkpoint, old, new, lookup, known_hubs=pick))


def test_new_rows_are_added_files_and_rows_whose_time_has_come(spark: SparkSession) -> None:
    """A micro-batch's new rows: rows of added files that existed at ``T`` (a back-dated fragment too), and
    rows of the previous versions whose time passed since the previous evaluation; not rows still in the future,
    and each row once."""
    since = T - 2 * DAY
    old = ({"CRMID": ["old"]}, T - 3 * DAY)  # seen by the previous run
    late = ({"CRMID": ["late"]}, T - DAY)  # committed before, ingested_at passed since
    back = ({"CRMID": ["back"]}, T - 5 * DAY)  # committed now, back-dated
    fresh = ({"CRMID": ["fresh"]}, T - DAY)  # committed now
    future = ({"CRMID": ["future"]}, T + DAY)  # committed now, not yet visible
    old_link, new_link = ("IDFA", "d1", "ECID", E1, T - 3 * DAY), ("IDFA", "d2", "ECID", E2, T - 3 * DAY)
    links, fragments, _ = frames(spark, [old_link], [old, late], [])
    added_links, added_fragments, _ = frames(spark, [new_link], [back, fresh, future], [])
    before = as_of(fragments, None, links, None, T)

    rows_ = new_rows(before, AsOfInputs(added_fragments, None, added_links, None), since, T)
    assert rows_.fragments is not None and rows_.links is not None
    assert sorted(r.ingested_at for r in rows_.fragments.collect()) == [T - 5 * DAY, T - DAY, T - DAY]
    assert rows_.links.count() == 1
    seeds = {(r.namespace, r.id) for r in seed_identities(rows_).collect()}
    assert seeds == {("CRMID", "late"), ("CRMID", "back"), ("CRMID", "fresh"), ("IDFA", "d2"), ("ECID", E2)}
    everything = new_rows(before, AsOfInputs(added_fragments, None, None, None), None, T)  # no previous run
    assert everything.fragments is not None and everything.fragments.count() == 2


def test_touching_records_keeps_each_touching_row_as_often_as_it_is_there(spark: SparkSession) -> None:
    """The part of a record table: every row holding an affected identity, with its multiplicity (a row twice in
    the table comes twice, also when two of its identities are affected), rows differing only in a microsecond or
    in a map value kept apart, rows touching nothing left out."""
    ts = dt.datetime(2026, 11, 28, 10, 0, 0, 1)

    def event(_id: str, when: dt.datetime, ids: dict[str, list[str]] | None) -> tuple:
        return (_id, when, None if ids is None else {ns: [(i, False) for i in values] for ns, values in ids.items()})

    rows = [
        event("a", ts, {"ECID": [E1], "EMAIL": ["x@example.com"]}),  # two affected identities, there twice
        event("a", ts, {"ECID": [E1], "EMAIL": ["x@example.com"]}),
        event("b", ts, {"ECID": [E1, E1]}),  # one identity listed twice, once in the table
        event("b", ts + dt.timedelta(microseconds=1), {"ECID": [E1, E1]}),  # a microsecond later
        event("c", ts, {"Email_LC_SHA256": ["h1"]}),  # namespace normalised before matching
        event("d", ts, {"ECID": [E2], "EMAIL": ["y@example.com"]}),  # y@ is not affected, E2 is
        event("d", ts, {"ECID": [E2], "EMAIL": ["z@example.com"]}),
        event("e", ts, {"EMAIL": ["y@example.com"]}),  # touches nothing
        event("f", ts, None),
    ]
    events = spark.createDataFrame(rows, f"_id string, timestamp timestamp, identityMap {IDENTITY_MAP}")
    affected = spark.createDataFrame(
        [("ECID", E1), ("EMAIL", "x@example.com"), ("ECID", E2), ("EMAIL_LC_SHA256", "h1")],
        "namespace string, id string",
    )

    part = touching(AsOfInputs(fragments=None, events=events, links=None, regions=None), affected).events
    assert part is not None

    def key(r: tuple) -> tuple:
        return (r[0], r[1], sorted((ns, [i for i, _ in items]) for ns, items in r[2].items()))

    got = sorted(
        key((r["_id"], r["timestamp"], {k: [tuple(i) for i in v] for k, v in r["identityMap"].items()}))
        for r in part.collect()
    )
    assert got == sorted(key(r) for r in rows[:7])


def test_holding_keeps_every_row_that_holds_an_identity_with_its_other_columns(spark: SparkSession) -> None:
    """The micro-batch's filter before validating primary identities: each row holding an affected identity (any
    namespace spelling, any position, duplicates kept, a row holding two or three of them once — at its first
    identity or only after it —, an empty first list), whole, whatever its other columns are called or hold (a
    map; columns named like an identity's); a row holding none is left out."""

    def fragment(name: str, ids: dict[str, list[str]] | None) -> tuple:
        identity_map = None if ids is None else {ns: [(i, False) for i in values] for ns, values in ids.items()}
        return (name, identity_map, {"name": name}, f"ns-{name}", f"id-{name}")

    rows = [
        fragment("both", {"ECID": [E1], "EMAIL": ["x@example.com"]}),  # two affected identities: kept once
        fragment("both", {"ECID": [E1], "EMAIL": ["x@example.com"]}),  # the same row twice: kept twice
        fragment("second", {"EMAIL": ["y@example.com", "x@example.com"]}),  # second in its list
        fragment("hash", {"Email_LC_SHA256": ["h1"]}),  # namespace normalised before matching
        fragment("other", {"ECID": [E2], "EMAIL": ["y@example.com"]}),  # touches nothing
        fragment("none", None),
        # Not at the first identity, twice: kept once.
        fragment("later", {"ECID": [E2], "EMAIL": ["x@example.com"], "Email_LC_SHA256": ["h1"]}),
        fragment("later", {"ECID": [E2], "EMAIL": ["x@example.com"], "Email_LC_SHA256": ["h1"]}),  # and its copy
        fragment("empty-first", {"ECID": [], "EMAIL": ["x@example.com", "y@example.com"]}),  # first list empty
        fragment("first-of-three", {"EMAIL": ["x@example.com"], "ECID": [E1], "CRMID": ["c-none"]}),
    ]
    schema = f"name string, identityMap {IDENTITY_MAP}, attributes map<string, string>, namespace string, id string"
    fragments = spark.createDataFrame(rows, schema).repartition(3)  # copies in different partitions too
    affected = spark.createDataFrame(
        [("ECID", E1), ("EMAIL", "x@example.com"), ("EMAIL_LC_SHA256", "h1")], "namespace string, id string"
    )
    kept = holding(fragments, affected)
    assert kept.columns == ["name", "identityMap", "attributes", "namespace", "id"]
    got = sorted((r["name"], r["attributes"]["name"], r["namespace"], r["id"]) for r in kept.collect())
    names = ["both", "both", "empty-first", "first-of-three", "hash", "later", "later", "second"]
    assert got == [(n, n, f"ns-{n}", f"id-{n}") for n in names]


def test_the_previous_rows_of_seeds_and_revisited_identities_are_found_together(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    """Rule 7's two scans give what the four separate lookups gave: the revisited identities' rows, the seeds'
    persons closed under rule 2 (as :func:`_with_previous_persons`), and every row of both kinds of person."""
    previous = spark.createDataFrame(
        [
            ("ECID", "e1", "p1", 2), ("Email", "m1", "p1", 2),
            ("ECID", "e2", "p2", 2), ("CRMID", "c2", "p2", 2),
            ("ECID", "e3", "p3", 2), ("IDFA", "d3", "p3", 2),
        ],
        "namespace string, id string, person_id string, graph_size int",
    )  # fmt: skip
    ids = "namespace string, id string"
    seeds = spark.createDataFrame([("ECID", "e1"), ("ECID", "e9")], ids)
    adding = spark.createDataFrame([("ECID", "e2"), ("ECID", "e1"), ("IDFA", "d8")], ids)  # e1: of both kinds
    found = _previous_rows(seeds, adding, previous, checkpoint)
    assert sorted(found.known.collect()) == [("ECID", "e1", "p1", 2), ("ECID", "e2", "p2", 2)]
    assert sorted(r.person_id for r in found.rows.collect()) == ["p1", "p1", "p2", "p2"]  # not p3
    # The seeds the closure starts from: the seeds and the added identities without a previous row.
    closing = spark.createDataFrame([("ECID", "e1"), ("ECID", "e9"), ("IDFA", "d8")], ids)
    got, expected = found.around(closing), _with_previous_persons(closing, previous, checkpoint)
    assert sorted(got.identities.collect()) == sorted(expected.identities.collect())
    assert sorted(got.persons.collect()) == sorted(expected.persons.collect()) == [("p1",)]
    assert got.rows is not None and expected.rows is not None
    assert sorted(got.rows.collect()) == sorted(expected.rows.collect())
    assert tuple(got.rows.columns) == tuple(found.rows.columns) == CLUSTER_COLUMNS
