"""2×2 cells for any exposed set against any background, by SQL over small tables, and their statistics.

Every analysis table reduces to the same count. For each (stratum, drug, event):

* ``a`` = exposed reports (``X``) with the event, ``b`` = exposed reports without it;
* ``c`` = background reports with the event, ``d`` = background reports without it, where the background is the
  population ``P`` minus an *excluded* set ``Z`` (``Z`` always contains ``X``; a wider ``Z`` also removes e.g. the
  other ketamine-family reports, or the reports naming the substance in another way than the one counted).

So ``c = n_event(P) - |Z ∩ E|`` and ``d = |P| - |Z| - c``: only the small exposed/excluded sets are joined with the
events; the big population is counted once per event. With ``X = Z`` = the reports naming the substance this is the
main table's 2×2 exactly.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pandas as pd

from pipeline.stats.frequentist import expected, ic_noren, prr, ror

CELLS = ("a", "b", "c", "d", "n_total")

#: while :func:`shared_population_counts` is active: (population SQL, events SQL, events, by stratum) -> the temp
#: tables holding that population's counts; None = no sharing
_SHARED: dict | None = None
_NAMES = itertools.count()


@contextlib.contextmanager
def shared_population_counts(con):
    """Inside the block, calls of :func:`count_cells` with the same population, events and grid share one count of
    the population and its events (``np``, ``pe``): the part that reads the whole population. The tables read by
    the SQL must not change inside the block; the counts are dropped at its end."""
    global _SHARED
    outer, _SHARED = _SHARED, {}
    try:
        yield
    finally:
        for names in _SHARED.values():
            for t in names:
                con.execute(f"DROP TABLE IF EXISTS {t}")
        _SHARED = outer


def _grid_events_sql(events: str) -> str:
    """SQL of the (report_id, event) rows of ``events`` (distinct) whose event is on the grid (``_grid_events``)."""
    return f"SELECT report_id, event FROM ({events}) SEMI JOIN _grid_events USING (event)"


def _population_counts(con, pop: str, events: str, event_keys: list[str], pop_by_stratum: bool) -> tuple[str, str]:
    """Temp tables ``(stratum, n)`` (reports per stratum) and ``(stratum, event, n)`` (reports with each grid
    event) of ``pop``; reused inside :func:`shared_population_counts`. Needs ``_grid_events`` registered."""
    key = (pop, events, tuple(event_keys), pop_by_stratum)
    if _SHARED is not None and key in _SHARED:
        return _SHARED[key]
    i = next(_NAMES)
    names = (f"_cells_np{i}", f"_cells_pe{i}")
    # pop has one row per report (and stratum): counted as it is, never copied (it is the whole population)
    s_pop = "stratum" if pop_by_stratum else "''"
    p = f"SELECT report_id, {s_pop} AS stratum FROM ({pop})"
    con.execute(f"CREATE TEMP TABLE {names[0]} AS SELECT stratum, count(*) AS n FROM ({p}) GROUP BY 1")
    con.execute(f"""CREATE TEMP TABLE {names[1]} AS
                    SELECT p.stratum, e.event, count(*) AS n
                    FROM ({_grid_events_sql(events)}) e
                    JOIN ({p}) p USING (report_id) GROUP BY 1, 2""")
    if _SHARED is not None:
        _SHARED[key] = names
    return names


def count_cells(con, *, pop: str, exposed: str, excluded: str, events: str, drugs: list[str], event_keys: list[str],
                pop_by_stratum: bool = False) -> pd.DataFrame:
    """The full grid stratum x drug x event (a = 0 included) with ``a, b, c, d, n_total``.

    Parameters
    ----------
    con : duckdb connection holding the tables the SQL strings read.
    pop : SQL of ``(report_id[, stratum])``: the population, one row per report (read as it is: no DISTINCT).
    exposed, excluded : SQL of ``(report_id, drug, stratum)``: ``X`` and ``Z`` (``Z`` ⊇ ``X``), inside ``pop``.
    events : SQL of ``(report_id, event)``, distinct rows (read as they are), any reports (restricted to ``pop``
        here).
    drugs, event_keys : the grid's drugs and events.
    pop_by_stratum : ``pop`` has a ``stratum`` column (subgroups); otherwise the one population serves every
        stratum of ``exposed``.
    """
    con.register("_grid_drugs", pd.DataFrame({"drug": pd.Series(drugs, dtype=object)}))
    con.register("_grid_events", pd.DataFrame({"event": pd.Series(event_keys, dtype=object)}))
    counts: tuple[str, ...] = ()
    try:
        counts = t_np, t_pe = _population_counts(con, pop, events, event_keys, pop_by_stratum)
        df = con.execute(f"""
            WITH x AS (SELECT DISTINCT report_id, drug, stratum FROM ({exposed})),
                 z AS (SELECT DISTINCT report_id, drug, stratum FROM ({excluded})),
                 e AS ({_grid_events_sql(events)}),
                 np AS (SELECT * FROM {t_np}),
                 pe AS (SELECT * FROM {t_pe}),
                 nx AS (SELECT stratum, drug, count(*) AS n FROM x GROUP BY 1, 2),
                 nz AS (SELECT stratum, drug, count(*) AS n FROM z GROUP BY 1, 2),
                 ax AS (SELECT x.stratum, x.drug, e.event, count(*) AS n FROM x JOIN e USING (report_id) GROUP BY ALL),
                 az AS (SELECT z.stratum, z.drug, e.event, count(*) AS n FROM z JOIN e USING (report_id) GROUP BY ALL),
                 strata AS ({"SELECT stratum FROM np" if pop_by_stratum else
                             "SELECT DISTINCT stratum FROM x UNION SELECT DISTINCT stratum FROM z UNION "
                             "SELECT '' WHERE NOT EXISTS (SELECT 1 FROM x) AND NOT EXISTS (SELECT 1 FROM z)"}),
                 grid AS (SELECT s.stratum, d.drug, ev.event FROM strata s, _grid_drugs d, _grid_events ev)
            SELECT g.stratum, g.drug, g.event,
                   coalesce(ax.n, 0) AS a, coalesce(nx.n, 0) AS n_x,
                   coalesce(pe.n, 0) - coalesce(az.n, 0) AS c, coalesce(np.n, 0) - coalesce(nz.n, 0) AS n_b
            FROM grid g
            LEFT JOIN np ON np.stratum = {"g.stratum" if pop_by_stratum else "''"}
            LEFT JOIN pe ON pe.stratum = {"g.stratum" if pop_by_stratum else "''"} AND pe.event = g.event
            LEFT JOIN nx ON nx.stratum = g.stratum AND nx.drug = g.drug
            LEFT JOIN nz ON nz.stratum = g.stratum AND nz.drug = g.drug
            LEFT JOIN ax ON ax.stratum = g.stratum AND ax.drug = g.drug AND ax.event = g.event
            LEFT JOIN az ON az.stratum = g.stratum AND az.drug = g.drug AND az.event = g.event""").df()
    finally:
        for t in counts if _SHARED is None else ():
            con.execute(f"DROP TABLE IF EXISTS {t}")
        con.unregister("_grid_drugs")
        con.unregister("_grid_events")
    for col in ("a", "n_x", "c", "n_b"):
        df[col] = df[col].astype(np.int64)
    df["b"] = df["n_x"] - df["a"]
    df["d"] = df["n_b"] - df["c"]
    df["n_total"] = df["n_x"] + df["n_b"]
    return df.drop(columns=["n_x", "n_b"])


def add_stats(df: pd.DataFrame, confidence_level: float, *, which=("prr", "ror", "ic")) -> pd.DataFrame:
    """Append PRR (Katz), ROR (Woolf) and IC (Norén 2013) with their intervals, computed from ``a, b, c, d``.

    References
    ----------
    Evans SJW, Waller PC, Davis S. Pharmacoepidemiol Drug Saf 2001;10:483-486 (PRR).
    van Puijenbroek EP et al. Pharmacoepidemiol Drug Saf 2002;11:3-10 (ROR).
    Norén GN, Hopstadius J, Bate A. Stat Methods Med Res 2013;22:57-69 (IC).
    """
    out = df.copy()
    a, b, c, d = (out[k].to_numpy(np.int64) for k in ("a", "b", "c", "d"))
    with np.errstate(divide="ignore", invalid="ignore"):
        if "prr" in which:
            out["prr"], out["prr_lo"], out["prr_hi"] = prr(a, b, c, d, confidence_level)
        if "ror" in which:
            out["ror"], out["ror_lo"], out["ror_hi"] = ror(a, b, c, d, confidence_level)
        if "ic" in which:
            out["ic"], out["ic025"], out["ic975"] = ic_noren(a, np.nan_to_num(expected(a, b, c, d)), confidence_level)
    return out
