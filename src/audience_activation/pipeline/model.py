"""What the pipeline takes and gives: the inputs, the previous run's state, the results of one evaluation.

All of them hold DataFrames (lazy) and small Python values; nothing here reads or writes a table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pyspark.sql import DataFrame

from ..as_of import AsOfInputs
from ..runlog import PreviousRun


class Barrier(Protocol):
    """A lineage barrier: returns a DataFrame with the same rows whose plan starts from materialised data.

    The job layer passes one that writes parquet under the lake's scratch folder
    (:class:`audience_activation.storage.files.ParquetCheckpoint`); :func:`no_barrier` keeps the lineage.
    ``partition_by`` lays the materialised rows out by those columns, so later filters on them read only their
    part (the change rows, read once per destination and route).
    """

    def __call__(self, df: DataFrame, partition_by: Sequence[str] = ()) -> DataFrame: ...


def no_barrier(df: DataFrame, partition_by: Sequence[str] = ()) -> DataFrame:
    """The identity barrier (tests, and callers that cache themselves)."""
    return df


@dataclass(frozen=True)
class Inputs:
    """The input tables as read (every row, any time); None when a table is absent."""

    fragments: DataFrame
    events: DataFrame | None = None
    links: DataFrame | None = None
    regions: DataFrame | None = None


@dataclass(frozen=True)
class PreviousState:
    """The state a run starts from: the newest completed run older than ``T`` and its outputs at the versions
    it recorded (None before the first run, or when it did not write that table)."""

    run: PreviousRun | None = None
    membership: DataFrame | None = None
    activation_state: DataFrame | None = None
    clusters: DataFrame | None = None

    @property
    def mappings(self) -> dict[str, list[str]]:
        """Destination -> mapped segments at the previous run (empty before the first run)."""
        return dict(self.run.mappings) if self.run is not None else {}

    @property
    def evaluation_time(self) -> dt.datetime | None:
        return self.run.evaluation_time if self.run is not None else None


@dataclass(frozen=True)
class Results:
    """Every result of one evaluation at ``T``, before anything is written.

    Attributes:
        as_of: the inputs as of ``T`` (what the run used).
        clusters: ``identity_clusters`` rows.
        profiles: ``unified_profiles`` rows.
        events: the person events (de-duplicated, with ``person_id``), or None without events.
        evaluated: the profiles with one boolean column per segment.
        membership: ``segment_membership`` after the run.
        changes: change rows of every destination, with ``route``, ``region`` and ``dcs_region_id``.
        state: ``activation_state`` after the run.
        exclusions: ``destination_id, reason, persons`` not activated although qualified.
        quarantine: identity quarantine rows (without ``run_id``).
        segment_ids: the evaluated segments, in evaluation order.
        classification: segment -> evaluation method.
        cc_rounds: connected-components rounds.
        records: every record as of ``T`` with its validated identities (identity resolution's first
            materialised result; the run counts read it), or None when not available.
    """

    as_of: AsOfInputs
    clusters: DataFrame
    profiles: DataFrame
    events: DataFrame | None
    evaluated: DataFrame
    membership: DataFrame
    changes: DataFrame
    state: DataFrame
    exclusions: DataFrame
    quarantine: DataFrame
    segment_ids: list[str]
    classification: dict[str, str]
    cc_rounds: int
    records: DataFrame | None = None
