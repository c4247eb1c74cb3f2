"""The ``delta-spark`` engine: the Delta Lake Spark connector (``format("delta")``).

This is what clusters use (Databricks, EMR, Dataproc, or ``spark-submit --packages
io.delta:delta-spark_4.2_2.13:4.4.1``). It implements the same small interface as the delta-rs engine so
jobs do not know which one runs. Each write records ``{"writeId": ...}`` in the commit's ``userMetadata`` so
the version a write produced can be found even when other writers commit afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from .base import (
    ConcurrentWriteError,
    DeltaStorage,
    PartitionValue,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    TableSnapshot,
    check_partition_columns,
    commit_metadata,
    conform_to_table,
)

log = logging.getLogger(__name__)


def _sql_literal(value: PartitionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class DeltaSparkStorage(DeltaStorage):
    """Delta tables through the Delta Lake Spark connector (requires its jars on the classpath)."""

    name = "delta-spark"

    def __init__(self, spark: SparkSession) -> None:
        super().__init__(spark)
        from delta.tables import DeltaTable  # noqa: PLC0415 - only importable with delta-spark installed

        self._delta_table = DeltaTable

    def exists(self, location: str) -> bool:
        return bool(self._delta_table.isDeltaTable(self.spark, location))

    def _require(self, location: str) -> Any:
        if not self.exists(location):
            raise TableNotFoundError(f"{location}: no Delta table at this location")
        return self._delta_table.forPath(self.spark, location)

    def version(self, location: str) -> int:
        return int(self._require(location).history(1).select("version").first()[0])

    def history(self, location: str, limit: int | None = None) -> list[dict[str, Any]]:
        rows = self._require(location).history(limit).orderBy("version", ascending=False).collect()
        entries = []
        for row in rows:
            entry = row.asDict(recursive=True)
            metadata = entry.get("userMetadata")
            if metadata:
                with contextlib.suppress(ValueError):
                    entry.update(json.loads(metadata))
            entries.append(entry)
        return entries

    def schema(self, location: str) -> StructType:
        self._require(location)
        return self.spark.read.format("delta").load(location).schema

    def read(self, location: str, version: int | None = None) -> TableSnapshot:
        resolved = self.version(location) if version is None else version
        df = self.spark.read.format("delta").option("versionAsOf", resolved).load(location)
        return TableSnapshot(location=location, version=resolved, df=df)

    def create(self, location: str, schema: StructType, partition_by: Sequence[str] = ()) -> int:
        if self.exists(location):
            raise StorageError(f"{location}: a Delta table already exists here")
        check_partition_columns(schema, partition_by, location)
        builder = self._delta_table.create(self.spark).location(location).addColumns(schema)
        if partition_by:
            builder = builder.partitionedBy(*partition_by)
        builder.execute()
        return self.version(location)

    def append(
        self,
        df: DataFrame,
        location: str,
        *,
        partition_by: Sequence[str] = (),
        commit_info: Mapping[str, str] | None = None,
    ) -> int:
        return self._write(df, location, "append", partition_by, None, commit_info)

    def overwrite(
        self,
        df: DataFrame,
        location: str,
        *,
        partition_by: Sequence[str] = (),
        commit_info: Mapping[str, str] | None = None,
    ) -> int:
        return self._write(df, location, "overwrite", partition_by, None, commit_info)

    def replace_partitions(
        self,
        df: DataFrame,
        location: str,
        where: Mapping[str, PartitionValue],
        *,
        partition_by: Sequence[str] = (),
        commit_info: Mapping[str, str] | None = None,
    ) -> int:
        if not where or any(value is None for value in where.values()):
            raise ValueError("replace_partitions needs non-null equality values for at least one column")
        return self._write(df, location, "overwrite", partition_by, dict(where), commit_info)

    def _write(
        self,
        df: DataFrame,
        location: str,
        mode: str,
        partition_by: Sequence[str],
        where: dict[str, PartitionValue] | None,
        commit_info: Mapping[str, str] | None,
    ) -> int:
        if self.exists(location):
            table_schema = self.schema(location)
            detail = self._require(location).detail().select("partitionColumns").first()[0]
            partition_columns = list(detail)
            if partition_by and list(partition_by) != partition_columns:
                raise SchemaMismatchError(
                    f"{location}: table is partitioned by {partition_columns}, write asked for {list(partition_by)}"
                )
            df = conform_to_table(df, table_schema, location)
        else:
            partition_columns = list(partition_by)
            check_partition_columns(df.schema, partition_columns, location)
        write_id = uuid.uuid4().hex
        metadata = json.dumps(commit_metadata(write_id, self.name, commit_info))
        writer = df.write.format("delta").mode(mode).option("userMetadata", metadata)
        if partition_columns:
            writer = writer.partitionBy(*partition_columns)
        if where is not None:
            outside = [column for column in where if column not in partition_columns]
            if outside:
                raise ValueError(f"{location}: {outside} are not partition columns of the table ({partition_columns})")
            predicate = " AND ".join(f"`{column}` = {_sql_literal(value)}" for column, value in where.items())
            writer = writer.option("replaceWhere", predicate)
        try:
            writer.save(location)
        except Exception as exc:
            if "ConcurrentModification" in type(exc).__name__ or "Concurrent" in str(exc)[:300]:
                raise ConcurrentWriteError(f"{location}: another writer committed concurrently: {exc}") from exc
            raise
        for entry in self.history(location, 20):
            if entry.get("writeId") == write_id:
                return int(entry["version"])
        return self.version(location)

    def cleanup(self, location: str, *, older_than: timedelta = timedelta(hours=1)) -> list[str]:
        """delta-spark stages no files outside its own protocol; ``VACUUM`` removes orphans of failed jobs.

        Runs ``VACUUM`` with the table's configured retention (default 7 days), which also removes files of
        versions older than that retention. Returns an empty list: the connector does not report paths.
        """
        log.info("%s: running VACUUM (table retention; older_than=%s is not used by delta-spark)", location, older_than)
        self._require(location).vacuum()
        return []
