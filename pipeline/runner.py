"""Orchestration steps shared by the CLI (``run``, ``demo``) and the Airflow DAGs.

Each step is idempotent for its unit of work (a quarter, or the whole curated set) and returns a
small JSON-able dict (it travels through Airflow's XCom): paths and counts, never data frames.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pipeline.jsonsafe import jsonable
from pipeline.layout import DataDir
from pipeline.memory import release_memory
from pipeline.quarters import Quarter

log = logging.getLogger(__name__)


def plan(source: str, data_dir: DataDir, quarters: list[Quarter] | None = None) -> list[str]:
    """Quarters that need work: their zip is new or changed at the source, or landed but not ingested."""
    todo = [str(r.quarter) for r in _plan(source, data_dir, quarters)]
    log.info("plan: %d quarter(s) to fetch/ingest: %s", len(todo), ", ".join(todo) or "none")
    return todo


def _plan(source: str, data_dir: DataDir, quarters: list[Quarter] | None = None):
    from pipeline import ingest, sources

    session = sources.session_for(source)
    return [remote for remote in sources.discover(source, quarters, session=session)
            if not (sources.is_current(remote, data_dir, session=session)
                    and ingest.is_ingested(data_dir, remote.quarter, data_dir.landing / remote.name))]


def fetch_quarter(source: str, data_dir: DataDir, quarter: str, *, progress: bool = False) -> dict:
    from pipeline import sources

    [remote] = sources.discover(source, [Quarter.parse(quarter)])
    got = sources.fetch_one(remote, data_dir, progress=progress)
    return {"quarter": quarter, "zip": remote.name, "downloaded": got is not None}


def ingest_quarter(data_dir: DataDir, quarter: str, config_path: str | Path | None = None, *, force: bool = False,
                   progress: bool = False, validate: bool = True) -> dict:
    """Ingest (and validate) one landed quarter; a no-op when its zip was already ingested."""
    from pipeline.ingest import ingest
    from pipeline.settings import load_config

    gates = load_config(config_path).gates
    [res] = ingest(data_dir, [Quarter.parse(quarter)], force=force, progress=progress, validate=validate,
                   quarantine_max=gates.quarantine_rate_max)
    out = {"quarter": quarter, "skipped": res.skipped, "rows": res.rows, "quarantined": res.quarantined,
           "seconds": round(res.seconds, 2)}
    if res.validation:
        out["validation"] = {k: res.validation.get(k) for k in ("success", "warnings") if k in res.validation}
    log.info("%s", res.summary_line())
    return out


def curate_all(data_dir: DataDir, config_path: str | Path | None = None, *, progress: bool = False,
               force: bool = False) -> dict:
    """Curate every ingested quarter; returns ``changed: False`` (and does nothing) when inputs are unchanged,
    unless ``force``."""
    from pipeline.curate import curate
    from pipeline.settings import load_config

    from pipeline import quality
    from pipeline.atomic import write_json
    from pipeline.quality.curated_tables import workers_setting

    config = load_config(config_path)
    workers_setting()  # a bad setting stops here, before curation swaps its tables in
    summary = curate(data_dir, config, progress=progress, force=force)
    if summary.get("changed", True):
        release_memory()  # what curation's DuckDB and Arrow buffers freed, before the validation reads the tables
    # Curation swaps its tables in before they are validated. Remember which fingerprint passed, so a
    # failed validation is repeated (and fails again) on the next run instead of passing as "unchanged".
    fp = json.loads((data_dir.curated / "manifest.json").read_text()).get("fingerprint")
    passed = data_dir.curated / "validated.json"
    last_ok = json.loads(passed.read_text()).get("fingerprint") if passed.exists() else None
    if summary.get("changed", True) or last_ok != fp:
        summary["validation"] = quality.validate_curated(data_dir, config)  # raises ValidationFailed
        write_json({"fingerprint": fp}, passed)
        summary["changed"] = True
    return jsonable(summary)


def signals_run(data_dir: DataDir, config_path: str | Path | None = None, *, progress: bool = False,
                **params) -> dict:
    """Statistics + report folder from the curated tables (``params`` override config values)."""
    from pipeline.reports import build_report
    from pipeline.settings import load_config

    config = load_config(config_path)
    return jsonable(build_report(data_dir, config, progress=progress, **params))


def latest_report(data_dir: DataDir) -> Path | None:
    """The newest report folder, or None when ``latest`` is missing or points at a folder that is gone."""
    return data_dir.latest_report()


def run(source: str, data_dir: DataDir, quarters: list[Quarter] | None = None,
        config_path: str | Path | None = None, *, progress: bool = True) -> dict:
    """fetch -> ingest -> curate -> signals; seconds and no new files when nothing changed."""
    t0 = time.perf_counter()
    from pipeline import sources

    todo = _plan(source, data_dir, quarters)  # one look at the source page for the whole run
    log.info("plan: %d quarter(s) to fetch/ingest", len(todo))
    steps = {"quarters": []}
    session = sources.session_for(source)
    for remote in todo:
        got = sources.fetch_one(remote, data_dir, session=session, progress=progress)
        ingested = ingest_quarter(data_dir, str(remote.quarter), config_path, progress=progress)
        steps["quarters"].append({"quarter": str(remote.quarter), "zip": remote.name,
                                  "downloaded": got is not None, **ingested})
    if todo:
        release_memory()  # a quarter's parsed tables are freed but kept by the allocators: not beside curation's DuckDB
    curated = curate_all(data_dir, config_path, progress=progress)
    if curated.get("changed", True):
        release_memory()
    steps["curate"] = curated
    if curated.get("changed", True) or latest_report(data_dir) is None:
        steps["signals"] = signals_run(data_dir, config_path, progress=progress)
    else:
        steps["signals"] = {"skipped": True, "report_dir": str(latest_report(data_dir))}
    steps["seconds"] = round(time.perf_counter() - t0, 2)
    steps["changed"] = bool(todo) or curated.get("changed", True)
    return steps
