"""The kept version's OUTC, family drug rows (route), INDI and THER rows -> four curated tables the analyses read.

* ``report_outcomes``: one row per (report, OUTC code) of the kept version (codes upper-cased and trimmed;
  blanks dropped). FDA's list: DE, LT, HO, DS, CA, RI, OT; anything else is kept as found and warned about by the
  curated suite.
* ``report_substance_drugs``: one row per kept DRUG row that names a ketamine-family substance (``drug_seq``,
  role, route as FDA wrote it, trimmed). The substance is the one :mod:`pipeline.curate.drugs` settled for the
  row's (drugname, prod_ai) pair, so these rows and ``report_ingredients`` agree.
* ``report_indications``: one row per (report, indi_drug_seq, indication PT) of the kept version, PT text
  normalised like REAC PTs (``pt_key`` = case-folded).
* ``report_therapies``: THER rows of the kept version linked to a family drug row (``dsg_drug_seq`` =
  ``drug_seq``): ``start_dt`` as FDA wrote it and ``start_date`` only when it is a full, valid YYYYMMDD.

Only rows of the kept version are read (:func:`pipeline.curate.versions.child_rows`), never older versions.
Needs the temp tables ``kept`` and ``family_pairs`` (from :func:`pipeline.curate.drugs.build_report_ingredients`).
"""

from __future__ import annotations

import duckdb

from pipeline.curate.reactions import pt_sql

#: FDA's OUTC codes (ASC_NTS) and the outcomes.parquet column each one feeds
OUTCOME_CODES = {"DE": "death", "LT": "life_threatening", "HO": "hospitalization", "DS": "disability",
                 "CA": "congenital_anomaly", "RI": "required_intervention", "OT": "other_serious"}

TABLE_NAMES = ("report_outcomes", "report_substance_drugs", "report_indications", "report_therapies")


def full_date_sql(col: str) -> str:
    """SQL: a DATE only when ``col`` is exactly eight digits forming a valid calendar date (else NULL)."""
    return (f"CASE WHEN regexp_full_match(trim({col}), '[0-9]{{8}}') "
            f"THEN try_strptime(trim({col}), '%Y%m%d')::DATE END")


def build_extras(con: duckdb.DuckDBPyConnection) -> dict:
    """Create the temp tables of :data:`TABLE_NAMES`; return their row counts."""
    from pipeline.curate.versions import child_rows

    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE report_outcomes AS
        SELECT DISTINCT report_id, outc_cod FROM (
            {child_rows('OUTC', 'upper(trim(c.outc_cod)) AS outc_cod')})
        WHERE outc_cod IS NOT NULL AND outc_cod <> ''""")
    rows = child_rows("DRUG", "c.drug_seq_int AS drug_seq, upper(trim(c.role_cod)) AS role_cod, "
                              "nullif(regexp_replace(trim(c.route), '\\s+', ' ', 'g'), '') AS route, "
                              "c.drugname, c.prod_ai")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE report_substance_drugs AS
        SELECT DISTINCT d.report_id, d.drug_seq, f.substance, d.role_cod, d.route
        FROM ({rows}) d
        JOIN family_pairs f ON f.drugname = d.drugname AND f.prod_ai = d.prod_ai
        WHERE d.drug_seq IS NOT NULL""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE report_indications AS
        SELECT DISTINCT report_id, drug_seq, pt, lower(pt) AS pt_key FROM (
            {child_rows('INDI', f"c.indi_drug_seq_int AS drug_seq, {pt_sql('c.indi_pt')} AS pt")})
        WHERE pt IS NOT NULL AND pt <> ''""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE report_therapies AS
        SELECT DISTINCT t.report_id, t.drug_seq, t.start_dt, {full_date_sql('t.start_dt')} AS start_date
        FROM ({child_rows('THER', "c.dsg_drug_seq_int AS drug_seq, trim(c.start_dt) AS start_dt")}) t
        SEMI JOIN report_substance_drugs s ON s.report_id = t.report_id AND s.drug_seq = t.drug_seq""")
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLE_NAMES}


QUERIES = {
    "report_outcomes": "SELECT * FROM report_outcomes ORDER BY report_id, outc_cod",
    "report_substance_drugs": "SELECT * FROM report_substance_drugs ORDER BY report_id, drug_seq, substance",
    "report_indications": "SELECT * FROM report_indications",
    "report_therapies": "SELECT * FROM report_therapies ORDER BY report_id, drug_seq, start_dt",
}

__all__ = ["OUTCOME_CODES", "TABLE_NAMES", "QUERIES", "build_extras", "full_date_sql"]
