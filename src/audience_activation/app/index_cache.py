"""The identity index of the input tables (:mod:`audience_activation.input_index`), kept by a running stream
across its micro-batches (docs/streaming.md, "The identity index of the inputs").

Rules, per input table, in the order :meth:`InputIndexCache.update` applies them:

1. **First use**: the table is indexed at the version the micro-batch reads.
2. **Same version**: the kept index is used as it is.
3. **Appends only**: when the micro-batch reads a later version and no data file was removed since the kept one
   (:meth:`DeltaStorage.read_changes` has no removed row), the rows of the added files are indexed as a new part.
   Data files never change once written, so the parts together are the index of the version read. Not on a
   table with deletion vectors enabled (``delta.enableDeletionVectors``): a delete there can keep its file and
   mark rows deleted beside it, which a list of files does not show.
4. **Anything else** (a compaction, a delete or an overwrite removed files; an older version; a table that
   disappeared; deletion vectors) drops the table's parts; rule 1 applies again.
5. **At most** :data:`MAX_PARTS` **parts**: one more is not appended; the table is indexed whole again (one
   part, whose plan is one scan: merging the parts instead would keep every earlier part's plan).

Parts are materialised in memory, spilling to disk (``MEMORY_AND_DISK``), and released by :meth:`close`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from .. import input_index, tables
from ..config import AppConfig
from ..input_index import InputsIndex, TableIndex
from ..storage import DeltaStorage
from .context import Progress, quiet

#: Parts of one table's index at most (the whole-table part and appended ones); one more indexes the table whole.
MAX_PARTS = 8


def _index(df: DataFrame, field_name: str) -> TableIndex:
    return input_index.index_links(df) if field_name == "links" else input_index.index_records(df, field_name)


def _kept(index: TableIndex) -> TableIndex:
    """``index`` materialised (rows first: the entries are computed from the kept rows); nothing stays cached
    when that fails."""
    kept = TableIndex(
        rows=index.rows.persist(StorageLevel.MEMORY_AND_DISK),
        entries=None if index.entries is None else index.entries.persist(StorageLevel.MEMORY_AND_DISK),
    )
    try:
        kept.rows.count()
        if kept.entries is not None:
            kept.entries.count()
    except BaseException:
        _release(kept)
        raise
    return kept


def _release(index: TableIndex) -> None:
    index.rows.unpersist()
    if index.entries is not None:
        index.entries.unpersist()


@dataclass
class _Table:
    version: int
    parts: list[TableIndex] = field(default_factory=list)

    def index(self) -> TableIndex:
        rows = reduce(DataFrame.unionByName, [p.rows for p in self.parts])
        entries = [p.entries for p in self.parts if p.entries is not None]
        return TableIndex(rows=rows, entries=reduce(DataFrame.unionByName, entries) if entries else None)


class InputIndexCache:
    """The index of each input table, kept between micro-batches (rules in the module docstring)."""

    def __init__(self, store: DeltaStorage, config: AppConfig, progress: Progress = quiet) -> None:
        self._store = store
        self._config = config
        self._progress = progress
        self._tables: dict[str, _Table] = {}
        #: How many times a table was indexed whole, and how many appended parts were indexed (tests, docs).
        self.built = 0
        self.appended = 0

    def update(self, versions: dict[str, int | None]) -> InputsIndex:
        """The index of each input table at ``versions`` (the versions a micro-batch read; None: absent)."""
        found: dict[str, TableIndex | None] = {}
        for name, field_name in tables.INPUT_FIELDS.items():
            version = versions.get(name)
            found[field_name] = None if version is None else self._table(name, field_name, version).index()
            if version is None:
                self._drop(name)
        return InputsIndex(**found)

    def _table(self, name: str, field_name: str, version: int) -> _Table:
        location = self._config.job.table_location(name)
        kept = self._tables.get(name)
        if kept is not None and kept.version == version:  # rule 2
            return kept
        if kept is not None and kept.version < version and len(kept.parts) < MAX_PARTS:  # rules 3 and 5
            vectors = self._store.properties(location).get("delta.enableDeletionVectors", "false").lower() == "true"
            changes = self._store.read_changes(location, kept.version, version)
            if not vectors and not changes.lost_rows():
                self._progress(f"indexing the rows added to {name} up to version {version}")
                kept.parts.append(_kept(_index(changes.added, field_name)))
                kept.version = version
                self.appended += 1
                return kept
        self._drop(name)  # rules 4 and 5, then rule 1
        self._progress(f"indexing the identities of {name} (version {version})")
        table = _Table(version=version, parts=[_kept(_index(self._store.read(location, version).df, field_name))])
        self._tables[name] = table
        self.built += 1
        return table

    def _drop(self, name: str) -> None:
        table = self._tables.pop(name, None)
        for part in table.parts if table is not None else ():
            _release(part)

    def close(self) -> None:
        """Release every kept part."""
        for name in list(self._tables):
            self._drop(name)
