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
`cutoff_quarter` (ignore data received after this quarter, e.g. `2024Q2`, to reproduce an earlier report).

**Failures**: a configuration or validation problem fails the task at once (no retry) with a one-line reason;
fix it and *Clear* the task. A rerun never overwrites an earlier report folder.
Signals of disproportionate reporting are hypotheses, not evidence of causation.
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

CURATED = Asset(name="faers_curated", uri="x-faers://curated", group="faers")
REPORT = Asset(name="faers_signals_report", uri="x-faers://reports/latest", group="faers")
# Literal copies of pipeline.vocabulary (a DAG file must not import pipeline at parse time);
# tests/test_vocabulary.py fails when they drift.
SUBSTANCES = ["ketamine", "esketamine", "arketamine", "norketamine", "ketamine_family"]
ROLE_CODES = ["PS", "SS", "C", "I"]
MGPS_LIKELIHOODS = ["openebgm", "conditional", "zero-inclusive"]
log = logging.getLogger("faers.dag")


def setting(name: str) -> str | None:
    """Airflow Variable ``name`` if set, else the environment variable of the same name."""
    from airflow.sdk import Variable

    return Variable.get(name, default=None) or os.environ.get(name) or None


def _list_param(enum: list[str] | None = None, **kw) -> Param:
    items = {"type": "string", **({"enum": enum} if enum else {})}
    return Param(None, type=["null", "array"], items=items, uniqueItems=True, **kw)


@dag(dag_id="ketamine_signals", schedule=[CURATED], start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
     catchup=False, max_active_runs=1, doc_md=__doc__, tags=["faers", "signals", "pharmacovigilance"],
     default_args={"owner": "pharmacovigilance", "retries": 0},
     params={
         "substances": _list_param(SUBSTANCES, description="Substances to report (empty: config)."),
         "pt_groups": _list_param(None, description="PT groups defined in the config, e.g. dissociation "
                                                             "(empty: all configured groups)."),
         "roles": _list_param(ROLE_CODES,
                              description="Drug roles counted as exposure (empty: config, normally PS + SS)."),
         "mgps_likelihood": Param(None, type=["null", "string"],
                                  enum=[None, *MGPS_LIKELIHOODS],
                                  description="MGPS likelihood for EBGM (empty: config)."),
         "cutoff_quarter": Param(None, type=["null", "string"], pattern=r"^\d{4}Q[1-4]$",
                                 description="Data cut-off quarter, e.g. 2024Q2 (empty: all curated data)."),
     })
def ketamine_signals():
    @task(outlets=[REPORT])
    def build_signals_report() -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from pipeline import runner
        from pipeline.errors import PipelineError
        from pipeline.layout import DataDir

        ctx = get_current_context()
        for event in [e for events in ctx["triggering_asset_events"].values() for e in events]:
            log.info("triggered by %s from %s: %s", event.asset.name, event.source_run_id, event.extra)
        names = ("substances", "pt_groups", "roles", "mgps_likelihood", "cutoff_quarter")
        chosen = {k: ctx["params"].get(k) or None for k in names}  # empty list/string: use the config
        log.info("params (None = from config): %s", chosen)
        dd = DataDir.of(setting("FAERS_DATA_DIR"))
        try:
            res = runner.signals_run(dd, setting("FAERS_CONFIG"), **chosen)
        except PipelineError as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
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
