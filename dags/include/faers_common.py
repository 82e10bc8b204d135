"""What both FAERS DAGs share: settings, Assets, retry policy, Param vocabularies, error translation and the
data-directory lock.

Imported by the DAG files at parse time (the ``include/`` pattern: Airflow puts the DAG bundle's root on
``sys.path``), so it imports only Airflow's SDK at module level; ``pipeline`` is imported inside the functions a
task calls. The Param vocabularies are therefore literals; ``tests/dags/test_dag_vocabulary.py`` checks that they
equal the pipeline's own.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from datetime import timedelta

from airflow.sdk import Asset, Param

CURATED = Asset(name="faers_curated", uri="x-faers://curated", group="faers")
REPORT = Asset(name="faers_signals_report", uri="x-faers://reports/latest", group="faers")

#: tasks that talk to the network retry with exponential backoff
NETWORK_RETRIES = {"retries": 3, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": 2.0,
                   "max_retry_delay": timedelta(minutes=30)}
#: every other task retries twice after 30 s: a lost worker, a broker restart or a killed process is worth another
#: try (every step replaces its output atomically). Data problems never retry: ``data_problems_fail`` turns them
#: into AirflowFailException, which skips the remaining tries.
DEFAULT_ARGS = {"owner": "pharmacovigilance", "retries": 2, "retry_delay": timedelta(seconds=30)}

SUBSTANCES = ["ketamine", "esketamine", "arketamine", "norketamine", "ketamine_family"]
ROLES = ["PS", "SS", "C", "I"]
MGPS_LIKELIHOODS = ["openebgm", "conditional", "zero-inclusive"]
#: 2024Q3 | 2023Q1:2024Q4 | 2023Q1,2024Q2
QUARTER_RANGE = r"^\s*(\d{4}Q[1-4]\s*([:,]\s*\d{4}Q[1-4]\s*)*)?$"
QUARTER = r"^\d{4}Q[1-4]$"

log = logging.getLogger("faers.dag")


def setting(name: str) -> str | None:
    """Airflow Variable ``name`` if set, else the environment variable of the same name."""
    from airflow.sdk import Variable

    return Variable.get(name, default=None) or os.environ.get(name) or None


def data_dir():
    """The data folder of ``FAERS_DATA_DIR`` (default ``./data``)."""
    from pipeline.layout import DataDir

    return DataDir.of(setting("FAERS_DATA_DIR"))


def config_path() -> str | None:
    """``FAERS_CONFIG``, or None for the shipped default."""
    return setting("FAERS_CONFIG")


def source() -> str:
    """``FAERS_SOURCE``, else FDA's quarterly-files page."""
    from pipeline.vocabulary import FDA_QUARTERLY_PAGE

    return setting("FAERS_SOURCE") or FDA_QUARTERLY_PAGE


def list_param(enum: list[str] | None = None, **kw) -> Param:
    """An optional list Param (empty = use the configuration)."""
    items = {"type": "string", **({"enum": enum} if enum else {})}
    return Param(None, type=["null", "array"], items=items, uniqueItems=True, **kw)


@contextmanager
def data_problems_fail(*, retry_source: bool = False):
    """Data problems fail the task without retries; an unreachable source (network tasks) may retry."""
    from airflow.sdk.exceptions import AirflowFailException
    from pipeline.errors import PipelineError, SourceError

    try:
        yield
    except PipelineError as exc:
        if retry_source and isinstance(exc, SourceError):
            raise
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def data_dir_held(quarter: str | None = None, *, shared: bool = False):
    """The pipeline's data-directory lock, as the CLI takes it (``pipeline/lock.py``); a task waits for it.

    A per-quarter task holds it shared plus its own quarter exclusively, so mapped quarters run in parallel on
    several workers; curation and reports hold it exclusively; a CLI run on the same directory keeps all of them
    out, and they keep it out (it refuses with exit 75, or waits with ``--wait``).
    """
    from pipeline import lock

    ctx_id = _task_label()
    dd = data_dir()
    if quarter is not None:
        cm = lock.quarter_lock(dd, quarter, wait=True, command=ctx_id)
    else:
        cm = lock.data_dir_lock(dd, shared=shared, wait=True, command=ctx_id)
    with cm:
        yield


def _task_label() -> str:
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        return f"airflow {ti.dag_id}.{ti.task_id}[{ti.map_index}] {ti.run_id} try {ti.try_number}"
    except Exception:  # outside a running task (tests calling the helper directly)
        return "airflow task"
