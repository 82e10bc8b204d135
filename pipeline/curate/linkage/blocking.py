"""Candidate pairs (temp table ``lk_pairs(a, b)``, ``a < b``): reports sharing the value of at least one blocking
key. Each key is a 64-bit hash of a few fields; a key with a NULL field produces nothing, and a value shared by more
than ``max_block_size`` reports is skipped (its pairs are left to the other keys), so the pair count grows with the
number of reports, not with its square.

Keys are chosen so that each realistic kind of disagreement between two reports of one patient (a missing age, sex
or full date, a date off by days, a PT added or dropped, another company's product name) leaves at least one key
intact.
"""

from __future__ import annotations

#: name -> (fields, refinements). A report enters a key's block when all its fields are non-NULL. A block larger
#: than ``max_block_size`` is split by the first refinement field (then the next): a common drug's year becomes its
#: months, then its days, instead of producing no pairs at all. Both reports of a pair sit in the same coarse block,
#: so they see the same block sizes and take the same refinement. (Sex + year + first suspect and age + sex + first
#: suspect were dropped: a third of the pairs at 1 M reports, the same groups on the evaluation.)
BLOCKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "suspect_country_year": (("sus1", "country", "ev_y"), ("ev_ym", "ev_day")),
    "mfr_num": (("mfr_num",), ()),
    "suspects_pts": (("sus_h", "pts_h"), ("ev_y", "ev_ym")),
    "suspects_year": (("sus_h", "ev_y"), ("ev_ym", "ev_day")),
    "suspects_age": (("sus_h", "CAST(round(age) AS INTEGER)"), ("sex", "ev_y")),
    "suspects_sex_country": (("sus_h", "sex", "country"), ("year(rcv)", "month(rcv)")),
}


#: training blocks for EM (as splink does): each estimates m for every comparison except those it blocks on
TRAINING: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "same_suspects_and_pts": (("sus_h", "pts_h"), ("suspects", "pts")),
    "same_day_sex_age": (("CASE WHEN ev_prec = 3 THEN ev END", "sex", "CAST(floor(age / 10) AS INTEGER)"),
                         ("timing", "sex", "age")),
}


def block_pairs(con, fields: tuple[str, ...], max_block_size: int, out: str, sample_mod: int = 1) -> int:
    """Temp table ``out(a, b)``: pairs sharing all ``fields`` (non-NULL), blocks of <= ``max_block_size``; with
    ``sample_mod`` > 1 only the blocks whose key hash is divisible by it (whole blocks, so matches stay together)."""
    key = f"hash({', '.join(fields)})"
    cond = " AND ".join(f"({f}) IS NOT NULL" for f in fields)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {out} AS
        WITH k AS (SELECT report_id, {key} AS k FROM lk_rec WHERE {cond} AND {key} % {int(sample_mod)} = 0),
             ok AS (SELECT k FROM k GROUP BY k HAVING count(*) BETWEEN 2 AND {int(max_block_size)}),
             kk AS (SELECT * FROM k SEMI JOIN ok USING (k))
        SELECT x.report_id AS a, y.report_id AS b FROM kk x JOIN kk y ON x.k = y.k AND x.report_id < y.report_id""")
    return con.execute(f"SELECT count(*) FROM {out}").fetchall()[0][0]


def random_pairs(con, sample: int, out: str) -> int:
    """Temp table ``out(a, b)``: all pairs among ``sample`` reports picked by a fixed hash (same every run)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE lk_sample AS
        SELECT report_id FROM lk_rec ORDER BY hash(report_id * 2654435761), report_id LIMIT {int(sample)}""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {out} AS
        SELECT x.report_id AS a, y.report_id AS b FROM lk_sample x JOIN lk_sample y ON x.report_id < y.report_id""")
    con.execute("DROP TABLE lk_sample")
    return con.execute(f"SELECT count(*) FROM {out}").fetchall()[0][0]


def _levels(fields: tuple[str, ...], refine: tuple[str, ...]) -> list[str]:
    """SQL of the key at each refinement level: a hash of the level and its fields, NULL when a field is."""
    out = []
    for lvl in range(len(refine) + 1):
        cols = fields + refine[:lvl]
        out.append(f"CASE WHEN {' AND '.join(f'({f}) IS NOT NULL' for f in cols)} THEN hash({lvl}, {', '.join(cols)}) END")
    return out


def _chosen(n_levels: int, cap: int, lvl: int = 0) -> str:
    """The key a report takes: the first level whose block holds 2..cap reports, every coarser one being above cap."""
    here = f"CASE WHEN n{lvl}.n BETWEEN 2 AND {cap} THEN b.k{lvl} END"
    if lvl + 1 == n_levels:
        return here
    return f"CASE WHEN n{lvl}.n > {cap} THEN ({_chosen(n_levels, cap, lvl + 1)}) ELSE ({here}) END"


def _lost(n_levels: int, cap: int) -> str:
    """True for a report above the cap at every level it reaches (its finest, or one whose refinement it lacks)."""
    return "coalesce(" + " OR ".join(
        " AND ".join([f"n{j}.n > {cap}" for j in range(lvl + 1)] +
                     ([f"n{lvl + 1}.n IS NULL"] if lvl + 1 < n_levels else []))
        for lvl in range(n_levels)) + ", false)"


def _key_table(con, i: int, fields: tuple[str, ...], refine: tuple[str, ...], cap: int) -> tuple[int, int]:
    """Temp table ``lk_key{i}(report_id, k)``: the key value each report takes (only reports in a block of
    2..cap); returns (coarser blocks split, reports lost to this key).

    One key at a time, so a statement joins a report with its own key's block sizes only: with every key's levels
    in one statement, 16 M reports needed more than a 4 GB ``memory_limit`` could hold.
    """
    levels = _levels(fields, refine)
    con.execute(f"CREATE OR REPLACE TEMP TABLE lk_kl AS SELECT report_id, "
                f"{', '.join(f'{sql} AS k{lvl}' for lvl, sql in enumerate(levels))} FROM lk_rec")
    for lvl in range(len(levels)):
        con.execute(f"CREATE OR REPLACE TEMP TABLE lk_kn{lvl} AS "
                    f"SELECT k{lvl} AS k, count(*) AS n FROM lk_kl WHERE k{lvl} IS NOT NULL GROUP BY 1")
    joins = " ".join(f"LEFT JOIN lk_kn{lvl} n{lvl} ON n{lvl}.k = b.k{lvl}" for lvl in range(len(levels)))
    con.execute(f"""CREATE OR REPLACE TEMP TABLE lk_kc AS
                    SELECT b.report_id, {_chosen(len(levels), cap)} AS k, {_lost(len(levels), cap)} AS lost
                    FROM lk_kl b {joins}""")
    refined = sum(con.execute(f"SELECT count(*) FROM lk_kn{lvl} WHERE n > {cap}").fetchall()[0][0]
                  for lvl in range(len(levels) - 1))
    lost = con.execute("SELECT count(*) FILTER (lost) FROM lk_kc").fetchall()[0][0]
    con.execute(f"CREATE OR REPLACE TEMP TABLE lk_key{i} AS SELECT report_id, k FROM lk_kc WHERE k IS NOT NULL")
    for t in ["lk_kl", "lk_kc"] + [f"lk_kn{lvl}" for lvl in range(len(levels))]:
        con.execute(f"DROP TABLE {t}")
    return int(refined), int(lost)


def candidate_pairs(con, max_block_size: int) -> dict:
    """Create ``lk_pairs``; return per-key pair counts, blocks split by a refinement and reports left in a block
    above the cap at every level (no pairs from that key).

    Each pair is produced once, by the first key that pairs it (a later key skips pairs an earlier one made), so
    no pass over all pairs removes duplicates: every step is an integer hash join that streams into ``lk_pairs``.
    """
    cap = int(max_block_size)
    summary: dict = {"pairs_by_block": {}, "refined_values": {}, "oversized_reports": {}}
    names = list(BLOCKS)
    con.execute("CREATE OR REPLACE TEMP TABLE lk_bk AS SELECT report_id FROM lk_rec")
    for i, name in enumerate(names):
        refined, lost = _key_table(con, i, *BLOCKS[name], cap)
        pairs = con.execute(f"SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM "
                            f"(SELECT count(*) AS n FROM lk_key{i} GROUP BY k)").fetchall()[0][0]
        summary["pairs_by_block"][name], summary["refined_values"][name] = int(pairs), refined
        summary["oversized_reports"][name] = lost
        # one join at a time: every report with its key values (NULL = no block of 2..cap)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE lk_bk AS
                        SELECT b.*, c.k AS k{i} FROM lk_bk b LEFT JOIN lk_key{i} c USING (report_id)""")
        con.execute(f"DROP TABLE lk_key{i}")
    con.execute("CREATE OR REPLACE TEMP TABLE lk_pairs (a BIGINT, b BIGINT)")
    for i in range(len(names)):
        earlier = " OR ".join(f"coalesce(x.k{j} = y.k{j}, false)" for j in range(i)) or "false"
        con.execute(f"""
            INSERT INTO lk_pairs
            SELECT x.report_id, y.report_id FROM lk_bk x JOIN lk_bk y ON x.k{i} = y.k{i} AND x.report_id < y.report_id
            WHERE NOT ({earlier})""")
    con.execute("DROP TABLE lk_bk")
    summary["pairs"] = con.execute("SELECT count(*) FROM lk_pairs").fetchall()[0][0]
    return summary
