"""DAG files: import cleanly, without network or database, and declare what operators rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from tests.dags.support import DAGS, ROOT

NETWORK_TASKS = {"plan_quarters", "quarter.fetch_quarter"}
DATA_TASKS = {"quarter.ingest_and_validate", "curate_and_validate", "publish_curated"}
HEAVY = ("pipeline", "pandas", "great_expectations", "duckdb", "pyarrow", "scipy", "numpy", "requests")


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {"faers_ingest", "ketamine_signals"}


@pytest.mark.parametrize("dag_id", ["faers_ingest", "ketamine_signals"])
def test_common_settings(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"faers", "pharmacovigilance"} <= set(dag.tags)
    assert dag.owner == "pharmacovigilance"
    assert dag.doc_md and len(dag.doc_md) > 500 and dag.doc_md.lstrip().startswith("###")
    assert "FAERS_DATA_DIR" in dag.doc_md and "Failures" in dag.doc_md
    assert all(t.owner == "pharmacovigilance" for t in dag.tasks)
    assert dag.fileloc.startswith(str(DAGS))


def test_faers_ingest_shape(dagbag):
    dag = dagbag.dags["faers_ingest"]
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.timetable.expression == "0 3 * * *" and str(dag.timetable.timezone) == "UTC"
    assert set(dag.task_dict) == NETWORK_TASKS | DATA_TASKS
    for tid in NETWORK_TASKS:
        t = dag.task_dict[tid]
        assert t.retries >= 2, tid
        assert t.retry_exponential_backoff > 1 and t.retry_delay >= timedelta(minutes=1), tid
    for tid in DATA_TASKS:  # infrastructure failures retry; data problems skip the tries (test_dag_runs)
        assert dag.task_dict[tid].retries == 2 and dag.task_dict[tid].retry_delay == timedelta(seconds=30), tid
    # per quarter: fetch -> ingest, mapped over the plan; curate after all quarters, even when none was new
    assert dag.task_dict["quarter.fetch_quarter"].downstream_task_ids == {"quarter.ingest_and_validate"}
    assert dag.task_dict["plan_quarters"].downstream_task_ids == {"quarter.fetch_quarter"}
    curate = dag.task_dict["curate_and_validate"]
    assert curate.upstream_task_ids == {"quarter.ingest_and_validate"}
    assert curate.trigger_rule == "none_failed"
    assert type(dag.task_group.get_task_group_dict()["quarter"]).__name__ == "MappedTaskGroup"
    publish = dag.task_dict["publish_curated"]
    assert [a.name for a in publish.outlets] == ["faers_curated"]
    assert [a.name for t in dag.tasks for a in t.outlets] == ["faers_curated"]  # only publish emits
    assert set(dag.params) == {"quarters", "force"}


def test_ketamine_signals_shape(dagbag):
    dag = dagbag.dags["ketamine_signals"]
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["faers_curated"]
    [t] = dag.tasks
    assert t.task_id == "build_signals_report" and t.retries == 2
    assert [a.name for a in t.outlets] == ["faers_signals_report"]
    assert set(dag.params) == {"substances", "pt_groups", "roles", "mgps_likelihood", "cutoff_quarter",
                               "from_quarter"}


def test_curated_asset_is_the_same_in_both_dags(dagbag):
    produced = dagbag.dags["faers_ingest"].task_dict["publish_curated"].outlets[0]
    [consumed] = dagbag.dags["ketamine_signals"].timetable.asset_condition.objects
    assert (produced.name, produced.uri) == (consumed.name, consumed.uri)


def test_params_defaults_valid_and_bad_values_rejected(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    sig = dagbag.dags["ketamine_signals"].params
    for name in sig:  # an asset-triggered run uses the defaults: all must validate (None = from config)
        assert sig.get_param(name).resolve() is None
    assert sig.get_param("cutoff_quarter").resolve("2024Q2") == "2024Q2"
    assert sig.get_param("from_quarter").resolve("2019Q1") == "2019Q1"
    assert sig.get_param("substances").resolve(["esketamine", "ketamine_family"]) == ["esketamine", "ketamine_family"]
    assert sig.get_param("mgps_likelihood").resolve("conditional") == "conditional"
    for name, bad in [("cutoff_quarter", "2024Q5"), ("from_quarter", "2019-1"), ("substances", ["cocaine"]), ("roles", ["XX"]),
                      ("mgps_likelihood", "gps"), ("substances", "ketamine")]:
        with pytest.raises(ParamValidationError):
            sig.get_param(name).resolve(bad)
    ing = dagbag.dags["faers_ingest"].params
    assert ing.get_param("quarters").resolve() is None and ing.get_param("force").resolve() is False
    for ok in ["2024Q3", "2023Q1:2024Q4", "2023Q1,2024Q2"]:
        assert ing.get_param("quarters").resolve(ok) == ok
    with pytest.raises(ParamValidationError):
        ing.get_param("quarters").resolve("last quarter")


_PROBE = r"""
import json, sys, time
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
before = set(sys.modules)
times = {}
for f in sys.argv[1:]:
    t0 = time.perf_counter()
    bag = BundleDagBag(dag_folder=f, bundle_path=Path(f).parent, bundle_name="dags-folder")
    times[f] = time.perf_counter() - t0
    assert not bag.import_errors, bag.import_errors
print(json.dumps({"new": sorted(set(sys.modules) - before), "times": times}))
"""


def test_parse_is_light_and_offline(tmp_path):
    """Parsing (what the dag-processor repeats every ~30 s) imports no pipeline/data module, opens no socket."""
    files = sorted(str(p) for p in DAGS.glob("*.py"))
    guard = tmp_path / "sitecustomize.py"  # any socket connect during the parse fails the probe
    guard.write_text("import socket\n"
                     "def _no(*a, **k):\n    raise RuntimeError('network touched while parsing DAGs')\n"
                     "socket.socket.connect = _no\nsocket.create_connection = _no\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/absent/never.db"}
    out = subprocess.run([sys.executable, "-c", _PROBE, *files], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in res["new"] if m.split(".")[0] in HEAVY]
    assert heavy == [], f"imported at DAG parse time: {heavy}"
    assert not (tmp_path / "absent").exists()  # no metadata DB created or opened
    for f, secs in res["times"].items():
        assert secs < 2.0, f"{f} took {secs:.2f} s to parse"
