"""Airflow fixtures for the DAG tests (settings themselves come from ``tests/conftest.py``)."""

from __future__ import annotations

import pytest

from tests.dags.support import migrate, parsed_bag


@pytest.fixture
def airflow_db():
    """A migrated SQLite metadata DB in $AIRFLOW_HOME (``dag.test()`` needs one)."""
    migrate()


@pytest.fixture
def dagbag():
    return parsed_bag()
