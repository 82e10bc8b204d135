"""Statistics by quarter for the focus pairs (``trend.parquet``): the database as it stood at each quarter's end.

The row for quarter q counts each case at its version as of q (``curated/versions.parquet``: the version the
curation rules keep when only the quarterly files <= q exist, deleted-case lists of quarters <= q applied;
:mod:`pipeline.curate.history`), with that version's drugs and PTs. Two inputs come from the report's own
database rather than from each quarter's: the cross-case duplicate flags (recomputing them per quarter would cost
one curation per quarter) and the drug-name vocabulary. A case deleted after q counts at q. The last quarter's row
equals the report's own row. With a from-quarter, only cases first received in it or later, and quarters from it
on. Pairs: every focus substance x every selected PT group, and each substance's top PTs ranked by the ROR lower
bound (a >= the ROR rule's minimum). The MGPS prior is the report's (fitted once on the full background); it is not
refitted per quarter. An analyst reads the first quarter a flag turned True (:func:`first_crossing`).

A curated folder without version tables (older curations, hand-made fixtures) counts each report from the quarter
of its kept version on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.duck import sql_str
from pipeline.reports.scoring import EXTRA_COLUMNS, STAT_COLUMNS, score, split_events
from pipeline.vocabulary import FAMILY

if TYPE_CHECKING:
    from pipeline.reports.population import Population

HISTORY_FILES = ("versions", "version_ingredients", "version_pts")
BASIS = ("each quarter q: every case at its version as of q (latest version received by q, deleted-case lists "
         "of quarters <= q); duplicate flags and drug vocabulary from the report's database")
BASIS_NO_HISTORY = ("cumulative by FAERS publication quarter of the kept case version (curated reports.quarter); "
                    "quarter Q = all reports published up to and including Q")


def has_history(curated: Path | None) -> bool:
    return curated is not None and all((Path(curated) / f"{n}.parquet").exists() for n in HISTORY_FILES)


def basis(curated: Path | None) -> str:
    """What a trend row counts, for the manifest and the Parquet metadata."""
    return BASIS if has_history(curated) else BASIS_NO_HISTORY


def top_pts(signals: pd.DataFrame, n: int, min_a: int) -> pd.DataFrame:
    """Each substance's top ``n`` PTs by ``ror_lo`` (then ``ic025``) among PT rows with a >= ``min_a``."""
    pts = signals[signals["pt"].notna() & (signals["a"] >= min_a)].copy()
    if pts.empty or n <= 0:
        return pts.iloc[0:0][["substance", "pt"]]
    pts["_lo"] = pts["ror_lo"].fillna(-np.inf)
    pts["_ic"] = pts["ic025"].fillna(-np.inf)
    pts = pts.sort_values(["substance", "_lo", "_ic", "pt"], ascending=[True, False, False, True], kind="mergesort")
    return pts.groupby("substance", sort=False).head(n)[["substance", "pt"]].reset_index(drop=True)


def _register_versions(pop: Population, curated: Path | None, params: dict, config, group_prefix: str) -> None:
    """Temp tables ``tv`` (version spans in the population), ``texp`` (version, drug), ``tevt`` (version, event).

    Final versions reuse the report's focus exposures and ``tev``; superseded ones map their own ingredients/PTs
    with the same role, substance and PT-group rules."""
    con = pop.con
    if not has_history(curated):
        con.execute(f"""CREATE OR REPLACE TEMP TABLE tv AS
                        SELECT report_id AS version_id, report_id, true AS is_final, quarter AS valid_from,
                               NULL::VARCHAR AS valid_to FROM {pop.reports}""")
        con.execute(f"CREATE OR REPLACE TEMP TABLE texp AS "
                    f"SELECT report_id AS version_id, drug FROM {pop.focus_exposures}")
        con.execute("CREATE OR REPLACE TEMP TABLE tevt AS SELECT report_id AS version_id, event FROM tev")
        return
    f = lambda n: sql_str(Path(curated) / f"{n}.parquet")  # noqa: E731
    start = params.get("from_quarter")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE tv AS
        SELECT version_id, report_id, is_final, valid_from, valid_to FROM read_parquet({f('versions')})
        WHERE in_analysis{f" AND first_quarter >= {sql_str(start)}" if start else ""}""")
    roles = ", ".join(sql_str(r) for r in params["roles"])
    singles = [s for s in params["substances"] if s != FAMILY]
    parts = [f"SELECT v.version_id, f.drug FROM tv v JOIN {pop.focus_exposures} f USING (report_id) WHERE v.is_final"]
    vi = (f"(SELECT i.version_id, i.substance FROM read_parquet({f('version_ingredients')}) i "
          f"SEMI JOIN tv ON tv.version_id = i.version_id AND NOT tv.is_final WHERE i.role_cod IN ({roles}))")
    if singles:
        parts.append(f"SELECT DISTINCT version_id, substance FROM {vi} "
                     f"WHERE substance IN ({', '.join(sql_str(s) for s in singles)})")
    if FAMILY in params["substances"]:
        parts.append(f"SELECT DISTINCT version_id, '{FAMILY}' FROM {vi} "
                     f"WHERE substance IN ({', '.join(sql_str(s) for s in config.substances)})")
    con.execute("CREATE OR REPLACE TEMP TABLE texp AS " + " UNION ALL ".join(parts))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE tevt AS
        SELECT v.version_id, t.event FROM tv v JOIN tev t USING (report_id) WHERE v.is_final
        UNION ALL
        SELECT * FROM (
            WITH p AS (SELECT DISTINCT p.version_id, p.pt, p.pt_key FROM read_parquet({f('version_pts')}) p
                       SEMI JOIN tv ON tv.version_id = p.version_id AND NOT tv.is_final)
            SELECT version_id, pt AS event FROM p
            UNION ALL SELECT DISTINCT p.version_id, {sql_str(group_prefix)} || g.pt_group FROM p
                      JOIN {pop.group_members} g USING (pt_key))
        WHERE event IN (SELECT event FROM trend_wanted)""")


def _span_counts(df: pd.DataFrame, keys: list[str], quarters: list[str]) -> dict:
    """{key: counts per quarter} from rows (keys..., valid_from, valid_to, n): n counts in [valid_from, valid_to)."""
    out: dict = {}
    if df.empty:
        return out
    nq = len(quarters)
    qs = np.asarray(quarters, dtype=object)
    lo = np.searchsorted(qs, df["valid_from"].to_numpy(object), side="left")
    to = df["valid_to"].to_numpy(object)
    hi = np.where(pd.isna(to), nq, np.searchsorted(qs, np.where(pd.isna(to), "", to).astype(object), side="left"))
    n = df["n"].to_numpy(np.int64)
    key = pd.MultiIndex.from_frame(df[keys]) if len(keys) > 1 else pd.Index(df[keys[0]])
    codes, uniques = pd.factorize(key)
    diff = np.zeros((len(uniques), nq + 1), dtype=np.int64)
    np.add.at(diff, (codes, lo), n)
    np.add.at(diff, (codes, hi), -n)
    counts = np.cumsum(diff[:, :nq], axis=1)
    for i, k in enumerate(uniques):
        out[k] = counts[i]
    return out


def cumulative_trend(pop: Population, signals: pd.DataFrame, params: dict, config, fit, *,
                     group_prefix: str, curated: Path | None = None) -> pd.DataFrame:
    """Trend rows: one per (quarter of ``pop.quarters``, substance, PT or PT group); statistics as in
    ``signals.parquet``.

    Parameters
    ----------
    pop : the report's population (:func:`pipeline.reports.population.register_population`); read, not changed.
    signals : the report's ``signals`` rows (they pick each substance's top PTs).
    params, config : the report's parameters and config.
    fit : the MGPS prior that scores every row (the report's crude-E prior).
    group_prefix : the event key prefix of PT groups.
    curated : the curated folder (its version tables, when present, date each case).
    """
    con, quarters = pop.con, pop.quarters
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
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE tev AS
        SELECT report_id, event FROM {pop.events} WHERE event IN (SELECT event FROM trend_wanted)
        UNION ALL SELECT report_id, event FROM {pop.group_events} WHERE event IN (SELECT event FROM trend_wanted)""")
    _register_versions(pop, curated, params, config, group_prefix)
    n_total = con.sql("SELECT valid_from, valid_to, count(*)::BIGINT AS n FROM tv GROUP BY ALL").df()
    n_drug = con.sql("""SELECT x.drug, v.valid_from, v.valid_to, count(*)::BIGINT AS n
                        FROM texp x JOIN tv v USING (version_id) GROUP BY ALL""").df()
    n_event = con.sql("""SELECT t.event, v.valid_from, v.valid_to, count(*)::BIGINT AS n
                         FROM tevt t JOIN tv v USING (version_id) GROUP BY ALL""").df()
    a = con.sql("""SELECT x.drug, t.event, v.valid_from, v.valid_to, count(*)::BIGINT AS n
                   FROM texp x JOIN tevt t USING (version_id) JOIN tv v USING (version_id)
                   SEMI JOIN trend_wanted w ON w.drug = x.drug AND w.event = t.event
                   GROUP BY ALL""").df()
    con.unregister("trend_wanted")

    nq = len(quarters)
    zero = np.zeros(nq, dtype=np.int64)
    tot = _span_counts(n_total.assign(k=0), ["k"], quarters).get(0, zero)
    c_drug, c_event = _span_counts(n_drug, ["drug"], quarters), _span_counts(n_event, ["event"], quarters)
    c_a = _span_counts(a, ["drug", "event"], quarters)
    rows = []
    for d, e in wanted.itertuples(index=False):
        rows.append(pd.DataFrame({
            "quarter": quarters, "drug": d, "event": e,
            "a": c_a.get((d, e), zero), "n_drug": c_drug.get(d, zero), "n_event": c_event.get(e, zero),
            "n_total": tot}))
    counts = pd.concat(rows, ignore_index=True)
    # quarters before any case is in the window have n_total = 0: the engine needs n_total >= 1
    counts = counts[counts["n_total"] > 0]
    if counts.empty:
        return _empty(config, fit)
    # the engine needs one row per (drug, event): make the quarter part of the event key, then split it off
    keyed = counts.assign(event=counts["quarter"] + "\x1e" + counts["event"])
    res = score(keyed.drop(columns=["quarter"]), config, fit)
    q_e = res["event"].str.split("\x1e", n=1, expand=True)
    res["event"] = q_e[1].to_numpy()
    out = split_events(res).drop(columns=["fisher_q"])  # no q-values by quarter: each quarter is no family
    out.insert(0, "quarter", q_e[0].to_numpy())
    return out.reset_index(drop=True)


def _empty(config, fit) -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ("quarter",) + STAT_COLUMNS + EXTRA_COLUMNS if c != "fisher_q"})


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
