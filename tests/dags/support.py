"""Helpers for the DAG tests."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


@functools.cache
def migrate() -> None:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)


def _bag():
    """The DAG folder parsed as Airflow's dag-processor parses its bundle (bundle root on ``sys.path``)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder")


@functools.cache
def parsed_bag():
    return _bag()


def load_dag(dag_id: str, *, retries: int = 0):
    """A fresh parse of ``dag_id`` with every task's retries forced to ``retries`` (no retry delays in tests)."""
    dag = _bag().dags[dag_id]
    for t in dag.tasks:
        t.retries = retries
    return dag


def requires(module: str, attr: str | None = None):
    """The pipeline module (and attribute) an end-to-end run needs; a missing one is a failure, not a skip."""
    import importlib

    mod = importlib.import_module(module)
    if attr:
        assert hasattr(mod, attr), f"{module}.{attr} is missing: the end-to-end DAG run needs it"
    return mod


def sample_mirror(out: Path, quarters: str, reports: int) -> Path:
    subprocess.run([sys.executable, "-m", "pipeline", "--quiet", "sample", "--out", str(out), "--quarters", quarters,
                    "--reports-per-quarter", str(reports)], check=True, cwd=ROOT, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out
