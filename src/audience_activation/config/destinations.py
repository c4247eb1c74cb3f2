"""``destinations.yaml`` (activation destinations) and ``regions.yaml`` (Edge Network region codes).

``docs/configuration.md`` ("destinations.yaml", "regions.yaml") describes every field and gives the reasons
and sources of the per-type default namespaces.
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from .base import NonEmptyStr, _Model
from .errors import ConfigError, _read_mapping, _validate
from .namespaces import NamespacesConfig, normalize_namespace

# The logger of the whole configuration layer, as before the split into modules.
logger = logging.getLogger(__package__)

REGIONS_FILE = "regions.yaml"
DESTINATIONS_FILE = "destinations.yaml"


DEFAULT_REGIONS: dict[str, int] = {
    "VA6": 7,
    "OR2": 9,
    "IRL1": 6,
    "SGP3": 3,
    "AUS3": 8,
    "JPN3": 11,
    "IND1": 12,
}


class RegionsConfig(_Model):
    """``regions.yaml``: Edge Network region code -> Audience Manager DCS region id.

    Entries are added to :data:`DEFAULT_REGIONS`, replacing a default with the same code.
    """

    regions: dict[NonEmptyStr, Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=dict, validate_default=True)

    @field_validator("regions", mode="after")
    @classmethod
    def _add_defaults(cls, value: dict[str, int]) -> dict[str, int]:
        return {**DEFAULT_REGIONS, **value}

    def dcs_region_id(self, code: str) -> int | None:
        """Returns the DCS region id of a region code, or None when the code is not mapped."""
        return self.regions.get(code)


class DestinationType(str, Enum):
    """Destination types: the Adobe Experience Cloud applications, plus ``custom``."""

    audience_manager = "audience_manager"
    target = "target"
    campaign = "campaign"
    journey_optimizer = "journey_optimizer"
    marketo = "marketo"
    commerce = "commerce"
    customer_journey_analytics = "customer_journey_analytics"
    custom = "custom"


class Routing(str, Enum):
    """Where a destination's changes go: edge-streaming when recently seen at the edge, or always hub-batch."""

    regional = "regional"
    hub = "hub"


# Identities each application accepts; docs/configuration.md gives the reasons and sources.
DEFAULT_DESTINATION_NAMESPACES: dict[DestinationType, tuple[str, ...]] = {
    DestinationType.audience_manager: ("ECID", "IDFA", "GAID", "EMAIL_LC_SHA256", "AdCloud"),
    DestinationType.target: ("ECID",),
    DestinationType.campaign: ("ECID", "EMAIL_LC_SHA256", "GAID", "IDFA"),
    DestinationType.journey_optimizer: ("CRMID", "Email", "Phone", "ECID", "IDFA", "GAID"),
    DestinationType.marketo: ("ECID", "Email"),
    DestinationType.commerce: ("ECID",),
    DestinationType.customer_journey_analytics: ("CRMID", "ECID"),
}

REGIONAL_DESTINATION_TYPES: frozenset[DestinationType] = frozenset(
    {DestinationType.audience_manager, DestinationType.target, DestinationType.commerce}
)


class DestinationConfig(_Model):
    """One activation destination.

    ``namespaces`` and ``routing`` may be omitted in the file; validation fills in the defaults of the
    destination type, so on a loaded model they are always set.

    Attributes:
        id: Unique destination id; also the folder of its output tables.
        type: The destination type.
        segments: Mapped segment ids.
        namespaces: Accepted identity namespaces (canonical codes).
        routing: ``regional`` (edge-streaming or hub-batch) or ``hub`` (hub-batch only).
        consent: A PQL condition on the unified profile a person must pass; None = no condition.
        hash_emails: Replace ``Email`` identities by ``EMAIL_LC_SHA256`` before matching ``namespaces``.
    """

    id: NonEmptyStr
    type: DestinationType
    segments: list[NonEmptyStr] = Field(default_factory=list)
    namespaces: list[NonEmptyStr] = Field(min_length=1)
    routing: Routing
    consent: NonEmptyStr | None = None
    hash_emails: StrictBool = False

    @field_validator("id")
    @classmethod
    def _id_is_a_folder_name(cls, value: str) -> str:
        if "/" in value or "\\" in value:
            raise ValueError("must not contain '/' or '\\' (it names the output folder)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_type_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        try:
            dest_type = DestinationType(data.get("type"))
        except ValueError:
            return data  # the field validator reports the bad type
        data = dict(data)
        if data.get("namespaces") is None:
            if dest_type not in DEFAULT_DESTINATION_NAMESPACES:
                raise ValueError(f"namespaces: required for type '{dest_type.value}' (no default)")
            data["namespaces"] = list(DEFAULT_DESTINATION_NAMESPACES[dest_type])
        if data.get("routing") is None:
            regional = dest_type in REGIONAL_DESTINATION_TYPES
            data["routing"] = Routing.regional if regional else Routing.hub
        return data

    @field_validator("namespaces")
    @classmethod
    def _normalise_namespaces(cls, value: list[str]) -> list[str]:
        normalised = [normalize_namespace(code) for code in value]
        duplicates = sorted({code for code in normalised if normalised.count(code) > 1})
        if duplicates:
            raise ValueError(f"duplicate namespace {', '.join(repr(c) for c in duplicates)}")
        return normalised

    @field_validator("segments")
    @classmethod
    def _no_duplicate_segments(cls, value: list[str]) -> list[str]:
        duplicates = sorted({seg for seg in value if value.count(seg) > 1})
        if duplicates:
            raise ValueError(f"segment {', '.join(repr(s) for s in duplicates)} mapped twice")
        return value

    @model_validator(mode="after")
    def _hashing_needs_hashed_namespace(self) -> DestinationConfig:
        if self.hash_emails and "EMAIL_LC_SHA256" not in self.namespaces:
            raise ValueError("hash_emails: true needs EMAIL_LC_SHA256 in namespaces (hashed emails would be dropped)")
        return self


class _DestinationsFile(_Model):
    destinations: list[DestinationConfig] = Field(default_factory=list)


def _load_destinations(path: Path, segment_ids: set[str], namespaces: NamespacesConfig) -> list[DestinationConfig]:
    """Reads ``destinations.yaml`` (optional): ids must be unique and mapped segments must exist."""
    if not path.is_file():
        return []
    parsed: _DestinationsFile = _validate(_DestinationsFile, _read_mapping(path, "destinations"), path)
    seen: set[str] = set()
    for destination in parsed.destinations:
        if destination.id in seen:
            raise ConfigError(path, f"destination '{destination.id}': duplicate destination id", item=destination.id)
        seen.add(destination.id)
    unknown = [
        (destination.id, segment_id)
        for destination in parsed.destinations
        for segment_id in destination.segments
        if segment_id not in segment_ids
    ]
    if unknown:
        lines = [f"destination '{dest}': segments: unknown segment id '{seg}'" for dest, seg in unknown]
        raise ConfigError(path, "\n".join(lines), item=unknown[0][0])
    for destination in parsed.destinations:
        for code in destination.namespaces:
            if code not in namespaces.namespaces:
                # Legal (see docs/configuration.md), but usually a typo such as 'ecid'.
                logger.warning(
                    "%s: destination '%s' accepts namespace '%s', which is not configured: it counts as "
                    "cross_device with the lowest priority",
                    path,
                    destination.id,
                    code,
                )
    return parsed.destinations
