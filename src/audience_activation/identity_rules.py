"""The identity rules applied per connected component, in plain Python (standard library only, no Spark).

- :func:`resolve_component` runs once per connected component inside Spark (``applyInPandas``), after the
  distributed steps (validation, hub guardrail, connected components): unique namespaces, the graph-size
  limit, the person id. ``docs/identity.md`` ("Steps", step 6) describes the rules.
- The constants (invalid-identity reasons and limits, namespace types, :data:`HASHED_IN_PERSON_ID`) are shared
  with those Spark steps.

The plain-Python reference model of the whole identity job, which the tests compare the Spark job with, is
``tests/identity_reference.py``.

Identities are ``(namespace, id)`` tuples compared exactly as written. Python string order is
code-point order, the same as Spark's binary order of UTF-8 bytes. Times (``last_seen_at``) are
``datetime`` or integer microseconds; the rules only compare them, so one call must use one kind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, TypeAlias

Identity: TypeAlias = tuple[str, str]
"""A valid identity: ``(namespace, id)``."""

LinkTime: TypeAlias = datetime | int
"""A time: ``datetime`` or integer microseconds (one kind per call)."""

# Invalid-identity reasons in the order they are checked (docs/identity.md, step 2), then the resolution reasons.
EMPTY = "empty"
RESERVED_VALUE = "reserved_value"
TOO_LONG = "too_long"
BAD_ECID = "bad_ecid"
BAD_EMAIL_SHA256 = "bad_email_sha256"
HUB_IDENTITY = "hub_identity"
MISSING_NAMESPACE = "missing_namespace"
GRAPH_SIZE_EVICTION = "graph_size_eviction"

ECID = "ECID"
EMAIL_LC_SHA256 = "EMAIL_LC_SHA256"
NAMESPACE_ALIASES: Mapping[str, str] = {"Email_LC_SHA256": EMAIL_LC_SHA256}

MAX_ID_LENGTH = 1024
ECID_LENGTH = 38
EMAIL_SHA256_LENGTH = 64
RESERVED_VALUES = frozenset({"null", "anonymous", "invalid"})

NAMESPACE_TYPES = frozenset({"cookie", "device", "cross_device", "email", "phone", "non_people", "partner"})
NON_LINKING_TYPES = frozenset({"non_people", "partner"})
# Graph-size eviction removes cookies first, then devices, then every other type.
_EVICTION_RANK = {"cookie": 0, "device": 1}
_OTHER_EVICTION_RANK = 2

DEFAULT_MAX_IDENTITIES_PER_GRAPH = 50


class Link(NamedTuple):
    """One undirected link between two valid identities."""

    src_ns: str
    src_id: str
    dst_ns: str
    dst_id: str
    last_seen_at: LinkTime

    @property
    def src(self) -> Identity:
        """The ``(namespace, id)`` of the source end."""
        return (self.src_ns, self.src_id)

    @property
    def dst(self) -> Identity:
        """The ``(namespace, id)`` of the destination end."""
        return (self.dst_ns, self.dst_id)


class Assignment(NamedTuple):
    """One row of ``identity_clusters``."""

    namespace: str
    id: str
    person_id: str
    graph_size: int


@dataclass(frozen=True)
class NsInfo:
    """What ``namespaces.yaml`` says about one namespace.

    Attributes:
        type: One of :data:`NAMESPACE_TYPES`.
        unique: At most one identity of this namespace per graph.
        priority: Lower is higher priority.
    """

    type: str
    unique: bool
    priority: int

    def __post_init__(self) -> None:
        if self.type not in NAMESPACE_TYPES:
            raise ValueError(f"unknown namespace type {self.type!r}; expected one of {sorted(NAMESPACE_TYPES)}")


class NamespaceTable:
    """Namespace information, with the fallback for namespaces not configured (docs/identity.md, "Decisions").

    A namespace not in the table is ``cross_device``, not unique, with the lowest priority (the
    highest configured priority number + 1).
    """

    def __init__(self, namespaces: Mapping[str, NsInfo]) -> None:
        """Build the table.

        Args:
            namespaces: Namespace code -> info; codes are read through :func:`normalize_namespace`.

        Raises:
            ValueError: If two codes normalise to one namespace with different information.
        """
        self._infos: dict[str, NsInfo] = {}
        for code, info in namespaces.items():
            namespace = normalize_namespace(code)
            if self._infos.get(namespace, info) != info:
                raise ValueError(f"namespace {namespace!r} is configured twice, differently")
            self._infos[namespace] = info
        lowest = max((info.priority for info in self._infos.values()), default=0)
        self.fallback = NsInfo(type="cross_device", unique=False, priority=lowest + 1)

    def info(self, namespace: str) -> NsInfo:
        """Return the information of ``namespace``, or the fallback when it is not configured."""
        return self._infos.get(normalize_namespace(namespace), self.fallback)


def _as_table(ns_table: NamespaceTable | Mapping[str, NsInfo]) -> NamespaceTable:
    return ns_table if isinstance(ns_table, NamespaceTable) else NamespaceTable(ns_table)


def normalize_namespace(namespace: str) -> str:
    """Return the code the rules use: ``Email_LC_SHA256`` is read as ``EMAIL_LC_SHA256``."""
    return NAMESPACE_ALIASES.get(namespace, namespace)


def person_id(graph: Iterable[Identity], ns_table: NamespaceTable) -> str:
    """Return ``"<namespace>:<id>"`` of the graph's highest-priority identity.

    Lowest priority number first; ties by namespace code, then id (binary string order).
    """
    namespace, id_ = min(graph, key=lambda ident: (ns_table.info(ident[0]).priority, ident))
    return f"{namespace}:{id_}"


#: Namespace types whose identities are personal data: a person id carries their SHA-256, never the value.
HASHED_IN_PERSON_ID = frozenset({"email", "phone"})


def _later(left: LinkTime, right: LinkTime) -> bool:
    return left > right  # type: ignore[operator]  # both datetimes or both ints, per the module doc


def normalize_links(links: Iterable[Link]) -> list[Link]:
    """Orient, de-duplicate and sort links.

    Each link gets the smaller ``(namespace, id)`` as its ``src``; self-links are dropped; of
    several links between the same two identities the newest ``last_seen_at`` is kept.

    Args:
        links: Links between valid identities, in any orientation.

    Returns:
        One link per identity pair, sorted by ``(src_ns, src_id, dst_ns, dst_id)``.
    """
    newest: dict[tuple[Identity, Identity], LinkTime] = {}
    for link in links:
        src, dst = sorted((link.src, link.dst))
        if src != dst and ((src, dst) not in newest or _later(link.last_seen_at, newest[src, dst])):
            newest[src, dst] = link.last_seen_at
    return [Link(*src, *dst, time) for (src, dst), time in sorted(newest.items())]


class _DisjointSets:
    """Union-find over identities (path halving, union by size)."""

    def __init__(self, items: Iterable[Identity]) -> None:
        self._parent = {item: item for item in items}
        self._size = dict.fromkeys(self._parent, 1)

    def find(self, item: Identity) -> Identity:
        parent = self._parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, left_root: Identity, right_root: Identity) -> Identity:
        """Merge the sets of two different roots and return the new root."""
        if self._size[left_root] < self._size[right_root]:
            left_root, right_root = right_root, left_root
        self._parent[right_root] = left_root
        self._size[left_root] += self._size.pop(right_root)
        return left_root

    def groups(self) -> list[list[Identity]]:
        """Return the sets, each sorted, in order of their smallest member."""
        members: dict[Identity, list[Identity]] = defaultdict(list)
        for item in sorted(self._parent):
            members[self.find(item)].append(item)
        return list(members.values())


def _endpoints(links: Iterable[Link]) -> set[Identity]:
    return {end for link in links for end in (link.src, link.dst)}


def _components(identities: Iterable[Identity], links: Iterable[Link]) -> list[list[Identity]]:
    """Connected parts of ``identities`` over ``links`` (whose ends must all be among them)."""
    sets = _DisjointSets(identities)
    for link in links:
        left, right = sets.find(link.src), sets.find(link.dst)
        if left != right:
            sets.union(left, right)
    return sets.groups()


def _priority_sum(link: Link, ns_table: NamespaceTable) -> int:
    return ns_table.info(link.src_ns).priority + ns_table.info(link.dst_ns).priority


def _unique_ids(identity: Identity, ns_table: NamespaceTable) -> dict[str, str]:
    namespace, id_ = identity
    return {namespace: id_} if ns_table.info(namespace).unique else {}


def _replay_unique(links: Sequence[Link], ns_table: NamespaceTable) -> list[Link]:
    """Replay links (newest first, then by priority sum, then by identities) and return the kept ones.

    A link between two identities already in one graph is kept: it is part of that graph.
    """
    ordered = sorted(links, key=lambda link: (_priority_sum(link, ns_table), link[:4]))
    # A stable sort: newest first, equal times keep the order above.
    ordered.sort(key=lambda link: link.last_seen_at, reverse=True)
    identities = _endpoints(links)
    sets = _DisjointSets(identities)
    # Per root: namespace -> id of the unique-namespace identities in that root's graph.
    unique_ids = {identity: _unique_ids(identity, ns_table) for identity in identities}
    kept = []
    for link in ordered:
        left, right = sets.find(link.src), sets.find(link.dst)
        if left != right:
            left_ids, right_ids = unique_ids[left], unique_ids[right]
            if any(left_ids.get(ns, id_) != id_ for ns, id_ in right_ids.items()):
                continue
            del unique_ids[left], unique_ids[right]
            unique_ids[sets.union(left, right)] = left_ids | right_ids
        kept.append(link)
    return kept


def _identity_times(links: Iterable[Link]) -> dict[Identity, LinkTime]:
    """Each identity's time: the newest ``last_seen_at`` of its links among ``links``."""
    times: dict[Identity, LinkTime] = {}
    for link in links:
        for end in (link.src, link.dst):
            if end not in times or _later(link.last_seen_at, times[end]):
                times[end] = link.last_seen_at
    return times


def _limit_size(
    graph: list[Identity],
    kept: Sequence[Link],
    times: Mapping[Identity, LinkTime],
    ns_table: NamespaceTable,
    limit: int,
) -> tuple[list[list[Identity]], list[Identity]]:
    """Apply the graph-size limit to one graph; return its final graphs and the evicted identities."""
    surplus = len(graph) - limit
    if surplus <= 0:
        return [graph], []

    def eviction_key(identity: Identity) -> tuple[int, LinkTime, Identity]:
        rank = _EVICTION_RANK.get(ns_table.info(identity[0]).type, _OTHER_EVICTION_RANK)
        return (rank, times[identity], identity)

    evicted = sorted(graph, key=eviction_key)[:surplus]
    rest = set(graph).difference(evicted)
    parts = _components(rest, [link for link in kept if link.src in rest and link.dst in rest])
    return parts + [[identity] for identity in evicted], evicted


def resolve_component(
    links: Iterable[Link],
    ns_table: NamespaceTable | Mapping[str, NsInfo],
    max_identities_per_graph: int = DEFAULT_MAX_IDENTITIES_PER_GRAPH,
) -> tuple[list[Assignment], list[Identity]]:
    """Resolve the persons of one connected component (docs/identity.md, step 6).

    Replays the links for unique namespaces, applies the graph-size limit to each resulting graph,
    then names each final graph's person. Links of several components give the same result as one
    call per component: the component is only the unit of parallelism.

    Args:
        links: Links between valid, linking identities (validation, the non-people filter and the
            hub guardrail already applied), in any orientation; of duplicates the newest counts.
        ns_table: Namespace information.
        max_identities_per_graph: The graph-size limit (at least 1).

    Returns:
        ``(assignments, evictions)``: one :class:`Assignment` per identity of the links, sorted;
        and the identities evicted by the size limit (each now a single-identity graph), sorted.

    Raises:
        ValueError: If ``max_identities_per_graph`` is below 1.
    """
    if max_identities_per_graph < 1:
        raise ValueError(f"max_identities_per_graph must be >= 1, got {max_identities_per_graph}")
    table = _as_table(ns_table)
    links = normalize_links(links)
    kept = _replay_unique(links, table)
    times = _identity_times(kept)
    assignments: list[Assignment] = []
    evictions: list[Identity] = []
    for graph in _components(_endpoints(links), kept):
        parts, evicted = _limit_size(graph, kept, times, table, max_identities_per_graph)
        evictions.extend(evicted)
        for part in parts:
            person = person_id(part, table)
            assignments.extend(Assignment(ns, id_, person, len(part)) for ns, id_ in part)
    return sorted(assignments), sorted(evictions)
