"""``report.html``: one self-contained page (inline CSS and SVG; no script, font or image is fetched).

The markup lives in ``templates/report.html.j2`` and its per-section includes (Jinja2, autoescaping on: every text
from the data is escaped); this module only prepares the data — numbers formatted by :func:`fmt`, rows as lists and
dicts. Only the package's stylesheet and the SVG plots of :mod:`pipeline.reports.plots` (which escape their own
labels) enter the page as trusted markup.

Sections (element ids, checked by the tests): ``synthetic-banner`` (only for synthetic input), ``summary``,
``headline``, ``forest``, ``trend``, ``top-pts``, ``funnel``, ``unmapped``, ``name-conflicts``, ``dup-review``,
``methods``, ``disclaimer``, ``provenance``. Numbers are rounded for display only; NaN prints as "—" and infinity
as "∞".
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from pipeline.reports import dup_review_section, names_section, plots
from pipeline.reports.dating import methods_text
from pipeline.reports.ranking import top_pts
from pipeline.reports.trend import first_crossing

CSS = (Path(__file__).with_name("report.css")).read_text(encoding="utf-8")
DISCLAIMER = ("Disproportionality is not causation. These statistics compare how often an event is reported with "
              "a substance versus all other drugs in FAERS; they describe reporting, not risk. Spontaneous reports "
              "are incomplete, duplicated, stimulated by publicity and litigation, and confounded by indication "
              "(e.g. depression treated with esketamine). A flag is a hypothesis for clinical review, never "
              "evidence that a substance causes an event, and counts cannot be read as incidence.")
FLAG_NAMES = {"signal_prr": "PRR", "signal_ror": "ROR", "signal_ic": "IC", "signal_ebgm": "EB"}
_ENV = Environment(loader=FileSystemLoader(str(Path(__file__).with_name("templates"))),
                   autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                   lstrip_blocks=True, keep_trailing_newline=True, undefined=StrictUndefined)


def render_template(name: str, **context) -> str:
    """Render one of the report templates (``pipeline/reports/templates``) with autoescaping.

    Parameters
    ----------
    name : str
        Template file name, e.g. ``"report.html.j2"``.
    **context
        Template variables; strings are escaped unless they are ``markupsafe.Markup``.

    Returns
    -------
    str
        The rendered markup.
    """
    return _ENV.get_template(name).render(**context)


def fmt(x, kind: str = "num") -> str:
    """Display form: NaN/None -> "—", +inf -> "∞", -inf -> "−∞"; rounding by magnitude.

    Plain text: a non-numeric value comes back as ``str(x)``; the templates escape it.
    """
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
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
    """"1 report" / "1,234 reports"."""
    n = int(n)
    return f"{n:,} report" + ("" if n == 1 else "s")


def ci(est, lo, hi) -> dict:
    """An estimate with its interval, formatted; the templates' ``ci`` macro prints it."""
    return {"est": fmt(est), "lo": fmt(lo), "hi": fmt(hi)}


def flags(row) -> dict:
    """The raised flags of a statistics row (names as in ``FLAG_NAMES``), for the ``cell`` macro."""
    return {"flags": [n for c, n in FLAG_NAMES.items() if bool(row.get(c))]}


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """Categorical (dictionary-encoded) columns as plain objects with None for missing."""
    out = df.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype) or out[c].dtype == object or str(out[c].dtype) == "str":
            out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def render_report(*, manifest: dict, signals: pd.DataFrame, trend: pd.DataFrame, funnel: pd.DataFrame,
                  unmapped: pd.DataFrame, config, name_conflicts: pd.DataFrame | None = None,
                  dup_review: pd.DataFrame | None = None, analyses=None) -> str:
    """The whole page as a string (``templates/report.html.j2``).

    Parameters
    ----------
    manifest : dict
        The report's manifest (run id, parameters, counts, statistics, MGPS fit, validation, inputs).
    signals, trend, funnel, unmapped : pandas.DataFrame
        The report's tables and ``curated/unmapped_drugs.parquet``.
    config : Config
        The run's configuration (PT groups, case definition, analyses settings).
    name_conflicts, dup_review : pandas.DataFrame or None
        The curated review tables; ``None`` when the curated folder predates them.
    analyses : pipeline.analyses.Results or None
        The analysis tables; their sections are left out when ``None``.

    Returns
    -------
    str
        Self-contained HTML.
    """
    signals, trend, funnel = plain(signals), plain(trend), plain(funnel)
    p = manifest["parameters"]
    subs = p["substances"]
    conf_pct = f"{float(manifest['statistics']['confidence_level']) * 100:g}%"
    min_a = int(manifest["statistics"]["thresholds"]["ror_min_a"])
    exposed = manifest["counts"]["exposed_reports"]
    first = first_crossing(trend, "signal_ror") if not trend.empty else pd.DataFrame(
        columns=["substance", "pt", "pt_group", "first_quarter"])
    analyses_html = ""
    if analyses is not None:
        from pipeline.analyses.section import render_sections

        # rendered (and escaped) by its own template
        analyses_html = Markup(render_sections(analyses, manifest=manifest, config=config))
    title = f"FAERS ketamine-family signals — {manifest['data_cutoff']}"
    if manifest.get("synthetic"):
        title = "SYNTHETIC DATA — " + title
    um = unmapped.head(50)
    return render_template(
        "report.html.j2", css=Markup(CSS), title=title, m=manifest, conf=conf_pct, min_a=min_a,
        n_total=fmt(manifest["counts"]["analysis_population"], "int"), roles="+".join(p["roles"]),
        summary=_summary(signals, subs, exposed), headline=_headline(signals, subs, first),
        mgps_published=bool(manifest["mgps"].get("published", manifest["mgps"].get("converged"))),
        forest=_forest(signals, subs, exposed, min_a), trend=_trend(trend, first, manifest, subs),
        tops=_tops(signals, subs, min_a),
        funnel_svg=Markup(plots.funnel_svg(funnel.to_dict("records"))),
        funnel_rows=[[fmt(r["step"], "int"), r["stage"], r["name"], fmt(r["reports_in"], "int"),
                      fmt(r["reports_out"], "int"), r["reason"] or ""] for r in funnel.to_dict("records")],
        unmapped={"shown": len(um), "total": len(unmapped), "total_fmt": fmt(len(unmapped), "int"),
                  "rows": [[str(r["drugname"]), fmt(r["n_rows"], "int"), fmt(r["n_reports"], "int")]
                           for r in um.to_dict("records")]},
        nc=names_section.context(name_conflicts), review=dup_review_section.context(dup_review),
        analyses_html=analyses_html, methods=_methods(manifest, config), disclaimer=DISCLAIMER,
        provenance=_provenance(manifest))


def _summary(signals: pd.DataFrame, subs: list[str], exposed: dict) -> list[dict]:
    """Per substance: its exposed reports and the PT groups flagged by both ROR and IC."""
    flagged = signals[signals["pt"].isna() & signals["signal_ror"] & signals["signal_ic"]]
    out = []
    for s in subs:
        n_exp = exposed.get(s, 0)
        hits = [{"pt_group": r.pt_group, "a": int(r.a), "ror": ci(r.ror, r.ror_lo, r.ror_hi)}
                for r in flagged[flagged["substance"] == s].itertuples()]
        out.append({"substance": s, "n": reports(n_exp) if n_exp else None, "hits": hits})
    return out


def _headline(signals: pd.DataFrame, subs: list[str], first: pd.DataFrame) -> list[list]:
    first_g = {(r.substance, r.pt_group): r.first_quarter for r in first.itertuples() if pd.isna(r.pt)}
    rows = []
    for s in subs:
        g = signals[(signals["substance"] == s) & signals["pt"].isna()]
        for i, r in enumerate(g.to_dict("records")):
            fq = first_g.get((s, r["pt_group"]))
            rows.append([{"bold": s} if i == 0 else "", r["pt_group"], fmt(r["a"], "int"), fmt(r["n_drug"], "int"),
                         fmt(r["expected"]), ci(r["ror"], r["ror_lo"], r["ror_hi"]),
                         ci(r["prr"], r["prr_lo"], r["prr_hi"]), fmt(r["ic025"]), fmt(r["eb05"]),
                         _fmt_q(r.get("fisher_q")), flags(r), fq if isinstance(fq, str) else "—"])
    return rows


def _forest(signals: pd.DataFrame, subs: list[str], exposed: dict, min_a: int) -> list[dict]:
    """Per substance: its forest plot (trusted SVG) and the focus PT groups without a report."""
    out = []
    for s in subs:
        if exposed.get(s, 0) == 0:
            out.append({"substance": s, "exposed": False})
            continue
        color = plots.PALETTE.get(s, "#333")
        frows, empty = [], []
        for r in signals[(signals["substance"] == s) & signals["pt"].isna()].to_dict("records"):
            if int(r["a"]) == 0:
                empty.append(r["pt_group"])
            else:
                frows.append(_forest_row(r, f"group: {r['pt_group']}", color))
        for r in top_pts(signals, s, 5, min_a).to_dict("records"):
            frows.append(_forest_row(r, f"PT: {r['pt']}", color))
        title = f"{s} ({reports(exposed.get(s, 0))})"
        out.append({"substance": s, "exposed": True, "title": title, "empty": empty,
                    "svg": Markup(plots.forest_svg(frows, title=title)) if frows else None})
    return out


def _trend(trend: pd.DataFrame, first: pd.DataFrame, manifest: dict, subs: list[str]) -> dict:
    panels = []
    for g in manifest["parameters"]["pt_groups"]:
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
    pt_rows = [[r.substance, r.pt, r.first_quarter if isinstance(r.first_quarter, str) else "—"]
               for r in first.itertuples() if not pd.isna(r.pt)]
    return {"basis": manifest["trend"]["basis"], "pt_rows": pt_rows,
            "svg": Markup(plots.trend_svg(panels, manifest["quarters"])) if panels else None}


def _tops(signals: pd.DataFrame, subs: list[str], min_a: int) -> list[dict]:
    out = []
    for s in subs:
        t = top_pts(signals, s, 15, min_a)
        out.append({"substance": s, "rows": [
            [r["pt"], fmt(r["a"], "int"), _ind(r), fmt(r["expected"]), ci(r["ror"], r["ror_lo"], r["ror_hi"]),
             ci(r["ic"], r["ic025"], r["ic975"]), fmt(r["eb05"]), fmt(r["fisher_p"], "p"), flags(r)]
            for r in t.to_dict("records")]})
    return out


def _ind(r: dict):
    """Reports where the PT is also an indication; highlighted when they are half of a or more."""
    k = r.get("a_indication")
    if k is None or (isinstance(k, float) and math.isnan(k)) or int(k) == 0:
        return "0"
    return {"n": f"{int(k):,}", "warn": int(k) / max(1, int(r["a"])) >= 0.5}


def _strata_text(mg: dict) -> str:
    st = mg.get("strata") or {}
    cols = st.get("columns") or []
    if not cols:
        return f"Expected counts are crude ({st.get('note', 'unstratified')})."
    return (f"MGPS uses stratified expected counts, E = Σ_s n_drug,s·n_event,s/n_total,s over {st.get('n_strata', '?')} "
            f"strata of {' × '.join(cols)} ({st.get('small_strata', 0)} with fewer than 50 reports); the prior is "
            f"fitted on them, and the crude-E EBGM (its own prior) is kept as ebgm_crude/eb05_crude/eb95_crude. "
            f"PRR, ROR and IC use the crude table; the trend's EBGM columns are crude.")


def _fmt_q(q) -> str:
    """q-values span many decades: scientific notation below 0.001."""
    if q is None or (isinstance(q, float) and math.isnan(q)):
        return "—"
    q = float(q)
    return f"{q:.2e}" if q < 1e-3 else f"{q:.3f}"


def _forest_row(r: dict, label: str, color: str) -> dict:
    return {"label": label, "a": int(r["a"]), "ror": _float(r["ror"]), "ror_lo": _float(r["ror_lo"]),
            "ror_hi": _float(r["ror_hi"]), "ic": _float(r["ic"]), "ic025": _float(r["ic025"]),
            "ic975": _float(r["ic975"]), "signal_ror": bool(r["signal_ror"]), "signal_ic": bool(r["signal_ic"]),
            "color": color,
            "tooltip_ror": f"{label}: a={int(r['a'])}, ROR {fmt(r['ror'])} [{fmt(r['ror_lo'])}, {fmt(r['ror_hi'])}]",
            "tooltip_ic": f"{label}: IC {fmt(r['ic'])} [{fmt(r['ic025'])}, {fmt(r['ic975'])}]"}


def _linkage_text(dup: dict) -> str:
    lk = dup.get("linkage") or {}
    if not lk.get("enabled"):
        return ""
    return (f"; probabilistic record linkage (Fellegi–Sunter with EM-estimated m/u, term-frequency adjustment, "
            f"missing values neutral) links pairs with match probability ≥ {lk.get('threshold')}"
            f" ({'excluded' if lk.get('exclude_flagged', True) else 'flagged only'})")


def _mgps_convergence(mg: dict) -> str:
    if not mg.get("published", mg.get("converged")):
        return "no prior could be fitted — EBGM/EB05/EB95 are not published (NaN)"
    conv = ("another optimiser start reached the same −log L and the same EBGM and EB05 (within 1 %)"
            if mg.get("agreement") else "no other start reached the same optimum (a warning; EBGM is published "
            "from the best likelihood)")
    bnd = mg.get("boundary") or []
    return conv + ("; the optimum lies on the boundary of the parameter space — " + "; ".join(bnd)
                   + " — a valid answer: EBGM/EB05/EB95 are computed from it" if bnd else "; interior optimum")


def _methods(m: dict, config) -> dict:
    """Texts and numbers of the methods section (``templates/methods.html.j2``)."""
    p, st, mg = m["parameters"], m["statistics"], m["mgps"]
    th = st["thresholds"]
    theta = mg.get("theta") or {}
    dup = m.get("duplicate_policy") or {}
    outside = mg.get("ebgm_outside_eb05_eb95") or {}
    return {
        "n_total": fmt(m["counts"]["analysis_population"], "int"), "cutoff": p["cutoff_quarter"],
        "dating": methods_text(m.get("dating")),
        "case_definition": config.case_definition_description,
        "dup_rules": ", ".join(r for r in ("aeolus_key", "mfr_num", "relaxed") if dup.get(r)) or "none",
        "dup_excluded": dup.get("exclude_flagged_duplicates", True), "linkage": _linkage_text(dup),
        "confidence_level": fmt(st["confidence_level"]), "th": th,
        "th_fmt": {k: fmt(th[k]) for k in ("prr_min", "chi2_yates_min", "ror_lo_min", "ic025_min", "eb05_min")},
        "theta": ", ".join(f"{k} = {fmt(v) if not isinstance(v, float) else f'{v:.6g}'}" for k, v in theta.items()),
        "neg_loglik": fmt(mg.get("neg_loglik")), "convergence": _mgps_convergence(mg), "strata": _strata_text(mg),
        "outside_signals": fmt(outside.get("signals", 0), "int"),
        "outside_all_pairs": fmt(outside.get("all_pairs", 0), "int"),
        "groups": [{"name": g.name, "pts": "; ".join(g.pts), "source": g.source}
                   for g in config.pt_groups if g.name in p["pt_groups"]],
    }


def _provenance(m: dict) -> dict:
    """Validation summary, input quarters and software versions (``templates/provenance.html.j2``)."""
    v = m.get("validation") or {}
    stats = v.get("statistics") or {}
    return {
        "skipped": v.get("skipped"), "success": bool(v.get("success")), "stats": stats,
        "n_warnings": len(v.get("warnings") or []), "warnings": [str(w) for w in (v.get("warnings") or [])[:10]],
        "docs": m.get("data_docs"),
        "ingest": [[str(r.get("quarter")), str(r.get("zip")), str(r.get("zip_sha256"))]
                   for r in m["inputs"].get("ingest") or []],
        "software": ", ".join(f"{k} {x}" for k, x in m.get("package_versions", {}).items()),
    }
