"""The input tables of CONTRACT §3: their required columns, and the check that stops a run on bad input.

Only the columns the system itself interprets are required; every other column of ``profile_fragments``
and ``experience_events`` is a profile or event attribute and may have any Spark type.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

#: XDM identity map: namespace code -> identities of that namespace.
IDENTITY_MAP_TYPE = MapType(
    StringType(),
    ArrayType(StructType([StructField("id", StringType()), StructField("primary", BooleanType())])),
)

#: XDM "data capture region" field: region code -> last capture time.
USER_ACTIVITY_REGIONS_TYPE = MapType(StringType(), StructType([StructField("captureTimestamp", TimestampType())]))

PROFILE_FRAGMENTS = "profile_fragments"
EXPERIENCE_EVENTS = "experience_events"
IDENTITY_GRAPH = "identity_graph"
REGION_INFORMATION = "region_information"

#: Input table -> required column -> type.
REQUIRED_COLUMNS: dict[str, dict[str, DataType]] = {
    PROFILE_FRAGMENTS: {
        "identityMap": IDENTITY_MAP_TYPE,
        "dataset": StringType(),
        "ingested_at": TimestampType(),
    },
    EXPERIENCE_EVENTS: {
        "_id": StringType(),
        "timestamp": TimestampType(),
        "eventType": StringType(),
        "identityMap": IDENTITY_MAP_TYPE,
    },
    IDENTITY_GRAPH: {
        "src_namespace": StringType(),
        "src_id": StringType(),
        "dst_namespace": StringType(),
        "dst_id": StringType(),
        "last_seen_at": TimestampType(),
    },
    REGION_INFORMATION: {
        "identityMap": IDENTITY_MAP_TYPE,
        "userActivityRegions": USER_ACTIVITY_REGIONS_TYPE,
    },
}

#: Tables a run cannot do without; the others are optional (events only when a segment uses xEvent).
REQUIRED_TABLES = frozenset({PROFILE_FRAGMENTS})
INPUT_TABLES = tuple(REQUIRED_COLUMNS)

#: Columns the system adds or interprets itself; they are not profile attributes.
FRAGMENT_SYSTEM_COLUMNS = frozenset(REQUIRED_COLUMNS[PROFILE_FRAGMENTS])


@dataclass(frozen=True)
class SchemaProblem:
    """One way an input table's schema differs from CONTRACT §3."""

    table: str
    column: str
    message: str

    def __str__(self) -> str:
        return f"input table {self.table}: column {self.column}: {self.message}"


class InputSchemaError(ValueError):
    """Malformed input: the run stops before writing anything.

    Attributes:
        problems: every problem found, each naming the table and the column.
    """

    def __init__(self, problems: list[SchemaProblem]) -> None:
        self.problems = problems
        super().__init__("malformed input:\n" + "\n".join(f"  - {problem}" for problem in problems))


def type_shape(data_type: DataType) -> object:
    """A type's JSON without nullability, so only names and types are compared."""

    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {
                key: strip(value)
                for key, value in node.items()
                if key not in ("nullable", "containsNull", "valueContainsNull", "metadata")
            }
        if isinstance(node, list):
            return [strip(value) for value in node]
        return node

    return strip(data_type.jsonValue())


def schema_problems(table: str, schema: StructType) -> list[SchemaProblem]:
    """Compare an input table's schema with the required columns of CONTRACT §3.

    Args:
        table: the logical input table name (e.g. ``profile_fragments``).
        schema: the table's Spark schema.

    Returns:
        The problems found; empty when the schema is usable.
    """
    fields = {field.name: field for field in schema.fields}
    problems = []
    for column, expected in REQUIRED_COLUMNS[table].items():
        field = fields.get(column)
        if field is None:
            problems.append(SchemaProblem(table, column, f"missing (required, type {expected.simpleString()})"))
        elif type_shape(field.dataType) != type_shape(expected):
            problems.append(
                SchemaProblem(
                    table,
                    column,
                    f"has type {field.dataType.simpleString()}, expected {expected.simpleString()}",
                )
            )
    return problems


def check_input_schemas(schemas: dict[str, StructType | None]) -> None:
    """Raise :class:`InputSchemaError` listing every problem of every input table.

    Args:
        schemas: logical table name -> its schema, or ``None`` when the table does not exist.
    """
    problems: list[SchemaProblem] = []
    for table, schema in schemas.items():
        if schema is None:
            if table in REQUIRED_TABLES:
                problems.append(SchemaProblem(table, "*", "the table does not exist (it is required)"))
            continue
        problems.extend(schema_problems(table, schema))
    if problems:
        raise InputSchemaError(problems)
