"""``outcomes.parquet``: for each (substance, PT group) and (substance, PT) with a >= 1, how many of the reports
counted in ``a`` carry each OUTC code of their kept version, and ``serious`` = any code."""

from __future__ import annotations

import pandas as pd

from pipeline.analyses.base import Base
from pipeline.curate.extras import OUTCOME_CODES

COLUMNS = ["substance", "pt_group", "pt", "a", *OUTCOME_CODES.values(), "serious"]


def outcomes(con, base: Base, *, exposed: str, events: str, group_events: str) -> pd.DataFrame:
    """Reads the main table's own exposure and event relations (every PT, not only the focus PTs), so ``a`` is the
    ``a`` of ``signals.parquet``: ``exposed`` (report_id, drug), ``events`` and ``group_events`` (report_id, event),
    names of relations in ``con`` owned by the caller."""
    if not base.has("report_outcomes"):
        return pd.DataFrame(columns=COLUMNS)
    flags = ", ".join(f"bool_or(outc_cod = '{code}') AS {name}" for code, name in OUTCOME_CODES.items())
    counts = ", ".join(f"count(*) FILTER (WHERE o.{name})::BIGINT AS {name}" for name in OUTCOME_CODES.values())
    df = con.execute(f"""
        WITH o AS (SELECT report_id, {flags} FROM {base.read('report_outcomes')} GROUP BY 1),
             e AS (SELECT report_id, event FROM {events} UNION ALL SELECT report_id, event FROM {group_events})
        SELECT x.drug, e.event, count(*)::BIGINT AS a, {counts},
               count(*) FILTER (WHERE {' OR '.join('o.' + n for n in OUTCOME_CODES.values())})::BIGINT AS serious
        FROM {exposed} x JOIN e USING (report_id) LEFT JOIN o USING (report_id)
        GROUP BY 1, 2""").df()
    lookup = dict(base.event_group)
    df["pt_group"] = df["event"].map(lookup)
    df["pt"] = df["event"].where(df["pt_group"].isna(), None)
    df = df.rename(columns={"drug": "substance"}).drop(columns="event")
    s_rank = {s: i for i, s in enumerate(base.drugs)}
    g_rank = {g: i for i, g in enumerate(base.groups)}
    df = df.assign(_s=df["substance"].map(s_rank), _k=df["pt_group"].isna().astype(int),
                   _g=df["pt_group"].map(g_rank).fillna(0), _a=-df["a"], _p=df["pt"].fillna("").str.lower())
    df = df.sort_values(["_s", "_k", "_g", "_a", "_p"], kind="mergesort").reset_index(drop=True)
    return df[COLUMNS]


__all__ = ["outcomes", "COLUMNS"]
