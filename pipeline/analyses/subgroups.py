"""``subgroups.parquet``: the focus PT-group 2×2 computed inside each subgroup (population, exposure and
background all restricted to it): sex, age band, reporter type (health professional per config
``hcp_occupations``, consumer CN, lawyer LW, unknown) and country (US / non-US / unknown, per config)."""

from __future__ import annotations

import pandas as pd

from pipeline.analyses.base import Base, event_order, label, sql_list
from pipeline.analyses.cells import add_stats, count_cells

BY = ("sex", "age_band", "reporter", "country")
COLUMNS = ["subgroup_by", "subgroup", "substance", "pt_group", "pt", "a", "b", "c", "d", "n_total", "ror", "ror_lo",
           "ror_hi", "ic", "ic025", "ic975"]


def reporter_sql(config) -> str:
    return (f"CASE WHEN occp_cod IN ({sql_list(config.analyses.hcp_occupations)}) THEN 'health professional' "
            f"WHEN occp_cod = 'CN' THEN 'consumer' WHEN occp_cod = 'LW' THEN 'lawyer' ELSE 'unknown' END")


def country_sql(config) -> str:
    c = "upper(trim(coalesce(reporter_country, '')))"
    return (f"CASE WHEN {c} IN ({sql_list(config.analyses.us_countries)}) THEN 'US' "
            f"WHEN {c} IN ({sql_list(config.analyses.unknown_countries)}) THEN 'unknown' ELSE 'non-US' END")


def stratum_sql(by: str, config) -> str:
    return {"sex": "coalesce(sex, 'UNK')", "age_band": "coalesce(age_band, 'unknown')",
            "reporter": reporter_sql(config), "country": country_sql(config)}[by]


def subgroups(con, base: Base, config) -> pd.DataFrame:
    groups = [base.group_prefix + g for g in base.groups]
    parts = []
    for by in BY:
        pop = f"SELECT report_id, {stratum_sql(by, config)} AS stratum FROM an_rpt WHERE in_analysis"
        x = f"SELECT x.report_id, x.drug, p.stratum FROM an_x x JOIN ({pop}) p USING (report_id)"
        df = count_cells(con, pop=pop, exposed=x, excluded=x, events="SELECT report_id, event FROM an_fev",
                         drugs=base.drugs, event_keys=groups, pop_by_stratum=True)
        df = df.rename(columns={"stratum": "subgroup"}).assign(subgroup_by=by)
        parts.append(df.sort_values("subgroup", kind="mergesort"))
    out = pd.concat(parts, ignore_index=True)
    out = label(out, base)
    out = add_stats(out, base.confidence_level, which=("ror", "ic"))
    by_rank = {b: i for i, b in enumerate(BY)}
    out = out.assign(_b=out["subgroup_by"].map(by_rank))
    out = pd.concat([event_order(g.drop(columns="_b"), base) for _, g in out.groupby(["_b", "subgroup"], sort=True)],
                    ignore_index=True)
    return out[COLUMNS]
