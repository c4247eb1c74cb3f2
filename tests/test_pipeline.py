"""The pure pipeline, the table registry and the typed run counts.

- :func:`pipeline.evaluate` reads and writes nothing: it runs on DataFrames built in memory and leaves the
  configured lake untouched;
- a stage called on a subset of persons gives exactly those persons' rows of the full run (the streaming job
  relies on it);
- the run counts DataFrame and :class:`RunCounts` agree with the results and render the run log's map;
- every output is conformed to its table's spec: columns in order, a missing or mistyped column refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from audience_activation import columns, demo_data, pipeline, tables
from audience_activation.config import AppConfig, TableName, load_config
from audience_activation.pipeline import Inputs, PreviousState
from audience_activation.pipeline.event_copies import COPY_KEY, split_by_copies, with_keys
from audience_activation.pipeline.micro_batch import _clusters_of
from audience_activation.runlog import ChangeKey, RunCounts
from audience_activation.storage.base import ParquetCheckpoint
from audience_activation.storage.files import LocalCheckpoint

T = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> AppConfig:
    lake = tmp_path_factory.mktemp("pipeline") / "lake"
    config = load_config(CONF)
    return config.model_copy(update={"job": config.job.with_lake_root(str(lake))})


@pytest.fixture(scope="module")
def inputs(spark: SparkSession) -> Inputs:
    generated = demo_data.generate(spark, 40, seed=7, as_of=T)
    return Inputs(
        fragments=generated.profile_fragments.cache(),
        events=generated.experience_events.cache(),
        links=generated.identity_graph.cache(),
        regions=generated.region_information.cache(),
    )


@pytest.fixture(scope="module")
def results(
    spark: SparkSession, inputs: Inputs, config: AppConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pipeline.Results]:
    # A lineage barrier outside the lake (as the jobs use one under <lake>/_scratch): without one, the plans of
    # the connected-components rounds nest into each other and planning them exhausts the driver's heap.
    barrier = ParquetCheckpoint(spark, str(tmp_path_factory.mktemp("barrier")))
    yield pipeline.evaluate(inputs, PreviousState(), config, T, barrier=barrier)
    barrier.cleanup()


def test_evaluate_reads_and_writes_no_table(results: pipeline.Results, config: AppConfig) -> None:
    assert results.profiles.count() > 0
    assert results.membership.where("status = 'realized'").count() > 0
    assert results.changes.count() > 0
    assert not Path(config.job.lake.root).exists()


def test_stages_on_a_subset_of_persons_give_exactly_their_rows(results: pipeline.Results, config: AppConfig) -> None:
    chosen = [r["person_id"] for r in results.profiles.select("person_id").orderBy("person_id").limit(7).collect()]
    clusters = results.clusters.where(F.col("person_id").isin(chosen))
    events = pipeline.person_events(results.as_of, clusters)
    profiles = pipeline.profiles(results.as_of, events, clusters, config)
    full = results.profiles.where(F.col("person_id").isin(chosen))
    # identityMap is a map column (chispa's row-order option hashes columns, maps cannot be hashed): compare rows.
    assert profiles.columns == full.columns
    assert sorted(profiles.collect(), key=lambda r: r["person_id"]) == sorted(
        full.collect(), key=lambda r: r["person_id"]
    )

    compiled = pipeline.compile_run(config, Inputs(results.as_of.fragments, results.as_of.events), T)  # type: ignore[arg-type]
    evaluated = pipeline.segments(compiled, profiles, events)
    membership = pipeline.membership(evaluated, results.segment_ids, None, T, config)
    expected = results.membership.where(F.col("person_id").isin(chosen))
    assert_df_equality(membership, expected, ignore_row_order=True, ignore_nullable=True)


def test_run_counts_agree_with_the_results(inputs: Inputs, results: pipeline.Results, config: AppConfig) -> None:
    rows = [row.asDict() for row in pipeline.run_counts(inputs, results, config, T).collect()]
    counts = RunCounts.from_rows(rows, results.segment_ids)
    assert counts.persons == results.profiles.count()
    realized = {
        r["segment_id"]: r["count"]
        for r in results.membership.where("status = 'realized'").groupBy("segment_id").count().collect()
    }
    assert counts.members == {s: realized.get(s, 0) for s in results.segment_ids}
    assert sum(counts.changes.values()) == results.changes.count()
    for table, categories in counts.rows.items():
        parts = dict(categories)
        assert parts.pop("total") == sum(parts.values()), table
    assert counts.rows["profile_fragments"]["total"] == inputs.fragments.count()


def test_run_counts_render_the_run_log_map() -> None:
    rows = [
        {"measure": "persons", "subject": None, "detail": None, "reason": None, "count": 3},
        {"measure": "rows", "subject": "identity_graph", "detail": None, "reason": "used", "count": 2},
        {"measure": "rows", "subject": "identity_graph", "detail": None, "reason": "total", "count": 2},
        {"measure": "quarantine", "subject": None, "detail": None, "reason": "hub_identity", "count": 1},
        {"measure": "members", "subject": "us", "detail": None, "reason": None, "count": 2},
        {"measure": "changes", "subject": "aam", "detail": "hub_batch", "reason": "qualified", "count": 4},
        {"measure": "exclusions", "subject": "aam", "detail": None, "reason": "consent", "count": 1},
    ]
    counts = RunCounts.from_rows(rows, ["us", "buyers"])
    assert counts.members == {"us": 2, "buyers": 0}
    assert counts.changes == {ChangeKey("aam", "hub_batch", "qualified"): 4}
    assert counts.as_map() == {
        "changes.aam.hub_batch.qualified": 4,
        "exclusions.aam.consent": 1,
        "members.buyers": 0,
        "members.us": 2,
        "persons": 3,
        "quarantine.hub_identity": 1,
        "rows.identity_graph.total": 2,
        "rows.identity_graph.used": 2,
    }
    with pytest.raises(ValueError, match="unknown count measure"):
        RunCounts.from_rows([{**rows[0], "measure": "bogus"}], [])


def test_outputs_are_conformed_to_their_table(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("p1", 2, "ECID", "x", "extra")], "person_id string, graph_size int, namespace string, id string, z string"
    )
    conformed = tables.CLUSTERS.conform(df)
    assert conformed.columns == ["namespace", "id", "person_id", "graph_size"]
    with pytest.raises(tables.TableSchemaError, match="identity_clusters: column graph_size has type bigint"):
        tables.CLUSTERS.conform(df.withColumn("graph_size", F.col("graph_size").cast("long")))
    with pytest.raises(tables.TableSchemaError, match="column namespace is missing"):
        tables.CLUSTERS.conform(df.drop("namespace"))
    assert tables.PROFILES.conform(df) is df  # no fixed schema: the attributes follow the inputs


def test_every_table_has_one_spec_and_a_configurable_location(config: AppConfig) -> None:
    names = [spec.name for spec in (*tables.INPUTS, *tables.OUTPUTS) if not spec.per_destination]
    assert len(names) == len(set(names))
    assert set(names) | {"activation"} == {name.value for name in TableName}
    assert tables.by_name("segment_membership") is tables.MEMBERSHIP
    with pytest.raises(KeyError):
        tables.by_name("nope")
    assert tables.ACTIVATION_EDGE.location(config.job, "aam").endswith("/activation/aam/edge_streaming")
    with pytest.raises(ValueError, match="per-destination"):
        tables.ACTIVATION_HUB.location(config.job)
    assert tables.activation_key("aam", tables.ACTIVATION_HUB) == "activation/aam/hub_batch"
    for spec in tables.OUTPUTS:
        assert spec.role is tables.Role.OUTPUT and spec.mode is not tables.WriteMode.READ_ONLY
        assert (tables.RUN_ID in spec.partition_by) == (spec.mode is tables.WriteMode.RUN_PARTITION)


def test_row_differences_compare_maps_by_content_and_rows_as_multisets(spark: SparkSession) -> None:
    """A micro-batch leaves a state table unwritten only when its rows equal the rows they replace: maps (at any
    depth) are equal whatever order their entries were built in, a changed value, an extra copy of a row or a
    null in place of a value is a difference, and rows of other columns or types are never "the same"."""
    schema = "k string, m map<string, array<struct<id string, primary boolean>>>, s struct<n map<string, int>>"
    before = spark.createDataFrame(
        [("p1", {"ECID": [("e1", True)], "CRMID": [("c1", False)]}, ({"a": 1, "b": 2},)), ("p2", None, None)], schema
    )
    crm_first = F.map_concat(
        F.map_filter("m", lambda k, _v: k == "CRMID"), F.map_filter("m", lambda k, _v: k != "CRMID")
    )
    b_first = F.map_from_arrays(F.array(F.lit("b"), F.lit("a")), F.array(F.lit(2), F.lit(1)))
    reordered = before.select(
        "k", crm_first.alias("m"), F.when(F.col("s").isNotNull(), F.struct(b_first.alias("n"))).alias("s")
    )
    assert [r.m for r in reordered.where("k = 'p1'").select(F.map_keys("m").alias("m")).collect()] == [
        ["CRMID", "ECID"]
    ]
    same = columns.row_differences(before, reordered)
    assert same is not None and same.collect() == []

    primary_off = F.array(F.struct(F.lit("e1").alias("id"), F.lit(False).alias("primary")))
    one_entry = F.map_from_entries(F.array(F.struct(F.lit("ECID"), primary_off)))
    changed = before.withColumn("m", F.when(F.col("k") == "p1", one_entry))
    differences = columns.row_differences(before, changed)
    assert differences is not None
    assert sorted((r.k, r._surplus) for r in differences.collect()) == [("p1", -1), ("p1", 1)]

    twice = columns.row_differences(before, before.unionByName(before.where("k = 'p2'")))
    assert twice is not None and [(r.k, r._surplus) for r in twice.collect()] == [("p2", -1)]
    nulled = columns.row_differences(before, before.withColumn("s", F.lit(None).cast("struct<n map<string, int>>")))
    assert nulled is not None and sorted(r.k for r in nulled.collect()) == ["p1", "p1"]

    assert columns.row_differences(before, before.drop("s")) is None
    assert columns.row_differences(before, before.withColumn("k", F.lit(1))) is None
    assert columns.row_differences(before.select("k"), before.select("k", F.col("k").alias("k2"))) is None


def test_net_rows_set_aside_the_rows_a_rewrite_kept(spark: SparkSession) -> None:
    """A compaction or a delete rewrites data files: the rows both sides hold (as multisets) are no change.
    r1 moved to a new file as it was and cancels out; of r2's three removed copies one was added again, so two
    are lost; r5 differs from r2 only in ``n`` and was added; r3 was added, r4 deleted. r6's map came back with
    its entries in another order: the same content, but not the same stored row (the pipeline breaks ties by a
    row's JSON), so it stays on both sides. A removed side with its columns in another order, or another
    nullability, keeps its order. Sides that cannot hold the same rows are left to the caller. The first case runs
    with a lineage barrier (the keys left, then their rows, each materialised once), the others without."""
    schema = "k string, m map<string, array<string>>, n int"
    r1, r2 = ("r1", {"ECID": ["e1"], "CRMID": ["c1"]}, 1), ("r2", {"ECID": ["e2"]}, None)
    r3, r4, r5 = ("r3", {"ECID": ["e3"]}, 3), ("r4", None, 4), ("r2", {"ECID": ["e2"]}, 5)
    r6 = ("r6", {"ECID": ["e6"], "CRMID": ["c6"]}, 6)
    crm_first = F.map_concat(
        F.map_filter("m", lambda k, _v: k == "CRMID"), F.map_filter("m", lambda k, _v: k != "CRMID")
    )
    reordered = F.when(F.col("k") == "r6", crm_first).otherwise(F.col("m"))
    added = spark.createDataFrame([r1, r2, r3, r5, r6], schema).withColumn("m", reordered)
    removed = spark.createDataFrame([r4, r2, r1, r2, r6, r2], schema).select(F.col("n").cast("int"), "k", "m")
    assert [r.keys for r in added.where("k = 'r6'").select(F.map_keys("m").alias("keys")).collect()] == [
        ["CRMID", "ECID"]
    ]

    materialised: list[DataFrame] = []

    def barrier(df: DataFrame) -> DataFrame:
        materialised.append(df)
        return df.localCheckpoint()

    net = columns.net_rows(added, removed, barrier)
    assert net is not None and len(materialised) == 2
    gained, lost = net
    assert gained.columns == ["k", "m", "n"] and lost.columns == ["n", "k", "m"]
    assert sorted((tuple(r) for r in gained.collect()), key=repr) == sorted([r3, r5, r6], key=repr)
    assert [r.keys for r in gained.where("k = 'r6'").select(F.map_keys("m").alias("keys")).collect()] == [
        ["CRMID", "ECID"]  # as the added side stores it
    ]
    assert sorted((tuple(r) for r in lost.collect()), key=repr) == sorted(
        [(None, "r2", {"ECID": ["e2"]})] * 2 + [(4, "r4", None), (6, "r6", {"ECID": ["e6"], "CRMID": ["c6"]})],
        key=repr,
    )

    compacted = columns.net_rows(removed.select("k", "m", "n"), removed)
    assert compacted is not None and [side.collect() for side in compacted] == [[], []]
    not_null = removed.where("n is not null").select("k", "m", F.coalesce("n", F.lit(0)).alias("n"))
    assert not not_null.schema["n"].nullable
    nullable = not_null.select(F.when(F.col("n").isNotNull(), F.col("n")).alias("n"), "k", "m")
    assert nullable.schema["n"].nullable
    both = columns.net_rows(not_null, nullable)
    assert both is not None and [side.collect() for side in both] == [[], []]

    assert columns.net_rows(added, removed.drop("n")) is None
    assert columns.net_rows(added, removed.withColumn("n", F.col("n").cast("string"))) is None


def test_the_candidates_clusters_come_from_the_new_rows_or_the_previous_table(spark: SparkSession) -> None:
    """A micro-batch's candidate events take the cluster rows of their primary identities after the micro-batch:
    an affected identity's new row (never its previous one), any other identity's previous row; an identity in
    neither has none. With every key affected, the previous table is not needed at all."""
    schema = "namespace string, id string, person_id string, graph_size int"
    new = spark.createDataFrame([("ECID", "e1", "p-new", 2), ("Email", "m1", "p-new", 2)], schema)
    affected = spark.createDataFrame([("ECID", "e1"), ("Email", "m1")], "namespace string, id string")
    previous = spark.createDataFrame(
        [("ECID", "e1", "p-old", 1), ("Email", "m1", "p-m", 1), ("ECID", "e2", "p-2", 1), ("ECID", "e3", "p-3", 1)],
        schema,
    )
    keys = spark.createDataFrame([("ECID", "e1"), ("ECID", "e2"), ("ECID", "e9")], "namespace string, id string")
    barrier = LocalCheckpoint()
    try:
        got = _clusters_of(keys, new, affected, previous, barrier)
        assert sorted(got.collect()) == [("ECID", "e1", "p-new", 2), ("ECID", "e2", "p-2", 1)]
        only_affected = keys.where(F.col("id") == "e1")
        assert _clusters_of(only_affected, new, affected, previous, barrier).collect() == [("ECID", "e1", "p-new", 2)]
        assert sorted(_clusters_of(keys, new, affected, None, barrier).collect()) == [("ECID", "e1", "p-new", 2)]
    finally:
        barrier.cleanup()


def test_candidates_are_single_when_their_id_is_their_key_and_no_other_has_their_copy_key(
    spark: SparkSession,
) -> None:
    """The attribution takes single candidates as they are: a copy key held once, with an ``_id`` that cannot be
    another event's key. Without ``_id``, or with one that starts as a whole-row key, an event is de-duplicated
    as usual. The key column goes; the events' own columns stay, whatever their names."""
    prefixed = "\u0000row:" + "0" * 64
    keyed = spark.createDataFrame(
        [
            ("a", "e1", 1, "k"),
            ("a", "e1", 2, "k"),
            ("b", "e2", 3, None),
            ("c", None, 4, None),
            (prefixed, prefixed, 5, "s"),
        ],
        f"{COPY_KEY} string, _id string, n int, _key string",
    )
    barrier = LocalCheckpoint()
    try:
        single, rest = split_by_copies(keyed, barrier)
        assert single.columns == rest.columns == ["_id", "n", "_key"]
        assert single.collect() == [("e2", 3, None)]
        assert sorted(rest.collect(), key=lambda r: r.n) == [
            ("e1", 1, "k"),
            ("e1", 2, "k"),
            (None, 4, None),
            (prefixed, 5, "s"),
        ]
    finally:
        barrier.cleanup()


def test_events_are_matched_by_the_hash_of_their_copy_key_with_every_copy(spark: SparkSession) -> None:
    """The candidates are the events whose copy key hashes to a wanted hash: every copy of a wanted event (same
    ``_id``, whatever its identities or time), with the key as a column and no hash column left; nothing else.
    The hashes are broadcast whatever their size (with broadcasts left to the size rule turned off here)."""
    events = spark.createDataFrame(
        [
            ("e1", dt.datetime(2026, 1, 1), {"ECID": [("c1", True)]}),
            ("e1", dt.datetime(2026, 1, 2), {"ECID": [("c9", True)]}),
            ("e2", dt.datetime(2026, 1, 3), {"ECID": [("c1", True)]}),
            (None, dt.datetime(2026, 1, 4), {"ECID": [("c1", True)]}),
        ],
        "_id string, timestamp timestamp, identityMap map<string, array<struct<id: string, primary: boolean>>>",
    )
    hashes = spark.createDataFrame([("e1",)], "k string").select(F.xxhash64("k").alias("_key"))
    threshold = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        found = with_keys(events, hashes)
        plan = found._jdf.queryExecution().executedPlan().toString()  # noqa: SLF001
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", threshold)
    assert "BroadcastHashJoin" in plan
    assert found.columns == ["_id", "timestamp", "identityMap", COPY_KEY]
    assert sorted((r._id, r.timestamp.day, r[COPY_KEY]) for r in found.collect()) == [("e1", 1, "e1"), ("e1", 2, "e1")]
