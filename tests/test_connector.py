"""The Delta Lake Spark connector: pinned coordinate, where its jars are found, how sessions load them, and
what ``jars/fetch.sh`` does when Maven cannot deliver."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from pyspark.sql import SparkSession

from audience_activation.storage.connector import (
    COMPLETE_MARKER,
    JARS_ENV,
    DeltaJars,
    connector_conf,
    default_jars_dir,
    delta_spark_coordinate,
    find_delta_jars,
)

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "jars" / "pom.xml"
NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pom_coordinate() -> str:
    project = ET.parse(POM).getroot()
    props = {child.tag.split("}")[1]: child.text for child in project.find("m:properties", NS)}
    dependency = project.find("m:dependencies/m:dependency", NS)
    artifact = dependency.find("m:artifactId", NS).text
    for key, value in props.items():
        artifact = artifact.replace("${" + key + "}", value or "")
    version = dependency.find("m:version", NS).text.replace("${delta.version}", props["delta.version"])
    return f"{dependency.find('m:groupId', NS).text}:{artifact}:{version}"


def test_pom_pins_the_connector_of_the_installed_packages() -> None:
    assert delta_spark_coordinate() == "io.delta:delta-spark_4.2_2.13:4.4.0"
    assert pom_coordinate() == delta_spark_coordinate()


def test_fetched_jars_are_complete_and_hold_the_connector_but_no_second_spark() -> None:
    jars = find_delta_jars({})
    assert jars, jars.reason
    names = {Path(path).name for path in jars.jars}
    assert "delta-spark_4.2_2.13-4.4.0.jar" in names and "delta-storage-4.4.0.jar" in names
    # Nothing Spark ships itself (in a newer version) is fetched a second time.
    assert not [n for n in names if n.startswith(("scala-library", "jackson-databind", "hadoop-", "parquet-"))]
    assert Path(jars.jars[0]).parent == default_jars_dir()


def test_the_test_session_loads_the_connector(spark: SparkSession) -> None:
    assert "delta-spark_4.2_2.13-4.4.0.jar" in spark.conf.get("spark.jars", "")
    assert "io.delta.sql.DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions", "")


def fake_jars(folder: Path, names: list[str], listed: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"PK")
    (folder / COMPLETE_MARKER).write_text("\n".join(listed if listed is not None else names) + "\n")
    return folder


def test_find_delta_jars_rules(tmp_path: Path) -> None:
    good = fake_jars(tmp_path / "good", ["delta-spark_4.2_2.13-4.4.0.jar", "delta-storage-4.4.0.jar"])
    found = find_delta_jars({JARS_ENV: str(good)})
    assert found.jars == (str(good / "delta-spark_4.2_2.13-4.4.0.jar"), str(good / "delta-storage-4.4.0.jar"))
    assert found.reason == f"2 jars in {good}"

    disabled = find_delta_jars({JARS_ENV: "none"})
    assert not disabled and "not loaded" in disabled.reason

    (tmp_path / "empty").mkdir()
    unfinished = find_delta_jars({JARS_ENV: str(tmp_path / "empty")})
    assert not unfinished and unfinished.reason.startswith(f"no fetched Delta Lake Spark jars in {tmp_path / 'empty'}")

    partial = fake_jars(
        tmp_path / "partial", ["delta-spark_4.2_2.13-4.4.0.jar"], ["delta-spark_4.2_2.13-4.4.0.jar", "x.jar"]
    )
    assert find_delta_jars({JARS_ENV: str(partial)}).reason == (
        f"{partial} is incomplete, missing x.jar; run `make jars` again"
    )

    stale = fake_jars(tmp_path / "stale", ["delta-spark_4.1_2.13-4.3.0.jar"])
    reason = find_delta_jars({JARS_ENV: str(stale)}).reason
    assert "different Delta connector (delta-spark_4.1_2.13-4.3.0.jar)" in reason
    assert "(delta-spark_4.2_2.13-4.4.0.jar)" in reason


def test_connector_conf_extends_existing_settings() -> None:
    jars = DeltaJars(("/j/a.jar", "/j/b.jar"), "2 jars")
    assert connector_conf(jars) == {
        "spark.jars": "/j/a.jar,/j/b.jar",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    }
    conf = connector_conf(jars, {"spark.jars": "/other.jar", "spark.sql.extensions": "com.example.Ext"})
    assert conf["spark.jars"] == "/other.jar,/j/a.jar,/j/b.jar"
    assert conf["spark.sql.extensions"] == "com.example.Ext,io.delta.sql.DeltaSparkSessionExtension"


def run_fetch(folder: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(folder / "fetch.sh")], env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )


def test_fetch_without_maven_central_explains_and_falls_back(tmp_path: Path) -> None:
    """Maven offline with an empty local repository is what an unreachable Maven Central looks like."""
    folder = tmp_path / "jars"
    folder.mkdir()
    shutil.copy(ROOT / "jars" / "fetch.sh", folder)
    shutil.copy(POM, folder)
    offline = f"-o -Dmaven.repo.local={tmp_path / 'empty-m2'}"
    result = run_fetch(folder, MVN_FLAGS=offline)
    assert result.returncode == 0  # set-up goes on: the demo runs on delta-rs
    assert "The Delta Lake Spark jars could not be fetched: Maven failed" in result.stderr
    assert "The delta-rs engine will be used (storage.engine: auto falls back to it, and says so)." in result.stderr
    assert not (folder / "lib").exists()
    assert not list(folder.glob(".lib-staging-*"))
    strict = run_fetch(folder, MVN_FLAGS=offline, STRICT="1")
    assert strict.returncode == 1 and "could not be fetched" in strict.stderr


def test_fetch_is_done_once(tmp_path: Path) -> None:
    folder = tmp_path / "jars"
    shutil.copytree(ROOT / "jars", folder, ignore=shutil.ignore_patterns("*.log", ".lib-staging-*"))
    assert (folder / "lib" / COMPLETE_MARKER).stat().st_mtime >= (folder / "pom.xml").stat().st_mtime
    # A complete, current fetch is reused without starting Maven (here one that would fail at once).
    result = run_fetch(folder, MVN_FLAGS="--no-such-maven-option")
    assert result.returncode == 0 and result.stderr == ""
