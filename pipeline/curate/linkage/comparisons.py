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
    jac = f"{inter} / ({x} + {y} - {inter})"
    return f"CASE WHEN {inter} = 0 THEN 0 WHEN {jac} < 0.5 THEN 1 WHEN {jac} < 1 THEN 2 ELSE 3 END"


def _intersection(t: str) -> str:
    """Size of the intersection of the ``t`` sets of x and y; the lists are compared only when neither the set
    hashes with the sizes (identical: DuckDB's list hash ignores leading zeros, the sizes do not) nor the
    signatures (disjoint) decide."""
    return (f"CASE WHEN x.{t}_h = y.{t}_h AND x.{t}_n = y.{t}_n THEN x.{t}_n WHEN (x.{t}_m & y.{t}_m) = 0 THEN 0 "
            f"ELSE len(list_intersect(x.{t}, y.{t})) END")


_SQL = {
    "event_date": """CASE WHEN x.ev_prec IS NULL OR y.ev_prec IS NULL THEN NULL
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
    "suspects": _jaccard_level("ni_sus", "x.sus_n", "y.sus_n"),
    "pts": _jaccard_level("ni_pts", "x.pts_n", "y.pts_n"),
    # sender and number as hashes (NULL when the text is)
    "sender": """CASE WHEN x.sndr_h IS NULL OR y.sndr_h IS NULL THEN NULL
        WHEN x.sndr_h = y.sndr_h AND x.mfr_h = y.mfr_h THEN 2
        WHEN x.sndr_h = y.sndr_h THEN 1 ELSE 0 END""",
    "received": """CASE WHEN x.rcv IS NULL OR y.rcv IS NULL THEN NULL WHEN abs(x.rcv - y.rcv) <= 30 THEN 2
        WHEN abs(x.rcv - y.rcv) <= 365 THEN 1 ELSE 0 END""",
}

#: per-record term frequency of each TF column's value, and the condition under which a pair agrees on it
_TF_SQL = {
    "tf_ev": ("ltf_ev", "x.ev_prec = 3 AND y.ev_day = x.ev_day"),
    "tf_country": ("ltf_country", "y.country = x.country"),
    "tf_sus": ("ltf_sus", "y.sus_h = x.sus_h"),
    "tf_pts": ("ltf_pts", "y.pts_h = x.pts_h"),
}


#: pairs compared per statement: the two joins with the records must fit the memory limit beside curate's tables
#: (all 90 M pairs of the full history in one statement ran out of memory at 4 GB)
CHUNK_PAIRS = 5_000_000


def _bounds(con, pairs: str, parts: int) -> list[int]:
    """Split points of ``a`` giving ``parts`` ranges of about equal pair counts (first and last open-ended)."""
    if parts == 1:
        return []
    qs = ", ".join(f"{i / parts!r}" for i in range(1, parts))
    return list(con.execute(f"SELECT quantile_disc(a, [{qs}]) FROM {pairs}").fetchone()[0])


def compare(con, pairs: str = "lk_pairs", out: str = "lk_cmp") -> None:
    """Create ``out(a, b, g_<comparison>..., tf_ev, tf_country, tf_sus, tf_pts)`` from the pairs table ``pairs``,
    in parts of about :data:`CHUNK_PAIRS` pairs.

    A part is a range of ``a`` (``lk_rec`` is stored in ``report_id`` order): DuckDB passes the range of the
    part's keys into the scan of the records, which then reads only the row groups in it. With parts by a hash
    of ``a`` every part read all records twice, from the spill folder once they outgrew the memory limit (at
    0.1 of the full history with a 700 MB limit: 18.0 s by hash, 12.5 s by range, same comparisons).
    """
    gammas = ",\n               ".join(f"({sql})::TINYINT AS g_{name}" for name, sql in _SQL.items())
    tfs = ", ".join(f"CASE WHEN {cond} THEN x.{col} END AS {name}" for name, (col, cond) in _TF_SQL.items())
    n = con.execute(f"SELECT count(*) FROM {pairs}").fetchall()[0][0]
    parts = max(1, -(-n // CHUNK_PAIRS))
    cuts = _bounds(con, pairs, parts)
    for part in range(parts):
        lo = f"p.a >= {cuts[part - 1]}" if part > 0 else "true"
        hi = f"p.a < {cuts[part]}" if part < parts - 1 else "true"
        where = f"WHERE {lo} AND {hi}" if parts > 1 else ""
        # one pass: pairs joined to both records; term frequencies travel with the records
        select = f"""
            SELECT * EXCLUDE (ni_sus, ni_pts) FROM (
                SELECT p.a, p.b, {_intersection("sus")} AS ni_sus, {_intersection("pts")} AS ni_pts,
                       {gammas},
                       {tfs}
                FROM {pairs} p JOIN lk_rec x ON x.report_id = p.a JOIN lk_rec y ON y.report_id = p.b {where})"""
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {select}" if part == 0 else f"INSERT INTO {out} {select}")
