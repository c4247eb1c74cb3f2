"""``namespaces.yaml``: identity namespaces (type, uniqueness, priority), added to the built-in ones.

``docs/configuration.md`` ("namespaces.yaml") describes every field and lists the built-in namespaces.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field, StrictBool, StrictInt, field_validator

from ..columns import NAMESPACE_ALIASES
from .base import NonEmptyStr, _Model

NAMESPACES_FILE = "namespaces.yaml"


def normalize_namespace(code: str) -> str:
    """Returns the canonical namespace code: ``Email_LC_SHA256`` is read as ``EMAIL_LC_SHA256``, others as written.

    Adobe spells the hashed-email namespace symbol both ways; the upper-case code is canonical.
    """
    return NAMESPACE_ALIASES.get(code, code)


class NamespaceType(str, Enum):
    """Identity namespace types (Adobe Identity Service)."""

    cookie = "cookie"
    device = "device"
    cross_device = "cross_device"
    email = "email"
    phone = "phone"
    non_people = "non_people"
    partner = "partner"


class NamespaceConfig(_Model):
    """One identity namespace.

    Attributes:
        type: The namespace type; ``non_people`` and ``partner`` identities never link.
        unique: At most one identity of this namespace per identity graph.
        priority: Lower is higher priority (person ids, link replay order).
    """

    type: NamespaceType
    unique: StrictBool = False
    priority: StrictInt


DEFAULT_NAMESPACES: dict[str, NamespaceConfig] = {
    "CRMID": NamespaceConfig(type=NamespaceType.cross_device, unique=True, priority=1),
    "Email": NamespaceConfig(type=NamespaceType.email, priority=2),
    "EMAIL_LC_SHA256": NamespaceConfig(type=NamespaceType.email, priority=3),
    "Phone": NamespaceConfig(type=NamespaceType.phone, priority=4),
    "IDFA": NamespaceConfig(type=NamespaceType.device, priority=5),
    "GAID": NamespaceConfig(type=NamespaceType.device, priority=6),
    "ECID": NamespaceConfig(type=NamespaceType.cookie, priority=7),
    "AdCloud": NamespaceConfig(type=NamespaceType.cookie, priority=8),
    "TNTID": NamespaceConfig(type=NamespaceType.cookie, priority=9),
}


class NamespacesConfig(_Model):
    """``namespaces.yaml``: namespace code -> :class:`NamespaceConfig`.

    Entries given here are added to :data:`DEFAULT_NAMESPACES`; an entry for a default code replaces that
    default entirely. Codes are normalised with :func:`normalize_namespace`.
    """

    namespaces: dict[NonEmptyStr, NamespaceConfig] = Field(default_factory=dict, validate_default=True)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _normalise_codes(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic reports the type error
        normalised: dict[Any, Any] = {}
        written: dict[Any, Any] = {}
        for code, entry in value.items():
            canonical = normalize_namespace(code) if isinstance(code, str) else code
            if canonical in normalised:
                raise ValueError(f"'{written[canonical]}' and '{code}' are the same namespace '{canonical}'")
            normalised[canonical], written[canonical] = entry, code
        return normalised

    @field_validator("namespaces", mode="after")
    @classmethod
    def _add_defaults(cls, value: dict[str, NamespaceConfig]) -> dict[str, NamespaceConfig]:
        return {**DEFAULT_NAMESPACES, **value}

    @property
    def unknown_priority(self) -> int:
        """The priority of a namespace that is not configured: one more than the largest configured one."""
        return max(ns.priority for ns in self.namespaces.values()) + 1

    def resolve(self, code: str) -> NamespaceConfig:
        """Returns the settings of a namespace, configured or not.

        Args:
            code: A namespace code (``Email_LC_SHA256`` is accepted).

        Returns:
            The configured entry, else ``cross_device``, not unique, priority :attr:`unknown_priority`.
        """
        configured = self.namespaces.get(normalize_namespace(code))
        if configured is not None:
            return configured
        return NamespaceConfig(type=NamespaceType.cross_device, unique=False, priority=self.unknown_priority)

    def priorities(self) -> dict[str, int]:
        """Returns configured namespace code -> priority (use :attr:`unknown_priority` for the rest)."""
        return {code: ns.priority for code, ns in self.namespaces.items()}

    def types(self) -> dict[str, str]:
        """Returns configured namespace code -> type value (the rest are ``cross_device``)."""
        return {code: ns.type.value for code, ns in self.namespaces.items()}

    def unique_namespaces(self) -> set[str]:
        """Returns the codes of the unique namespaces."""
        return {code for code, ns in self.namespaces.items() if ns.unique}
