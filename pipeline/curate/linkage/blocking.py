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
                         ("event_date", "sex", "age")),
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


def _chosen(i: int, n_levels: int, cap: int, lvl: int = 0) -> str:
    """The key a report takes: the first level whose block holds 2..cap reports, every coarser one being above cap."""
    here = f"CASE WHEN n{i}_{lvl}.n BETWEEN 2 AND {cap} THEN b.k{i}_{lvl} END"
    if lvl + 1 == n_levels:
        return here
    return f"CASE WHEN n{i}_{lvl}.n > {cap} THEN ({_chosen(i, n_levels, cap, lvl + 1)}) ELSE ({here}) END"


def candidate_pairs(con, max_block_size: int) -> dict:
    """Create ``lk_pairs``; return per-key pair counts, blocks split by a refinement and reports left in a block above the cap at every
    level (no pairs from that key).

    Each pair is produced once, by the first key that pairs it (a later key skips pairs an earlier one made), so
    no pass over all pairs removes duplicates: every step is an integer hash join that streams into ``lk_pairs``.
    """
    cap = int(max_block_size)
    summary: dict = {"pairs_by_block": {}, "refined_values": {}, "oversized_reports": {}}
    names = list(BLOCKS)
    levels = [_levels(*BLOCKS[name]) for name in names]
    raw = ", ".join(f"{sql} AS k{i}_{lvl}" for i, lv in enumerate(levels) for lvl, sql in enumerate(lv))
    con.execute(f"CREATE OR REPLACE TEMP TABLE lk_bk0 AS SELECT report_id, {raw} FROM lk_rec")
    sizes = [(i, lvl) for i, lv in enumerate(levels) for lvl in range(len(lv))]
    for i, lvl in sizes:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE lk_bn{i}_{lvl} AS
                        SELECT k{i}_{lvl} AS k, count(*) AS n FROM lk_bk0 WHERE k{i}_{lvl} IS NOT NULL GROUP BY 1""")
    keep = ", ".join(f"{_chosen(i, len(lv), cap)} AS k{i}" for i, lv in enumerate(levels))
    joins = " ".join(f"LEFT JOIN lk_bn{i}_{lvl} n{i}_{lvl} ON n{i}_{lvl}.k = b.k{i}_{lvl}" for i, lvl in sizes)
    # reports in a block above the cap at every level they reach: lost to that key
    lost = ", ".join(
        "coalesce(" + " OR ".join(
            " AND ".join([f"n{i}_{j}.n > {cap}" for j in range(lvl + 1)] +
                         ([f"n{i}_{lvl + 1}.n IS NULL"] if lvl + 1 < len(lv) else []))
            for lvl in range(len(lv))) + f", false) AS lost{i}"
        for i, lv in enumerate(levels))
    con.execute(f"CREATE OR REPLACE TEMP TABLE lk_bk AS SELECT b.report_id, {keep}, {lost} FROM lk_bk0 b {joins}")
    lost_n = con.execute(f"SELECT {', '.join(f'count(*) FILTER (lost{i})' for i in range(len(names)))} "
                         "FROM lk_bk").fetchall()[0]
    for i, name in enumerate(names):
        refined = sum(con.execute(f"SELECT count(*) FROM lk_bn{i}_{lvl} WHERE n > {cap}").fetchall()[0][0]
                      for lvl in range(len(levels[i]) - 1))
        pairs = con.execute(f"SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM "
                            f"(SELECT count(*) AS n FROM lk_bk WHERE k{i} IS NOT NULL GROUP BY k{i})").fetchall()[0][0]
        summary["pairs_by_block"][name], summary["refined_values"][name] = int(pairs), int(refined)
        summary["oversized_reports"][name] = int(lost_n[i])
    con.execute("DROP TABLE lk_bk0")
    for i, lvl in sizes:
        con.execute(f"DROP TABLE lk_bn{i}_{lvl}")
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
