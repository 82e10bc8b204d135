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
from html import escape

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
    """(display, sort key) for a table cell."""
    from pipeline.reports.html import fmt

    if isinstance(v, (bool,)) or kind == "flag":
        return ("●" if v else ""), ("1" if v else "0")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—", "-1e308"
    if kind == "text":
        return escape(str(v)), escape(str(v).lower())
    f = float(v)
    key = "1e308" if math.isinf(f) and f > 0 else repr(f)
    return fmt(f, "int" if kind == "int" else ("p" if kind == "p" else "num")), key


PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>FAERS signals</title>
<style>
body{{font:13px/1.4 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:12px 18px;color:#1d2329}}
.banner{{background:#b00020;color:#fff;font-weight:bold;padding:6px 10px;margin-bottom:8px}}
table{{border-collapse:collapse}} th,td{{border-bottom:1px solid #dde;padding:2px 7px;text-align:right;white-space:nowrap}}
th{{background:#eef1f4;position:sticky;top:0}} th a{{color:inherit;text-decoration:none}} td.t,th.t{{text-align:left}}
th[data-dir=asc]::after{{content:" ▲"}} th[data-dir=desc]::after{{content:" ▼"}}
tr:nth-child(even){{background:#fafbfc}} .f{{color:#b3261e;text-align:center}} form{{margin:6px 0}}
.note{{color:#5b6670}}
</style></head><body>
{banner}<h2 style="margin:4px 0">Ketamine-family disproportionality — latest report</h2>
<p class="note">Run <code>{run_id}</code> · data through <b>{cutoff}</b> · {n_total:,} reports ·
<a href="report" target="_blank" rel="noopener">open the full report (plots, methods, funnel)</a> ·
<a href="signals.json?kind={kind}&amp;min_a={min_a}&amp;limit={limit}">JSON</a></p>
<form method="get">rows: <select name="kind">{kind_opts}</select>
substance: <select name="substance"><option value="">all</option>{sub_opts}</select>
min a: <input name="min_a" type="number" min="0" value="{min_a}" style="width:4em">
<input type="hidden" name="sort" value="{sort}"><input type="hidden" name="order" value="{order}">
<button>show</button> <span class="note">{shown} row(s); click a column to sort</span></form>
<table id="t"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
<p class="note">a = reports with substance and event; E = expected a; ROR with its {conf} CI; flags: PRR (Evans),
ROR (a ≥ 3, lower bound &gt; 1), IC (IC025 &gt; 0), EB (EB05 ≥ 2). <b>Disproportionality is not causation.</b></p>
</body></html>"""

HEAD = [("substance", "substance", "text"), ("pt_group", "PT group", "text"), ("pt", "PT", "text"),
        ("a", "a", "int"), ("n_drug", "n", "int"), ("expected", "E", "num"), ("ror", "ROR", "num"),
        ("ror_lo", "ROR lo", "num"), ("ror_hi", "ROR hi", "num"), ("prr", "PRR", "num"), ("ic025", "IC025", "num"),
        ("eb05", "EB05", "num"), ("fisher_p", "Fisher p", "p"), ("signal_prr", "⚑PRR", "flag"),
        ("signal_ror", "⚑ROR", "flag"), ("signal_ic", "⚑IC", "flag"), ("signal_ebgm", "⚑EB", "flag")]


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
        # sorting works without JavaScript (the UI's iframe sandbox has no allow-scripts): headers are links
        base = f"kind={kind}&amp;substance={escape(substance or '')}&amp;min_a={min_a}&amp;limit={limit}"

        def th(col, label, k):
            new = "asc" if (col == sort and order == "desc") or (col != sort and k == "text") else "desc"
            mark = f' data-dir="{order}"' if col == sort else ""
            return (f'<th class="{"t" if k == "text" else ""}"{mark}><a href="?{base}&amp;sort={col}&amp;order={new}">'
                    f'{escape(label)}</a></th>')

        head = "".join(th(col, label, k) for col, label, k in HEAD)
        lines = []
        for r in df.to_dict("records"):
            cells = []
            for col, _, k in HEAD:
                disp, key = _cell(r[col], k)
                cls = "t" if k == "text" else ("f" if k == "flag" else "")
                cells.append(f'<td class="{cls}" data-v="{key}">{disp}</td>')
            lines.append("<tr>" + "".join(cells) + "</tr>")
        subs = list(dict.fromkeys(m["parameters"]["substances"]))
        banner = ('<div class="banner">SYNTHETIC DATA — generated by pipeline sample, not FDA FAERS data</div>'
                  if m.get("synthetic") else "")
        html_text = PAGE.format(
            banner=banner, run_id=escape(m["run_id"]), cutoff=escape(m["data_cutoff"]),
            n_total=int(m["counts"]["analysis_population"]), kind=kind, min_a=min_a, limit=limit,
            kind_opts="".join(f'<option{" selected" if k == kind else ""}>{k}</option>' for k in KINDS),
            sub_opts="".join(f'<option{" selected" if s == substance else ""}>{escape(s)}</option>' for s in subs),
            shown=len(df), head=head, sort=escape(sort), order=order, body="\n".join(lines),
            conf=f"{float(m['statistics']['confidence_level']) * 100:g}%")
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
