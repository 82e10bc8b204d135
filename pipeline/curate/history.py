"""Version history: which version of each case the database held at the end of every quarter.

The curated tables hold each case at its latest version. The trend by quarter needs each case *as it stood* at the
end of quarter q: the version the curation rules of :mod:`pipeline.curate.versions` would keep if only the quarters
<= q had been ingested, and no case deleted by a list of a quarter <= q. Re-running the curation per quarter
would cost one curation per quarter; instead every version that ever wins gets a span of quarters:

* per (caseid, primaryid) the row of each quarter that carried it (within a quarter: latest ``fda_dt``, then
  content hash, as in the version collapse); a later quarter's row of the same primaryid replaces it;
* at every quarter in which a case receives a row (its *change points*), the winner among the rows alive then is
  chosen by the version-collapse order (integer caseversion, fda_dt, quarter, integer primaryid, content hash);
* a case drops out at the first quarter whose deleted list names it;
* consecutive change points with the same winner are one span ``[valid_from, valid_to)`` (``valid_to`` null =
  still held at the end).

Tables (``versions``, ``version_ingredients``, ``version_pts``): every span, plus the ingredients and PTs of the
versions that are *not* the case's final version in ``reports`` (the final one's are ``report_ingredients`` and
``report_pts``). Final and superseded versions are mapped by the drug and reaction builders in one pass
(:func:`all_versions_kept`), so every version is read with one learned drug vocabulary and the mapping runs once.
``first_quarter`` = calendar quarter of the version's ``init_fda_dt``, else the first quarter any row of the case
appears in.
"""

from __future__ import annotations

import contextlib

import duckdb
import pyarrow as pa


VERSIONS = pa.schema([
    ("report_id", pa.int64()), ("version_id", pa.int64()), ("primaryid", pa.int64()),
    ("caseversion", pa.int64()), ("quarter", pa.string()), ("valid_from", pa.string()), ("valid_to", pa.string()),
    ("first_quarter", pa.string()), ("is_final", pa.bool_()), ("has_drug", pa.bool_()), ("has_pt", pa.bool_()),
    ("in_analysis", pa.bool_()),
])
VERSION_INGREDIENTS = pa.schema([
    ("version_id", pa.int64()), ("ingredient", pa.string()), ("substance", pa.string()), ("role_cod", pa.string()),
    ("matched_by", pa.string()), ("is_exposure", pa.bool_()),
])
VERSION_PTS = pa.schema([("version_id", pa.int64()), ("pt", pa.string()), ("pt_key", pa.string()),
                         ("is_indication", pa.bool_())])
TABLES = {"versions": VERSIONS, "version_ingredients": VERSION_INGREDIENTS, "version_pts": VERSION_PTS}


def quarter_sql(date_col: str) -> str:
    """SQL: the calendar quarter label (``2024Q3``) of a date column (null stays null)."""
    return f"(strftime({date_col}, '%Y') || 'Q' || quarter({date_col}))"


def first_seen_sql() -> str:
    """SQL (a table ``caseid, first_seen``): the first quarter each case appears in, over usable-key DEMO rows."""
    return "SELECT caseid_int AS caseid, min(quarter) AS first_seen FROM raw_demo WHERE caseid_int IS NOT NULL " \
           "GROUP BY 1"


#: SQL: a quarter label as its :attr:`pipeline.quarters.Quarter.index` (year * 4 + quarter - 1), so the windows and
#: joins compare integers, not text
_Q_INT = "(left({0}, 4)::INTEGER * 4 + right({0}, 1)::INTEGER - 1)"
#: SQL: the label of such an integer
_Q_LABEL = "((({0}) // 4)::VARCHAR || 'Q' || (({0}) % 4 + 1)::VARCHAR)"


def build_spans(con: duckdb.DuckDBPyConnection) -> dict:
    """Temp table ``hist_spans`` (one row per version span). Needs ``raw_demo``, ``raw_deleted``, ``kept`` and
    ``demo_valid`` (from :func:`pipeline.curate.versions.collapse`; dropped here).

    Most cases have one row in one quarter: their one change point's winner is that row, and its span runs until
    the case's deletion, so only cases with several rows go through the change-point join and the windows."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE hist_rows AS
        SELECT *, lead(q) OVER (PARTITION BY caseid, primaryid ORDER BY q) AS alive_to FROM (
            SELECT caseid, primaryid, caseversion, fda_dt, init_fda_dt, {_Q_INT.format('quarter')} AS q, h
            FROM demo_valid
            QUALIFY row_number() OVER (PARTITION BY caseid, primaryid, quarter
                                       ORDER BY fda_dt DESC NULLS LAST, h DESC, source_line DESC) = 1)""")
    con.execute("DROP TABLE demo_valid")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE hist_deleted AS
        SELECT caseid_int AS caseid, {_Q_INT.format('min(quarter)')} AS deleted_from FROM raw_deleted
        WHERE caseid_int IS NOT NULL GROUP BY 1""")
    con.execute(f"CREATE OR REPLACE TEMP TABLE hist_first AS {first_seen_sql()}")
    con.execute("CREATE OR REPLACE TEMP TABLE hist_multi AS "
                "SELECT caseid FROM hist_rows GROUP BY caseid HAVING count(*) > 1")
    first_quarter = f"coalesce({quarter_sql('r.init_fda_dt')}, f.first_seen) AS first_quarter"
    # a case with one row: one span, from its quarter until the case's deletion
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE hist_one AS
        SELECT r.caseid, r.primaryid, r.caseversion, r.q, {first_quarter},
               r.q AS valid_from, d.deleted_from AS valid_to
        FROM (SELECT * FROM hist_rows ANTI JOIN hist_multi USING (caseid)) r
        JOIN hist_first f ON f.caseid = r.caseid
        LEFT JOIN hist_deleted d ON d.caseid = r.caseid
        WHERE d.deleted_from IS NULL OR r.q < d.deleted_from""")
    # the other cases: the winner at each change point, among the rows alive then
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE hist_win AS
        WITH r AS (SELECT * FROM hist_rows SEMI JOIN hist_multi USING (caseid)),
             cp AS (SELECT DISTINCT caseid, q AS cp FROM r)
        SELECT c.caseid, c.cp, r.primaryid, r.caseversion, r.q, {first_quarter}, d.deleted_from
        FROM cp c JOIN r ON r.caseid = c.caseid AND r.q <= c.cp AND (r.alive_to IS NULL OR r.alive_to > c.cp)
        JOIN hist_first f ON f.caseid = c.caseid
        LEFT JOIN hist_deleted d ON d.caseid = c.caseid
        WHERE d.deleted_from IS NULL OR c.cp < d.deleted_from
        QUALIFY row_number() OVER (PARTITION BY c.caseid, c.cp
                                   ORDER BY r.caseversion DESC, r.fda_dt DESC NULLS LAST, r.q DESC,
                                            r.primaryid DESC, r.h DESC) = 1""")
    # islands of consecutive change points with one winner -> spans
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE hist_spans AS
        WITH w AS (SELECT *, lead(cp) OVER (PARTITION BY caseid ORDER BY cp) AS next_cp,
                          (primaryid, q) IS DISTINCT FROM
                          lag((primaryid, q)) OVER (PARTITION BY caseid ORDER BY cp) AS starts FROM hist_win),
             g AS (SELECT *, sum(starts::INTEGER) OVER (PARTITION BY caseid ORDER BY cp) AS island FROM w),
             s AS (SELECT caseid, any_value(primaryid) AS primaryid, any_value(caseversion) AS caseversion,
                          any_value(q) AS q, arg_min(first_quarter, cp) AS first_quarter,
                          min(cp) AS valid_from,
                          -- the last change point's end; NULL (still held) must win, so the _null variant
                          arg_max_null(coalesce(next_cp, deleted_from), cp) AS valid_to
                   FROM g GROUP BY caseid, island
                   UNION ALL BY NAME SELECT * FROM hist_one),
             t AS (SELECT caseid, primaryid, caseversion, {_Q_LABEL.format('q')} AS quarter, first_quarter,
                          valid_from AS vf, {_Q_LABEL.format('valid_from')} AS valid_from,
                          {_Q_LABEL.format('valid_to')} AS valid_to
                   FROM s)
        SELECT t.caseid AS report_id,
               -- numbered in (case, start) order; the start as its integer sorts faster than its label
               row_number() OVER (ORDER BY t.caseid, t.vf)::BIGINT AS version_id,
               t.primaryid, t.caseversion, t.quarter, t.valid_from, t.valid_to, t.first_quarter,
               (t.valid_to IS NULL AND k.report_id IS NOT NULL) AS is_final
        FROM t LEFT JOIN kept k ON k.report_id = t.caseid AND k.primaryid = t.primaryid AND k.quarter = t.quarter""")
    for t in ("hist_rows", "hist_deleted", "hist_first", "hist_multi", "hist_one", "hist_win"):
        con.execute(f"DROP TABLE {t}")
    n, superseded = con.execute("SELECT count(*), count(*) FILTER (WHERE NOT is_final) FROM hist_spans").fetchall()[0]
    return {"versions": int(n), "superseded_versions": int(superseded)}


#: SQL selecting the final versions' rows among the children mapped with :func:`all_versions_kept`
FINAL = "report_id >= 0"


@contextlib.contextmanager
def all_versions_kept(con: duckdb.DuckDBPyConnection):
    """Inside the block, temp table ``kept`` holds the final versions and the superseded ones (``hist_spans`` not
    final, under the id ``-version_id``); the final-only ``kept`` is back afterwards.

    The drug and reaction builders run once inside it: one mapping of every version, one vocabulary learned from
    all of them (FDA's own drugname/prod_ai pairings of every version it shipped), the final versions' rows
    selected by :data:`FINAL`; the superseded rows stay beside them (negative ids) until they are written, by
    :data:`QUERIES`, to the version tables.
    """
    con.execute("ALTER TABLE kept RENAME TO kept_final")
    try:
        con.execute("""
            CREATE TEMP TABLE kept AS
            SELECT report_id, caseid, primaryid, quarter FROM kept_final
            UNION ALL SELECT -version_id, report_id, primaryid, quarter FROM hist_spans WHERE NOT is_final""")
        yield
    finally:
        con.execute("DROP TABLE IF EXISTS kept")
        con.execute("ALTER TABLE kept_final RENAME TO kept")


def finish(con: duckdb.DuckDBPyConnection, exclude_flagged_duplicates: bool) -> None:
    """Temp table ``versions``: spans with has_drug/has_pt/in_analysis. Needs ``reports`` (final versions).

    A superseded version takes the duplicate flag of its case in ``reports`` (the database at this curation's
    end); a case no longer in ``reports`` (deleted later) counts as not a duplicate.
    """
    exclude = "true" if exclude_flagged_duplicates else "false"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE versions AS
        SELECT s.report_id, s.version_id, s.primaryid, s.caseversion, s.quarter, s.valid_from, s.valid_to,
               CASE WHEN s.is_final THEN r.first_quarter ELSE s.first_quarter END AS first_quarter, s.is_final,
               CASE WHEN s.is_final THEN r.has_drug ELSE s.version_id IN (SELECT version_id FROM hist_ingredients)
                    END AS has_drug,
               CASE WHEN s.is_final THEN r.has_pt ELSE s.version_id IN (SELECT version_id FROM hist_pts) END AS has_pt,
               CASE WHEN s.is_final THEN r.in_analysis
                    ELSE s.version_id IN (SELECT version_id FROM hist_ingredients)
                         AND s.version_id IN (SELECT version_id FROM hist_pts)
                         AND (coalesce(r.is_dup_kept, true) OR NOT {exclude}) END AS in_analysis
        FROM hist_spans s LEFT JOIN reports r ON r.report_id = s.report_id""")
    con.execute("DROP TABLE hist_spans")


#: SELECTs writing the three tables (``_copy`` checks them against :data:`TABLES`).
QUERIES = {
    "versions": "SELECT * FROM versions ORDER BY report_id, valid_from",
    # the superseded versions' rows of the tables built inside all_versions_kept, keyed by version_id
    "version_ingredients": f"SELECT -report_id AS version_id, * EXCLUDE (report_id) FROM report_ingredients "
                           f"WHERE NOT ({FINAL})",
    "version_pts": f"SELECT -report_id AS version_id, * EXCLUDE (report_id) FROM report_pts WHERE NOT ({FINAL})",
}

__all__ = ["TABLES", "QUERIES", "FINAL", "build_spans", "all_versions_kept", "finish", "quarter_sql",
           "first_seen_sql"]
