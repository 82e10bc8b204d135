"""Helpers of the production tests: the local Celery stack (scripts/airflow-celery.sh), its REST API and its DB."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "airflow-celery.sh"
PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def services_missing() -> str | None:
    """Why the stack cannot run here (None when PostgreSQL and Redis both answer).

    The stack tests run their own ``redis-server`` (from the machine's Redis installation) on another port, so a
    broker restart never touches the machine's Redis; a missing binary counts as Redis missing.
    """
    missing = [f"{name} at {h}:{p}" for name, (h, p) in (("PostgreSQL", PG), ("Redis", REDIS)) if not reachable(h, p)]
    if not missing and shutil.which("redis-server") is None:
        missing = ["Redis (no redis-server binary)"]
    if not missing:
        return None
    return f"production stack tests need the machine's services: {' and '.join(missing)} not reachable"


class RedisServer:
    """A private redis-server on ``port`` without persistence (a crash loses every queued message)."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port, self.proc = folder, port, None

    def start(self) -> "RedisServer":
        import redis

        self.proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("own redis-server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive free ports."""
    for _ in range(200):
        base = free_port()
        if base + n < 65535 and all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def sample_mirror(out: Path, quarters: str, reports: int, seed: int = 20240101) -> Path:
    subprocess.run([sys.executable, "-m", "pipeline", "--quiet", "sample", "--out", str(out), "--quarters", quarters,
                    "--reports-per-quarter", str(reports), "--seed", str(seed)], check=True, cwd=ROOT, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out


def psql(sql: str, db: str = "postgres") -> str:
    out = subprocess.run(["psql", "-h", PG[0], "-p", str(PG[1]), "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1",
                          "-qtA", "-c", sql], capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


def last_nightly_tick(now: dt.datetime | None = None) -> str:
    """The most recent 03:00 UTC: the logical date the scheduler would give faers_ingest's run on unpause."""
    now = now or dt.datetime.now(dt.timezone.utc)
    tick = now.replace(hour=3, minute=0, second=0, microsecond=0)
    if tick > now:
        tick -= dt.timedelta(days=1)
    return tick.isoformat().replace("+00:00", "Z")


@dataclass
class Stack:
    """One local Celery stack with its own AIRFLOW_HOME, PostgreSQL role/database, Redis db and ports."""

    home: Path
    data_dir: Path
    source: str
    name: str = field(default_factory=lambda: f"faers_airflow_t{os.getpid()}")
    redis_db: int = 12
    port: int = 0
    extra_env: dict = field(default_factory=dict)
    started_in: float = 0.0
    token: str = ""

    def env(self) -> dict:
        if not self.port:
            self.port = free_port()
        base = free_port_block(4)
        keep = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        return {**keep, "AIRFLOW_HOME": str(self.home), "AIRFLOW_CELERY_NAME": self.name,
                "AIRFLOW_PORT": str(self.port), "AIRFLOW_LOG_PORT_BASE": str(base),
                "AIRFLOW_CELERY_REDIS_DB": str(self.redis_db), "FAERS_SOURCE": self.source,
                "FAERS_DATA_DIR": str(self.data_dir), "VENV_BIN": str(Path(sys.executable).parent),
                # a killed worker's task is noticed within seconds, not the default 5 minutes
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                # a message lost with the broker is queued again after a minute, not ten
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
                "AIRFLOW__CORE__PARALLELISM": "8", **self.extra_env}

    def start(self) -> "Stack":
        self._env = self.env()
        t0 = time.monotonic()
        out = subprocess.run(["bash", str(SCRIPT), "start"], env=self._env, cwd=ROOT, capture_output=True, text=True,
                             timeout=420)
        self.started_in = time.monotonic() - t0
        self.start_output = out.stdout + out.stderr
        if out.returncode:
            self.stop()
            raise RuntimeError(f"stack did not start: {self.start_output[-3000:]}\n{self.logs_tail()}")
        self.token = self.login("admin", self.secret("AIRFLOW_ADMIN_PASSWORD"))
        return self

    def airflow_env(self) -> dict:
        """The environment the script gives the components (from the same settings module)."""
        env = getattr(self, "_env", None) or self.env()
        out = subprocess.run([sys.executable, "-m", "pipeline.airflow_celery_config", "env", "--root", str(ROOT),
                              "--home", str(self.home), "--name", self.name, "--redis-host", env.get("REDIS_HOST", REDIS[0]),
                              "--redis-port", env.get("REDIS_PORT", str(REDIS[1])), "--redis-db", str(self.redis_db),
                              "--api-port", str(self.port)], capture_output=True, text=True, cwd=ROOT, check=True)
        import shlex

        parsed = {}
        for line in out.stdout.splitlines():
            if line.startswith("export "):
                k, v = line[len("export "):].split("=", 1)
                parsed[k] = shlex.split(v)[0] if v else ""
        return {**env, **parsed}

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=self.airflow_env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=180, check=check)

    def stop(self) -> str:
        out = subprocess.run(["bash", str(SCRIPT), "stop"], env=getattr(self, "_env", self.env()), cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        return out.stdout + out.stderr

    def drop_database(self) -> None:
        psql(f"drop database if exists {self.name} with (force)")
        psql(f"drop role if exists {self.name}")

    def secret(self, key: str) -> str:
        for line in (self.home / "secrets.env").read_text().splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1]
        raise KeyError(key)

    def logs_tail(self, n: int = 40) -> str:
        out = []
        for f in sorted((self.home / "logs").glob("*.log")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def pid(self, component: str) -> int:
        return int((self.home / "run" / f"{component}.pid").read_text().split()[0])

    # --- REST ---------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body=None, token: str | None = "default", cookie: str | None = None):
        headers = {"Content-Type": "application/json"}
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if cookie:
            headers["Cookie"] = f"_token={cookie}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, user: str, password: str) -> str:
        status, body = self.request("POST", "/auth/token", {"username": user, "password": password}, token=None)
        assert status in (200, 201), (status, body)
        return body["access_token"]

    def unpause(self, dag_id: str) -> None:
        for _ in range(60):  # the dag-processor may not have serialized it yet
            status, body = self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            if status == 200:
                return
            time.sleep(2)
        raise AssertionError(f"cannot unpause {dag_id}: {status} {body}")

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        status, out = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        assert status == 200, (status, out)
        return out["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        status, out = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=50")
        assert status == 200, (status, out)
        return out["dag_runs"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            status, out = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            state = out.get("state") if status == 200 else None
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise AssertionError(f"{dag_id} {run_id} still {state} after {timeout} s\n{self.logs_tail(15)}")

    def wait_new_run(self, dag_id: str, known: set[str], timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [r["dag_run_id"] for r in self.runs(dag_id) if r["dag_run_id"] not in known]
            if new:
                return new[0]
            time.sleep(2)
        raise AssertionError(f"no new {dag_id} run within {timeout} s\n{self.logs_tail(15)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every try of every task instance of the run, from the metadata DB (hostname = the worker's name)."""
        rows = psql(
            "select json_agg(t) from (select task_id, map_index, try_number, state, hostname from task_instance "
            f"where dag_id = '{dag_id}' and run_id = '{run_id}' union all "
            "select task_id, map_index, try_number, state, hostname from task_instance_history "
            f"where dag_id = '{dag_id}' and run_id = '{run_id}') t", db=self.name)
        return json.loads(rows or "[]") or []


def worker_of(hostname: str | None) -> str | None:
    """``w1`` from ``w1.<fqdn>`` (the stack's hostname_callable)."""
    return hostname.split(".", 1)[0] if hostname else None


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> content digest of every file.

    Parquet files are compared by schema and the multiset of their rows (not bytes, not row order: curation's row
    order varies from run to run, and key-value metadata carries run ids).
    """
    import hashlib

    import pyarrow.parquet as pq

    out = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(folder))
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            t = t.replace_schema_metadata(None)
            rows = sorted(repr(sorted(r.items())) for r in t.to_pylist())
            out[rel] = hashlib.sha256(repr(t.schema).encode() + "\n".join(rows).encode()).hexdigest()
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Temporary or staging entries a crash could leave behind (write-then-rename and staging names)."""
    bad = []
    for p in folder.rglob("*"):
        name = p.name
        if name.endswith(".tmp") or ".old-" in name or name in (".staging", ".reports-staging") or \
                name.endswith(".part"):
            bad.append(str(p.relative_to(folder)))
    return sorted(bad)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
