"""The files of a Delta table as the engines see them on the driver: the log, data files, damage.

Listing and reading the ``_delta_log`` folder directly (the latest version, one commit's ``commitInfo``), finding
data files no commit names (a killed writer's), naming the file that makes a table unreadable, and the parquet
lineage barriers of iterative jobs. Everything here uses pyarrow's filesystem layer, so it works the same under
both engines. :mod:`audience_activation.storage.base` re-exports every public name.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import unquote

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..logs import quiet_jvm_loggers
from .errors import DamagedTableError, damaged

log = logging.getLogger(__name__)


def with_user_metadata(entry: dict[str, Any]) -> dict[str, Any]:
    """A history entry with the keys of its ``userMetadata`` JSON merged in.

    Both engines store a write's :func:`~audience_activation.storage.checks.commit_metadata` as the commit's
    ``userMetadata`` (a JSON string, the one custom field every Delta writer and reader knows), so either
    engine's ``history()`` shows the other's ``writeId``, ``engine`` and ``run_id``.
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

    def __call__(self, df: DataFrame, partition_by: Sequence[str] = ()) -> DataFrame:
        """Materialise ``df`` (laid out by ``partition_by`` when given) and read it back, columns in order."""
        self.writes += 1
        path = f"{self.folder}/{self.writes:05d}"
        df.write.mode("overwrite").partitionBy(*partition_by).parquet(path)
        read = self.spark.read.schema(df.schema).parquet(path)
        return read.select(*[F.col(f"`{c}`") for c in df.columns]) if partition_by else read

    def cleanup(self) -> None:
        """Delete the scratch folder (best effort: a leftover scratch folder never fails a run)."""
        try:
            filesystem, path = arrow_filesystem(self.folder)
            filesystem.delete_dir(path)
        except FileNotFoundError:
            log.debug("scratch folder %s already gone", self.folder)
        except (OSError, ValueError) as exc:
            log.warning("could not delete the scratch folder %s: %s", self.folder, exc)


class LocalCheckpoint:
    """A lineage barrier kept in the executors' block stores (``DataFrame.localCheckpoint``), for small parts.

    A micro-batch of the streaming job materialises a few dozen tiny intermediate results; writing each as
    parquet and listing it back costs about 0.7 s, a local checkpoint about 0.3 s (measured warm, local[2]). The
    price: the blocks live on the executors that computed them (memory, spilling to disk), so a lost executor
    fails the micro-batch, which is rolled back and replayed like any failed one. :meth:`cleanup` releases the
    blocks (nothing the barrier returned can be read after it).

    **Serialized blocks.** The blocks are stored serialized (``StorageLevel.MEMORY_AND_DISK``), not as the
    deserialized rows ``localCheckpoint`` keeps by default: a long column takes 11.5 bytes a row that way against
    76, a UUID string 37 against 116 (a million rows, local[2]). A micro-batch holds about ninety such parts until
    it ends, so they cost the driver's JVM several GiB less, and their stored size is close to what a broadcast of
    them costs.

    **Broadcast.** Spark sizes a checkpointed result by the estimate of the plan that made it — a few thousand
    rows derived from a 4-million-row scan are "120 MB" to the planner — so every join of a big input with a
    small part shuffled the big input (on the 1M-person demo lake: the 3.5 million events, 450 MB, for one
    join). The barrier knows better: a result whose stored blocks are no larger than :data:`BROADCAST_BYTES` is
    returned with a ``broadcast`` hint, so joins broadcast it (Spark ignores the hint where a join cannot
    broadcast that side). Like any hint, it follows the result through later projections, filters, aggregations
    and generators up to the first join. ``spark.sql.autoBroadcastJoinThreshold=-1`` turns the marking off.
    Spark's warnings about hints a plan cannot use are silenced from the first mark to :meth:`cleanup` (for every
    hint in that time); barriers used at the same time must be cleaned up in the reverse order.
    """

    def __init__(self, mark_broadcast: bool = True) -> None:
        """``mark_broadcast=False``: never mark a result for broadcast (results kept longer than the barriers of
        one micro-batch, whose hint warnings must not be silenced until they are released)."""
        self.writes = 0
        self.broadcast = 0
        self._mark_broadcast = mark_broadcast
        self._blocks: list[Any] = []
        self._jvm: Any = None
        self._restore_hint_log: Any = None

    def __call__(self, df: DataFrame, partition_by: Sequence[str] = ()) -> DataFrame:
        """Materialise ``df`` eagerly; ``partition_by`` only matters to file layouts and is ignored here."""
        self.writes += 1
        self._jvm = df.sparkSession.sparkContext._jvm  # noqa: SLF001 - log4j is reached through the JVM gateway
        materialised = df.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)  # serialized
        rdd = materialised._jdf.queryExecution().analyzed().rdd()  # a LogicalRDD over the checkpointed RDD
        self._blocks.append(rdd)
        if self._mark_broadcast and _fits_broadcast(df.sparkSession, rdd):
            self.broadcast += 1
            if self._restore_hint_log is None:  # Spark warns of each hint a plan cannot use (any hint, until cleanup)
                self._restore_hint_log = quiet_jvm_loggers(self._jvm, [HINT_LOGGER])
            return materialised.hint("broadcast")
        return materialised

    def cleanup(self) -> None:
        """Release every checkpointed block (best effort: a failure to release never fails a run).

        Spark warns, for each one, that a locally checkpointed RDD cannot be recomputed after it is released —
        exactly the intent here — so the RDDs' loggers are raised to ERROR while they are released, then set
        back (:func:`audience_activation.logs.quiet_jvm_loggers`)."""
        if self._restore_hint_log is not None:
            self._restore_hint_log()
            self._restore_hint_log = None
        blocks, self._blocks = self._blocks, []
        if not blocks:
            return
        restore = quiet_jvm_loggers(self._jvm, [rdd.getClass().getName() for rdd in blocks])
        try:
            for rdd in blocks:
                try:
                    rdd.unpersist(False)
                except Exception as exc:  # noqa: BLE001 - py4j raises its own error types; cleanup must not fail
                    log.warning("could not release a local checkpoint: %s", exc)
        finally:
            restore()


#: The logger of Spark's warnings about join hints a plan could not use.
HINT_LOGGER = "org.apache.spark.sql.catalyst.analysis.HintErrorLogger"


#: The largest stored result :class:`LocalCheckpoint` marks for broadcast. Its blocks hold serialized rows,
#: about the size of the rows in a broadcast (a broadcast hash relation adds its index): 16 MB is ~1.4 million
#: long keys or ~450,000 UUID strings, and marks about the same parts as the 64 MB of deserialized rows the
#: barrier measured before. Broadcasting the affected identities or events spares shuffling the millions of
#: identity and event rows they are joined with.
BROADCAST_BYTES = 16 << 20


def _fits_broadcast(spark: SparkSession, rdd: Any) -> bool:
    """Whether a persisted RDD's blocks (memory and disk) are within :data:`BROADCAST_BYTES` (none is when
    ``spark.sql.autoBroadcastJoinThreshold`` is -1: broadcasts are turned off).

    The sizes come from Spark's status store, which its listener bus fills asynchronously; the bus is drained
    first, and a result not every partition of which is listed yet counts as too large."""
    if spark._jsparkSession.sessionState().conf().autoBroadcastJoinThreshold() < 0:  # noqa: SLF001 - parsed by Spark
        return False
    partitions = len(rdd.partitions())
    if partitions == 0:  # an empty result stores no block
        return True
    context = spark.sparkContext._jsc.sc()  # noqa: SLF001 - the block manager's sizes
    try:
        context.listenerBus().waitUntilEmpty()
    except Exception as exc:  # noqa: BLE001 - py4j raises its own error types; the check below still holds
        log.debug("could not drain Spark's listener bus: %s", exc)
    wanted = rdd.id()
    for info in context.getRDDStorageInfo():
        if info.id() == wanted:
            complete = int(info.numCachedPartitions()) == partitions
            return complete and int(info.memSize()) + int(info.diskSize()) <= BROADCAST_BYTES
    return False


#: Hadoop scheme -> pyarrow scheme, for the driver-side file operations (listing, deleting).
_ARROW_SCHEMES = {"s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs", "abfs": "abfs", "abfss": "abfs", "hdfs": "hdfs"}


def arrow_filesystem(location: str) -> tuple[Any, str]:
    """The pyarrow filesystem and path of a local path or URI (``s3a://`` is read as ``s3://``).

    A local path, or a ``file:`` URI as Hadoop writes them (not percent-encoded: ``file:/my lake``), is the local
    filesystem's path as it is: a space in a folder name is no URI syntax error. A ``file:`` URI with a ``%``
    escape (``file:///my%20lake``) is decoded, as delta-rs reads it; one with a host is left to pyarrow.

    Raises:
        ValueError: pyarrow has no filesystem for the URI's scheme.
    """
    import pyarrow.fs as pafs  # noqa: PLC0415 - keeps pyarrow out of the import of the interface

    if location.startswith("file:"):
        rest = location.removeprefix("file:")
        if "%" in rest or (rest.startswith("//") and not rest.startswith("///")):
            return pafs.FileSystem.from_uri(location)
        location = "/" + rest.lstrip("/")
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(location)
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


def commit_file(location: str, version: int) -> tuple[Any, str]:
    """The pyarrow filesystem and path of the commit file of ``version`` in a table's ``_delta_log``."""
    filesystem, base = arrow_filesystem(location.rstrip("/"))
    return filesystem, f"{base}/_delta_log/{version:020d}.json"


def commit_info(location: str, version: int) -> dict[str, Any]:
    """The ``commitInfo`` action of one commit file, with its ``userMetadata`` keys merged in."""
    filesystem, path = commit_file(location, version)
    with filesystem.open_input_stream(path) as stream:
        for line in stream.read().decode("utf-8").splitlines():
            if '"commitInfo"' in line:
                info = json.loads(line).get("commitInfo") or {}
                return with_user_metadata({**info, "version": version})
    return {"version": version}


def commit_adds_files(location: str, version: int) -> bool:
    """Whether the commit file of ``version`` holds an ``add`` action (it wrote rows: an empty commit holds none)."""
    filesystem, path = commit_file(location, version)
    with filesystem.open_input_stream(path) as stream:
        return any("add" in json.loads(line) for line in stream.read().decode("utf-8").splitlines() if line.strip())


def file_name(path: str) -> str:
    """A data file's name: the last part of its path or URI, unescaped. Delta's own writer makes each unique in a
    table (a UUID each); a plain parquet writer can give the files of two partition folders the same one."""
    return unquote(path.rstrip("/").rsplit("/", 1)[-1])


def comparable_path(path: str, *, encoded: bool) -> str:
    """A data file's path in one form for comparing paths from two sources: a local ``file:`` URI as the plain
    absolute path, and percent escapes decoded once when ``encoded`` — a URI string, such as Spark's
    ``_metadata.file_path``, escapes every folder name once more than the path strings ``inputFiles()`` gives,
    which show folder names as they are on disk (Hive-escaped partition values included)."""
    if encoded:
        path = unquote(path)
    if path.startswith("file:"):
        path = "/" + path.removeprefix("file:").lstrip("/")
    return path


def added_file_names(location: str, first: int, last: int) -> set[str] | None:
    """The file names (:func:`file_name`) that the ``add`` actions of commits ``first`` to ``last`` name, or None
    when one of those commit files is gone (log cleanup keeps only recent commits).

    A name added while a file of that name was already in the table is usually that file added again, with
    another deletion vector (a delete, a restore); a file of the same name in another partition folder is a
    candidate too, which costs work only. Adds marked ``dataChange: false`` are left out: by the Delta protocol
    they change no row (statistics recomputed, row tracking backfilled, files rearranged)."""
    names: set[str] = set()
    for version in range(first, last + 1):
        filesystem, commit_path = commit_file(location, version)
        try:
            with filesystem.open_input_stream(commit_path) as stream:
                lines = stream.read().decode("utf-8").splitlines()
        except FileNotFoundError:
            return None
        for line in lines:
            if '"add"' in line:
                add = json.loads(line).get("add") or {}
                path = add.get("path") if add.get("dataChange", True) else None
                if path:
                    names.add(file_name(path))
    return names


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
