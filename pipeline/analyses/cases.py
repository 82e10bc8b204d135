"""``cases.parquet``: the descriptive table of the exposed reports that opens every FAERS paper (READUS-PV).

Per substance (main exposure: analysis population, exposure roles), ``n_reports`` and ``share`` (of the substance's
exposed reports) per category of: ``sex``; ``age_band``; ``reporter`` (occp_cod as FDA codes it, with its meaning);
``country`` (reporter_country; the most frequent, the rest "other"); ``receipt_year`` (of the first version);
``outcome`` (OUTC of the kept version, "none reported" without any; a report with several outcomes counts in each);
``route`` (of the substance's own drug rows; several routes count in each); ``indication`` (indication PTs linked
to the substance's own drug rows by indi_drug_seq; the most frequent, the rest "other", "none reported" without).
Shares of multi-valued characteristics can add up to more than 1.
"""

from __future__ import annotations

import pandas as pd

from pipeline.analyses.base import Base, sql_list, sql_str
from pipeline.vocabulary import FAMILY

CHARACTERISTICS = ("sex", "age_band", "reporter", "country", "receipt_year", "outcome", "route", "indication")
COLUMNS = ["substance", "characteristic", "category", "n_reports", "share"]
OCCUPATIONS = {"MD": "physician (MD)", "PH": "pharmacist (PH)", "OT": "other health professional (OT)",
               "HP": "health professional (HP)", "CN": "consumer (CN)", "LW": "lawyer (LW)"}
OUTCOME_LABELS = {"DE": "death", "LT": "life-threatening", "HO": "hospitalisation", "DS": "disability",
                  "CA": "congenital anomaly", "RI": "required intervention", "OT": "other serious"}
NONE = "none reported"
OTHER = "other"


def _values(con, base: Base, config, characteristic: str) -> str:
    """SQL ``(report_id, drug, category)`` of one characteristic for the exposed reports."""
    x = "SELECT report_id, drug FROM an_x"
    if characteristic in ("sex", "age_band", "receipt_year"):
        col = {"sex": "coalesce(r.sex, 'UNK')", "age_band": "coalesce(r.age_band, 'unknown')",
               "receipt_year": "coalesce(CAST(r.receipt_year AS VARCHAR), 'unknown')"}[characteristic]
        return f"SELECT x.report_id, x.drug, {col} AS category FROM ({x}) x JOIN an_rpt r USING (report_id)"
    if characteristic == "reporter":
        case = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in OCCUPATIONS.items())
        return (f"SELECT x.report_id, x.drug, CASE r.occp_cod {case} WHEN '' THEN 'unknown' "
                f"ELSE coalesce(r.occp_cod, 'unknown') END AS category FROM ({x}) x JOIN an_rpt r USING (report_id)")
    if characteristic == "country":
        c = "upper(trim(coalesce(r.reporter_country, '')))"
        return (f"SELECT x.report_id, x.drug, CASE WHEN {c} IN ({sql_list(config.analyses.unknown_countries)}) "
                f"THEN 'unknown' ELSE {c} END AS category FROM ({x}) x JOIN an_rpt r USING (report_id)")
    if characteristic == "outcome":
        case = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in OUTCOME_LABELS.items())
        return (f"SELECT x.report_id, x.drug, coalesce(CASE o.outc_cod {case} ELSE o.outc_cod END, "
                f"{sql_str(NONE)}) AS category FROM ({x}) x LEFT JOIN {base.read('report_outcomes')} o "
                f"USING (report_id)")
    own = (f"SELECT x.report_id, x.drug, s.drug_seq, s.route FROM ({x}) x JOIN "
           f"{base.read('report_substance_drugs')} s ON s.report_id = x.report_id "
           f"AND (x.drug = '{FAMILY}' OR s.substance = x.drug) WHERE s.role_cod IN ({sql_list(base.roles)})")
    if characteristic == "route":
        return f"SELECT report_id, drug, coalesce(route, 'unknown') AS category FROM ({own})"
    if characteristic == "indication":
        return (f"SELECT x.report_id, x.drug, coalesce(i.pt, {sql_str(NONE)}) AS category FROM ({x}) x "
                f"LEFT JOIN (SELECT o.report_id, o.drug, i.pt FROM ({own}) o JOIN "
                f"{base.read('report_indications')} i USING (report_id, drug_seq)) i USING (report_id, drug)")
    raise ValueError(characteristic)


def cases(con, base: Base, config) -> pd.DataFrame:
    needs = {"outcome": ("report_outcomes",), "route": ("report_substance_drugs",),
             "indication": ("report_substance_drugs", "report_indications")}
    n = dict(con.execute("SELECT drug, count(DISTINCT report_id) FROM an_x GROUP BY 1").fetchall())
    parts = []
    for ch in CHARACTERISTICS:
        if not base.has(*needs.get(ch, ())):
            continue
        # materialised once: the counts and the "other" row read it, and DuckDB planned the indication joins
        # inside the anti join as a join on drug_seq alone (seconds per thousand reports)
        con.execute(f"CREATE OR REPLACE TEMP TABLE an_cv AS {_values(con, base, config, ch)}")
        df = con.execute("SELECT drug, category, count(DISTINCT report_id)::BIGINT AS n_reports "
                         "FROM an_cv GROUP BY 1, 2").df()
        top = {"country": config.analyses.top_categories, "indication": config.analyses.top_indications,
               "route": config.analyses.top_categories}.get(ch)
        if top:
            df = _top(con, df, top)
        parts.append(df.assign(characteristic=ch))
    con.execute("DROP TABLE IF EXISTS an_cv")
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["drug", "category", "n_reports",
                                                                                  "characteristic"])
    out = out.rename(columns={"drug": "substance"})
    out["category"] = out["category"].astype(str)
    out["share"] = out["n_reports"] / out["substance"].map(n).astype(float)
    s_rank = {s: i for i, s in enumerate(base.drugs)}
    c_rank = {c: i for i, c in enumerate(CHARACTERISTICS)}
    fixed_last = {NONE: 2, OTHER: 1, "unknown": 3}
    out = out.assign(_s=out["substance"].map(s_rank), _c=out["characteristic"].map(c_rank),
                     _l=out["category"].map(fixed_last).fillna(0),
                     _n=-out["n_reports"].where(~out["characteristic"].isin(["age_band", "receipt_year"]), 0),
                     _t=out["category"])
    out = out.sort_values(["_s", "_c", "_l", "_n", "_t"], kind="mergesort").reset_index(drop=True)
    out["n_reports"] = out["n_reports"].astype("int64")
    return out[COLUMNS]


def _top(con, df: pd.DataFrame, top: int) -> pd.DataFrame:
    """Keep the ``top`` most frequent categories per substance; the others become one "other" row that counts
    each report once (over the characteristic's values in ``an_cv``)."""
    keep = {}
    for drug, g in df[~df["category"].isin([NONE, "unknown"])].groupby("drug"):
        keep[drug] = set(g.sort_values(["n_reports", "category"], ascending=[False, True]).head(top)["category"])
    con.register("an_keep", pd.DataFrame({"drug": [d for d, ks in keep.items() for _ in ks],
                                          "category": [c for ks in keep.values() for c in ks]}))
    try:
        other = con.execute(f"""
            SELECT v.drug, '{OTHER}' AS category, count(DISTINCT v.report_id)::BIGINT AS n_reports
            FROM an_cv v ANTI JOIN an_keep k USING (drug, category)
            WHERE v.category NOT IN ('{NONE}', 'unknown') GROUP BY 1""").df()
    finally:
        con.unregister("an_keep")
    kept = df[df.apply(lambda r: r["category"] in keep.get(r["drug"], set()) or r["category"] in (NONE, "unknown"),
                       axis=1)] if len(df) else df
    return pd.concat([kept, other], ignore_index=True)
