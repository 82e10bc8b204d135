"""The report's sections for the analysis tables, rendered through ``templates/analyses.html.j2`` (Jinja2 with
autoescaping: every text from the data is escaped; numbers are formatted here)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pipeline.analyses.sensitivity import SCENARIOS

_ENV = Environment(loader=FileSystemLoader(str(Path(__file__).with_name("templates"))),
                   autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                   lstrip_blocks=True)
SCENARIO_LABELS = {"main": "main", "ps_only": "PS only", "sole_suspect": "sole suspect",
                   "hcp_only": "health professionals", "duplicates_included": "duplicates included",
                   "indication_pts_excluded": "indication PTs excluded", "family_masked": "family masked"}


def num(x) -> str:
    from pipeline.reports.html import fmt

    return fmt(x)


def count(x) -> str:
    from pipeline.reports.html import fmt

    return fmt(x, "int")


def pct(x) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{100 * v:.1f} %"


def ror_cell(r) -> dict:
    return {"a": count(r["a"]), "est": num(r["ror"]), "lo": num(r["ror_lo"]), "hi": num(r["ror_hi"]),
            "flag": bool(int(r["a"]) >= 3 and float(r["ror_lo"]) > 1) if not pd.isna(r["ror_lo"]) else False}


def _groups(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["pt"].isna()] if "pt" in df else df


def _onset_plot(onset: pd.DataFrame) -> dict | None:
    rows = onset[onset["n_with_onset"] > 0]
    if rows.empty:
        return None
    hi = max(1.0, float(rows["q3_days"].max()))
    top = 10 ** math.ceil(math.log10(hi + 1))
    width, left, row_h = 760, 230, 22

    def x(days):
        return left + (width - left - 20) * math.log10(float(days) + 1) / math.log10(top + 1)

    bars = []
    for i, r in enumerate(rows.itertuples()):
        y = 30 + i * row_h
        bars.append({"label": f"{r.substance} · {r.pt_group} (n = {r.n_with_onset})", "y": y,
                     "x1": round(x(r.q1_days), 1), "x2": round(x(r.q3_days), 1), "xm": round(x(r.median_days), 1),
                     "title": f"{r.substance} {r.pt_group}: median {num(r.median_days)} days "
                              f"[{num(r.q1_days)}, {num(r.q3_days)}]"})
    ticks = []
    t = 0
    while t <= top:
        ticks.append({"x": round(x(t), 1), "label": f"{t:,}"})
        t = 1 if t == 0 else t * 10
    return {"width": width, "height": 50 + len(bars) * row_h, "left": left, "bars": bars, "ticks": ticks,
            "axis_y": 40 + len(bars) * row_h - 12}


def render_sections(results, *, manifest: dict, config) -> str:
    t = results.tables
    exposed = manifest["counts"]["exposed_reports"]
    subs = [s for s in manifest["parameters"]["substances"] if exposed.get(s, 0) > 0]

    # outcomes: PT-group rows
    out = _groups(t["outcomes"])
    outcome_rows = [{"substance": r["substance"], "pt_group": r["pt_group"], "a": count(r["a"]),
                     "serious": f"{count(r['serious'])} ({pct(r['serious'] / r['a'])})",
                     "codes": [count(r[c]) for c in ("death", "life_threatening", "hospitalization", "disability",
                                                       "congenital_anomaly", "required_intervention",
                                                       "other_serious")]}
                    for r in out.to_dict("records")]

    # cases: one row per (characteristic, category), one column per substance
    cs = t["cases"]
    case_rows = []
    if len(cs):
        cs = cs[cs["substance"].isin(subs)]
        order = cs.drop_duplicates(["characteristic", "category"])[["characteristic", "category"]]
        cells = {(r["substance"], r["characteristic"], r["category"]): r for r in cs.to_dict("records")}
        last = None
        for ch, cat in order.itertuples(index=False):
            case_rows.append({"characteristic": ch if ch != last else "", "category": cat,
                              "cells": [(f"{count(cells[(s, ch, cat)]['n_reports'])} "
                                         f"({pct(cells[(s, ch, cat)]['share'])})") if (s, ch, cat) in cells else "0"
                                        for s in subs]})
            last = ch

    # sensitivity side by side (PT-group rows)
    sens = _groups(t["sensitivity"])
    sens_rows = []
    for (s, g), grp in sens.groupby(["substance", "pt_group"], sort=False):
        if s not in subs:
            continue
        by = {r["scenario"]: r for r in grp.to_dict("records")}
        if all(int(r["a"]) == 0 for r in by.values()):
            continue  # no report under any scenario: the row says nothing
        sens_rows.append({"substance": s, "pt_group": g,
                          "cells": [ror_cell(by[sc]) if sc in by else None for sc in SCENARIOS]})

    # subgroups: a table per subgroup_by
    sub_tables = []
    sg = t["subgroups"]
    for by, part in sg.groupby("subgroup_by", sort=False):
        cats = list(dict.fromkeys(part["subgroup"]))
        rows = []
        for (s, g), grp in part.groupby(["substance", "pt_group"], sort=False):
            if s not in subs or int(grp["a"].sum()) == 0:
                continue
            cell = {r["subgroup"]: r for r in grp.to_dict("records")}
            rows.append({"substance": s, "pt_group": g,
                         "cells": [ror_cell(cell[c]) if c in cell else None for c in cats]})
        sub_tables.append({"by": by, "categories": cats, "rows": rows})

    comp = _groups(t["comparators"])
    comp_rows = [{"comparison": r["comparison"], "population": r["population"], "pt_group": r["pt_group"],
                  "a": count(r["a"]), "b": count(r["b"]), "c": count(r["c"]), "d": count(r["d"]),
                  "ror": ror_cell(r)} for r in comp.to_dict("records") if r["a"] + r["c"] > 0]
    comp_sources = manifest.get("analyses", {}).get("comparators", [])

    on = t["onset"]
    onset_rows = [{"substance": r["substance"], "pt_group": r["pt_group"], "n": count(r["n_reports"]),
                   "n_onset": count(r["n_with_onset"]), "neg": count(r["n_negative_excluded"]),
                   "median": num(r["median_days"]), "q1": num(r["q1_days"]), "q3": num(r["q3_days"]),
                   "shape": num(r["weibull_shape"]), "shape_lo": num(r["weibull_shape_lo"]),
                   "shape_hi": num(r["weibull_shape_hi"]), "scale": num(r["weibull_scale"]),
                   "reading": r["shape_reading"] or "—"} for r in on.to_dict("records")]

    bu = _groups(t["by_use"])
    use_tables = []
    for by, part in bu.groupby("stratum_by", sort=False):
        groups = [g for g, gg in part.groupby("pt_group", sort=False) if int(gg["a"].sum()) > 0]
        rows = []
        for stratum, grp in part.groupby("stratum", sort=False):
            cell = {r["pt_group"]: r for r in grp.to_dict("records")}
            first = grp.iloc[0]
            rows.append({"stratum": stratum, "n": count(first["a"] + first["b"]),
                         "cells": [ror_cell(cell[g]) for g in groups]})
        use_tables.append({"by": by, "groups": groups, "rows": rows})

    a = config.analyses
    return _ENV.get_template("analyses.html.j2").render(
        substances=subs, outcome_rows=outcome_rows, case_rows=case_rows, sens_rows=sens_rows,
        scenarios=[SCENARIO_LABELS[s] for s in SCENARIOS], sub_tables=sub_tables, comp_rows=comp_rows,
        comp_sources=comp_sources, onset_rows=onset_rows, onset_plot=_onset_plot(on) if len(on) else None,
        use_tables=use_tables, hcp=", ".join(a.hcp_occupations), missing=results.missing,
        cohort=", ".join(a.depression_cohort_pts), level=f"{float(config.confidence_level) * 100:g}%",
        use_categories=[(k, ", ".join(v)) for k, v in a.use_categories])


__all__ = ["render_sections"]
