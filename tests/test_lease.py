"""The lake lease and the roll-back of runs that did not complete, on both storage engines.

Leases are taken, refused, freed (released, expired, holder process gone), raced by threads, renewed and
lost; roll-back restores tables to their version before an attempt's commits (for several numbers of
commits), removes tables the attempt created, and leaves other tables alone.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from audience_activation import lease as lease_module
from audience_activation import recovery
from audience_activation.lease import LakeLease, LeaseHeldError, LeaseLostError
from audience_activation.storage import DeltaStorage
from audience_activation.storage.base import commit_info, commit_versions


def make_lease(spark: SparkSession, store: DeltaStorage, lake: Path, run: str, timeout: int = 300) -> LakeLease:
    return LakeLease(spark, store, str(lake), run, timeout)


def lease_row(lake: Path) -> dict:
    rows = DeltaTable(str(lake / "_lease")).to_pyarrow_table().to_pylist()
    assert len(rows) == 1
    return rows[0]


def test_a_held_lease_refuses_a_second_run_naming_the_holder(
    spark: SparkSession, store: DeltaStorage, lake: Path
) -> None:
    first = make_lease(spark, store, lake, "batch-20261129T000000Z").acquire()
    try:
        assert first.held and first.pending == () and first.previous is None
        with pytest.raises(LeaseHeldError, match=r"in use by run batch-20261129T000000Z \(attempt") as refused:
            make_lease(spark, store, lake, "batch-20261130T000000Z").acquire()
        assert f"attempt {first.attempt[:8]}" in str(refused.value)
        assert lease_row(lake)["state"] == "running"
    finally:
        first.release()
    row = lease_row(lake)
    assert (row["state"], row["run_id"], row["pending"]) == ("released", "batch-20261129T000000Z", [])

    # Released: the next run takes it, with nothing to undo.
    second = make_lease(spark, store, lake, "batch-20261130T000000Z").acquire()
    assert second.pending == () and second.previous is not None and second.previous.state == "released"
    second.release()


def forge(lake: Path, **changes: object) -> None:
    """Rewrite the lease row as another process would have left it (a plain delta-rs overwrite)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    table = DeltaTable(str(lake / "_lease"))
    row = {**table.to_pyarrow_table().to_pylist()[0], **changes}
    write_deltalake(
        str(lake / "_lease"), pa.Table.from_pylist([row], schema=table.to_pyarrow_table().schema), mode="overwrite"
    )


def test_a_lease_whose_holder_died_or_expired_is_taken_and_its_attempt_undone(
    spark: SparkSession, store: DeltaStorage, lake: Path
) -> None:
    dead = make_lease(spark, store, lake, "batch-20261129T000000Z").acquire()
    dead._stop.set()  # the holder stops renewing, as if killed
    # A process on this host that is gone: the pid of a child that exited.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    forge(lake, pid=int(child.stdout), process_start="1")
    taker = make_lease(spark, store, lake, "batch-20261130T000000Z").acquire()
    assert taker.pending == (dead.attempt,) and taker.previous is not None
    assert taker.previous.run_id == "batch-20261129T000000Z"
    # The dead holder finds out before its next commit.
    with pytest.raises(LeaseLostError, match="now held by run batch-20261130T000000Z"):
        dead.renew()
    with pytest.raises(LeaseLostError):
        dead.check()

    # Killed before settling: the next taker inherits both attempts.
    taker._stop.set()
    forge(lake, expires_at=dt.datetime(2026, 1, 1), host="another-host")
    third = make_lease(spark, store, lake, "batch-20261201T000000Z").acquire()
    assert third.pending == (dead.attempt, taker.attempt)
    third.settle()
    assert lease_row(lake)["pending"] == []
    third.release(abandoned=True)  # a roll-back that failed hands the debt on
    fourth = make_lease(spark, store, lake, "batch-20261202T000000Z").acquire()
    assert fourth.pending == (third.attempt,)
    fourth.release()


def test_a_live_holder_on_another_host_is_waited_for_until_expiry(
    spark: SparkSession, store: DeltaStorage, lake: Path
) -> None:
    holder = make_lease(spark, store, lake, "batch-20261129T000000Z").acquire()
    holder._stop.set()
    forge(lake, host="another-host", pid=1)
    with pytest.raises(LeaseHeldError, match="on host another-host"):
        make_lease(spark, store, lake, "batch-20261130T000000Z").acquire()


def test_runs_racing_for_the_lease_let_exactly_one_through(
    spark: SparkSession, store: DeltaStorage, lake: Path
) -> None:
    make_lease(spark, store, lake, "batch-20261101T000000Z").acquire().release()  # the table exists
    outcomes: dict[int, object] = {}
    start = threading.Barrier(3)

    def contend(n: int) -> None:
        start.wait()
        try:
            outcomes[n] = make_lease(spark, store, lake, f"batch-2026112{n}T000000Z").acquire()
        except LeaseHeldError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes.values() if isinstance(o, LakeLease)]
    assert len(winners) == 1, outcomes
    assert lease_row(lake)["attempt"] == winners[0].attempt
    for loser in (o for o in outcomes.values() if isinstance(o, LeaseHeldError)):
        assert winners[0].run_id in str(loser)
    winners[0].release()


def test_the_holder_renews_its_lease(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    held = make_lease(spark, store, lake, "batch-20261129T000000Z").acquire()
    held._stop.set()
    before = lease_row(lake)
    held.renew()
    after = lease_row(lake)
    assert after["epoch"] == before["epoch"] + 1 and after["attempt"] == held.attempt
    assert after["expires_at"] >= before["expires_at"]
    held.release()


def test_process_liveness() -> None:
    import os

    me = os.getpid()
    assert lease_module.process_alive(me, lease_module.process_start(me))
    assert not lease_module.process_alive(me, "not-my-start-time")  # a reused pid
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not lease_module.process_alive(int(child.stdout), "")


# -- roll-back -------------------------------------------------------------------------------------------


def attempts_of(location: str) -> list[str | None]:
    return [commit_info(location, v).get("attempt") for v in commit_versions(location)]


@pytest.mark.parametrize("commits", [1, 3])
def test_rollback_restores_the_version_before_the_attempt(
    spark: SparkSession, store: DeltaStorage, lake: Path, commits: int
) -> None:
    table, untouched, created = (str(lake / name) for name in ("t", "u", "c"))
    store.overwrite(spark.createDataFrame([(1,)], "n int"), table, commit_info={"attempt": "before"})
    store.overwrite(spark.createDataFrame([(2,)], "n int"), untouched, commit_info={"attempt": "before"})
    for k in range(commits):
        store.append(spark.createDataFrame([(10 + k,)], "n int"), table, commit_info={"attempt": "failed"})
    store.overwrite(spark.createDataFrame([(3,)], "n int"), created, commit_info={"attempt": "failed"})
    before_untouched = commit_versions(untouched)

    restored = recovery.rollback(
        store, [table, untouched, created, str(lake / "absent")], ["failed"], commit_info_={"attempt": "me/rollback"}
    )
    assert restored == {table: 0, created: None}
    assert [r["n"] for r in DeltaTable(table).to_pyarrow_table().to_pylist()] == [1]
    assert attempts_of(table) == ["before", *["failed"] * commits, "me/rollback"]
    assert not Path(created).exists()
    assert commit_versions(untouched) == before_untouched
    # Idempotent: nothing of the attempt is at the tail any more.
    assert recovery.rollback(store, [table, untouched], ["failed"], commit_info_={"attempt": "x"}) == {}


def test_scratch_folders_of_other_runs_are_swept(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for name in ("dead-attempt", "mine", "preview-recent"):
        (lake / "_scratch" / name / "00001").mkdir(parents=True)
    assert recovery.sweep_scratch(str(lake), keep="mine") == [f"{lake}/_scratch/dead-attempt"]
    assert sorted(p.name for p in (lake / "_scratch").iterdir()) == ["mine", "preview-recent"]
    for name in ("mine", "preview-recent"):
        import shutil

        shutil.rmtree(lake / "_scratch" / name)
    recovery.sweep_scratch(str(lake), keep="mine")
    assert not (lake / "_scratch").exists()
