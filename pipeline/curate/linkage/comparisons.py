"""Comparison vectors of the candidate pairs (temp table ``lk_cmp``).

Each comparison maps a pair to an agreement level (0 = disagree, higher = closer; ``timing``'s levels are the
combinations of two fields' levels, :data:`TIMING`) or NULL when either report lacks the field: a missing value is neither agreement nor disagreement, so it contributes weight 0 and is left out of
the EM sums. ``LEVELS`` names the levels in order; the level SQL below must produce exactly these values.
Term-frequency inputs (``tf_*``: log2 share of reports holding the agreeing value) are carried for the exact
agreement levels in ``TF``.
"""

from __future__ import annotations

from pipeline import duck

#: the event date's and the receipt date's own levels (None: the field is missing in either report)
EVENT_LEVELS = ("disagree", "same year (one known to the year only)", "same month (one known to the month)",
                "within 7 days", "same day")
RECEIVED_LEVELS = ("> 365 days apart", "within 365 days", "within 30 days")
#: (event level, received level) of each ``timing`` level, in level order; (None, None) is a missing comparison
TIMING = tuple((e, r) for e in (None, *range(len(EVENT_LEVELS))) for r in (None, *range(len(RECEIVED_LEVELS)))
               if (e, r) != (None, None))

LEVELS: dict[str, tuple[str, ...]] = {
    # one comparison, not two: reports are received weeks after their event, so two unrelated reports received
    # within 30 days mostly share the event period too; weighed as independent fields, that agreement was counted
    # twice (3.3-4 bits among the whole history's random pairs), and chance pairs of a common drug were linked
    "timing": tuple(f"event {'unknown' if e is None else EVENT_LEVELS[e]}, "
                    f"received {'unknown' if r is None else RECEIVED_LEVELS[r]}" for e, r in TIMING),
    "age": ("differ > 5 y", "within 5 y", "within 1.5 y", "same (0.05 y)"),
    "sex": ("differ", "same"),
    "country": ("differ", "same"),
    "weight": ("differ > 5 kg", "within 5 kg", "within 1 kg"),
    "suspects": ("none shared", "Jaccard < 0.5", "Jaccard >= 0.5", "identical"),
    "pts": ("none shared", "Jaccard < 0.5", "Jaccard >= 0.5", "identical"),
    "sender": ("other sender", "same sender, other number", "same manufacturer number"),
}

#: comparison -> (tf column, the levels of exact agreement it adjusts, the levels at which the field is known).
#: tf = log2 share of reports holding the agreeing value (for the sets: the whole set, so two reports naming only
#: one common drug weigh less than two naming the same six drugs). The adjustment replaces the field's own ``u`` of
#: exact agreement (its share among the pairs where the field is known) by tf.
TF: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]] = {
    "timing": ("tf_ev", tuple(i for i, (e, _) in enumerate(TIMING) if e == 4),
               tuple(i for i, (e, _) in enumerate(TIMING) if e is not None)),
    "country": ("tf_country", (1,), (0, 1)), "suspects": ("tf_sus", (3,), (0, 1, 2, 3)),
    "pts": ("tf_pts", (3,), (0, 1, 2, 3)),
}


def m_start(name: str) -> list[float]:
    """EM's start for ``m`` of a comparison (unnormalised): each closer level of a field 8 times likelier among
    matches; for ``timing`` the product of its two fields' factors (an unknown field counts as its lowest level)."""
    if name == "timing":
        return [8.0 ** ((e or 0) + (r or 0)) for e, r in TIMING]
    return [8.0 ** k for k in range(len(LEVELS[name]))]


def _jaccard_level(inter: str, x: str, y: str) -> str:
    jac = f"{inter} / ({x} + {y} - {inter})"
    return f"CASE WHEN {inter} = 0 THEN 0 WHEN {jac} < 0.5 THEN 1 WHEN {jac} < 1 THEN 2 ELSE 3 END"


def _intersection(t: str) -> str:
    """Size of the intersection of the ``t`` sets of x and y; the lists are compared only when neither the set
    hashes with the sizes (identical: DuckDB's list hash ignores leading zeros, the sizes do not) nor the
    signatures (disjoint) decide. The members of x found in y are counted with a lambda: for sets of a few
    codes that is about 6x faster than ``list_intersect`` (which builds a hash set per pair)."""
    return (f"CASE WHEN x.{t}_h = y.{t}_h AND x.{t}_n = y.{t}_n THEN x.{t}_n WHEN (x.{t}_m & y.{t}_m) = 0 THEN 0 "
            f"ELSE len(list_filter(x.{t}, lambda e: list_contains(y.{t}, e))) END")


_EVENT_SQL = """CASE WHEN x.ev_prec IS NULL OR y.ev_prec IS NULL THEN NULL
        WHEN x.ev_prec = 3 AND y.ev_prec = 3 THEN
             CASE WHEN x.ev_day = y.ev_day THEN 4 WHEN abs(x.ev_day - y.ev_day) <= 7 THEN 3 ELSE 0 END
        WHEN least(x.ev_prec, y.ev_prec) = 2 THEN CASE WHEN x.ev_ym = y.ev_ym THEN 2 ELSE 0 END
        ELSE CASE WHEN x.ev_y = y.ev_y THEN 1 ELSE 0 END END"""
_RECEIVED_SQL = """CASE WHEN x.rcv IS NULL OR y.rcv IS NULL THEN NULL WHEN abs(x.rcv - y.rcv) <= 30 THEN 2
        WHEN abs(x.rcv - y.rcv) <= 365 THEN 1 ELSE 0 END"""

_SQL = {
    # level index in TIMING: 4 * (event level + 1 or 0 when unknown) + (received level + 1 or 0) - 1
    "timing": f"""CASE WHEN ({_EVENT_SQL}) IS NULL AND ({_RECEIVED_SQL}) IS NULL THEN NULL
        ELSE 4 * coalesce(({_EVENT_SQL}) + 1, 0) + coalesce(({_RECEIVED_SQL}) + 1, 0) - 1 END""",
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
}

#: per-record term frequency of each TF column's value, and the condition under which a pair agrees on it
_TF_SQL = {
    "tf_ev": ("ltf_ev", "x.ev_prec = 3 AND y.ev_day = x.ev_day"),
    "tf_country": ("ltf_country", "y.country = x.country"),
    "tf_sus": ("ltf_sus", "y.sus_h = x.sus_h"),
    "tf_pts": ("ltf_pts", "y.pts_h = x.pts_h"),
}


#: candidate pairs up to this many are compared in one statement (the training, random and rule pairs)
ONE_STATEMENT_PAIRS = 2_000_000
#: memory one record of a tile's two record ranges may take (bytes, against DuckDB's ``memory_limit``): sets the
#: number of ranges, so that a tile's joins build their hash tables within the limit instead of spilling
RANGE_BYTES_PER_RECORD = 1000


def _record_cuts(con, ranges: int) -> list[int]:
    """Split points of ``lk_rec.report_id`` giving ``ranges`` ranges of about equal record counts."""
    if ranges <= 1:
        return []
    qs = ", ".join(f"{i / ranges!r}" for i in range(1, ranges))
    return sorted(set(con.execute(f"SELECT quantile_disc(report_id, [{qs}]) FROM lk_rec").fetchone()[0]))


def _between(col: str, lo: int | None, hi: int | None) -> str:
    return " AND ".join([f"{col} >= {lo}" if lo is not None else "true", f"{col} < {hi}" if hi is not None else "true"])


def compare(con, pairs: str = "lk_pairs", out: str = "lk_cmp") -> None:
    """Create ``out(a, b, g_<comparison>..., tf_ev, tf_country, tf_sus, tf_pts)`` from the pairs table ``pairs``.

    Many pairs are compared in tiles: the records are cut into ranges of ``report_id`` (``lk_rec`` is stored in
    that order), and tile (i, j), i <= j, holds the pairs whose ``a`` lies in range i and ``b`` in range j. Each
    tile's statement joins its pairs with two record ranges, whose hash tables fit DuckDB's memory limit
    (:data:`RANGE_BYTES_PER_RECORD`). Parts by ranges of ``a`` alone had to join every part's pairs with all later
    records, and DuckDB built that join's hash table on the part's wide pair rows, spilling them: at 0.1 of the
    full history with a 400 MB limit the comparisons took 13.4 s in 18 parts and 7.6-9.0 s in 6-10 tiles, and the
    whole history's 90 M pairs 136.6 s in parts and 91.4 s in 15 tiles, same rows.
    """
    gammas = ",\n               ".join(f"({sql})::TINYINT AS g_{name}" for name, sql in _SQL.items())
    tfs = ", ".join(f"CASE WHEN {cond} THEN x.{col} END AS {name}" for name, (col, cond) in _TF_SQL.items())
    n_pairs = con.execute(f"SELECT count(*) FROM {pairs}").fetchall()[0][0]
    ranges, records = 1, "lk_rec"
    if n_pairs > ONE_STATEMENT_PAIRS:
        n_rec = con.execute("SELECT count(*) FROM lk_rec").fetchall()[0][0]
        ranges = max(1, -(-n_rec * RANGE_BYTES_PER_RECORD // duck.memory_limit_bytes(con)))
    else:
        # few pairs (the random, rule and training pairs): their own records first, so the joins read those
        # instead of every record twice (at 0.1 of the full history under a 400 MB limit: 5.1 -> 1.9 s for the
        # random pairs)
        records = "lk_rec_of_pairs"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {records} AS SELECT * FROM lk_rec
                        SEMI JOIN (SELECT a AS report_id FROM {pairs} UNION SELECT b FROM {pairs}) USING (report_id)""")
    bounds = [None, *_record_cuts(con, ranges), None]
    first = True
    for i in range(len(bounds) - 1):
        for j in range(i, len(bounds) - 1):
            (alo, ahi), (blo, bhi) = bounds[i:i + 2], bounds[j:j + 2]
            # one pass: pairs joined to both records; term frequencies travel with the records
            select = f"""
                SELECT * EXCLUDE (ni_sus, ni_pts) FROM (
                    SELECT p.a, p.b, {_intersection("sus")} AS ni_sus, {_intersection("pts")} AS ni_pts,
                           {gammas},
                           {tfs}
                    FROM (SELECT a, b FROM {pairs} WHERE {_between("a", alo, ahi)} AND {_between("b", blo, bhi)}) p
                    JOIN (SELECT * FROM {records} WHERE {_between("report_id", alo, ahi)}) x ON x.report_id = p.a
                    JOIN (SELECT * FROM {records} WHERE {_between("report_id", blo, bhi)}) y ON y.report_id = p.b)"""
            con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {select}" if first else f"INSERT INTO {out} {select}")
            first = False
    if records != "lk_rec":
        con.execute(f"DROP TABLE {records}")
