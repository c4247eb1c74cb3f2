"""``job.yaml``: lake layout, storage engine, merge policy and the settings of each job step.

Sections: ``lake``, ``storage``, ``merge_policy``, ``activation``, ``membership``, ``identity``, ``lease`` and
``spark``; every key has a default. ``docs/configuration.md`` ("job.yaml") describes every field.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator

from .base import NonEmptyStr, PositiveInt, _Model

JOB_FILE = "job.yaml"

# An "absolute" location: a POSIX absolute path or a URI with a scheme of 2+ characters (s3a://, file:/, abfss://).
_ABSOLUTE_LOCATION = re.compile(r"^(/|[A-Za-z][A-Za-z0-9+.-]+:)")


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
    activation_state_log = "activation_state_log"
    activation = "activation"


class ActivationKind(str, Enum):
    """The two output tables of a destination."""

    edge_streaming = "edge_streaming"
    hub_batch = "hub_batch"


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


class StreamSettings(_Model):
    """``stream:``: the streaming job (docs/streaming.md).

    Attributes:
        sweep_interval_seconds: With no new input commit for this long, the stream still runs a micro-batch (a
            *sweep*) so that members of time-windowed streamed segments exit when their window passes; 0 turns
            sweeps off. Only when a streamed segment depends on the time.
        identity_index: Keep an identity index of the inputs in the running stream (``input_index``), so the
            rows touching the affected persons are looked up instead of scanned. Off by default: it takes heap,
            and on the 1M-person demo lake its lookups are no faster than the scans (docs/streaming.md).
        state_log_max_rows: A micro-batch appends its changes of the activation state to
            ``activation_state_log`` instead of rewriting ``activation_state``, until the log would hold more
            rows than this; that micro-batch then writes the state whole and empties the log (0: always whole).
    """

    sweep_interval_seconds: Annotated[StrictInt, Field(ge=0)] = 300
    identity_index: StrictBool = False
    state_log_max_rows: Annotated[StrictInt, Field(ge=0)] = 1_000_000


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
    stream: StreamSettings = Field(default_factory=StreamSettings)
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
