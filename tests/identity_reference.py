"""The plain-Python reference model of the whole identity job (no Spark), for the tests.

:func:`resolve_identities` runs the identity job as of a time ``T`` on plain rows: validation
(:func:`validate_identity`), links (explicit and co-occurrence), the hub guardrail, then
:func:`audience_activation.identity_rules.resolve_component` per connected component, and person ids as every
output shows them (:func:`public_person_id`). ``tests/test_identity.py`` runs random small graphs through it and
through the Spark job and requires identical clusters and quarantine. ``docs/identity.md`` describes the rules.

The constants and the per-component rules come from :mod:`audience_activation.identity_rules`, which the Spark
job uses; this module holds only what the tests use. Identities and times are as described there.
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import NamedTuple, TypeAlias, cast

from audience_activation.identity_rules import (
    BAD_ECID,
    BAD_EMAIL_SHA256,
    DEFAULT_MAX_IDENTITIES_PER_GRAPH,
    ECID,
    ECID_LENGTH,
    EMAIL_LC_SHA256,
    EMAIL_SHA256_LENGTH,
    EMPTY,
    GRAPH_SIZE_EVICTION,
    HASHED_IN_PERSON_ID,
    HUB_IDENTITY,
    MAX_ID_LENGTH,
    MISSING_NAMESPACE,
    NON_LINKING_TYPES,
    RESERVED_VALUE,
    RESERVED_VALUES,
    TOO_LONG,
    Identity,
    Link,
    LinkTime,
    NamespaceTable,
    NsInfo,
    _as_table,
    _components,
    _endpoints,
    _later,
    normalize_links,
    normalize_namespace,
    person_id,
    resolve_component,
)

RawLink: TypeAlias = tuple[str, "str | None", str, "str | None", LinkTime]
"""An ``identity_graph`` row as read: ``(src_ns, src_id, dst_ns, dst_id, last_seen_at)``."""

QuarantineRow: TypeAlias = tuple[str, "str | None", str]
"""``(namespace, id, reason)``; ``id`` is None for a null id."""

# ASCII whitespace: the set Java's regex ``\s`` matches, so Spark's ``rlike`` can agree.
_WHITESPACE = frozenset(string.whitespace)
_ASCII_DIGITS = frozenset(string.digits)
_HEX_DIGITS = frozenset(string.hexdigits)

DEFAULT_MAX_LINKS_PER_IDENTITY = 50


class Record(NamedTuple):
    """The ``identityMap`` entries ``(namespace, id)`` of one input row and the row's time.

    The time is ``ingested_at`` for a fragment, ``timestamp`` for an event and, for a region row,
    its earliest ``captureTimestamp`` (the row exists from its first capture on).
    """

    identities: Sequence[tuple[str, str | None]]
    time: LinkTime


def validate_identity(namespace: str | None, id: str | None) -> str | None:
    """Return why an identity is invalid, or None when it is valid.

    Reasons are checked in the order of docs/identity.md (step 2), on the value exactly as written.

    Args:
        namespace: Namespace code (``Email_LC_SHA256`` is read as ``EMAIL_LC_SHA256``).
        id: Identity value; None for a null id.

    Returns:
        ``empty`` (empty or ASCII whitespace only); ``reserved_value`` (a null id, or ``null``,
        ``anonymous``, ``invalid`` in any case); ``too_long`` (over 1024 characters); ``bad_ecid``
        (an ECID that is not exactly 38 ASCII digits); ``bad_email_sha256`` (an
        ``EMAIL_LC_SHA256`` that is not exactly 64 hex characters of either case); or None.
        A null, empty or blank namespace code is ``missing_namespace`` (checked first: such a row cannot be
        attributed to any namespace).
    """
    if namespace is None or all(char in _WHITESPACE for char in namespace):
        return MISSING_NAMESPACE
    namespace = normalize_namespace(namespace)
    if id is not None and all(char in _WHITESPACE for char in id):
        return EMPTY
    if id is None or id.lower() in RESERVED_VALUES:
        return RESERVED_VALUE
    if len(id) > MAX_ID_LENGTH:
        return TOO_LONG
    if namespace == ECID and not _is_made_of(id, _ASCII_DIGITS, ECID_LENGTH):
        return BAD_ECID
    if namespace == EMAIL_LC_SHA256 and not _is_made_of(id, _HEX_DIGITS, EMAIL_SHA256_LENGTH):
        return BAD_EMAIL_SHA256
    return None


def _is_made_of(value: str, alphabet: frozenset[str], length: int) -> bool:
    return len(value) == length and all(char in alphabet for char in value)


#: What "trimmed" means for hashing (Java regex ``\\s``, as Spark's ``regexp_replace`` trims).
_HASH_TRIM = " \t\n\x0b\f\r"


def public_person_id(raw: str, ns_table: NamespaceTable) -> str:
    """``"<namespace>:<id>"``, or ``"<namespace>:sha256:<hex>"`` when the namespace type is e-mail or phone
    (the SHA-256 of the trimmed, lower-cased id): the person id as written to every output."""
    namespace, id_ = raw.split(":", 1)
    if ns_table.info(namespace).type in HASHED_IN_PERSON_ID:
        return f"{namespace}:sha256:{hashlib.sha256(id_.strip(_HASH_TRIM).lower().encode('utf-8')).hexdigest()}"
    return raw


def split_by_component(links: Iterable[Link]) -> list[list[Link]]:
    """Group links by connected component (plain union-find).

    Args:
        links: Links; their order within each returned group is kept.

    Returns:
        One list of links per component, in order of the component's smallest identity.
    """
    links = list(links)
    components = _components(_endpoints(links), links)
    index_of = {identity: index for index, part in enumerate(components) for identity in part}
    groups: list[list[Link]] = [[] for _ in components]
    for link in links:
        groups[index_of[link.src]].append(link)
    return groups


def _find_hubs(links: Iterable[Link], max_links_per_identity: int) -> set[Identity]:
    """Identities with more than ``max_links_per_identity`` neighbours in de-duplicated links."""
    neighbours = Counter(end for link in links for end in (link.src, link.dst))
    return {identity for identity, count in neighbours.items() if count > max_links_per_identity}


def resolve_identities(
    links: Iterable[RawLink],
    records: Iterable[Record],
    regions: Iterable[Record],
    as_of: LinkTime,
    ns_table: NamespaceTable | Mapping[str, NsInfo],
    *,
    max_links_per_identity: int = DEFAULT_MAX_LINKS_PER_IDENTITY,
    max_identities_per_graph: int = DEFAULT_MAX_IDENTITIES_PER_GRAPH,
    cooccurrence: bool = True,
) -> tuple[dict[Identity, tuple[str, int]], set[QuarantineRow]]:
    """Run the whole identity job as of ``as_of`` (the reference model of ``audience_activation.identity``).

    Args:
        links: ``identity_graph`` rows.
        records: Identity maps of profile fragments and events with their times. With
            ``cooccurrence`` on, the valid identities of one record are all linked at its time.
        regions: Identity maps of ``region_information`` rows; they create no links.
        as_of: The evaluation time ``T``: rows with a later time are ignored.
        ns_table: Namespace information.
        max_links_per_identity: The hub guardrail: more distinct neighbours make a hub.
        max_identities_per_graph: The graph-size limit (at least 1).
        cooccurrence: Whether records create links.

    Returns:
        ``(clusters, quarantine)``: ``(namespace, id) -> (person_id, graph_size)`` for every valid
        identity seen at ``as_of``; and the ``(namespace, id, reason)`` quarantine rows (invalid
        identities, ``hub_identity``, ``graph_size_eviction``).
    """
    table = _as_table(ns_table)
    seen: set[Identity] = set()
    quarantine: set[QuarantineRow] = set()

    def admit(namespace: str, id_: str | None) -> Identity | None:
        namespace = normalize_namespace(namespace)
        reason = validate_identity(namespace, id_)
        if reason is not None:
            quarantine.add((namespace, id_, reason))
            return None
        identity = (namespace, cast(str, id_))
        seen.add(identity)
        return identity

    candidates: list[Link] = []
    for src_ns, src_id, dst_ns, dst_id, last_seen_at in links:
        if not _later(last_seen_at, as_of):
            src, dst = admit(src_ns, src_id), admit(dst_ns, dst_id)
            if src is not None and dst is not None:
                candidates.append(Link(*src, *dst, last_seen_at))
    for record in records:
        if not _later(record.time, as_of):
            valid = [identity for entry in record.identities if (identity := admit(*entry))]
            if cooccurrence:
                pairs = combinations(valid, 2)
                candidates.extend(Link(*left, *right, record.time) for left, right in pairs)
    for region in regions:
        if not _later(region.time, as_of):
            for entry in region.identities:
                admit(*entry)

    linking = [
        link
        for link in normalize_links(candidates)
        if table.info(link.src_ns).type not in NON_LINKING_TYPES
        and table.info(link.dst_ns).type not in NON_LINKING_TYPES
    ]
    hubs = _find_hubs(linking, max_links_per_identity)
    quarantine.update((namespace, id_, HUB_IDENTITY) for namespace, id_ in hubs)
    linking = [link for link in linking if link.src not in hubs and link.dst not in hubs]

    clusters = {identity: (person_id([identity], table), 1) for identity in seen}
    for component in split_by_component(linking):
        rows, evicted = resolve_component(component, table, max_identities_per_graph)
        clusters.update({(row.namespace, row.id): (row.person_id, row.graph_size) for row in rows})
        quarantine.update((namespace, id_, GRAPH_SIZE_EVICTION) for namespace, id_ in evicted)
    return {key: (public_person_id(person, table), size) for key, (person, size) in clusters.items()}, quarantine
