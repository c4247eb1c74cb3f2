"""A run's results as ``(table, DataFrame)`` pairs, in the order the job commits them.

Pure: the rows are stamped with the run id and ``T`` and split per destination and route; the job layer
conforms each to its table's schema and writes it in the table's mode (:mod:`audience_activation.tables`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .. import tables
from ..activation import EDGE, HUB
from ..columns import timestamp_literal
from .model import Results


@dataclass(frozen=True)
class Output:
    """Rows for one output table (``destination_id`` for per-destination tables; ``mode`` when written otherwise
    than the table's own mode, such as a log emptied by an overwrite)."""

    spec: tables.TableSpec
    df: DataFrame
    destination_id: str | None = None
    mode: tables.WriteMode | None = None

    @property
    def key(self) -> str:
        """The table's name in the run log's ``output_versions``."""
        if self.destination_id is None:
            return self.spec.name
        return tables.activation_key(self.destination_id, self.spec)


#: The route of the change rows each per-destination activation table holds.
ROUTES = {tables.ACTIVATION_EDGE.name: EDGE, tables.ACTIVATION_HUB.name: HUB}


def batch_outputs(
    results: Results, run_id: str, evaluation_time: dt.datetime, destination_ids: Sequence[str]
) -> list[Output]:
    """Every output of a batch run but the run log, in commit order: clusters, profiles, membership, each
    destination's edge and hub tables, activation state, quarantine.

    Args:
        results: the evaluation's results.
        run_id: the run id (partition value of the per-run tables).
        evaluation_time: ``T`` (``evaluated_at`` of the change rows).
        destination_ids: the destinations to write: the configured ones, plus removed ones whose members exit.
    """
    stamped = results.changes.select(
        F.lit(run_id).alias(tables.RUN_ID), timestamp_literal(evaluation_time).alias("evaluated_at"), "*"
    )
    activation = [
        Output(spec, stamped.where((F.col("destination_id") == d) & (F.col("route") == ROUTES[spec.name])), d)
        for d in destination_ids
        for spec in tables.ACTIVATION_TABLES
    ]
    return [
        Output(tables.CLUSTERS, results.clusters),
        Output(tables.PROFILES, results.profiles),
        Output(tables.MEMBERSHIP, results.membership),
        *activation,
        Output(tables.ACTIVATION_STATE, results.state),
        Output(tables.QUARANTINE, results.quarantine.select(F.lit(run_id).alias(tables.RUN_ID), "*")),
    ]
