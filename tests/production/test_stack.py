"""The production topology for real: `scripts/airflow-celery.sh` on the machine's PostgreSQL, with Redis as broker.

One stack for the whole module (start-up is the expensive part), in this order: the integration run, the access checks
of the signals page under the FAB auth manager, the broker killed and restarted mid-ingest, a Celery worker killed
with SIGKILL mid-ingest. The broker is the tests' own redis-server on another port (the same program as the machine's
Redis), so restarting it never disturbs the machine's service. Skipped, with one reason, only when PostgreSQL or
Redis does not answer.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.production.support import (RedisServer, Stack, free_port, last_nightly_tick, leftovers, psql,
                                      sample_mirror, services_missing, tree_digest, worker_of)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(services_missing() is not None,
                                                   reason=services_missing() or "")]

QUARTERS = "2024Q1:2024Q3"
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    broker = RedisServer(root, free_port()).start()
    mirror = sample_mirror(root / "mirror", QUARTERS, 1500)
    s = Stack(home=root / "home", data_dir=root / "data", source=mirror.resolve().as_uri(),
              name=f"faers_airflow_t{os.getpid()}", redis_db=0,
              extra_env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(broker.port)})
    s.broker = broker
    s.drop_database()
    try:
        s.start()
        TIMES["stack_start_s"] = round(s.started_in, 1)
        yield s
    finally:
        s.stop()
        s.drop_database()
        broker.kill()
        print(f"\nproduction stack timings: {TIMES}")


@pytest.fixture(scope="module")
def integration_run(stack):
    """Trigger faers_ingest (before unpausing, on the nightly slot, so no second scheduled run competes)."""
    t0 = time.monotonic()
    body = {"logical_date": last_nightly_tick(), "dag_run_id": "integration", "conf": {}}
    for _ in range(60):  # 404 until the dag-processor has serialized the DAG (seconds after start-up)
        status, out = stack.request("POST", "/api/v2/dags/faers_ingest/dagRuns", body)
        if status != 404:
            break
        time.sleep(2)
    assert status == 200, (status, out)
    run_id = out["dag_run_id"]
    stack.unpause("ketamine_signals")
    stack.unpause("faers_ingest")
    state = stack.wait_run("faers_ingest", run_id, 420)
    TIMES["trigger_to_ingest_done_s"] = round(time.monotonic() - t0, 1)
    signals = stack.wait_new_run("ketamine_signals", set(), 120)
    signals_state = stack.wait_run("ketamine_signals", signals, 420)
    TIMES["trigger_to_report_s"] = round(time.monotonic() - t0, 1)
    return {"run_id": run_id, "state": state, "signals_run": signals, "signals_state": signals_state}


def test_faers_ingest_fans_out_over_both_workers_and_the_report_follows(stack, integration_run):
    assert integration_run["state"] == "success", stack.logs_tail()
    assert [r["dag_run_id"] for r in stack.runs("faers_ingest")] == ["integration"]  # no competing nightly run
    tis = stack.task_instances("faers_ingest", "integration")
    mapped = [t for t in tis if t["task_id"] in ("quarter.fetch_quarter", "quarter.ingest_and_validate")]
    assert sorted({t["map_index"] for t in mapped}) == [0, 1, 2] and all(t["state"] == "success" for t in mapped)
    workers = [worker_of(t["hostname"]) for t in tis if t["state"] == "success"]
    spread = {w: workers.count(w) for w in sorted(set(workers))}
    TIMES["tasks_per_worker"] = spread
    assert {worker_of(t["hostname"]) for t in mapped} == {"w1", "w2"}, mapped  # the mapped quarters on both workers
    # the Asset event started ketamine_signals, which wrote the report
    assert integration_run["signals_state"] == "success"
    assert integration_run["signals_run"].startswith("asset_triggered__")
    report = stack.data_dir / "reports" / "latest" / "report.html"
    assert report.is_file() and "SYNTHETIC" in report.read_text()
    status, page = stack.request("GET", "/faers-signals/")
    assert status == 200 and b"Ketamine-family disproportionality" in page


def test_signals_page_needs_login_and_dag_permission(stack, integration_run):
    """FAB auth manager: anonymous 401, a user whose role may not read DAGs 403, a Viewer 200."""
    # FAB's own REST API (the CLI would do the same in seconds per call, not milliseconds)
    status, out = stack.request("POST", "/auth/fab/v1/roles", {"name": "NoDags", "actions": []})
    assert status in (200, 201), (status, out)
    for user, role in (("nodags", "NoDags"), ("viewer", "Viewer")):
        status, out = stack.request("POST", "/auth/fab/v1/users", {
            "username": user, "password": f"{user}-pw-1", "roles": [{"name": role}], "email": f"{user}@localhost",
            "first_name": user, "last_name": "test"})
        assert status in (200, 201), (status, out)
    nodags, viewer = stack.login("nodags", "nodags-pw-1"), stack.login("viewer", "viewer-pw-1")
    for path in ("/faers-signals/", "/faers-signals/report", "/faers-signals/signals.json"):
        assert stack.request("GET", path, token=None)[0] == 401, path
        assert stack.request("GET", path, token="not-a-jwt")[0] in (401, 403), path  # Airflow: 403 "Invalid JWT"
        assert stack.request("GET", path, token=nodags)[0] == 403, path
        assert stack.request("GET", path, token=viewer)[0] == 200, path
        assert stack.request("GET", path, token=None, cookie=viewer)[0] == 200, path  # the UI's login cookie
    status, body = stack.request("GET", "/api/v2/dags", token=nodags)  # consistent with the REST API
    assert status == 403 or (status == 200 and body["total_entries"] == 0), (status, body)


def _running_ti(stack, run_id: str, task_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in stack.task_instances("faers_ingest", run_id):
            if t["task_id"] == task_id and t["state"] == "running" and t["hostname"]:
                return t
        time.sleep(0.2)
    raise AssertionError(f"{task_id} never ran\n{stack.logs_tail(20)}")


def test_run_survives_a_broker_restart(stack, integration_run):
    """Redis killed (every queued message lost) and restarted mid-ingest: the run completes, at most one task retried.

    What carries it is the workers' reconnection to the broker (``CELERY_EXTRA`` of pipeline/airflow_celery_config.py):
    the ingest running during the outage reports over the Execution API, but curation and publishing are sent to the
    new Redis afterwards and need a worker still listening there. With ``broker_connection_retry`` off (or
    ``broker_connection_max_retries`` 0) both workers exit on the loss and the run never completes.
    """
    run_id = stack.trigger("faers_ingest", {"quarters": "2024Q3", "force": True}, run_id="broker_restart")
    _running_ti(stack, run_id, "quarter.ingest_and_validate")
    stack.broker.kill()
    time.sleep(5)
    stack.broker.start()  # back, empty, on the same port
    t0 = time.monotonic()
    state = stack.wait_run("faers_ingest", run_id, 300)
    TIMES["broker_restart_to_success_s"] = round(time.monotonic() - t0, 1)
    tis = stack.task_instances("faers_ingest", run_id)
    retried = sorted({(t["task_id"], t["map_index"]) for t in tis if t["try_number"] > 1})
    TIMES["broker_restart_retried"] = retried
    assert state == "success", stack.logs_tail(30)
    assert len(retried) <= 1, retried
    for worker in ("worker1", "worker2"):  # reconnected, not exited (the worker-kill test below needs both)
        os.kill(stack.pid(worker), 0)
    # sent to the new Redis after the restart, and run
    assert _state(stack, run_id, "curate_and_validate") == "success", tis
    assert _state(stack, run_id, "publish_curated") in ("success", "skipped"), tis


def test_worker_killed_mid_ingest_is_retried_on_the_other_worker(stack, integration_run):
    raw = stack.data_dir / "raw"
    clean = {k: v for k, v in tree_digest(raw).items() if k.endswith(".parquet")}
    assert any("quarter=2024Q2" in k for k in clean)
    signals_before = {r["dag_run_id"] for r in stack.runs("ketamine_signals")}
    run_id = stack.trigger("faers_ingest", {"quarters": "2024Q2", "force": True}, run_id="worker_killed")
    ti = _running_ti(stack, run_id, "quarter.ingest_and_validate")
    victim = worker_of(ti["hostname"])
    # Kill inside the ingest, while its staging files exist if we catch them: a quarter of this mirror takes
    # only seconds on an idle machine, so a fixed sleep could outlast the task.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and not leftovers(stack.data_dir):
        time.sleep(0.05)
    assert _state(stack, run_id, "quarter.ingest_and_validate") == "running"
    pid = stack.pid(f"worker{victim[1:]}")
    os.killpg(pid, signal.SIGKILL)  # the worker and every process it forked, as a lost host would
    t0 = time.monotonic()
    assert stack.wait_run("faers_ingest", run_id, 300) == "success", stack.logs_tail(30)
    TIMES["sigkill_to_success_s"] = round(time.monotonic() - t0, 1)
    tries = sorted((t for t in stack.task_instances("faers_ingest", run_id)
                    if t["task_id"] == "quarter.ingest_and_validate"), key=lambda t: t["try_number"])
    assert [t["try_number"] for t in tries] == [1, 2], tries
    assert worker_of(tries[0]["hostname"]) == victim and tries[0]["state"] == "failed", tries
    assert worker_of(tries[1]["hostname"]) not in (None, victim) and tries[1]["state"] == "success", tries
    after = {k: v for k, v in tree_digest(raw).items() if k.endswith(".parquet")}
    assert after == clean  # the quarter's raw tables are exactly the clean run's
    # no staging or half-written file of the ingest is visible; the signals run that the re-published curated
    # tables start stages its report in .reports-staging until it publishes, so that one is looked at after it
    assert [p for p in leftovers(stack.data_dir) if not p.startswith(".reports-staging")] == []
    _wait_signals_started_by_this_run(stack, signals_before)
    assert leftovers(stack.data_dir) == []


def _wait_signals_started_by_this_run(stack, before: set[str], timeout: float = 300) -> None:
    """Wait until every ketamine_signals run created since ``before`` has finished (none may come: the scheduler
    creates the asset-triggered run a few seconds after the curated tables are published, so it is awaited for 60 s)."""
    deadline = time.monotonic() + timeout
    seen_quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        runs = [r for r in stack.runs("ketamine_signals") if r["dag_run_id"] not in before]
        if any(r["state"] not in ("success", "failed") for r in runs):
            seen_quiet_since = time.monotonic()
        elif runs or time.monotonic() - seen_quiet_since > 60:
            return
        time.sleep(2)
    raise AssertionError(f"ketamine_signals still running after {timeout} s\n{stack.logs_tail(15)}")


def _state(stack, run_id: str, task_id: str) -> str | None:
    return psql(f"select state from task_instance where dag_id = 'faers_ingest' and run_id = '{run_id}' "
                f"and task_id = '{task_id}'", db=stack.name) or None
