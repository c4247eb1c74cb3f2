"""Typed configuration loaded from the ``conf/`` YAML files.

Every file is validated with pydantic before any Spark work starts; problems raise :class:`ConfigError`,
which names the file, the item (a segment or destination id, or a dotted key such as ``storage.engine``)
and what is wrong. ``docs/configuration.md`` describes every field.

Files in the configuration directory:

- ``job.yaml``: :class:`JobConfig` (optional; every key has a default).
- ``namespaces.yaml``: :class:`NamespacesConfig` (optional; extends the built-in namespaces).
- ``regions.yaml``: :class:`RegionsConfig` (optional; extends the built-in region codes).
- ``segments.yaml`` and/or ``segments/*.yaml``: :class:`SegmentConfig` lists (at least one source required).
- ``destinations.yaml``: :class:`DestinationConfig` list (optional; no destinations means membership only).
"""

from __future__ import annotations

import logging
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the environment
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

# Adobe spells the hashed-email namespace symbol both ways; the upper-case code is canonical (contract §10).
# One definition of the alias, shared with the identity rules (which stay stdlib-only).
from ..identity_rules import NAMESPACE_ALIASES, normalize_namespace  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

JOB_FILE = "job.yaml"
NAMESPACES_FILE = "namespaces.yaml"
REGIONS_FILE = "regions.yaml"
SEGMENTS_FILE = "segments.yaml"
SEGMENTS_DIR = "segments"
DESTINATIONS_FILE = "destinations.yaml"

# An "absolute" location: a POSIX absolute path or a URI with a scheme of 2+ characters (s3a://, file:/, abfss://).
_ABSOLUTE_LOCATION = re.compile(r"^(/|[A-Za-z][A-Za-z0-9+.-]+:)")


class ConfigError(ValueError):
    """An invalid configuration file.

    ``str(err)`` reads ``<file>: <message>``, e.g.
    ``conf/destinations.yaml: destination 'aam': segments: unknown segment id 'seg-x'``; several problems in
    one file give one such line each.

    Attributes:
        file: The offending file or directory, or None when not tied to a file.
        item: The item at fault: a segment or destination id, or a dotted key like ``storage.engine``
            (None for whole-file problems). With several problems, the first one's item.
        message: The description without the file name (one line per problem).
    """

    def __init__(self, file: str | Path | None, message: str, item: str | None = None) -> None:
        """Builds the error.

        Args:
            file: The offending file or directory.
            message: What is wrong, already prefixed with the item's label where useful.
            item: The segment/destination id or dotted key at fault.
        """
        self.file = Path(file) if file is not None else None
        self.item = item
        self.message = message
        prefix = f"{self.file}: " if self.file is not None else ""
        super().__init__("\n".join(prefix + line for line in message.splitlines()))


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return value


NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]


class _Model(BaseModel):
    """Base of every configuration model: unknown keys are errors, instances are immutable.

    A key written with no value (``key:`` or ``key: null``) means "use the default", so that commenting out
    every entry under a key leaves valid YAML.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


# --------------------------------------------------------------------------------------------------------------
# namespaces.yaml
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# regions.yaml
# --------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------
# segments.yaml, segments/*.yaml
# --------------------------------------------------------------------------------------------------------------


class SegmentEvaluation(str, Enum):
    """Forced evaluation method of a segment."""

    batch = "batch"


class SegmentExpression(_Model):
    """The segment definition in Adobe's export shape: ``{type: PQL, format: pql/text, value: ...}``."""

    type: Literal["PQL"]
    format: Literal["pql/text"]
    value: NonEmptyStr


class SegmentConfig(_Model):
    """One segment (audience) definition.

    Attributes:
        id: Unique segment id (used by ``inSegment`` and destination mappings).
        name: Display name.
        description: Free text.
        expression: The PQL definition.
        evaluation: ``batch`` forces batch evaluation; None lets the classifier decide.
    """

    id: NonEmptyStr
    name: NonEmptyStr
    description: str | None = None
    expression: SegmentExpression
    evaluation: SegmentEvaluation | None = None


class _SegmentsFile(_Model):
    segments: list[SegmentConfig] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# destinations.yaml
# --------------------------------------------------------------------------------------------------------------


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


class ActivationKind(str, Enum):
    """The two output tables of a destination."""

    edge_streaming = "edge_streaming"
    hub_batch = "hub_batch"


# Identities each application accepts (reference/adobe-rtcdp-facts.md §5.1); see docs/configuration.md.
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


# --------------------------------------------------------------------------------------------------------------
# job.yaml
# --------------------------------------------------------------------------------------------------------------


class TableName(str, Enum):
    """Logical names of the lake tables (inputs, outputs, and the root folder of activation outputs)."""

    profile_fragments = "profile_fragments"
    experience_events = "experience_events"
    identity_graph = "identity_graph"
    region_information = "region_information"
    identity_clusters = "identity_clusters"
    quarantine = "quarantine"
    unified_profiles = "unified_profiles"
    segment_membership = "segment_membership"
    activation_runs = "activation_runs"
    activation_state = "activation_state"
    activation = "activation"


def _join(root: str, relative: str) -> str:
    return root.rstrip("/") + "/" + relative.removeprefix("./")


def is_absolute_location(location: str) -> bool:
    """Tells whether a location is an absolute path or a URI (``s3a://...``, ``file:/...``)."""
    return bool(_ABSOLUTE_LOCATION.match(location))


class LakeConfig(_Model):
    """``lake:``: where the Delta tables live.

    Attributes:
        root: Lake root folder or URI; a relative path is relative to the working directory.
        tables: Per-table location overrides; relative ones are relative to ``root``.
    """

    root: NonEmptyStr = "./lake"
    tables: dict[TableName, NonEmptyStr] = Field(default_factory=dict)


class StorageEngine(str, Enum):
    """How Delta tables are read and written."""

    auto = "auto"
    delta_spark = "delta-spark"
    delta_rs = "delta-rs"


class StorageConfig(_Model):
    """``storage:``.

    Attributes:
        engine: ``auto`` picks ``delta-spark`` when the Delta Lake Spark connector is usable (its jars on the
            classpath and Delta's SQL extension configured), else ``delta-rs``; ``delta-rs`` also keeps the
            session factory from loading the connector.
    """

    engine: StorageEngine = StorageEngine.auto


class TimestampOrderedPolicy(_Model):
    """Merge policy: per leaf field, the latest ``ingested_at`` non-null value wins."""

    type: Literal["timestamp_ordered"] = "timestamp_ordered"


class DatasetPrecedencePolicy(_Model):
    """Merge policy: per leaf field, the first listed dataset with a non-null value wins.

    Attributes:
        datasets: Dataset ids, highest precedence first; fragments of other datasets are ignored.
    """

    type: Literal["dataset_precedence"] = "dataset_precedence"
    datasets: list[NonEmptyStr] = Field(min_length=1)

    @field_validator("datasets")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        duplicates = sorted({ds for ds in value if value.count(ds) > 1})
        if duplicates:
            raise ValueError(f"dataset {', '.join(repr(d) for d in duplicates)} listed twice")
        return value


MergePolicy = Annotated[TimestampOrderedPolicy | DatasetPrecedencePolicy, Field(discriminator="type")]


class ActivationSettings(_Model):
    """``activation:``.

    Attributes:
        edge_window_days: A person is routed to edge-streaming when seen at an edge region within this window.
    """

    edge_window_days: PositiveInt = 14


class MembershipSettings(_Model):
    """``membership:``.

    Attributes:
        exited_retention_days: Exited membership rows older than this are purged.
    """

    exited_retention_days: PositiveInt = 30


class IdentitySettings(_Model):
    """``identity:``.

    Attributes:
        max_links_per_identity: An identity with more distinct neighbours is a hub (its links are dropped).
            At most 1,000: co-occurrence builds up to ``m (m + 1) / 2`` links per record (records with more
            identities make hubs of all of them without building links).
        max_identities_per_graph: Graph size limit (>= 2: a limit of 1 would evict every link).
        cooccurrence_links: Link all identities found in one ``identityMap`` of a fragment or event.
    """

    max_links_per_identity: Annotated[PositiveInt, Field(le=1000)] = 50
    max_identities_per_graph: Annotated[StrictInt, Field(ge=2)] = 50
    cooccurrence_links: StrictBool = True


class LeaseSettings(_Model):
    """``lease:``: the lake lease that keeps one run writing at a time.

    Attributes:
        timeout_seconds: A lease not renewed for this long is free again (its holder is presumed dead). The
            holder renews it every ``timeout_seconds / 5``. A holder on the same host whose process is gone
            frees it at once; this timeout is for holders on other machines.
    """

    timeout_seconds: Annotated[StrictInt, Field(ge=10)] = 300


class SparkSettings(_Model):
    """``spark:``.

    Attributes:
        app_name: Spark application name.
        master: Spark master; None keeps the one spark-submit gave, else ``local[*]``.
        shuffle_partitions: ``spark.sql.shuffle.partitions``; None lets the session factory pick.
        conf: Extra Spark settings; scalar YAML values are turned into strings (booleans as ``true``/``false``).
    """

    app_name: NonEmptyStr = "audience-activation"
    master: NonEmptyStr | None = None
    shuffle_partitions: PositiveInt | None = None
    conf: dict[NonEmptyStr, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _scalars_to_strings(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            key: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else v)
            for key, v in value.items()
        }


class JobConfig(_Model):
    """``job.yaml``: lake layout, storage engine, merge policy and job settings."""

    lake: LakeConfig = Field(default_factory=LakeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    merge_policy: MergePolicy = Field(default_factory=TimestampOrderedPolicy)
    activation: ActivationSettings = Field(default_factory=ActivationSettings)
    membership: MembershipSettings = Field(default_factory=MembershipSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)

    def table_location(self, name: TableName | str) -> str:
        """Returns the location of a lake table.

        Args:
            name: A logical table name.

        Returns:
            The override from ``lake.tables`` (joined to the root unless absolute or a URI), else
            ``<root>/<name>``.

        Raises:
            ValueError: For an unknown logical name.
        """
        table = TableName(name)
        override = self.lake.tables.get(table)
        if override is None:
            return _join(self.lake.root, table.value)
        return override if is_absolute_location(override) else _join(self.lake.root, override)

    def activation_table(self, destination_id: str, kind: ActivationKind | str) -> str:
        """Returns ``<activation location>/<destination_id>/<kind>``.

        Args:
            destination_id: The destination id.
            kind: ``edge_streaming`` or ``hub_batch``.

        Returns:
            The table location.

        Raises:
            ValueError: For an unknown kind.
        """
        return f"{self.table_location(TableName.activation).rstrip('/')}/{destination_id}/{ActivationKind(kind).value}"

    def with_lake_root(self, root: str) -> JobConfig:
        """Returns a copy with another lake root (the ``--lake-root`` option).

        Args:
            root: The new lake root path or URI.

        Returns:
            The new configuration; table overrides that are relative follow the new root.
        """
        return self.model_copy(update={"lake": LakeConfig(root=root, tables=self.lake.tables)})


# --------------------------------------------------------------------------------------------------------------
# The whole configuration
# --------------------------------------------------------------------------------------------------------------


class AppConfig(_Model):
    """Everything loaded from one configuration directory (use :func:`load_config`).

    Attributes:
        conf_dir: The configuration directory.
        job: ``job.yaml``.
        namespaces: ``namespaces.yaml`` merged with the defaults.
        regions: ``regions.yaml`` merged with the defaults.
        segments: All segments, ``segments.yaml`` first, then ``segments/`` files by name.
        segment_files: Segment id -> the file that defines it (for error messages).
        destinations: ``destinations.yaml``.
    """

    conf_dir: Path
    job: JobConfig = Field(default_factory=JobConfig)
    namespaces: NamespacesConfig = Field(default_factory=NamespacesConfig)
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    segments: list[SegmentConfig] = Field(default_factory=list)
    segment_files: dict[str, Path] = Field(default_factory=dict)
    destinations: list[DestinationConfig] = Field(default_factory=list)

    @property
    def destinations_file(self) -> Path:
        """The path of ``destinations.yaml`` (for error messages about consent conditions)."""
        return self.conf_dir / DESTINATIONS_FILE

    def segment(self, segment_id: str) -> SegmentConfig:
        """Returns a segment by id, or raises KeyError."""
        for segment in self.segments:
            if segment.id == segment_id:
                return segment
        raise KeyError(segment_id)

    def destination(self, destination_id: str) -> DestinationConfig:
        """Returns a destination by id, or raises KeyError."""
        for destination in self.destinations:
            if destination.id == destination_id:
                return destination
        raise KeyError(destination_id)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(path, f"invalid YAML: {where}{exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"invalid YAML: {exc}") from exc


def _read_mapping(path: Path, key: str | None) -> dict[str, Any]:
    """Reads a YAML file whose top level must be a mapping (holding ``key`` when given)."""
    data = _read_yaml(path)
    if data is None:
        data = {}
    expected = f"a mapping with the key '{key}:'" if key else "a mapping"
    if not isinstance(data, dict):
        raise ConfigError(path, f"the top level must be {expected}, not a {type(data).__name__}")
    if key is not None and key not in data:
        raise ConfigError(path, f"missing the top-level key '{key}:'")
    return data


# List keys whose items carry an ``id``: errors name the item by id instead of by index.
_ITEM_KINDS = {"segments": "segment", "destinations": "destination"}


def _describe(loc: tuple[int | str, ...], data: Any) -> tuple[str | None, str | None, str | None]:
    """Maps a pydantic error location onto (item, item label, dotted key path), following the raw data."""
    item: str | None = None
    label: str | None = None
    parts: list[str] = []
    node: Any = data
    parent: Any = None
    for key in loc:
        if key == "[key]":
            continue
        if isinstance(key, int) and isinstance(node, list):
            element = node[key] if key < len(node) else None
            element_id = element.get("id") if isinstance(element, dict) else None
            if parent in _ITEM_KINDS and isinstance(element_id, str):
                item, label, parts = element_id, f"{_ITEM_KINDS[parent]} '{element_id}'", []
            elif parts:
                parts[-1] += f"[{key}]"
            else:
                parts.append(f"[{key}]")
            node = element
        elif isinstance(node, dict) and key in node:
            parts.append(str(key))
            node, parent = node[key], key
        elif isinstance(node, dict) and node.get("type") == key:
            continue  # the tag pydantic adds inside a discriminated union
        else:
            parts.append(str(key))
            node = None
    return item, label, ".".join(parts) or None


def _error_message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and kind != "value_error":
        message += f" (got {value!r})"
    return message


def _validate(model: type[_Model], data: dict[str, Any], path: Path) -> Any:
    """Validates raw YAML data, turning a pydantic ValidationError into a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines: list[str] = []
        first_item: str | None = None
        for error in exc.errors():
            item, label, key_path = _describe(tuple(error["loc"]), data)
            if first_item is None:
                first_item = item or key_path
            lines.append(": ".join(p for p in (label, key_path, _error_message(error)) if p))
        raise ConfigError(path, "\n".join(lines), item=first_item) from exc


def _load_segments(conf_dir: Path) -> tuple[list[SegmentConfig], dict[str, Path]]:
    files: list[Path] = []
    if (conf_dir / SEGMENTS_FILE).is_file():
        files.append(conf_dir / SEGMENTS_FILE)
    folder = conf_dir / SEGMENTS_DIR
    if folder.is_dir():
        files.extend(sorted((p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")), key=lambda p: p.name))
    elif not files:
        raise ConfigError(conf_dir, f"no segment definitions: add {SEGMENTS_FILE} or a {SEGMENTS_DIR}/ folder")
    segments: list[SegmentConfig] = []
    sources: dict[str, Path] = {}
    for path in files:
        parsed: _SegmentsFile = _validate(_SegmentsFile, _read_mapping(path, "segments"), path)
        for segment in parsed.segments:
            if segment.id in sources:
                raise ConfigError(
                    path,
                    f"segment '{segment.id}': duplicate segment id, already defined in {sources[segment.id]}",
                    item=segment.id,
                )
            sources[segment.id] = path
            segments.append(segment)
    return segments, sources


def _load_destinations(path: Path, segment_ids: set[str], namespaces: NamespacesConfig) -> list[DestinationConfig]:
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
                # Legal (contract §4), but usually a typo such as 'ecid'.
                logger.warning(
                    "%s: destination '%s' accepts namespace '%s', which is not configured: it counts as "
                    "cross_device with the lowest priority",
                    path,
                    destination.id,
                    code,
                )
    return parsed.destinations


def load_config(conf_dir: str | Path) -> AppConfig:
    """Loads and validates a configuration directory.

    Args:
        conf_dir: The directory holding ``job.yaml``, ``segments.yaml``, ...

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The directory is missing, a file is invalid, or files disagree (a destination maps an
            unknown segment).
    """
    conf_dir = Path(conf_dir)
    if not conf_dir.is_dir():
        raise ConfigError(conf_dir, "configuration directory not found")

    def optional(name: str, model: type[_Model], key: str | None) -> Any:
        path = conf_dir / name
        if not path.is_file():
            logger.info("%s not found: using defaults", path)
            return model()
        return _validate(model, _read_mapping(path, key), path)

    job: JobConfig = optional(JOB_FILE, JobConfig, None)
    namespaces: NamespacesConfig = optional(NAMESPACES_FILE, NamespacesConfig, "namespaces")
    regions: RegionsConfig = optional(REGIONS_FILE, RegionsConfig, "regions")
    segments, segment_files = _load_segments(conf_dir)
    destinations = _load_destinations(conf_dir / DESTINATIONS_FILE, set(segment_files), namespaces)
    return AppConfig(
        conf_dir=conf_dir,
        job=job,
        namespaces=namespaces,
        regions=regions,
        segments=segments,
        segment_files=segment_files,
        destinations=destinations,
    )
