"""An identity index of the input tables: the rows that hold a few identities, found without exploding every row.

The streaming job looks up, several times per micro-batch, the input rows that hold one of the affected identities
(:func:`audience_activation.touching.touching`, :func:`audience_activation.touching.holding`). Without an index
each lookup explodes the identity lists of every row of every input table. The index explodes each row once, when
its data file is first seen, and the running stream keeps it across micro-batches
(:class:`audience_activation.app.index_cache.InputIndexCache`). Its parts, per input table:

- **rows**: the table's rows with the columns identity resolution reads, and ``_list``, the 64-bit hash of the
  row's identity list (``xxhash64(map_entries(identityMap))``); links with ``_src`` and ``_dst``, the hashes of
  their two ends.
- **entries** (record tables): the distinct pairs ``_identity, _list`` of the rows: the hash of each normalised
  ``namespace, id`` of an identity list and the hash of that list.

A lookup, in this order:

1. hashes the identities it looks for (:func:`identity_hash`, over the normalised namespace, as the rules read
   identities);
2. finds their lists in the entries, and keeps the rows with one of those lists (links: the rows with one of
   those hashes at either end, each row once);
3. filters those rows as of ``T`` (:func:`audience_activation.as_of.as_of`, a filter of single rows);
4. runs the exact step of :func:`audience_activation.touching.touching` on them.

Every row that holds an identity has one of the found lists, so the candidates of step 2 hold every row the exact
step keeps, with every copy; a hash collision only adds a candidate the exact step drops. The result therefore
equals :func:`~audience_activation.touching.touching` of the whole inputs as of ``T``. The index is built from the
tables as read (before ``as_of``), which is why step 3 comes after the lookup: both are filters of single rows.

Pure: DataFrames in, DataFrames out; materialising and keeping the parts is the caller's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from . import touching as touching_rules
from .as_of import AsOfInputs, as_of
from .columns import normalize_namespace

#: What identity resolution reads of each record table (the exact step of a lookup keeps these columns).
RECORD_COLUMNS = touching_rules.RECORD_COLUMNS


def identity_hash(namespace: Column, id_: Column) -> Column:
    """The 64-bit hash of an identity (``namespace`` already normalised)."""
    return F.xxhash64(namespace, id_)


def list_hash(identity_map: Column) -> Column:
    """The 64-bit hash of an identity list, as stored (equal maps in equal order give equal hashes)."""
    return F.xxhash64(F.map_entries(identity_map))


def _end_hash(side: str) -> Column:
    return identity_hash(normalize_namespace(F.col(f"{side}_namespace")), F.col(f"{side}_id"))


@dataclass(frozen=True)
class TableIndex:
    """The index of one input table (or of some of its data files).

    Attributes:
        rows: the rows with the columns identity resolution reads and ``_list`` (links: ``_src`` and ``_dst``).
        entries: ``_identity, _list``, distinct (None for links).
    """

    rows: DataFrame
    entries: DataFrame | None


@dataclass(frozen=True)
class InputsIndex:
    """The index of each input table (None: the table is absent)."""

    fragments: TableIndex | None = None
    events: TableIndex | None = None
    links: TableIndex | None = None
    regions: TableIndex | None = None


def index_records(records: DataFrame, table: str) -> TableIndex:
    """Index a record table (``table``: ``fragments``, ``events`` or ``regions``): its narrow rows with ``_list``,
    and the distinct ``_identity, _list`` pairs of their identity lists."""
    rows = records.select(*RECORD_COLUMNS[table], list_hash(F.col("identityMap")).alias("_list"))
    by_namespace = rows.select("_list", F.explode("identityMap").alias("_namespace", "_ids"))
    exploded = by_namespace.select(
        "_list", normalize_namespace(F.col("_namespace")).alias("_namespace"), F.explode("_ids.id").alias("_id")
    )
    entries = exploded.select(identity_hash(F.col("_namespace"), F.col("_id")).alias("_identity"), "_list")
    return TableIndex(rows=rows, entries=entries.distinct())


def index_links(links: DataFrame) -> TableIndex:
    """Index ``identity_graph``: the columns identity resolution reads, with the hashes of the two ends."""
    ends = (_end_hash("src").alias("_src"), _end_hash("dst").alias("_dst"))
    return TableIndex(rows=links.select(*touching_rules.LINK_COLUMNS, *ends), entries=None)


def index_inputs(
    fragments: DataFrame | None, events: DataFrame | None, links: DataFrame | None, regions: DataFrame | None
) -> InputsIndex:
    """The index of each input table as read (None stays None)."""
    return InputsIndex(
        fragments=None if fragments is None else index_records(fragments, "fragments"),
        events=None if events is None else index_records(events, "events"),
        links=None if links is None else index_links(links),
        regions=None if regions is None else index_records(regions, "regions"),
    )


def _hashes(identities: DataFrame) -> DataFrame:
    return F.broadcast(identities.select(identity_hash(F.col("namespace"), F.col("id")).alias("_identity")).distinct())


def lists_holding(index: TableIndex, identities: DataFrame) -> DataFrame:
    """``_list`` of every identity list of a record table's index that holds one of ``identities`` (step 2)."""
    if index.entries is None:
        raise ValueError("a links index has no identity lists")
    return index.entries.join(_hashes(identities), on="_identity", how="left_semi").select("_list").distinct()


def holding(records: DataFrame, index: TableIndex, identities: DataFrame) -> DataFrame:
    """The rows of ``records`` (any columns of the indexed table) that may hold one of ``identities``: the rows
    :func:`audience_activation.touching.holding` gives (every row that does), found through the lists in the index
    instead of by exploding ``records``, and rarely a row that does not (its list's hash equals a found list's)."""
    lists = F.broadcast(lists_holding(index, identities))
    return records.join(lists, on=list_hash(F.col("identityMap")) == F.col("_list"), how="left_semi")


def _candidate_links(index: TableIndex, identities: DataFrame) -> DataFrame:
    """The links with a looked-up hash at either end, each once (a link matching at both ends is in the first
    part only)."""
    hashes = _hashes(identities)
    at_src = index.rows.join(hashes, on=F.col("_src") == F.col("_identity"), how="left_semi")
    at_dst_only = index.rows.join(hashes, on=F.col("_dst") == F.col("_identity"), how="left_semi").join(
        hashes, on=F.col("_src") == F.col("_identity"), how="left_anti"
    )
    return at_src.unionByName(at_dst_only).drop("_src", "_dst")


def touching(index: InputsIndex, identities: DataFrame, evaluation_time: dt.datetime) -> AsOfInputs:
    """The records and links that hold one of ``identities``, as of ``T`` (steps in the module docstring): equal
    to :func:`audience_activation.touching.touching` of the inputs as of ``T``."""

    def candidates(table: TableIndex | None) -> DataFrame | None:
        if table is None:
            return None
        lists = F.broadcast(lists_holding(table, identities))
        return table.rows.join(lists, on="_list", how="left_semi").drop("_list")

    links = None if index.links is None else _candidate_links(index.links, identities)
    fragments, events, regions = (candidates(t) for t in (index.fragments, index.events, index.regions))
    at_t = as_of(fragments, events, links, regions, evaluation_time)
    return touching_rules.touching(at_t, identities)
