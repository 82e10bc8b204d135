"""Version collapse and deleted cases across **all** ingested quarters.

Order (each step is a funnel row):

1. union DEMO of every quarter; rows whose caseid/primaryid (or, outside LAERS, caseversion) is null or not a
   number are dropped and counted - above ``curation.null_key_tolerance`` in any quarter we refuse to run rather
   than silently wipe data (kylechua/faers-toolkit #3);
2. exact duplicate rows (same FDA text in every column) -> one, the latest quarter's;
3. one row per (caseid, primaryid): a report re-shipped in a later quarter is taken from the latest quarter;
4. caseids on any deleted list of any quarter (incl. 2019Q1's AllDeletedCases) are dropped, *before* step 5 so
   a deleted top version cannot win its case;
5. one version per caseid: max integer caseversion, then latest fda_dt, then latest quarter, then max integer
   primaryid (never string order: '100059199' > '1000591924' lexically).

LAERS: caseversion = foll_seq with blank -> 0 (the ingester's ``caseversion_int``; anything unparseable is 0 too),
so a FAERS version of a carried-over case always wins. Child tables follow the chosen (primaryid, quarter) - never
de-duplicated on (caseid, drug_seq)/(caseid, pt), which would keep drugs/PTs of older versions.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.errors import PipelineError
from pipeline.layout import DELETED, DataDir
from pipeline.quarters import Quarter
from pipeline.schemas import TEXT_COLUMNS, raw_schema

#: tables curate reads (RPSR is not needed; THER only for the therapy start dates of family drug rows).
READ_TABLES = ("DEMO", "DRUG", "REAC", "OUTC", "INDI", "THER", DELETED)


def raw_files(data_dir: DataDir, table: str, as_of: str | None = None) -> list[Path]:
    """One Parquet file per ingested quarter; with ``as_of``, only quarters <= it (the database as it stood then)."""
    paths = sorted(data_dir.raw_table(table).glob("quarter=*/part.parquet"))
    if as_of is None:
        return paths
    cut = Quarter.parse(as_of)
    return [p for p in paths if Quarter.parse(p.parent.name.split("=", 1)[1]) <= cut]


def register_raw(con: duckdb.DuckDBPyConnection, data_dir: DataDir,
                 as_of: str | None = None) -> dict[str, list[Path]]:
    """Create views ``raw_<table>`` over every quarter's Parquet (<= ``as_of`` when given; empty when none)."""
    files = {}
    for table in READ_TABLES:
        paths = raw_files(data_dir, table, as_of)
        files[table] = paths
        name = f"raw_{table.lower()}"
        if paths:
            lst = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{lst}], "
                        f"hive_partitioning=false, union_by_name=true)")
        else:
            con.register(f"_{name}_empty", pa.table({f.name: pa.array([], f.type) for f in raw_schema(table)}))
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _{name}_empty")
    return files


def _bad_key_sql(table: str) -> str:
    if table == "DEMO":
        return ("caseid_int IS NULL OR primaryid_int IS NULL "
                "OR (caseversion_int IS NULL AND era <> 'laers')")
    return "primaryid_int IS NULL"


def check_keys(con: duckdb.DuckDBPyConnection, tolerance: float) -> dict:
    """Per quarter and table, count rows with unusable keys; raise when a quarter exceeds ``tolerance``."""
    report = {}
    for table in ("DEMO", "DRUG", "REAC"):
        rows = con.execute(f"SELECT quarter, count(*), count(*) FILTER (WHERE {_bad_key_sql(table)}) "
                           f"FROM raw_{table.lower()} GROUP BY quarter ORDER BY quarter").fetchall()
        for quarter, n, bad in rows:
            report.setdefault(quarter, {})[table] = {"rows": n, "bad_keys": bad}
            if n and bad / n > tolerance:
                cols = "caseid/caseversion/primaryid" if table == "DEMO" else "primaryid"
                raise PipelineError(
                    f"curate refused: {quarter} {table} has {bad:,} of {n:,} rows ({bad / n:.1%}) with a null or "
                    f"non-numeric {cols} (tolerance {tolerance:.2%}); check the ingest of that quarter")
    return report


def collapse(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Build temp table ``kept`` (one row per kept case) and return the row count after each step.

    Also leaves temp table ``demo_valid`` (every usable-key DEMO row with its content hash) for
    :func:`pipeline.curate.history.build_spans`, which drops it: the hash over every text column is the costly
    part of reading DEMO, so it is computed once."""
    text_cols = ", ".join(TEXT_COLUMNS["DEMO"])
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE demo_valid AS
        SELECT caseid_int AS caseid, primaryid_int AS primaryid,
               coalesce(caseversion_int, CASE WHEN era = 'laers' THEN 0 END) AS caseversion,
               fda_dt_date AS fda_dt, init_fda_dt_date AS init_fda_dt, quarter, source_line, hash({text_cols}) AS h
        FROM raw_demo WHERE NOT ({_bad_key_sql('DEMO')})""")
    # 2 + 3 in one window: the latest quarter's row of each (caseid, primaryid); exact duplicates (same hash) only
    # need counting, since their latest copy is the one the window keeps anyway (the hash is only compared within
    # one (caseid, primaryid), so a collision is moot); within one quarter conflicting rows are ordered by content
    con.execute("""
        CREATE OR REPLACE TEMP TABLE v_reship AS SELECT * EXCLUDE (init_fda_dt) FROM demo_valid
        QUALIFY row_number() OVER (PARTITION BY caseid, primaryid
                                   ORDER BY quarter DESC, fda_dt DESC NULLS LAST, h DESC, source_line DESC) = 1""")
    # 4: deleted caseids, every list of every quarter
    con.execute("""
        CREATE OR REPLACE TEMP TABLE deleted_ids AS
        SELECT DISTINCT caseid_int AS caseid FROM raw_deleted WHERE caseid_int IS NOT NULL""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE v_live AS SELECT * FROM v_reship
        WHERE caseid NOT IN (SELECT caseid FROM deleted_ids)""")
    # 5: one version per case, integer ordering throughout
    con.execute("""
        CREATE OR REPLACE TEMP TABLE v_latest AS SELECT * FROM v_live
        QUALIFY row_number() OVER (PARTITION BY caseid ORDER BY caseversion DESC, fda_dt DESC NULLS LAST,
                                   quarter DESC, primaryid DESC, h DESC) = 1""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE kept AS
        SELECT v.caseid AS report_id, v.caseid, v.primaryid, v.caseversion, v.quarter, d.era, v.fda_dt,
               d.init_fda_dt_date AS init_fda_dt, trim(d.event_dt) AS event_dt, d.age, d.age_cod,
               upper(trim(d.sex)) AS sex_raw, trim(d.reporter_country) AS reporter_country,
               upper(trim(d.occp_cod)) AS occp_cod, upper(trim(d.mfr_num)) AS mfr_num,
               upper(trim(d.mfr_sndr)) AS mfr_sndr,
               CASE WHEN upper(trim(d.wt_cod)) IN ('KG', 'KGS') THEN TRY_CAST(trim(d.wt) AS DOUBLE)
                    WHEN upper(trim(d.wt_cod)) IN ('LBS', 'LB') THEN TRY_CAST(trim(d.wt) AS DOUBLE) * 0.45359237
               END AS wt_kg
        FROM v_latest v JOIN raw_demo d ON d.quarter = v.quarter AND d.source_line = v.source_line""")
    counts = {}
    for name, table in (("raw", "raw_demo"), ("valid_keys", "demo_valid"),
                        ("exact", "(SELECT DISTINCT caseid, primaryid, h FROM demo_valid)"),
                        ("reship", "v_reship"), ("live", "v_live"), ("kept", "kept")):
        counts[name] = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    counts["deleted_caseids"] = con.execute("SELECT count(*) FROM deleted_ids").fetchall()[0][0]
    for t in ("v_reship", "v_live", "v_latest"):
        con.execute(f"DROP TABLE {t}")
    return counts


def child_rows(table: str, columns: str) -> str:
    """SQL selecting ``columns`` of a child table's rows belonging to the kept version (alias ``c``, ``k``).

    ``kept`` needs ``report_id, caseid, primaryid, quarter``; the version history gives several versions of one
    case their own ``report_id`` (:mod:`pipeline.curate.history`), hence the separate ``caseid``."""
    return (f"SELECT k.report_id, {columns} FROM raw_{table.lower()} c "
            f"JOIN kept k ON c.primaryid_int = k.primaryid AND c.quarter = k.quarter "
            f"AND (c.caseid_int IS NULL OR c.caseid_int = k.caseid)")


__all__ = ["READ_TABLES", "register_raw", "check_keys", "collapse", "child_rows", "raw_files"]
