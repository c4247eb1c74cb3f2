"""The hubs and the settled persons a running stream has found, handed to its next micro-batch's identity
resolution (rules 8 and 9 of :mod:`audience_activation.affected`; docs/streaming.md, "Known hubs" and "Settled
persons").

Both are facts about the identity graph that stay true while the inputs only gain rows and ``T`` moves
forward, and both may be forgotten at any time (any subset gives the same results). The hubs are few and kept
on the driver; the settled persons (``namespace, id, person_id`` of their identities, as many as the persons
the stream resolved) are kept in the executors' block stores (a local checkpoint, serialized, spilling to
disk). Rules, in the order a micro-batch meets them:

1. **Handed on** (:meth:`KnownHubs.for_micro_batch`) only while they are sure to be hubs of the inputs the
   micro-batch reads at its ``T``: it continues from the run that kept them (the newest completed run at or
   before its ``T``), with the same identity settings and namespaces, every input that run read is still there,
   and no row of an input that links identities (``region_information``'s link nothing) was removed since that
   run's versions (the micro-batch's changes hold no removed row once the rows a rewrite kept are set aside,
   :func:`audience_activation.columns.net_rows`: rows were only added, and ``T`` never goes back, so an
   identity's neighbours only grew; a compaction keeps them). Otherwise they are forgotten.
   The settled persons are handed on under the same conditions (:meth:`KnownHubs.settled`); when they are
   forgotten, or none is kept yet, the micro-batch gets an empty set and starts tracking them.
2. **Found** (:meth:`KnownHubs.found`, :meth:`KnownHubs.found_settled`): the hubs the micro-batch's own
   resolution found (``MicroBatchResults.hubs``; hubs of a part of the inputs are hubs of the whole), read
   before it commits, and the settled persons after it (``MicroBatchResults.settled``: the ones handed to it
   without the persons it resolved, plus the settled ones among those), materialised before it commits.
3. **Kept** (:meth:`KnownHubs.remember`) once the micro-batch completed: the hubs handed to it and those it
   found, with its run id; at most :data:`MAX_KNOWN_HUBS` (any subset of the hubs will do: an identity not
   known is counted as before); and its settled persons, in place of the earlier ones (whose blocks are
   released). A micro-batch that fails keeps nothing new (and stops the stream); its settled persons are
   released by the next offer or :meth:`KnownHubs.close`.

They live in the stream's driver only: never part of the exactly-once state, a restarted stream starts with
none (its first micro-batch finds them again).
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame, SparkSession

from ..config import AppConfig
from ..pipeline.micro_batch import Changes
from ..runlog import PreviousRun
from ..storage.files import LocalCheckpoint

#: Hubs kept at most (sorted, the first ones). A hub has more distinct neighbours than the guardrail allows,
#: so a graph holds few of them; the bound keeps the driver's copy small whatever the graph.
MAX_KNOWN_HUBS = 10_000

Identity = tuple[str, str]

_SETTLED_SCHEMA = "namespace string, id string, person_id string"


def _removes_rows(changes: Changes) -> bool:
    """Whether an input that can link identities lost a row since the previous run's versions (one small query per
    table that lost a data file). ``region_information`` rows link nothing and make no hub: their removal leaves
    every hub."""
    tables = (changes.fragments, changes.events, changes.links)
    return any(change.lost_rows() for change in tables if change is not None)


def _settings_of(config: AppConfig) -> str:
    """What decides which identities are hubs, besides the rows: the identity settings and the namespaces."""
    return config.job.identity.model_dump_json() + config.namespaces.model_dump_json()


class KnownHubs:
    """The hubs and settled persons kept between a running stream's micro-batches (rules in the module
    docstring)."""

    def __init__(self) -> None:
        self._run_id: str | None = None
        self._settings = ""
        self._hubs: tuple[Identity, ...] = ()
        self._handed: tuple[Identity, ...] = ()
        self._settled: tuple[DataFrame, LocalCheckpoint] | None = None  # kept, with the blocks that hold it
        self._pending: tuple[DataFrame, LocalCheckpoint] | None = None  # found, not yet remembered
        self._handed_settled: DataFrame | None = None

    def for_micro_batch(
        self,
        spark: SparkSession,
        config: AppConfig,
        previous: PreviousRun,
        versions: Mapping[str, int | None],
        changes: Changes,
    ) -> DataFrame | None:
        """The hubs (``namespace, id``) to hand to the micro-batch that continues from ``previous``, reading the
        inputs at ``versions`` (None: the table is gone) with ``changes`` since, or None (none kept, or they may
        no longer be hubs: then forgotten). Rule 1."""
        self._handed, self._handed_settled = (), spark.createDataFrame([], _SETTLED_SCHEMA)
        self._release_pending()
        if not self._hubs and self._settled is None:
            return None
        gone = any(versions.get(name) is None for name in previous.input_versions)
        usable = self._run_id == previous.run_id and self._settings == _settings_of(config)
        if gone or not usable or _removes_rows(changes):
            self._hubs, self._run_id = (), None
            self._release_settled()
            return None
        if self._settled is not None:
            self._handed_settled = self._settled[0]
        if not self._hubs:
            return None
        self._handed = self._hubs
        return spark.createDataFrame(list(self._hubs), "namespace string, id string")

    def settled(self) -> DataFrame | None:
        """The settled persons (``namespace, id, person_id``) to hand to the micro-batch last offered its hubs
        (:meth:`for_micro_batch`): the kept ones when they still hold, else none (empty: tracking starts again);
        None before any offer."""
        return self._handed_settled

    def found_settled(self, settled: DataFrame | None) -> None:
        """Materialise the settled persons after a micro-batch (``MicroBatchResults.settled``), before it commits
        (its barrier's blocks are released when it ends); kept by :meth:`remember` (rule 2)."""
        self._release_pending()
        if settled is not None:
            keeper = LocalCheckpoint(mark_broadcast=False)  # kept across micro-batches: no hint to silence
            self._pending = (keeper(settled), keeper)

    @staticmethod
    def found(hubs: DataFrame | None) -> list[Identity]:
        """The hubs a micro-batch's identity resolution found (:attr:`MicroBatchResults.hubs`), at most
        :data:`MAX_KNOWN_HUBS` (rule 2)."""
        if hubs is None:
            return []
        rows = hubs.orderBy("namespace", "id").limit(MAX_KNOWN_HUBS).collect()
        return [(row.namespace, row.id) for row in rows]

    def remember(self, run_id: str, config: AppConfig, found: list[Identity]) -> None:
        """Keep the hubs handed to the completed micro-batch ``run_id`` and those it ``found`` (rule 3)."""
        self._hubs = tuple(sorted(set(self._handed) | set(found))[:MAX_KNOWN_HUBS])
        self._run_id, self._settings, self._handed = run_id, _settings_of(config), ()
        # The earlier settled persons describe the clusters before this micro-batch: replaced, or dropped.
        self._release_settled()
        self._settled, self._pending, self._handed_settled = self._pending, None, None

    def close(self) -> None:
        """Release the settled persons' blocks (kept and pending)."""
        self._release_pending()
        self._release_settled()

    def _release_pending(self) -> None:
        if self._pending is not None:
            self._pending[1].cleanup()
            self._pending = None

    def _release_settled(self) -> None:
        if self._settled is not None:
            self._settled[1].cleanup()
            self._settled = None

    def __len__(self) -> int:
        return len(self._hubs)
