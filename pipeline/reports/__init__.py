"""Reports people read: curated tables -> statistics -> ``DIR/reports/<run_id>/`` -> terminal and UI.

Public API (docs/CONTRACTS.md, "Reports")::

    build_report(data_dir, config, *, progress=False, substances=None, pt_groups=None, roles=None,
                 mgps_likelihood=None, cutoff_quarter=None, from_quarter=None, force=False) -> dict
    focus_table_text(report_dir, substance=None, pt_group=None, pt=None, limit=None, top_pts=0) -> str
    register(subparsers)            # the `signals` and `show` CLI commands

Modules, in the order the data flows: :mod:`.build` (``build_report``, the steps in order), :mod:`.params`
(parameters, the curated database, the fingerprint), :mod:`.dating` (cut-off database, study window),
:mod:`.population` (the analysis population counted in DuckDB), :mod:`.scoring` (the MGPS prior, statistics
tables), :mod:`.trend` (statistics by quarter, each case at its version as of the quarter), :mod:`.manifest`,
:mod:`.publish` (staging, the atomic rename, ``latest``),
:mod:`.html` + :mod:`.plots` (the self-contained ``report.html``), :mod:`.terminal` (aligned text tables),
:mod:`.command` (CLI), :mod:`.airflow_plugin` (Airflow UI page). Column meanings: ``docs/report-columns.md``.
"""

from __future__ import annotations

import importlib

# Lazy (PEP 562): registering the CLI commands must not import pandas/duckdb (fast start for every command).
_NAMES = {"FAMILY": "build", "build_report": "build", "latest_report_dir": "publish", "read_manifest": "manifest",
          "focus_table_text": "terminal"}


def __getattr__(name):
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(subparsers):
    """Add the ``signals`` and ``show`` commands to the CLI's sub-parsers."""
    from pipeline.reports.command import register as _register

    return _register(subparsers)


__all__ = ["FAMILY", "build_report", "focus_table_text", "latest_report_dir", "read_manifest", "register"]
