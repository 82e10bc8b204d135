"""``report.html``: one self-contained page (inline CSS and SVG; no script, font or image is fetched).

Sections (element ids, checked by the tests): ``synthetic-banner`` (only for synthetic input), ``summary``,
``headline``, ``forest``, ``trend``, ``top-pts``, ``funnel``, ``unmapped``, ``methods``, ``disclaimer``,
``provenance``. Numbers are rounded for display only; NaN prints as "—" and infinity as "∞".
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

import pandas as pd

from pipeline.reports import plots
from pipeline.reports.dating import methods_text
from pipeline.reports.trend import first_crossing

CSS = (Path(__file__).with_name("report.css")).read_text(encoding="utf-8")
DISCLAIMER = ("Disproportionality is not causation. These statistics compare how often an event is reported with "
              "a substance versus all other drugs in FAERS; they describe reporting, not risk. Spontaneous reports "
              "are incomplete, duplicated, stimulated by publicity and litigation, and confounded by indication "
              "(e.g. depression treated with esketamine). A flag is a hypothesis for clinical review, never "
              "evidence that a substance causes an event, and counts cannot be read as incidence.")
FLAG_NAMES = {"signal_prr": "PRR", "signal_ror": "ROR", "signal_ic": "IC", "signal_ebgm": "EB"}


def fmt(x, kind: str = "num") -> str:
    """Display form: NaN/None -> "—", +inf -> "∞", -inf -> "−∞"; rounding by magnitude."""
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return escape(str(x))
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "p":
        return f"{v:.2e}" if v < 0.001 else f"{v:.3f}"
    a = abs(v)
    if a == 0:
        return "0"
    if 9.995 <= a < 10:  # would print as 10.00
        a = 10.0
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.01:
        return f"{v:.2f}"
    return f"{v:.2g}"


def reports(n) -> str:
    n = int(n)
    return f"{n:,} report" + ("" if n == 1 else "s")


def ci(est, lo, hi) -> str:
    return f"{fmt(est)} <span class=ci>[{fmt(lo)}, {fmt(hi)}]</span>"


def flags_html(row) -> str:
    on = [n for c, n in FLAG_NAMES.items() if bool(row.get(c))]
    if not on:
        return '<span class="noflag">–</span>'
    return " ".join(f'<span class="flag">{n}</span>' for n in on)


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _table(headers: list[str], rows: list[list[str]], *, cls: str = "", numeric_from: int = 1,
           numeric: set[int] | None = None) -> str:
    num = numeric if numeric is not None else set(range(numeric_from, len(headers)))
    th = "".join(f'<th class="{"num" if i in num else ""}">{h}</th>' for i, h in enumerate(headers))
    body = "\n".join(("<tr class=sep>" if cls.endswith("headline") and r and r[0] else "<tr>")
                     + "".join(f'<td class="{"num" if i in num else ""}">{c}</td>' for i, c in enumerate(r))
                     + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _top_pts(sig: pd.DataFrame, substance: str, n: int, min_a: int) -> pd.DataFrame:
    pts = sig[(sig["substance"] == substance) & sig["pt"].notna() & (sig["a"] >= min_a)].copy()
    pts["_lo"] = pts["ror_lo"].fillna(-math.inf)
    pts["_ic"] = pts["ic025"].fillna(-math.inf)
    return pts.sort_values(["_lo", "_ic", "pt"], ascending=[False, False, True], kind="mergesort").head(n)


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """Categorical (dictionary-encoded) columns as plain objects with None for missing."""
    out = df.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype) or out[c].dtype == object or str(out[c].dtype) == "str":
            out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def render_report(*, manifest: dict, signals: pd.DataFrame, trend: pd.DataFrame, funnel: pd.DataFrame,
                  unmapped: pd.DataFrame, config) -> str:
    signals, trend, funnel = plain(signals), plain(trend), plain(funnel)
    p = manifest["parameters"]
    subs, groups = p["substances"], p["pt_groups"]
    conf_pct = f"{float(manifest['statistics']['confidence_level']) * 100:g}%"
    min_a = int(manifest["statistics"]["thresholds"]["ror_min_a"])
    n_total = manifest["counts"]["analysis_population"]
    exposed = manifest["counts"]["exposed_reports"]
    parts: list[str] = []

    # ---- banner + title + summary ----------------------------------------------------------------------
    if manifest.get("synthetic"):
        parts.append('<div id="synthetic-banner" class="banner">SYNTHETIC DATA — generated by '
                     '<code>pipeline sample</code>, not FDA FAERS data. The numbers show how the pipeline works, '
                     'not real drug safety.</div>')
    parts.append(f"<h1>Ketamine-family disproportionality report (FAERS)</h1>")
    parts.append(f'<p class="sub">Run <code>{escape(manifest["run_id"])}</code> · data through '
                 f'<b>{escape(manifest["data_cutoff"])}</b> ({escape(manifest["quarters"][0])}–'
                 f'{escape(manifest["quarters"][-1])}) · {fmt(n_total, "int")} de-duplicated reports in the analysis '
                 f'population · created {escape(manifest["created_at"])}</p>')
    parts.append(f'<p class="disclaimer-short"><b>Disproportionality is not causation.</b> '
                 f'<a href="#disclaimer">Read the caveats</a> before using any number on this page.</p>')
    flagged = signals[signals["pt"].isna() & signals["signal_ror"] & signals["signal_ic"]]
    items = []
    for s in subs:
        hits = flagged[flagged["substance"] == s]
        n_exp = exposed.get(s, 0)
        if n_exp == 0:
            items.append(f"<li><b>{escape(s)}</b>: no exposed reports in this population.</li>")
        elif hits.empty:
            items.append(f"<li><b>{escape(s)}</b> ({reports(n_exp)}): no PT group flagged by both "
                         f"ROR and IC.</li>")
        else:
            desc = ", ".join(f"{escape(r.pt_group)} (a = {int(r.a)}, ROR {fmt(r.ror)} "
                             f"[{fmt(r.ror_lo)}, {fmt(r.ror_hi)}])" for r in hits.itertuples())
            items.append(f"<li><b>{escape(s)}</b> ({reports(n_exp)}): {desc}</li>")
    parts.append('<section id="summary"><h2>At a glance</h2>'
                 f'<p>PT groups whose reporting is disproportionate by both the ROR rule (a ≥ {min_a}, lower '
                 f'{conf_pct} bound &gt; 1) and the IC rule (IC025 &gt; 0):</p><ul>' + "".join(items) + "</ul></section>")

    # ---- headline table -------------------------------------------------------------------------------------
    first = first_crossing(trend, "signal_ror") if not trend.empty else pd.DataFrame(
        columns=["substance", "pt", "pt_group", "first_quarter"])
    first_g = {(r.substance, r.pt_group): r.first_quarter for r in first.itertuples() if pd.isna(r.pt)}
    rows = []
    for s in subs:
        g = signals[(signals["substance"] == s) & signals["pt"].isna()]
        for i, r in enumerate(g.to_dict("records")):
            fq = first_g.get((s, r["pt_group"]))
            rows.append([f"<b>{escape(s)}</b>" if i == 0 else "", escape(r["pt_group"]), fmt(r["a"], "int"), fmt(r["n_drug"], "int"),
                         fmt(r["expected"]), ci(r["ror"], r["ror_lo"], r["ror_hi"]),
                         ci(r["prr"], r["prr_lo"], r["prr_hi"]), fmt(r["ic025"]), fmt(r["eb05"]),
                         flags_html(r), escape(fq) if isinstance(fq, str) else "—"])
    parts.append('<section id="headline"><h2>Focus signals: substance × PT group</h2>'
                 f'<p><b>a</b> = reports naming the substance (roles {escape("+".join(p["roles"]))}) and any PT '
                 f'of the group; <b>n</b> = reports naming the substance; <b>E</b> = expected a. Intervals are '
                 f'{conf_pct}. Flags: PRR (Evans), ROR, IC, EB (EB05 ≥ 2). "First flagged" = first quarter of the '
                 f'cumulative trend with the ROR flag raised.</p>'
                 + ("" if manifest["mgps"].get("converged") else
                    '<p class="warn">EB05 is not published ("—"): the MGPS prior fit did not converge consistently '
                    'on this background (see <a href="#methods">Methods</a>).</p>')
                 + _table(["substance", "PT group", "a", "n", "E", f"ROR [{conf_pct} CI]", f"PRR [{conf_pct} CI]",
                           "IC025", "EB05", "flags", "first flagged"], rows, cls="data headline", numeric_from=2)
                 + "</section>")

    # ---- forest plots ----------------------------------------------------------------------------------------
    forest_parts = []
    for s in subs:
        if exposed.get(s, 0) == 0:
            forest_parts.append(f"<p><b>{escape(s)}</b>: no exposed reports — nothing to plot.</p>")
            continue
        color = plots.PALETTE.get(s, "#333")
        frows, empty = [], []
        for r in signals[(signals["substance"] == s) & signals["pt"].isna()].to_dict("records"):
            if int(r["a"]) == 0:
                empty.append(r["pt_group"])
            else:
                frows.append(_forest_row(r, f"group: {r['pt_group']}", color))
        for r in _top_pts(signals, s, 5, min_a).to_dict("records"):
            frows.append(_forest_row(r, f"PT: {r['pt']}", color))
        title = f"{s} ({reports(exposed.get(s, 0))})"
        if frows:
            forest_parts.append(plots.forest_svg(frows, title=title))
        note = (f"<p class=note><b>{escape(s)}</b>: no report with " + ", ".join(escape(g) for g in empty)
                + " (a = 0; not plotted).</p>") if empty else ""
        if not frows:
            note = f"<p class=note><b>{escape(title)}</b>: no report with any focus PT group — nothing to plot.</p>"
        forest_parts.append(note)
    parts.append('<section id="forest"><h2>Forest plot: ROR and IC for the focus PT groups and top PTs</h2>'
                 '<p>Left: ROR with its Woolf interval on a log scale (dashed line: 1). Right: IC (Norén 2013) with '
                 '[IC025, IC975] (dashed line: 0). Filled marker = the flag is raised; hollow = not. Top PTs = the '
                 f'five PTs with the highest ROR lower bound among PTs with a ≥ {min_a}.</p>'
                 + "\n".join(forest_parts) + "</section>")

    # ---- trend ----------------------------------------------------------------------------------------------
    quarters = manifest["quarters"]
    panels = []
    for g in groups:
        series = []
        for s in subs:
            t = trend[(trend["substance"] == s) & (trend["pt_group"] == g)].sort_values("quarter")
            if t.empty or int(t["a"].max()) == 0:
                continue
            series.append({"name": s, "color": plots.PALETTE.get(s, "#333"),
                           "points": [(r.quarter, _float(r.ror_lo), bool(r.signal_ror), int(r.a))
                                      for r in t.itertuples()]})
        if series:
            panels.append({"title": g, "series": series})
    pt_first = [r for r in first.itertuples() if not pd.isna(r.pt)]
    pt_rows = [[escape(r.substance), escape(r.pt), escape(r.first_quarter) if isinstance(r.first_quarter, str)
                else "—"] for r in pt_first]
    parts.append('<section id="trend"><h2>Trend: cumulative statistics by quarter</h2>'
                 f'<p>Each point recomputes the 2×2 table on all reports published up to that quarter '
                 f'({escape(manifest["trend"]["basis"])}); the MGPS prior is the report\'s. The plotted value is the '
                 f'lower {conf_pct} bound of the ROR; a filled point means the ROR flag was raised by then.</p>'
                 + (plots.trend_svg(panels, quarters) if panels else "<p>No focus PT group has a report yet.</p>")
                 + "<h3>Top PTs: first quarter flagged (ROR)</h3>"
                 + (_table(["substance", "PT", "first flagged"], pt_rows, cls="data small", numeric_from=3)
                    if pt_rows else "<p>No top PTs.</p>")
                 + "</section>")

    # ---- top PTs per substance ----------------------------------------------------------------------------
    tops = []
    for s in subs:
        t = _top_pts(signals, s, 15, min_a)
        if t.empty:
            tops.append(f"<h3>{escape(s)}</h3><p>No PT with a ≥ {min_a}.</p>")
            continue
        rows = [[escape(r["pt"]), fmt(r["a"], "int"), _ind(r), fmt(r["expected"]),
                 ci(r["ror"], r["ror_lo"], r["ror_hi"]), ci(r["ic"], r["ic025"], r["ic975"]), fmt(r["eb05"]),
                 fmt(r["fisher_p"], "p"), flags_html(r)]
                for r in t.to_dict("records")]
        tops.append(f"<h3>{escape(s)}</h3>" + _table(["PT", "a", "of which indication", "E", "ROR [CI]",
                                                        "IC [IC025, IC975]", "EB05", "Fisher p", "flags"], rows,
                                                       cls="data"))
    parts.append('<section id="top-pts"><h2>Top PTs per substance, ranked by the ROR lower bound</h2>'
                 f'<p>Ranked by the lower {conf_pct} bound of the ROR (ties: IC025), not by raw count, among PTs '
                 f'with a ≥ {min_a}. Every PT × substance is in <code>signals.parquet</code>. "Of which '
                 f'indication" = reports where the PT is also listed as an indication for a drug of that report '
                 f'(a PT reported as the reason for treatment is a hint of confounding by indication, not an '
                 f'adverse event).</p>'
                 + "\n".join(tops) + "</section>")

    # ---- funnel ---------------------------------------------------------------------------------------------
    frows = [[fmt(r["step"], "int"), escape(r["stage"]), escape(r["name"]), fmt(r["reports_in"], "int"),
              fmt(r["reports_out"], "int"), escape(r["reason"] or "")] for r in funnel.to_dict("records")]
    parts.append('<section id="funnel"><h2>Attrition funnel</h2>'
                 '<p>From raw DEMO rows to the analysis population (blue: curation; orange: this report).</p>'
                 + plots.funnel_svg(funnel.to_dict("records"))
                 + _table(["step", "stage", "name", "reports in", "reports out", "reason"], frows, cls="data small",
                          numeric={0, 3, 4})
                 + "</section>")

    # ---- unmapped ---------------------------------------------------------------------------------------------
    um = unmapped.head(50)
    urows = [[escape(str(r["drugname"])), fmt(r["n_rows"], "int"), fmt(r["n_reports"], "int")]
             for r in um.to_dict("records")]
    parts.append('<section id="unmapped"><h2>Unmapped drug names</h2>'
                 + (f'<p>The {len(um)} most frequent of the {fmt(len(unmapped), "int")} drug names listed in '
                    if len(um) < len(unmapped) else f'<p>All {len(um)} drug names listed in ')
                 + '<code>curated/unmapped_drugs.parquet</code>, by reports: names that matched no known '
                 'ingredient, alias or brand. They stay in the background under their own (salt-stripped) name but '
                 'never count as a ketamine-family exposure: check them for missed ketamine-family products '
                 '(misspellings, brands) and add aliases in the config.</p>'
                 + (_table(["drug name", "DRUG rows", "reports"], urows, cls="data small")
                    if urows else "<p>None.</p>") + "</section>")

    # ---- methods ---------------------------------------------------------------------------------------------
    parts.append(_methods(manifest, config))
    parts.append(f'<section id="disclaimer" class="disclaimer"><h2>Disproportionality is not causation</h2>'
                 f"<p>{escape(DISCLAIMER)}</p></section>")
    parts.append(_provenance(manifest))
    body = "\n".join(parts)
    title = f"FAERS ketamine-family signals — {manifest['data_cutoff']}"
    if manifest.get("synthetic"):
        title = "SYNTHETIC DATA — " + title
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="faers-run-id" content="{escape(manifest["run_id"])}">\n'
            f"<title>{escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n<main>\n{body}\n"
            f"</main>\n</body>\n</html>\n")


def _ind(r: dict) -> str:
    k = r.get("a_indication")
    if k is None or (isinstance(k, float) and math.isnan(k)) or int(k) == 0:
        return "0"
    share = int(k) / max(1, int(r["a"]))
    cls = ' class="warn"' if share >= 0.5 else ""
    return f"<span{cls}>{int(k):,}</span>"


def _forest_row(r: dict, label: str, color: str) -> dict:
    return {"label": label, "a": int(r["a"]), "ror": _float(r["ror"]), "ror_lo": _float(r["ror_lo"]),
            "ror_hi": _float(r["ror_hi"]), "ic": _float(r["ic"]), "ic025": _float(r["ic025"]),
            "ic975": _float(r["ic975"]), "signal_ror": bool(r["signal_ror"]), "signal_ic": bool(r["signal_ic"]),
            "color": color,
            "tooltip_ror": f"{label}: a={int(r['a'])}, ROR {fmt(r['ror'])} [{fmt(r['ror_lo'])}, {fmt(r['ror_hi'])}]",
            "tooltip_ic": f"{label}: IC {fmt(r['ic'])} [{fmt(r['ic025'])}, {fmt(r['ic975'])}]"}


def _methods(m: dict, config) -> str:
    p, st, mg = m["parameters"], m["statistics"], m["mgps"]
    th = st["thresholds"]
    theta = mg.get("theta") or {}
    theta_txt = ", ".join(f"{k} = {fmt(v) if not isinstance(v, float) else f'{v:.6g}'}" for k, v in theta.items())
    dup = m.get("duplicate_policy") or {}
    dup_rules = [r for r in ("aeolus_key", "mfr_num", "relaxed") if dup.get(r)]
    groups = []
    for g in config.pt_groups:
        if g.name in p["pt_groups"]:
            groups.append(f"<li><b>{escape(g.name)}</b>: {escape('; '.join(g.pts))} <span class=src>"
                          f"({escape(g.source)})</span></li>")
    mg_warn = "".join(f"<li>{escape(w)}</li>" for w in mg.get("warnings", []))
    conv = "converged (another start agrees)" if mg.get("converged") else \
        "NOT consistently converged — EBGM/EB05/EB95 are not published (NaN)"
    return f"""<section id="methods"><h2>Methods</h2>
<dl class="methods">
<dt>Counting unit</dt><dd>{escape(m["counting_unit"])}. <code>n_total</code> = {fmt(m["counts"]["analysis_population"], "int")}
reports with ≥ 1 drug and ≥ 1 PT in the analysis population (<code>curated/reports.in_analysis</code>
{"as of " + escape(p["cutoff_quarter"]) if p["cutoff_quarter"] else "for every quarter"}).
a = substance and event, b = substance without event, c = event without substance, d = neither; E = n_drug·n_event/n_total.
A report counts once for a PT group if it has any PT of the group.</dd>
<dt>Dating</dt><dd>{escape(methods_text(m.get("dating")))} Trend: {escape(m["trend"]["basis"])}.</dd>
<dt>Case definition</dt><dd>{escape(m.get("case_definition") or "")}: {escape(config.case_definition_description)}</dd>
<dt>Role rule</dt><dd>{escape(m["role_rule"]["rule"])}. <code>ketamine_family</code> = any of ketamine, esketamine,
arketamine, norketamine.</dd>
<dt>De-duplication</dt><dd>Latest integer case version per caseid; caseids on FDA's deleted-case lists removed;
cross-case duplicate rules: {escape(", ".join(dup_rules) or "none")}
({"non-kept members excluded" if dup.get("exclude_flagged_duplicates", True) else "flagged only"}).
See the funnel above and <code>docs/dedup-policy.md</code>.</dd>
<dt>Statistics</dt><dd>PRR with Katz interval; ROR with Woolf interval; Pearson and Yates χ² (R <code>chisq.test</code>);
one-sided Fisher p and mid-p; IC = log2((a+0.5)/(E+0.5)) with exact gamma limits (Norén 2013); confidence level
{fmt(st["confidence_level"])}; no continuity correction. Undefined values are shown as — and infinite ones as ∞.</dd>
<dt>Signal rules</dt><dd>PRR (Evans 2001): a ≥ {th["prr_min_a"]}, PRR ≥ {fmt(th["prr_min"])}, Yates χ² ≥ {fmt(th["chi2_yates_min"])};
ROR: a ≥ {th["ror_min_a"]} and lower bound &gt; {fmt(th["ror_lo_min"])}; IC: IC025 &gt; {fmt(th["ic025_min"])};
EB: EB05 ≥ {fmt(th["eb05_min"])} and a ≥ {st["ebgm_min_a"]}.</dd>
<dt>MGPS</dt><dd>Two-gamma mixture prior (DuMouchel 1999) fitted once on {escape(mg.get("fitted_on", ""))};
likelihood <b>{escape(mg.get("likelihood", ""))}</b>; θ: {escape(theta_txt)}; −log L = {fmt(mg.get("neg_loglik"))};
{mg.get("n_points", 0)} grouped points; {conv}.
{("<ul class=warn>" + mg_warn + "</ul>") if mg_warn else ""}</dd>
<dt>PT groups</dt><dd><ul>{"".join(groups)}</ul></dd>
<dt>Configuration</dt><dd><code>{escape(m["config"]["path"])}</code>, sha256 <code>{escape(m["config"]["sha256"])}</code></dd>
</dl></section>"""


def _provenance(m: dict) -> str:
    v = m.get("validation") or {}
    if v.get("skipped"):
        vtxt = f"not run ({escape(v['skipped'])})"
    else:
        stats = v.get("statistics") or {}
        vtxt = (("passed" if v.get("success") else "FAILED") +
                (f" — {stats.get('passed', '?')}/{stats.get('checks', '?')} checks, "
                 f"{len(v.get('warnings') or [])} warning(s)" if stats else ""))
        for w in (v.get("warnings") or [])[:10]:
            vtxt += f"<br><span class=warn>{escape(str(w))}</span>"
    docs = m.get("data_docs")
    docs_html = (f' · <a href="{escape(docs)}">Great Expectations Data Docs</a>' if docs else "")
    ing = m["inputs"].get("ingest") or []
    irows = "".join(f"<tr><td>{escape(str(r.get('quarter')))}</td><td>{escape(str(r.get('zip')))}</td>"
                    f"<td><code>{escape(str(r.get('zip_sha256')))}</code></td></tr>" for r in ing)
    pv = ", ".join(f"{escape(k)} {escape(str(x))}" for k, x in m.get("package_versions", {}).items())
    return f"""<section id="provenance"><h2>Provenance</h2>
<p>Validation: {vtxt}{docs_html}</p>
<p>Curated manifest sha256 <code>{escape(str(m["inputs"].get("curated_manifest_sha256")))}</code>;
software: {pv}. Files of this report and their sha256: <code>manifest.json</code>.</p>
<details><summary>Input quarters and zip sha256 ({len(ing)})</summary>
<table class="data small"><thead><tr><th>quarter</th><th>zip</th><th>sha256</th></tr></thead><tbody>{irows}</tbody></table>
</details></section>"""
