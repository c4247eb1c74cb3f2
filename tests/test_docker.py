"""Docker Spark: the compose file's structure and the image's files (no Docker engine runs here).

What runs inside the containers is docker/entrypoint.sh; the standalone-cluster test starts its master and
worker with that script and submits the demo through its ``demo`` role, so this file checks the rest: the
services, the one image, ports, the shared lake volume, and that every path the compose file and the
Dockerfile name exists in the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
APP_DIR = "/opt/audience-activation"
SERVICES = {"spark-master", "spark-worker-1", "spark-worker-2", "jupyter"}


def test_services_share_one_image_built_from_the_repository() -> None:
    services = COMPOSE["services"]
    assert set(services) == SERVICES
    assert {service["image"] for service in services.values()} == {"audience-activation:local"}
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["spark-master"]
    build = services["spark-master"]["build"]
    assert (DOCKER / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).is_file()


def test_roles_and_the_master_url_agree() -> None:
    services = COMPOSE["services"]
    master = services["spark-master"]
    assert master["command"] == ["master"]
    assert master["hostname"] == "spark-master"
    url = f"spark://{master['environment']['SPARK_MASTER_HOST']}:{master['environment']['SPARK_MASTER_PORT']}"
    assert master["environment"]["SPARK_MASTER_URL"] == url
    for name in ("spark-worker-1", "spark-worker-2"):
        assert services[name]["command"] == ["worker", url]
        assert services[name]["depends_on"]["spark-master"]["condition"] == "service_healthy"
    assert services["jupyter"]["command"] == ["jupyter"]
    # Every role the compose file uses is one the entrypoint handles.
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    for service in services.values():
        assert re.search(rf"^  {service['command'][0]}\)$", entrypoint, re.MULTILINE), service["command"]


def test_ports_are_published_on_loopback_without_clashes() -> None:
    published: dict[str, str] = {}
    for name, service in COMPOSE["services"].items():
        for mapping in service.get("ports", []):
            host_ip, host_port, container_port = mapping.split(":")
            assert host_ip == "127.0.0.1", (name, mapping)
            assert host_port not in published, f"{name} and {published.get(host_port)} both publish {host_port}"
            published[host_port] = name
    assert published == {
        "7077": "spark-master",
        "8080": "spark-master",
        "8081": "spark-worker-1",
        "8082": "spark-worker-2",
        "8888": "jupyter",
    }


def test_one_lake_volume_is_mounted_everywhere() -> None:
    assert set(COMPOSE["volumes"]) == {"lake"}
    for name, service in COMPOSE["services"].items():
        assert "lake:/lake" in service["volumes"], name
    assert COMPOSE["services"]["spark-master"]["environment"]["LAKE_ROOT"].startswith("/lake/")
    assert COMPOSE["services"]["jupyter"]["environment"]["AA_NOTEBOOK_LAKE"].startswith("/lake/")


def test_jupyter_mounts_the_notebooks_it_serves() -> None:
    jupyter = COMPOSE["services"]["jupyter"]
    mounts = dict(volume.split(":", 1) for volume in jupyter["volumes"] if volume.startswith("."))
    assert mounts == {"../notebooks": f"{APP_DIR}/notebooks"}
    assert (DOCKER / "../notebooks").resolve() == ROOT / "notebooks"
    assert list((ROOT / "notebooks").glob("*.ipynb"))
    assert jupyter["environment"]["NOTEBOOK_DIR"] == f"{APP_DIR}/notebooks"


def test_every_file_the_dockerfile_copies_exists() -> None:
    copies = re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _destination = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    assert "FROM maven:3.9-eclipse-temurin-17 AS jars" in DOCKERFILE
    assert "RUN STRICT=1 jars/fetch.sh" in DOCKERFILE  # the image never silently lacks the Delta jars
    assert "openjdk-17-jre-headless" in DOCKERFILE and "FROM python:3.11-slim-bookworm" in DOCKERFILE
    assert "COPY --from=jars /build/jars/lib ./jars/lib" in DOCKERFILE
    assert f"AUDIENCE_ACTIVATION_JARS={APP_DIR}/jars/lib" in DOCKERFILE
    assert f'ENTRYPOINT ["{APP_DIR}/docker/entrypoint.sh"]' in DOCKERFILE
    assert "COPY docker/entrypoint.sh ./docker/entrypoint.sh" in DOCKERFILE
    assert f"WORKDIR {APP_DIR}" in DOCKERFILE
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)


def test_make_docker_demo_starts_the_cluster_and_runs_the_demo_role() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("docker-demo:", 1)[1].split("\n\n", 1)[0]
    assert "docker compose -f docker/docker-compose.yml" in makefile
    assert "up -d --build --wait" in recipe
    assert f"exec spark-master {APP_DIR}/docker/entrypoint.sh demo" in recipe


@pytest.mark.parametrize(
    ("args", "code", "output"),
    [([], 2, "usage:"), (["echo", "hello from the container"], 0, "hello from the container")],
)
def test_entrypoint_usage_and_plain_commands(args: list[str], code: int, output: str) -> None:
    result = subprocess.run([str(DOCKER / "entrypoint.sh"), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    assert output in result.stdout + result.stderr
