"""Comparison vectors of the candidate pairs (temp table ``lk_cmp``).

Each comparison maps a pair to an agreement level (0 = disagree, higher = closer) or NULL when either report lacks
the field: a missing value is neither agreement nor disagreement, so it contributes weight 0 and is left out of
the EM sums. ``LEVELS`` names the levels in order; the level SQL below must produce exactly these values.
Term-frequency inputs (``tf_*``: log2 share of reports holding the agreeing value) are carried for the exact
agreement levels in ``TF``.
"""

from __future__ import annotations

LEVELS: dict[str, tuple[str, ...]] = {
    "event_date": ("disagree", "same year (one known to the year only)", "same month (one known to the month)",
                   "within 7 days", "same day"),
    "age": ("differ > 5 y", "within 5 y", "within 1.5 y", "same (0.05 y)"),
    "sex": ("differ", "same"),
    "country": ("differ", "same"),
    "weight": ("differ > 5 kg", "within 5 kg", "within 1 kg"),
    "suspects": ("none shared", "Jaccard < 0.5", "Jaccard >= 0.5", "identical"),
    "pts": ("none shared", "Jaccard < 0.5", "Jaccard >= 0.5", "identical"),
    "sender": ("other sender", "same sender, other number", "same manufacturer number"),
    "received": ("> 365 days apart", "within 365 days", "within 30 days"),
}

#: comparison -> (tf column, exact-agreement level it adjusts). tf = log2 share of reports holding the agreeing value
#: (for the sets: the whole set, so two reports naming only one common drug weigh less than two naming the same
#: six drugs).
TF: dict[str, tuple[str, int]] = {
    "event_date": ("tf_ev", 4), "country": ("tf_country", 1), "suspects": ("tf_sus", 3), "pts": ("tf_pts", 3),
}


def _jaccard_level(inter: str, x: str, y: str) -> str:
    jac = f"{inter} / (len({x}) + len({y}) - {inter})"
    return f"CASE WHEN {inter} = 0 THEN 0 WHEN {jac} < 0.5 THEN 1 WHEN {jac} < 1 THEN 2 ELSE 3 END"


_SQL = {
    "event_date": """CASE WHEN x.ev IS NULL OR y.ev IS NULL THEN NULL
        WHEN x.ev_prec = 3 AND y.ev_prec = 3 THEN
             CASE WHEN x.ev_day = y.ev_day THEN 4 WHEN abs(x.ev_day - y.ev_day) <= 7 THEN 3 ELSE 0 END
        WHEN least(x.ev_prec, y.ev_prec) = 2 THEN CASE WHEN x.ev_ym = y.ev_ym THEN 2 ELSE 0 END
        ELSE CASE WHEN x.ev_y = y.ev_y THEN 1 ELSE 0 END END""",
    "age": """CASE WHEN x.age IS NULL OR y.age IS NULL THEN NULL WHEN abs(x.age - y.age) <= 0.05 THEN 3
        WHEN abs(x.age - y.age) <= 1.5 THEN 2 WHEN abs(x.age - y.age) <= 5 THEN 1 ELSE 0 END""",
    "sex": "CASE WHEN x.sex IS NULL OR y.sex IS NULL THEN NULL WHEN x.sex = y.sex THEN 1 ELSE 0 END",
    "country": "CASE WHEN x.country IS NULL OR y.country IS NULL THEN NULL WHEN x.country = y.country THEN 1 ELSE 0 END",
    "weight": """CASE WHEN x.wt IS NULL OR y.wt IS NULL THEN NULL WHEN abs(x.wt - y.wt) <= 1 THEN 2
        WHEN abs(x.wt - y.wt) <= 5 THEN 1 ELSE 0 END""",
    # the intersections are computed once per pair (columns ni_sus, ni_pts below)
    "suspects": _jaccard_level("ni_sus", "x.sus", "y.sus"),
    "pts": _jaccard_level("ni_pts", "x.pts", "y.pts"),
    "sender": """CASE WHEN x.sndr IS NULL OR y.sndr IS NULL THEN NULL
        WHEN x.sndr = y.sndr AND x.mfr_num = y.mfr_num THEN 2 WHEN x.sndr = y.sndr THEN 1 ELSE 0 END""",
    "received": """CASE WHEN x.rcv IS NULL OR y.rcv IS NULL THEN NULL WHEN abs(x.rcv - y.rcv) <= 30 THEN 2
        WHEN abs(x.rcv - y.rcv) <= 365 THEN 1 ELSE 0 END""",
}


def compare(con, pairs: str = "lk_pairs", out: str = "lk_cmp") -> None:
    """Create ``out(a, b, g_<comparison>..., tf_ev, tf_country, tf_sus, tf_pts)`` from the pairs table ``pairs``."""
    gammas = ",\n               ".join(f"({sql})::TINYINT AS g_{name}" for name, sql in _SQL.items())
    # one pass: pairs joined to both records and to the term-frequency tables of the values they agree on
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {out} AS
        SELECT * EXCLUDE (ni_sus, ni_pts) FROM (
            SELECT p.a, p.b,
                   len(list_intersect(x.sus, y.sus)) AS ni_sus, len(list_intersect(x.pts, y.pts)) AS ni_pts,
                   {gammas},
                   e.ltf AS tf_ev, k.ltf AS tf_country, s.ltf AS tf_sus, t.ltf AS tf_pts
            FROM {pairs} p JOIN lk_rec x ON x.report_id = p.a JOIN lk_rec y ON y.report_id = p.b
            LEFT JOIN lk_tf_ev e ON e.ev_day = x.ev_day AND x.ev_prec = 3 AND y.ev_day = x.ev_day
            LEFT JOIN lk_tf_country k ON k.country = x.country AND y.country = x.country
            LEFT JOIN lk_tf_sus s ON s.sus_h = x.sus_h AND y.sus_h = x.sus_h
            LEFT JOIN lk_tf_pts t ON t.pts_h = x.pts_h AND y.pts_h = x.pts_h)""")
