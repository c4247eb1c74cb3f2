"""Activation: accepted identities, change reasons, state, routing."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from audience_activation.activation import (
    STATE_SCHEMA,
    accepted_identities,
    current_members,
    diff_activations,
    edge_regions,
    mappings_frame,
    route_changes,
)
from audience_activation.columns import identity_map_entries, identity_rows
from audience_activation.config import DestinationConfig, NamespacesConfig, RegionsConfig
from audience_activation.membership import MEMBERSHIP_SCHEMA

T = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
NT = dt.datetime(2026, 11, 29)
DAY = dt.timedelta(days=1)
IMAP = "map<string, array<struct<id: string, primary: boolean>>>"
E1, E2 = "1" * 38, "2" * 38


def sha(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


def aam(**overrides) -> DestinationConfig:  # type: ignore[no-untyped-def]
    return DestinationConfig(
        **{"id": "aam", "type": "audience_manager", "segments": ["s1"], "hash_emails": True, **overrides}
    )


def test_accepted_identities_hash_dedupe_and_primary(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            (
                {
                    "ECID": [(E1, False)],
                    "Email": [(" Ann@X.com ", True)],
                    "EMAIL_LC_SHA256": [(sha("ann@x.com"), False)],
                    "CRMID": [("c1", False)],
                    "IDFA": [("D", False)],
                },
            )
        ],
        f"identityMap {IMAP}",
    )
    got = df.select(accepted_identities(F.col("identityMap"), aam(), NamespacesConfig()).alias("m")).first()["m"]
    assert got == {
        "ECID": [(E1, False)],
        "EMAIL_LC_SHA256": [(sha("ann@x.com"), True)],  # Email hashed, de-duplicated; priority 3 beats IDFA 5
        "IDFA": [("D", False)],
    }
    raw = DestinationConfig(id="mkto", type="marketo", segments=[])
    got = df.select(accepted_identities(F.col("identityMap"), raw, NamespacesConfig()).alias("m")).first()["m"]
    assert got == {"ECID": [(E1, False)], "Email": [(" Ann@X.com ", True)]}


def reference_accepted(identity_map: dict, destination: DestinationConfig, namespaces: NamespacesConfig) -> dict:
    """The documented rule, entry by entry: normalise, hash e-mails, keep accepted namespaces, de-duplicate, flag
    the highest-priority identity (priority number, namespace, id) as primary."""
    entries = set()
    for namespace, items in identity_map.items():
        namespace = "EMAIL_LC_SHA256" if namespace == "Email_LC_SHA256" else namespace
        for identity, _primary in items or []:
            if destination.hash_emails and namespace == "Email":
                namespace_, identity_ = "EMAIL_LC_SHA256", sha(identity)
            elif destination.hash_emails and namespace == "EMAIL_LC_SHA256":
                namespace_, identity_ = namespace, identity.lower()
            else:
                namespace_, identity_ = namespace, identity
            if namespace_ in destination.namespaces:
                entries.add((namespace_, identity_))
    if not entries:
        return {}
    priority = namespaces.priorities()
    best = min(entries, key=lambda e: (priority.get(e[0], namespaces.unknown_priority), e[0], e[1]))
    return {
        ns: [(i, (ns, i) == best) for i in sorted(i for n, i in entries if n == ns)]
        for ns in sorted({n for n, _ in entries})
    }


NAMESPACE_CODES = ("ECID", "Email", "EMAIL_LC_SHA256", "Email_LC_SHA256", "CRMID", "IDFA", "GAID", "Phone", "Other")
ids = st.text(alphabet="aAbB@. 01", min_size=1, max_size=4)
identity_maps = st.dictionaries(
    st.sampled_from(NAMESPACE_CODES), st.lists(st.tuples(ids, st.booleans()), max_size=3), max_size=5
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(maps=st.lists(identity_maps, min_size=1, max_size=8), hashing=st.booleans())
def test_accepted_identities_match_the_reference_rule(spark: SparkSession, maps: list[dict], hashing: bool) -> None:
    destination = DestinationConfig(
        id="d",
        type="audience_manager",
        segments=[],
        hash_emails=hashing,
        namespaces=["ECID", "EMAIL_LC_SHA256", "Email", "IDFA", "Other"],
    )
    df = spark.createDataFrame([(i, m) for i, m in enumerate(maps)], f"n int, identityMap {IMAP}")
    got = {
        r.n: {k: [tuple(e) for e in v] for k, v in r.m.items()}
        for r in df.select(
            "n", accepted_identities(F.col("identityMap"), destination, NamespacesConfig()).alias("m")
        ).collect()
    }
    assert got == {i: reference_accepted(m, destination, NamespacesConfig()) for i, m in enumerate(maps)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    maps=st.lists(
        st.none()
        | st.dictionaries(
            st.sampled_from(NAMESPACE_CODES),
            st.none() | st.lists(st.tuples(ids, st.none() | st.booleans()), max_size=3),
            max_size=4,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_identity_rows_are_the_flattened_entries(spark: SparkSession, maps: list[dict | None]) -> None:
    """The generator form of the identity map (used where rows are wanted) gives exactly the flattened entries:
    namespaces normalised, a missing primary read as false, a null map or list giving nothing."""
    df = spark.createDataFrame([(i, m) for i, m in enumerate(maps)], f"n int, identityMap {IMAP}")
    got = sorted(tuple(r) for r in identity_rows(df, "n").select("n", "namespace", "id", "primary").collect())
    expected = sorted(
        tuple(r)
        for r in df.select("n", F.inline(identity_map_entries(F.col("identityMap"))))
        .select("n", "namespace", "id", "primary")
        .collect()
    )
    assert got == expected
    assert all(isinstance(primary, bool) for *_, primary in got)


def test_id_lists_without_hashing_use_no_lambda(spark: SparkSession) -> None:
    """A namespace's id list is read with array functions only (a lambda would be interpreted per element and
    turn off code generation); only the hashed e-mail list needs one (SHA-256 of each e-mail)."""
    from audience_activation.activation import _id_list

    plain = str(_id_list(F.col("identityMap"), "ECID", with_hashed_emails=False))
    hashed = str(_id_list(F.col("identityMap"), "EMAIL_LC_SHA256", with_hashed_emails=True))
    assert "->" not in plain and "array_sort" not in plain
    assert "transform(" in hashed


@pytest.fixture()
def membership(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        [
            ("p1", "s1", "realized", NT - DAY, NT, "batch"),
            ("p2", "s1", "realized", NT, NT, "batch"),
            ("p3", "s1", "realized", NT - DAY, NT, "batch"),
            ("p4", "s1", "exited", NT, NT, "batch"),
        ],
        MEMBERSHIP_SCHEMA,
    )


def test_current_members_consent_and_identities(spark: SparkSession, membership: DataFrame) -> None:
    profiles = spark.createDataFrame(
        [
            ("p1", {"ECID": [(E1, True)]}, "y"),
            ("p2", {"CRMID": [("c2", True)]}, "y"),  # no accepted namespace
            ("p3", {"ECID": [(E2, True)]}, None),  # consent missing: does not pass
        ],
        f"person_id string, identityMap {IMAP}, share string",
    )
    members = current_members(membership, profiles, [aam()], {"aam": F.col("share") == "y"}, NamespacesConfig())
    assert sorted((r.person_id, r.consent_ok, r.activated, r.identities) for r in members.collect()) == [
        ("p1", True, True, {"ECID": [(E1, True)]}),
        ("p2", True, False, {}),
        ("p3", False, False, {"ECID": [(E2, True)]}),
    ]


def test_current_members_each_destination_gets_its_own_view(spark: SparkSession, membership: DataFrame) -> None:
    """Destinations share id lists where they agree; where one hashes e-mails and another does not, each still
    gets its own list (the hashing one: hashed e-mails with the existing hashes; the other: the hashes and the
    raw e-mails)."""
    profiles = spark.createDataFrame(
        [("p1", {"Email": [(" Ann@X.com ", True)], "EMAIL_LC_SHA256": [("AB" * 32, False)], "ECID": [(E1, False)]})],
        f"person_id string, identityMap {IMAP}",
    )
    plain = aam(id="plain", hash_emails=False, namespaces=["Email", "EMAIL_LC_SHA256", "ECID"])
    hashing = aam(id="hashing", hash_emails=True, namespaces=["Email", "EMAIL_LC_SHA256", "ECID"])
    members = current_members(membership, profiles, [plain, hashing], {}, NamespacesConfig())
    got = {(r.destination_id, r.person_id): r.identities for r in members.collect()}
    hashes = sorted([sha("ann@x.com"), "ab" * 32])
    assert got == {
        ("plain", "p1"): {
            "ECID": [(E1, False)],
            "EMAIL_LC_SHA256": [("AB" * 32, False)],
            "Email": [(" Ann@X.com ", True)],
        },
        ("hashing", "p1"): {"ECID": [(E1, False)], "EMAIL_LC_SHA256": [(hashes[0], True), (hashes[1], False)]},
    }


def test_change_reasons(spark: SparkSession) -> None:
    ids = {"ECID": [(E1, True)]}
    sent = {"ECID": [(E2, True)]}
    current = spark.createDataFrame(
        [
            ("aam", "s1", "new", True, True, ids),  # not realized before: qualified
            ("aam", "s1", "consented", True, True, ids),  # realized before, consent failed then
            ("aam", "s1", "got-id", True, True, ids),  # realized before, consent ok, no identity then
            ("aam", "s1", "stays", True, True, ids),  # activated both times: no row
            ("aam", "s1", "revoked", False, False, ids),
            ("aam", "s1", "lost-id", True, False, {}),
            ("aam", "s2", "x", True, True, ids),  # s2 newly mapped: backfill
        ],
        "destination_id string, segment_id string, person_id string, consent_ok boolean, activated boolean, "
        f"identities {IMAP}",
    )
    previous_state = spark.createDataFrame(
        [
            ("aam", "s1", "consented", False, False, None),
            ("aam", "s1", "got-id", True, False, None),
            ("aam", "s1", "stays", True, True, sent),
            ("aam", "s1", "revoked", True, True, sent),
            ("aam", "s1", "lost-id", True, True, sent),
            ("aam", "s1", "gone", True, True, sent),  # no longer realized: disqualified
            ("aam", "s3", "y", True, True, sent),  # s3 unmapped
        ],
        STATE_SCHEMA,
    )
    previous_membership = spark.createDataFrame(
        [
            (p, "s1", "realized", NT - DAY, NT - DAY, "batch")
            for p in ("consented", "got-id", "stays", "revoked", "lost-id", "gone")
        ],
        MEMBERSHIP_SCHEMA,
    )
    membership = spark.createDataFrame(
        [(p, "s1", "realized", NT - DAY, NT, "batch") for p in ("consented", "got-id", "stays", "revoked", "lost-id")]
        + [
            ("new", "s1", "realized", NT, NT, "batch"),
            ("gone", "s1", "exited", NT, NT, "batch"),
            ("x", "s2", "realized", NT, NT, "batch"),
        ],
        MEMBERSHIP_SCHEMA,
    )
    destinations = [aam(segments=["s1", "s2"])]
    previous_mappings = spark.createDataFrame(
        [("aam", "s1"), ("aam", "s3")], "destination_id string, segment_id string"
    )
    result = diff_activations(
        current,
        previous_state,
        previous_membership,
        membership,
        mappings_frame(spark, destinations),
        previous_mappings,
        T,
    )
    changes = sorted(
        (r.segment_id, r.person_id, r.status, r.reason, r.last_qualification_time, r.identityMap)
        for r in result.changes.collect()
    )
    assert changes == [
        ("s1", "consented", "realized", "consent_granted", NT - DAY, ids),
        ("s1", "gone", "exited", "disqualified", NT, sent),
        ("s1", "got-id", "realized", "identity_added", NT - DAY, ids),
        ("s1", "lost-id", "exited", "identity_removed", NT - DAY, sent),
        ("s1", "new", "realized", "qualified", NT, ids),
        ("s1", "revoked", "exited", "consent_revoked", NT - DAY, sent),
        ("s2", "x", "realized", "backfill", NT, ids),
        ("s3", "y", "exited", "unmapped", NT, sent),
    ]
    state = {(r.segment_id, r.person_id): (r.activated, r.identities_sent) for r in result.state.collect()}
    assert state[("s1", "stays")] == (True, sent)  # identities as sent when added, not the current ones
    assert state[("s1", "new")] == (True, ids)
    assert state[("s1", "revoked")] == (False, None)
    assert ("s3", "y") not in state and ("s1", "gone") not in state
    assert sorted(tuple(r) for r in result.exclusions.collect()) == [
        ("aam", "consent", 1),
        ("aam", "no_matching_identity", 1),
    ]


def test_routing_edge_per_fresh_region_else_hub(spark: SparkSession) -> None:
    clusters = spark.createDataFrame(
        [("ECID", E1, "p1"), ("CRMID", "c1", "p1"), ("ECID", E2, "p2")], "namespace string, id string, person_id string"
    )
    previous_clusters = spark.createDataFrame(
        # p1's previous graph held another ECID: p1 still exists, so its graph at T routes it (not NL3)
        [("ECID", "3" * 38, "old"), ("ECID", "4" * 38, "p1")],
        "namespace string, id string, person_id string",
    )
    regions = spark.createDataFrame(
        [
            ({"ECID": [(E1, True)]}, {"VA6": (NT - DAY,), "IRL1": (NT - 2 * DAY,), "OR2": (NT - 20 * DAY,)}),
            ({"ECID": [(E2, True)]}, {"OR2": (NT - 15 * DAY,)}),  # stale: hub
            ({"ECID": [("3" * 38, True)]}, {"XX9": (NT - DAY,)}),  # unknown code: null dcs id
            ({"ECID": [("4" * 38, True)]}, {"NL3": (NT - DAY,)}),
        ],
        f"identityMap {IMAP}, userActivityRegions map<string, struct<captureTimestamp: timestamp>>",
    )
    changes = spark.createDataFrame(
        [
            ("aam", "s1", "p1", "realized", "qualified", NT, None),
            ("aam", "s1", "p2", "realized", "qualified", NT, None),
            ("aam", "s1", "old", "exited", "disqualified", NT, None),  # person gone: routed on its previous graph
            ("cja", "s1", "p1", "realized", "qualified", NT, None),  # hub routing
        ],
        f"destination_id string, segment_id string, person_id string, status string, reason string, last_qualification_time timestamp, identityMap {IMAP}",
    )
    destinations = [aam(), DestinationConfig(id="cja", type="customer_journey_analytics", segments=["s1"])]
    routed = route_changes(
        changes, destinations, edge_regions(clusters, previous_clusters, regions, T, 14), RegionsConfig()
    )
    assert sorted((r.destination_id, r.person_id, r.route, r.region, r.dcs_region_id) for r in routed.collect()) == [
        ("aam", "old", "edge_streaming", "XX9", None),
        ("aam", "p1", "edge_streaming", "IRL1", 6),
        ("aam", "p1", "edge_streaming", "VA6", 7),
        ("aam", "p2", "hub_batch", None, None),
        ("cja", "p1", "hub_batch", None, None),
    ]
