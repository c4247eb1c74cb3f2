"""The ``delta-rs`` engine: Spark moves the data, the ``deltalake`` package commits it.

For machines without the Delta Lake Spark jars (only PyPI packages). The data path stays distributed:

- **Reads.** delta-rs lists the snapshot's data files and partition values (the log replay is the only
  driver work); Spark executors read those parquet files. Partition values come from the log, never from
  directory names.
- **Writes.** Spark executors write parquet files into a directory of the table named ``write-<id>``; the
  driver lists them and commits one Delta transaction of ``add`` actions (plus the ``remove`` actions of an
  overwrite) with delta-rs. The commit is the atomic step: until it lands, readers see none of the files.
- **Concurrency.** The transaction is bound to the version read before the files were written, with no
  automatic retries: if anyone else committed in between, the commit fails with
  :class:`~audience_activation.storage.base.ConcurrentWriteError`, the staged files are deleted and the table
  is left as the other writer made it.
- **Failures.** A write that fails before its commit deletes its staged files; one that was killed leaves
  a ``write-<id>`` directory that no commit mentions, which :meth:`DeltaRsStorage.cleanup` removes. Each
  commit records its write id in ``commitInfo.writeId``.
- **Reader features.** Tables needing a reader feature Spark-over-parquet cannot honour (deletion vectors,
  column mapping, ...) are refused with an error naming the table and the feature, never read wrongly.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import reduce
from typing import Any, cast
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, create_table_with_add_actions
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from . import errors
from .base import CommitPlan, DeltaStorage, PartitionValue, TableSnapshot, TableState
from .errors import ConcurrentWriteError, StorageError, TableNotFoundError, UnsupportedTableFeatureError, damaged
from .files import arrow_filesystem, damaged_log_entry, require_files, with_user_metadata

log = logging.getLogger(__name__)

#: Reader features that change nothing for a reader that takes the file list from delta-rs and reads the
#: parquet files with Spark.
SUPPORTED_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})

WRITE_DIR_PREFIX = "write-"
_WRITE_DIR = re.compile(rf"^{WRITE_DIR_PREFIX}([0-9a-f]{{32}})$")
#: How Spark writes a null partition value in a directory name.
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def table_root(location: str) -> str:
    """The table location as a URI (``scheme://...``) or an absolute local path, without trailing slash."""
    if "://" in location or location.startswith("file:"):
        return location.rstrip("/")
    return os.path.abspath(location)


def _partition_string(value: PartitionValue) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unescape_path_name(name: str) -> str:
    """Undo Spark's escaping of partition directory names (``%XX`` for special characters)."""
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), name)


def _commit_properties(metadata: Mapping[str, str]) -> CommitProperties:
    """A commit's custom ``commitInfo``: the whole metadata as ``userMetadata`` (JSON, read by both engines'
    ``history``), plus ``writeId`` and ``engine`` as keys of their own (``cleanup`` reads ``writeId`` from the raw
    log). The caller's other keys stay inside ``userMetadata``: a top-level key that is also a field of the Delta
    protocol's ``commitInfo`` with another type (``job``, ``notebook``, ``readVersion``...) makes Delta Lake
    for Spark fail to read the table's log."""
    return CommitProperties(
        custom_metadata={
            "writeId": metadata["writeId"],
            "engine": metadata["engine"],
            "userMetadata": json.dumps(dict(metadata)),
        },
        max_commit_retries=0,
    )


class DeltaRsStorage(DeltaStorage):
    """Delta tables through Spark parquet I/O and delta-rs commits.

    Args:
        spark: the session whose executors read and write the data files.
        storage_options: object-store options passed to delta-rs (e.g. ``AWS_REGION``); local paths need none.
    """

    name = "delta-rs"

    def __init__(self, spark: SparkSession, storage_options: Mapping[str, str] | None = None) -> None:
        super().__init__(spark)
        self.storage_options = dict(storage_options or {})

    # -- reading -------------------------------------------------------------------------------------
    def _table(self, location: str, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(table_root(location), version=version, storage_options=self.storage_options or None)
        except DeltaTableNotFoundError as exc:
            raise TableNotFoundError(f"{location}: no Delta table at this location") from exc
        except (DeltaError, OSError) as exc:
            entry = damaged_log_entry(location)
            if entry is not None:
                raise damaged(location, entry, "an entry of its Delta log cannot be read") from exc
            # delta-rs appends a Rust backtrace to some messages: the first line says what went wrong.
            raise StorageError(f"{location}: cannot open the Delta table: {str(exc).splitlines()[0]}") from exc

    def exists(self, location: str) -> bool:
        return DeltaTable.is_deltatable(table_root(location), storage_options=self.storage_options or None)

    def version(self, location: str) -> int:
        return int(self._table(location).version())

    def history(self, location: str, limit: int | None = None) -> list[dict[str, Any]]:
        entries = [with_user_metadata(entry) for entry in self._table(location).history(limit)]
        return sorted(entries, key=lambda entry: entry["version"], reverse=True)

    def schema(self, location: str) -> StructType:
        return _spark_schema(self._table(location))

    def properties(self, location: str) -> dict[str, str]:
        return {k: v for k, v in (self._table(location).metadata().configuration or {}).items() if v is not None}

    def check_reader_features(self, table: DeltaTable, location: str) -> None:
        """Refuse tables whose correct reading needs a feature this engine does not implement."""
        protocol = table.protocol()
        configuration = table.metadata().configuration or {}
        unsupported: set[str] = set()
        if protocol.min_reader_version >= 3:
            unsupported |= set(protocol.reader_features or []) - SUPPORTED_READER_FEATURES
        if (configuration.get("delta.columnMapping.mode") or "none") != "none":
            unsupported.add("columnMapping")
        if protocol.min_reader_version > 3:
            unsupported.add(f"minReaderVersion {protocol.min_reader_version}")
        if unsupported:
            raise UnsupportedTableFeatureError(
                f"table {location} uses the Delta reader feature(s) {', '.join(sorted(unsupported))}, "
                f"which the delta-rs storage engine cannot honour; use the delta-spark engine "
                f"(storage.engine: delta-spark with the Delta jars on the classpath) to read it"
            )

    def _snapshot(self, location: str, version: int | None) -> TableSnapshot:
        table = self._table(location, version)
        df = self._scan_files(location, table, None)
        return TableSnapshot(location=location, version=int(table.version()), df=df)

    def _scan_files(self, location: str, table: DeltaTable, files: Sequence[str] | None) -> DataFrame:
        """The rows of the table version's data files (``files``: only those, as absolute paths)."""
        self.check_reader_features(table, location)
        schema = _spark_schema(table)
        partition_columns = list(table.metadata().partition_columns)
        root = table_root(location)
        actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
        wanted = None if files is None else set(files)
        actions = [a for a in actions if wanted is None or _absolute_path(root, a["path"]) in wanted]
        require_files(location, [action["path"] for action in actions])
        groups: dict[tuple[Any, ...], list[str]] = {}
        for action in actions:
            key = tuple(action.get(f"partition.{column}") for column in partition_columns)
            groups.setdefault(key, []).append(_absolute_path(root, action["path"]))
        return self._scan(schema, partition_columns, groups)

    def _files(self, location: str, version: int) -> set[str]:
        root = table_root(location)
        table = self._table(location, version)
        paths = pa.table(table.get_add_actions(flatten=True))["path"].to_pylist()
        return {_absolute_path(root, path) for path in paths}

    def _rows_of_files(self, location: str, version: int, files: Sequence[str]) -> DataFrame:
        return self._scan_files(location, self._table(location, version), files)

    def _scan(
        self,
        schema: StructType,
        partition_columns: list[str],
        groups: dict[tuple[Any, ...], list[str]],
    ) -> DataFrame:
        if not groups:
            return self.spark.createDataFrame([], schema)
        data_schema = StructType([field for field in schema.fields if field.name not in partition_columns])
        scans = []
        # One scan per partition tuple: partition values are literals from the log, not parsed from paths.
        for key, paths in sorted(groups.items(), key=lambda item: tuple(str(v) for v in item[0])):
            values = dict(zip(partition_columns, key, strict=True))
            scan = self.spark.read.schema(data_schema).parquet(*sorted(paths))
            columns: list[Column] = [
                F.lit(values[field.name]).cast(field.dataType).alias(field.name)
                if field.name in values
                else F.col(f"`{field.name}`")
                for field in schema.fields
            ]
            scans.append(scan.select(*columns))
        return reduce(DataFrame.unionByName, scans)

    # -- committing ----------------------------------------------------------------------------------
    def _table_state(self, location: str, version: int | None) -> TableState | None:
        # The snapshot the write is based on (the latest unless given): the commit fails if the table moved on.
        if not self.exists(location):
            return None
        table = self._table(location, version)
        self.check_reader_features(table, location)
        configuration = table.metadata().configuration or {}
        return TableState(
            version=int(table.version()),
            schema=_spark_schema(table),
            partition_columns=list(table.metadata().partition_columns),
            properties={k: v for k, v in configuration.items() if v is not None},
            handle=table,
        )

    def _set_properties(self, location: str, properties: Mapping[str, str], base: TableState) -> None:
        table: DeltaTable = base.handle
        table.alter.set_table_properties(dict(properties), commit_properties=CommitProperties(max_commit_retries=0))

    def _swap(self, df: DataFrame, location: str, *, version: int, column: str, expected: PartitionValue) -> bool:
        # delta-rs commits are bound to the version they were based on (no retries): basing the overwrite on
        # ``version`` makes it fail if anything committed since, which is exactly the condition.
        try:
            self._write(df, location, mode="overwrite", base_version=version)
        except ConcurrentWriteError:
            return False
        return True

    def _restore(self, location: str, version: int, *, write_id: str, metadata: Mapping[str, str]) -> int:
        table = self._table(location)
        try:
            table.restore(version, commit_properties=_commit_properties(metadata))
        except CommitFailedError as exc:
            raise ConcurrentWriteError(f"{location}: another writer committed during the restore: {exc}") from exc
        except DeltaError as exc:
            raise StorageError(f"{location}: could not restore version {version}: {exc}") from exc
        restored = int(self._table(location).version())
        log.info("%s: restored version %d as version %d", location, version, restored)
        return restored

    def _commit(self, df: DataFrame, location: str, plan: CommitPlan) -> int:
        mode, base, schema, where, properties = plan.mode, plan.base, plan.schema, plan.where, plan.properties
        partition_columns, write_id, metadata = plan.partition_columns, plan.write_id, plan.metadata
        root = table_root(location)
        table: DeltaTable | None = base.handle if base is not None else None
        partition_columns = list(partition_columns)
        write_dir = f"{WRITE_DIR_PREFIX}{write_id}"
        staging = f"{root}/{write_dir}"
        commit = _commit_properties(metadata)
        try:
            self._write_files(df, staging, partition_columns)
            actions = self._added_files(root, write_dir, partition_columns)
            if table is None:
                create_table_with_add_actions(
                    root,
                    DeltaSchema.from_json(schema.json()),
                    actions,
                    mode="error",
                    partition_by=partition_columns or None,
                    configuration=dict(properties) or None,
                    storage_options=self.storage_options or None,
                    commit_properties=commit,
                )
            else:
                filters = None
                if where is not None:
                    filters = [(column, "=", _partition_string(value)) for column, value in where.items()]
                table.create_write_transaction(
                    cast("list[AddAction | RemoveAction]", actions),
                    mode="overwrite" if mode == "overwrite" else "append",
                    schema=table.schema(),
                    partition_by=partition_columns or None,
                    partition_filters=filters,
                    commit_properties=commit,
                )
        except CommitFailedError as exc:
            self._delete_tree(staging)  # a failed commit wrote nothing to the log
            raise errors.lost_race(location, base.version if base is not None else None, str(exc)) from exc
        except DeltaError as exc:
            if self.exists(location) and self._committed_version(location, write_id) is not None:
                raise StorageError(f"{location}: committed, but a post-commit step failed: {exc}") from exc
            self._delete_tree(staging)
            if table is None and self.exists(location):
                raise errors.created_meanwhile(location) from exc
            raise StorageError(f"{location}: the Delta commit failed: {exc}") from exc
        except BaseException:
            # Keep the files if the commit landed after all (e.g. interrupted during a post-commit step).
            if not (self.exists(location) and self._committed_version(location, write_id) is not None):
                self._delete_tree(staging)
            raise
        version = self._committed_version(location, write_id)
        if version is None:  # pragma: no cover - delta-rs returned without error but no commit has our id
            raise StorageError(f"{location}: write {write_id} reported success but is not in the table history")
        log.info("%s: committed version %d (%s, %d files, engine %s)", location, version, mode, len(actions), self.name)
        return version

    def _write_files(self, df: DataFrame, staging: str, partition_columns: list[str]) -> None:
        """Executors write the data files of one write (a seam the concurrency tests use)."""
        writer = df.write.mode("errorifexists")
        if partition_columns:
            writer = writer.partitionBy(*partition_columns)
        writer.parquet(staging)

    def _filesystem(self, root: str) -> tuple[pafs.FileSystem, str]:
        return arrow_filesystem(root)

    def _committed_version(self, location: str, write_id: str) -> int | None:
        """The version whose commit carries ``write_id``, or None when that write never committed."""
        for limit in (20, None):  # the write is normally among the last commits; else search the whole log
            for entry in self.history(location, limit):
                if entry.get("writeId") == write_id:
                    return int(entry["version"])
        return None

    def _added_files(self, root: str, write_dir: str, partition_columns: list[str]) -> list[AddAction]:
        filesystem, base = self._filesystem(root)
        selector = pafs.FileSelector(f"{base}/{write_dir}", recursive=True, allow_not_found=True)
        actions = []
        for info in filesystem.get_file_info(selector):
            name = info.base_name
            if info.type != pafs.FileType.File or not name.endswith(".parquet") or name.startswith((".", "_")):
                continue
            relative = info.path[len(base) + 1 :]
            directories = relative.split("/")[1:-1]
            values: dict[str, str | None] = {}
            for directory in directories:
                column, _, raw = directory.partition("=")
                value = _unescape_path_name(raw)
                values[_unescape_path_name(column)] = None if value == _HIVE_NULL else value
            if sorted(values) != sorted(partition_columns):
                raise StorageError(f"unexpected data file layout {relative} for partition columns {partition_columns}")
            mtime_ms = int(info.mtime_ns // 1_000_000) if info.mtime_ns is not None else int(time.time() * 1000)
            # numRecords from the parquet footer (a few KB per file): Delta readers use it for counts and
            # planning, and delta-rs needs valid stats JSON when it later rewrites the log.
            with filesystem.open_input_file(info.path) as handle:
                records = pq.ParquetFile(handle).metadata.num_rows
            stats = json.dumps({"numRecords": records})
            actions.append(AddAction(relative, int(info.size), values, mtime_ms, True, stats))
        return sorted(actions, key=lambda action: action.path)

    def _delete_tree(self, path: str) -> None:
        filesystem, base = self._filesystem(path)
        try:
            filesystem.delete_dir(base)
        except (FileNotFoundError, OSError):
            log.debug("nothing to delete at %s", path)

    def cleanup(self, location: str, *, older_than: timedelta = timedelta(hours=1)) -> list[str]:
        root = table_root(location)
        committed: set[str] = set()
        if self.exists(location):
            table = self._table(location)
            committed = {str(entry.get("writeId")) for entry in table.history() if entry.get("writeId")}
            # Log files older than the log retention are cleaned up with their commitInfo; the files of the
            # current snapshot prove their write directories committed whatever the history still shows.
            for path in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist():
                match = _WRITE_DIR.match(unquote(path).split("/", 1)[0])
                if match:
                    committed.add(match.group(1))
        filesystem, base = self._filesystem(root)
        deadline_ns = time.time_ns() - int(older_than.total_seconds() * 1e9)
        deleted = []
        for info in filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
            match = _WRITE_DIR.match(info.base_name)
            if info.type != pafs.FileType.Directory or not match or match.group(1) in committed:
                continue
            files = filesystem.get_file_info(pafs.FileSelector(info.path, recursive=True))
            newest = max((entry.mtime_ns or 0 for entry in files), default=info.mtime_ns or 0)
            if newest > deadline_ns:
                continue  # possibly a write still in flight
            filesystem.delete_dir(info.path)
            deleted.append(f"{root}/{info.base_name}")
            log.info("%s: removed uncommitted write %s (%d files)", location, info.base_name, len(files))
        return deleted


def _spark_schema(table: DeltaTable) -> StructType:
    # Delta's schema JSON is Spark's StructType JSON (same field and type names).
    return StructType.fromJson(json.loads(table.schema().to_json()))


def _absolute_path(root: str, path: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    return f"{root}/{unquote(path)}"
