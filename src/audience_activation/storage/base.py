"""The storage interface every engine implements, and the errors it raises.

The interface is deliberately small: the jobs only ever read a table (remembering the snapshot version they
read), create one, append, overwrite all of it or only the partitions matching an equality predicate, ask for
its version, history and table properties, and clean up files a killed write left behind.

Every write may name table ``properties`` the table must have (e.g. :data:`CHANGE_DATA_FEED`): they are part
of the commit that creates the table, and a write to an existing table lacking them first sets them in a
commit of their own.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StructType

log = logging.getLogger(__name__)

#: Partition values that may appear in an equality predicate.
PartitionValue = str | int | bool | None

#: Table properties of the outputs downstream systems follow: Delta's Change Data Feed, so that
#: ``spark.readStream.option("readChangeFeed", "true")`` streams each run's inserted and removed rows.
CHANGE_DATA_FEED: dict[str, str] = {"delta.enableChangeDataFeed": "true"}


class StorageError(RuntimeError):
    """A table could not be read or written."""


class TableNotFoundError(StorageError):
    """The location holds no Delta table."""


class UnsupportedTableFeatureError(StorageError):
    """A table uses a Delta reader feature the chosen engine cannot honour (reading it would be wrong)."""


class ConcurrentWriteError(StorageError):
    """Another writer committed to the table between this write's read and its commit."""


class DamagedTableError(StorageError):
    """A table's log or data files are missing or unreadable; the message names the table and the file."""


def damaged(location: str, path: str, what: str) -> DamagedTableError:
    """The one-paragraph error for a damaged table."""
    return DamagedTableError(
        f"table {location} is damaged: {what}: {path}. Nothing was written. Restore the file from a backup or "
        f"the table to an earlier version (RESTORE TABLE ... TO VERSION AS OF n), or re-create the table."
    )


class SchemaMismatchError(StorageError):
    """The data written does not have the table's schema."""


@dataclass(frozen=True)
class TableSnapshot:
    """A table as read: the data and the Delta version it was read at.

    Attributes:
        location: the table's URI or path.
        version: the Delta log version the DataFrame reads.
        df: the rows of that version.
    """

    location: str
    version: int
    df: DataFrame


class DeltaStorage(abc.ABC):
    """Reads and writes Delta tables. Implementations: ``delta-spark`` and ``delta-rs``."""

    #: The engine's name as written in ``job.yaml`` and the run log.
    name: str = ""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    # -- reading -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def exists(self, location: str) -> bool:
        """Whether ``location`` holds a Delta table."""

    @abc.abstractmethod
    def version(self, location: str) -> int:
        """The latest committed version of the table."""

    @abc.abstractmethod
    def history(self, location: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit information, newest first; each entry has at least ``version`` and ``operation``."""

    @abc.abstractmethod
    def read(self, location: str, version: int | None = None) -> TableSnapshot:
        """Read the table at ``version`` (default: the latest), returning the version actually read.

        Raises:
            TableNotFoundError: no Delta table at ``location``.
            UnsupportedTableFeatureError: the table needs a reader feature this engine lacks.
        """

    @abc.abstractmethod
    def schema(self, location: str) -> StructType:
        """The table's schema (partition columns included) without reading data."""

    @abc.abstractmethod
    def properties(self, location: str) -> dict[str, str]:
        """The table's properties (``delta.*`` configuration of its metadata)."""

    # -- writing -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def create(
        self,
        location: str,
        schema: StructType,
        partition_by: Sequence[str] = (),
        *,
        properties: Mapping[str, str] | None = None,
    ) -> int:
        """Create an empty table; fails with :class:`StorageError` if one exists. Returns its version."""

    @abc.abstractmethod
    def append(
        self,
        df: DataFrame,
        location: str,
        *,
        partition_by: Sequence[str] = (),
        commit_info: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> int:
        """Append ``df`` in one atomic commit (creating the table if needed). Returns the new version."""

    @abc.abstractmethod
    def overwrite(
        self,
        df: DataFrame,
        location: str,
        *,
        partition_by: Sequence[str] = (),
        commit_info: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> int:
        """Replace all rows with ``df`` in one atomic commit (creating the table if needed)."""

    @abc.abstractmethod
    def replace_partitions(
        self,
        df: DataFrame,
        location: str,
        where: Mapping[str, PartitionValue],
        *,
        partition_by: Sequence[str] = (),
        commit_info: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> int:
        """Replace only the rows whose partition columns equal ``where``, atomically.

        Every row of ``df`` must match ``where``; a row that does not fails the write before the commit.
        ``partition_by`` is used when the table does not exist yet and must then contain ``where``'s keys.
        """

    @abc.abstractmethod
    def swap(
        self,
        df: DataFrame,
        location: str,
        *,
        version: int | None,
        column: str,
        expected: PartitionValue,
    ) -> bool:
        """Compare-and-swap of a small table: replace all its rows with ``df``'s in one commit, only if the
        table is unchanged since ``version`` (read by the caller, every row then having ``column ==
        expected``). ``version=None``: create the table, only if none exists. Every swap must change
        ``column`` (e.g. a counter), so that "unchanged" can be checked on the data as well as on the log.

        Returns:
            True when this call's commit landed; False when the table had moved on or a concurrent writer won
            (the table is then as that writer left it).
        """

    @abc.abstractmethod
    def restore(self, location: str, version: int, *, commit_info: Mapping[str, str] | None = None) -> int:
        """Restore the table to an earlier ``version`` with Delta's ``RESTORE`` (a new commit whose state is
        that version's). Returns the new version (the current one when the table is already at that state)."""

    def drop(self, location: str) -> None:
        """Delete a table's folder with its log and data (used only to undo a table that a failed run created)."""
        filesystem, path = arrow_filesystem(location.rstrip("/"))
        try:
            filesystem.delete_dir(path)
        except FileNotFoundError:
            return
        log.info("%s: removed (the table did not exist before the failed run)", location)

    @abc.abstractmethod
    def cleanup(self, location: str, *, older_than: timedelta = timedelta(hours=1)) -> list[str]:
        """Delete data files of writes that never committed and are older than ``older_than``.

        Returns:
            The deleted paths.
        """


# -- helpers shared by the engines -------------------------------------------------------------------

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


def _strip_nullability(data_type: DataType) -> Any:
    """A schema's JSON with every nullability flag removed, to compare shapes and types only."""
    from ..schemas import type_shape  # noqa: PLC0415 - schemas imports nothing from storage

    return type_shape(data_type)


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


def with_user_metadata(entry: dict[str, Any]) -> dict[str, Any]:
    """A history entry with the keys of its ``userMetadata`` JSON merged in.

    Both engines store a write's :func:`commit_metadata` as the commit's ``userMetadata`` (a JSON string, the
    one custom field every Delta writer and reader knows), so either engine's ``history()`` shows the other's
    ``writeId``, ``engine`` and ``run_id``.
    """
    metadata = entry.get("userMetadata")
    if isinstance(metadata, str) and metadata.startswith("{"):
        try:
            parsed = json.loads(metadata)
        except ValueError:
            return entry
        if isinstance(parsed, dict):
            return {**entry, **{k: v for k, v in parsed.items() if k not in entry}}
    return entry


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
        if name in df_fields and _strip_nullability(df_fields[name].dataType) != _strip_nullability(field.dataType):
            problems.append(
                f"column {name!r} is {df_fields[name].dataType.simpleString()}, "
                f"table has {field.dataType.simpleString()}"
            )
    if problems:
        raise SchemaMismatchError(f"{location}: data does not match the table schema: " + "; ".join(problems))
    return df.select(*table_fields)


class ParquetCheckpoint:
    """A lineage barrier for iterative jobs: write a DataFrame as parquet under a scratch folder, read it back.

    Portable (no checkpoint directory or ``sparkContext`` needed, so it works on Spark Connect and
    serverless), and the write is an ordinary Spark job: a failed write raises instead of leaving a silently
    partial checkpoint. Call :meth:`cleanup` when the iteration is done.

    Args:
        spark: the session.
        folder: a scratch folder (local path or URI) that nothing else uses.
    """

    def __init__(self, spark: SparkSession, folder: str) -> None:
        self.spark = spark
        self.folder = folder.rstrip("/")
        self.writes = 0

    def __call__(self, df: DataFrame) -> DataFrame:
        self.writes += 1
        path = f"{self.folder}/{self.writes:05d}"
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.schema(df.schema).parquet(path)

    def cleanup(self) -> None:
        """Delete the scratch folder (best effort: a leftover scratch folder never fails a run)."""
        try:
            filesystem, path = arrow_filesystem(self.folder)
            filesystem.delete_dir(path)
        except FileNotFoundError:
            log.debug("scratch folder %s already gone", self.folder)
        except (OSError, ValueError) as exc:
            log.warning("could not delete the scratch folder %s: %s", self.folder, exc)


#: Hadoop scheme -> pyarrow scheme, for the driver-side file operations (listing, deleting).
_ARROW_SCHEMES = {"s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs", "abfs": "abfs", "abfss": "abfs", "hdfs": "hdfs"}


def arrow_filesystem(location: str) -> tuple[Any, str]:
    """The pyarrow filesystem and path of a local path or URI (``s3a://`` is read as ``s3://``).

    Raises:
        ValueError: pyarrow has no filesystem for the URI's scheme.
    """
    import pyarrow.fs as pafs  # noqa: PLC0415 - keeps pyarrow out of the import of the interface

    if "://" not in location:
        return pafs.FileSystem.from_uri(f"file://{os.path.abspath(location)}")
    scheme, rest = location.split("://", 1)
    return pafs.FileSystem.from_uri(f"{_ARROW_SCHEMES.get(scheme, scheme)}://{rest}")


_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def commit_versions(location: str) -> list[int]:
    """The versions of the commit files in a table's ``_delta_log`` (ascending; empty when there is none).

    Listing one folder is the cheapest way to know a table's latest version: the newest commit file is
    never removed by log cleanup (only files older than the last checkpoint are).
    """
    import pyarrow.fs as pafs  # noqa: PLC0415

    filesystem, base = arrow_filesystem(location.rstrip("/"))
    infos = filesystem.get_file_info(pafs.FileSelector(f"{base}/_delta_log", allow_not_found=True))
    return sorted(int(match.group(1)) for info in infos if (match := _COMMIT_FILE.match(info.base_name)))


def commit_info(location: str, version: int) -> dict[str, Any]:
    """The ``commitInfo`` action of one commit file, with its ``userMetadata`` keys merged in."""
    filesystem, base = arrow_filesystem(location.rstrip("/"))
    with filesystem.open_input_stream(f"{base}/_delta_log/{version:020d}.json") as stream:
        for line in stream.read().decode("utf-8").splitlines():
            if '"commitInfo"' in line:
                info = json.loads(line).get("commitInfo") or {}
                return with_user_metadata({**info, "version": version})
    return {"version": version}


def uncommitted_data_files(location: str) -> dict[str, Any]:
    """Parquet data files under a table's folder that no add, remove or cdc action of its log names.

    These are files of writes that never committed (killed, failed or conflicting writers) — or of a write
    still running. Keys are paths relative to the table folder, values pyarrow ``FileInfo`` (with ``mtime_ns``).
    """
    import pyarrow.fs as pafs  # noqa: PLC0415 - keeps pyarrow out of the import of the interface

    filesystem, base = arrow_filesystem(location.rstrip("/"))
    log_dir = f"{base}/_delta_log"
    referenced = _referenced_files(filesystem, log_dir)
    found = {}
    for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or info.path.startswith(log_dir + "/"):
            continue
        if not info.base_name.endswith(".parquet") or info.base_name.startswith("."):
            continue
        relative = info.path[len(base) + 1 :]
        if relative not in referenced:
            found[relative] = info
    return found


def _referenced_files(filesystem: Any, log_dir: str) -> set[str]:
    """Relative paths of every data and change file named by an add, remove or cdc action of the log
    (commits, classic and multi-part checkpoints, v2 checkpoints and their sidecars)."""
    referenced: set[str] = set()

    def remember(path: str | None) -> None:
        if path and "://" not in path and not path.startswith("/"):
            referenced.add(unquote(path))

    import pyarrow.fs as pafs  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    for info in filesystem.get_file_info(pafs.FileSelector(log_dir, recursive=True, allow_not_found=True)):
        name = info.base_name
        if info.type != pafs.FileType.File or name.startswith("."):
            continue
        if name.endswith(".json") and name[:20].isdigit():
            with filesystem.open_input_stream(info.path) as stream:
                for line in stream.read().decode("utf-8").splitlines():
                    action = json.loads(line) if line.strip() else {}
                    for kind in ("add", "remove", "cdc"):
                        if kind in action:
                            remember(action[kind].get("path"))
        elif name.endswith(".parquet"):  # checkpoints and v2-checkpoint sidecars
            with filesystem.open_input_file(info.path) as handle:
                columns = [c for c in ("add", "remove") if c in pq.ParquetFile(handle).schema_arrow.names]
                table = pq.read_table(handle, columns=columns)
            for column in columns:
                for entry in table.column(column).to_pylist():
                    remember((entry or {}).get("path"))
    return referenced


_CHECKPOINT_FILE = re.compile(r"^(\d{20})\.checkpoint(\.\d+\.\d+)?(\.[0-9a-f-]+)?\.(parquet|json)$")


def damaged_log_entry(location: str) -> str | None:
    """The first commit file of a table's log (from its newest checkpoint on) that is not valid JSON lines, or
    None. Used to name the file when an engine fails to load a table."""
    import pyarrow.fs as pafs  # noqa: PLC0415

    filesystem, base = arrow_filesystem(location.rstrip("/"))
    log_dir = f"{base}/_delta_log"
    infos = filesystem.get_file_info(pafs.FileSelector(log_dir, allow_not_found=True))
    checkpoints = [int(m.group(1)) for info in infos if (m := _CHECKPOINT_FILE.match(info.base_name))]
    start = max(checkpoints, default=-1)
    for info in sorted(infos, key=lambda i: i.base_name):
        match = _COMMIT_FILE.match(info.base_name)
        if match is None or int(match.group(1)) <= start:
            continue
        try:
            with filesystem.open_input_stream(info.path) as stream:
                lines = stream.read().decode("utf-8").splitlines()
            actions = [json.loads(line) for line in lines if line.strip()]
            if not actions or not all(isinstance(action, dict) for action in actions):
                return f"{location.rstrip('/')}/_delta_log/{info.base_name}"
        except (OSError, ValueError):
            return f"{location.rstrip('/')}/_delta_log/{info.base_name}"
    return None


def require_files(location: str, files: Iterable[str]) -> None:
    """Fail with :class:`DamagedTableError` naming the first of a snapshot's data files that does not exist.

    Args:
        location: the table.
        files: the snapshot's data files, absolute (URIs or paths) or relative to the table folder.
    """
    import pyarrow.fs as pafs  # noqa: PLC0415

    filesystem, base = arrow_filesystem(location.rstrip("/"))
    present = {
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        if info.type == pafs.FileType.File
    }
    missing = []
    for file in files:
        if file.startswith("file:"):  # Hadoop's local URIs: file:/path or file:///path
            file = "/" + file.removeprefix("file:").lstrip("/")
        if "://" in file:
            path = arrow_filesystem(file)[1]
        elif file.startswith("/"):
            path = file
        else:
            path = f"{base}/{file}"
        # Log paths and URIs are percent-encoded, partition folders Hive-escaped: accept any decoding depth.
        if not {path, unquote(path), unquote(unquote(path))} & present:
            missing.append(unquote(path))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise damaged(location, sorted(missing)[0] + more, "a data file of its current version is missing")


def _spark_errors(exc: BaseException) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(condition, message parameters)`` of every Spark error in ``exc``'s chain — Python exceptions converted
    by PySpark, and the Java exception chain of a ``Py4JJavaError`` (e.g. a task failure inside a write)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        getter = getattr(current, "getCondition", None) or getattr(current, "getErrorClass", None)
        if getter is not None:
            parameters: dict[str, Any] = getattr(current, "getMessageParameters", dict)() or {}
            yield (getter() or ""), dict(parameters)
        throwable = getattr(current, "java_exception", None)
        for _ in range(20):  # the Java cause chain
            if throwable is None:
                break
            try:
                condition = throwable.getCondition() if hasattr(throwable, "getCondition") else None
                if condition:
                    java_map = throwable.getMessageParameters()
                    yield condition, {str(k): str(java_map.get(k)) for k in java_map.keySet().toArray()}
                throwable = throwable.getCause()
            except Exception:  # noqa: BLE001 - not a SparkThrowable, or the gateway is gone
                break
        current = current.__cause__ or current.__context__


def read_failure(exc: BaseException, locations: Iterable[str]) -> DamagedTableError | None:
    """A clean :class:`DamagedTableError` for a Spark error reading a file of one of ``locations`` (a file
    missing or not readable as parquet), or None when ``exc`` is another error."""
    roots = [(location, arrow_filesystem(location.rstrip("/"))[1]) for location in locations]
    for condition, parameters in _spark_errors(exc):
        if not (condition.startswith("FAILED_READ_FILE") or condition == "PATH_NOT_FOUND"):
            continue
        path = str(parameters.get("path") or parameters.get("file") or "")
        for location, root in roots:
            if path and root in path:
                missing = "NOT_EXIST" in condition or condition == "PATH_NOT_FOUND"
                what = "a data file is missing" if missing else "a data file cannot be read"
                return damaged(location, path.removeprefix("file:").replace("///", "/"), what)
    return None
