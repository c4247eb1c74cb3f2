"""The Spark session factory.

One place decides how every job, test helper and notebook gets its :class:`SparkSession`:

- **Local default**: ``local[*]`` when the process was started with plain ``python`` (or the console
  command). Under ``spark-submit`` the master given on the command line is kept, whatever ``job.yaml`` says,
  so the same code runs on ``local[*]``, ``spark://...``, ``yarn`` or ``k8s://...``.
- **Correctness settings** that outputs depend on, always applied: UTC session time zone (``today`` and
  ``occurs`` are UTC in PQL), parquet timestamps as ``TIMESTAMP_MICROS`` (the Delta standard; Spark's
  default INT96 is deprecated) and adaptive query execution on.
- **Performance defaults** that ``job.yaml`` (``spark.shuffle_partitions``, ``spark.conf``) can override.
- **The Delta Lake Spark connector** on local runs: when the jars fetched by ``make setup`` are found
  (:mod:`audience_activation.storage.connector`), they go on the classpath with Delta's SQL extension and
  catalog, so ``storage.engine: auto`` picks ``delta-spark``. Under ``spark-submit`` the jars are the
  submitter's business (``spark-submit.sh`` ships them with ``--jars`` or passes ``--packages``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession

from .logs import quiet_jvm_loggers
from .storage.connector import connector_conf, find_delta_jars

log = logging.getLogger(__name__)

#: Settings the outputs depend on. ``job.yaml`` cannot turn them off.
REQUIRED_CONF: dict[str, str] = {
    # PQL's now/today/occurs are defined in UTC; casts and date functions follow the session zone.
    "spark.sql.session.timeZone": "UTC",
    # Delta tables store timestamps as TIMESTAMP_MICROS; INT96 is deprecated and not written by delta-rs.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # AQE: coalesces shuffle partitions and handles skewed joins (large identity components).
    "spark.sql.adaptive.enabled": "true",
}

#: Defaults that ``job.yaml`` may override.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.adaptive.skewJoin.enabled": "true",
    # Staged data files are committed to the Delta log by the driver; no _SUCCESS marker is needed.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    # Arrow makes applyInPandas and toPandas fast (used for per-component identity rules, notebooks).
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Generated code is cached by its source; the default (100 classes) is less than one run of the pipeline
    # generates, so a process running it again (a notebook, the test suite) compiled everything anew, and the
    # JIT then compiled the new classes again. Measured on a 300-person lake (docs/performance.md, sixth
    # round): warm runs 30-36 s -> 25-30 s. A static setting: it only applies to a session this factory starts.
    "spark.sql.codegen.cache.maxEntries": "2000",
    # PySpark's DataFrame debugging (on by default) records the Python call site of every DataFrame and Column
    # call for error messages: a walk of the Python stack and about four JVM round trips per call. The jobs build
    # their plans from thousands of such calls; Spark's own description of the setting warns of "a non-trivial
    # performance overhead". Off: warm 50-event micro-batches on a 2,000-person lake 23.8 s instead of 30.5 s
    # (medians), warm 300-person batch runs 13.4-17.6 s instead of 18.1-19.9 s (docs/performance.md, seventh
    # round). Errors keep Spark's message and plan; ``job.yaml`` can turn it back on to see the Python line in
    # them. A static setting: it only applies to a session this factory starts.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}

#: Local runs: a handful of shuffle partitions per core; AQE coalesces small ones further.
LOCAL_SHUFFLE_PARTITIONS_PER_CORE = 4


def running_under_spark_submit() -> bool:
    """Whether this Python process was launched by ``spark-submit`` (which passes the JVM gateway port)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_conf(
    *,
    shuffle_partitions: int | None = None,
    extra_conf: Mapping[str, Any] | None = None,
    local: bool = True,
) -> dict[str, str]:
    """The Spark configuration the factory applies, as a plain dictionary.

    Args:
        shuffle_partitions: ``spark.sql.shuffle.partitions``; ``None`` picks a local default (4 per core)
            on local runs and leaves the cluster default otherwise.
        extra_conf: user settings from ``job.yaml`` (``spark.conf``); they override the defaults but not
            :data:`REQUIRED_CONF`.
        local: whether the session runs in local mode.

    Returns:
        The merged settings.
    """
    conf: dict[str, str] = dict(DEFAULT_CONF)
    # Delta rebuilds a table's state before each overwrite with 50 tasks by default, sized for big clusters.
    snapshot = "spark.databricks.delta.snapshotPartitions"
    if shuffle_partitions is not None:
        # Shuffles sized for this deployment: Delta's state reconstruction follows them.
        conf["spark.sql.shuffle.partitions"] = conf[snapshot] = str(shuffle_partitions)
    elif local:
        cores = os.cpu_count() or 1
        conf["spark.sql.shuffle.partitions"] = str(LOCAL_SHUFFLE_PARTITIONS_PER_CORE * cores)
        # A table's state (its live files) is small next to its data: one task per core. On 2 cores, 14
        # overwrites of small tables took 26 s with 8 tasks each, 17.5-18 s with 2 (docs/performance.md).
        conf[snapshot] = str(cores)
    for key, value in (extra_conf or {}).items():
        conf[str(key)] = _conf_value(value)
    overridden = {key for key in REQUIRED_CONF if key in conf and conf[key] != REQUIRED_CONF[key]}
    if overridden:
        log.warning("Ignoring job.yaml settings the outputs depend on: %s", ", ".join(sorted(overridden)))
    conf.update(REQUIRED_CONF)
    return conf


def _conf_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_session(
    app_name: str = "audience-activation",
    *,
    master: str | None = None,
    shuffle_partitions: int | None = None,
    extra_conf: Mapping[str, Any] | None = None,
    delta_connector: bool = True,
) -> SparkSession:
    """Create (or return the active) Spark session with the project's settings.

    Args:
        app_name: the application name shown in the Spark UI.
        master: the master for runs started with plain ``python``; ``None`` means ``local[*]``.
            Ignored under ``spark-submit``, which already fixed the master.
        shuffle_partitions: see :func:`session_conf`.
        extra_conf: see :func:`session_conf`.
        delta_connector: on local runs, load the Delta Lake Spark connector when its jars are found
            (``False`` when ``storage.engine`` is ``delta-rs``: nothing would use it).

    Returns:
        The session.

    Example:
        >>> spark = build_session(master="local[2]", shuffle_partitions=4)  # doctest: +SKIP
        >>> spark.conf.get("spark.sql.session.timeZone")  # doctest: +SKIP
        'UTC'
    """
    submitted = running_under_spark_submit()
    effective_master = None if submitted else (master or "local[*]")
    local = effective_master is not None and effective_master.startswith("local")
    if not submitted:
        # Python workers run this interpreter (the one with the package installed), not whatever
        # `python3` is first on PATH; spark-submit users choose with PYSPARK_PYTHON themselves.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if effective_master is not None:
        builder = builder.master(effective_master)
    conf = session_conf(shuffle_partitions=shuffle_partitions, extra_conf=extra_conf, local=local)
    if submitted:
        connector = "as spark-submit was given it (--jars / --packages)"
    elif not delta_connector:
        connector = "not loaded (storage.engine: delta-rs)"
    else:
        jars = find_delta_jars()
        if jars:
            conf.update(connector_conf(jars, conf))
        connector = f"loaded, {jars.reason}" if jars else f"not loaded: {jars.reason}"
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # getOrCreate() returns an existing session unchanged; runtime SQL settings still have to hold.
    for key, value in conf.items():
        if key.startswith("spark.sql.") and spark.conf.isModifiable(key):
            spark.conf.set(key, value)
    log.info(
        "Spark %s session on %s (%s); Delta Lake Spark connector: %s",
        spark.version,
        spark.conf.get("spark.master", "unknown"),
        "spark-submit" if submitted else "local process",
        connector,
    )
    return spark


#: Spark loggers that print a Java stack trace for every failed task (the error also reaches the driver).
TASK_ERROR_LOGGERS = (
    "org.apache.spark.executor.Executor",
    "org.apache.spark.scheduler.TaskSetManager",
    "org.apache.spark.scheduler.TaskSchedulerImpl",
)


def quiet_task_errors(spark: SparkSession) -> None:
    """Silence the per-task stack traces Spark logs when a task fails: the command line reports the error once,
    as a one-paragraph message (``--verbose`` keeps them). Best effort: a session without a JVM gateway (Spark
    Connect) is left as it is."""
    try:
        jvm = spark.sparkContext._jvm  # noqa: SLF001 - log4j is configured through the JVM gateway
    except Exception as exc:  # noqa: BLE001 - logging settings never fail a run
        log.debug("could not quiet Spark's task error logs: %s", exc)
        return
    quiet_jvm_loggers(jvm, TASK_ERROR_LOGGERS, "OFF")  # for the whole session: never set back
