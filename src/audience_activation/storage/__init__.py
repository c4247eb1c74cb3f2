"""Delta Lake storage behind one small interface, with two engines (CONTRACT §2).

- ``delta-spark``: the Delta Lake Spark connector, when its jars are on the classpath (clusters).
- ``delta-rs``: Spark reads/writes the parquet files, the ``deltalake`` package commits (this machine).
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
    DeltaStorage,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    TableSnapshot,
    UnsupportedTableFeatureError,
)
from .delta_rs import DeltaRsStorage

__all__ = [
    "ConcurrentWriteError",
    "DeltaRsStorage",
    "DeltaStorage",
    "SchemaMismatchError",
    "StorageError",
    "TableNotFoundError",
    "TableSnapshot",
    "UnsupportedTableFeatureError",
    "delta_spark_available",
    "open_storage",
]

log = logging.getLogger(__name__)

ENGINES = ("auto", "delta-spark", "delta-rs")


def delta_spark_available(spark: SparkSession) -> bool:
    """Whether the Delta Lake Spark connector is usable in this session.

    Resolving the ``delta`` data source of a path that does not exist fails with ``DATA_SOURCE_NOT_FOUND``
    when the connector's classes are missing and with a path error when they load, so no JVM internals are
    needed to tell the two apart.
    """
    if importlib.util.find_spec("delta") is None:
        return False
    probe = f"/nonexistent-audience-activation-probe-{uuid.uuid4().hex}"
    try:
        spark.read.format("delta").load(probe)
    except AnalysisException as exc:
        condition = (exc.getCondition() if hasattr(exc, "getCondition") else None) or ""
        return "DATA_SOURCE_NOT_FOUND" not in condition and "DATA_SOURCE_NOT_FOUND" not in str(exc)
    except Exception as exc:  # noqa: BLE001 - any other failure means the source resolved
        return "ClassNotFoundException" not in str(exc)
    return True


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
    available = delta_spark_available(spark) if engine != "delta-rs" else False
    if engine == "delta-spark" and not available:
        raise StorageError(
            "storage.engine is delta-spark but the Delta Lake Spark connector is not on the classpath; "
            "submit with --packages io.delta:delta-spark_4.2_2.13:4.4.1 or use storage.engine: delta-rs"
        )
    chosen = "delta-spark" if (engine == "delta-spark" or (engine == "auto" and available)) else "delta-rs"
    if chosen == "delta-spark":
        from .delta_spark import DeltaSparkStorage  # noqa: PLC0415 - needs the optional connector

        store: DeltaStorage = DeltaSparkStorage(spark)
    else:
        store = DeltaRsStorage(spark)
    reason = (
        f"auto: Delta Spark connector {'found' if available else 'not found'}" if engine == "auto" else "configured"
    )
    log.info("Storage engine: %s (%s)", chosen, reason)
    return store
