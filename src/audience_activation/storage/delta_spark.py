"""The ``delta-spark`` engine: the Delta Lake Spark connector (``format("delta")``).

This is what clusters use (Databricks, EMR, Dataproc, ``spark-submit --packages io.delta:delta-spark_...``,
or ``./spark-submit.sh`` shipping the jars that ``make setup`` fetched). It implements the same small
interface as the delta-rs engine so jobs do not know which one runs:

- **Reads** pin the version: ``read(location)`` resolves the latest version first and reads it with
  ``versionAsOf``, so the version recorded in the run log is exactly the one read. A table needing a reader
  feature this Delta release does not know fails with
  :class:`~audience_activation.storage.base.UnsupportedTableFeatureError` naming table and feature.
- **A version read is kept** (the last :data:`KEPT_VERSIONS_PER_TABLE` of each table, :data:`KEPT_VERSIONS` in
  all, per Spark session): a version of a Delta table never changes,
  and Delta loads a snapshot (its log replayed, a Spark job) for every time-travel read of a version that is
  not the one it last updated to — ~1 s each on the 1M-person demo lake, where a micro-batch of the stream reads
  the same input version three times and the versions the micro-batch before read again. The key holds the
  version's commit file's size and time, so a table deleted and created again at the same place is read anew.
  Every read, kept or not, checks that the version's data files exist.
- **Writes** are Delta's own atomic commits; ``replace_partitions`` is ``replaceWhere`` on partition columns.
  Each write records ``{"writeId": ..., "engine": ..., <commit_info>}`` as the commit's ``userMetadata`` (JSON),
  and the version returned is the one whose commit carries that id, even when other writers commit afterwards.
- **Conflicts** are Delta's optimistic concurrency: a commit that conflicts with one made after this write
  read the table raises one of Delta's exception classes (``delta.exceptions.ConcurrentAppendException``,
  ``MetadataChangedException``, ...), which becomes
  :class:`~audience_activation.storage.base.ConcurrentWriteError` with the same message as under delta-rs.
  Delta decides what conflicts: an overwrite or a ``replaceWhere`` conflicts with files added concurrently
  to what it replaces, a blind append does not conflict with other appends.
- **Compare-and-swap** (the lake lease) is an ``UPDATE ... WHERE <column> = <value read>`` of the one-row table;
  it landed when a commit after the version read carries its write id and adds a file. Commands without a
  ``userMetadata`` writer option (``UPDATE``, ``RESTORE``) get theirs from the session setting, under one
  process-wide lock that ``ALTER TABLE`` takes too.
- **Table properties** (e.g. ``delta.enableChangeDataFeed``) go into the creating commit as writer options,
  and an existing table lacking them gets them with ``ALTER TABLE ... SET TBLPROPERTIES`` first.
- **Cleanup** removes data files that no commit of the retained log mentions (a killed writer's files),
  never files of older versions that time travel may still read (``VACUUM`` would delete those too).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType, TimestampType

from . import errors
from .base import CommitPlan, DeltaStorage, PartitionValue, TableSnapshot, TableState, commit_metadata
from .errors import ConcurrentWriteError, StorageError, TableNotFoundError, UnsupportedTableFeatureError, damaged
from .files import (
    added_file_names,
    arrow_filesystem,
    commit_adds_files,
    commit_file,
    commit_info,
    commit_versions,
    comparable_path,
    damaged_log_entry,
    file_name,
    require_files,
    uncommitted_data_files,
    with_user_metadata,
)

log = logging.getLogger(__name__)

#: How many table versions read the engine keeps (their DataFrames; see the module docstring), in all and per table.
KEPT_VERSIONS = 64
KEPT_VERSIONS_PER_TABLE = 4
#: The session setting that gives a Delta commit without a ``userMetadata`` writer option its custom commitInfo.
_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"

#: Error conditions of Delta meaning "this release cannot read (or write) this table's protocol".
_UNSUPPORTED_FEATURE_CONDITIONS = (
    "DELTA_UNSUPPORTED_FEATURES_FOR_READ",
    "DELTA_UNSUPPORTED_FEATURES_FOR_WRITE",
    "DELTA_INVALID_PROTOCOL_VERSION",
)


def _sql_literal(value: PartitionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quoted(name: str) -> str:
    """A column name quoted for Spark (backticks doubled inside)."""
    return "`" + name.replace("`", "``") + "`"


def _column(name: str) -> Column:
    return F.col(_quoted(name))


def _quoted_path(location: str) -> str:
    return "delta.`" + location.replace("`", "``") + "`"


def _unused(columns: set[str], name: str) -> str:
    """``name``, with leading underscores added until it is none of ``columns`` (lower-cased: Spark resolves
    column names without regard to case)."""
    while name in columns:
        name = f"_{name}"
    return name


def _condition(exc: Exception) -> str:
    getter = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    return (getter() if getter else None) or ""


def _of_files(df: DataFrame, every_file: Sequence[str], files: Sequence[str]) -> Column:
    """A filter of ``df`` (a table version read through Delta, whose data files are among ``every_file``) keeping
    the rows of ``files`` (some of them, as ``inputFiles()`` names them; each a file of ``df``).

    By file name (``_metadata.file_name``): Delta names every data file uniquely, whereas a partition folder's name
    is escaped once more in ``_metadata.file_path`` than in ``inputFiles()``. A plain parquet writer can give files
    of two partition folders one name: for such a name the paths of the files that bear it are looked up (one
    small query) and only those asked for are kept, compared with one escape decoded (:func:`comparable_path`).
    """
    names = {file_name(file) for file in files}
    bearing = Counter(file_name(file) for file in set(every_file))
    shared = sorted(name for name in names if bearing[name] > 1)
    wanted = F.col("_metadata.file_name").isin(sorted(names - set(shared)))
    if not shared:
        return wanted
    paths = {comparable_path(file, encoded=False) for file in files if file_name(file) in shared}
    bearers = (
        df.where(F.col("_metadata.file_name").isin(shared))
        .select(F.col("_metadata.file_path").alias("path"))
        .distinct()
        .collect()
    )
    chosen = sorted(row["path"] for row in bearers if comparable_path(row["path"], encoded=True) in paths)
    return wanted | F.col("_metadata.file_path").isin(chosen)


class DeltaSparkStorage(DeltaStorage):
    """Delta tables through the Delta Lake Spark connector (requires its jars on the classpath)."""

    name = "delta-spark"
    #: Versions read, shared by the engines of a process (jobs open one per step): ``(session, location, version,
    #: commit file size, commit file time)`` -> (rows, data files). An entry holds its session, so the id of a
    #: live session is never another's.
    _kept: OrderedDict[tuple[int, str, int, int, int], tuple[DataFrame, list[str]]] = OrderedDict()
    _kept_lock = threading.Lock()
    #: Held while a commit takes its commitInfo from the session (``_USER_METADATA``) and around every other
    #: commit made without the writer option: the setting is the session's, shared by every engine object and
    #: thread (the lease's renewals commit from their own thread).
    _session_conf_lock = threading.Lock()

    def __init__(self, spark: SparkSession) -> None:
        super().__init__(spark)
        # Importing delta.exceptions installs Delta's conversion of its JVM conflict exceptions.
        from delta import exceptions as delta_exceptions  # noqa: PLC0415 - needs the optional connector
        from delta.tables import DeltaTable  # noqa: PLC0415

        self._delta_table = DeltaTable
        #: Delta's commit-conflict exceptions (they share no base class in Python).
        self._conflicts: tuple[type[BaseException], ...] = tuple(
            getattr(delta_exceptions, name) for name in delta_exceptions.__all__
        )

    # -- reading -------------------------------------------------------------------------------------
    def exists(self, location: str) -> bool:
        # A commit file in the log means a table (the newest one is never cleaned up): a folder listing instead
        # of isDeltaTable, which loads the log (0.1-0.3 s a call, dozens of calls a micro-batch).
        if commit_versions(location):
            return True
        return bool(self._delta_table.isDeltaTable(self.spark, location))

    def _require(self, location: str) -> Any:
        if not self.exists(location):
            raise TableNotFoundError(f"{location}: no Delta table at this location")
        try:
            return self._delta_table.forPath(self.spark, location)
        except AnalysisException as exc:
            raise self._translate(exc, location) from exc

    def _translate(self, exc: AnalysisException, location: str) -> Exception:
        condition = _condition(exc)
        if condition in _UNSUPPORTED_FEATURE_CONDITIONS:
            return UnsupportedTableFeatureError(
                f"table {location} uses Delta features this delta-spark release cannot honour: "
                f"{str(exc).splitlines()[0]}"
            )
        return exc

    def version(self, location: str) -> int:
        # The newest commit file of the log: a folder listing instead of DESCRIBE HISTORY (a Spark job).
        versions = commit_versions(location)
        if not versions:
            return int(self._require(location).history(1).select("version").first()[0])
        return versions[-1]

    def history(self, location: str, limit: int | None = None) -> list[dict[str, Any]]:
        rows = self._require(location).history(limit).orderBy("version", ascending=False).collect()
        return [with_user_metadata(row.asDict(recursive=True)) for row in rows]

    def schema(self, location: str) -> StructType:
        self._require(location)
        return self.spark.read.format("delta").load(location).schema

    def properties(self, location: str) -> dict[str, str]:
        self._require(location)
        rows = self.spark.sql(f"SHOW TBLPROPERTIES {_quoted_path(location)}").collect()
        return {row["key"]: row["value"] for row in rows if not row["key"].startswith("delta.feature.")}

    def partition_columns(self, location: str) -> list[str]:
        """The table's partition columns, from ``DESCRIBE TABLE`` (metadata only; ``DESCRIBE DETAIL`` would
        also compute the table's size from its full state, a Spark job per call)."""
        self._require(location)
        rows = self.spark.sql(f"DESCRIBE TABLE {_quoted_path(location)}").collect()
        names = [row["col_name"] for row in rows]
        if "# Partition Information" not in names:
            return []
        section = names[names.index("# Partition Information") + 1 :]
        return [name for name in section if name and not name.startswith("#")]

    def _snapshot(self, location: str, version: int | None) -> TableSnapshot:
        return self._snapshot_and_files(location, version)[0]

    def _snapshot_and_files(self, location: str, version: int | None) -> tuple[TableSnapshot, list[str]]:
        """:meth:`_snapshot` and the version's data files (``inputFiles()``: Hadoop path strings)."""
        resolved = self.version(location) if version is None else version
        key = self._version_key(location, resolved)
        kept = None
        if key is not None:
            with self._kept_lock:
                kept = self._kept.get(key)
                if kept is not None:
                    self._kept.move_to_end(key)
        if kept is not None:
            df, files = kept
            require_files(location, files)
            return TableSnapshot(location=location, version=resolved, df=df), files
        if version is not None and not self.exists(location):  # Delta would say "_delta_log does not exist"
            raise TableNotFoundError(f"{location}: no Delta table at this location")
        try:
            df = self.spark.read.format("delta").option("versionAsOf", resolved).load(location)
            # The snapshot's files (metadata only): a missing one is named now, not by a failed task later.
            files = df.inputFiles()
        except AnalysisException as exc:
            if _condition(exc) not in _UNSUPPORTED_FEATURE_CONDITIONS and (entry := damaged_log_entry(location)):
                raise damaged(location, entry, "an entry of its Delta log cannot be read") from exc
            raise self._translate(exc, location) from exc
        except Exception as exc:
            entry = damaged_log_entry(location)
            if entry is not None:
                raise damaged(location, entry, "an entry of its Delta log cannot be read") from exc
            raise
        require_files(location, files)
        if key is not None:
            with self._kept_lock:
                self._kept[key] = (df, files)
                same_table = [other for other in self._kept if other[:2] == key[:2]]
                for stale in same_table[: max(len(same_table) - KEPT_VERSIONS_PER_TABLE, 0)]:
                    del self._kept[stale]  # the least recently read versions of this table
                while len(self._kept) > KEPT_VERSIONS:
                    self._kept.popitem(last=False)
        return TableSnapshot(location=location, version=resolved, df=df), files

    def _version_key(self, location: str, version: int) -> tuple[int, str, int, int, int] | None:
        """What identifies a version read in this session (None: its commit file is gone, so it is not kept)."""
        import pyarrow.fs as pafs  # noqa: PLC0415

        filesystem, path = commit_file(location, version)
        info = filesystem.get_file_info(path)
        if info.type != pafs.FileType.File:
            return None
        return (id(self.spark), location.rstrip("/"), version, int(info.size or 0), int(info.mtime_ns or 0))

    def _files(self, location: str, version: int) -> set[str]:
        return set(self._snapshot_and_files(location, version)[1])

    def _rows_of_files(self, location: str, version: int, files: Sequence[str]) -> DataFrame:
        # The version's rows narrowed by the file each comes from (partition values and column mapping as
        # Delta reads them); the list is the few files of a micro-batch, not the table's.
        snapshot, every_file = self._snapshot_and_files(location, version)
        df = snapshot.df
        return df.where(_of_files(df, every_file, files)).select(*[F.col(f"`{c}`") for c in df.columns])

    def _changed_in_place(self, location: str, since: int, version: int, kept: set[str]) -> set[str]:
        # Deletion vectors: a delete (or a restore) adds a kept file again, with the rows it now hides beside it.
        # The commits after ``since`` name every such file; without them (cleaned up), every kept file may have.
        added = added_file_names(location, since + 1, version)
        if added is None:
            log.warning("%s: commits after version %s are gone; comparing every data file's rows", location, since)
            return kept
        return {file for file in kept if file_name(file) in added}

    def _rows_changed_in_place(
        self, location: str, since: int, version: int, files: Sequence[str]
    ) -> tuple[DataFrame, DataFrame]:
        # A row of a data file is its file and its position in it (``_metadata.row_index``, which deletion vectors
        # are made of): the rows of the files at each version, compared by that pair.
        (before_read, old_files), (after_read, new_files) = (
            self._snapshot_and_files(location, since),
            self._snapshot_and_files(location, version),
        )
        old, new = before_read.df, after_read.df
        # The files are in both versions, at the same paths: one filter serves both, with the names borne by more
        # than one file of either version resolved to paths.
        wanted = _of_files(new, [*old_files, *new_files], files)
        taken = {c.lower() for c in (*old.columns, *new.columns)}
        key = [_unused(taken, "_file"), _unused(taken, "_row")]

        def located(df: DataFrame) -> DataFrame:
            return df.where(wanted).select(
                *[F.col(f"`{c}`") for c in df.columns],
                F.col("_metadata.file_path").alias(key[0]),
                F.col("_metadata.row_index").alias(key[1]),
            )

        before, after = located(old), located(new)
        gained = after.join(before.select(*key), on=key, how="left_anti").drop(*key)
        lost = before.join(after.select(*key), on=key, how="left_anti").drop(*key)
        return gained, lost

    # -- committing ----------------------------------------------------------------------------------
    def _table_state(self, location: str, version: int | None) -> TableState | None:
        # Delta bases its commit on the snapshot it reads itself; ``version`` only pins the schema checked.
        if not self.exists(location):
            return None
        partition_columns = self.partition_columns(location)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        schema = reader.load(location).schema
        # Properties are read on demand (SHOW TBLPROPERTIES), only by writes that ask for some.
        return TableState(
            version=self.version(location) if version is None else version,
            schema=schema,
            partition_columns=partition_columns,
        )

    def _set_properties(self, location: str, properties: Mapping[str, str], base: TableState) -> None:
        assignments = ", ".join(f"{_sql_literal(key)} = {_sql_literal(value)}" for key, value in properties.items())
        with self._session_metadata(None):  # a commit without the writer option: not while a swap's is set
            self.spark.sql(f"ALTER TABLE {_quoted_path(location)} SET TBLPROPERTIES ({assignments})")

    def _commit(self, df: DataFrame, location: str, plan: CommitPlan) -> int:
        mode, base, where, properties = plan.mode, plan.base, plan.where, plan.properties
        partition_columns, write_id, metadata = plan.partition_columns, plan.write_id, plan.metadata
        read_version = base.version if base is not None else None
        writer = df.write.format("delta").mode("errorifexists" if mode == "create" else mode)
        writer = writer.option("userMetadata", json.dumps(metadata))
        for key, value in properties.items():
            writer = writer.option(key, value)  # table properties of the creating commit
        if partition_columns:
            writer = writer.partitionBy(*partition_columns)
        if where is not None:
            predicate = " AND ".join(f"`{column}` = {_sql_literal(value)}" for column, value in where.items())
            writer = writer.option("replaceWhere", predicate)
        try:
            writer.save(location)
        except self._conflicts as exc:
            raise errors.lost_race(location, read_version, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        except AnalysisException as exc:
            if read_version is None and _condition(exc) in ("DELTA_PATH_EXISTS", "PATH_ALREADY_EXISTS"):
                raise errors.created_meanwhile(location) from exc
            raise self._translate(exc, location) from exc
        version = self._committed_version(location, write_id)
        if version is None and read_version is not None:
            # Delta records no commit for a write that adds and removes nothing (an empty append or an empty
            # replaceWhere of an empty partition: spark.databricks.delta.skipRecordingEmptyCommits); the table
            # is then as this write read it.
            log.info("%s: nothing to commit (empty write); the table stays at version %d", location, read_version)
            return read_version
        if version is None:  # pragma: no cover - Delta returned without error but no commit has our id
            raise StorageError(f"{location}: write {write_id} reported success but is not in the table history")
        log.info("%s: committed version %d (%s, engine %s)", location, version, mode, self.name)
        return version

    def _swap(self, df: DataFrame, location: str, *, version: int, column: str, expected: PartitionValue) -> bool:
        # A Delta write is based on the snapshot of its own start, not on ``version``: the condition is checked on
        # the data instead. ``UPDATE ... SET <df's row> WHERE column = expected`` rewrites the file holding the row
        # only while it still has the expected value; two swaps racing both read and rewrite that file, so Delta's
        # conflict detection fails one. The swap landed when a commit after ``version`` carries this write's id
        # and adds a file: an UPDATE that matches no row commits nothing by default, but an empty commit (with
        # the id) where empty commits are recorded (``spark.databricks.delta.skipRecordingEmptyCommits=false``, or
        # the WriteSerializable isolation of Databricks). One Spark job: a MERGE of the same row took about twice
        # as long and warned of a source scanned twice.
        # The row's values become literals; a timestamp travels as microseconds (a Python datetime would pass
        # through local time, which is ambiguous for an hour a year).
        instants = {field.name for field in df.schema.fields if isinstance(field.dataType, TimestampType)}
        rows = df.select(
            *[(F.unix_micros(_column(c)) if c in instants else _column(c)).alias(c) for c in df.columns]
        ).collect()
        if len(rows) != 1:
            raise ValueError(f"{location}: the delta-spark engine swaps one-row tables, got {len(rows)} rows")

        def literal(name: str, value: Any) -> Column:
            return F.timestamp_micros(F.lit(value)) if name in instants else F.lit(value)

        values: dict[str, str | Column] = {
            _quoted(field.name): literal(field.name, rows[0][field.name]).cast(field.dataType)
            for field in df.schema.fields
        }
        write_id = uuid.uuid4().hex
        # UPDATE has no writer option for userMetadata: the session's setting is used (as by RESTORE, below).
        with self._session_metadata(commit_metadata(write_id, self.name, None)):
            try:
                self._delta_table.forPath(self.spark, location).update(_column(column) == F.lit(expected), values)
            except self._conflicts:
                return False
        for later in commit_versions(location):
            if later > version and commit_info(location, later).get("writeId") == write_id:
                return commit_adds_files(location, later)
        return False

    def _restore(self, location: str, version: int, *, write_id: str, metadata: Mapping[str, str]) -> int:
        table = self._require(location)
        with self._session_metadata(metadata):  # RESTORE has no writer option for userMetadata either
            try:
                table.restoreToVersion(version)
            except self._conflicts as exc:
                raise ConcurrentWriteError(f"{location}: another writer committed during the restore: {exc}") from exc
        restored = self._committed_version(location, write_id)
        log.info("%s: restored version %d as version %s", location, version, restored)
        return restored if restored is not None else self.version(location)

    @contextlib.contextmanager
    def _session_metadata(self, metadata: Mapping[str, str] | None) -> Iterator[None]:
        """Commits made meanwhile by this thread get ``metadata`` as their custom commitInfo (the session setting,
        put back as it was afterwards); with None, nothing is set. Either way the session-conf lock is held, so no
        other thread's commit (a lease renewal) takes this setting, nor this commit another's."""
        with self._session_conf_lock:
            if metadata is None:
                yield
                return
            previous = self.spark.conf.get(_USER_METADATA, None)
            self.spark.conf.set(_USER_METADATA, json.dumps(metadata))
            try:
                yield
            finally:
                if previous is None:
                    self.spark.conf.unset(_USER_METADATA)
                else:
                    self.spark.conf.set(_USER_METADATA, previous)

    def _committed_version(self, location: str, write_id: str) -> int | None:
        """The version whose commit carries ``write_id``, or None when that write never committed.

        The write is normally among the last commits: their commit files are read directly (no Spark job);
        else the whole history is searched.
        """
        for version in reversed(commit_versions(location)[-20:]):
            if commit_info(location, version).get("writeId") == write_id:
                return version
        for entry in self.history(location):
            if entry.get("writeId") == write_id:
                return int(entry["version"])
        return None

    # -- cleanup -------------------------------------------------------------------------------------
    def cleanup(self, location: str, *, older_than: timedelta = timedelta(hours=1)) -> list[str]:
        """Delete data files that no commit in the retained log mentions, once older than ``older_than``.

        A killed writer leaves such files (Delta writes data files in place and commits them afterwards).
        Files of older versions stay: time travel to the versions recorded in the run log must keep working
        (``VACUUM`` would remove them after the table's retention).
        """
        if not self.exists(location):
            return []  # without a log every file would look uncommitted
        filesystem, _ = arrow_filesystem(location.rstrip("/"))
        deadline_ns = time.time_ns() - int(older_than.total_seconds() * 1e9)
        deleted = []
        for relative, info in uncommitted_data_files(location).items():
            if (info.mtime_ns or 0) > deadline_ns:
                continue  # possibly a write still in flight
            name = info.base_name
            filesystem.delete_file(info.path)
            checksum = f"{info.path[: -len(name)]}.{name}.crc"  # Hadoop's local checksum file, if any
            with contextlib.suppress(FileNotFoundError, OSError):
                filesystem.delete_file(checksum)
            deleted.append(f"{location.rstrip('/')}/{relative}")
        if deleted:
            log.info("%s: removed %d uncommitted data file(s)", location, len(deleted))
        return sorted(deleted)
