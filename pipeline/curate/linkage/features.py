"""One row per linkable report (temp table ``lk_rec``): the fields compared, blank values as NULL.

A report takes part when it has at least one suspect ingredient and one PT (the others never reach the analysis).
"""

from __future__ import annotations

SUSPECT_ROLES = ("PS", "SS", "I")
_UNKNOWN_COUNTRY = ("", "COUNTRY NOT SPECIFIED")


def build_records(con) -> int:
    """Create ``lk_rec`` from ``rep``, ``report_ingredients`` and ``report_pts``; return its row count.

    Columns: ``report_id``; ``ev`` (event date text), ``ev_prec`` (1 year, 2 month, 3 day, NULL blank),
    ``ev_y`` (year text), ``ev_ym`` (year-month text when known to the month), ``ev_day`` (DATE at day precision);
    ``age``; ``sex`` (M/F else NULL); ``country``; ``wt``; ``mfr_num``; ``sndr``; ``rcv`` (initial receipt date);
    ``sus``/``pts`` (sorted codes of the distinct suspect ingredients / PT keys; see below), ``sus1``
    (the alphabetically first suspect, as its rank by name: independent of which company called its own product
    primary),
    ``sus_h``/``pts_h`` (set hashes).

    Ingredient and PT codes are integers (frequency ranks from 1), compared faster than text. For the comparisons, which
    read every candidate pair: ``sus_n``/``pts_n`` (set sizes), ``sus_m``/``pts_m`` (64-bit set signatures: bit
    ``code % 64`` per member, so disjoint signatures prove an empty intersection without comparing the lists),
    ``sndr_h``/``mfr_h`` (hashes of the sender and manufacturer number, NULL when blank: 8-byte integers instead of long text) and
    the term frequencies ``ltf_country``, ``ltf_ev`` (day-precision dates only), ``ltf_sus``, ``ltf_pts``: log2 of the
    share of linkable reports holding the report's value.
    """
    roles = ", ".join(f"'{r}'" for r in SUSPECT_ROLES)
    unknown = ", ".join(f"'{c}'" for c in _UNKNOWN_COUNTRY)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE lk_si AS
        SELECT DISTINCT report_id, ingredient AS v FROM report_ingredients
        WHERE role_cod IN ({roles}) AND ingredient IS NOT NULL AND ingredient <> ''""")
    # curated report_pts has one row per (report_id, pt_key) by construction (a critical expectation): no DISTINCT
    con.execute("""
        CREATE OR REPLACE TEMP TABLE lk_pi AS
        SELECT p.report_id, p.pt_key AS v FROM report_pts p SEMI JOIN lk_si USING (report_id)""")
    con.execute("DELETE FROM lk_si WHERE report_id NOT IN (SELECT report_id FROM lk_pi)")
    n = con.execute("SELECT count(DISTINCT report_id) FROM lk_si").fetchall()[0][0]
    for t in ("sus", "pts"):
        src = "lk_si" if t == "sus" else "lk_pi"
        # codes from 1: DuckDB's list hash skips leading zeros (hash([0, 5]) = hash([5])), so a code 0 made the
        # set hashes of {rarest, X} and {X} equal (one blocking key, one term frequency for two sets)
        # alpha: the value's rank by name, so the first suspect by name is a min() over integers, not over text
        alpha = ", row_number() OVER (ORDER BY v)::INTEGER AS alpha" if t == "sus" else ""
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE lk_code_{t} AS
            SELECT v, row_number() OVER (ORDER BY count(*), v)::INTEGER AS code{alpha}
            FROM {src} GROUP BY v""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE lk_rec AS
        WITH s AS (SELECT report_id, list_sort(list(c.code)) AS sus, min(c.alpha) AS sus1,
                          count(*)::INTEGER AS sus_n, bit_or((1::UBIGINT << (c.code % 64))::UBIGINT) AS sus_m
                   FROM lk_si i JOIN lk_code_sus c USING (v) GROUP BY report_id),
             p AS (SELECT report_id, list_sort(list(c.code)) AS pts,
                          count(*)::INTEGER AS pts_n, bit_or((1::UBIGINT << (c.code % 64))::UBIGINT) AS pts_m
                   FROM lk_pi i JOIN lk_code_pts c USING (v) GROUP BY report_id),
             r AS (SELECT report_id, trim(event_dt) AS ev0, age_years, sex, upper(trim(reporter_country)) AS c0,
                          wt_kg, nullif(mfr_num, '') AS mfr_num, nullif(mfr_sndr, '') AS sndr,
                          coalesce(init_fda_dt, fda_dt) AS rcv
                   FROM rep)
        SELECT r.report_id,
               CASE WHEN regexp_full_match(ev0, '[12][0-9]{{7}}') AND TRY_STRPTIME(ev0, '%Y%m%d') IS NOT NULL THEN 3
                    WHEN regexp_full_match(ev0, '[12][0-9]{{3}}(0[1-9]|1[0-2])') THEN 2
                    WHEN regexp_full_match(ev0, '[12][0-9]{{3}}') THEN 1 END AS ev_prec,
               CASE WHEN ev_prec IS NOT NULL THEN ev0 END AS ev,
               CASE WHEN ev_prec IS NOT NULL THEN left(ev0, 4) END AS ev_y,
               CASE WHEN ev_prec >= 2 THEN left(ev0, 6) END AS ev_ym,
               CASE WHEN ev_prec = 3 THEN TRY_STRPTIME(ev0, '%Y%m%d')::DATE END AS ev_day,
               r.age_years AS age,
               CASE WHEN r.sex IN ('M', 'F') THEN r.sex END AS sex,
               CASE WHEN r.c0 IS NOT NULL AND r.c0 NOT IN ({unknown}) THEN r.c0 END AS country,
               r.wt_kg AS wt, r.mfr_num, r.sndr, r.rcv,
               s.sus, p.pts, s.sus1, hash(s.sus) AS sus_h, hash(p.pts) AS pts_h,
               s.sus_n, p.pts_n, s.sus_m, p.pts_m, CASE WHEN r.sndr IS NOT NULL THEN hash(r.sndr) END AS sndr_h,
               CASE WHEN r.mfr_num IS NOT NULL THEN hash(r.mfr_num) END AS mfr_h
        FROM r JOIN s USING (report_id) JOIN p USING (report_id)""")
    for t in ("lk_si", "lk_pi", "lk_code_sus", "lk_code_pts"):
        con.execute(f"DROP TABLE {t}")
    # term frequencies: one small table per column, joined onto the records once (pairs then read them for free);
    # stored in report_id order, so a range of report ids is a few row groups (see comparisons.compare)
    cols = (("country", "country"), ("ev_day", "ev"), ("sus_h", "sus"), ("pts_h", "pts"))
    for col, name in cols:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE lk_tf_{name} AS
            SELECT {col}, log2(count(*) / {max(n, 1)}) AS ltf FROM lk_rec WHERE {col} IS NOT NULL GROUP BY 1""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE lk_rec AS
        SELECT r.*, {", ".join(f"t_{name}.ltf AS ltf_{name}" for _, name in cols)}
        FROM lk_rec r {" ".join(f"LEFT JOIN lk_tf_{name} t_{name} ON t_{name}.{col} = r.{col}" for col, name in cols)}
        ORDER BY r.report_id""")
    for _, name in cols:
        con.execute(f"DROP TABLE lk_tf_{name}")
    return n
