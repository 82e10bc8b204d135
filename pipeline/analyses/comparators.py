"""``comparators.parquet``: each configured comparison (config ``[analyses.comparators]``, with its source) of a
substance against a comparator ingredient set, in the population of reports exposed (exposure roles) to the
substance or to the comparator but not both; a/b = substance with/without the event, c/d = comparator
with/without it. Populations: ``all`` and ``depression_cohort`` (reports with an indication PT of config
``depression_cohort_pts`` on any drug row)."""

from __future__ import annotations

import pandas as pd

from pipeline.analyses.base import Base, event_order, label, sql_list
from pipeline.analyses.cells import add_stats

COLUMNS = ["comparison", "population", "substance", "comparator", "pt_group", "pt", "a", "b", "c", "d", "ror",
           "ror_lo", "ror_hi"]
POPULATIONS = ("all", "depression_cohort")


def comparators(con, base: Base, config) -> pd.DataFrame:
    comps = [c for c in config.analyses.comparators if c.substance in base.drugs]
    if not comps:
        return pd.DataFrame(columns=COLUMNS)
    roles = sql_list(base.roles)
    con.register("an_comp", pd.DataFrame({
        "comparison": [c.name for c in comps for _ in c.comparator],
        "ingredient": [i for c in comps for i in c.comparator]}))
    con.register("an_comp_sub", pd.DataFrame({"comparison": [c.name for c in comps],
                                              "drug": [c.substance for c in comps]}))
    cohort = [" ".join(p.split()).lower() for p in config.analyses.depression_cohort_pts]
    cohort_sql = (f"SELECT DISTINCT report_id FROM {base.read('report_indications')} WHERE pt_key IN "
                  f"({sql_list(cohort)})") if base.has("report_indications") else "SELECT NULL::BIGINT AS report_id"
    try:
        df = con.execute(f"""
            WITH pop AS (SELECT report_id FROM an_rpt WHERE in_analysis),
                 s AS (SELECT c.comparison, x.report_id FROM an_comp_sub c JOIN an_x x USING (drug)),
                 k AS (SELECT DISTINCT c.comparison, i.report_id
                       FROM {base.read('report_ingredients')} i JOIN an_comp c USING (ingredient)
                       SEMI JOIN pop USING (report_id) WHERE i.role_cod IN ({roles})),
                 side AS (SELECT comparison, report_id, 'substance' AS side FROM s ANTI JOIN k USING (comparison, report_id)
                          UNION ALL
                          SELECT comparison, report_id, 'comparator' FROM k ANTI JOIN s USING (comparison, report_id)),
                 cohort AS ({cohort_sql}),
                 sp AS (SELECT side.*, 'all' AS population FROM side
                        UNION ALL SELECT side.*, 'depression_cohort' FROM side SEMI JOIN cohort USING (report_id)),
                 n AS (SELECT comparison, population, side, count(*) AS n FROM sp GROUP BY ALL),
                 e AS (SELECT sp.comparison, sp.population, sp.side, f.event, count(*) AS n
                       FROM sp JOIN an_fev f USING (report_id) GROUP BY ALL),
                 grid AS (SELECT c.comparison, p.population, ev.event FROM an_comp_sub c
                          CROSS JOIN (SELECT unnest([{sql_list(POPULATIONS)}]) AS population) p
                          CROSS JOIN (SELECT unnest([{sql_list(base.events)}]) AS event) ev)
            SELECT g.comparison, g.population, g.event, coalesce(ea.n, 0) AS a, coalesce(ec.n, 0) AS c,
                   coalesce(ns.n, 0) AS n_s, coalesce(nc.n, 0) AS n_c
            FROM grid g
            LEFT JOIN e ea ON ea.comparison = g.comparison AND ea.population = g.population
                          AND ea.event = g.event AND ea.side = 'substance'
            LEFT JOIN e ec ON ec.comparison = g.comparison AND ec.population = g.population
                          AND ec.event = g.event AND ec.side = 'comparator'
            LEFT JOIN n ns ON ns.comparison = g.comparison AND ns.population = g.population AND ns.side = 'substance'
            LEFT JOIN n nc ON nc.comparison = g.comparison AND nc.population = g.population
                          AND nc.side = 'comparator'""").df()
    finally:
        con.unregister("an_comp")
        con.unregister("an_comp_sub")
    df["b"] = df.pop("n_s") - df["a"]
    df["d"] = df.pop("n_c") - df["c"]
    by = {c.name: c for c in comps}
    df["drug"] = df["comparison"].map(lambda n: by[n].substance)
    df["comparator"] = df["comparison"].map(lambda n: "+".join(by[n].comparator))
    df = add_stats(label(df, base), base.confidence_level, which=("ror",))
    order = {c.name: i for i, c in enumerate(comps)}
    parts = [event_order(g, base) for _, g in
             df.assign(_c=df["comparison"].map(order), _p=df["population"].map(POPULATIONS.index))
             .groupby(["_c", "_p"], sort=True)]
    out = pd.concat(parts, ignore_index=True)
    for col in ("a", "b", "c", "d"):
        out[col] = out[col].astype("int64")
    return out[COLUMNS]


def sources(config) -> list[dict]:
    return [{"comparison": c.name, "substance": c.substance, "comparator": "+".join(c.comparator),
             "source": c.source} for c in config.analyses.comparators]


__all__ = ["comparators", "sources", "COLUMNS"]
