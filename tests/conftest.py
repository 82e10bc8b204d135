"""Shared fixtures. Airflow settings are fixed before any test imports airflow."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def pytest_configure(config):
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow-test")))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # tests choose their configuration explicitly; an operator's FAERS_CONFIG must not leak in
    os.environ.pop("FAERS_CONFIG", None)
    home.mkdir(parents=True, exist_ok=True)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
