"""The activation state as a table and its log: what the streaming job appends instead of rewriting the state.

``activation_state`` holds one row per ``(destination_id, segment_id, person_id)`` mapped member (its consent and
activated flags, the identities sent). A batch run writes it whole. A streaming micro-batch changes the rows of
the few persons it revisits, and rewriting the whole table for them was its largest single cost (3.5M rows at 1M
persons, 7–10 s per micro-batch on 2 cores): it appends its changes to ``activation_state_log`` instead.

Rules:

1. **Log rows.** A micro-batch appends one row per key whose row it changes: the new row, or, when the key has
   no row any more, a row with ``removed`` true and no values
   (:func:`audience_activation.activation.state_changes`). Every row it appends has the same ``generation``,
   higher than that of any row already in the log (:func:`log_rows`).
2. **The state** (:func:`current_state`) at a pair of versions (the table's and the log's, both recorded in the
   run log): the table's rows whose key is not in the log, plus, per key in the log, its row of the highest
   generation unless that row is ``removed``.
3. **Writing the state whole** (a batch run; a micro-batch once the log would hold more rows than
   ``job.stream.state_log_max_rows``, when there is no state to append to, or when either table is no longer at
   the version the previous run recorded) overwrites the table with the state and empties the log in the same
   run, so the log only ever holds changes since the table was written.

Pure: DataFrames in, DataFrames out.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from . import tables

#: The key of a state row.
KEY = ("destination_id", "segment_id", "person_id")
#: The state's columns, in the table's order.
_SCHEMA = tables.ACTIVATION_STATE_LOG.schema or StructType()
STATE_COLUMNS = tuple(c for c in _SCHEMA.fieldNames() if c not in ("generation", "removed"))
_VALUES = tuple(c for c in STATE_COLUMNS if c not in KEY)


def current_state(table: DataFrame, log: DataFrame | None) -> DataFrame:
    """The activation state: ``table`` (``activation_state``) with the changes in ``log``
    (``activation_state_log``) applied (rule 2); ``table`` itself when there is no log.

    The table's rows are only filtered (by the keys in the log), never aggregated; only the log's rows are
    grouped by key. A filter on the key columns applied to the result reaches both sides.

    Example:
        >>> current_state(table, log).where(F.col("person_id") == "CRMID:c1")  # doctest: +SKIP
    """
    if log is None:
        return table
    latest = (
        log.groupBy(*KEY)
        .agg(F.max_by(F.struct("removed", *_VALUES), "generation").alias("_latest"))
        .select(*KEY, "_latest.*")
    )
    kept = table.join(log.select(*KEY), on=list(KEY), how="left_anti")
    return kept.select(*STATE_COLUMNS).unionByName(latest.where(~F.col("removed")).select(*STATE_COLUMNS))


def log_rows(changes: DataFrame, generation: int) -> DataFrame:
    """The log rows of a micro-batch (rule 1): ``changes``, the state rows it changed with ``removed``
    (:func:`audience_activation.activation.state_changes`), each with ``generation``, in the log's columns.

    Example:
        >>> log_rows(diff.state_changes, generation=8).where("removed").count()  # doctest: +SKIP
        1
    """
    return changes.select(*STATE_COLUMNS, F.lit(generation).cast("long").alias("generation"), "removed")


__all__ = ["KEY", "STATE_COLUMNS", "current_state", "log_rows"]
