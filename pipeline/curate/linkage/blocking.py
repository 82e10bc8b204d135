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
BLOCKS: dict[str, tuple[str, ...]] = {
    "sex_year_suspect": ("sex", "ev_y", "sus1"),
    "suspect_country_year": ("sus1", "country", "ev_y"),
    "mfr_num": ("mfr_num",),
    "suspects_pts": ("sus_h", "pts_h"),
    "age_sex_suspect": ("CAST(round(age) AS INTEGER)", "sex", "sus1"),
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
    """Create ``lk_pairs``; return per-key pair counts and skipped oversized values."""
    summary: dict = {"pairs_by_block": {}, "oversized_values": {}}
    parts = []
    for name, fields in BLOCKS.items():
        key = f"hash({', '.join(fields)})"
        cond = " AND ".join(f"({f}) IS NOT NULL" for f in fields)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE lk_b_{name} AS
            WITH k AS (SELECT report_id, {key} AS k FROM lk_rec WHERE {cond})
            SELECT report_id, k FROM k
            WHERE k IN (SELECT k FROM k GROUP BY k HAVING count(*) BETWEEN 2 AND {int(max_block_size)})""")
        summary["oversized_values"][name] = con.execute(f"""
            SELECT count(*) FROM (SELECT 1 FROM lk_rec WHERE {cond} GROUP BY {key}
                                  HAVING count(*) > {int(max_block_size)})""").fetchall()[0][0]
        summary["pairs_by_block"][name] = int(con.execute(f"""
            SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM (SELECT count(*) AS n FROM lk_b_{name} GROUP BY k)
            """).fetchall()[0][0])
        parts.append(f"SELECT x.report_id AS a, y.report_id AS b FROM lk_b_{name} x JOIN lk_b_{name} y "
                     f"ON x.k = y.k AND x.report_id < y.report_id")
    con.execute("CREATE OR REPLACE TEMP TABLE lk_pairs AS " + " UNION ".join(parts))
    for name in BLOCKS:
        con.execute(f"DROP TABLE lk_b_{name}")
    summary["pairs"] = con.execute("SELECT count(*) FROM lk_pairs").fetchall()[0][0]
    return summary
