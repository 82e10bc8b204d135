"""Cumulative statistics by quarter for the focus pairs (``trend.parquet``).

For each quarter Q of the analysis population, the 2x2 tables are recounted on the reports whose kept version was
published in a quarter <= Q (``curated/reports.quarter``: the FAERS quarterly file that carried the kept version),
so the last quarter's row equals the report's own row. Pairs: every focus substance x every selected PT group, and
each substance's top PTs ranked by the ROR lower bound (a >= the ROR rule's minimum). The MGPS prior is the
report's (fitted once on the full background); it is not refitted per quarter. An analyst reads the first quarter
a flag turned True (:func:`first_crossing`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASIS = ("cumulative by FAERS publication quarter of the kept case version (curated reports.quarter); "
         "quarter Q = all reports published up to and including Q")


def top_pts(signals: pd.DataFrame, n: int, min_a: int) -> pd.DataFrame:
    """Each substance's top ``n`` PTs by ``ror_lo`` (then ``ic025``) among PT rows with a >= ``min_a``."""
    pts = signals[signals["pt"].notna() & (signals["a"] >= min_a)].copy()
    if pts.empty or n <= 0:
        return pts.iloc[0:0][["substance", "pt"]]
    pts["_lo"] = pts["ror_lo"].fillna(-np.inf)
    pts["_ic"] = pts["ic025"].fillna(-np.inf)
    pts = pts.sort_values(["substance", "_lo", "_ic", "pt"], ascending=[True, False, False, True], kind="mergesort")
    return pts.groupby("substance", sort=False).head(n)[["substance", "pt"]].reset_index(drop=True)


def cumulative_trend(con, signals: pd.DataFrame, params: dict, config, fit, quarters: list[str], *,
                     group_prefix: str) -> pd.DataFrame:
    """Trend rows: one per (quarter, substance, PT or PT group); statistics as in ``signals.parquet``."""
    from pipeline.reports.build import _split_events, score

    subs = params["substances"]
    tops = top_pts(signals, int(params.get("trend_top_pts", 5)), int(config.thresholds.ror_min_a))
    wanted = pd.concat([
        pd.DataFrame({"drug": np.repeat(subs, len(params["pt_groups"])),
                      "event": [group_prefix + g for g in params["pt_groups"]] * len(subs)}),
        pd.DataFrame({"drug": tops["substance"].to_numpy(), "event": tops["pt"].to_numpy()}),
    ], ignore_index=True).astype({"drug": object, "event": object})
    if wanted.empty:
        return _empty(config, fit)
    con.register("trend_wanted", wanted)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE tev AS
        SELECT report_id, event FROM evt WHERE event IN (SELECT event FROM trend_wanted)
        UNION ALL SELECT report_id, event FROM gevt WHERE event IN (SELECT event FROM trend_wanted)""")
    n_total = con.sql("SELECT quarter, count(*)::BIGINT AS n FROM pop GROUP BY 1").df()
    n_drug = con.sql("""SELECT f.drug, p.quarter, count(*)::BIGINT AS n FROM focus_exp f JOIN pop p USING (report_id)
                        GROUP BY 1, 2""").df()
    n_event = con.sql("""SELECT t.event, p.quarter, count(*)::BIGINT AS n FROM tev t JOIN pop p USING (report_id)
                         GROUP BY 1, 2""").df()
    a = con.sql("""SELECT f.drug, t.event, p.quarter, count(*)::BIGINT AS n
                   FROM focus_exp f JOIN tev t USING (report_id) JOIN pop p USING (report_id)
                   SEMI JOIN trend_wanted w ON w.drug = f.drug AND w.event = t.event
                   GROUP BY 1, 2, 3""").df()
    con.unregister("trend_wanted")

    qidx = {q: i for i, q in enumerate(quarters)}
    nq = len(quarters)

    def cum(df: pd.DataFrame, keys: list[str]) -> dict:
        out: dict = {}
        if df.empty:
            return out
        for k, g in df.groupby(keys, sort=False):
            v = np.zeros(nq, dtype=np.int64)
            np.add.at(v, g["quarter"].map(qidx).to_numpy(), g["n"].to_numpy(np.int64))
            key = k if len(keys) > 1 else (k[0] if isinstance(k, tuple) else k)
            out[key] = np.cumsum(v)
        return out

    tot = np.zeros(nq, dtype=np.int64)
    np.add.at(tot, n_total["quarter"].map(qidx).to_numpy(), n_total["n"].to_numpy(np.int64))
    tot = np.cumsum(tot)
    c_drug, c_event, c_a = cum(n_drug, ["drug"]), cum(n_event, ["event"]), cum(a, ["drug", "event"])
    zero = np.zeros(nq, dtype=np.int64)
    rows = []
    for d, e in wanted.itertuples(index=False):
        rows.append(pd.DataFrame({
            "quarter": quarters, "drug": d, "event": e,
            "a": c_a.get((d, e), zero), "n_drug": c_drug.get(d, zero), "n_event": c_event.get(e, zero),
            "n_total": tot}))
    counts = pd.concat(rows, ignore_index=True)
    # the engine needs one row per (drug, event): make the quarter part of the event key, then split it off
    keyed = counts.assign(event=counts["quarter"] + "\x1e" + counts["event"])
    res = score(keyed.drop(columns=["quarter"]), config, fit)
    q_e = res["event"].str.split("\x1e", n=1, expand=True)
    res["event"] = q_e[1].to_numpy()
    out = _split_events(res)
    out.insert(0, "quarter", q_e[0].to_numpy())
    return out.reset_index(drop=True)


def _empty(config, fit) -> pd.DataFrame:
    from pipeline.reports.build import EXTRA_COLUMNS, STAT_COLUMNS

    return pd.DataFrame({c: [] for c in ("quarter",) + STAT_COLUMNS + EXTRA_COLUMNS})


def first_crossing(trend: pd.DataFrame, flag: str = "signal_ror") -> pd.DataFrame:
    """First quarter each (substance, pt, pt_group) had ``flag`` True (None when never)."""
    if trend.empty:
        return pd.DataFrame(columns=["substance", "pt", "pt_group", "first_quarter"])
    t = trend.sort_values("quarter", kind="mergesort")
    key = t["substance"].astype(str) + "\x1f" + t["pt"].fillna("").astype(str) + "\x1f" + \
        t["pt_group"].fillna("").astype(str)
    flagged = t[t[flag].astype(bool)]
    first = flagged.groupby(key[flagged.index], sort=False)["quarter"].min()
    base = t.assign(_k=key).drop_duplicates("_k")
    base = base[["substance", "pt", "pt_group", "_k"]].copy()
    base["first_quarter"] = base["_k"].map(first)
    return base.drop(columns="_k").reset_index(drop=True)
