"""Airflow plugin entry point: the FAERS signals page (``/faers-signals``) in the Airflow UI.

Thin on purpose; the code and its docs are in ``pipeline/reports/airflow_plugin.py``. The api-server must be able
to import ``pipeline`` (PYTHONPATH = the repository root) and sees the data directory through ``FAERS_DATA_DIR``.
"""

from pipeline.reports.airflow_plugin import FaersSignalsPlugin

__all__ = ["FaersSignalsPlugin"]
