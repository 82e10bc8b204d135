"""``sensitivity.parquet``: the focus rows (every focus substance x every configured PT group and every member PT
seen) re-computed under each scenario. Each scenario changes one thing of ``main``:

* ``main``: the main table's 2×2 (equals ``signals.parquet`` row for row);
* ``ps_only``: exposure = the substance as primary suspect (as ``signals --roles PS``);
* ``sole_suspect``: exposure = the substance is the report's only suspect ingredient (exposure roles); reports
  naming it beside other suspects leave the population (neither exposed nor background);
* ``hcp_only``: population = reports whose reporter is a health professional (config ``hcp_occupations``);
* ``duplicates_included``: population = every report with a drug and a PT, cross-case duplicates kept;
* ``indication_pts_excluded``: a report whose PT is also one of its indications does not count for that PT (for a
  group: it counts only through a group PT that is not an indication), in ``a`` and ``c`` alike;
* ``family_masked``: reports naming another ketamine-family substance (and not this one) leave the background
  (against masking by the family's own strong signals); ``ketamine_family`` itself is unchanged.
"""

from __future__ import annotations

import pandas as pd

from pipeline.analyses.base import Base, event_order, label, sql_list
from pipeline.analyses.cells import add_stats, count_cells
from pipeline.vocabulary import FAMILY

SCENARIOS = ("main", "ps_only", "sole_suspect", "hcp_only", "duplicates_included", "indication_pts_excluded",
             "family_masked")
COLUMNS = ["scenario", "substance", "pt_group", "pt", "a", "b", "c", "d", "n_total", "prr", "prr_lo", "prr_hi",
           "ror", "ror_lo", "ror_hi", "ic", "ic025", "ic975"]


def scenario_sql(base: Base, config, scenario: str) -> dict:
    """The (pop, exposed, excluded, events) SQL of one scenario."""
    roles = sql_list(base.roles)
    main_pop = "SELECT report_id FROM an_rpt WHERE in_analysis"
    x_main = "SELECT report_id, drug, '' AS stratum FROM an_x"
    ev = "SELECT report_id, event FROM an_fev"
    if scenario == "main":
        return dict(pop=main_pop, exposed=x_main, excluded=x_main, events=ev)
    if scenario == "ps_only":
        x = ("SELECT f.report_id, f.drug, '' AS stratum FROM an_fam f JOIN an_rpt r USING (report_id) "
             "WHERE r.in_analysis AND f.role_cod = 'PS'")
        return dict(pop=main_pop, exposed=x, excluded=x, events=ev)
    if scenario == "sole_suspect":
        # suspects of a report = its distinct ingredients in the exposure roles (report_ingredients)
        x = f"""
            WITH s AS (SELECT i.report_id, count(DISTINCT i.ingredient) AS n_ing,
                              count(DISTINCT i.ingredient) FILTER (WHERE i.substance IS NULL) AS n_other,
                              min(i.substance) AS s1
                       FROM {base.read('report_ingredients')} i SEMI JOIN an_x USING (report_id)
                       WHERE i.role_cod IN ({roles}) GROUP BY 1)
            SELECT x.report_id, x.drug, '' AS stratum FROM an_x x JOIN s USING (report_id)
            WHERE s.n_other = 0 AND (x.drug = '{FAMILY}' OR (s.n_ing = 1 AND s.s1 = x.drug))"""
        return dict(pop=main_pop, exposed=x, excluded=x_main, events=ev)
    if scenario == "hcp_only":
        pop = f"SELECT report_id FROM an_rpt WHERE in_analysis AND occp_cod IN ({sql_list(config.analyses.hcp_occupations)})"
        x = f"SELECT report_id, drug, '' AS stratum FROM an_x SEMI JOIN ({pop}) USING (report_id)"
        return dict(pop=pop, exposed=x, excluded=x, events=ev)
    if scenario == "duplicates_included":
        x = f"SELECT DISTINCT report_id, drug, '' AS stratum FROM an_fam WHERE role_cod IN ({roles})"
        return dict(pop="SELECT report_id FROM an_rpt", exposed=x, excluded=x, events=ev)
    if scenario == "indication_pts_excluded":
        return dict(pop=main_pop, exposed=x_main, excluded=x_main,
                    events="SELECT report_id, event FROM an_fev WHERE non_ind")
    if scenario == "family_masked":
        z = f"""SELECT x.report_id, d.drug, '' AS stratum
                FROM (SELECT DISTINCT report_id FROM an_x) x,
                     (SELECT unnest([{sql_list(d for d in base.drugs if d != FAMILY)}]) AS drug) d
                UNION SELECT report_id, drug, '' FROM an_x"""
        return dict(pop=main_pop, exposed=x_main, excluded=z, events=ev)
    raise ValueError(scenario)


def sensitivity(con, base: Base, config) -> pd.DataFrame:
    parts = []
    for sc in SCENARIOS:
        df = count_cells(con, **scenario_sql(base, config, sc), drugs=base.drugs, event_keys=base.events)
        parts.append(event_order(label(df.drop(columns="stratum"), base), base).assign(scenario=sc))
    out = add_stats(pd.concat(parts, ignore_index=True), base.confidence_level)
    return out[COLUMNS]
