"""Reactions (REAC) and indications (INDI) of the kept versions -> ``report_pts``.

PT text is trimmed, inner whitespace collapsed and ``^`` mapped to ``'``; ``pt_key`` is the case-folded text
(LAERS PTs are upper case, FAERS mixed case: ``ANGIOEDEMA`` = ``Angioedema``). One row per (report, pt_key); the
display form is the most frequent mixed-case spelling in the data. ``is_indication`` marks a PT equal to an INDI
PT of the same report (ketamine's indications - depression, anaesthesia, pain - are also PTs). PT groups are config
data; :func:`pt_groups_frame` exposes them for the report layer.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from pipeline.curate.tables import PT_GROUPS
from pipeline.settings import Config


def pt_sql(col: str) -> str:
    """SQL display form of a PT text column."""
    return f"regexp_replace(trim(replace({col}, '^', '''')), '\\s+', ' ', 'g')"


def pt_key(text: str) -> str:
    """Python twin of the SQL key: trimmed, single-spaced, ^ -> ', case-folded."""
    return " ".join(text.replace("^", "'").split()).lower()


def pt_groups_frame(config: Config) -> pa.Table:
    """The configured PT groups as a table ``(pt_group, pt, pt_key)``, one row per (group, pt_key)."""
    rows = {(g.name, pt_key(p)): " ".join(p.replace("^", "'").split()) for g in config.pt_groups for p in g.pts}
    keys = sorted(rows)
    return pa.table({"pt_group": [k[0] for k in keys], "pt": [rows[k] for k in keys],
                     "pt_key": [k[1] for k in keys]}, schema=PT_GROUPS)


def build_report_pts(con: duckdb.DuckDBPyConnection, config: Config, counted: str = "true") -> dict:
    """Create temp table ``report_pts`` from the kept versions; return counts and configured PTs never seen, both
    over the reports ``counted`` (SQL on ``report_id``) selects."""
    from pipeline.curate.versions import child_rows

    # Normalise once per DISTINCT raw text (the PT vocabulary is small) and work on integer key ids; the display
    # form is the most frequent mixed-case spelling over all raw rows (independent of file order).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE pt_norm AS
        WITH raw AS (SELECT pt AS raw, count(*) AS n FROM raw_reac GROUP BY pt
                     UNION ALL SELECT DISTINCT indi_pt, 0 FROM raw_indi),
             t AS (SELECT raw, {pt_sql('raw')} AS pt, sum(n) AS n FROM raw GROUP BY raw)
        SELECT raw, pt, lower(pt) AS pt_key, dense_rank() OVER (ORDER BY lower(pt)) AS key_id, n
        FROM t WHERE pt <> ''""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE pt_display AS
        SELECT key_id, pt_key, pt FROM (SELECT key_id, pt_key, pt, sum(n) AS n FROM pt_norm GROUP BY ALL)
        QUALIFY row_number() OVER (PARTITION BY key_id ORDER BY (pt <> upper(pt)) DESC, n DESC, pt) = 1""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE kreac AS
        SELECT DISTINCT c.report_id, n.key_id
        FROM ({child_rows('REAC', 'c.pt')}) c JOIN pt_norm n ON n.raw = c.pt""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE kindi AS
        SELECT DISTINCT c.report_id, n.key_id
        FROM ({child_rows('INDI', 'c.indi_pt')}) c JOIN pt_norm n ON n.raw = c.indi_pt""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE report_pts AS
        SELECT r.report_id, d.pt, d.pt_key, (i.report_id IS NOT NULL) AS is_indication
        FROM kreac r JOIN pt_display d USING (key_id)
        LEFT JOIN kindi i ON i.report_id = r.report_id AND i.key_id = r.key_id""")
    reac_rows = con.execute(f"SELECT count(*) FROM kreac WHERE {counted}").fetchall()[0][0]  # distinct (report, pt)
    con.register("cfg_pt_groups", pt_groups_frame(config))
    # the keys seen, from the integer key ids (not the PT text of every row)
    unseen = con.execute(f"""
        SELECT g.pt_group, g.pt FROM cfg_pt_groups g
        WHERE g.pt_key NOT IN (SELECT d.pt_key FROM pt_display d
                               SEMI JOIN (SELECT key_id FROM kreac WHERE {counted}) k USING (key_id))
        ORDER BY 1, 2""").fetchall()
    n_ind = con.execute(f"SELECT count(*) FILTER (WHERE is_indication) FROM report_pts WHERE {counted}").fetchall()[0][0]
    con.unregister("cfg_pt_groups")
    for t in ("kreac", "kindi", "pt_display", "pt_norm"):
        con.execute(f"DROP TABLE {t}")
    return {"report_pt_pairs": reac_rows, "pt_rows_flagged_indication": n_ind,
            "configured_pts_never_seen": [{"pt_group": g, "pt": p} for g, p in unseen]}
