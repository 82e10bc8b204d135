"""docker-compose.yml and `make airflow-celery` run the same topology: one settings module, checked here.

Fast and service-free (no `slow` mark): it reads the compose file, the module and the script.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import airflow_celery_config as cfg

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer", "airflow-init", "airflow-cli", "flower")


def _normalise(value) -> str:
    """``${VAR:?message}`` -> ``${VAR}``: the message is the compose file's, the variable is what matters."""
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*):\?[^}]*\}", r"${\1}", str(value))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_airflow_service_has_the_modules_settings(compose):
    want = cfg.compose_settings()
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        got = {k: _normalise(env.get(k)) for k in cfg.SHARED_KEYS}
        assert got == want, name


def test_secrets_come_from_the_environment_never_literals(compose):
    env = compose["services"]["airflow-scheduler"]["environment"]
    for setting, secret in cfg.SECRET_SETTINGS.items():
        assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]+\}}", env[setting]), setting  # required, no default
    local = cfg.local_settings(root=ROOT, home=ROOT / ".airflow-celery", name="faers_airflow",
                               secrets={n: f"<{n}>" for n in cfg.LOCAL_SECRETS})
    for setting, secret in cfg.SECRET_SETTINGS.items():
        assert local[setting] == f"<{secret}>"


def test_local_stack_differs_only_in_where_the_services_are():
    secrets = {n: f"{n.lower()}x" for n in cfg.LOCAL_SECRETS}
    local = cfg.local_settings(root=ROOT, home=Path("/h"), name="faers_airflow", secrets=secrets, redis_db=11)
    compose = cfg.compose_settings()
    same = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CORE__LOAD_EXAMPLES",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION")
    assert {k: local[k] for k in same} == {k: compose[k] for k in same}
    assert local["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert local["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager")
    assert local["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == \
        "postgresql+psycopg2://faers_airflow:postgres_passwordx@127.0.0.1:5432/faers_airflow"
    assert local["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + local["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert local["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/11"
    assert compose["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == \
        f"${{AIRFLOW_WORKER_CONCURRENCY:-{local['AIRFLOW__CELERY__WORKER_CONCURRENCY']}}}"


def test_celery_accepts_the_backend_and_broker_urls():
    """Celery resolves the result backend URL to its database backend (SQLAlchemy + psycopg2) and the broker to Redis."""
    from celery.app.backends import by_url
    from celery.backends.database import DatabaseBackend
    from kombu.utils.url import parse_url

    backend = cfg.compose_settings()["AIRFLOW__CELERY__RESULT_BACKEND"].replace("${POSTGRES_PASSWORD}", "pw")
    cls, url = by_url(backend)
    assert cls is DatabaseBackend and url == "postgresql+psycopg2://airflow:pw@postgres:5432/airflow"
    from sqlalchemy.engine import make_url

    assert make_url(url).get_dialect().driver == "psycopg2"
    broker = parse_url(cfg.compose_settings()["AIRFLOW__CELERY__BROKER_URL"].replace("${REDIS_PASSWORD}", "pw"))
    assert (broker["transport"], broker["hostname"], broker["port"], broker["virtual_host"]) == \
        ("redis", "redis", 6379, "0")


def test_workers_reconnect_to_the_broker_for_ever(tmp_path):
    """Airflow merges EXTRA_CELERY_CONFIG into the Celery app of the workers: retry on broker loss, never give up."""
    code = ("from airflow.providers.celery.executors.celery_executor_utils import app\n"
            "print(app.conf.broker_connection_retry, app.conf.broker_connection_max_retries)")
    setting = cfg.compose_settings()["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=180,
                         env={**env, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__EXECUTOR": cfg.EXECUTOR,
                              "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": setting})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].split() == ["True", "None"], out.stdout  # above it: log lines


def test_password_with_url_characters_is_quoted():
    pg = cfg.Postgres("u", "p@ss/w:rd", "h", 5432, "d")
    from sqlalchemy.engine import make_url

    assert make_url(pg.sqlalchemy_url).password == "p@ss/w:rd"


def test_env_command_writes_secrets_once_with_mode_600(tmp_path):
    def env():
        out = subprocess.run([sys.executable, "-m", "pipeline.airflow_celery_config", "env", "--root", str(ROOT),
                              "--home", str(tmp_path), "--name", "faers_airflow_x", "--redis-db", "7"],
                             capture_output=True, text=True, cwd=ROOT, check=True)
        return dict(re.findall(r"^(?:export )?([A-Z_0-9]+)=(.*)$", out.stdout, re.M))

    first, second = env(), env()
    assert first["SECRETS_CREATED"] == "1" and second["SECRETS_CREATED"] == "0"
    assert {k: v for k, v in first.items() if k != "SECRETS_CREATED"} == \
        {k: v for k, v in second.items() if k != "SECRETS_CREATED"}
    assert (tmp_path / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert first["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/7"
    assert first["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "pipeline.airflow_celery_config.worker_hostname"
    from cryptography.fernet import Fernet

    Fernet(first["AIRFLOW__CORE__FERNET_KEY"].strip("'"))  # a valid key


def test_script_and_make_targets():
    script = (ROOT / "scripts" / "airflow-celery.sh").read_text()
    assert "python -m pipeline.airflow_celery_config env" in script.replace('"$PY" -m', "python -m")
    for part in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker", "setsid"):
        assert part in script, part
    assert "AIRFLOW_CELERY_NAME must not be postgres" in script
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^airflow-celery: .*\n\tscripts/airflow-celery.sh start$", make, re.M)
    assert re.search(r"^airflow-celery-stop:\n\tscripts/airflow-celery.sh stop$", make, re.M)


def test_pins():
    req = (ROOT / "requirements.txt").read_text()
    con = (ROOT / "constraints.txt").read_text()
    for name in ("apache-airflow-providers-celery", "apache-airflow-providers-fab", "celery", "redis",
                 "psycopg2-binary", "asyncpg"):
        assert re.search(rf"^{re.escape(name)}(\[[a-z]+\])?==\S+$", req, re.M), name
        assert re.search(rf"^{re.escape(name)}==\S+$", con, re.M), name
