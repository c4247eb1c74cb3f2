"""Tests of the configuration layer (no Spark)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audience_activation.config import (
    ActivationKind,
    AppConfig,
    ConfigError,
    DatasetPrecedencePolicy,
    DestinationConfig,
    DestinationType,
    JobConfig,
    NamespaceConfig,
    NamespacesConfig,
    NamespaceType,
    RegionsConfig,
    Routing,
    StorageEngine,
    TableName,
    TimestampOrderedPolicy,
    load_config,
    normalize_namespace,
)

SHIPPED_CONF = Path(__file__).resolve().parents[1] / "conf"

SEGMENTS_YAML = """\
segments:
  - id: s1
    name: Segment one
    expression: {type: PQL, format: pql/text, value: 'homeAddress.countryCode = "US"'}
  - id: s2
    name: Segment two
    expression: {type: PQL, format: pql/text, value: 'loyalty.tier = "gold"'}
"""


def write_conf(conf_dir: Path, files: dict[str, str]) -> Path:
    """Writes small YAML files (paths relative to conf_dir) and returns conf_dir."""
    for name, text in files.items():
        path = conf_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return conf_dir


def load_error(conf_dir: Path, files: dict[str, str]) -> ConfigError:
    """Loads a config that must fail and returns the error."""
    write_conf(conf_dir, files)
    with pytest.raises(ConfigError) as info:
        load_config(conf_dir)
    return info.value


# -- the shipped conf/ --------------------------------------------------------------------------------------------


def test_shipped_conf_loads() -> None:
    config = load_config(SHIPPED_CONF)

    assert isinstance(config, AppConfig)
    assert config.job == JobConfig()  # job.yaml spells out the defaults
    assert [d.id for d in config.destinations] == [
        "aam",
        "target",
        "campaign",
        "ajo",
        "marketo",
        "commerce",
        "cja",
    ]
    assert {d.type for d in config.destinations} == set(DestinationType) - {DestinationType.custom}
    assert [s.id for s in config.segments] == [
        "us-residents",
        "loyalty-gold-platinum",
        "email-subscribers",
        "recent-purchasers",
        "recent-product-viewers",
        "view-then-add-to-cart",
        "high-value-customers",
        "engaged-app-users",
        "us-loyal-recent-buyers",
    ]
    assert config.segment("loyalty-gold-platinum").expression.value == 'loyalty.tier in ["gold", "platinum"]'
    assert config.segment_files["us-residents"] == SHIPPED_CONF / "segments.yaml"
    assert config.namespaces.resolve("LOYALTY_ID") == NamespaceConfig(
        type=NamespaceType.cross_device, unique=False, priority=10
    )
    assert config.namespaces.unknown_priority == 11
    aam = config.destination("aam")
    assert aam.consent == 'consents.share.val = "y"'
    assert aam.hash_emails is True
    assert config.destination("marketo").namespaces == ["ECID", "Email"]


def test_missing_optional_files_use_defaults(tmp_path: Path) -> None:
    config = load_config(write_conf(tmp_path, {"segments.yaml": SEGMENTS_YAML}))

    assert config.conf_dir == tmp_path
    assert config.job == JobConfig()
    assert config.namespaces == NamespacesConfig()
    assert config.regions == RegionsConfig()
    assert config.destinations == []
    assert [s.id for s in config.segments] == ["s1", "s2"]


def test_job_defaults() -> None:
    job = JobConfig()

    assert job.lake.root == "./lake"
    assert job.storage.engine is StorageEngine.auto
    assert job.merge_policy == TimestampOrderedPolicy()
    assert job.activation.edge_window_days == 14
    assert job.membership.exited_retention_days == 30
    assert (job.identity.max_links_per_identity, job.identity.max_identities_per_graph) == (50, 50)
    assert job.identity.cooccurrence_links is True
    assert (job.spark.app_name, job.spark.master, job.spark.shuffle_partitions) == ("audience-activation", None, None)


def test_job_values_and_spark_conf_scalars(tmp_path: Path) -> None:
    write_conf(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "job.yaml": (
                "storage: {engine: delta-rs}\n"
                "merge_policy: {type: dataset_precedence, datasets: [crm_profiles, web_profiles]}\n"
                "spark:\n  conf:\n    spark.sql.adaptive.enabled: true\n    spark.executor.cores: 4\n"
                "identity:\n  max_links_per_identity:\n"  # empty value: the default
            ),
        },
    )
    job = load_config(tmp_path).job

    assert job.storage.engine is StorageEngine.delta_rs
    assert job.merge_policy == DatasetPrecedencePolicy(datasets=["crm_profiles", "web_profiles"])
    assert job.spark.conf == {"spark.sql.adaptive.enabled": "true", "spark.executor.cores": "4"}
    assert job.identity.max_links_per_identity == 50


# -- namespaces and regions ---------------------------------------------------------------------------------------


def test_default_namespaces() -> None:
    namespaces = NamespacesConfig()

    assert namespaces.priorities() == {
        "CRMID": 1,
        "Email": 2,
        "EMAIL_LC_SHA256": 3,
        "Phone": 4,
        "IDFA": 5,
        "GAID": 6,
        "ECID": 7,
        "AdCloud": 8,
        "TNTID": 9,
    }
    assert namespaces.types() == {
        "CRMID": "cross_device",
        "Email": "email",
        "EMAIL_LC_SHA256": "email",
        "Phone": "phone",
        "IDFA": "device",
        "GAID": "device",
        "ECID": "cookie",
        "AdCloud": "cookie",
        "TNTID": "cookie",
    }
    assert namespaces.unique_namespaces() == {"CRMID"}


def test_unknown_namespace_gets_lowest_priority() -> None:
    namespaces = NamespacesConfig()

    assert namespaces.unknown_priority == 10
    assert namespaces.resolve("MEMBER_NO") == NamespaceConfig(
        type=NamespaceType.cross_device, unique=False, priority=10
    )
    assert namespaces.resolve("ECID") == NamespaceConfig(type=NamespaceType.cookie, unique=False, priority=7)


def test_namespace_entries_extend_and_override(tmp_path: Path) -> None:
    write_conf(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "namespaces.yaml": (
                "namespaces:\n"
                "  ECID: {type: cookie, priority: 20}\n"
                "  Email_LC_SHA256: {type: email, unique: true, priority: 0}\n"
                "  STORE: {type: non_people, priority: 15}\n"
            ),
        },
    )
    namespaces = load_config(tmp_path).namespaces

    assert namespaces.resolve("ECID").priority == 20
    assert namespaces.resolve("EMAIL_LC_SHA256") == NamespaceConfig(type=NamespaceType.email, unique=True, priority=0)
    assert namespaces.resolve("Email_LC_SHA256").priority == 0
    assert "Email_LC_SHA256" not in namespaces.namespaces
    assert namespaces.resolve("STORE").type is NamespaceType.non_people
    assert namespaces.unknown_priority == 21
    assert namespaces.unique_namespaces() == {"CRMID", "EMAIL_LC_SHA256"}


def test_normalize_namespace() -> None:
    assert normalize_namespace("Email_LC_SHA256") == "EMAIL_LC_SHA256"
    assert normalize_namespace("EMAIL_LC_SHA256") == "EMAIL_LC_SHA256"
    assert normalize_namespace("email_lc_sha256") == "email_lc_sha256"  # only Adobe's symbol is an alias
    assert normalize_namespace("ECID") == "ECID"


def test_regions_defaults_and_overrides(tmp_path: Path) -> None:
    assert RegionsConfig().regions == {
        "VA6": 7,
        "OR2": 9,
        "IRL1": 6,
        "SGP3": 3,
        "AUS3": 8,
        "JPN3": 11,
        "IND1": 12,
    }
    write_conf(tmp_path, {"segments.yaml": SEGMENTS_YAML, "regions.yaml": "regions:\n  VA6: 70\n  CAN2: 13\n"})
    regions = load_config(tmp_path).regions

    assert regions.dcs_region_id("VA6") == 70
    assert regions.dcs_region_id("CAN2") == 13
    assert regions.dcs_region_id("OR2") == 9
    assert regions.dcs_region_id("MARS1") is None


# -- destinations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dest_type", "namespaces", "routing"),
    [
        ("audience_manager", ["ECID", "IDFA", "GAID", "EMAIL_LC_SHA256", "AdCloud"], Routing.regional),
        ("target", ["ECID"], Routing.regional),
        ("campaign", ["ECID", "EMAIL_LC_SHA256", "GAID", "IDFA"], Routing.hub),
        ("journey_optimizer", ["CRMID", "Email", "Phone", "ECID", "IDFA", "GAID"], Routing.hub),
        ("marketo", ["ECID", "Email"], Routing.hub),
        ("commerce", ["ECID"], Routing.regional),
        ("customer_journey_analytics", ["CRMID", "ECID"], Routing.hub),
    ],
)
def test_destination_defaults_by_type(dest_type: str, namespaces: list[str], routing: Routing) -> None:
    destination = DestinationConfig.model_validate({"id": "d", "type": dest_type})

    assert destination.namespaces == namespaces
    assert destination.routing is routing
    assert destination.segments == []
    assert destination.consent is None
    assert destination.hash_emails is False


def test_destination_explicit_values_win_and_are_normalised() -> None:
    destination = DestinationConfig.model_validate(
        {
            "id": "x",
            "type": "custom",
            "namespaces": ["Email_LC_SHA256", "LOYALTY_ID"],
            "routing": "regional",
            "segments": ["s1"],
            "hash_emails": True,
        }
    )

    assert destination.namespaces == ["EMAIL_LC_SHA256", "LOYALTY_ID"]
    assert destination.routing is Routing.regional


# -- table locations ----------------------------------------------------------------------------------------------


def test_table_location_default_and_overrides() -> None:
    job = JobConfig.model_validate(
        {
            "lake": {
                "root": "s3a://bucket/lake/",
                "tables": {
                    "profile_fragments": "/data/aep/fragments",
                    "identity_graph": "abfss://c@acct.dfs.core.windows.net/graph",
                    "quarantine": "./errors/quarantine",
                    "activation": "out/activation",
                },
            }
        }
    )

    assert job.table_location("experience_events") == "s3a://bucket/lake/experience_events"
    assert job.table_location(TableName.profile_fragments) == "/data/aep/fragments"
    assert job.table_location("identity_graph") == "abfss://c@acct.dfs.core.windows.net/graph"
    assert job.table_location("quarantine") == "s3a://bucket/lake/errors/quarantine"
    assert job.activation_table("aam", "edge_streaming") == "s3a://bucket/lake/out/activation/aam/edge_streaming"
    assert job.activation_table("cja", ActivationKind.hub_batch) == "s3a://bucket/lake/out/activation/cja/hub_batch"
    with pytest.raises(ValueError, match="nope"):
        job.table_location("nope")
    with pytest.raises(ValueError, match="streaming"):
        job.activation_table("aam", "streaming")


def test_with_lake_root() -> None:
    job = JobConfig.model_validate({"lake": {"tables": {"quarantine": "q", "identity_graph": "/abs/graph"}}})
    moved = job.with_lake_root("/mnt/lake")

    assert job.table_location("unified_profiles") == "./lake/unified_profiles"
    assert moved.table_location("unified_profiles") == "/mnt/lake/unified_profiles"
    assert moved.table_location("quarantine") == "/mnt/lake/q"
    assert moved.table_location("identity_graph") == "/abs/graph"
    assert moved.activation_table("aam", "hub_batch") == "/mnt/lake/activation/aam/hub_batch"
    assert moved.storage == job.storage


# -- errors -------------------------------------------------------------------------------------------------------


def test_missing_conf_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration directory not found"):
        load_config(tmp_path / "nowhere")


def test_missing_segment_definitions(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"job.yaml": "storage: {engine: auto}\n"})

    assert error.file == tmp_path
    assert "no segment definitions" in str(error)


def test_unknown_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"segments.yaml": SEGMENTS_YAML, "job.yaml": "storage:\n  engin: auto\n"})

    assert error.file == tmp_path / "job.yaml"
    assert error.item == "storage.engin"
    assert str(error) == f"{tmp_path / 'job.yaml'}: storage.engin: unknown key"


def test_wrong_type(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"segments.yaml": SEGMENTS_YAML, "job.yaml": "activation:\n  edge_window_days: two\n"})

    assert error.item == "activation.edge_window_days"
    assert str(error).startswith(
        f"{tmp_path / 'job.yaml'}: activation.edge_window_days: Input should be a valid integer"
    )
    assert "'two'" in str(error)


def test_bad_engine_value(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"segments.yaml": SEGMENTS_YAML, "job.yaml": "storage:\n  engine: spark\n"})

    assert error.item == "storage.engine"
    assert str(error) == (
        f"{tmp_path / 'job.yaml'}: storage.engine: Input should be 'auto', 'delta-spark' or 'delta-rs' (got 'spark')"
    )


def test_unknown_table_name(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"segments.yaml": SEGMENTS_YAML, "job.yaml": "lake:\n  tables:\n    profiles: x\n"})

    assert error.item == "lake.tables.profiles"
    assert "'profile_fragments'" in str(error)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"segments.yaml": SEGMENTS_YAML, "job.yaml": "lake:\n  root: ./lake\n   bad: [\n"})

    assert error.file == tmp_path / "job.yaml"
    assert str(error).startswith(f"{tmp_path / 'job.yaml'}: invalid YAML: line 3, column 7:")


def test_duplicate_yaml_key_is_rejected(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"segments.yaml": SEGMENTS_YAML, "job.yaml": "lake:\n  root: a\n  root: b\n"})

    assert str(error) == f"{tmp_path / 'job.yaml'}: invalid YAML: line 3, column 3: duplicate key 'root'"


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"segments.yaml": "- id: s1\n  name: S1\n"})

    assert str(error) == (
        f"{tmp_path / 'segments.yaml'}: the top level must be a mapping with the key 'segments:', not a list"
    )


def test_missing_top_level_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, {"segments.yaml": "segment: []\n"})

    assert str(error) == f"{tmp_path / 'segments.yaml'}: missing the top-level key 'segments:'"


def test_segment_error_names_segment_id(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML
            + ("  - id: s3\n    name: S3\n    expression: {type: SQL, format: pql/text, value: 'a = 1'}\n")
        },
    )

    assert error.item == "s3"
    assert (
        str(error) == f"{tmp_path / 'segments.yaml'}: segment 's3': expression.type: Input should be 'PQL' (got 'SQL')"
    )


def test_duplicate_segment_ids_across_files(tmp_path: Path) -> None:
    segment = "segments:\n  - id: {id}\n    name: N\n    expression: {{type: PQL, format: pql/text, value: 'a = 1'}}\n"
    error = load_error(
        tmp_path,
        {
            "segments/b.yaml": segment.format(id="dup"),
            "segments/a.yml": segment.format(id="dup"),
            "segments/c.yaml": segment.format(id="other"),
            "segments/notes.txt": "ignored",
        },
    )

    assert error.file == tmp_path / "segments" / "b.yaml"  # a.yml is read first (sorted by file name)
    assert error.item == "dup"
    assert str(error) == (
        f"{tmp_path / 'segments' / 'b.yaml'}: segment 'dup': duplicate segment id, "
        f"already defined in {tmp_path / 'segments' / 'a.yml'}"
    )


def test_segments_file_and_folder_are_combined(tmp_path: Path) -> None:
    config = load_config(
        write_conf(
            tmp_path,
            {
                "segments.yaml": SEGMENTS_YAML,
                "segments/z.yaml": "segments:\n  - id: s9\n    name: N\n    expression: {type: PQL, format: pql/text, value: 'a = 1'}\n",
            },
        )
    )

    assert [s.id for s in config.segments] == ["s1", "s2", "s9"]
    assert config.segment_files["s9"] == tmp_path / "segments" / "z.yaml"


def test_duplicate_destination_ids(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "destinations.yaml": "destinations:\n  - {id: t1, type: target}\n  - {id: t1, type: marketo}\n",
        },
    )

    assert error.item == "t1"
    assert str(error) == f"{tmp_path / 'destinations.yaml'}: destination 't1': duplicate destination id"


def test_destination_maps_unknown_segment(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "destinations.yaml": "destinations:\n  - {id: aam, type: audience_manager, segments: [s1, seg-x]}\n",
        },
    )

    assert error.file == tmp_path / "destinations.yaml"
    assert error.item == "aam"
    assert str(error) == f"{tmp_path / 'destinations.yaml'}: destination 'aam': segments: unknown segment id 'seg-x'"


def test_custom_destination_requires_namespaces(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "destinations.yaml": "destinations:\n  - {id: crm-sync, type: custom, segments: [s1]}\n",
        },
    )

    assert error.item == "crm-sync"
    assert str(error) == (
        f"{tmp_path / 'destinations.yaml'}: destination 'crm-sync': namespaces: required for type 'custom' (no default)"
    )


def test_hash_emails_needs_hashed_namespace(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "destinations.yaml": "destinations:\n  - {id: mkto, type: marketo, hash_emails: true}\n",
        },
    )

    assert error.item == "mkto"
    assert "destination 'mkto': hash_emails: true needs EMAIL_LC_SHA256 in namespaces" in str(error)


def test_dataset_precedence_needs_datasets(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "job.yaml": "merge_policy:\n  type: dataset_precedence\n  datasets: []\n",
        },
    )

    assert error.file == tmp_path / "job.yaml"
    assert error.item == "merge_policy.datasets"
    assert str(error).startswith(f"{tmp_path / 'job.yaml'}: merge_policy.datasets: List should have at least 1 item")


def test_dataset_precedence_rejects_duplicates(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "job.yaml": "merge_policy: {type: dataset_precedence, datasets: [crm, web, crm]}\n",
        },
    )

    assert str(error) == f"{tmp_path / 'job.yaml'}: merge_policy.datasets: dataset 'crm' listed twice"


def test_namespace_alias_defined_twice(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "namespaces.yaml": (
                "namespaces:\n  Email_LC_SHA256: {type: email, priority: 3}\n  EMAIL_LC_SHA256: {type: email, priority: 3}\n"
            ),
        },
    )

    assert str(error) == (
        f"{tmp_path / 'namespaces.yaml'}: namespaces: 'Email_LC_SHA256' and 'EMAIL_LC_SHA256' are the same "
        "namespace 'EMAIL_LC_SHA256'"
    )


def test_identity_graph_limit_must_allow_a_link(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        {
            "segments.yaml": SEGMENTS_YAML,
            "job.yaml": "identity:\n  max_identities_per_graph: 1\n",
        },
    )

    assert error.item == "identity.max_identities_per_graph"
    assert "greater than or equal to 2" in str(error)
