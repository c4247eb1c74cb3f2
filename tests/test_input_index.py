"""The identity index of the inputs: lookups through it find exactly the rows a scan finds, and the running stream
keeps it right across appends, rewrites and absent tables (the end-to-end streaming tests then use it too)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, Row, SparkSession

from audience_activation import input_index, touching
from audience_activation.app import index_cache
from audience_activation.app.index_cache import InputIndexCache
from audience_activation.as_of import as_of
from audience_activation.config import load_config
from audience_activation.storage import DeltaStorage
from test_batch import EVENTS, FRAGMENTS, LINKS, REGIONS, write_conf

T = dt.datetime(2026, 11, 29)
HOUR = dt.timedelta(hours=1)
E1, E2 = "1" * 38, "2" * 38  # valid ECIDs


def imap(ids: dict[str, list[str]]) -> dict[str, list[tuple[str, bool]]]:
    return {ns: [(i, False) for i in values] for ns, values in ids.items()}


def fragment(ids: dict[str, list[str]], at: dt.datetime, dataset: str = "crm") -> tuple:
    return (imap(ids), dataset, at, None, None)


def inputs(spark: SparkSession) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    fragments = spark.createDataFrame(
        [
            fragment({"ECID": [E1], "Email": ["x@example.com"]}, T - HOUR),  # two looked-up identities, twice
            fragment({"ECID": [E1], "Email": ["x@example.com"]}, T - HOUR),
            fragment({"Email_LC_SHA256": ["h1"]}, T - HOUR),  # namespace normalised before matching
            fragment({"ECID": [E1]}, T + HOUR),  # not yet ingested at T
            fragment({"Email": ["y@example.com"]}, T - HOUR),  # touches nothing
        ],
        FRAGMENTS,
    )
    events = spark.createDataFrame(
        [
            ("e1", T - HOUR, "web", imap({"ECID": [E2], "Email": ["y@example.com"]})),  # E2 only
            ("e2", T - HOUR, "web", imap({"ECID": [E2], "Email": ["z@example.com"]})),  # same E2, another list
            ("e3", T - HOUR, "web", None),
        ],
        EVENTS,
    )
    links = spark.createDataFrame(
        [
            ("ECID", E1, "Email", "x@example.com", T - HOUR),  # both ends looked up: twice in a scan's part
            ("Email", "y@example.com", "ECID", E2, T - HOUR),  # destination end only
            ("Email_LC_SHA256", "h1", "IDFA", "d1", T - HOUR),  # source spelled with an alias
            ("ECID", E2, "IDFA", "d2", T + HOUR),  # seen after T
            ("IDFA", "d3", "IDFA", "d4", T - HOUR),  # touches nothing
        ],
        LINKS,
    )
    regions = spark.createDataFrame(
        [
            (imap({"ECID": [E1]}), {"VA6": (T - HOUR,), "OR2": (T + HOUR,)}),  # the later capture dropped
            (imap({"ECID": [E2]}), {"VA6": (T + HOUR,)}),  # captured after T only
            (imap({"ECID": ["3" * 38]}), {"VA6": (T - HOUR,)}),  # touches nothing
        ],
        REGIONS,
    )
    return fragments, events, links, regions


LOOKED_UP = [("ECID", E1), ("Email", "x@example.com"), ("ECID", E2), ("EMAIL_LC_SHA256", "h1")]


def as_values(df: DataFrame | None) -> list[str]:
    """The rows as sorted strings (maps cannot be sorted by Spark), every copy kept."""
    assert df is not None
    return sorted(str(sorted(r.asDict(recursive=True).items())) for r in df.collect())


def test_touching_through_the_index_finds_what_a_scan_of_the_inputs_as_of_t_finds(spark: SparkSession) -> None:
    fragments, events, links, regions = inputs(spark)
    identities = spark.createDataFrame(LOOKED_UP, "namespace string, id string")

    index = input_index.index_inputs(fragments, events, links, regions)
    found = input_index.touching(index, identities, T)
    scanned = touching.touching(as_of(fragments, events, links, regions, T), identities)

    for name in ("fragments", "events", "links", "regions"):
        assert as_values(getattr(found, name)) == as_values(getattr(scanned, name)), name
    # What both find, written out: the duplicate fragment twice; the link with both ends looked up twice.
    assert found.fragments is not None and found.events is not None and found.links is not None
    assert found.regions is not None
    assert sorted(len(r.identityMap) for r in found.fragments.collect()) == [1, 2, 2]
    assert sorted(r._id for r in found.events.collect()) == ["e1", "e2"]
    assert sorted(r.src_id for r in found.links.collect()) == [E1, E1, "h1", "y@example.com"]
    [region] = found.regions.collect()
    assert region.identityMap == {"ECID": [Row(id=E1, primary=False)]}
    assert list(region.userActivityRegions) == ["VA6"]


def test_holding_through_the_index_keeps_every_row_that_holds_an_identity(spark: SparkSession) -> None:
    fragments, _, _, _ = inputs(spark)
    identities = spark.createDataFrame([("ECID", E1), ("EMAIL_LC_SHA256", "h1")], "namespace string, id string")
    index = input_index.index_records(fragments, "fragments")

    kept = input_index.holding(fragments, index, identities)

    assert kept.columns == fragments.columns  # whole rows
    assert sorted(str(r.identityMap) for r in kept.collect()) == sorted(
        str(r.identityMap) for r in fragments.collect()[:4]
    )


def test_a_links_index_has_no_identity_lists(spark: SparkSession) -> None:
    _, _, links, _ = inputs(spark)
    with pytest.raises(ValueError, match="no identity lists"):
        input_index.lists_holding(
            input_index.index_links(links), spark.createDataFrame(LOOKED_UP, "namespace string, id string")
        )


def test_the_kept_index_follows_appends_rewrites_and_absent_tables(
    spark: SparkSession, store: DeltaStorage, tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rules of :mod:`audience_activation.app.index_cache`: built on first use, kept for the same version,
    extended by the added files of an append, rebuilt after a rewrite, parts merged past ``MAX_PARTS``, dropped
    with an absent table; every time, it finds the rows a scan of that version finds."""
    monkeypatch.setattr(index_cache, "MAX_PARTS", 3)  # a fourth part merges them (8 in use)
    config = load_config(write_conf(tmp_path / "conf", tmp_path / "lake", engine))
    location = config.job.table_location("profile_fragments")
    fragments, _, _, _ = inputs(spark)
    rows = fragments.collect()
    store.append(spark.createDataFrame(rows[:1], FRAGMENTS), location)
    identities = spark.createDataFrame(LOOKED_UP, "namespace string, id string")
    cache = InputIndexCache(store, config)

    def check(version: int) -> None:
        index = cache.update({"profile_fragments": version})
        assert index.events is None and index.links is None and index.regions is None
        table = store.read(location, version).df
        scanned = touching.touching(as_of(table, None, None, None, T), identities).fragments
        assert as_values(input_index.touching(index, identities, T).fragments) == as_values(scanned)

    try:
        check(0)
        check(0)
        assert (cache.built, cache.appended) == (1, 0)
        for row in rows[1:]:
            store.append(spark.createDataFrame([row], FRAGMENTS), location)
        check(store.version(location))  # four appends read at once: one part
        assert (cache.built, cache.appended) == (1, 1)
        for parts in (3, 1):  # the base and two appended parts, then one more: indexed whole again
            store.append(spark.createDataFrame(rows[:1], FRAGMENTS), location)
            check(store.version(location))
            assert len(cache._tables["profile_fragments"].parts) == parts
        assert (cache.built, cache.appended) == (2, 2)
        store.overwrite(spark.createDataFrame(rows[2:], FRAGMENTS), location)  # files removed
        check(store.version(location))
        assert (cache.built, cache.appended) == (3, 2)
        check(1)  # an older version: indexed whole
        assert cache.built == 4
        # With deletion vectors, a delete need not remove its file: an append is not trusted to be one.
        properties = store.properties
        monkeypatch.setattr(store, "properties", lambda loc: {**properties(loc), "delta.enableDeletionVectors": "true"})
        store.append(spark.createDataFrame(rows[:1], FRAGMENTS), location)
        check(store.version(location))
        assert (cache.built, cache.appended) == (5, 2)
        assert cache.update({"profile_fragments": None}).fragments is None
        assert cache._tables == {}
    finally:
        cache.close()
