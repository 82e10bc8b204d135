"""Candidate pairs (temp table ``lk_pairs(a, b)``, ``a < b``): reports sharing the value of at least one blocking
key. Each key is a 64-bit hash of a few fields; a key with a NULL field produces nothing, and a value shared by more
than ``max_block_size`` reports is skipped (its pairs are left to the other keys), so the pair count grows with the
number of reports, not with its square.

Keys are chosen so that each realistic kind of disagreement between two reports of one patient (a missing age, sex
or full date, a date off by days, a PT added or dropped, another company's product name) leaves at least one key
intact.
"""

from __future__ import annotations

#: name -> fields; all must be non-NULL for a report to enter the block
#: (sex + year + first suspect and age + sex + first suspect were dropped: a third of the pairs at 1 M reports, the
#: same groups on the evaluation)
BLOCKS: dict[str, tuple[str, ...]] = {
    "suspect_country_year": ("sus1", "country", "ev_y"),
    "mfr_num": ("mfr_num",),
    "suspects_pts": ("sus_h", "pts_h"),
    "suspects_year": ("sus_h", "ev_y"),
    "suspects_age": ("sus_h", "CAST(round(age) AS INTEGER)"),
    "suspects_sex_country": ("sus_h", "sex", "country"),
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


def candidate_pairs(con, max_block_size: int) -> dict:
    """Create ``lk_pairs``; return per-key pair counts and skipped oversized values.

    Each pair is produced once, by the first key that pairs it (a later key skips pairs an earlier one made), so
    no pass over all pairs removes duplicates: every step is an integer hash join that streams into ``lk_pairs``.
    """
    summary: dict = {"pairs_by_block": {}, "oversized_values": {}}
    names = list(BLOCKS)
    raw = ", ".join(f"CASE WHEN {' AND '.join(f'({f}) IS NOT NULL' for f in fields)} "
                    f"THEN hash({', '.join(fields)}) END AS k{i}" for i, fields in enumerate(BLOCKS.values()))
    con.execute(f"CREATE OR REPLACE TEMP TABLE lk_bk0 AS SELECT report_id, {raw} FROM lk_rec")
    for i, name in enumerate(names):
        con.execute(f"""CREATE OR REPLACE TEMP TABLE lk_bn{i} AS
                        SELECT k{i} AS k, count(*) AS n FROM lk_bk0 WHERE k{i} IS NOT NULL GROUP BY 1""")
        over, pairs = con.execute(f"""
            SELECT count(*) FILTER (n > {int(max_block_size)}),
                   coalesce(sum(n * (n - 1) // 2) FILTER (n <= {int(max_block_size)}), 0) FROM lk_bn{i}""").fetchall()[0]
        summary["oversized_values"][name], summary["pairs_by_block"][name] = int(over), int(pairs)
    # key values outside 2..max_block_size become NULL: they pair nobody
    keep = ", ".join(f"CASE WHEN n{i}.n BETWEEN 2 AND {int(max_block_size)} THEN b.k{i} END AS k{i}"
                     for i in range(len(names)))
    joins = " ".join(f"LEFT JOIN lk_bn{i} n{i} ON n{i}.k = b.k{i}" for i in range(len(names)))
    con.execute(f"CREATE OR REPLACE TEMP TABLE lk_bk AS SELECT b.report_id, {keep} FROM lk_bk0 b {joins}")
    con.execute("DROP TABLE lk_bk0")
    for i in range(len(names)):
        con.execute(f"DROP TABLE lk_bn{i}")
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
