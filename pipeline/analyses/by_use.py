"""``by_use.parquet``: racemic ketamine's focus rows split by use, an extra stratification of the focus table.

* ``indication_category``: the indication PTs (INDI linked to the report's ketamine drug rows in the exposure roles
  by ``indi_drug_seq``) read against config ``[analyses.use_categories]`` in its order (anaesthesia, pain,
  depression): a report takes the first category any of its ketamine indications belongs to, else ``other/none``;
* ``route``: the route FDA recorded on those drug rows (``unknown`` when blank); a report with two routes is in
  both strata.

In each stratum the exposed reports are the ketamine reports of the stratum and the background is every report
not naming ketamine (ketamine reports of other strata leave the population).
"""

from __future__ import annotations

import pandas as pd

from pipeline.analyses.base import Base, event_order, label, sql_list, sql_str
from pipeline.analyses.cells import add_stats, count_cells

SUBSTANCE = "ketamine"
OTHER = "other/none"
COLUMNS = ["stratum_by", "stratum", "substance", "pt_group", "pt", "a", "b", "c", "d", "n_total", "ror", "ror_lo",
           "ror_hi", "ic", "ic025", "ic975"]


def strata_sql(base: Base, config) -> str:
    """SQL ``(report_id, stratum_by, stratum)`` for the ketamine-exposed reports."""
    cats = config.analyses.use_categories
    cat_rows = ", ".join(f"({sql_str(' '.join(p.split()).lower())}, {sql_str(name)}, {rank})"
                         for rank, (name, pts) in enumerate(cats) for p in pts) or "(NULL, NULL, NULL)"
    return f"""
        WITH k AS (SELECT DISTINCT report_id FROM an_x WHERE drug = {sql_str(SUBSTANCE)}),
             d AS (SELECT s.report_id, s.drug_seq, s.route FROM {base.read('report_substance_drugs')} s
                   SEMI JOIN k USING (report_id)
                   WHERE s.substance = {sql_str(SUBSTANCE)} AND s.role_cod IN ({sql_list(base.roles)})),
             cat AS (SELECT * FROM (VALUES {cat_rows}) t(pt_key, category, rank)),
             ind AS (SELECT d.report_id, min_by(c.category, c.rank) AS category
                     FROM d JOIN {base.read('report_indications')} i USING (report_id, drug_seq)
                     JOIN cat c ON c.pt_key = i.pt_key GROUP BY 1)
        SELECT k.report_id, 'indication_category' AS stratum_by, coalesce(ind.category, {sql_str(OTHER)}) AS stratum
        FROM k LEFT JOIN ind USING (report_id)
        UNION
        SELECT k.report_id, 'route', coalesce(d.route, 'unknown') FROM k LEFT JOIN d USING (report_id)"""


def by_use(con, base: Base, config) -> pd.DataFrame:
    if SUBSTANCE not in base.drugs or not base.has("report_substance_drugs", "report_indications"):
        return pd.DataFrame(columns=COLUMNS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE an_use AS {strata_sql(base, config)}")
    x = f"SELECT report_id, {sql_str(SUBSTANCE)} AS drug, stratum_by || '\x1f' || stratum AS stratum FROM an_use"
    z = (f"SELECT k.report_id, {sql_str(SUBSTANCE)} AS drug, s.stratum FROM "
         f"(SELECT DISTINCT report_id FROM an_use) k, (SELECT DISTINCT stratum_by || '\x1f' || stratum AS stratum "
         f"FROM an_use) s")
    df = count_cells(con, pop="SELECT report_id FROM an_rpt WHERE in_analysis", exposed=x, excluded=z,
                     events="SELECT report_id, event FROM an_fev", drugs=[SUBSTANCE], event_keys=base.events)
    con.execute("DROP TABLE an_use")
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    split = df.pop("stratum").str.split("\x1f", n=1, expand=True)
    df["stratum_by"], df["stratum"] = split[0], split[1]
    df = add_stats(label(df, base), base.confidence_level, which=("ror", "ic"))
    cat_rank = {name: i for i, (name, _) in enumerate(config.analyses.use_categories)}
    df = df.assign(_by=(df["stratum_by"] != "indication_category").astype(int),
                   _r=df["stratum"].map(cat_rank).fillna(len(cat_rank)), _n=-(df["a"] + df["b"]))  # larger strata first
    parts = [event_order(g.drop(columns=["_by", "_r", "_n"]), base)
             for _, g in df.groupby(["_by", "_r", "_n", "stratum"], sort=True)]
    return pd.concat(parts, ignore_index=True)[COLUMNS]
