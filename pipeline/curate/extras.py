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
    """Create the temp tables of :data:`TABLE_NAMES`; return their row counts.

    The big child tables are only joined on integer keys: DRUG rows meet the small ``family_pairs`` before any
    text is normalised, INDI text is normalised once per distinct value, THER is read for the family rows' keys only.
    """
    from pipeline.curate.versions import child_rows

    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE report_outcomes AS
        SELECT DISTINCT report_id, outc_cod FROM (
            {child_rows('OUTC', 'upper(trim(c.outc_cod)) AS outc_cod')})
        WHERE outc_cod IS NOT NULL AND outc_cod <> ''""")
    # family drug rows with the keys THER links on (primaryid, quarter, caseid, drug_seq)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE fam_rows AS
        SELECT d.report_id, d.caseid, d.primaryid, d.quarter, d.drug_seq, f.substance, d.role_cod, d.route
        FROM ({child_rows('DRUG', "k.caseid, k.primaryid, k.quarter, c.drug_seq_int AS drug_seq, c.role_cod, "
                                  "c.route, c.drugname, c.prod_ai")}) d
        JOIN family_pairs f ON f.drugname = d.drugname AND f.prod_ai = d.prod_ai
        WHERE d.drug_seq IS NOT NULL""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE report_substance_drugs AS
        SELECT DISTINCT report_id, drug_seq, substance, upper(trim(role_cod)) AS role_cod,
               nullif(regexp_replace(trim(route), '\\s+', ' ', 'g'), '') AS route
        FROM fam_rows""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE indi_norm AS
        WITH t AS (SELECT DISTINCT indi_pt AS raw FROM raw_indi)
        SELECT raw, {pt_sql('raw')} AS pt, dense_rank() OVER (ORDER BY {pt_sql('raw')}) AS pt_id FROM t""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE report_indications AS
        WITH i AS (SELECT DISTINCT c.report_id, c.drug_seq, n.pt_id FROM (
                       {child_rows('INDI', 'c.indi_drug_seq_int AS drug_seq, c.indi_pt')}) c
                   JOIN indi_norm n ON n.raw = c.indi_pt),
             d AS (SELECT DISTINCT pt_id, pt FROM indi_norm WHERE pt <> '')
        SELECT i.report_id, i.drug_seq, d.pt, lower(d.pt) AS pt_key FROM i JOIN d USING (pt_id)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE report_therapies AS
        SELECT DISTINCT f.report_id, f.drug_seq, trim(t.start_dt) AS start_dt, {full_date_sql('t.start_dt')} AS start_date
        FROM raw_ther t
        JOIN (SELECT DISTINCT report_id, caseid, primaryid, quarter, drug_seq FROM fam_rows) f
          ON t.primaryid_int = f.primaryid AND t.quarter = f.quarter AND t.dsg_drug_seq_int = f.drug_seq
             AND (t.caseid_int IS NULL OR t.caseid_int = f.caseid)""")
    for t in ("fam_rows", "indi_norm"):
        con.execute(f"DROP TABLE {t}")
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLE_NAMES}


QUERIES = {
    "report_outcomes": "SELECT * FROM report_outcomes ORDER BY report_id, outc_cod",
    "report_substance_drugs": "SELECT * FROM report_substance_drugs ORDER BY report_id, drug_seq, substance",
    "report_indications": "SELECT * FROM report_indications",
    "report_therapies": "SELECT * FROM report_therapies ORDER BY report_id, drug_seq, start_dt",
}

__all__ = ["OUTCOME_CODES", "TABLE_NAMES", "QUERIES", "build_extras", "full_date_sql"]
