"""The persons a set of new input rows can change, resolved exactly without resolving the whole graph.

The streaming job (docs/streaming.md) evaluates, per micro-batch, only the persons its new rows can affect. Its
first step is identity resolution on a part of the inputs that gives, for those persons, exactly the
``identity_clusters`` rows a resolution of every input would give. The rules, in the order
:func:`resolve_affected` applies them:

1. **Seeds.** The valid identities of the new rows that can change the identity graph (:func:`split_seeds`;
   all of them, :func:`seed_identities`, without the split), and the identities of rule 7 that the previous
   clusters do not hold. Rule 7 is applied first.
2. **Previous persons.** Every identity of a person (in the previous ``identity_clusters``) that holds an
   affected identity is affected too: new links can split a person (a new hub, an eviction), and its other
   identities must then be resolved again.
3. **Neighbours.** Every identity that shares a record or a link with an affected identity is affected too,
   with its previous person (rule 2). A neighbour outside the previous persons is usually a hub (an identity
   whose links the guardrail drops, so it is a person of its own): without it in the set, its links outside
   the part are missing, it looks like no hub, and the closure (rule 6) would need a second resolution round
   to find it. Adding the neighbours costs one lookup of the inputs instead; the result is the same, since any
   closed set that holds the seeds gives the exact persons. Usually every neighbour is in the previous persons
   already: the set does not grow, and the rows that lookup found are the first round's part (rule 4) as they
   are — the same identities touch the same rows, so the inputs are not looked up again.
4. **The part of the inputs.** The records and links that touch an affected identity
   (:func:`audience_activation.touching.touching`, or the same rows through the running stream's identity index,
   :mod:`audience_activation.input_index`). Every
   link, co-occurrence and crowded record of an affected identity is in it, so an affected identity's
   neighbour count (hub guardrail) is exact, and so is every rule of a component made of affected identities
   only (unique-namespace replay, size limit, person id).
5. **Resolution** of that part with :func:`audience_activation.identity.resolve_identities`, unchanged.
6. **Closure.** A connected component of the part (over the links kept by the hub guardrail, before the
   per-component rules) that holds an affected identity and an identity outside the set may be incomplete:
   the outside identity's other links are not in the part, and its hub status may be under-counted. The
   per-component rules (unique-namespace replay, size limit) read the whole component, so its outside
   identities become affected and steps 2, 4-6 repeat. When no such component remains, every component that
   holds an affected identity is a component of the whole input: a link touching an affected identity is in
   the part, and a neighbour outside the set would have been added. Hub counts only grow with more data, so
   an identity that is a hub in the part is one in the whole input; one that is not yet may keep links it
   should drop, which makes its component reach outside the set and is found here. The components' persons
   (every rule applied to complete links) are then exact. The set only grows, so the loop ends; a graph
   usually closes in one or two rounds.

7. **Identities whose persons cannot change** (:func:`split_seeds`). A new fragment or event with fewer than
   two linking identities (or any record when co-occurrence links are off), and any ``region_information`` row,
   creates no link and can make no hub: it can only add an identity. When the previous ``identity_clusters``
   already hold its identities, their persons are exactly as before, unless a changing row reaches them — and
   then the closure holds their whole previous persons (rule 2). So those persons are revisited (their profiles,
   segments and activations are recomputed) with their previous rows, and are not resolved again. Their previous
   rows and the seeds' previous persons (rule 2) are found together: one scan of the previous
   ``identity_clusters`` for the rows of both kinds of identity, one for every row of their persons. Most events
   carry one identity, so most persons a micro-batch revisits take this path. Their hub and eviction quarantine
   rows are not repeated: nothing about them changed.

8. **Known hubs.** A hub stays a hub while the inputs only gain rows and ``T`` only moves forward: an identity's
   distinct neighbours and crowded records only grow. So the hubs an earlier resolution found (a hub of a part is
   a hub of the whole input, rule 6) can be handed on (``known_hubs``; any subset of the hubs will do, an unknown
   one is found as before). A neighbour known to be a hub is not added to the set (rule 3): resolution counts it
   a hub whatever its count in the part (:func:`audience_activation.identity.find_hubs`), so its links are
   dropped as in a resolution of every input, without its rows being looked up. A hub is a person of its own,
   unchanged unless a new row holds it (then it is a seed, or revisited by rule 7). Its hub quarantine row is
   then not repeated. (In a large micro-batch one such neighbour had cost a second lookup of every input and a
   second round.)

9. **Settled persons** (:mod:`audience_activation.settled`). A new fragment, event or link whose linking
   identities all belong to one *settled* person of the previous clusters (a person a resolution found as a whole
   component, left whole by the per-component rules, whose identities are far enough from the hub limit) only
   re-states its person's links: it changes no person, so it revisits its person (rule 7) instead of seeding a
   resolution. A running stream keeps the settled persons its resolutions found and hands them on like the
   known hubs (rule 8); every resolution replaces the facts of the persons it resolved.

The part holds exactly the rows that touch an affected identity (links: a link touching two comes twice,
and resolution de-duplicates explicit links); rows touching none would be harmless anyway: they would be
resolved into persons that hold no affected identity and dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .as_of import TIME_COLUMNS, AsOfInputs, first_capture
from .as_of import as_of as inputs_as_of
from .columns import timestamp_literal
from .config import IdentitySettings, NamespacesConfig
from .identity import linking_keys, resolve_identities
from .identity_entries import link_entries, record_entries, valid_identities
from .identity_rules import GRAPH_SIZE_EVICTION, HUB_IDENTITY
from .namespaces import NamespaceLookup
from .schemas import EXPERIENCE_EVENTS, IDENTITY_GRAPH, PROFILE_FRAGMENTS, REGION_INFORMATION
from .settled import restating, settled_after
from .touching import touching

#: A lineage barrier (see :class:`audience_activation.pipeline.Barrier`).
Checkpoint = Callable[[DataFrame], DataFrame]
#: The rows of the inputs as of ``T`` that touch some identities (``namespace, id``), as :func:`touching` gives.
Lookup = Callable[[DataFrame], AsOfInputs]

#: Give up after this many closure rounds: each adds at least one identity, and real graphs close in one or two.
MAX_ROUNDS = 50

_KEY = ["namespace", "id"]
_TABLES = {"fragments": PROFILE_FRAGMENTS, "events": EXPERIENCE_EVENTS, "links": IDENTITY_GRAPH}
#: The columns of ``identity_clusters``.
CLUSTER_COLUMNS = ("namespace", "id", "person_id", "graph_size")


@dataclass(frozen=True)
class Affected:
    """Identity resolution for the persons new rows can change.

    Attributes:
        identities: ``namespace, id`` of every affected identity: the closed set, and the identities of the
            persons revisited unchanged (rule 7).
        clusters: ``identity_clusters`` rows of the affected identities (``namespace, id, person_id,
            graph_size``), equal to what a resolution of every input gives for them.
        previous_persons: ``person_id`` of every previous person that held an affected identity (those whose
            membership and activations the micro-batch revisits, including persons that no longer exist).
        previous_clusters: the previous ``identity_clusters`` rows of those persons (found on the way; None
            without previous clusters).
        quarantine: the hub and graph-size eviction quarantine rows of the identities resolved again
            (``source_table, namespace, id, row_key, reason``).
        rounds: closure rounds run (0: nothing needed resolving).
        hubs: ``namespace, id`` of the hubs of the last round's part (the known hubs it touches among them): hubs
            of the whole input too (rule 8).
        settled: ``namespace, id, person_id`` of the identities of the settled persons after this resolution
            (rule 9): the ``settled`` handed in without the persons resolved again, plus those of the resolved
            persons that are settled; None when settled persons are not tracked.
        revisited: ``person_id`` of the previous persons revisited unchanged (rule 7): their ``clusters`` rows are
            their previous rows (same identities, same person id); None when there is none.
    """

    identities: DataFrame
    clusters: DataFrame
    previous_persons: DataFrame
    previous_clusters: DataFrame | None
    quarantine: DataFrame
    rounds: int
    hubs: DataFrame
    settled: DataFrame | None = None
    revisited: DataFrame | None = None


@dataclass(frozen=True)
class _Around:
    """An identity set closed under rule 2, with what closing it found.

    Attributes:
        identities: ``namespace, id``: the identities and every identity of their previous persons.
        persons: ``person_id`` of the previous persons that hold one of them.
        rows: the previous ``identity_clusters`` rows of those persons (None without previous clusters).
    """

    identities: DataFrame
    persons: DataFrame
    rows: DataFrame | None


def new_rows(
    before: AsOfInputs, added: AsOfInputs, since: dt.datetime | None, evaluation_time: dt.datetime
) -> AsOfInputs:
    """The rows a micro-batch at ``T`` sees for the first time, per input table.

    Two ways a row becomes visible: its data file was added since the input versions the previous run read
    (``added``, :meth:`DeltaStorage.read_changes`; kept when it existed at ``T``), or it was already there
    with a time after the previous evaluation time ``since`` that ``T`` has now passed (a fragment ingested
    with a future ``ingested_at``, a link whose ``last_seen_at`` was ahead). The two are disjoint: the second
    is read from the inputs at the previous run's versions. Rows of removed files are not new rows; the caller
    seeds the affected persons from them too. ``undated`` holds the added rows without a time
    (``missing_timestamp`` quarantine rows). Without a previous run (``since`` None) every added row is new.

    Args:
        before: the inputs at the versions the previous run read, as of ``T``
            (:func:`audience_activation.as_of.as_of`).
        added: the rows of the files added since, per table, as read (None: no added file, or absent).
        since: the previous run's evaluation time, or None.
        evaluation_time: ``T``.
    """
    at = inputs_as_of(added.fragments, added.events, added.links, added.regions, evaluation_time)
    if since is None:
        return at
    after = timestamp_literal(since)

    def union(added_rows: DataFrame | None, old: DataFrame | None, time: Column) -> DataFrame | None:
        if old is None:
            return added_rows
        late = old.where(time > after)
        return late if added_rows is None else added_rows.unionByName(late, allowMissingColumns=True)

    tables = ("fragments", "events", "links")
    parts = {
        name: union(getattr(at, name), getattr(before, name), F.col(TIME_COLUMNS[_TABLES[name]])) for name in tables
    }
    return AsOfInputs(regions=union(at.regions, before.regions, first_capture()), undated=at.undated, **parts)


def seed_identities(new_rows: AsOfInputs) -> DataFrame:
    """Every distinct valid ``namespace, id`` of the new rows (any table; links' two ends)."""
    tables = (new_rows.fragments, new_rows.events, new_rows.regions)
    records = record_entries(new_rows) if any(t is not None for t in tables) else None
    links = None if new_rows.links is None else link_entries(new_rows.links)
    if records is None:
        if links is None:
            raise ValueError("no new rows to seed from")
        return _link_ends(links).distinct()
    return valid_identities(records, links)


def _link_ends(links: DataFrame) -> DataFrame:
    """The valid ends of :func:`~audience_activation.identity_entries.link_entries` rows, as ``namespace, id``."""
    return reduce(
        DataFrame.unionByName,
        [
            links.where(F.col(f"{side}_reason").isNull()).select(
                F.col(f"{side}_ns").alias("namespace"), F.col(f"{side}_id").alias("id")
            )
            for side in ("src", "dst")
        ],
    )


def split_seeds(
    new_rows: AsOfInputs,
    namespaces: NamespacesConfig,
    settings: IdentitySettings,
    checkpoint: Checkpoint | None = None,
    settled: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame]:
    """The valid identities of ``new_rows`` (those of :func:`seed_identities`) in two sets: ``(changing,
    adding)``.

    ``changing``: the identities of the rows that can change the identity graph — links, and fragments or events
    with two or more linking identities when co-occurrence links are on, unless those (a link's two ends) all
    belong to one of the ``settled`` persons (rule 9, :func:`audience_activation.settled.restating`).
    ``adding``: the identities of the other rows, which can only add an identity or re-state a settled person's
    links (rule 7); an identity of both kinds of row is in ``changing`` only.

    Both come from one pass: each valid identity with a flag (its row can change the graph), one row per identity
    with the flags' OR. ``checkpoint`` materialises that result, so the two sets are light passes over it
    instead of two validations of every new row's identities.

    Example:
        >>> changing, adding = split_seeds(fresh, config.namespaces, config.job.identity)  # doctest: +SKIP
    """
    tables = (new_rows.fragments, new_rows.events, new_rows.regions)
    if not any(t is not None for t in tables) and new_rows.links is None:
        raise ValueError("no new rows to seed from")
    lookup = NamespaceLookup(namespaces)
    # Each row with ``_linking`` (the identities it links, as sorted node keys) and ``_changes``.
    parts = []
    if any(t is not None for t in tables):
        records = record_entries(new_rows)
        if settings.cooccurrence_links:
            linking = linking_keys(F.col("entries"), lookup)
            changes = (F.col("source_table") != REGION_INFORMATION) & (F.size(linking) >= 2)
        else:
            linking, changes = F.lit(None).cast("array<string>"), F.lit(False)
        ids = _valid_ids(F.col("entries"))
        parts.append(records.select(linking.alias("_linking"), changes.alias("_changes"), ids.alias("_ids")))
    if new_rows.links is not None:
        parts.append(_link_rows(link_entries(new_rows.links), lookup))
    rows = reduce(DataFrame.unionByName, parts)
    if settled is not None:
        # Rule 9: the distinct lists of the rows that would change the graph are looked up, then the rows take
        # their answer (materialised: both results are small, and a barrier lets the join broadcast them).
        candidates = rows.where("_changes").select("_linking").distinct()
        if checkpoint is not None:
            candidates = checkpoint(candidates)
        restated = restating(candidates, settled).withColumn("_restates", F.lit(True))
        if checkpoint is not None:
            restated = checkpoint(restated)
        rows = rows.join(restated, on="_linking", how="left").withColumn(
            "_changes", F.col("_changes") & F.col("_restates").isNull()
        )
    flagged = rows.select("_changes", F.explode("_ids").alias("e")).select(
        F.col("e.namespace").alias("namespace"), F.col("e.id").alias("id"), "_changes"
    )
    per_identity = flagged.groupBy(*_KEY).agg(F.max("_changes").alias("_changes"))
    if checkpoint is not None:
        per_identity = checkpoint(per_identity)
    changing = per_identity.where("_changes").select(*_KEY)
    adding = per_identity.where(~F.col("_changes")).select(*_KEY)
    return changing, adding


def _link_rows(links: DataFrame, lookup: NamespaceLookup) -> DataFrame:
    """:func:`~audience_activation.identity_entries.link_entries` rows as :func:`split_seeds` flags them, read off the
    link's two ends as a record's entries: ``_ids`` (the valid ends), ``_changes`` (always: a link can change the
    graph) and ``_linking`` (:func:`~audience_activation.identity.linking_keys` of the ends when they are two
    different valid identities of linking namespaces: the pair it adds, which rule 9 can find re-stated;
    otherwise null, and the link is never taken for re-stated)."""
    entries = F.array(
        *(
            F.struct(
                F.col(f"{side}_ns").alias("namespace"),
                F.col(f"{side}_id").alias("id"),
                F.col(f"{side}_reason").alias("reason"),
            )
            for side in ("src", "dst")
        )
    )
    pair = linking_keys(entries, lookup)
    return links.select(
        F.when(F.size(pair) == 2, pair).alias("_linking"),
        F.lit(True).alias("_changes"),
        _valid_ids(entries).alias("_ids"),
    )


def _valid_ids(entries: Column) -> Column:
    """``namespace, id`` structs of the valid ones (no ``reason``) among ``entries``."""
    valid = F.filter(entries, lambda e: e["reason"].isNull())
    return F.transform(valid, lambda e: F.struct(e["namespace"].alias("namespace"), e["id"].alias("id")))


def _with_previous_persons(identities: DataFrame, previous: DataFrame | None, checkpoint: Checkpoint) -> _Around:
    """``identities`` and every identity of the previous persons that hold one of them (rule 2). The persons and
    their rows are materialised: a barrier that measures them lets later joins broadcast them, and the closure
    keeps them: ``identity_clusters`` has one row per identity, so an identity added here belongs to one of the
    persons found, and the persons holding an identity of the closed set are exactly those."""
    if previous is None:
        return _Around(identities, identities.sparkSession.createDataFrame([], "person_id string"), None)
    identities = checkpoint(identities)
    persons = checkpoint(previous.join(identities, on=_KEY, how="left_semi").select("person_id").distinct())
    rows = checkpoint(previous.join(persons, on="person_id", how="left_semi").select(*CLUSTER_COLUMNS))
    return _Around(identities.unionByName(rows.select(*_KEY)).distinct(), persons, rows)


@dataclass(frozen=True)
class _Found:
    """The previous ``identity_clusters`` rows :func:`resolve_affected` starts from, found in two scans (``rows``
    materialised; the others are light passes over materialised results, not stored again).

    Attributes:
        known: the rows of the added identities (rule 7).
        persons: ``person_id`` of the seeds' previous persons (rule 2).
        rows: every row of the persons of both (the seeds' and the added identities').
    """

    known: DataFrame
    persons: DataFrame
    rows: DataFrame

    def around(self, seeds: DataFrame) -> _Around:
        """``seeds`` closed under rule 2, as :func:`_with_previous_persons` gives it, for seeds whose previous
        persons are :attr:`persons` (the seeds these rows were found for, and identities without a row)."""
        theirs = self.rows.join(self.persons, on="person_id", how="left_semi").select(*CLUSTER_COLUMNS)
        return _Around(seeds.unionByName(theirs.select(*_KEY)).distinct(), self.persons, theirs)


def _previous_rows(seeds: DataFrame, adding: DataFrame, previous: DataFrame, checkpoint: Checkpoint) -> _Found:
    """The previous rows of ``adding`` (rule 7) and of ``seeds`` with their persons (rule 2), in two scans of
    ``previous`` instead of four: one finds the rows of both kinds of identity (an identity can be of both), the
    other every row of their persons."""
    # Materialised: a union loses its parts' broadcast marks, and the barrier measures the whole again.
    wanted = checkpoint(
        adding.withColumn("_adding", F.lit(True)).unionByName(seeds.withColumn("_adding", F.lit(False)))
    )
    matched = checkpoint(previous.join(wanted, on=_KEY, how="inner").select(*CLUSTER_COLUMNS, "_adding"))
    # The parts of the two materialised results are not materialised again: each is a light pass over one.
    persons = matched.where(~F.col("_adding")).select("person_id").distinct()
    every = matched.select("person_id").distinct()
    rows = checkpoint(previous.join(every, on="person_id", how="left_semi").select(*CLUSTER_COLUMNS))
    known = matched.where("_adding").select(*CLUSTER_COLUMNS)
    return _Found(known, persons, rows)


def resolve_affected(
    as_of: AsOfInputs,
    seeds: DataFrame,
    previous_clusters: DataFrame | None,
    namespaces: NamespacesConfig,
    settings: IdentitySettings,
    checkpoint: Checkpoint,
    lookup: Lookup | None = None,
    adding: DataFrame | None = None,
    known_hubs: DataFrame | None = None,
    settled: DataFrame | None = None,
) -> Affected:
    """Resolve the persons that ``seeds`` can change (rules in the module docstring).

    Args:
        as_of: every input as of ``T`` (the old rows and the new).
        seeds: ``namespace, id`` of the new rows (:func:`seed_identities`, or the ``changing`` part of
            :func:`split_seeds`).
        previous_clusters: ``identity_clusters`` of the previous run, or None before the first.
        namespaces: namespace types, uniqueness and priorities.
        settings: identity limits and the co-occurrence switch.
        checkpoint: lineage barrier (the affected set and each round's resolution are materialised).
        lookup: finds the rows of ``as_of`` that touch some identities (default :func:`touching` of ``as_of``;
            the streaming job passes :func:`audience_activation.input_index.touching` over its kept index).
        adding: ``namespace, id`` of rows that can only add an identity (the ``adding`` part of
            :func:`split_seeds`, and any identity whose person is to be revisited without a change of the
            inputs): those the previous clusters hold are revisited with their previous persons (rule 7), the
            others are seeds.
        known_hubs: ``namespace, id`` of identities known to be hubs of ``as_of`` (rule 8), or None.
        settled: ``namespace, id, person_id`` of the settled persons of ``previous_clusters`` (rule 9; the
            caller splits the seeds with them, :func:`split_seeds`), empty when none is known; None: settled
            persons are not tracked (:attr:`Affected.settled` is None).

    Raises:
        RuntimeError: the closure did not end within :data:`MAX_ROUNDS` rounds (a bug, not a big graph).
    """
    find = lookup or (lambda ids: touching(as_of, ids))
    hubs = None if known_hubs is None else checkpoint(known_hubs.select(*_KEY).distinct())

    def closure(seeds: DataFrame, previous: DataFrame | None, around: _Around | None = None) -> Affected:
        return _closure(seeds, previous, namespaces, settings, checkpoint, find, hubs, around, settled)

    seeds = seeds.select(*_KEY)
    if adding is None:
        return closure(seeds, previous_clusters)
    if previous_clusters is None:
        return closure(seeds.unionByName(adding.select(*_KEY)), None)
    # Rule 7: the added identities the previous clusters hold keep their persons; the others are seeds.
    adding = checkpoint(adding.select(*_KEY).distinct())
    found = _previous_rows(checkpoint(seeds.distinct()), adding, previous_clusters, checkpoint)
    known = found.known
    seeds = checkpoint(seeds.unionByName(adding.join(known.select(*_KEY), on=_KEY, how="left_anti")).distinct())
    if seeds.isEmpty():  # nothing to resolve: every new row only repeats identities
        spark = seeds.sparkSession
        no_clusters = spark.createDataFrame([], "namespace string, id string, person_id string, graph_size int")
        resolved = Affected(
            identities=seeds,
            clusters=no_clusters,
            previous_persons=spark.createDataFrame([], "person_id string"),
            previous_clusters=no_clusters,
            quarantine=spark.createDataFrame(
                [], "source_table string, namespace string, id string, row_key string, reason string"
            ),
            rounds=0,
            hubs=spark.createDataFrame([], "namespace string, id string"),
            settled=settled,
        )
    else:
        # The seeds' previous persons were found with the added identities' (the added seeds have none).
        resolved = closure(seeds, previous_clusters, found.around(seeds))
    # Their persons: none of their identities is in the closed set (it holds whole previous persons, rule 2).
    persons = checkpoint(known.join(resolved.identities, on=_KEY, how="left_anti").select("person_id").distinct())
    rows = checkpoint(found.rows.join(persons, on="person_id", how="left_semi").select(*CLUSTER_COLUMNS))
    # Materialised like the closure's own results: a barrier measures them, so later joins can broadcast them.
    return Affected(
        identities=checkpoint(resolved.identities.unionByName(rows.select(*_KEY))),
        clusters=checkpoint(resolved.clusters.select(*CLUSTER_COLUMNS).unionByName(rows)),
        previous_persons=checkpoint(resolved.previous_persons.unionByName(persons)),
        # (The closure found its persons' rows: with previous clusters it always does; ``rows`` alone is the
        # guard a type checker asks for.) The two sets of persons are disjoint, rule 2.
        previous_clusters=checkpoint(
            rows if resolved.previous_clusters is None else resolved.previous_clusters.unionByName(rows)
        ),
        quarantine=resolved.quarantine,
        rounds=resolved.rounds,
        hubs=resolved.hubs,
        settled=resolved.settled,
        revisited=persons,
    )


def _closure(
    seeds: DataFrame,
    previous_clusters: DataFrame | None,
    namespaces: NamespacesConfig,
    settings: IdentitySettings,
    checkpoint: Checkpoint,
    find: Lookup,
    known_hubs: DataFrame | None,
    around: _Around | None = None,
    settled: DataFrame | None = None,
) -> Affected:
    """Rules 2-6, 8 and 9: the closed set of identities around ``seeds`` and its exact resolution (``around``:
    rule 2 applied to ``seeds`` already), and ``settled`` with the resolved persons' facts replaced."""
    if around is None:
        around = _with_previous_persons(seeds.distinct(), previous_clusters, checkpoint)
    start = checkpoint(around.identities)
    # Rule 3: the neighbours of the set from the start (one scan of the part, far cheaper than a second round).
    # The part is materialised: resolution reads each table of it more than once.
    first = find(start).map(checkpoint)
    neighbours = seed_identities(first).join(start, on=_KEY, how="left_anti")
    if known_hubs is not None:  # rule 8: a known hub is resolved as a hub without its rows
        neighbours = neighbours.join(F.broadcast(known_hubs), on=_KEY, how="left_anti")
    grown = checkpoint(neighbours.distinct())
    # Usually the neighbours are in the previous persons already: the set did not grow, and the rows found for
    # the neighbours are the first round's part (the same identities touch the same rows).
    identities: DataFrame = start
    part: AsOfInputs | None = first
    if not grown.isEmpty():
        around = _with_previous_persons(start.unionByName(grown).distinct(), previous_clusters, checkpoint)
        identities, part = checkpoint(around.identities), None
    for rounds in range(1, MAX_ROUNDS + 1):
        if part is None:
            part = find(identities).map(checkpoint)
        resolved = resolve_identities(part, namespaces, settings, checkpoint, known_hubs)
        if resolved.components is None or resolved.hubs is None:  # pragma: no cover - it always returns both
            raise RuntimeError("identity resolution did not return its components and hubs")
        nodes = checkpoint(resolved.components)
        theirs = nodes.join(identities, on=_KEY, how="left_semi").select("component").distinct()
        outside = nodes.join(theirs, on="component", how="left_semi").join(identities, on=_KEY, how="left_anti")
        if outside.isEmpty():  # the convergence test of an iterative algorithm (like connected components)
            clusters = checkpoint(resolved.clusters.join(identities, on=_KEY, how="left_semi"))
            quarantine = resolved.quarantine.where(F.col("reason").isin(HUB_IDENTITY, GRAPH_SIZE_EVICTION)).join(
                identities, on=_KEY, how="left_semi"
            )
            return Affected(
                identities=identities,
                clusters=clusters,
                # The set is closed under rule 2, so the previous persons of its identities are those the last
                # closing found (one cluster row per identity: each identity it added is one of theirs).
                previous_persons=around.persons,
                previous_clusters=around.rows,
                quarantine=quarantine,
                rounds=rounds,
                hubs=resolved.hubs,
                settled=settled_after(settled, identities, resolved, clusters, settings, checkpoint),
            )
        added = outside.select(*_KEY)
        around = _with_previous_persons(identities.unionByName(added).distinct(), previous_clusters, checkpoint)
        identities, part = checkpoint(around.identities), None
    raise RuntimeError(f"the affected persons did not close within {MAX_ROUNDS} rounds")
