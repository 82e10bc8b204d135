"""
### Ketamine signals — disproportionality statistics and the report, whenever curated FAERS data changes

**When it runs**: automatically after `faers_ingest` publishes the Asset **`faers_curated`** (new or changed
curated tables), or by hand with *Trigger DAG w/ config* to answer a specific question.

**What it does** — `build_signals_report`: statistics (PRR, ROR, IC, EBGM with CIs) for the ketamine family
against every other ingredient → validation of the statistics → a report folder
`FAERS_DATA_DIR/reports/<run_id>/` (`signals.parquet`, `all_pairs.parquet`, `funnel.parquet`,
`manifest.json`, `report.html`); `reports/latest` then points at it and the Asset **`faers_signals_report`**
is updated. The log lists the focus table (substance × PT group). If the latest report already covers the same
curated data, configuration and params, nothing is written and the task is *skipped*.

**Params** (leave empty to use the configuration file `FAERS_CONFIG`, or the shipped default):
`substances`, `pt_groups`, `roles` (drug role codes counted as exposure: PS, SS, C, I), `mgps_likelihood`,
`cutoff_quarter` (the database as it stood at the end of this quarter, e.g. `2024Q2`: each case at its latest
version received by then, deleted-case lists up to then; reproduces an earlier report), `from_quarter` (study window:
only cases first received in this quarter or later, report and background alike).

**Failures**: a configuration or validation problem fails the task at once (no retry) with a one-line reason;
fix it and *Clear* the task. A lost worker is retried twice after 30 s. A rerun never overwrites an earlier report folder.
Signals of disproportionate reporting are hypotheses, not evidence of causation.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from include.faers_common import (CURATED, DEFAULT_ARGS, MGPS_LIKELIHOODS, QUARTER, REPORT, ROLES,
                                  SUBSTANCES, config_path, data_dir, data_dir_held, data_problems_fail, list_param, log)


@dag(dag_id="ketamine_signals", schedule=[CURATED], start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
     catchup=False, max_active_runs=1, doc_md=__doc__, tags=["faers", "signals", "pharmacovigilance"],
     default_args=DEFAULT_ARGS,
     params={
         "substances": list_param(SUBSTANCES, description="Substances to report (empty: config)."),
         "pt_groups": list_param(None, description="PT groups defined in the config, e.g. dissociation "
                                                  "(empty: all configured groups)."),
         "roles": list_param(ROLES, description="Drug roles counted as exposure (empty: config, normally PS + SS)."),
         "mgps_likelihood": Param(None, type=["null", "string"], enum=[None, *MGPS_LIKELIHOODS],
                                  description="MGPS likelihood for EBGM (empty: config)."),
         "cutoff_quarter": Param(None, type=["null", "string"], pattern=QUARTER,
                                 description="Data cut-off quarter, e.g. 2024Q2: the database as it stood at "
                                             "the end of it (empty: all curated data)."),
         "from_quarter": Param(None, type=["null", "string"], pattern=QUARTER,
                               description="Study window start, e.g. 2019Q1: only cases first received in it or "
                                           "later (empty: every case)."),
     })
def ketamine_signals():
    @task(outlets=[REPORT])
    def build_signals_report() -> dict:
        """Statistics and the report folder from the curated tables; skipped when the latest report is current."""
        from pipeline import runner

        ctx = get_current_context()
        for event in [e for events in ctx["triggering_asset_events"].values() for e in events]:
            log.info("triggered by %s from %s: %s", event.asset.name, event.source_run_id, event.extra)
        names = ("substances", "pt_groups", "roles", "mgps_likelihood", "cutoff_quarter", "from_quarter")
        chosen = {k: ctx["params"].get(k) or None for k in names}  # empty list/string: use the config
        log.info("params (None = from config): %s", chosen)
        with data_problems_fail(), data_dir_held():
            res = runner.signals_run(data_dir(), config_path(), **chosen)
        focus = res.get("focus") or []
        log.info("report %s in %s (%d focus row(s), changed=%s)", res.get("run_id"), res.get("report_dir"),
                 len(focus), res.get("changed"))
        for row in focus:
            log.info("focus %s", row)
        if res.get("changed") is False:  # same curated data, config and params as the latest report
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"report unchanged: {res.get('report_dir')} is current; no asset event")
        ctx["outlet_events"][REPORT].extra = {"report_dir": res.get("report_dir"), "run_id": res.get("run_id")}
        return {k: res.get(k) for k in ("report_dir", "run_id", "changed")} | {"focus_rows": len(focus)}

    build_signals_report()


ketamine_signals()
