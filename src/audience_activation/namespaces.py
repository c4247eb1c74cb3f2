"""Namespace settings and identity rules as Column expressions, shared by every stage that reads identities.

- :class:`NamespaceLookup`: a namespace's priority, type, uniqueness, whether it links and whether it is
  personal data, as literal-map lookups (unknown namespaces get the defaults of ``namespaces.yaml``);
- :func:`invalid_reason`: why an identity is invalid, checks in the order of docs/identity.md ("Validation");
- :func:`public_person_id`: the person id as every output shows it (e-mail and phone ids hashed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from . import identity_rules as rules
from .columns import literal_map
from .config import NamespacesConfig


@dataclass(frozen=True)
class NamespaceLookup:
    """Namespace settings as Column lookups (a literal map; unknown namespaces get the defaults)."""

    namespaces: NamespacesConfig

    def _map(self, values: Mapping[str, object]) -> Column:
        return literal_map(values)

    def priority(self, namespace: Column) -> Column:
        return F.coalesce(
            F.element_at(self._map(self.namespaces.priorities()), namespace), F.lit(self.namespaces.unknown_priority)
        )

    def type(self, namespace: Column) -> Column:
        return F.coalesce(F.element_at(self._map(self.namespaces.types()), namespace), F.lit("cross_device"))

    def unique(self, namespace: Column) -> Column:
        unique = sorted(self.namespaces.unique_namespaces())
        return namespace.isin(unique) if unique else F.lit(False)

    def links(self, namespace: Column) -> Column:
        """Whether identities of this namespace take part in linking (not non_people/partner)."""
        return ~self.type(namespace).isin(sorted(rules.NON_LINKING_TYPES))

    def personal(self, namespace: Column) -> Column:
        """Whether identities of this namespace are personal data (type ``email`` or ``phone``)."""
        return self.type(namespace).isin(sorted(rules.HASHED_IN_PERSON_ID))

    def rules_table(self) -> rules.NamespaceTable:
        return rules.NamespaceTable(
            {
                code: rules.NsInfo(config.type.value, config.unique, config.priority)
                for code, config in self.namespaces.namespaces.items()
            }
        )


def best_entry(entries: Column, lookup: NamespaceLookup) -> Column:
    """The highest-priority entry of an ``array<struct(ns, id)>``: ``struct(p, ns, id)`` with the lowest priority
    number, then namespace, then id."""
    return F.array_min(
        F.transform(
            entries, lambda e: F.struct(lookup.priority(e["ns"]).alias("p"), e["ns"].alias("ns"), e["id"].alias("id"))
        )
    )


def invalid_reason(namespace: Column, identity: Column) -> Column:
    """The reason an identity is invalid (docs/identity.md, "Validation", in its order), or null when valid.

    Example:
        >>> df.select(invalid_reason(F.lit("ECID"), F.lit("123")))  # doctest: +SKIP  -> "bad_ecid"
    """
    blank = r"^[ \t\n\x0B\f\r]*\z"  # ASCII whitespace only, as Python's str.isspace on ASCII
    return (
        F.when(namespace.isNull() | namespace.rlike(blank), F.lit(rules.MISSING_NAMESPACE))
        # \z, not $: Java's $ also matches before a final line terminator ("<38 digits>\n" is not an ECID).
        .when(identity.rlike(blank), F.lit(rules.EMPTY))
        .when(identity.isNull() | F.lower(identity).isin(sorted(rules.RESERVED_VALUES)), F.lit(rules.RESERVED_VALUE))
        .when(F.length(identity) > rules.MAX_ID_LENGTH, F.lit(rules.TOO_LONG))
        .when(
            (namespace == rules.ECID) & ~identity.rlike(rf"^[0-9]{{{rules.ECID_LENGTH}}}\z"),
            F.lit(rules.BAD_ECID),
        )
        .when(
            (namespace == rules.EMAIL_LC_SHA256) & ~identity.rlike(rf"^[0-9a-fA-F]{{{rules.EMAIL_SHA256_LENGTH}}}\z"),
            F.lit(rules.BAD_EMAIL_SHA256),
        )
    )


def public_person_id(raw: Column, lookup: NamespaceLookup) -> Column:
    """The person id as written to every output, from ``"<namespace>:<id>"`` of the graph's best identity:
    unchanged, or ``"<namespace>:sha256:<hex>"`` when the namespace is personal data (e-mail, phone), the hex
    being the SHA-256 of the trimmed, lower-cased id (no raw e-mail or phone number in ids).
    """
    namespace = F.substring_index(raw, ":", 1)
    value = F.substring(raw, F.length(namespace) + 2, F.lit(2**31 - 1))
    hashed = F.sha2(F.lower(F.regexp_replace(value, r"^\s+|\s+$", "")), 256)
    return F.when(lookup.personal(namespace), F.concat(namespace, F.lit(":sha256:"), hashed)).otherwise(raw)
