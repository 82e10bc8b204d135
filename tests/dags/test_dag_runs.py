"""``dag.test()`` runs of both DAGs on SQLite against local synthetic mirrors (no network, no mocks)."""

from __future__ import annotations

import json
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from tests.dags.support import load_dag, requires, sample_mirror

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def task_states(dr) -> dict[str, list[tuple[str, int]]]:
    """task_id -> [(state, try_number)] for every (mapped) instance of the run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dr.dag_id,
                                                         TaskInstance.run_id == dr.run_id)).all()
        out: dict[str, list] = {}
        for ti in sorted(tis, key=lambda t: (t.task_id, t.map_index)):
            out.setdefault(ti.task_id, []).append((str(ti.state), ti.try_number))
        return out


def xcom(dr, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(XComModel).where(XComModel.dag_id == dr.dag_id, XComModel.run_id == dr.run_id,
                                                      XComModel.task_id == task_id,
                                                      XComModel.key == "return_value")).first()
        value = row.value if row is not None else None
    return json.loads(value) if isinstance(value, str) else value


def asset_events(dr, name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.name == name, AssetEvent.source_run_id == dr.run_id)).all()
        return [dict(r.extra or {}) for r in rows]


def test_data_problem_fails_at_once_and_variable_overrides_env(airflow_db, tmp_path, monkeypatch):
    """A quarter zip without its THER table is a data problem: the ingest task fails on try 1 although the task
    has retries, nothing downstream runs, nothing is published and no raw table of that quarter is swapped in.

    The environment points at a source that does not exist; the Airflow Variable ``FAERS_SOURCE`` (which
    must win) at the broken mirror.
    """
    requires("pipeline.synthetic", "write_mirror")
    mirror = sample_mirror(tmp_path / "bad_mirror", "2024Q1", 100)
    [zpath] = mirror.glob("*.zip")
    with zipfile.ZipFile(zpath) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in members.items():
            if "THER" not in name.upper():
                z.writestr(name, body)
    data = tmp_path / "data"
    monkeypatch.setenv("FAERS_SOURCE", f"file://{tmp_path}/no_such_mirror")
    monkeypatch.setenv("FAERS_DATA_DIR", str(data))
    # an Airflow Variable set through the environment-variables secrets backend (AIRFLOW_VAR_<NAME>); a
    # dag.test(variable_file_path=...) backend would stay cached in this process and leak into later tests
    monkeypatch.setenv("AIRFLOW_VAR_FAERS_SOURCE", mirror.as_uri())

    dag = load_dag("faers_ingest", retries=2)  # retries must not matter for data problems
    for t in dag.tasks:
        t.retry_delay = timedelta(seconds=0)
    dr = dag.test()
    states = task_states(dr)
    assert str(dr.state) == "failed", states
    assert states["plan_quarters"] == [("success", 1)], "the Variable FAERS_SOURCE must override the environment"
    assert xcom(dr, "plan_quarters") == ["2024Q1"]
    assert states["quarter.fetch_quarter"] == [("success", 1)]
    assert states["quarter.ingest_and_validate"] == [("failed", 1)]  # AirflowFailException: no second try
    assert states["curate_and_validate"] == [("upstream_failed", 0)]
    assert states["publish_curated"] == [("upstream_failed", 0)]
    assert asset_events(dr, "faers_curated") == []
    assert not list(data.glob("raw/*/quarter=2024Q1/*.parquet"))


def test_end_to_end_then_noop(airflow_db, tmp_path, monkeypatch):
    """faers_ingest on a fresh sample mirror, then ketamine_signals (the report), then a second faers_ingest
    with nothing new: fast, curation unchanged, publish skipped, no asset event."""
    requires("pipeline.synthetic", "write_mirror")
    requires("pipeline.curate", "curate")
    requires("pipeline.quality", "validate_curated")
    requires("pipeline.reports", "build_report")
    mirror = sample_mirror(tmp_path / "mirror", "2024Q1:2024Q2", 2000)
    data = tmp_path / "data"
    monkeypatch.setenv("FAERS_SOURCE", mirror.as_uri())
    monkeypatch.setenv("FAERS_DATA_DIR", str(data))
    monkeypatch.delenv("FAERS_CONFIG", raising=False)

    t0 = time.perf_counter()
    first = load_dag("faers_ingest").test()
    first_secs = time.perf_counter() - t0
    states = task_states(first)
    assert str(first.state) == "success", states
    assert states["quarter.fetch_quarter"] == [("success", 1)] * 2
    assert states["quarter.ingest_and_validate"] == [("success", 1)] * 2
    assert sorted(xcom(first, "plan_quarters")) == ["2024Q1", "2024Q2"]
    curated = xcom(first, "curate_and_validate")
    assert curated["changed"] is True and curated["kept_cases"] > 0
    assert states["publish_curated"] == [("success", 1)]
    [event] = asset_events(first, "faers_curated")
    assert event["curated_dir"] == str(data / "curated")
    assert (data / "curated").is_dir()

    conf = {"mgps_likelihood": "conditional", "substances": ["ketamine_family", "esketamine"]}
    signals = load_dag("ketamine_signals").test(run_conf=conf)
    states = task_states(signals)
    assert str(signals.state) == "success", states
    built = xcom(signals, "build_signals_report")
    report = Path(built["report_dir"])
    assert (report / "report.html").stat().st_size > 1000
    assert (report / "signals.parquet").exists() and (report / "manifest.json").exists()
    used = json.loads((report / "manifest.json").read_text())["parameters"]  # the Params reached signals_run
    assert used["mgps_likelihood"] == "conditional"  # the shipped config says openebgm
    assert set(used["substances"]) == {"ketamine_family", "esketamine"}
    [event] = asset_events(signals, "faers_signals_report")
    assert event["report_dir"] == built["report_dir"]

    t0 = time.perf_counter()
    second = load_dag("faers_ingest").test()
    second_secs = time.perf_counter() - t0
    states = task_states(second)
    assert str(second.state) == "success", states
    assert xcom(second, "plan_quarters") == []
    assert [s for s, _ in states["quarter.fetch_quarter"]] == ["skipped"]
    assert xcom(second, "curate_and_validate")["changed"] is False
    assert states["publish_curated"] == [("skipped", 1)]
    assert asset_events(second, "faers_curated") == []  # a skipped publish emits no asset event

    again = load_dag("ketamine_signals").test(run_conf=conf)  # same data, config and params as the latest report
    assert task_states(again)["build_signals_report"] == [("skipped", 1)]
    assert asset_events(again, "faers_signals_report") == []
    print(f"faers_ingest first run {first_secs:.1f} s, no-op rerun {second_secs:.1f} s")
    assert second_secs < min(30.0, first_secs), (first_secs, second_secs)
