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

Modules, one per concern (import from this package, not from them):

- :mod:`.errors`: :class:`ConfigError` and the YAML reading that points errors at their file and item.
- :mod:`.base`: the base model (unknown keys are errors, instances are immutable) and shared field types.
- :mod:`.namespaces`, :mod:`.segments`, :mod:`.destinations` (with ``regions.yaml``), :mod:`.job`: one file each.
- :mod:`.app`: :class:`AppConfig` and :func:`load_config`.
"""

from __future__ import annotations

from ..columns import NAMESPACE_ALIASES
from .app import AppConfig, load_config
from .base import NonEmptyStr, PositiveInt
from .destinations import (
    DEFAULT_DESTINATION_NAMESPACES,
    DEFAULT_REGIONS,
    DESTINATIONS_FILE,
    REGIONAL_DESTINATION_TYPES,
    REGIONS_FILE,
    DestinationConfig,
    DestinationType,
    RegionsConfig,
    Routing,
)
from .errors import ConfigError
from .job import (
    JOB_FILE,
    ActivationKind,
    ActivationSettings,
    DatasetPrecedencePolicy,
    IdentitySettings,
    JobConfig,
    LakeConfig,
    LeaseSettings,
    MembershipSettings,
    MergePolicy,
    SparkSettings,
    StorageConfig,
    StorageEngine,
    StreamSettings,
    TableName,
    TimestampOrderedPolicy,
    is_absolute_location,
)
from .namespaces import (
    DEFAULT_NAMESPACES,
    NAMESPACES_FILE,
    NamespaceConfig,
    NamespacesConfig,
    NamespaceType,
    normalize_namespace,
)
from .segments import SEGMENTS_DIR, SEGMENTS_FILE, SegmentConfig, SegmentEvaluation, SegmentExpression

__all__ = [
    "DEFAULT_DESTINATION_NAMESPACES",
    "DEFAULT_NAMESPACES",
    "DEFAULT_REGIONS",
    "DESTINATIONS_FILE",
    "JOB_FILE",
    "NAMESPACES_FILE",
    "NAMESPACE_ALIASES",
    "REGIONAL_DESTINATION_TYPES",
    "REGIONS_FILE",
    "SEGMENTS_DIR",
    "SEGMENTS_FILE",
    "ActivationKind",
    "ActivationSettings",
    "AppConfig",
    "ConfigError",
    "DatasetPrecedencePolicy",
    "DestinationConfig",
    "DestinationType",
    "IdentitySettings",
    "JobConfig",
    "LakeConfig",
    "LeaseSettings",
    "MembershipSettings",
    "MergePolicy",
    "NamespaceConfig",
    "NamespaceType",
    "NamespacesConfig",
    "NonEmptyStr",
    "PositiveInt",
    "RegionsConfig",
    "Routing",
    "SegmentConfig",
    "SegmentEvaluation",
    "SegmentExpression",
    "SparkSettings",
    "StorageConfig",
    "StorageEngine",
    "StreamSettings",
    "TableName",
    "TimestampOrderedPolicy",
    "is_absolute_location",
    "load_config",
    "normalize_namespace",
]
