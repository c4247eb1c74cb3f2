"""The streaming job end to end on the batch tests' hand-made inputs: a lake run by the batch job at T1, new rows
appended, then ``stream --trigger available-now`` at T2 on one copy and the batch job at T2 on the other.

The stream must give what the batch job gives for the streamed segments (membership, activated sets, change
rows, identity clusters); a batch run after the stream must emit only what the stream has not (its changes and
state equal those of a lake run by the batch job throughout); a replayed micro-batch writes nothing twice."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from deltalake import DeltaTable
from pyspark.sql import SparkSession

from audience_activation import app
from audience_activation.config import load_config
from audience_activation.storage import open_storage
from test_batch import T1, T2, rows, run, write_changes_t2, write_conf, write_inputs_t1

T3 = T2 + dt.timedelta(days=1)
STREAMED = "us"  # profile-only: edge; "buyers" (an event query without a window) is batch


def changes(lake: Path, run_prefix: str, segment: str | None = None) -> list[tuple]:
    """Change rows of runs whose id starts with ``run_prefix``: destination, route, segment, person, status, reason,
    identities sent, region."""
    out = []
    for destination in ("aam", "cja"):
        for route in ("edge_streaming", "hub_batch"):
            for r in DeltaTable(str(lake / "activation" / destination / route)).to_pyarrow_table().to_pylist():
                if r["run_id"].startswith(run_prefix) and segment in (None, r["segment_id"]):
                    ids = sorted((ns, i["id"]) for ns, items in r["identityMap"] for i in items)
                    out.append(
                        (destination, route, r["segment_id"], r["person_id"], r["status"], r["reason"], repr(ids),
                         r.get("region"))
                    )  # fmt: skip
    return sorted(out)


def state(lake: Path) -> dict[str, list]:
    return {
        "clusters": rows(lake / "identity_clusters", "namespace", "id", "person_id", "graph_size"),
        "membership": rows(lake / "segment_membership", "person_id", "segment_id", "status", "last_qualification_time"),
        "activation": rows(
            lake / "activation_state", "destination_id", "segment_id", "person_id", "activated", "consent_ok"
        ),
        "profiles": rows(lake / "unified_profiles", "person_id", "fragment_count"),
    }


def only(table: list[tuple], segment: str, column: int) -> list[tuple]:
    return [r for r in table if r[column] == segment]


def test_stream_matches_batch_and_batch_continues_from_it(spark: SparkSession, tmp_path: Path, engine: str) -> None:
    store = open_storage(spark, engine)
    streamed_conf = write_conf(tmp_path / "conf-a", tmp_path / "a", engine)
    batch_conf = write_conf(tmp_path / "conf-b", tmp_path / "b", engine)
    write_inputs_t1(spark, store, str(tmp_path / "a"))
    run(spark, streamed_conf, T1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for lake in ("a", "b"):
        write_changes_t2(spark, store, str(tmp_path / lake))

    config = load_config(streamed_conf)
    streamed = app.run_stream(spark, config, evaluation_time=T2)
    run(spark, batch_conf, T2)

    assert [m.run_id for m in streamed.micro_batches] == ["streaming-20261108T000000Z-0"]
    micro = streamed.micro_batches[0]
    assert micro.previous_run == "batch-20261101T000000Z"
    assert micro.classification == {"us": "edge", "buyers": "batch"}
    a, b = state(tmp_path / "a"), state(tmp_path / "b")
    assert a["clusters"] == b["clusters"]
    assert only(a["membership"], STREAMED, 1) == only(b["membership"], STREAMED, 1)
    assert only(a["activation"], STREAMED, 1) == only(b["activation"], STREAMED, 1)
    # The batch segment is the batch job's: the stream kept its rows as the T1 run left them.
    assert only(a["membership"], "buyers", 1) == [("CRMID:c1", "buyers", "realized", T1)]
    stream_changes = changes(tmp_path / "a", "streaming-", STREAMED)
    assert stream_changes == changes(tmp_path / "b", "batch-20261108", STREAMED)
    assert {(r[0], r[5]) for r in stream_changes} >= {("aam", "qualified"), ("aam", "disqualified")}
    assert micro.counts.rows["experience_events"] == {"new": 3}  # o3 is after T2: not new yet
    assert sum(micro.counts.changes.values()) == len(stream_changes)

    # A replayed micro-batch that had completed writes nothing (its run id is in the run log).
    again = app.process_micro_batch(spark, config, 0, T2, {"profile_fragments": 1})
    assert again is None
    # The same stream started again has nothing to do.
    assert app.run_stream(spark, config, evaluation_time=T2).micro_batches == []

    # A batch run after the stream emits only what the stream has not: nothing more for the streamed segment
    # than after a batch at T2, and the batch segment's changes the stream left to it. Over the three runs each
    # lake sent every destination the same changes, and ends in the same state.
    run(spark, streamed_conf, T3)
    run(spark, batch_conf, T3)
    a_t3, b_t3 = (
        changes(tmp_path / "a", "batch-20261109", STREAMED),
        changes(tmp_path / "b", "batch-20261109", STREAMED),
    )
    assert a_t3 == b_t3
    assert not [r for r in a_t3 if r[5] == "qualified"]
    assert changes(tmp_path / "a", "batch-20261109", "buyers") == changes(tmp_path / "b", "batch-20261108", "buyers")
    assert changes(tmp_path / "a", "") == changes(tmp_path / "b", "")
    a, b = state(tmp_path / "a"), state(tmp_path / "b")
    # The same state, but the batch segment's changes are a day later (T3) on the streamed lake.
    assert [r[:3] for r in a.pop("membership")] == [r[:3] for r in b["membership"]]
    assert only(state(tmp_path / "a")["membership"], STREAMED, 1) == only(b.pop("membership"), STREAMED, 1)
    assert a == b
