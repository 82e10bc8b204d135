"""Airflow 3 UI page for the latest report: a FastAPI app under ``/faers-signals`` plus a navigation entry.

Routes (every one behind Airflow's own login and permissions: ``Depends(requires_access_dag("GET",
param_dag_id="ketamine_signals"))`` on the whole app resolves the caller from the UI's ``_token`` cookie or an
``Authorization: Bearer`` JWT (401 without a valid one) and asks the auth manager whether that user may read the DAG
that produces the report (403 otherwise; under FAB: roles Viewer and up). FastAPI plugin endpoints are *not*
protected by Airflow automatically):

* ``GET /faers-signals/``            sortable signals table of the latest report (from ``signals.parquet``)
* ``GET /faers-signals/report``      the latest ``report.html`` (self-contained)
* ``GET /faers-signals/signals.json`` the same rows as JSON

Only these three fixed files of ``DIR/reports/latest`` are read; no path from the request reaches the file
system. ``DIR`` is ``$FAERS_DATA_DIR`` (default ``./data``) of the api-server process.
"""

from __future__ import annotations

import json
import math
from urllib.parse import urlencode

import pandas as pd
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from pipeline.jsonsafe import jsonable

URL_PREFIX = "/faers-signals"
KINDS = ("groups", "pts", "all")
COLUMNS = ["substance", "pt_group", "pt", "a", "n_drug", "expected", "ror", "ror_lo", "ror_hi", "prr", "ic025",
           "eb05", "fisher_p", "signal_prr", "signal_ror", "signal_ic", "signal_ebgm"]
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'self'"


def _latest():
    from pipeline.layout import DataDir
    from pipeline.reports.publish import latest_report_dir

    d = latest_report_dir(DataDir.of(None))
    if d is None:
        raise HTTPException(status_code=404, detail="no report yet: run the ketamine_signals DAG or "
                                                    "`pipeline signals`")
    return d


def _rows(kind: str, substance: str | None, min_a: int, limit: int, sort: str = "ror_lo",
          order: str = "desc") -> tuple[pd.DataFrame, dict]:
    d = _latest()
    manifest = json.loads((d / "manifest.json").read_text())
    df = pd.read_parquet(d / "signals.parquet", columns=COLUMNS)
    for c in ("substance", "pt_group", "pt"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    if kind == "groups":
        df = df[df["pt"].isna()]
    elif kind == "pts":
        df = df[df["pt"].notna()]
    if substance:
        df = df[df["substance"] == substance]
    df = df[df["a"] >= min_a]
    if sort not in COLUMNS:
        raise HTTPException(status_code=422, detail=f"sort must be one of {', '.join(COLUMNS)}")
    key = df[sort]
    if key.dtype == object:
        key = key.fillna("").astype(str).str.lower()
    else:
        key = key.astype(float).fillna(-math.inf)
    df = df.assign(_k=key).sort_values("_k", ascending=order == "asc", kind="mergesort").drop(columns="_k")
    return df.head(limit), manifest


def _cell(v, kind="num") -> tuple[str, str]:
    """(display, sort key) for a table cell, as plain text (the template escapes them)."""
    from pipeline.reports.html import fmt

    if isinstance(v, (bool,)) or kind == "flag":
        return ("●" if v else ""), ("1" if v else "0")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—", "-1e308"
    if kind == "text":
        return str(v), str(v).lower()
    f = float(v)
    key = "1e308" if math.isinf(f) and f > 0 else repr(f)
    return fmt(f, "int" if kind == "int" else ("p" if kind == "p" else "num")), key


HEAD = [("substance", "substance", "text"), ("pt_group", "PT group", "text"), ("pt", "PT", "text"),
        ("a", "a", "int"), ("n_drug", "n", "int"), ("expected", "E", "num"), ("ror", "ROR", "num"),
        ("ror_lo", "ROR lo", "num"), ("ror_hi", "ROR hi", "num"), ("prr", "PRR", "num"), ("ic025", "IC025", "num"),
        ("eb05", "EB05", "num"), ("fisher_p", "Fisher p", "p"), ("signal_prr", "⚑PRR", "flag"),
        ("signal_ror", "⚑ROR", "flag"), ("signal_ic", "⚑IC", "flag"), ("signal_ebgm", "⚑EB", "flag")]


def _page(df: pd.DataFrame, m: dict, *, kind: str, substance: str | None, min_a: int, limit: int, sort: str,
          order: str) -> str:
    """The table page (``templates/signals_page.html.j2``, autoescaped)."""
    from pipeline.reports.html import render_template

    # sorting works without JavaScript (the UI's iframe sandbox has no allow-scripts): headers are links
    base = {"kind": kind, "substance": substance or "", "min_a": min_a, "limit": limit}
    head = []
    for col, label, k in HEAD:
        new = "asc" if (col == sort and order == "desc") or (col != sort and k == "text") else "desc"
        head.append({"cls": "t" if k == "text" else "", "dir": order if col == sort else None, "label": label,
                     "query": urlencode({**base, "sort": col, "order": new})})
    rows = [[dict(zip(("text", "key"), _cell(r[col], k)), cls="t" if k == "text" else ("f" if k == "flag" else ""))
             for col, _, k in HEAD] for r in df.to_dict("records")]
    return render_template(
        "signals_page.html.j2", synthetic=bool(m.get("synthetic")), run_id=m["run_id"], cutoff=m["data_cutoff"],
        n_total=f"{int(m['counts']['analysis_population']):,}", kind=kind, min_a=min_a, limit=limit, kinds=KINDS,
        substances=list(dict.fromkeys(m["parameters"]["substances"])), substance=substance, sort=sort,
        order=order, head=head, rows=rows, conf=f"{float(m['statistics']['confidence_level']) * 100:g}%")


def create_app() -> FastAPI:
    """The plugin's FastAPI app; every route requires a user allowed to read the ``ketamine_signals`` DAG."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    # the report is that DAG's output: whoever may not see the DAG may not see its results either
    app = FastAPI(title="FAERS ketamine-family signals",
                  dependencies=[Depends(requires_access_dag("GET", param_dag_id="ketamine_signals"))],
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def table(kind: str = Query("groups", pattern="^(groups|pts|all)$"), substance: str | None = None,
              min_a: int = Query(0, ge=0), limit: int = Query(2000, ge=1, le=20000), sort: str = "ror_lo",
              order: str = Query("desc", pattern="^(asc|desc)$")):
        df, m = _rows(kind, substance or None, min_a, limit, sort, order)
        html_text = _page(df, m, kind=kind, substance=substance, min_a=min_a, limit=limit, sort=sort, order=order)
        return HTMLResponse(html_text, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})

    @app.get("/report", response_class=HTMLResponse)
    def report():
        d = _latest()
        return Response((d / "report.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": REPORT_CSP, "Cache-Control": "no-store"})

    @app.get("/signals.json")
    def signals_json(kind: str = Query("groups", pattern="^(groups|pts|all)$"), substance: str | None = None,
                     min_a: int = Query(0, ge=0), limit: int = Query(2000, ge=1, le=20000), sort: str = "ror_lo",
                     order: str = Query("desc", pattern="^(asc|desc)$")):
        df, m = _rows(kind, substance or None, min_a, limit, sort, order)
        rows = [{k: jsonable(v) for k, v in r.items()} for r in df.to_dict("records")]
        return JSONResponse({"run_id": m["run_id"], "data_cutoff": m["data_cutoff"],
                             "synthetic": bool(m.get("synthetic")), "rows": rows},
                            headers={"Cache-Control": "no-store"})

    return app


class FaersSignalsPlugin(AirflowPlugin):
    """Navigation entry "FAERS signals" (Browse menu; an iframe of the table page) + the app itself.

    ``href`` has no leading slash: the Airflow UI page has ``<base href>`` set to the api-server's base URL.
    """

    name = "faers_signals"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "FAERS signals"}]
    external_views = [{"name": "FAERS signals", "href": URL_PREFIX.lstrip("/") + "/", "destination": "nav",
                       "category": "browse", "url_route": "faers-signals"}]
