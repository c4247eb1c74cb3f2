"""Settled persons (``settled.py``, rule 9 of ``affected``): a new record whose linking identities all belong to one
settled person only revisits it, and the persons then resolved are still exactly those of a whole resolution —
checked by hand and against the plain-Python reference model on random graphs resolved in two steps, the second
with the settled persons the first one found."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession

from audience_activation.affected import Affected, resolve_affected, split_seeds
from audience_activation.as_of import as_of
from audience_activation.config import IdentitySettings
from audience_activation.settled import restating
from audience_activation.storage.base import ParquetCheckpoint
from test_affected import (
    DAY,
    E1,
    E2,
    NAMESPACES,
    Fragment,
    Link,
    T,
    check,
    fragments,
    frames,
    links,
    reference,
)

E3, E4 = "3" * 38, "4" * 38
LIMITS = (3, 4)  # max_links_per_identity, max_identities_per_graph
#: The property test's limits: two links per identity make hubs (and persons near the limit) common in small
#: random graphs; three identities per graph make evictions common.
PROPERTY_LIMITS = (2, 3)
SETTLED_DDL = "namespace string, id string, person_id string"
Rows = tuple[Sequence[Link], Sequence[Fragment], Sequence[tuple[str, str]]]


@pytest.fixture()
def checkpoint(spark: SparkSession, tmp_path: Path) -> Iterator[ParquetCheckpoint]:
    barrier = ParquetCheckpoint(spark, str(tmp_path / "scratch"))
    yield barrier
    barrier.cleanup()


def _clusters_frame(spark: SparkSession, clusters: dict[tuple[str, str], tuple[str, int]]) -> DataFrame:
    return spark.createDataFrame(
        [(ns, i, p, size) for (ns, i), (p, size) in clusters.items()],
        "namespace string, id string, person_id string, graph_size int",
    )


def step(
    spark: SparkSession,
    checkpoint: ParquetCheckpoint,
    old: Rows,
    new: Rows,
    settled: DataFrame | None,
    limits: tuple[int, int] = LIMITS,
) -> Affected:
    """A micro-batch's resolution of ``new`` rows over ``old`` ones, the previous clusters being the reference on
    ``old`` (None when there is no old row: everything is resolved), seeded as the stream seeds, with ``settled``."""
    every = tuple(list(o) + list(n) for o, n in zip(old, new, strict=True))
    links_, fragments_, regions_ = frames(spark, *every)  # type: ignore[arg-type]
    new_links, new_fragments, new_regions = frames(spark, *new)
    previous = _clusters_frame(spark, reference(*old, limits)) if any(old) else None
    fresh = as_of(new_fragments, None, new_links, new_regions, T)
    settings_ = IdentitySettings(max_links_per_identity=limits[0], max_identities_per_graph=limits[1])
    seeds, adding = split_seeds(fresh, NAMESPACES, settings_, checkpoint, settled)
    return resolve_affected(
        as_of(fragments_, None, links_, regions_, T),
        seeds,
        previous,
        NAMESPACES,
        settings_,
        checkpoint,
        None,
        adding if previous is not None else None,
        None,
        settled,
    )


def settled_of(result: Affected) -> dict[tuple[str, str], str]:
    assert result.settled is not None
    rows = result.settled.collect()
    found = {(r.namespace, r.id): r.person_id for r in rows}
    assert len(found) == len(rows)  # one row per identity
    return found


def whole_settled(
    spark: SparkSession, checkpoint: ParquetCheckpoint, rows: Rows, limits: tuple[int, int] = LIMITS
) -> dict[tuple[str, str], str]:
    """The settled persons of a resolution of every row (every identity seeded, nothing known before)."""
    empty = spark.createDataFrame([], SETTLED_DDL)
    return settled_of(step(spark, checkpoint, ([], [], []), rows, empty, limits))


def test_settled_persons_are_whole_components_far_from_the_hub_limit(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    hub = [("IDFA", "hub", "ECID", e, T - 3 * DAY) for e in ("5" * 38, "6" * 38, "7" * 38, "8" * 38)]
    rows: Rows = (
        [
            ("ECID", E1, "Email", "m1", T - 3 * DAY),  # a person of two: settled
            # Two CRMIDs on one cookie: the replay splits the component in two persons, neither settled.
            ("ECID", E2, "CRMID", "c1", T - 3 * DAY),
            ("ECID", E2, "CRMID", "c2", T - 2 * DAY),
            # Three identities, one of them linked to the hub: 1 outside + 2 inside <= 3, settled.
            ("ECID", E3, "Email", "m3", T - 3 * DAY),
            ("Email", "m3", "IDFA", "d3", T - 3 * DAY),
            ("IDFA", "d3", "IDFA", "hub", T - 3 * DAY),
            # Four: 1 outside + 3 inside > 3, not settled (one more inside link would make d4 a hub).
            ("ECID", E4, "Email", "m4", T - 3 * DAY),
            ("Email", "m4", "IDFA", "d4", T - 3 * DAY),
            ("IDFA", "d4", "CRMID", "c4", T - 3 * DAY),
            ("IDFA", "d4", "IDFA", "hub", T - 3 * DAY),
            *hub,
        ],
        [({"CRMID": ["c9"]}, T - DAY)],  # a person of one: nothing to re-state
        [],
    )
    after = reference(*rows, LIMITS)
    assert {k for k, v in after.items() if v[1] > 1} >= {("ECID", E1), ("ECID", E4)}  # as the comments say
    settled = whole_settled(spark, checkpoint, rows)
    assert settled == {
        k: after[k][0] for k in [("ECID", E1), ("Email", "m1"), ("ECID", E3), ("Email", "m3"), ("IDFA", "d3")]
    }


def test_restating_keeps_lists_held_by_one_settled_person(spark: SparkSession) -> None:
    settled = spark.createDataFrame(
        [("ECID", E1, "p1"), ("Email", "m1", "p1"), ("ECID", E2, "p2"), ("Email", "m2", "p2")], SETTLED_DDL
    )
    key = lambda ns, i: f"{ns}\u0000{i}"  # noqa: E731 - identity.node_key's layout
    lists = [
        [key("ECID", E1), key("Email", "m1")],  # one settled person
        [key("ECID", E1), key("Email", "m2")],  # two persons: links them
        [key("ECID", E1), key("Email", "new")],  # an identity not settled
        [key("Email", "m2")],  # (a single identity: never a candidate, but held by one person)
    ]
    found = restating(spark.createDataFrame([(v,) for v in lists], "_linking array<string>"), settled).collect()
    assert sorted(r._linking for r in found) == sorted([lists[0], lists[3]])


def test_split_seeds_takes_rows_restating_a_settled_person_for_added_identities(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    """A record or a link whose linking identities all belong to one settled person only revisits it; one that
    also holds another person's identity, an unknown one, or (a link) a non-people end still seeds. Without the
    settled persons every such row seeds."""
    settled = spark.createDataFrame([("ECID", E1, "p1"), ("Email", "m1", "p1"), ("ECID", E2, "p2")], SETTLED_DDL)
    new_links, new_fragments, new_regions = frames(
        spark,
        [
            ("ECID", E1, "Email", "m1", T - DAY),  # inside p1
            ("ECID", E2, "Email", "m1", T - DAY),  # across p1 and p2
            ("ECID", E1, "STORE", "s1", T - DAY),  # a non-people end: no pair, but a link row (seeds)
        ],
        [
            ({"ECID": [E1], "Email": ["m1"]}, T - DAY),  # inside p1
            ({"ECID": [E2], "CRMID": ["c9"]}, T - DAY),  # c9 is unknown
        ],
        [],
    )
    fresh = as_of(new_fragments, None, new_links, new_regions, T)
    settings_ = IdentitySettings(max_links_per_identity=LIMITS[0], max_identities_per_graph=LIMITS[1])

    def split(known: DataFrame | None) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        changing, adding = split_seeds(fresh, NAMESPACES, settings_, checkpoint, known)
        return {(r.namespace, r.id) for r in changing.collect()}, {(r.namespace, r.id) for r in adding.collect()}

    every = {("ECID", E1), ("Email", "m1"), ("ECID", E2), ("STORE", "s1"), ("CRMID", "c9")}
    assert split(None) == (every, set())
    # E1 is in the link to s1 (a seed); m1 in the link from E2; E2 and c9 in the record with the unknown c9.
    assert split(settled) == (every, set())
    inside_only = frames(
        spark, [("ECID", E1, "Email", "m1", T - DAY)], [({"ECID": [E1], "Email": ["m1"]}, T - DAY)], []
    )
    fresh = as_of(inside_only[1], None, inside_only[0], inside_only[2], T)
    assert split(settled) == (set(), {("ECID", E1), ("Email", "m1")})
    assert split(None) == ({("ECID", E1), ("Email", "m1")}, set())


def test_a_record_restating_a_settled_person_revisits_it_and_one_near_the_hub_limit_is_resolved(
    spark: SparkSession, checkpoint: ParquetCheckpoint
) -> None:
    """With the settled persons of the previous step, a copy of a record of a settled person is not resolved (no
    round), and the persons are as a whole resolution gives them. A record linking two identities of a person
    that is not settled (d4 has three neighbours, one of them a hub: a fourth makes d4 a hub) is resolved, and
    splits it."""
    hub = [("IDFA", "hub", "ECID", e, T - 3 * DAY) for e in ("5" * 38, "6" * 38, "7" * 38, "8" * 38)]
    chain = [
        ("ECID", E4, "Email", "m4", T - 3 * DAY),
        ("Email", "m4", "IDFA", "d4", T - 3 * DAY),
        ("IDFA", "d4", "CRMID", "c4", T - 3 * DAY),
        ("IDFA", "d4", "IDFA", "hub", T - 3 * DAY),
    ]
    old: Rows = ([("ECID", E1, "Email", "m1", T - 3 * DAY), *chain, *hub], [], [])
    first = settled_of(step(spark, checkpoint, ([], [], []), old, spark.createDataFrame([], SETTLED_DDL)))
    assert set(first) == {("ECID", E1), ("Email", "m1")}  # (the four ECIDs of the hub are persons of one)
    kept = spark.createDataFrame([(ns, i, p) for (ns, i), p in first.items()], SETTLED_DDL)

    again: Rows = ([], [({"ECID": [E1], "Email": ["m1"]}, T - DAY)], [])
    result = step(spark, checkpoint, old, again, kept)
    assert result.rounds == 0
    check(*_checked(spark, result, old, again))
    assert settled_of(result) == first  # nothing resolved: the same facts

    near: Rows = ([], [({"IDFA": ["d4"], "ECID": [E4]}, T - DAY)], [])
    result = step(spark, checkpoint, old, near, kept)
    assert result.rounds >= 1
    check(*_checked(spark, result, old, near))
    every = tuple(list(o) + list(n) for o, n in zip(old, near, strict=True))
    assert reference(*every, LIMITS)[("IDFA", "d4")][1] == 1  # d4 became a hub: its person fell apart


def _checked(
    spark: SparkSession, result: Affected, old: Rows, new: Rows, limits: tuple[int, int] = LIMITS
) -> tuple[dict, set, set, dict, dict]:
    """``check``'s arguments for ``result`` of ``new`` rows over ``old`` ones."""
    every = tuple(list(o) + list(n) for o, n in zip(old, new, strict=True))
    clusters = {(r.namespace, r.id): (r.person_id, r.graph_size) for r in result.clusters.collect()}
    identities = {(r.namespace, r.id) for r in result.identities.collect()}
    persons = {r.person_id for r in result.previous_persons.collect()}
    return clusters, identities, persons, reference(*old, limits), reference(*every, limits)  # type: ignore[arg-type]


#: New records over the old rows' persons: (person, first identity, second, third, across) as indexes into the
#: persons of two or more identities and their identities (taken modulo), each record holding two or three
#: identities of one person — pairs it has (a re-stated link, a day newer) or not yet (a new link inside the
#: person) — or, one time in four (``across`` 0), its third identity from the next person (it links the two), or
#: (``across`` 1) an explicit link between its first two identities instead of a record.
inside = st.lists(st.tuples(*[st.integers(min_value=0, max_value=30)] * 4, st.integers(0, 3)), min_size=1, max_size=3)


def _inside_rows(
    before: dict[tuple[str, str], tuple[str, int]], picks: list[tuple[int, ...]]
) -> tuple[list[Link], list[Fragment]]:
    persons: dict[str, list[tuple[str, str]]] = {}
    for identity, (person, _) in sorted(before.items()):
        persons.setdefault(person, []).append(identity)
    shared = [ids for _, ids in sorted(persons.items()) if len(ids) >= 2]
    records, links_ = [], []
    for p, first, second, third, across in picks:
        if shared and across == 1:
            ids = shared[p % len(shared)]
            a, b = ids[first % len(ids)], ids[second % len(ids)]
            links_.append((*a, *b, T - DAY))
        elif shared:
            ids = shared[p % len(shared)]
            other = shared[(p + 1) % len(shared)] if across == 0 else ids
            chosen = list(dict.fromkeys([ids[first % len(ids)], ids[second % len(ids)], other[third % len(other)]]))
            identity_map: dict[str, list[str]] = {}
            for ns, i in chosen:
                identity_map.setdefault(ns, []).append(i)
            records.append((identity_map, T - DAY))
    return links_, records


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(old_links=links, old_fragments=fragments, later=st.tuples(links, fragments), picks=inside)
def test_resolving_with_the_settled_persons_of_an_earlier_step_matches_a_whole_resolution(
    spark: SparkSession,
    checkpoint: ParquetCheckpoint,
    old_links: list[Link],
    old_fragments: list[Fragment],
    later: tuple[list[Link], list[Fragment]],
    picks: list[tuple[int, ...]],
) -> None:
    """Step 1 resolves the old rows whole and keeps its settled persons; step 2 adds new rows — records and links
    holding two or three identities of one old person (re-stating a link a day later, or linking two of its
    identities anew), records across two persons, and random links and fragments — with those settled persons. Step 2's persons are exact, and every
    person it reports settled is settled in a whole resolution of all the rows (rule 3: the facts still hold)."""
    old: Rows = (old_links, old_fragments, [])
    if not any(old):
        return
    limits = PROPERTY_LIMITS
    first = step(spark, checkpoint, ([], [], []), old, spark.createDataFrame([], SETTLED_DDL), limits)
    inside_links, inside_records = _inside_rows(reference(*old, limits), picks)
    new: Rows = ([*later[0], *inside_links], [*later[1], *inside_records], [])
    if not any(new):
        return
    result = step(spark, checkpoint, old, new, first.settled, limits)
    check(*_checked(spark, result, old, new, limits))
    every: Rows = tuple(list(o) + list(n) for o, n in zip(old, new, strict=True))  # type: ignore[assignment]
    assert settled_of(result).items() <= whole_settled(spark, checkpoint, every, limits).items()
