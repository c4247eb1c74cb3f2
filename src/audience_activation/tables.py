"""The lake's tables: one spec per table, the only place their names, schemas and write modes are written down.

Rules, as the jobs apply them:

1. **Inputs** (``profile_fragments``, ``experience_events``, ``identity_graph``, ``region_information``) are
   read at their latest Delta version; only the columns in :attr:`TableSpec.required` are interpreted, every
   other column is a profile or event attribute (checked by :mod:`audience_activation.schemas`).
2. **Outputs** are written by looping over ``(spec, DataFrame)`` pairs: each DataFrame is first conformed to
   the spec's schema (columns selected by name in the spec's order; a column missing or of another type is an
   error, never a silent cast), then written in the spec's mode:

   - ``overwrite``: the table holds the state after the newest run (``identity_clusters``,
     ``unified_profiles``, ``segment_membership``), or after the run that last wrote it whole
     (``activation_state``, whose later changes by the streaming job are in ``activation_state_log``);
   - ``run_partition``: the rows of one run, in partition ``run_id``, replaced when the same ``T`` runs again
     (``quarantine``, ``activation_runs``, the two activation tables of every destination);
   - ``append``: rows added to the table's log (``activation_state_log``: the streaming job's changes of the
     activation state since it was last written whole, :func:`audience_activation.state_log.current_state`);
     an output may ask for an overwrite instead (emptying the log when the state is written whole).

3. ``unified_profiles`` has no fixed schema: its attribute columns are those of ``profile_fragments``
   (:func:`audience_activation.profile.profile_schema`); only its system columns are fixed.
4. Tables with :attr:`TableSpec.properties` ``delta.enableChangeDataFeed`` (``segment_membership`` and the
   activation tables) let downstream systems stream each run's changes.

Example:
    >>> for spec, df in ((CLUSTERS, clusters), (MEMBERSHIP, membership)):  # doctest: +SKIP
    ...     store.overwrite(spec.conform(df), spec.location(config.job), properties=spec.properties)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from .columns import IDENTITY_MAP_TYPE, USER_ACTIVITY_REGIONS_TYPE, type_shape
from .storage.base import CHANGE_DATA_FEED

#: The partition column of the tables that hold one partition per run.
RUN_ID = "run_id"


class Role(str, enum.Enum):
    """Who writes a table."""

    INPUT = "input"  # written by the company's pipelines (or ``demo-data``); read by the jobs
    OUTPUT = "output"  # written by the jobs


class WriteMode(str, enum.Enum):
    """How a job writes an output table."""

    READ_ONLY = "read_only"  # inputs
    OVERWRITE = "overwrite"  # the state after the newest run
    RUN_PARTITION = "run_partition"  # partition run_id, replaced when the same T runs again
    APPEND = "append"  # rows added in one commit (a replayed micro-batch's rows are rolled back first)


class TableSchemaError(ValueError):
    """A DataFrame does not have the columns its table's spec requires (a bug, not bad input)."""


_SIMPLE_TYPES: dict[str, DataType] = {
    "string": StringType(),
    "int": IntegerType(),
    "bigint": LongType(),
    "boolean": BooleanType(),
    "timestamp": TimestampType(),
}


def _schema(*fields: str | StructField) -> StructType:
    """A schema from ``"name type"`` strings (simple types) and StructFields (no Spark session needed)."""
    built = []
    for item in fields:
        if isinstance(item, StructField):
            built.append(item)
        else:
            name, type_name = item.split()
            built.append(StructField(name, _SIMPLE_TYPES[type_name]))
    return StructType(built)


@dataclass(frozen=True)
class TableSpec:
    """One lake table.

    Attributes:
        name: the logical name (``lake.tables`` keys in ``job.yaml``; the default folder under the lake root).
        role: input or output.
        schema: the output schema, in column order; None when the columns depend on the inputs.
        required: for inputs, the columns the jobs interpret and their types.
        partition_by: the partition columns.
        mode: how a job writes it.
        properties: Delta table properties every write makes sure the table has.
        per_destination: one table per destination (``activation/<destination_id>/<kind>``).
    """

    name: str
    role: Role
    schema: StructType | None = None
    required: Mapping[str, DataType] = field(default_factory=dict)
    partition_by: tuple[str, ...] = ()
    mode: WriteMode = WriteMode.READ_ONLY
    properties: Mapping[str, str] = field(default_factory=dict)
    per_destination: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        """The schema's column names (empty when the schema depends on the inputs)."""
        return tuple(self.schema.fieldNames()) if self.schema is not None else ()

    def location(self, job: JobLocations, destination_id: str | None = None) -> str:
        """Where the table is for this configuration (``destination_id`` for per-destination tables)."""
        if self.per_destination:
            if destination_id is None:
                raise ValueError(f"{self.name} is a per-destination table: pass the destination id")
            return job.activation_table(destination_id, self.name)
        return job.table_location(self.name)

    def conform(self, df: DataFrame) -> DataFrame:
        """``df`` with exactly the spec's columns in the spec's order.

        Raises:
            TableSchemaError: a column is missing or has another type (names and types compared, nullability
                not); a DataFrame of a table without a fixed schema is returned as it is.
        """
        if self.schema is None:
            return df
        actual = {f.name: f.dataType for f in df.schema.fields}
        problems = []
        for expected in self.schema.fields:
            if expected.name not in actual:
                problems.append(f"column {expected.name} is missing")
            elif type_shape(actual[expected.name]) != type_shape(expected.dataType):
                problems.append(
                    f"column {expected.name} has type {actual[expected.name].simpleString()}, "
                    f"expected {expected.dataType.simpleString()}"
                )
        if problems:
            raise TableSchemaError(f"rows for {self.name}: " + "; ".join(problems))
        return df.select(*[F.col(name) for name in self.columns])

    def empty(self, spark: SparkSession) -> DataFrame:
        """An empty DataFrame of this table's schema."""
        if self.schema is None:  # pragma: no cover - only fixed-schema tables are ever made empty
            raise ValueError(f"{self.name} has no fixed schema")
        return spark.createDataFrame([], self.schema)


class JobLocations(Protocol):
    """What :meth:`TableSpec.location` needs of ``job.yaml`` (:class:`~audience_activation.config.JobConfig`)."""

    def table_location(self, name: Any) -> str: ...

    def activation_table(self, destination_id: str, kind: Any) -> str: ...


# -- inputs ----------------------------------------------------------------------------------------------------

FRAGMENTS = TableSpec(
    "profile_fragments",
    Role.INPUT,
    required={"identityMap": IDENTITY_MAP_TYPE, "dataset": StringType(), "ingested_at": TimestampType()},
)
EVENTS = TableSpec(
    "experience_events",
    Role.INPUT,
    required={
        "_id": StringType(),
        "timestamp": TimestampType(),
        "eventType": StringType(),
        "identityMap": IDENTITY_MAP_TYPE,
    },
)
GRAPH = TableSpec(
    "identity_graph",
    Role.INPUT,
    required={
        "src_namespace": StringType(),
        "src_id": StringType(),
        "dst_namespace": StringType(),
        "dst_id": StringType(),
        "last_seen_at": TimestampType(),
    },
)
REGIONS = TableSpec(
    "region_information",
    Role.INPUT,
    required={"identityMap": IDENTITY_MAP_TYPE, "userActivityRegions": USER_ACTIVITY_REGIONS_TYPE},
)

# -- outputs ---------------------------------------------------------------------------------------------------

CLUSTERS = TableSpec(
    "identity_clusters",
    Role.OUTPUT,
    _schema("namespace string", "id string", "person_id string", "graph_size int"),
    mode=WriteMode.OVERWRITE,
)
PROFILES = TableSpec("unified_profiles", Role.OUTPUT, None, mode=WriteMode.OVERWRITE)
MEMBERSHIP = TableSpec(
    "segment_membership",
    Role.OUTPUT,
    _schema(
        "person_id string",
        "segment_id string",
        "status string",
        "last_qualification_time timestamp",
        "evaluated_at timestamp",
        "evaluation_method string",
    ),
    mode=WriteMode.OVERWRITE,
    properties=CHANGE_DATA_FEED,
)
_CHANGE_FIELDS = [
    StructField(RUN_ID, StringType()),
    StructField("evaluated_at", TimestampType()),
    StructField("destination_id", StringType()),
    StructField("segment_id", StringType()),
    StructField("person_id", StringType()),
    StructField("status", StringType()),
    StructField("reason", StringType()),
    StructField("last_qualification_time", TimestampType()),
    StructField("identityMap", IDENTITY_MAP_TYPE),
]
ACTIVATION_EDGE = TableSpec(
    "edge_streaming",
    Role.OUTPUT,
    StructType([*_CHANGE_FIELDS, StructField("region", StringType()), StructField("dcs_region_id", IntegerType())]),
    partition_by=(RUN_ID,),
    mode=WriteMode.RUN_PARTITION,
    properties=CHANGE_DATA_FEED,
    per_destination=True,
)
ACTIVATION_HUB = TableSpec(
    "hub_batch",
    Role.OUTPUT,
    StructType(list(_CHANGE_FIELDS)),
    partition_by=(RUN_ID,),
    mode=WriteMode.RUN_PARTITION,
    properties=CHANGE_DATA_FEED,
    per_destination=True,
)
_ACTIVATION_STATE_SCHEMA = _schema(
    "destination_id string",
    "segment_id string",
    "person_id string",
    "consent_ok boolean",
    "activated boolean",
    StructField("identities_sent", IDENTITY_MAP_TYPE),
)
ACTIVATION_STATE = TableSpec("activation_state", Role.OUTPUT, _ACTIVATION_STATE_SCHEMA, mode=WriteMode.OVERWRITE)
#: The streaming job's changes to ``activation_state`` since it was last written whole: for each changed
#: ``(destination_id, segment_id, person_id)``, its new row, or a row with ``removed`` when it has none any more;
#: the row of the highest ``generation`` holds. ``state_log.current_state`` reads both tables as one.
ACTIVATION_STATE_LOG = TableSpec(
    "activation_state_log",
    Role.OUTPUT,
    StructType(
        [
            *_ACTIVATION_STATE_SCHEMA.fields,
            StructField("generation", LongType()),
            StructField("removed", BooleanType()),
        ]
    ),
    mode=WriteMode.APPEND,
)
QUARANTINE = TableSpec(
    "quarantine",
    Role.OUTPUT,
    _schema("run_id string", "source_table string", "namespace string", "id string", "row_key string", "reason string"),
    partition_by=(RUN_ID,),
    mode=WriteMode.RUN_PARTITION,
)
RUNS = TableSpec(
    "activation_runs",
    Role.OUTPUT,
    StructType(
        [
            StructField(RUN_ID, StringType()),
            StructField("kind", StringType()),
            StructField("evaluation_time", TimestampType()),
            StructField("started_at", TimestampType()),
            StructField("ended_at", TimestampType()),
            StructField("status", StringType()),
            StructField("storage_engine", StringType()),
            StructField("input_versions", MapType(StringType(), LongType())),
            StructField("output_versions", MapType(StringType(), LongType())),
            StructField("counts", MapType(StringType(), LongType())),
            StructField("mappings", MapType(StringType(), ArrayType(StringType()))),
            StructField("error", StringType()),
        ]
    ),
    partition_by=(RUN_ID,),
    mode=WriteMode.RUN_PARTITION,
)

INPUTS: tuple[TableSpec, ...] = (FRAGMENTS, EVENTS, GRAPH, REGIONS)
#: Input table -> its attribute in the pipeline's holders of the four inputs (``Inputs``, ``AsOfInputs``,
#: ``Changes``, ``InputsIndex``).
INPUT_FIELDS = {FRAGMENTS.name: "fragments", EVENTS.name: "events", GRAPH.name: "links", REGIONS.name: "regions"}
#: The outputs in the order a batch run commits them (the run log last: its row says the run completed).
OUTPUTS: tuple[TableSpec, ...] = (
    CLUSTERS,
    PROFILES,
    MEMBERSHIP,
    ACTIVATION_EDGE,
    ACTIVATION_HUB,
    ACTIVATION_STATE,
    ACTIVATION_STATE_LOG,
    QUARANTINE,
    RUNS,
)
#: The previous run's outputs a run reads as "the state before" (at the versions that run recorded).
STATE_TABLES: tuple[TableSpec, ...] = (MEMBERSHIP, ACTIVATION_STATE, CLUSTERS)
#: The two activation tables of a destination, edge first.
ACTIVATION_TABLES: tuple[TableSpec, ...] = (ACTIVATION_EDGE, ACTIVATION_HUB)


def by_name(name: str) -> TableSpec:
    """The spec of a logical table name.

    Raises:
        KeyError: an unknown name.
    """
    for spec in (*INPUTS, *OUTPUTS):
        if spec.name == name:
            return spec
    raise KeyError(name)


def activation_key(destination_id: str, spec: TableSpec) -> str:
    """The name a destination's activation table has in the run log: ``activation/<destination_id>/<kind>``."""
    return f"activation/{destination_id}/{spec.name}"
