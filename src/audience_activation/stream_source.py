"""The streaming job's source: the Delta versions of the input tables, as a Spark Structured Streaming source.

A Python data source (Spark 4, ``spark.readStream.format("audience_activation_inputs")``) whose **offset is the
Delta version of each input table** plus the evaluation time of the micro-batch that reads up to it:
``{"profile_fragments": 12, "experience_events": 40, "identity_graph": 3, "region_information": -1,
"evaluation_time": "2026-11-29T00:03:12Z"}`` (-1: the table does not exist yet). Rules:

1. **Rows.** One row per new commit of an input table: ``table, version``, plus the micro-batch's end
   ``versions`` and ``evaluation_time`` on every row; a sweep (rule 4) has one row with no table. The
   micro-batch reads the inputs at those versions and their changes since the versions of the previous
   completed run (:mod:`audience_activation.app.stream`): the rows only say *that* and *up to where*, never
   carry data, so one source serves both storage engines.
2. **Versions** are read from each table's Delta log with delta-rs (``deltalake``, a dependency of the package),
   on the driver; a table that does not exist counts as version -1.
3. **Evaluation time.** Pinned by the ``evaluationTime`` option, else the time the offset is planned (UTC,
   truncated to the second). It is part of the offset, so a micro-batch replayed after a crash (Spark reads its
   offsets back from the checkpoint) has the same ``T`` and run id.
4. **No new commit, no micro-batch** — the planned offset equals the start offset when no table moved — unless
   the ``sweepSeconds`` option is set and ``T`` is at least that many seconds after the start offset's: then
   the offset moves ``T`` only (a *sweep*, so that time-driven changes happen without new rows). Under
   ``Trigger.AvailableNow`` the sweep is measured against the time the query started, so such a query sweeps
   at most once and ends.
5. **Rate limit.** ``maxVersionsPerTrigger`` caps the commits one micro-batch takes (taken table by table in
   turn, oldest first; Spark's row limit, one row per commit). ``Trigger.AvailableNow`` takes every commit that
   existed when the query started, in micro-batches of at most that many, then stops.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from deltalake import DeltaTable
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow
from pyspark.sql.types import StructType

from .runlog import as_utc, parse_utc_time
from .storage.delta_rs import table_root

#: The source's name for ``spark.readStream.format``.
SOURCE_NAME = "audience_activation_inputs"
SCHEMA = "table string, version long, versions map<string, long>, evaluation_time string"
TIME_KEY = "evaluation_time"
ABSENT = -1


def offset_time(value: dt.datetime) -> str:
    """``T`` as written in an offset (ISO-8601 UTC, seconds)."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def latest_version(location: str) -> int:
    """The newest Delta version of a table, or :data:`ABSENT` when there is no table."""
    root = table_root(location)
    if not DeltaTable.is_deltatable(root):
        return ABSENT
    return int(DeltaTable(root).version())


class _Range(InputPartition):
    def __init__(self, start: dict[str, Any], end: dict[str, Any]) -> None:
        self.start, self.end = start, end


class InputVersionsReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """The reader of :class:`InputVersions` (rules in the module docstring)."""

    def __init__(self, given: dict[str, str]) -> None:
        options = {key.lower(): value for key, value in given.items()}  # Spark's options are case-insensitive
        self.tables: dict[str, str] = json.loads(options["tables"])
        self.start: dict[str, int] = json.loads(options["startversions"])
        self.start_time = options["starttime"]
        self.pinned = options.get("evaluationtime") or None
        limit = options.get("maxversionspertrigger")
        self.max_versions = int(limit) if limit else None
        self.sweep = dt.timedelta(seconds=int(options.get("sweepseconds") or 0))
        self.target: dict[str, int] | None = None
        self.until: str | None = None

    def initialOffset(self) -> dict[str, Any]:
        return {**{name: int(self.start.get(name, ABSENT)) for name in self.tables}, TIME_KEY: self.start_time}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadAllAvailable() if self.max_versions is None else ReadMaxRows(self.max_versions)

    def prepareForTriggerAvailableNow(self) -> None:
        self.target = {name: latest_version(location) for name, location in self.tables.items()}
        self.until = self._now()  # rule 4: an available-now query sweeps for the time it started at, once

    def _now(self) -> str:
        if self.pinned:
            return offset_time(parse_utc_time(self.pinned))
        return offset_time(dt.datetime.now(dt.timezone.utc))

    def latestOffset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:
        latest = self.target or {name: latest_version(location) for name, location in self.tables.items()}
        versions = {name: int(start[name]) for name in self.tables}
        budget = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        moved = True
        while moved and (budget is None or budget > 0):  # one commit per table in turn
            moved = False
            for name in self.tables:
                if versions[name] < latest[name] and (budget is None or budget > 0):
                    versions[name] = latest[name] if budget is None else versions[name] + 1
                    budget = None if budget is None else budget - 1
                    moved = True
        now = self._now()
        if all(versions[name] == int(start[name]) for name in self.tables):  # rule 4
            reference = parse_utc_time(self.until or now)
            swept = self.sweep and reference - parse_utc_time(start[TIME_KEY]) >= self.sweep
            return {**start, TIME_KEY: now} if swept else start
        return {**versions, TIME_KEY: now}

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> list[InputPartition]:
        return [_Range(start, end)]

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        assert isinstance(partition, _Range)
        start, end = partition.start, partition.end
        versions = {name: int(end[name]) for name in self.tables}
        for name in self.tables:
            for version in range(int(start[name]) + 1, versions[name] + 1):
                yield (name, version, versions, end[TIME_KEY])
        if all(int(start[name]) == versions[name] for name in self.tables):
            yield (None, None, versions, end[TIME_KEY])  # a sweep (rule 4): no commit, T moved

    def commit(self, end: dict[str, Any]) -> None:
        return None


class InputVersions(DataSource):
    """Options: ``tables`` (JSON: input table -> location), ``startVersions`` (JSON: table -> version the
    stream starts after), ``startTime`` (``T`` of that state), ``evaluationTime`` (pin ``T``),
    ``maxVersionsPerTrigger``, ``sweepSeconds``."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return InputVersionsReader(dict(self.options))
