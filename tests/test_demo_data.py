"""The demo data generator: input schemas, determinism, scaling and the planted bad rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from audience_activation import app
from audience_activation.config import load_config
from audience_activation.demo_data import BAD_IDENTITIES, FIRST_NAMES, HUB_IDFA, SHARED_ECID, DemoTables, generate
from audience_activation.schemas import schema_problems

AS_OF = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
PERSONS = 40
CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def demo(spark: SparkSession) -> DemoTables:
    tables = generate(spark, PERSONS, seed=7, as_of=AS_OF)
    return DemoTables(*(df.cache() for df in tables.as_dict().values()))


def same_rows(left: DataFrame, right: DataFrame) -> bool:
    return left.exceptAll(right).isEmpty() and right.exceptAll(left).isEmpty()


def test_tables_have_the_contract_schemas(demo: DemoTables) -> None:
    for name, df in demo.as_dict().items():
        assert schema_problems(name, df.schema) == [], name
    assert demo.profile_fragments.schema["loyalty"].dataType.simpleString() == (
        "struct<tier:string,points:bigint,lifetimeValue:decimal(12,2)>"
    )
    assert demo.experience_events.schema["productListItems"].dataType.simpleString() == (
        "array<struct<SKU:string,name:string,quantity:bigint,priceTotal:double>>"
    )


def test_same_seed_same_rows_other_seed_other_rows(spark: SparkSession, demo: DemoTables) -> None:
    again = generate(spark, PERSONS, seed=7, as_of=AS_OF)

    # Maps cannot be compared by exceptAll; compare their JSON rendering.
    def comparable(df: DataFrame) -> DataFrame:
        return df.select(F.to_json(F.struct(*[F.col(c) for c in df.columns])).alias("row"))

    for name, df in demo.as_dict().items():
        assert same_rows(comparable(df), comparable(again.as_dict()[name])), name
    other = generate(spark, PERSONS, seed=8, as_of=AS_OF)
    assert not same_rows(comparable(demo.profile_fragments), comparable(other.profile_fragments))


def test_sizes_follow_the_person_count(spark: SparkSession, demo: DemoTables) -> None:
    web = demo.profile_fragments.where("dataset = 'web_profiles'")
    # One web fragment per person plus the seven planted bad fragments.
    assert web.count() == PERSONS + len(BAD_IDENTITIES)
    assert demo.profile_fragments.select("dataset").distinct().count() == 3
    bigger = generate(spark, 4 * PERSONS, seed=7, as_of=AS_OF)
    assert bigger.profile_fragments.where("dataset = 'web_profiles'").count() == 4 * PERSONS + len(BAD_IDENTITIES)


def test_every_timestamp_is_at_or_before_the_anchor(demo: DemoTables) -> None:
    anchor = F.lit(AS_OF).cast("timestamp")
    assert demo.profile_fragments.where(F.col("ingested_at") > anchor).isEmpty()
    assert demo.experience_events.where(F.col("timestamp") > anchor).isEmpty()
    assert demo.identity_graph.where(F.col("last_seen_at") > anchor).isEmpty()


def test_regions_are_some_fresh_and_some_stale(demo: DemoTables) -> None:
    captures = demo.region_information.select(F.explode("userActivityRegions").alias("region", "capture"))
    cutoff = F.lit(AS_OF - dt.timedelta(days=14)).cast("timestamp")
    assert not captures.where(F.col("capture.captureTimestamp") >= cutoff).isEmpty()
    assert not captures.where(F.col("capture.captureTimestamp") < cutoff).isEmpty()
    assert captures.select("region").distinct().count() >= 3


def test_conflicting_values_between_datasets(demo: DemoTables) -> None:
    """The CRM and loyalty fragments of one customer disagree on the city for some customers."""

    def city_by_crmid(dataset: str) -> DataFrame:
        return demo.profile_fragments.where(F.col("dataset") == dataset).select(
            F.col("identityMap")["CRMID"][0]["id"].alias("crmid"), F.col("homeAddress.city").alias(dataset)
        )

    both = city_by_crmid("crm_profiles").join(city_by_crmid("loyalty_profiles"), "crmid", "inner")
    assert both.count() > 5
    assert both.where(F.col("crm_profiles") != F.col("loyalty_profiles")).count() > 0
    # The web dataset writes first names in lower case, the CRM capitalised.
    crm_names = {
        r[0] for r in demo.profile_fragments.where("dataset = 'crm_profiles'").select("person.name.firstName").collect()
    }
    web_names = {
        r[0] for r in demo.profile_fragments.where("dataset = 'web_profiles'").select("person.name.firstName").collect()
    } - {None}
    assert crm_names <= set(FIRST_NAMES)
    assert web_names and web_names <= {name.lower() for name in FIRST_NAMES}


def test_planted_bad_identities_are_present(demo: DemoTables) -> None:
    identities = demo.profile_fragments.select(F.explode("identityMap").alias("ns", "ids")).select(
        "ns", F.explode("ids.id").alias("id")
    )
    found = {(row.ns, row.id) for row in identities.collect()}
    for namespace, identity, _reason in BAD_IDENTITIES:
        assert (namespace, identity) in found, (namespace, identity)
    # One fragment carries nothing but an invalid identity.
    only_bad = demo.profile_fragments.where(F.size("identityMap") == 1).where(
        F.col("identityMap")["EMAIL_LC_SHA256"][0]["id"] == "not-a-sha256"
    )
    assert only_bad.count() == 1
    assert demo.experience_events.where(F.col("identityMap")["ECID"][0]["id"] == "12345").count() == 1


def test_hub_and_shared_device(demo: DemoTables) -> None:
    hub = demo.identity_graph.where((F.col("src_namespace") == "IDFA") & (F.col("src_id") == HUB_IDFA))
    assert hub.select("dst_namespace", "dst_id").distinct().count() == 60
    shared = demo.identity_graph.where(F.col("src_id") == SHARED_ECID).orderBy("last_seen_at")
    assert [(r.dst_id, r.last_seen_at) for r in shared.collect()] == [
        ("C000000001", dt.datetime(2026, 11, 9)),
        ("C000000002", dt.datetime(2026, 11, 28)),
    ]


def test_duplicate_event_ids_exist(spark: SparkSession) -> None:
    events = generate(spark, 2000, seed=7, as_of=AS_OF).experience_events
    duplicated = events.groupBy("_id").count().where("count > 1")
    assert 0 < duplicated.count() < events.count() * 0.05


def test_ecids_are_38_digits(demo: DemoTables) -> None:
    ecids = demo.identity_graph.where("src_namespace = 'ECID'").select("src_id")
    assert ecids.where(~F.col("src_id").rlike("^[0-9]{38}$")).isEmpty()


def test_write_demo_data_to_a_lake(spark: SparkSession, tmp_path: Path, conf: Path, engine: str) -> None:
    config = load_config(conf)
    config = config.model_copy(update={"job": config.job.with_lake_root(str(tmp_path / "lake"))})
    written = app.write_demo_data(spark, config, persons=10, seed=1, as_of=AS_OF)
    assert [item.name for item in written] == [
        "profile_fragments",
        "experience_events",
        "identity_graph",
        "region_information",
    ]
    for item in written:
        assert item.version == 0
        assert DeltaTable(item.location).to_pyarrow_table().num_rows == item.rows
    report = app.validate_inputs(spark, config)
    assert report.engine == engine
    assert report.versions == {
        name: 0 for name in ("profile_fragments", "experience_events", "identity_graph", "region_information")
    }
