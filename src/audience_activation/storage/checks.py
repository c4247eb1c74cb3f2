"""The checks both storage engines run before a write commits, and the helpers they share
(:class:`audience_activation.storage.base.DeltaStorage` calls them; docs/storage.md).

- **Partition columns** (:func:`check_partition_columns`): present in the data and of a type both engines write
  and read back exactly (:data:`PARTITION_TYPES`).
- **Partition predicates** (:func:`require_partition_values`): a ``where`` names partition columns only, and
  every row written lies in the partitions it replaces (checked while the files are written, so a stray row fails
  the write before its commit).
- **Schema** (:func:`conform_to_table`): the data's columns in the table's order, names and types equal
  (nullability aside).
- **Table properties** (:func:`missing_properties`): those a write wants that the table lacks or holds with another
  value.
- **Commit metadata** (:func:`commit_metadata`): the write id, the engine and the caller's keys, none of them
  :data:`RESERVED_COMMIT_KEYS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from ..columns import type_shape
from .errors import SchemaMismatchError

#: Partition values that may appear in an equality predicate.
PartitionValue = str | int | bool | None

#: Partition column types both engines write and read back exactly.
PARTITION_TYPES = ("string", "integer", "long", "short", "byte", "boolean", "date")


def check_partition_columns(schema: StructType, partition_by: Sequence[str], location: str) -> None:
    """Fail clearly on partition columns that are missing from the schema or of an unsupported type."""
    fields = {field.name: field for field in schema.fields}
    for column in partition_by:
        if column not in fields:
            raise SchemaMismatchError(f"{location}: partition column {column!r} is not in the data")
        type_name = fields[column].dataType.typeName()
        if type_name not in PARTITION_TYPES:
            raise SchemaMismatchError(
                f"{location}: partition column {column!r} has type {type_name}; "
                f"supported partition types are {', '.join(PARTITION_TYPES)}"
            )


def require_partition_values(
    df: DataFrame, where: Mapping[str, PartitionValue], partition_columns: Sequence[str], location: str
) -> DataFrame:
    """``df`` with a check that every row lies in the partitions ``where`` replaces (both engines).

    The check runs while the data files are written, so a row outside the predicate fails the write before
    its commit, with a message naming the table, the column and the value.

    Raises:
        ValueError: ``where`` names a column that is not a partition column of the table.
    """
    outside = [column for column in where if column not in partition_columns]
    if outside:
        raise ValueError(f"{location}: {outside} are not partition columns of the table ({list(partition_columns)})")

    def checked(column: str, value: PartitionValue) -> Column:
        return F.when(F.col(column) == F.lit(value), F.col(column)).otherwise(
            F.raise_error(
                F.concat(
                    F.lit(f"{location}: a row has {column} = "),
                    F.coalesce(F.col(column).cast("string"), F.lit("null")),
                    F.lit(f", outside the partition being replaced ({column} = {value!r})"),
                )
            )
        )

    return df.withColumns({column: checked(column, value) for column, value in where.items()})


def missing_properties(current: Mapping[str, str], wanted: Mapping[str, str] | None) -> dict[str, str]:
    """The ``wanted`` table properties that ``current`` lacks or holds with another value."""
    return {key: value for key, value in (wanted or {}).items() if current.get(key) != value}


#: commitInfo keys written by the engines themselves; callers' ``commit_info`` may not use them.
RESERVED_COMMIT_KEYS = frozenset(
    {
        "operation",
        "operationParameters",
        "timestamp",
        "version",
        "engineInfo",
        "clientVersion",
        "writeId",
        "engine",
        "userMetadata",
    }
)


def commit_metadata(write_id: str, engine: str, commit_info: Mapping[str, str] | None) -> dict[str, str]:
    """The custom commitInfo of a write: its id, the engine, and the caller's keys (e.g. ``run_id``)."""
    reserved = sorted(RESERVED_COMMIT_KEYS & set(commit_info or {}))
    if reserved:
        raise ValueError(f"commit_info keys {reserved} are reserved by the storage engines")
    return {"writeId": write_id, "engine": engine, **{str(k): str(v) for k, v in (commit_info or {}).items()}}


def conform_to_table(df: DataFrame, table_schema: StructType, location: str) -> DataFrame:
    """Select ``df``'s columns in the table's order, failing if names or types differ.

    Nullability is not compared: Spark marks most computed columns nullable, and Delta readers do not
    depend on it.
    """
    df_fields = {field.name: field for field in df.schema.fields}
    table_fields = {field.name: field for field in table_schema.fields}
    missing = [name for name in table_fields if name not in df_fields]
    extra = [name for name in df_fields if name not in table_fields]
    problems = []
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    for name, field in table_fields.items():
        if name in df_fields and type_shape(df_fields[name].dataType) != type_shape(field.dataType):
            problems.append(
                f"column {name!r} is {df_fields[name].dataType.simpleString()}, "
                f"table has {field.dataType.simpleString()}"
            )
    if problems:
        raise SchemaMismatchError(f"{location}: data does not match the table schema: " + "; ".join(problems))
    return df.select(*table_fields)
