"""The hubs a running stream keeps between micro-batches (``app/known_hubs.py``): handed on only while they are
sure to be hubs — the next micro-batch continues from the run that kept them, with the same identity settings,
and no input row was removed since — kept merged and bounded otherwise."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from pyspark.sql import DataFrame, SparkSession

from audience_activation.app import known_hubs
from audience_activation.app.known_hubs import KnownHubs
from audience_activation.config import AppConfig, load_config
from audience_activation.pipeline.micro_batch import Changes, TableChange
from audience_activation.runlog import PreviousRun
from test_batch import write_conf

IDENTITY = "namespace string, id string"
LINKS = "src_namespace string, src_id string, dst_namespace string, dst_id string"


@pytest.fixture()
def config(tmp_path: Path) -> AppConfig:
    return load_config(write_conf(tmp_path / "conf", tmp_path / "lake", "delta-rs"))


def appended(spark: SparkSession, removed: list[tuple[str, ...]] | None = None) -> Changes:
    """A change of ``identity_graph``: one link added, ``removed`` rows removed."""
    added = spark.createDataFrame([("ECID", "e", "IDFA", "d")], LINKS)
    gone = spark.createDataFrame(removed or [], LINKS)
    return Changes(links=TableChange(before=added.limit(0), added=added, removed=gone))


def regions_compacted(spark: SparkSession) -> Changes:
    """A change of ``region_information`` that removed a row (and of nothing else)."""
    row = spark.createDataFrame([("ECID", "e")], IDENTITY)
    return Changes(regions=TableChange(before=row, added=row.limit(0), removed=row))


#: The input versions every run of these tests read, and the micro-batches read after it.
READ = {"profile_fragments": 3, "identity_graph": 2}
NOW = {"profile_fragments": 3, "identity_graph": 4}


def previous(run_id: str) -> PreviousRun:
    """A completed run ``run_id`` (the run a micro-batch continues from) that read the inputs at :data:`READ`."""
    return PreviousRun(run_id, dt.datetime(2026, 12, 1), {}, {}, dict(READ))


def offer(kept: KnownHubs, spark: SparkSession, config: AppConfig, run_id: str, changes: Changes) -> DataFrame | None:
    """What ``kept`` hands to a micro-batch continuing from ``run_id`` at :data:`NOW` with ``changes``."""
    return kept.for_micro_batch(spark, config, previous(run_id), NOW, changes)


def handed(hubs: DataFrame | None) -> list[tuple[str, str]] | None:
    return None if hubs is None else sorted((r.namespace, r.id) for r in hubs.collect())


def test_hubs_are_handed_to_the_micro_batch_that_continues_from_their_run(
    spark: SparkSession, config: AppConfig
) -> None:
    kept = KnownHubs()
    assert offer(kept, spark, config, "batch-1", appended(spark)) is None  # none yet
    kept.remember("streaming-1", config, KnownHubs.found(spark.createDataFrame([("IDFA", "d")], IDENTITY)))
    assert handed(offer(kept, spark, config, "streaming-1", appended(spark))) == [("IDFA", "d")]
    # The micro-batch found another one: both are kept for the next.
    kept.remember("streaming-2", config, [("IDFA", "x")])
    assert handed(offer(kept, spark, config, "streaming-2", Changes())) == [("IDFA", "d"), ("IDFA", "x")]


def test_hubs_are_forgotten_when_they_may_no_longer_be_hubs(
    spark: SparkSession, config: AppConfig, tmp_path: Path
) -> None:
    def kept_after(previous_run: str, changes: Changes, settings: AppConfig = config) -> KnownHubs:
        kept = KnownHubs()
        kept.remember("streaming-1", config, [("IDFA", "d")])
        assert offer(kept, spark, settings, previous_run, changes) is None
        return kept

    # Another run completed in between (a batch run, a micro-batch of another stream).
    forgotten = kept_after("batch-2", appended(spark))
    assert len(forgotten) == 0
    assert offer(forgotten, spark, config, "streaming-1", appended(spark)) is None  # for good
    # A row was removed since (a delete, a compaction): an identity's neighbours may have shrunk.
    kept_after("streaming-1", appended(spark, [("ECID", "e", "IDFA", "d")]))
    # Region rows link nothing: their removal keeps the hubs.
    kept = KnownHubs()
    kept.remember("streaming-1", config, [("IDFA", "d")])
    assert handed(offer(kept, spark, config, "streaming-1", regions_compacted(spark))) == [("IDFA", "d")]
    # An input the run read is gone (deleted): its rows are.
    kept = KnownHubs()
    kept.remember("streaming-1", config, [("IDFA", "d")])
    assert (
        kept.for_micro_batch(spark, config, previous("streaming-1"), {**NOW, "identity_graph": None}, Changes()) is None
    )
    assert len(kept) == 0
    # Other identity settings decide other hubs.
    (tmp_path / "conf" / "job.yaml").write_text(
        yaml.safe_dump(
            {**yaml.safe_load((tmp_path / "conf" / "job.yaml").read_text()), "identity": {"max_links_per_identity": 9}}
        )
    )
    kept_after("streaming-1", appended(spark), load_config(tmp_path / "conf"))
    # A micro-batch that failed keeps nothing new: one continuing from the same run (a caller that goes on) gets
    # them again.
    kept = KnownHubs()
    kept.remember("streaming-1", config, [("IDFA", "d")])
    assert offer(kept, spark, config, "streaming-1", appended(spark)) is not None
    assert offer(kept, spark, config, "streaming-1", appended(spark)) is not None
    kept.remember("streaming-2", config, [])  # the replay completed, finding no hub: those handed to it stay
    assert handed(offer(kept, spark, config, "streaming-2", appended(spark))) == [("IDFA", "d")]


def test_at_most_so_many_hubs_are_kept(spark: SparkSession, config: AppConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_hubs, "MAX_KNOWN_HUBS", 2)
    found = KnownHubs.found(spark.createDataFrame([("IDFA", "c"), ("IDFA", "a"), ("IDFA", "b")], IDENTITY))
    assert found == [("IDFA", "a"), ("IDFA", "b")]
    kept = KnownHubs()
    kept.remember("streaming-1", config, found)
    offer(kept, spark, config, "streaming-1", Changes())
    kept.remember("streaming-2", config, [("ECID", "z")])
    assert len(kept) == 2
    assert handed(offer(kept, spark, config, "streaming-2", Changes())) == [("ECID", "z"), ("IDFA", "a")]


SETTLED = "namespace string, id string, person_id string"


def settled_of(kept: KnownHubs) -> set[tuple[str, str, str]]:
    handed_settled = kept.settled()
    assert handed_settled is not None
    return {(r.namespace, r.id, r.person_id) for r in handed_settled.collect()}


def test_settled_persons_are_handed_on_replaced_and_forgotten_like_the_hubs(
    spark: SparkSession, config: AppConfig
) -> None:
    kept = KnownHubs()
    assert kept.settled() is None  # nothing offered yet
    offer(kept, spark, config, "batch-1", appended(spark))
    assert settled_of(kept) == set()  # none known: the micro-batch starts tracking them
    kept.found_settled(spark.createDataFrame([("ECID", "e", "p"), ("Email", "m", "p")], SETTLED))
    kept.remember("streaming-1", config, [])
    offer(kept, spark, config, "streaming-1", appended(spark))
    first = kept.settled()
    assert settled_of(kept) == {("ECID", "e", "p"), ("Email", "m", "p")}
    # The next micro-batch's replace them, and the earlier ones' blocks are released.
    kept.found_settled(spark.createDataFrame([("ECID", "e", "q")], SETTLED))
    kept.remember("streaming-2", config, [])
    assert first is not None
    with pytest.raises(Exception, match="(?i)checkpoint|block"):
        first.collect()
    offer(kept, spark, config, "streaming-2", Changes())
    assert settled_of(kept) == {("ECID", "e", "q")}
    # A completed micro-batch that reported none (not tracked) leaves none: the kept ones described the clusters
    # before it.
    kept.remember("streaming-3", config, [])
    offer(kept, spark, config, "streaming-3", Changes())
    assert settled_of(kept) == set()
    # Forgotten as the hubs are: another run completed in between, or a row was removed.
    for previous_run, changes in (
        ("batch-9", appended(spark)),
        ("streaming-4", appended(spark, [("E", "e", "I", "d")])),
    ):
        kept = KnownHubs()
        offer(kept, spark, config, "batch-1", Changes())
        kept.found_settled(spark.createDataFrame([("ECID", "e", "p")], SETTLED))
        kept.remember("streaming-4", config, [])
        offer(kept, spark, config, previous_run, changes)
        assert settled_of(kept) == set()
    # A failed micro-batch's are released by the next offer; close releases the kept ones.
    kept.found_settled(spark.createDataFrame([("ECID", "e", "r")], SETTLED))
    offer(kept, spark, config, "streaming-4", Changes())
    assert settled_of(kept) == set()
    kept.close()
