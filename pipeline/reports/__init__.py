"""Reports people read: curated tables -> statistics -> ``DIR/reports/<run_id>/`` -> terminal and UI.

Public API (docs/CONTRACTS.md, "Reports")::

    build_report(data_dir, config, *, progress=False, substances=None, pt_groups=None, roles=None,
                 mgps_likelihood=None, cutoff_quarter=None, force=False) -> dict
    focus_table_text(report_dir, substance=None, pt_group=None, pt=None, limit=None, top_pts=0) -> str
    register(subparsers)            # the `signals` and `show` CLI commands

Modules: :mod:`.build` (statistics and the report folder), :mod:`.trend` (cumulative statistics by quarter),
:mod:`.html` + :mod:`.plots` (the self-contained ``report.html``), :mod:`.terminal` (aligned text tables),
:mod:`.command` (CLI), :mod:`.airflow_plugin` (Airflow UI page). Column meanings: ``docs/report-columns.md``.
"""

from __future__ import annotations

from pipeline.reports.build import FAMILY, build_report, latest_report_dir, read_manifest
from pipeline.reports.terminal import focus_table_text


def register(subparsers):
    """Add the ``signals`` and ``show`` commands to the CLI's sub-parsers."""
    from pipeline.reports.command import register as _register

    return _register(subparsers)


__all__ = ["FAMILY", "build_report", "focus_table_text", "latest_report_dir", "read_manifest", "register"]
