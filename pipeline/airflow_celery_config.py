"""Settings of the production Airflow topology, in one place for ``docker-compose.yml`` and ``make airflow-celery``.

The topology: CeleryExecutor, a PostgreSQL metadata database that is also Celery's result backend, Redis as the
broker, the FAB auth manager, and secrets (Fernet key, JWT secret, api-server secret key) that every component
reads from the environment. :func:`shared_settings` builds those settings from where PostgreSQL and Redis are and
what the secrets are; the compose file fills them with ``${...}`` placeholders from ``.env``
(:func:`compose_settings`), ``scripts/airflow-celery.sh`` with the local services and generated secrets
(``python -m pipeline.airflow_celery_config env``). ``tests/production/test_celery_config.py`` checks that the
compose file says exactly what :func:`compose_settings` says, so the stack the tests run is the one compose ships.

Imported by Airflow components (``[core] hostname_callable`` of the local workers): standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets as _secrets
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

EXECUTOR = "CeleryExecutor"
AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
#: task slots per Celery worker (compose: AIRFLOW_WORKER_CONCURRENCY); curation of all FAERS needs ~12 GB
WORKER_CONCURRENCY = 2
#: Celery settings Airflow has no own option for (``[celery] extra_celery_config``, merged into the Celery app of the
#: workers and the scheduler). A worker that loses Redis (restart, failover, network) must reconnect rather than exit:
#: Celery's own default gives up after 100 attempts (~45 min), and with retries off or at 0 the worker shuts down on
#: the first loss, leaving queued tasks with nobody to run them (nothing restarts a worker of the local stack).
CELERY_EXTRA = {"broker_connection_retry": True, "broker_connection_max_retries": None}  # None: retry forever
#: Airflow setting -> name of the secret it is read from (compose: .env; local stack: AIRFLOW_HOME/secrets.env)
SECRET_SETTINGS = {
    "AIRFLOW__CORE__FERNET_KEY": "FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",  # identical for every component, or tokens fail
    "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
}
#: the settings both topologies must agree on (the compose test compares exactly these)
SHARED_KEYS = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
               "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
               "AIRFLOW__CELERY__WORKER_CONCURRENCY", "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG", *SECRET_SETTINGS,
               "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION")
#: secrets the local stack generates once into AIRFLOW_HOME/secrets.env (mode 600)
LOCAL_SECRETS = ("POSTGRES_PASSWORD", "FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
                 "AIRFLOW_ADMIN_PASSWORD")


@dataclass(frozen=True)
class Postgres:
    user: str
    password: str
    host: str
    port: int | str
    database: str

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{self.user}:{_q(self.password)}@{self.host}:{self.port}/{self.database}"

    @property
    def result_backend(self) -> str:
        # Celery's database backend: "db+" and a SQLAlchemy URL (the driver named, as for the metadata DB)
        return "db+" + self.sqlalchemy_url


@dataclass(frozen=True)
class Redis:
    host: str
    port: int | str
    db: int | str
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{_q(self.password)}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


def _q(text: str) -> str:
    return text if text.startswith("${") else quote(text, safe="")


def shared_settings(pg: Postgres, redis: Redis, secrets: dict[str, str],
                    worker_concurrency: int | str = WORKER_CONCURRENCY) -> dict[str, str]:
    """The settings compose and the local stack share (keys :data:`SHARED_KEYS`)."""
    out = {
        "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
        "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.sqlalchemy_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": pg.result_backend,
        "AIRFLOW__CELERY__BROKER_URL": redis.url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
        "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps(CELERY_EXTRA, sort_keys=True),
        **{setting: secrets[name] for setting, name in SECRET_SETTINGS.items()},
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
    }
    assert tuple(out) == SHARED_KEYS
    return out


def compose_settings() -> dict[str, str]:
    """What ``docker-compose.yml`` must say (``${VAR}`` = from .env; the file adds ``:?message`` to required ones)."""
    return shared_settings(
        Postgres("airflow", "${POSTGRES_PASSWORD}", "postgres", 5432, "airflow"),
        Redis("redis", 6379, 0, "${REDIS_PASSWORD}"),
        {name: f"${{{name}}}" for name in SECRET_SETTINGS.values()},
        worker_concurrency=f"${{AIRFLOW_WORKER_CONCURRENCY:-{WORKER_CONCURRENCY}}}")


# ------------------------------------------------------------------------------------------------------------
# The local stack (scripts/airflow-celery.sh)
# ------------------------------------------------------------------------------------------------------------
def new_secret(name: str) -> str:
    if name == "FERNET_KEY":  # 32 url-safe base64-encoded bytes, what cryptography's Fernet.generate_key() makes
        import base64

        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return _secrets.token_hex(24)


def ensure_secrets(path: Path) -> tuple[dict[str, str], bool]:
    """Read ``path`` (KEY=value lines), adding any missing secret; written with mode 600. Returns (secrets, created)."""
    have: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                have[k.strip()] = v.strip()
    missing = [n for n in LOCAL_SECRETS if not have.get(n)]
    if missing:
        have.update({n: new_secret(n) for n in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# secrets of the local Airflow Celery stack (make airflow-celery); keep private\n")
            fh.writelines(f"{k}={have[k]}\n" for k in LOCAL_SECRETS)
        os.chmod(path, 0o600)
    return have, bool(missing)


def local_settings(*, root: Path, home: Path, name: str, secrets: dict[str, str], pg_host: str = "127.0.0.1",
                   pg_port: int = 5432, redis_host: str = "127.0.0.1", redis_port: int = 6379, redis_db: int = 11,
                   api_port: int = 8080, worker_concurrency: int = WORKER_CONCURRENCY) -> dict[str, str]:
    """Every environment variable the local stack's components run with."""
    pg = Postgres(name, secrets["POSTGRES_PASSWORD"], pg_host, pg_port, name)
    env = shared_settings(pg, Redis(redis_host, redis_port, redis_db), secrets, worker_concurrency)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__WORKERS": "1",
        # several workers on one host: each reports its own name as the task instance's hostname
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipeline.airflow_celery_config.worker_hostname",
        "PYTHONPATH": str(root),
        "GX_ANALYTICS_ENABLED": "false",
    })
    return env


def worker_hostname() -> str:
    """``[core] hostname_callable``: the host name, prefixed by ``FAERS_WORKER_NAME`` where one is set."""
    fqdn = socket.getfqdn()
    worker = os.environ.get("FAERS_WORKER_NAME")
    return f"{worker}.{fqdn}" if worker else fqdn


def _env_command(args) -> int:
    home = Path(args.home).absolute()
    secrets, created = ensure_secrets(home / "secrets.env")
    env = local_settings(root=Path(args.root).absolute(), home=home, name=args.name, secrets=secrets,
                         pg_host=args.pg_host, pg_port=args.pg_port, redis_host=args.redis_host,
                         redis_port=args.redis_port, redis_db=args.redis_db, api_port=args.api_port,
                         worker_concurrency=args.worker_concurrency)
    for k, v in env.items():
        print(f"export {k}={shlex.quote(v)}")
    for k in ("POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD"):
        print(f"{k}={shlex.quote(secrets[k])}")
    print(f"SECRETS_CREATED={int(created)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.airflow_celery_config",
                                description="shell settings of the local Airflow Celery stack")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env", help="print `export` lines for scripts/airflow-celery.sh (creates secrets once)")
    e.add_argument("--root", required=True)
    e.add_argument("--home", required=True)
    e.add_argument("--name", default="faers_airflow", help="PostgreSQL role and database")
    e.add_argument("--pg-host", default="127.0.0.1")
    e.add_argument("--pg-port", type=int, default=5432)
    e.add_argument("--redis-host", default="127.0.0.1")
    e.add_argument("--redis-port", type=int, default=6379)
    e.add_argument("--redis-db", type=int, default=11)
    e.add_argument("--api-port", type=int, default=8080)
    e.add_argument("--worker-concurrency", type=int, default=WORKER_CONCURRENCY)
    e.set_defaults(func=_env_command)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
