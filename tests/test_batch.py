"""The batch job end to end on small hand-made inputs, with the expected rows of every output written out.

Two runs, T1 then T2, with input and configuration changes between them that produce every change reason;
a re-run of T2 gives identical tables; T1 after T2 is refused; a run that fails after some commits and is
run again ends with the tables of a clean run. The tests of what the engines store (every change reason, the
re-runs, the failed run) run on both storage engines, and a lake started with one engine and continued with the
other ends with the tables of a lake that used one engine throughout; tests of pipeline rules only (a merged
person's exit, hashing) run once, on delta-rs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from audience_activation import app, runlog
from audience_activation.config import AppConfig, load_config
from audience_activation.storage import DeltaStorage, open_storage

T1 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
T2 = dt.datetime(2026, 11, 8, tzinfo=dt.timezone.utc)
N1, N2 = T1.replace(tzinfo=None), T2.replace(tzinfo=None)
DAY = dt.timedelta(days=1)
IMAP = "map<string, array<struct<id: string, primary: boolean>>>"
FRAGMENTS = f"""identityMap {IMAP}, dataset string, ingested_at timestamp,
    homeAddress struct<countryCode: string>, consents struct<share: struct<val: string>>"""
EVENTS = f"_id string, timestamp timestamp, eventType string, identityMap {IMAP}"
LINKS = "src_namespace string, src_id string, dst_namespace string, dst_id string, last_seen_at timestamp"
REGIONS = f"identityMap {IMAP}, userActivityRegions map<string, struct<captureTimestamp: timestamp>>"


def ecid(n: int) -> str:
    return str(n) * 38


E1, E2, E3, E4, E6 = ecid(1), ecid(2), ecid(3), ecid(4), ecid(6)

SEGMENTS = {
    "segments": [
        {
            "id": "us",
            "name": "US",
            "expression": {"type": "PQL", "format": "pql/text", "value": 'homeAddress.countryCode = "US"'},
        },
        {
            "id": "buyers",
            "name": "Buyers",
            "expression": {
                "type": "PQL",
                "format": "pql/text",
                "value": 'select X from xEvent where X.eventType = "commerce.purchases"',
            },
        },
    ]
}


def destinations(aam_segments: list[str], cja_segments: list[str]) -> dict:
    return {
        "destinations": [
            {"id": "aam", "type": "audience_manager", "segments": aam_segments, "consent": 'consents.share.val = "y"'},
            {"id": "cja", "type": "customer_journey_analytics", "segments": cja_segments},
        ]
    }


def frag(ids: dict[str, str], at: dt.datetime, country: str | None, share: str | None, dataset: str = "crm") -> tuple:
    return ({ns: [(i, k == 0)] for k, (ns, i) in enumerate(ids.items())}, dataset, at, (country,), ((share,),))


def write_conf(conf: Path, lake: Path, engine: str) -> Path:
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "job.yaml").write_text(yaml.safe_dump({"lake": {"root": str(lake)}, "storage": {"engine": engine}}))
    (conf / "segments.yaml").write_text(yaml.safe_dump(SEGMENTS))
    (conf / "destinations.yaml").write_text(yaml.safe_dump(destinations(["us"], ["us", "buyers"])))
    return conf


@pytest.fixture()
def setup(spark: SparkSession, tmp_path: Path, engine: str) -> Iterator[tuple[Path, DeltaStorage]]:
    # A space in the lake's folder (``/Users/Jane Doe/lake``): every file operation must take it as it is.
    conf = write_conf(tmp_path / "conf", tmp_path / "my lake", engine)
    yield conf, open_storage(spark, engine)
    shutil.rmtree(tmp_path / "my lake", ignore_errors=True)


def write_inputs_t1(spark: SparkSession, store: DeltaStorage, lake: str) -> None:
    store.overwrite(
        spark.createDataFrame(
            [
                frag({"CRMID": "c1"}, N1 - 5 * DAY, "US", "y"),
                frag({"CRMID": "c2"}, N1 - 5 * DAY, "US", "n"),
                frag({"CRMID": "c3"}, N1 - 5 * DAY, "US", "y"),
                frag({"CRMID": "c4"}, N1 - 5 * DAY, "US", "y"),
                frag({"CRMID": "c5"}, N1 - 5 * DAY, "FR", "y"),
                frag({"CRMID": "c6"}, N1 - 5 * DAY, "US", "y"),
            ],
            FRAGMENTS,
        ),
        f"{lake}/profile_fragments",
    )
    store.overwrite(
        spark.createDataFrame([("o1", N1 - DAY, "commerce.purchases", {"ECID": [(E1, True)]})], EVENTS),
        f"{lake}/experience_events",
    )
    store.overwrite(
        spark.createDataFrame(
            [
                ("ECID", E1, "CRMID", "c1", N1 - 10 * DAY),
                ("ECID", E2, "CRMID", "c2", N1 - 10 * DAY),
                ("ECID", E4, "CRMID", "c4", N1 - 10 * DAY),
                ("ECID", E6, "CRMID", "c6", N1 - 10 * DAY),
            ],
            LINKS,
        ),
        f"{lake}/identity_graph",
    )
    store.overwrite(
        spark.createDataFrame(
            [
                ({"ECID": [(E1, True)]}, {"VA6": (N1 - DAY,), "IRL1": (N1 - 2 * DAY,)}),
                ({"ECID": [(E4, True)]}, {"OR2": (N1 - 20 * DAY,)}),  # stale: hub
                ({"ECID": [(E6, True)]}, {"XX1": (N1 - DAY,)}),  # fresh, code not in the map
            ],
            REGIONS,
        ),
        f"{lake}/region_information",
    )


def write_changes_t2(spark: SparkSession, store: DeltaStorage, lake: str) -> None:
    store.append(
        spark.createDataFrame(
            [
                frag({"CRMID": "c2"}, N2 - DAY, None, "y"),  # consent granted
                frag({"CRMID": "c4"}, N2 - DAY, "FR", None),  # moves away: disqualified
                frag({"CRMID": "c6"}, N2 - DAY, None, "n"),  # consent revoked
                frag({"CRMID": "c9"}, N2 - DAY, "US", "y"),  # a new customer
            ],
            FRAGMENTS,
        ),
        f"{lake}/profile_fragments",
    )
    store.append(
        spark.createDataFrame(
            [
                ("o2", N2 - DAY, "commerce.purchases", {"CRMID": [("c2", True)]}),
                ("o2", N2 - 2 * DAY, "commerce.purchases", {"CRMID": [("c2", True)]}),  # sent twice: counts once
                ("o3", N2 + DAY, "commerce.purchases", {"ECID": [(E2, True)]}),  # after T2: not seen at T2
                ("o4", N2 - DAY, "web.webpagedetails.pageViews", {"ECID": [("bad", True)]}),  # no valid identity
            ],
            EVENTS,
        ),
        f"{lake}/experience_events",
    )
    # Customer 9 logged in on customer 1's browser more recently: the ECID moves to customer 9.
    store.append(spark.createDataFrame([("ECID", E1, "CRMID", "c9", N2 - DAY)], LINKS), f"{lake}/identity_graph")


def rows(path: Path, *columns: str) -> list[tuple]:
    if not DeltaTable.is_deltatable(str(path)):
        return []
    return sorted(tuple(r[c] for c in columns) for r in DeltaTable(str(path)).to_pyarrow_table().to_pylist())


ACTIVATION = ("run_id", "segment_id", "person_id", "status", "reason")


def run(spark: SparkSession, conf: Path, at: dt.datetime, **kwargs) -> runlog.RunSummary:  # type: ignore[no-untyped-def]
    config: AppConfig = load_config(conf)
    return app.run_batch(spark, config, evaluation_time=at, **kwargs)


def snapshot(lake: Path) -> dict[str, list]:
    """Every output table's rows (for comparing two runs)."""
    out = {}
    for table in ("identity_clusters", "unified_profiles", "segment_membership", "activation_state", "quarantine"):
        data = DeltaTable(str(lake / table)).to_pyarrow_table().to_pylist()
        out[table] = sorted(repr(sorted(r.items())) for r in data)
    for destination in ("aam", "cja"):
        for kind in ("edge_streaming", "hub_batch"):
            path = lake / "activation" / destination / kind
            out[f"{destination}/{kind}"] = sorted(
                repr(sorted(r.items())) for r in DeltaTable(str(path)).to_pyarrow_table().to_pylist()
            )
    runs = DeltaTable(str(lake / "activation_runs")).to_pyarrow_table().to_pylist()
    out["activation_runs"] = sorted((r["run_id"], r["status"], repr(sorted(r["counts"]))) for r in runs)
    return out


@pytest.fixture(scope="module")
def after_t2() -> dict[str, dict[str, list]]:
    """Every output table after T2 of :func:`test_two_runs_produce_every_change_reason`, per engine."""
    return {}


def test_two_runs_produce_every_change_reason(
    spark: SparkSession, setup: tuple[Path, DeltaStorage], after_t2: dict[str, dict[str, list]]
) -> None:
    conf, store = setup
    lake = Path(load_config(conf).job.lake.root)
    write_inputs_t1(spark, store, str(lake))
    first = run(spark, conf, T1)
    assert first.status == "completed" and first.previous_run is None

    run1 = "batch-20261101T000000Z"
    after_t1 = snapshot(lake)
    assert not (lake / "_scratch").exists()  # the lineage barrier's scratch folder is gone with its parent
    assert rows(lake / "activation/aam/edge_streaming", *ACTIVATION, "region", "dcs_region_id") == [
        (run1, "us", "CRMID:c1", "realized", "backfill", "IRL1", 6),
        (run1, "us", "CRMID:c1", "realized", "backfill", "VA6", 7),
        (run1, "us", "CRMID:c6", "realized", "backfill", "XX1", None),
    ]
    assert rows(lake / "activation/aam/hub_batch", *ACTIVATION) == [(run1, "us", "CRMID:c4", "realized", "backfill")]
    assert rows(lake / "activation/cja/hub_batch", *ACTIVATION) == [
        (run1, "buyers", "CRMID:c1", "realized", "backfill"),
        (run1, "us", "CRMID:c1", "realized", "backfill"),
        (run1, "us", "CRMID:c2", "realized", "backfill"),
        (run1, "us", "CRMID:c3", "realized", "backfill"),
        (run1, "us", "CRMID:c4", "realized", "backfill"),
        (run1, "us", "CRMID:c6", "realized", "backfill"),
    ]
    assert rows(lake / "activation/cja/edge_streaming", *ACTIVATION) == []  # hub routing
    aam_identities = {
        r["person_id"]: r["identityMap"]
        for r in DeltaTable(str(lake / "activation/aam/hub_batch")).to_pyarrow_table().to_pylist()
    }
    assert aam_identities == {"CRMID:c4": [("ECID", [{"id": E4, "primary": True}])]}  # CRMID is not an AAM namespace
    assert first.counts.exclusions["aam", "consent"] == 1  # c2
    assert first.counts.exclusions["aam", "no_matching_identity"] == 1  # c3 has no ECID
    assert first.counts.members["us"] == 5 and first.counts.members["buyers"] == 1
    assert rows(lake / "identity_clusters", "namespace", "id", "person_id", "graph_size") == [
        ("CRMID", "c1", "CRMID:c1", 2),
        ("CRMID", "c2", "CRMID:c2", 2),
        ("CRMID", "c3", "CRMID:c3", 1),
        ("CRMID", "c4", "CRMID:c4", 2),
        ("CRMID", "c5", "CRMID:c5", 1),
        ("CRMID", "c6", "CRMID:c6", 2),
        ("ECID", E1, "CRMID:c1", 2),
        ("ECID", E2, "CRMID:c2", 2),
        ("ECID", E4, "CRMID:c4", 2),
        ("ECID", E6, "CRMID:c6", 2),
    ]
    profiles = {r["person_id"]: r for r in DeltaTable(str(lake / "unified_profiles")).to_pyarrow_table().to_pylist()}
    assert {
        p: (r["homeAddress"]["countryCode"], r["consents"]["share"]["val"], r["fragment_count"])
        for p, r in profiles.items()
    } == {
        "CRMID:c1": ("US", "y", 1),
        "CRMID:c2": ("US", "n", 1),
        "CRMID:c3": ("US", "y", 1),
        "CRMID:c4": ("US", "y", 1),
        "CRMID:c5": ("FR", "y", 1),
        "CRMID:c6": ("US", "y", 1),
    }
    assert sorted(profiles["CRMID:c1"]["identityMap"]) == [
        ("CRMID", [{"id": "c1", "primary": True}]),
        ("ECID", [{"id": E1, "primary": False}]),
    ]
    assert rows(lake / "activation_state", "destination_id", "segment_id", "person_id", "consent_ok", "activated") == [
        ("aam", "us", "CRMID:c1", True, True),
        ("aam", "us", "CRMID:c2", False, False),
        ("aam", "us", "CRMID:c3", True, False),
        ("aam", "us", "CRMID:c4", True, True),
        ("aam", "us", "CRMID:c6", True, True),
        ("cja", "buyers", "CRMID:c1", True, True),
        ("cja", "us", "CRMID:c1", True, True),
        ("cja", "us", "CRMID:c2", True, True),
        ("cja", "us", "CRMID:c3", True, True),
        ("cja", "us", "CRMID:c4", True, True),
        ("cja", "us", "CRMID:c6", True, True),
    ]
    assert rows(lake / "quarantine", "reason") == []
    (log,) = DeltaTable(str(lake / "activation_runs")).to_pyarrow_table().to_pylist()
    assert (log["run_id"], log["kind"], log["status"], log["storage_engine"]) == (
        run1,
        "batch",
        "completed",
        store.name,
    )
    assert dict(log["input_versions"]) == {
        "profile_fragments": 0,
        "experience_events": 0,
        "identity_graph": 0,
        "region_information": 0,
    }
    assert dict(log["counts"]) == {
        "changes.aam.edge_streaming.backfill": 3,
        "changes.aam.hub_batch.backfill": 1,
        "changes.cja.hub_batch.backfill": 6,
        "exclusions.aam.consent": 1,
        "exclusions.aam.no_matching_identity": 1,
        "rows.experience_events.after_t": 0,
        "rows.experience_events.duplicate_id": 0,
        "rows.experience_events.missing_timestamp": 0,
        "rows.experience_events.no_valid_identity": 0,
        "rows.experience_events.total": 1,
        "rows.experience_events.used": 1,
        "rows.identity_graph.after_t": 0,
        "rows.identity_graph.invalid_link": 0,
        "rows.identity_graph.missing_timestamp": 0,
        "rows.identity_graph.total": 4,
        "rows.identity_graph.used": 4,
        "rows.profile_fragments.after_t": 0,
        "rows.profile_fragments.ignored_by_merge_policy": 0,
        "rows.profile_fragments.missing_timestamp": 0,
        "rows.profile_fragments.no_valid_identity": 0,
        "rows.profile_fragments.total": 6,
        "rows.profile_fragments.used": 6,
        "rows.region_information.after_t": 0,
        "rows.region_information.no_valid_identity": 0,
        "rows.region_information.total": 3,
        "rows.region_information.used": 3,
        "members.buyers": 1,
        "members.us": 5,
        "persons": 6,
    }
    assert dict(log["mappings"]) == {"aam": ["us"], "cja": ["us", "buyers"]}

    # T2: new facts, and the mappings change: aam now also takes buyers; cja drops us.
    write_changes_t2(spark, store, str(lake))
    (conf / "destinations.yaml").write_text(yaml.safe_dump(destinations(["us", "buyers"], ["buyers"])))

    # A first attempt at T2 fails after some of its commits; it is recorded as failed, and running T2 again
    # computes from the state of T1, as a clean run would (checked below against lakes that never failed).
    def fail_after_aam_hub_batch(table: str) -> None:
        if table == "activation/aam/hub_batch":
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        run(spark, conf, T2, on_commit=fail_after_aam_hub_batch)
    runs = {r["run_id"]: r["status"] for r in DeltaTable(str(lake / "activation_runs")).to_pyarrow_table().to_pylist()}
    assert runs == {run1: "completed", "batch-20261108T000000Z": "failed"}
    # The failed attempt's commits were rolled back: every output is as T1 left it; only the run log tells.
    rolled_back = snapshot(lake)
    assert rolled_back.pop("activation_runs") != after_t1.pop("activation_runs")
    assert rolled_back == after_t1
    assert not (lake / "_scratch").exists() and not (lake / "_lease").joinpath("_scratch").exists()
    # Failing after its last commit (the run log row) is rolled back the same way (on delta-rs only, to keep
    # the suite's time: the roll-back code is the same for both engines, and tests/test_lease.py rolls back
    # one and several commits under each).
    if store.name == "delta-rs":
        with pytest.raises(RuntimeError, match="injected failure"):
            run(
                spark,
                conf,
                T2,
                on_commit=lambda table: (
                    fail_after_aam_hub_batch("activation/aam/hub_batch") if table == "activation_runs" else None
                ),
            )
        again_rolled_back = snapshot(lake)
        again_rolled_back.pop("activation_runs")
        assert again_rolled_back == after_t1

    second = run(spark, conf, T2)
    assert second.previous_run == run1
    run2 = "batch-20261108T000000Z"
    aam = [r for r in rows(lake / "activation/aam/edge_streaming", *ACTIVATION, "region") if r[0] == run2]
    aam += [(*r, None) for r in rows(lake / "activation/aam/hub_batch", *ACTIVATION) if r[0] == run2]
    assert sorted(aam) == sorted(
        [
            (run2, "us", "CRMID:c9", "realized", "qualified", "IRL1"),  # took customer 1's browser, with its regions
            (run2, "us", "CRMID:c9", "realized", "qualified", "VA6"),
            (run2, "us", "CRMID:c1", "exited", "identity_removed", None),  # lost its only ECID
            (run2, "us", "CRMID:c2", "realized", "consent_granted", None),
            (run2, "us", "CRMID:c4", "exited", "disqualified", None),
            (run2, "us", "CRMID:c6", "exited", "consent_revoked", "XX1"),
            (run2, "buyers", "CRMID:c2", "realized", "backfill", None),  # newly mapped: every current member
            (run2, "buyers", "CRMID:c9", "realized", "backfill", "IRL1"),
            (run2, "buyers", "CRMID:c9", "realized", "backfill", "VA6"),
        ]
    )
    exit_c1 = [
        r
        for r in DeltaTable(str(lake / "activation/aam/hub_batch")).to_pyarrow_table().to_pylist()
        if r["person_id"] == "CRMID:c1"
    ]
    assert exit_c1[0]["identityMap"] == [("ECID", [{"id": E1, "primary": True}])]  # what was sent when added
    cja = [r for r in rows(lake / "activation/cja/hub_batch", *ACTIVATION) if r[0] == run2]
    assert cja == [
        (run2, "buyers", "CRMID:c1", "exited", "disqualified"),
        (run2, "buyers", "CRMID:c2", "realized", "qualified"),
        (run2, "buyers", "CRMID:c9", "realized", "qualified"),
        (run2, "us", "CRMID:c1", "exited", "unmapped"),
        (run2, "us", "CRMID:c2", "exited", "unmapped"),
        (run2, "us", "CRMID:c3", "exited", "unmapped"),
        (run2, "us", "CRMID:c4", "exited", "unmapped"),
        (run2, "us", "CRMID:c6", "exited", "unmapped"),
    ]
    # Downstream systems stream the changes: the activation tables carry Delta's Change Data Feed (read here
    # with delta-rs). An attempt that failed after its run-log row had reached cja's table: the feed shows its
    # rows inserted, then deleted by the roll-back's RESTORE, then the completed run's rows.
    feed = pa.table(DeltaTable(str(lake / "activation/cja/hub_batch")).load_cdf(starting_version=0).read_all())
    changes = [(r["_change_type"], r["run_id"], r["segment_id"], r["person_id"], r["reason"]) for r in feed.to_pylist()]
    inserted = Counter(c[1:] for c in changes if c[0] == "insert")
    deleted = Counter(c[1:] for c in changes if c[0] == "delete")
    run2_rows = [
        (run2, "buyers", "CRMID:c1", "disqualified"),
        (run2, "buyers", "CRMID:c2", "qualified"),
        (run2, "buyers", "CRMID:c9", "qualified"),
        *[(run2, "us", f"CRMID:c{n}", "unmapped") for n in (1, 2, 3, 4, 6)],
    ]
    # Exactly the rows of the attempt rolled back after its last commit (run on delta-rs, above).
    assert sorted(deleted.elements()) == sorted(run2_rows if store.name == "delta-rs" else [])
    assert sorted((inserted - deleted).elements()) == sorted(
        [
            (run1, "buyers", "CRMID:c1", "backfill"),
            *[(run1, "us", f"CRMID:c{n}", "backfill") for n in (1, 2, 3, 4, 6)],
            *run2_rows,
        ]
    )
    for table in ("segment_membership", "activation/aam/edge_streaming", "activation/cja/hub_batch"):
        assert store.properties(str(lake / table))["delta.enableChangeDataFeed"] == "true", table
    membership = rows(lake / "segment_membership", "person_id", "segment_id", "status", "last_qualification_time")
    assert membership == [
        ("CRMID:c1", "buyers", "exited", T2),  # the purchase event's ECID now belongs to customer 9
        ("CRMID:c1", "us", "realized", T1),
        ("CRMID:c2", "buyers", "realized", T2),
        ("CRMID:c2", "us", "realized", T1),
        ("CRMID:c3", "us", "realized", T1),
        ("CRMID:c4", "us", "exited", T2),
        ("CRMID:c6", "us", "realized", T1),
        ("CRMID:c9", "buyers", "realized", T2),
        ("CRMID:c9", "us", "realized", T2),
    ]

    # Every input row is accounted for: each table's parts add up to its total.
    for table, categories in second.counts.rows.items():
        parts = dict(categories)
        assert parts.pop("total") == sum(parts.values()), (table, parts)
    assert {f"rows.experience_events.{k}": v for k, v in second.counts.rows["experience_events"].items()} == {
        "rows.experience_events.after_t": 1,
        "rows.experience_events.duplicate_id": 1,
        "rows.experience_events.missing_timestamp": 0,
        "rows.experience_events.no_valid_identity": 1,
        "rows.experience_events.total": 5,
        "rows.experience_events.used": 2,
    }

    # Every table equals that of the other engine's lake, when that test ran already (and the lakes changed
    # engine on the way are compared with this one below).
    before = snapshot(lake)
    for other, tables in after_t2.items():
        assert before == tables, f"{store.name} and {other} lakes differ"
    after_t2[store.name] = before

    # Re-running T2 replaces its own outputs: identical tables.
    again = run(spark, conf, T2)
    assert again.previous_run == run1
    assert snapshot(lake) == before

    # T1 is older than the newest completed run: refused unless forced.
    with pytest.raises(app.RunOrderError, match="older than the newest completed run"):
        run(spark, conf, T1)


def test_merged_person_exits_under_the_old_id_routed_on_its_previous_graph(spark: SparkSession, tmp_path: Path) -> None:
    """Pipeline rules over two runs (merge, exit under the old id, routing on the previous graph, forced re-run).
    Engine-independent: run on delta-rs only; the engines' reads and writes of the same state are covered by
    the tests above and below."""
    conf = write_conf(tmp_path / "conf", tmp_path / "lake", "delta-rs")
    store = open_storage(spark, "delta-rs")
    (conf / "destinations.yaml").write_text(yaml.safe_dump(destinations(["us"], ["us"])))
    lake = Path(load_config(conf).job.lake.root)
    eb = ecid(7)
    store.overwrite(
        spark.createDataFrame(
            [frag({"CRMID": "a"}, N1 - DAY, "US", "y"), frag({"ECID": eb}, N1 - DAY, "US", "y", dataset="web")],
            FRAGMENTS,
        ),
        f"{lake}/profile_fragments",
    )
    store.overwrite(spark.createDataFrame([], LINKS), f"{lake}/identity_graph")
    store.overwrite(spark.createDataFrame([], EVENTS), f"{lake}/experience_events")  # the buyers segment reads xEvent
    store.overwrite(
        spark.createDataFrame([({"ECID": [(eb, True)]}, {"VA6": (N2 - DAY,)})], REGIONS), f"{lake}/region_information"
    )
    run(spark, conf, T1)
    run1, run2 = "batch-20261101T000000Z", "batch-20261108T000000Z"
    # At T1 the browser is its own person (edge: its capture is in the future of T1, so hub).
    assert rows(lake / "activation/aam/hub_batch", *ACTIVATION) == [(run1, "us", f"ECID:{eb}", "realized", "backfill")]

    # The browser logs in as customer a: the two persons merge into CRMID:a.
    store.append(spark.createDataFrame([("ECID", eb, "CRMID", "a", N2 - DAY)], LINKS), f"{lake}/identity_graph")
    run(spark, conf, T2)
    edge = [r for r in rows(lake / "activation/aam/edge_streaming", *ACTIVATION, "region") if r[0] == run2]
    assert edge == [
        (run2, "us", "CRMID:a", "realized", "identity_added", "VA6"),  # a was realized without an AAM identity
        (run2, "us", f"ECID:{eb}", "exited", "disqualified", "VA6"),  # the old person, routed on its last graph
    ]

    # A forced re-run of the older T1 is allowed and evaluates against no earlier run.
    forced = run(spark, conf, T1, force=True)
    assert forced.status == "completed" and forced.previous_run is None


def clean_two_runs(spark: SparkSession, base: Path, first: str, then: str) -> dict[str, list]:
    """T1 with one engine, T2 with another (or the same), on a new lake that never saw a failure."""
    lake = base / "lake"
    conf = write_conf(base / "conf", lake, first)
    write_inputs_t1(spark, open_storage(spark, first), str(lake))
    assert run(spark, conf, T1).engine == first
    write_conf(conf, lake, then)
    write_changes_t2(spark, open_storage(spark, then), str(lake))
    (conf / "destinations.yaml").write_text(yaml.safe_dump(destinations(["us", "buyers"], ["buyers"])))
    second = run(spark, conf, T2)
    assert second.engine == then and second.previous_run == "batch-20261101T000000Z"
    engines = {
        r["run_id"]: r["storage_engine"]
        for r in DeltaTable(str(lake / "activation_runs")).to_pyarrow_table().to_pylist()
    }
    assert engines == {"batch-20261101T000000Z": first, "batch-20261108T000000Z": then}
    return snapshot(lake)


def test_a_lake_continued_with_the_other_engine_gives_the_same_outputs(
    spark: SparkSession, tmp_path: Path, first: str, then: str, after_t2: dict[str, dict[str, list]]
) -> None:
    """The same outputs as a lake that used one engine throughout — and that failed once at T2 and was run
    again (the lakes of test_two_runs_produce_every_change_reason)."""
    changed_engine = clean_two_runs(spark, tmp_path / "changed", first, then)
    reference = after_t2.get(first) or clean_two_runs(spark, tmp_path / "one-engine", first, first)
    assert changed_engine == reference


def test_no_raw_email_or_phone_reaches_a_hashing_destination(spark: SparkSession, tmp_path: Path) -> None:
    """A person whose best identity is an e-mail (or a phone number) gets a hashed person id,
    and no column of a ``hash_emails`` destination's outputs carries the raw value. (Engine-independent: run on
    delta-rs only.)"""
    lake = tmp_path / "lake"
    conf = write_conf(tmp_path / "conf", lake, "delta-rs")
    email, phone = " Raw.Only.Email@Leak.Example ", "+1 555 0100"
    (conf / "destinations.yaml").write_text(
        yaml.safe_dump(
            {
                "destinations": [
                    {
                        "id": "aam",
                        "type": "audience_manager",
                        "segments": ["us"],
                        "hash_emails": True,
                        "namespaces": ["EMAIL_LC_SHA256", "ECID"],
                    },
                    {
                        "id": "campaign",
                        "type": "campaign",
                        "segments": ["us"],
                        "hash_emails": True,
                        "namespaces": ["EMAIL_LC_SHA256", "Phone"],
                    },
                ]
            }
        )
    )
    store = open_storage(spark, "delta-rs")
    store.overwrite(
        spark.createDataFrame(
            [
                frag({"Email": email}, N1 - DAY, "US", "y"),
                frag({"Phone": phone, "ECID": E1}, N1 - DAY, "US", "y"),
            ],
            FRAGMENTS,
        ),
        f"{lake}/profile_fragments",
    )
    store.overwrite(spark.createDataFrame([], EVENTS), f"{lake}/experience_events")
    run(spark, conf, T1)

    def sha(value: str) -> str:
        return hashlib.sha256(value.strip().lower().encode()).hexdigest()

    persons = {r["person_id"] for r in DeltaTable(str(lake / "unified_profiles")).to_pyarrow_table().to_pylist()}
    assert persons == {f"Email:sha256:{sha(email)}", f"Phone:sha256:{sha(phone)}"}
    raw_email = email.strip().lower()
    tables = [lake / "activation" / d / k for d in ("aam", "campaign") for k in ("edge_streaming", "hub_batch")]
    seen = 0
    for table in [*tables, lake / "activation_state"]:
        for row in DeltaTable(str(table)).to_pyarrow_table().to_pylist():
            seen += 1
            assert raw_email not in repr(row).lower(), (table, row)  # hashed everywhere, identityMap included
            # A phone number travels only inside the identity map sent to a destination accepting Phone.
            others = {k: v for k, v in row.items() if k not in ("identityMap", "identities_sent")}
            assert phone not in repr(others), (table, row)
    assert seen == 8  # both persons to both destinations: a change row and a state row each
