"""The input tables' required columns (from :mod:`audience_activation.tables`) and the check that stops a run
on bad input.

Only the columns the system itself interprets are required; every other column of ``profile_fragments``
and ``experience_events`` is a profile or event attribute and may have any Spark type.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import DataType, StructType

from . import tables
from .columns import type_shape

PROFILE_FRAGMENTS = tables.FRAGMENTS.name
EXPERIENCE_EVENTS = tables.EVENTS.name
IDENTITY_GRAPH = tables.GRAPH.name
REGION_INFORMATION = tables.REGIONS.name

#: Input table -> required column -> type (from the table registry).
REQUIRED_COLUMNS: dict[str, dict[str, DataType]] = {spec.name: dict(spec.required) for spec in tables.INPUTS}

#: Tables a run cannot do without; the others are optional (events only when a segment uses xEvent).
REQUIRED_TABLES = frozenset({PROFILE_FRAGMENTS})
INPUT_TABLES = tuple(REQUIRED_COLUMNS)

#: Columns the system adds or interprets itself; they are not profile attributes.
FRAGMENT_SYSTEM_COLUMNS = frozenset(REQUIRED_COLUMNS[PROFILE_FRAGMENTS])


@dataclass(frozen=True)
class SchemaProblem:
    """One way an input table's schema differs from what the jobs require."""

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


def schema_problems(table: str, schema: StructType) -> list[SchemaProblem]:
    """Compare an input table's schema with its required columns.

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
