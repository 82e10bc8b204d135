"""
### FAERS ingest — nightly: new FDA quarters → raw tables → curated case tables

**What it does** (03:00 UTC, one run at a time, no catch-up):

1. `plan_quarters` asks `FAERS_SOURCE` which quarterly zips are new or changed (or landed but not ingested).
2. Per quarter (one mapped instance each, labelled with the quarter): `fetch_quarter` downloads the zip into
   `FAERS_DATA_DIR/landing/` (sha256 + zip check), then `ingest_and_validate` writes typed raw tables and
   runs the Great Expectations raw-quarter suite. A quarter that fails validation is **not** swapped in.
3. `curate_and_validate` rebuilds the de-duplicated case tables in `FAERS_DATA_DIR/curated/` and validates
   them; it does nothing (seconds) when its inputs are unchanged.
4. `publish_curated` updates the Asset **`faers_curated`** only when the curated tables changed; otherwise it
   is *skipped* and `ketamine_signals` is not triggered.

**Settings** (read when a task runs; an Airflow Variable of the same name wins over the environment):
`FAERS_SOURCE` (FDA page, any http(s) listing, `file://` mirror or folder), `FAERS_DATA_DIR`, `FAERS_CONFIG`.

**Failures**: network tasks (`plan_quarters`, `fetch_quarter`) retry with exponential backoff; the others retry
twice after 30 s (a lost worker or broker). Data problems (validation failed, bad zip, null keys) fail at once
with a one-line reason in the log and are never retried: fix the cause, then *Clear* the failed task.
Every task holds the data directory's lock (shared per quarter, exclusive for curation), so a `pipeline run` on
the same directory waits for the DAG or the DAG for it.

**Rerun a quarter**: *Trigger DAG w/ config* with `quarters` = `2024Q3` (or `2023Q1:2024Q4`) and `force` = true.
Reruns are safe: every step replaces its output atomically. See `docs/airflow.md`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task, task_group
from include.faers_common import (CURATED, DEFAULT_ARGS, NETWORK_RETRIES, QUARTER_RANGE, config_path,
                                  data_dir, data_dir_held, data_problems_fail, log, source)


@dag(dag_id="faers_ingest", schedule=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
     start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False, max_active_runs=1,
     doc_md=__doc__, tags=["faers", "ingest", "pharmacovigilance"],
     default_args=DEFAULT_ARGS,  # 2 retries after 30 s (never for data problems); network tasks below
     params={"quarters": Param(None, type=["null", "string"], pattern=QUARTER_RANGE,
                               description="Only these quarters, e.g. 2024Q3, 2023Q1:2024Q4 or 2023Q1,2024Q2 "
                                          "(empty: everything the source offers)."),
             "force": Param(False, type="boolean",
                            description="Re-ingest the selected quarters even if unchanged (rerun a quarter).")})
def faers_ingest():
    @task(**NETWORK_RETRIES)
    def plan_quarters() -> list[str]:
        """Quarters to fetch and ingest: new or changed at the source, or landed but not ingested."""
        from pipeline import runner, sources
        from pipeline.quarters import parse_range

        params = get_current_context()["params"]
        with data_problems_fail(retry_source=True), data_dir_held(shared=True):
            wanted = parse_range(params.get("quarters") or None)
            todo = runner.plan(source(), data_dir(), wanted)
            if params.get("force"):
                todo = sorted({str(r.quarter) for r in sources.discover(source(), wanted)} | set(todo))
        log.info("plan: %d quarter(s) to fetch/ingest from %s: %s", len(todo), source(), ", ".join(todo) or "none")
        return todo

    @task(**NETWORK_RETRIES, map_index_template="{{ quarter }}")
    def fetch_quarter(quarter: str) -> str:
        """Download one quarter's zip into landing/ (sha256 and zip check); nothing when already current."""
        from pipeline import runner

        get_current_context()["quarter"] = quarter  # names the mapped instance in the UI
        with data_problems_fail(retry_source=True), data_dir_held(quarter):
            got = runner.fetch_quarter(source(), data_dir(), quarter)
        log.info("fetch %s: %s (%s)", quarter, got["zip"], "downloaded" if got["downloaded"] else "already current")
        return quarter

    @task(map_index_template="{{ quarter }}")
    def ingest_and_validate(quarter: str) -> dict:
        """Typed raw tables of one quarter, validated, swapped in whole; skipped when the zip is unchanged."""
        from pipeline import runner

        ctx = get_current_context()
        ctx["quarter"] = quarter
        force = bool(ctx["params"].get("force"))
        with data_problems_fail(), data_dir_held(quarter):
            res = runner.ingest_quarter(data_dir(), quarter, config_path(), force=force)
        rows = ", ".join(f"{t} {n:,}" for t, n in (res.get("rows") or {}).items()) or "no rows"
        checks = res.get("validation") or {}
        verdict = (f"passed, {len(checks.get('warnings') or [])} warning(s)" if checks.get("success") else "not run")
        log.info("ingest %s: %s; %s quarantined line(s); validation %s; %.1f s", quarter,
                 "unchanged since last ingest" if res["skipped"] else rows, res["quarantined"], verdict, res["seconds"])
        return {**res, "validation": {"success": checks.get("success"), "warnings": len(checks.get("warnings") or [])}}

    @task_group(group_id="quarter")
    def one_quarter(quarter: str):
        """fetch -> ingest for one quarter (one mapped group per quarter)."""
        ingest_and_validate(fetch_quarter(quarter))

    @task(trigger_rule="none_failed")  # runs after an empty plan too (mapped tasks skipped)
    def curate_and_validate() -> dict:
        """De-duplicated case tables in curated/, validated; does nothing when its inputs are unchanged."""
        from pipeline import runner

        with data_problems_fail(), data_dir_held():
            summary = runner.curate_all(data_dir(), config_path())
        keep = ("changed", "kept_cases", "analysis_population", "substance_reports", "rows", "warnings")
        out = {k: summary[k] for k in keep if k in summary}
        if not out.get("changed", True):
            log.info("curate: inputs unchanged, nothing to do (%s kept cases)", out.get("kept_cases"))
            return out
        for step in summary.get("funnel", []):
            log.info("funnel %s %-40s %10s -> %10s  %s", step.get("step"), step.get("name"),
                     step.get("reports_in"), step.get("reports_out"), step.get("reason") or "")
        checks = summary.get("validation") or {}
        out["validation"] = {k: checks.get(k) for k in ("success", "statistics", "warnings")}
        log.info("curate: %s", out)
        return out

    @task(outlets=[CURATED])
    def publish_curated(curated: dict) -> None:
        """Asset event on faers_curated when the curated tables changed; skipped otherwise."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not curated.get("changed", True):
            raise AirflowSkipException("curated tables unchanged: no asset event, ketamine_signals not triggered")
        ctx = get_current_context()
        ctx["outlet_events"][CURATED].extra = {
            "curated_dir": str(data_dir().curated), "kept_cases": curated.get("kept_cases"),
            "analysis_population": curated.get("analysis_population"), "run_id": ctx["run_id"]}
        log.info("published faers_curated: %s", ctx["outlet_events"][CURATED].extra)

    quarters = one_quarter.expand(quarter=plan_quarters())
    curated = curate_and_validate()
    quarters >> curated
    publish_curated(curated)


faers_ingest()
