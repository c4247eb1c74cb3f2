"""Delta Lake storage behind one small interface, with two engines (docs/storage.md).

- ``delta-spark``: the Delta Lake Spark connector, when its jars are on the classpath (clusters).
- ``delta-rs``: Spark reads/writes the parquet files, the ``deltalake`` package commits (no jars needed).
- ``auto``: ``delta-spark`` when the connector loads, else ``delta-rs``; the choice is logged.

Only this package reads and writes tables; transformations never do I/O.

Example:
    >>> store = open_storage(spark, "auto")  # doctest: +SKIP
    >>> snapshot = store.read("lake/profile_fragments")  # doctest: +SKIP
    >>> snapshot.version, snapshot.df.count()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import logging
import uuid

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from .base import (
    ConcurrentWriteError,
    DamagedTableError,
    DeltaStorage,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    TableSnapshot,
    UnsupportedTableFeatureError,
)
from .connector import DELTA_SQL_CONF, delta_spark_coordinate, find_delta_jars
from .delta_rs import DeltaRsStorage

__all__ = [
    "ConcurrentWriteError",
    "DamagedTableError",
    "DeltaRsStorage",
    "DeltaStorage",
    "SchemaMismatchError",
    "StorageError",
    "TableNotFoundError",
    "TableSnapshot",
    "UnsupportedTableFeatureError",
    "delta_spark_available",
    "delta_spark_status",
    "open_storage",
]

log = logging.getLogger(__name__)

ENGINES = ("auto", "delta-spark", "delta-rs")


def delta_spark_status(spark: SparkSession) -> tuple[bool, str]:
    """Whether the Delta Lake Spark connector is usable in this session, and why (or why not).

    Usable means both: its classes load (resolving the ``delta`` data source of a path that does not exist
    fails with ``DATA_SOURCE_NOT_FOUND`` when they are missing and with a path error when they load, so no
    JVM internals are needed), and Delta's SQL extension is configured (``DeltaTable`` needs it).
    """
    if importlib.util.find_spec("delta") is None:
        return False, "the delta-spark Python package is not installed"
    probe = f"/nonexistent-audience-activation-probe-{uuid.uuid4().hex}"
    loaded = True
    try:
        spark.read.format("delta").load(probe)
    except AnalysisException as exc:
        condition = (exc.getCondition() if hasattr(exc, "getCondition") else None) or ""
        loaded = "DATA_SOURCE_NOT_FOUND" not in condition and "DATA_SOURCE_NOT_FOUND" not in str(exc)
    except Exception as exc:  # noqa: BLE001 - any other failure means the source resolved
        loaded = "ClassNotFoundException" not in str(exc)
    if not loaded:
        jars = find_delta_jars()
        hint = f"; {jars.reason}" if not jars else " (the session was created before they were added)"
        return False, f"its jars are not on the classpath{hint}"
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if DELTA_SQL_CONF["spark.sql.extensions"] not in extensions:
        return False, "its jars are loaded but spark.sql.extensions lacks io.delta.sql.DeltaSparkSessionExtension"
    return True, "connector found"


def delta_spark_available(spark: SparkSession) -> bool:
    """Whether the Delta Lake Spark connector is usable in this session (see :func:`delta_spark_status`)."""
    return delta_spark_status(spark)[0]


def open_storage(spark: SparkSession, engine: str = "auto") -> DeltaStorage:
    """Return the storage engine named in ``job.yaml`` (``storage.engine``).

    Args:
        spark: the session.
        engine: ``auto``, ``delta-spark`` or ``delta-rs``.

    Raises:
        StorageError: ``delta-spark`` was asked for but its jars are not on the classpath.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown storage engine {engine!r}; expected one of {', '.join(ENGINES)}")
    available, why = delta_spark_status(spark) if engine != "delta-rs" else (False, "not asked for")
    if engine == "delta-spark" and not available:
        raise StorageError(
            f"storage.engine is delta-spark but the Delta Lake Spark connector is not usable: {why}. "
            f"Run `make jars` for local runs, submit with --packages {delta_spark_coordinate()} on a cluster, "
            f"or use storage.engine: delta-rs"
        )
    chosen = "delta-spark" if (engine == "delta-spark" or (engine == "auto" and available)) else "delta-rs"
    if chosen == "delta-spark":
        from .delta_spark import DeltaSparkStorage  # noqa: PLC0415 - needs the optional connector

        store: DeltaStorage = DeltaSparkStorage(spark)
    else:
        store = DeltaRsStorage(spark)
    reason = f"auto: Delta Spark connector {'found' if available else 'not usable, ' + why}"
    if engine != "auto":
        reason = "configured"
    log.info("Storage engine: %s (%s)", chosen, reason)
    return store
