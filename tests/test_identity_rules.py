"""Hand-made cases for the identity rules (docs/identity.md) in plain Python, no Spark: the per-component rules of
``audience_activation.identity_rules`` and the reference model of the whole job in ``identity_reference``.

Identities are written ``"<namespace>:<id>"``, like person ids; expected results are written out.
"""

from __future__ import annotations

from datetime import datetime
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audience_activation.identity_rules import (
    Link,
    NamespaceTable,
    NsInfo,
    normalize_links,
    normalize_namespace,
    person_id,
    resolve_component,
)
from identity_reference import Record, public_person_id, resolve_identities, validate_identity

# The built-in namespaces (docs/configuration.md, "namespaces.yaml").
DEFAULTS = NamespaceTable(
    {
        "CRMID": NsInfo("cross_device", unique=True, priority=1),
        "Email": NsInfo("email", unique=False, priority=2),
        "EMAIL_LC_SHA256": NsInfo("email", unique=False, priority=3),
        "Phone": NsInfo("phone", unique=False, priority=4),
        "IDFA": NsInfo("device", unique=False, priority=5),
        "GAID": NsInfo("device", unique=False, priority=6),
        "ECID": NsInfo("cookie", unique=False, priority=7),
        "AdCloud": NsInfo("cookie", unique=False, priority=8),
        "TNTID": NsInfo("cookie", unique=False, priority=9),
    }
)
WITH_STORES = NamespaceTable(
    {
        "CRMID": NsInfo("cross_device", unique=True, priority=1),
        "Email": NsInfo("email", unique=False, priority=2),
        "ECID": NsInfo("cookie", unique=False, priority=7),
        "StoreId": NsInfo("non_people", unique=False, priority=20),
        "PartnerId": NsInfo("partner", unique=False, priority=21),
    }
)

# Valid ECIDs (38 digits); as strings E1 < E2 < E3 < E4.
E1 = "1" * 38
E2 = "2" * 38
E3 = "3" * 38
E4 = "4" * 38
SHA = "a3f1" * 16  # 64 hex characters


def link(left: str, right: str, last_seen_at: int | datetime) -> Link:
    """A link between two identities written ``"<namespace>:<id>"``."""
    src_ns, src_id = left.split(":", 1)
    dst_ns, dst_id = right.split(":", 1)
    return Link(src_ns, src_id, dst_ns, dst_id, last_seen_at)


def public(expected: dict) -> dict:
    """Expected clusters with e-mail and phone person ids written as outputs carry them (SHA-256)."""
    return {key: (public_person_id(person, DEFAULTS), size) for key, (person, size) in expected.items()}


def resolve(links: list[Link], limit: int = 50, table: NamespaceTable = DEFAULTS) -> dict[str, tuple[str, int]]:
    """``resolve_component`` as ``{"<namespace>:<id>": (person_id, graph_size)}``."""
    assignments, _ = resolve_component(links, table, limit)
    return {f"{row.namespace}:{row.id}": (row.person_id, row.graph_size) for row in assignments}


def evictions(links: list[Link], limit: int, table: NamespaceTable = DEFAULTS) -> list[str]:
    return [f"{ns}:{id_}" for ns, id_ in resolve_component(links, table, limit)[1]]


# --- Validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "value", "reason"),
    [
        ("CRMID", "abc", None),
        ("CRMID", " null ", None),  # exactly as written: not trimmed, so not reserved
        ("CRMID", "", "empty"),
        ("CRMID", " \t\n", "empty"),
        ("ECID", "   ", "empty"),  # empty is checked before bad_ecid
        ("CRMID", None, "reserved_value"),
        ("CRMID", "null", "reserved_value"),
        ("CRMID", "NULL", "reserved_value"),
        ("Email", "Anonymous", "reserved_value"),
        ("ECID", "inVALID", "reserved_value"),  # reserved is checked before bad_ecid
        ("CRMID", "x" * 1024, None),
        ("CRMID", "x" * 1025, "too_long"),
        ("ECID", "1" * 1025, "too_long"),  # too_long is checked before bad_ecid
        ("ECID", "1" * 38, None),
        ("ECID", "1" * 37, "bad_ecid"),
        ("ECID", "1" * 39, "bad_ecid"),
        ("ECID", "1" * 37 + "a", "bad_ecid"),
        ("ECID", "\u0661" * 38, "bad_ecid"),  # Arabic-Indic digit one is not an ASCII digit
        ("ecid", "123", None),  # namespace codes are exact: "ecid" is not ECID
        ("EMAIL_LC_SHA256", "a3f1" * 16, None),
        ("EMAIL_LC_SHA256", "A3F1" * 16, None),
        ("EMAIL_LC_SHA256", "a3f1" * 16 + "0", "bad_email_sha256"),
        ("EMAIL_LC_SHA256", "g" * 64, "bad_email_sha256"),
        ("Email_LC_SHA256", "not-a-hash", "bad_email_sha256"),  # read as EMAIL_LC_SHA256
        ("Email", "not-a-hash", None),
    ],
)
def test_validate_identity(namespace: str, value: str | None, reason: str | None) -> None:
    assert validate_identity(namespace, value) == reason


def test_normalize_namespace_reads_only_the_documented_alias() -> None:
    assert normalize_namespace("Email_LC_SHA256") == "EMAIL_LC_SHA256"
    assert normalize_namespace("email_lc_sha256") == "email_lc_sha256"
    assert normalize_namespace("ECID") == "ECID"


# --- Namespace table --------------------------------------------------------------------------------


def test_unknown_namespace_is_cross_device_not_unique_lowest_priority() -> None:
    assert DEFAULTS.info("Loyalty") == NsInfo("cross_device", unique=False, priority=10)
    assert DEFAULTS.info("ECID") == NsInfo("cookie", unique=False, priority=7)
    assert NamespaceTable({}).info("Loyalty") == NsInfo("cross_device", unique=False, priority=1)


def test_namespace_table_reads_the_alias_in_configuration() -> None:
    table = NamespaceTable({"Email_LC_SHA256": NsInfo("email", unique=False, priority=3)})
    assert table.info("EMAIL_LC_SHA256") == NsInfo("email", unique=False, priority=3)


def test_namespace_table_rejects_conflicting_entries_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="EMAIL_LC_SHA256"):
        NamespaceTable(
            {
                "Email_LC_SHA256": NsInfo("email", unique=False, priority=3),
                "EMAIL_LC_SHA256": NsInfo("email", unique=False, priority=4),
            }
        )
    with pytest.raises(ValueError, match="household"):
        NsInfo("household", unique=False, priority=1)


# --- Links ------------------------------------------------------------------------------------------


def test_normalize_links_orients_drops_self_links_and_keeps_newest() -> None:
    links = [
        link("ECID:" + E1, "CRMID:a", 5),
        link("CRMID:a", "ECID:" + E1, 7),
        link("CRMID:a", "ECID:" + E1, 6),
        link("Email:x", "Email:x", 9),
    ]
    assert normalize_links(links) == [Link("CRMID", "a", "ECID", E1, 7)]


# --- Graphs -----------------------------------------------------------------------------------------


def test_chain_is_one_person() -> None:
    links = [
        link("CRMID:a", "Email:x", 1),
        link("Email:x", "ECID:" + E1, 2),
        link("ECID:" + E1, "GAID:g", 3),
    ]
    assert resolve(links) == {
        "CRMID:a": ("CRMID:a", 4),
        "Email:x": ("CRMID:a", 4),
        "ECID:" + E1: ("CRMID:a", 4),
        "GAID:g": ("CRMID:a", 4),
    }


def test_star_is_one_person() -> None:
    links = [
        link("CRMID:a", "Email:x", 1),
        link("CRMID:a", "Phone:p", 2),
        link("CRMID:a", "ECID:" + E1, 3),
        link("CRMID:a", "ECID:" + E2, 4),
        link("CRMID:a", "IDFA:i", 5),
    ]
    assert resolve(links) == {
        "CRMID:a": ("CRMID:a", 6),
        "Email:x": ("CRMID:a", 6),
        "Phone:p": ("CRMID:a", 6),
        "ECID:" + E1: ("CRMID:a", 6),
        "ECID:" + E2: ("CRMID:a", 6),
        "IDFA:i": ("CRMID:a", 6),
    }


def test_shared_device_goes_to_the_most_recent_login() -> None:
    links = [
        link("CRMID:a", "ECID:" + E1, 10),
        link("CRMID:b", "ECID:" + E1, 20),
        link("CRMID:a", "ECID:" + E2, 5),
    ]
    assert resolve(links) == {
        "CRMID:a": ("CRMID:a", 2),
        "ECID:" + E2: ("CRMID:a", 2),
        "CRMID:b": ("CRMID:b", 2),
        "ECID:" + E1: ("CRMID:b", 2),
    }


def test_recency_beats_priority_sum() -> None:
    links = [
        link("CRMID:a", "Phone:p", 30),
        link("ECID:" + E1, "Phone:p", 20),  # priority sum 11, newer
        link("CRMID:b", "ECID:" + E1, 10),  # priority sum 8, older: would merge a and b
    ]
    assert resolve(links) == {
        "CRMID:a": ("CRMID:a", 3),
        "Phone:p": ("CRMID:a", 3),
        "ECID:" + E1: ("CRMID:a", 3),
        "CRMID:b": ("CRMID:b", 1),
    }


def test_equal_times_replay_the_lower_priority_sum_first() -> None:
    links = [
        link("CRMID:a", "Phone:p", 30),
        link("CRMID:b", "AdCloud:c", 30),
        link("AdCloud:c", "ECID:" + E1, 10),  # sum 15; first by (namespace, id) order
        link("ECID:" + E1, "Phone:p", 10),  # sum 11: wins
    ]
    assert resolve(links) == {
        "CRMID:a": ("CRMID:a", 3),
        "Phone:p": ("CRMID:a", 3),
        "ECID:" + E1: ("CRMID:a", 3),
        "CRMID:b": ("CRMID:b", 2),
        "AdCloud:c": ("CRMID:b", 2),
    }


def test_equal_times_and_sums_replay_in_namespace_id_order() -> None:
    links = [
        link("CRMID:a", "ECID:" + E2, 30),
        link("CRMID:b", "ECID:" + E3, 30),
        link("ECID:" + E3, "ECID:" + E1, 10),  # given first, but (E1, E3) sorts after (E1, E2)
        link("ECID:" + E2, "ECID:" + E1, 10),
    ]
    assert resolve(links) == {
        "CRMID:a": ("CRMID:a", 3),
        "ECID:" + E1: ("CRMID:a", 3),
        "ECID:" + E2: ("CRMID:a", 3),
        "CRMID:b": ("CRMID:b", 2),
        "ECID:" + E3: ("CRMID:b", 2),
    }


def test_equal_times_and_sums_compare_the_source_before_the_destination() -> None:
    links = [
        link("ECID:" + E1, "ECID:" + E2, 30),
        link("CRMID:b", "ECID:" + E3, 30),
        link("CRMID:c", "ECID:" + E4, 30),
        link("ECID:" + E2, "ECID:" + E3, 10),  # smaller destination, larger source
        link("ECID:" + E1, "ECID:" + E4, 10),  # smaller source: replayed first
    ]
    assert resolve(links) == {
        "ECID:" + E1: ("CRMID:c", 4),
        "ECID:" + E2: ("CRMID:c", 4),
        "CRMID:c": ("CRMID:c", 4),
        "ECID:" + E4: ("CRMID:c", 4),
        "CRMID:b": ("CRMID:b", 2),
        "ECID:" + E3: ("CRMID:b", 2),
    }


def test_two_identities_of_a_unique_namespace_never_link() -> None:
    links = [link("CRMID:a", "CRMID:b", 5), link("Email:x", "Email:y", 5)]
    assert resolve(links) == {
        "CRMID:a": ("CRMID:a", 1),
        "CRMID:b": ("CRMID:b", 1),
        "Email:x": ("Email:x", 2),
        "Email:y": ("Email:x", 2),
    }


# --- Graph size limit -------------------------------------------------------------------------------

STAR = [
    link("CRMID:a", "ECID:" + E1, 5),
    link("CRMID:a", "ECID:" + E2, 1),
    link("CRMID:a", "GAID:g", 0),
    link("CRMID:a", "Email:x", 0),
]


def test_eviction_removes_cookies_before_older_devices() -> None:
    assert resolve(STAR, limit=3) == {
        "CRMID:a": ("CRMID:a", 3),
        "GAID:g": ("CRMID:a", 3),
        "Email:x": ("CRMID:a", 3),
        "ECID:" + E1: ("ECID:" + E1, 1),
        "ECID:" + E2: ("ECID:" + E2, 1),
    }
    assert evictions(STAR, limit=3) == ["ECID:" + E1, "ECID:" + E2]


def test_eviction_removes_devices_before_other_types() -> None:
    assert resolve(STAR, limit=2) == {
        "CRMID:a": ("CRMID:a", 2),
        "Email:x": ("CRMID:a", 2),
        "GAID:g": ("GAID:g", 1),
        "ECID:" + E1: ("ECID:" + E1, 1),
        "ECID:" + E2: ("ECID:" + E2, 1),
    }
    assert evictions(STAR, limit=2) == ["ECID:" + E1, "ECID:" + E2, "GAID:g"]


def test_eviction_removes_the_oldest_by_newest_link() -> None:
    links = [
        link("CRMID:a", "ECID:" + E1, 1),
        link("ECID:" + E1, "Email:x", 9),  # E1's time is 9
        link("CRMID:a", "ECID:" + E2, 5),  # E2's time is 5: evicted
    ]
    assert resolve(links, limit=3) == {
        "CRMID:a": ("CRMID:a", 3),
        "ECID:" + E1: ("CRMID:a", 3),
        "Email:x": ("CRMID:a", 3),
        "ECID:" + E2: ("ECID:" + E2, 1),
    }


def test_eviction_time_counts_only_kept_links() -> None:
    table = NamespaceTable(
        {
            "CRMID": NsInfo("cross_device", unique=True, priority=1),
            "GAID": NsInfo("device", unique=False, priority=6),
            "DEVU": NsInfo("device", unique=True, priority=10),
        }
    )
    links = [
        link("CRMID:a", "DEVU:d1", 1),
        link("CRMID:a", "GAID:g", 5),
        link("DEVU:d1", "DEVU:d2", 9),  # skipped by the replay: d1's time stays 1
    ]
    assert resolve(links, limit=2, table=table) == {
        "CRMID:a": ("CRMID:a", 2),
        "GAID:g": ("CRMID:a", 2),
        "DEVU:d1": ("DEVU:d1", 1),
        "DEVU:d2": ("DEVU:d2", 1),
    }
    assert evictions(links, limit=2, table=table) == ["DEVU:d1"]


def test_eviction_ties_by_namespace_then_id() -> None:
    links = [
        link("CRMID:a", "ECID:" + E2, 5),
        link("CRMID:a", "ECID:" + E1, 5),
        link("CRMID:a", "AdCloud:c", 5),
        link("CRMID:a", "Email:x", 5),
    ]
    assert resolve(links, limit=3) == {
        "CRMID:a": ("CRMID:a", 3),
        "ECID:" + E2: ("CRMID:a", 3),
        "Email:x": ("CRMID:a", 3),
        "AdCloud:c": ("AdCloud:c", 1),
        "ECID:" + E1: ("ECID:" + E1, 1),
    }


def test_rest_is_resplit_after_eviction() -> None:
    links = [
        link("CRMID:a", "ECID:" + E1, 5),
        link("ECID:" + E1, "Email:x", 5),
        link("Email:x", "Phone:p", 5),
    ]
    assert resolve(links, limit=3) == {
        "CRMID:a": ("CRMID:a", 1),
        "Email:x": ("Email:x", 2),
        "Phone:p": ("Email:x", 2),
        "ECID:" + E1: ("ECID:" + E1, 1),
    }
    assert evictions(links, limit=3) == ["ECID:" + E1]


def test_whole_surplus_is_removed_before_the_resplit() -> None:
    # Evicting E1 alone would leave parts of size 1 and 3; the surplus of 2 still takes E2.
    links = [
        link("CRMID:a", "ECID:" + E1, 1),
        link("ECID:" + E1, "Email:x", 1),
        link("Email:x", "Phone:p", 9),
        link("Phone:p", "ECID:" + E2, 9),
    ]
    assert resolve(links, limit=3) == {
        "CRMID:a": ("CRMID:a", 1),
        "Email:x": ("Email:x", 2),
        "Phone:p": ("Email:x", 2),
        "ECID:" + E1: ("ECID:" + E1, 1),
        "ECID:" + E2: ("ECID:" + E2, 1),
    }


def test_size_limit_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_identities_per_graph"):
        resolve_component([link("CRMID:a", "Email:x", 1)], DEFAULTS, 0)


# --- Person id --------------------------------------------------------------------------------------


def test_person_id_is_the_lowest_priority_number() -> None:
    assert person_id([("ECID", E1), ("Phone", "p"), ("Email", "x")], DEFAULTS) == "Email:x"


def test_person_id_ties_by_namespace_then_id_in_binary_order() -> None:
    assert person_id([("Email", "b"), ("Email", "B")], DEFAULTS) == "Email:B"
    # Both unknown, so equal priority: "Z" (0x5A) sorts before "a" (0x61).
    assert person_id([("alpha", "1"), ("Zeta", "2")], DEFAULTS) == "Zeta:2"


def test_person_id_unknown_namespace_has_the_lowest_priority() -> None:
    links = [link("Loyalty:l", "TNTID:t", 1)]
    assert resolve(links) == {"Loyalty:l": ("TNTID:t", 2), "TNTID:t": ("TNTID:t", 2)}
    table = NamespaceTable(
        {
            "Loyalty": NsInfo("cross_device", unique=False, priority=0),
            "TNTID": NsInfo("cookie", unique=False, priority=9),
        }
    )
    assert resolve(links, table=table) == {
        "Loyalty:l": ("Loyalty:l", 2),
        "TNTID:t": ("Loyalty:l", 2),
    }


# --- The whole job ----------------------------------------------------------------------------------


def test_invalid_identities_are_quarantined_and_their_links_dropped() -> None:
    clusters, quarantine = resolve_identities(
        links=[
            ("CRMID", "a", "ECID", "123", 1),
            ("CRMID", "a", "Email", " ", 1),
            ("CRMID", None, "Email", "x", 1),
            ("Email", "x", "Phone", "anonymous", 1),
            ("Email", "x", "Phone", "9" * 1025, 1),
            ("Email_LC_SHA256", "zz", "CRMID", "a", 1),
        ],
        records=[Record([("CRMID", "a"), ("ECID", "Invalid")], 2)],
        regions=[],
        as_of=10,
        ns_table=DEFAULTS,
    )
    assert clusters == public({("CRMID", "a"): ("CRMID:a", 1), ("Email", "x"): ("Email:x", 1)})
    assert quarantine == {
        ("ECID", "123", "bad_ecid"),
        ("Email", " ", "empty"),
        ("CRMID", None, "reserved_value"),
        ("Phone", "anonymous", "reserved_value"),
        ("Phone", "9" * 1025, "too_long"),
        ("EMAIL_LC_SHA256", "zz", "bad_email_sha256"),
        ("ECID", "Invalid", "reserved_value"),
    }


def test_non_people_and_partner_identities_do_not_link() -> None:
    clusters, quarantine = resolve_identities(
        links=[
            ("CRMID", "a", "StoreId", "s1", 1),
            ("CRMID", "b", "StoreId", "s1", 2),
            ("CRMID", "b", "PartnerId", "p1", 2),
            ("CRMID", "b", "Email", "x", 3),
        ],
        records=[],
        regions=[],
        as_of=10,
        ns_table=WITH_STORES,
    )
    assert clusters == {
        ("CRMID", "a"): ("CRMID:a", 1),
        ("CRMID", "b"): ("CRMID:b", 2),
        ("Email", "x"): ("CRMID:b", 2),
        ("StoreId", "s1"): ("StoreId:s1", 1),
        ("PartnerId", "p1"): ("PartnerId:p1", 1),
    }
    assert quarantine == set()


def emails(count: int) -> list[str]:
    return [f"u{number:02}" for number in range(count)]


def test_hub_guardrail_51_neighbours_make_a_hub() -> None:
    clusters, quarantine = resolve_identities(
        links=[("ECID", E1, "Email", name, 1) for name in emails(51)],
        records=[],
        regions=[],
        as_of=10,
        ns_table=DEFAULTS,
    )
    assert clusters == public(
        {
            ("ECID", E1): ("ECID:" + E1, 1),
            **{("Email", name): ("Email:" + name, 1) for name in emails(51)},
        }
    )
    assert quarantine == {("ECID", E1, "hub_identity")}


def test_hub_guardrail_50_neighbours_are_not_a_hub() -> None:
    clusters, quarantine = resolve_identities(
        links=[("ECID", E1, "Email", name, 1) for name in emails(50)],
        records=[],
        regions=[],
        as_of=10,
        ns_table=DEFAULTS,
        max_identities_per_graph=51,
    )
    assert clusters == public(
        {
            ("ECID", E1): ("Email:u00", 51),
            **{("Email", name): ("Email:u00", 51) for name in emails(50)},
        }
    )
    assert quarantine == set()


def test_hub_guardrail_counts_distinct_valid_linking_neighbours() -> None:
    links = [
        ("ECID", E1, "Email", "x", 1),
        ("Email", "x", "ECID", E1, 2),  # the same neighbour again
        ("ECID", E1, "StoreId", "s", 1),  # non-people: not counted
        ("ECID", E1, "ECID", "bad", 1),  # invalid: not counted
    ]
    records = [Record([("ECID", E1), ("Email", "y")], 3)]
    clusters, quarantine = resolve_identities(links, records, [], 10, WITH_STORES, max_links_per_identity=2)
    assert clusters == public(
        {
            ("ECID", E1): ("Email:x", 3),
            ("Email", "x"): ("Email:x", 3),
            ("Email", "y"): ("Email:x", 3),
            ("StoreId", "s"): ("StoreId:s", 1),
        }
    )
    assert quarantine == {("ECID", "bad", "bad_ecid")}

    with_third = [*links, ("ECID", E1, "Email", "z", 1)]
    clusters, quarantine = resolve_identities(with_third, records, [], 10, WITH_STORES, max_links_per_identity=2)
    assert clusters == public(
        {
            ("ECID", E1): ("ECID:" + E1, 1),
            ("Email", "x"): ("Email:x", 1),
            ("Email", "y"): ("Email:y", 1),
            ("Email", "z"): ("Email:z", 1),
            ("StoreId", "s"): ("StoreId:s", 1),
        }
    )
    assert quarantine == {("ECID", "bad", "bad_ecid"), ("ECID", E1, "hub_identity")}


def test_as_of_ignores_later_rows() -> None:
    clusters, quarantine = resolve_identities(
        links=[
            ("CRMID", "a", "Email", "x", 10),  # at T: used
            ("CRMID", "a", "ECID", E1, 11),
            ("CRMID", "b", "ECID", "bad", 11),
        ],
        records=[Record([("CRMID", "a"), ("Phone", "p")], 11)],
        regions=[Record([("ECID", E2)], 10), Record([("ECID", E3)], 11)],
        as_of=10,
        ns_table=DEFAULTS,
    )
    assert clusters == {
        ("CRMID", "a"): ("CRMID:a", 2),
        ("Email", "x"): ("CRMID:a", 2),
        ("ECID", E2): ("ECID:" + E2, 1),
    }
    assert quarantine == set()


def test_cooccurrence_links_all_identities_of_a_record_and_can_be_switched_off() -> None:
    records = [Record([("CRMID", "a"), ("ECID", E1), ("Email", "x")], 5)]
    clusters, _ = resolve_identities([], records, [], 10, DEFAULTS)
    assert clusters == public(
        {
            ("CRMID", "a"): ("CRMID:a", 3),
            ("ECID", E1): ("CRMID:a", 3),
            ("Email", "x"): ("CRMID:a", 3),
        }
    )
    clusters, _ = resolve_identities([], records, [], 10, DEFAULTS, cooccurrence=False)
    assert clusters == public(
        {
            ("CRMID", "a"): ("CRMID:a", 1),
            ("ECID", E1): ("ECID:" + E1, 1),
            ("Email", "x"): ("Email:x", 1),
        }
    )


def test_alias_namespace_is_the_same_identity() -> None:
    clusters, _ = resolve_identities(
        links=[("Email_LC_SHA256", SHA, "CRMID", "a", 1)],
        records=[Record([("EMAIL_LC_SHA256", SHA)], 2)],
        regions=[],
        as_of=10,
        ns_table=DEFAULTS,
    )
    assert clusters == {
        ("CRMID", "a"): ("CRMID:a", 2),
        ("EMAIL_LC_SHA256", SHA): ("CRMID:a", 2),
    }


def test_evictions_are_quarantined_and_become_single_persons() -> None:
    clusters, quarantine = resolve_identities(
        links=[("CRMID", "a", "ECID", E1, 1), ("CRMID", "a", "Email", "x", 2)],
        records=[],
        regions=[],
        as_of=10,
        ns_table=DEFAULTS,
        max_identities_per_graph=2,
    )
    assert clusters == {
        ("CRMID", "a"): ("CRMID:a", 2),
        ("Email", "x"): ("CRMID:a", 2),
        ("ECID", E1): ("ECID:" + E1, 1),
    }
    assert quarantine == {("ECID", E1, "graph_size_eviction")}


def test_datetime_times_work_like_integers() -> None:
    def at(day: int) -> datetime:
        return datetime(2026, 11, day)  # naive, as pandas hands Spark timestamps to applyInPandas

    clusters, _ = resolve_identities(
        links=[("CRMID", "a", "ECID", E1, at(1)), ("CRMID", "b", "ECID", E1, at(2))],
        records=[Record([("CRMID", "c"), ("ECID", E1)], at(30))],
        regions=[],
        as_of=at(29),
        ns_table=DEFAULTS,
    )
    assert clusters == {
        ("CRMID", "a"): ("CRMID:a", 1),
        ("CRMID", "b"): ("CRMID:b", 2),
        ("ECID", E1): ("CRMID:b", 2),
    }


# --- Invariants on random small graphs --------------------------------------------------------------

IDENTITIES = st.sampled_from(
    ["CRMID:a", "CRMID:b", "Email:x", "Email:y", "Phone:p", "GAID:g"]
    + ["ECID:" + ecid for ecid in (E1, E2, E3)]
    + ["Loyalty:l"]
)
LINKS = st.lists(st.tuples(IDENTITIES, IDENTITIES, st.integers(0, 5)), max_size=25)


@given(LINKS, st.integers(1, 6), st.randoms())
def test_graphs_respect_the_rules_whatever_the_link_order(
    raw: list[tuple[str, str, int]], limit: int, rng: Random
) -> None:
    links = [link(left, right, time) for left, right, time in raw]
    result = resolve(links, limit)
    shuffled = [link(right, left, time) for left, right, time in raw]
    rng.shuffle(shuffled)
    assert resolve(shuffled, limit) == result

    graphs: dict[str, list[str]] = {}
    for identity, (person, _) in result.items():
        graphs.setdefault(person, []).append(identity)
    for person, members in graphs.items():
        assert person in members
        assert all(result[member][1] == len(members) for member in members)
        assert len(members) <= limit
        assert len([member for member in members if member.startswith("CRMID:")]) <= 1


def test_public_person_id_hashes_email_and_phone_ids() -> None:
    import hashlib

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    assert public_person_id("Email: A@B.example \n", DEFAULTS) == f"Email:sha256:{sha('a@b.example')}"
    assert public_person_id("Phone:+1 555 0100", DEFAULTS) == f"Phone:sha256:{sha('+1 555 0100')}"
    assert public_person_id("CRMID:Abc:d", DEFAULTS) == "CRMID:Abc:d"  # not personal: unchanged
