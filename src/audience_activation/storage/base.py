"""The storage interface every engine implements, and the errors it raises.

The interface is deliberately small: the jobs only ever read a table (remembering the snapshot version they
read), create one, append, overwrite all of it or only the partitions matching an equality predicate, ask for
its version, history and table properties, and clean up files a killed write left behind (docs/storage.md).

Every write may name table ``properties`` the table must have (e.g. :data:`CHANGE_DATA_FEED`): they are part
of the commit that creates the table, and a write to an existing table lacking them first sets them in a
commit of their own.

**One template, two engines.** :class:`DeltaStorage` implements every write once: ``create``, ``append``,
``overwrite`` and ``replace_partitions`` run the same checks (partition columns, the ``where`` predicate, the
data's schema against the table's, reserved ``commit_info`` keys) before anything is committed, then settle
the table properties and hand the checked DataFrame to the engine's :meth:`DeltaStorage._commit`. ``swap`` and
``restore`` check their arguments here too. An engine implements reading (:meth:`DeltaStorage._snapshot`,
:meth:`DeltaStorage._table_state` and the metadata methods), committing (:meth:`DeltaStorage._commit`,
:meth:`DeltaStorage._set_properties`, :meth:`DeltaStorage._swap`, :meth:`DeltaStorage._restore`) and
``cleanup``.
"""

from __future__ import annotations

import abc
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from .checks import (
    PARTITION_TYPES,
    RESERVED_COMMIT_KEYS,
    PartitionValue,
    check_partition_columns,
    commit_metadata,
    conform_to_table,
    missing_properties,
    require_partition_values,
)
from .errors import (
    ConcurrentWriteError,
    DamagedTableError,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    UnsupportedTableFeatureError,
    created_meanwhile,
    damaged,
    lost_race,
)
from .files import (
    BROADCAST_BYTES,
    HINT_LOGGER,
    LocalCheckpoint,
    ParquetCheckpoint,
    added_file_names,
    arrow_filesystem,
    commit_info,
    commit_versions,
    damaged_log_entry,
    file_name,
    read_failure,
    require_files,
    uncommitted_data_files,
    with_user_metadata,
)

__all__ = [
    "BROADCAST_BYTES",
    "CHANGE_DATA_FEED",
    "HINT_LOGGER",
    "PARTITION_TYPES",
    "RESERVED_COMMIT_KEYS",
    "ConcurrentWriteError",
    "DamagedTableError",
    "DeltaStorage",
    "LocalCheckpoint",
    "ParquetCheckpoint",
    "PartitionValue",
    "SchemaMismatchError",
    "StorageError",
    "TableNotFoundError",
    "TableSnapshot",
    "TableState",
    "UnsupportedTableFeatureError",
    "WriteMode",
    "added_file_names",
    "arrow_filesystem",
    "check_partition_columns",
    "commit_info",
    "commit_metadata",
    "commit_versions",
    "conform_to_table",
    "created_meanwhile",
    "damaged",
    "damaged_log_entry",
    "file_name",
    "lost_race",
    "missing_properties",
    "read_failure",
    "require_files",
    "require_partition_values",
    "uncommitted_data_files",
    "with_user_metadata",
]

log = logging.getLogger(__name__)

#: How a commit treats the table's current rows: ``create`` (the table must not exist), ``append``, ``overwrite``
#: (all rows, or with ``where`` only those of the matching partitions).
WriteMode = Literal["create", "append", "overwrite"]

#: Table properties of the outputs downstream systems follow: Delta's Change Data Feed, so that
#: ``spark.readStream.option("readChangeFeed", "true")`` streams each run's inserted and removed rows.
CHANGE_DATA_FEED: dict[str, str] = {"delta.enableChangeDataFeed": "true"}


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


@dataclass(frozen=True)
class TableChanges:
    """The rows a table gained and lost between two versions, by data file.

    A commit adds and removes whole data files: ``added`` holds the rows of the files in ``version`` that were
    not in ``since``, ``removed`` the rows of the files in ``since`` that are no longer in ``version``. An
    append gives added rows only; a compaction or an update gives the rows it rewrote on both sides. The
    streaming job sets aside the rows both sides hold (:func:`audience_activation.columns.net_rows`) and seeds
    its affected persons from the rest.

    A file kept by both versions can still change its rows when the table has deletion vectors: a delete marks
    rows deleted beside the file, a restore can unmark them. Such a file's rows that ``version`` no longer shows
    are in ``removed``, and those it shows again are in ``added`` (:meth:`DeltaStorage._rows_changed_in_place`).

    Attributes:
        location: the table's URI or path.
        since: the version the changes start after (None: from an empty table, every row is added).
        version: the version they end at (inclusive).
        added: rows of the files added (the table's schema).
        removed: rows of the files removed (the table's schema at ``since``).
        removes: whether any data file was removed or changed in place. False (an append, or no commit): ``removed``
            is empty, known from the two file lists without a query.
    """

    location: str
    since: int | None
    version: int
    added: DataFrame
    removed: DataFrame
    removes: bool = True

    def lost_rows(self) -> bool:
        """Whether the table lost any row (a query only when a data file was removed or changed in place)."""
        return self.removes and not self.removed.isEmpty()


@dataclass(frozen=True)
class TableState:
    """An existing table as a write sees it before committing (metadata only, no data read).

    Attributes:
        version: the version the write is based on.
        schema: the table's schema, partition columns included.
        partition_columns: the table's partition columns, in order.
        properties: the table's properties, or None when the engine reads them only on demand
            (:meth:`DeltaStorage.properties`).
        handle: the engine's own object for that version, passed back to its commit (delta-rs: the
            ``DeltaTable`` the commit is bound to).
    """

    version: int
    schema: StructType
    partition_columns: list[str]
    properties: Mapping[str, str] | None = None
    handle: Any = None


@dataclass(frozen=True)
class CommitPlan:
    """What an engine's commit writes, decided (and checked) by the write template.

    Attributes:
        mode: see :data:`WriteMode`; ``where`` restricts an overwrite to the matching partitions.
        base: the existing table the commit is based on; None when this commit creates the table.
        schema: the table's schema (the one to create when ``base`` is None).
        partition_columns: the table's partition columns.
        where: the partition values an overwrite replaces, or None.
        properties: the table properties of a creating commit (empty when the table exists).
        write_id: the write's id (also in ``metadata``).
        metadata: the commit's custom metadata (:func:`commit_metadata`), stored as its ``userMetadata``.
    """

    mode: WriteMode
    base: TableState | None
    schema: StructType
    partition_columns: Sequence[str]
    where: Mapping[str, PartitionValue] | None
    properties: Mapping[str, str]
    write_id: str
    metadata: Mapping[str, str]


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

    def read(self, location: str, version: int | None = None) -> TableSnapshot:
        """Read the table at ``version`` (default: the latest), returning the version actually read.

        Raises:
            TableNotFoundError: no Delta table at ``location``.
            UnsupportedTableFeatureError: the table needs a reader feature this engine lacks.
        """
        return self._snapshot(location, version)

    def read_changes(self, location: str, since: int | None, version: int | None = None) -> TableChanges:
        """The rows of the files added and removed after version ``since`` up to ``version`` (default: the
        latest; see :class:`TableChanges`). Only the two versions' file lists are compared: the commits between
        them are not read one by one, so a file added and removed in between is not seen (its rows were never
        part of a version a run read).

        Raises:
            TableNotFoundError: no Delta table at ``location``.
            ValueError: ``since`` is after ``version``.
        """
        end = self.version(location) if version is None else version
        if since is not None and since > end:
            raise ValueError(f"{location}: cannot read changes after version {since} up to the older {end}")
        after = self._files(location, end)
        before = self._files(location, since) if since is not None else set()
        added = self._rows_of_files(location, end, sorted(after - before))
        if since is None:
            return TableChanges(location, since, end, added, self.spark.createDataFrame([], added.schema), False)
        removed = self._rows_of_files(location, since, sorted(before - after))
        rewritten = self._changed_in_place(location, since, end, after & before) if since < end else set()
        if rewritten:
            gained, lost = self._rows_changed_in_place(location, since, end, sorted(rewritten))
            added, removed = added.unionByName(gained), removed.unionByName(lost)
        removes = bool(before - after) or bool(rewritten)
        return TableChanges(location=location, since=since, version=end, added=added, removed=removed, removes=removes)

    @abc.abstractmethod
    def _files(self, location: str, version: int) -> set[str]:
        """The data files of the table at ``version``, as absolute URIs."""

    @abc.abstractmethod
    def _rows_of_files(self, location: str, version: int, files: Sequence[str]) -> DataFrame:
        """The rows of ``files`` (from :meth:`_files` of that ``version``), with the table's schema then."""

    def _changed_in_place(self, location: str, since: int, version: int, kept: set[str]) -> set[str]:
        """The files of ``kept`` (data files of both versions) whose rows may differ between them. None by
        default: a data file never changes once written. An engine that reads deletion vectors overrides it."""
        return set()

    def _rows_changed_in_place(
        self, location: str, since: int, version: int, files: Sequence[str]
    ) -> tuple[DataFrame, DataFrame]:
        """``(gained, lost)``: the rows of ``files`` (from :meth:`_changed_in_place`) that ``version`` shows and
        ``since`` did not, and those ``since`` showed and ``version`` does not."""
        raise NotImplementedError(f"{type(self).__name__} reads no table whose files change in place")

    @abc.abstractmethod
    def schema(self, location: str) -> StructType:
        """The table's schema (partition columns included) without reading data."""

    @abc.abstractmethod
    def properties(self, location: str) -> dict[str, str]:
        """The table's properties (``delta.*`` configuration of its metadata)."""

    # -- writing -------------------------------------------------------------------------------------
    def create(
        self,
        location: str,
        schema: StructType,
        partition_by: Sequence[str] = (),
        *,
        properties: Mapping[str, str] | None = None,
    ) -> int:
        """Create an empty table; fails with :class:`StorageError` if one exists. Returns its version."""
        if self.exists(location):
            raise StorageError(f"{location}: a Delta table already exists here")
        check_partition_columns(schema, partition_by, location)
        empty = self.spark.createDataFrame([], schema)
        return self._write(empty, location, mode="create", partition_by=partition_by, properties=properties)

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
        return self._write(
            df, location, mode="append", partition_by=partition_by, commit_info=commit_info, properties=properties
        )

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
        return self._write(
            df, location, mode="overwrite", partition_by=partition_by, commit_info=commit_info, properties=properties
        )

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
        if not where:
            raise ValueError("replace_partitions needs at least one partition column in `where`")
        if any(value is None for value in where.values()):
            raise ValueError("replace_partitions compares with '='; a null partition value cannot be matched")
        return self._write(
            df,
            location,
            mode="overwrite",
            partition_by=partition_by,
            where=dict(where),
            commit_info=commit_info,
            properties=properties,
        )

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
        if column not in df.columns:
            raise ValueError(f"{location}: swap column {column!r} is not a column of the data ({df.columns})")
        if version is None:
            try:
                self._write(df, location, mode="create")
            except ConcurrentWriteError:
                return False
            return True
        if version < 0:
            raise ValueError(f"{location}: swap needs the version the caller read, not {version}")
        if expected is None:
            raise ValueError("swap compares with '='; a null expected value cannot be matched")
        return self._swap(df, location, version=version, column=column, expected=expected)

    def restore(self, location: str, version: int, *, commit_info: Mapping[str, str] | None = None) -> int:
        """Restore the table to an earlier ``version`` with Delta's ``RESTORE`` (a new commit whose state is
        that version's). Returns the new version (the current one when the table is already at that state)."""
        if version < 0:
            raise ValueError(f"{location}: cannot restore version {version}")
        write_id = uuid.uuid4().hex
        metadata = commit_metadata(write_id, self.name, commit_info)
        latest = self.version(location)
        if latest == version:
            return version
        if version > latest:
            raise StorageError(f"{location}: could not restore version {version}: the latest version is {latest}")
        return self._restore(location, version, write_id=write_id, metadata=metadata)

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

    # -- the write template --------------------------------------------------------------------------
    def _write(
        self,
        df: DataFrame,
        location: str,
        *,
        mode: WriteMode,
        partition_by: Sequence[str] = (),
        where: Mapping[str, PartitionValue] | None = None,
        commit_info: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        base_version: int | None = None,
    ) -> int:
        """Every write: all checks first, then the table properties, then the engine's commit.

        A write refused by a check commits nothing, not even the table properties it asked for:

        1. ``commit_info`` may not use the engines' reserved keys.
        2. An existing table (``mode`` other than ``create``): ``partition_by``, when given, must be the table's
           partition columns, and ``df`` must have the table's column names and types (it is conformed to the
           table's column order). A new table: ``partition_by`` must name columns of ``df`` of a supported type.
        3. ``where`` may name only partition columns (of the table, or ``partition_by`` for a new one); every
           row of ``df`` is checked against it while the data files are written.
        4. Table properties the existing table lacks are set in a commit of their own; the write then commits
           on the table as it is after that commit.

        Args:
            base_version: the version the write is based on (default: the latest); the delta-rs engine binds
                its commit to it, which is how its :meth:`swap` detects a table that moved on.
        """
        write_id = uuid.uuid4().hex
        metadata = commit_metadata(write_id, self.name, commit_info)
        base = self._table_state(location, base_version) if mode != "create" else None
        if base is not None:
            partition_columns = list(base.partition_columns)
            if partition_by and list(partition_by) != partition_columns:
                raise SchemaMismatchError(
                    f"{location}: table is partitioned by {partition_columns}, write asked for {list(partition_by)}"
                )
            df = conform_to_table(df, base.schema, location)
            schema = base.schema
        else:
            partition_columns = list(partition_by)
            check_partition_columns(df.schema, partition_columns, location)
            schema = df.schema
        if where is not None:
            df = require_partition_values(df, where, partition_columns, location)
        if base is not None and properties:
            current = base.properties if base.properties is not None else self.properties(location)
            lacking = missing_properties(current, properties)
            if lacking:
                self._set_properties(location, lacking, base)
                log.info("%s: set table properties %s", location, lacking)
                base = self._table_state(location, None) or base
        plan = CommitPlan(
            mode=mode,
            base=base,
            schema=schema,
            partition_columns=partition_columns,
            where=where,
            properties=dict(properties or {}) if base is None else {},
            write_id=write_id,
            metadata=metadata,
        )
        return self._commit(df, location, plan)

    # -- what each engine implements -----------------------------------------------------------------
    @abc.abstractmethod
    def _snapshot(self, location: str, version: int | None) -> TableSnapshot:
        """:meth:`read`: the table's rows at ``version`` (None: the latest) and the version read."""

    @abc.abstractmethod
    def _table_state(self, location: str, version: int | None) -> TableState | None:
        """The table a write is based on, at ``version`` (None: the latest); None when no table exists.

        Raises:
            UnsupportedTableFeatureError: the engine cannot honour the table's protocol.
        """

    @abc.abstractmethod
    def _set_properties(self, location: str, properties: Mapping[str, str], base: TableState) -> None:
        """Set table properties of an existing table in a commit of their own."""

    @abc.abstractmethod
    def _commit(self, df: DataFrame, location: str, plan: CommitPlan) -> int:
        """Write ``df`` (already checked and conformed) and commit it atomically as ``plan`` says; return the
        commit's version. ``df`` has the table's columns in its order (and the ``where`` row check applied).

        Raises:
            ConcurrentWriteError: another writer committed first (:func:`lost_race`) or created the table
                (:func:`created_meanwhile`); nothing of this write is committed.
        """

    @abc.abstractmethod
    def _swap(self, df: DataFrame, location: str, *, version: int, column: str, expected: PartitionValue) -> bool:
        """:meth:`swap` of an existing table (the arguments are checked)."""

    @abc.abstractmethod
    def _restore(self, location: str, version: int, *, write_id: str, metadata: Mapping[str, str]) -> int:
        """:meth:`restore` to a ``version`` older than the latest, with ``metadata`` (carrying ``write_id``)."""
