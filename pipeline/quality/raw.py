"""Raw tables, per quarter: each table's suite on its rows and its file, then the cross-table checks and the
ingest record (reconciliation, quarantine rate, columns FDA should have shipped).

Writes ``DIR/validation/raw/<quarter>.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.layout import DELETED, TABLES, DataDir
from pipeline.quality.checks import CRITICAL, Check, finish, named_check
from pipeline.quality.gx import GxRun, checks_from_result, data_docs_enabled, docs_dir_for, to_pandas
from pipeline.quality.raw_crosstable import coverage_checks
from pipeline.quality.suites import load_suite, raw_suite_name, split_structural, suite_columns
from pipeline.quarters import Quarter
from pipeline.schemas import raw_schema

#: Typical FDA row counts per quarter and era (FDA's published quarterly volumes, widened). Used as *warning* bounds by
#: default and as critical bounds with ``row_bounds="fda"``.
FDA_TYPICAL_ROWS: dict[str, dict[str, tuple[int, int]]] = {
    "faers_b": {"DEMO": (150_000, 800_000), "DRUG": (400_000, 4_000_000), "REAC": (400_000, 3_500_000),
                "OUTC": (50_000, 1_000_000), "RPSR": (1_000, 200_000), "THER": (100_000, 2_000_000),
                "INDI": (200_000, 3_000_000), "DELETED": (0, 1_000_000)},
    "faers_a": {"DEMO": (100_000, 600_000), "DRUG": (300_000, 2_000_000), "REAC": (300_000, 2_000_000),
                "OUTC": (50_000, 600_000), "RPSR": (5_000, 200_000), "THER": (100_000, 1_000_000),
                "INDI": (100_000, 1_500_000), "DELETED": (0, 1_000_000)},
    "laers": {"DEMO": (20_000, 400_000), "DRUG": (50_000, 1_500_000), "REAC": (50_000, 1_500_000),
              "OUTC": (10_000, 500_000), "RPSR": (1_000, 200_000), "THER": (10_000, 800_000),
              "INDI": (10_000, 1_000_000), "DELETED": (0, 1_000_000)},
}
#: Default hard floor (critical): an empty core table fails. RPSR can be legitimately empty in small
#: extracts; DELETED exists only from 2019Q1.
DEFAULT_FLOOR = {"DEMO": 1, "DRUG": 1, "REAC": 1, "OUTC": 1, "RPSR": 0, "THER": 1, "INDI": 1, "DELETED": 0}
#: Default hard ceiling = this many times the typical FDA maximum (a runaway or glued file).
CEILING_FACTOR = 5
#: Rows per DEMO row (critical): FDA quarters have ~4.2 DRUG and ~3.3 REAC rows per report.
DEFAULT_ROWS_PER_REPORT = {"DRUG": (1.0, 15.0), "REAC": (1.0, 15.0)}


def _row_params(table: str, era: str, row_bounds, n_demo: int, rows_per_report: dict) -> dict:
    typ_lo, typ_hi = FDA_TYPICAL_ROWS[era][table]
    floor, ceiling = DEFAULT_FLOOR[table], typ_hi * CEILING_FACTOR
    if row_bounds == "fda":
        floor, ceiling = max(typ_lo, DEFAULT_FLOOR[table]), typ_hi
    elif isinstance(row_bounds, dict) and table in row_bounds:
        lo, hi = row_bounds[table]
        floor = DEFAULT_FLOOR[table] if lo is None else int(lo)
        ceiling = typ_hi * CEILING_FACTOR if hi is None else int(hi)
    elif row_bounds not in (None, "default") and not isinstance(row_bounds, dict):
        raise PipelineError(f"row_bounds must be None, 'fda' or {{table: (min, max)}}, not {row_bounds!r}")
    params = {"rows_floor": floor, "rows_ceiling": ceiling, "rows_typical_min": typ_lo, "rows_typical_max": typ_hi}
    lo_r, hi_r = rows_per_report.get(table, (0.0, math.inf))
    params["rows_rel_min"] = int(math.floor(lo_r * n_demo))
    params["rows_rel_max"] = int(math.ceil(hi_r * n_demo)) if math.isfinite(hi_r) else 10**12
    return params


def _code_columns(suite: dict) -> set[str]:
    """Columns that only code-list (in-set) expectations read: read as dictionaries."""
    by_col: dict[str, set[str]] = {}
    for e in suite["expectations"]:
        if "column" in e["kwargs"]:
            by_col.setdefault(e["kwargs"]["column"], set()).add(e["type"])
    return {c for c, types in by_col.items() if types == {"expect_column_values_to_be_in_set"}}


def _file_facts(data_dir: DataDir, table: str, quarter: Quarter) -> tuple[pa.Schema, int | None]:
    """(the file's schema, its row count), from the Parquet footer; the canonical schema and ``None``
    when there is no file. The structural checks are about the file on disk, whoever holds the rows."""
    path = data_dir.raw_part(table, quarter)
    if not path.exists():
        return raw_schema(table), None
    meta = pq.read_metadata(path)
    return meta.schema.to_arrow_schema(), meta.num_rows


def _read_raw(data_dir: DataDir, table: str, quarter: Quarter, columns: list[str],
              code_columns: Iterable[str] = ()) -> pa.Table:
    """The needed columns of one raw table from Parquet (an empty table when there is no file)."""
    path = data_dir.raw_part(table, quarter)
    if not path.exists():
        return raw_schema(table).empty_table().select(columns)
    schema = pq.read_schema(path)
    # code-list columns as dictionaries (pandas Categorical): faster to read and to filter inside GX; free
    # text (lengths) and dates (regex) stay plain strings, which GX handles faster than categoricals
    wanted = [c for c in columns if c in schema.names]
    as_dict = [c for c in wanted if c in set(code_columns) and pa.types.is_string(schema.field(c).type)]
    return pq.read_table(path, columns=wanted, read_dictionary=as_dict)


def _ingest_frame(record: dict, era: str, parquet_rows: dict[str, int], quarantine_min_lines: int = 10_000):
    import pandas as pd

    written: dict[str, int] = {}
    for f in record.get("files", []):
        written[f["table"]] = written.get(f["table"], 0) + int(f.get("rows_written", 0))
    rows = []
    for f in record.get("files", []):
        table = f["table"]
        expected = set(load_suite(raw_suite_name(table, era))["meta"]["expected_columns_by_era"].get(era, []))
        missing = sorted(expected & set(f.get("columns_missing") or []))
        lines = int(f.get("data_lines", 0))
        rows.append({
            "table": table, "member": f.get("member", ""), "data_lines": lines,
            "rows_accounted": int(f.get("rows_written", 0)) + int(f.get("quarantined", 0)),
            "table_rows_written": written[table], "parquet_rows": parquet_rows.get(table, 0),
            "quarantine_rate": (int(f.get("quarantined", 0)) / lines) if lines else 0.0,
            "quarantine_rate_large": ((int(f.get("quarantined", 0)) / lines) if lines >= quarantine_min_lines
                                      else np.nan),
            "expected_columns_missing": ",".join(missing),
        })
    cols = ["table", "member", "data_lines", "rows_accounted", "table_rows_written", "parquet_rows",
            "quarantine_rate", "quarantine_rate_large", "expected_columns_missing"]
    return pd.DataFrame(rows, columns=cols)


def validate_raw_quarter(data_dir: DataDir, quarter: Quarter | str, *, tables: dict[str, pa.Table] | None = None,
                         **options) -> dict:
    """Validate one ingested quarter; write ``validation/raw/<quarter>.json``; raise on critical failures.

    ``tables``: the quarter's Arrow tables if the caller still holds them (skips re-reading Parquet).
    ``options``: the thresholds of :class:`RawQuarterValidation`.
    """
    validation = RawQuarterValidation(data_dir, quarter, **options)
    for table in TABLES + (DELETED,):
        validation.add(table, (tables or {}).get(table))
    return validation.finish()


class RawQuarterValidation:
    """The raw checks of one quarter, table by table as tables become ready, then the cross-table ones.

    Ingest hands each table over as soon as it is written, so the GX suites of the first tables run while
    later ones are still being parsed (GX is Python; parsing mostly runs without the GIL).

    ``row_bounds``: ``None`` = hard floor > 0 (RPSR, DELETED may be empty) and a ceiling, with FDA's typical
    range as a warning; ``"fda"`` = FDA's typical range is critical (use on real FDA quarters);
    ``{"DEMO": (min, max), ...}`` = explicit critical bounds. DRUG/REAC rows per DEMO row are always checked
    (``rows_per_report``). ``quarantine_warn``/``quarantine_critical``: quarantined share of a file's data
    lines (the critical one only for files of at least ``quarantine_min_lines`` lines). ``orphan_critical``:
    share of DRUG/REAC rows whose primaryid is not in DEMO that stops the run, once there are at least
    ``orphan_min_count`` such rows.
    """

    # row-count expectations relative to DEMO: these tables wait for DEMO's row count
    _NEEDS_DEMO = ("DRUG", "REAC")

    def __init__(self, data_dir: DataDir | str | os.PathLike, quarter: Quarter | str, *,
                 row_bounds: dict | str | None = None, rows_per_report: dict | None = None,
                 quarantine_warn: float = 1e-4, quarantine_critical: float = 1e-3,
                 quarantine_min_lines: int = 10_000, orphan_critical: float = 1e-3, orphan_min_count: int = 50,
                 coverage_warn: float = 0.99, coverage_critical: float = 0.90,
                 data_docs: bool | None = None, docs_dir: str | os.PathLike | None = None,
                 raise_on_critical: bool = True):
        self.data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
        self.quarter = quarter if isinstance(quarter, Quarter) else Quarter.parse(str(quarter))
        self.era, self.scope = self.quarter.era, str(self.quarter)
        self.row_bounds = row_bounds
        self.rows_per_report = {**DEFAULT_ROWS_PER_REPORT, **(rows_per_report or {})}
        self.thresholds = {"row_bounds": row_bounds if row_bounds is not None else "default",
                           "rows_per_report": self.rows_per_report, "quarantine_warn": quarantine_warn,
                           "quarantine_critical": quarantine_critical,
                           "quarantine_min_lines": quarantine_min_lines, "orphan_critical": orphan_critical,
                           "orphan_min_count": orphan_min_count,
                           "coverage_warn": coverage_warn, "coverage_critical": coverage_critical}
        self.raise_on_critical = raise_on_critical
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        t = time.perf_counter()
        self.gxr = GxRun(docs_dir_for(self.data_dir, docs_dir), render=data_docs_enabled(data_docs, default=False))
        self.timings["gx_context"] = round(time.perf_counter() - t, 3)
        self.n_rows: dict[str, int] = {}
        self.file_rows: dict[str, int | None] = {}
        self._ids: dict[str, pa.Array] = {}
        self._data_checks: dict[str, list[Check]] = {}
        self._file_checks: dict[str, list[Check]] = {}
        self._waiting: dict[str, tuple[pa.Table, dict]] = {}
        self._suite_parts: dict[str, tuple[dict, dict, dict]] = {}

    def add(self, table: str, held: pa.Table | None = None) -> None:
        """Check one table: its rows (``held`` if given, else read from Parquet), then its file."""
        self.add_rows(table, held)
        self.add_file(table)

    def add_rows(self, table: str, rows: pa.Table | None = None) -> None:
        """Run the table's data suite on ``rows`` (or its Parquet file); may run before the file is written."""
        t = time.perf_counter()
        suite, data_suite, _ = self._suites(table)
        columns = suite_columns(suite)
        if rows is None:
            frame = _read_raw(self.data_dir, table, self.quarter, columns, _code_columns(suite))
        else:
            frame = rows.select([c for c in columns if c in rows.column_names])
        self.n_rows[table] = frame.num_rows
        if "primaryid_int" in frame.column_names:  # kept for the cross-table checks
            self._ids[table] = frame.column("primaryid_int").combine_chunks()
        self.timings[f"read_{table.lower()}"] = round(time.perf_counter() - t, 3)
        self._waiting[table] = (frame, data_suite)
        for ready in [tb for tb in self._waiting if tb not in self._NEEDS_DEMO or "DEMO" in self.n_rows]:
            self._run_data_suite(ready, *self._waiting.pop(ready))

    def add_file(self, table: str) -> None:
        """The file's structural checks (its column set, from the Parquet footer) and row count."""
        t = time.perf_counter()
        _, _, col_suite = self._suites(table)
        schema, self.file_rows[table] = _file_facts(self.data_dir, table, self.quarter)
        checks = []
        if col_suite["expectations"]:  # the column set, on an empty frame of the file's schema
            res = self.gxr.run(col_suite, schema.empty_table().to_pandas(), asset=f"raw_{table.lower()}_columns",
                               params={}, run_name=self.scope, persist=False)
            checks = checks_from_result(res, layer="raw", table=table, scope=self.scope, suite=col_suite)
        self._file_checks[table] = checks
        self.timings[f"file_{table.lower()}"] = round(time.perf_counter() - t, 3)

    def _suites(self, table: str) -> tuple[dict, dict, dict]:
        """(whole suite, data part, structural part) of the table's era, read once per validation."""
        if table not in self._suite_parts:
            suite = load_suite(raw_suite_name(table, self.era))
            self._suite_parts[table] = (suite, *split_structural(suite))
        return self._suite_parts[table]

    def _run_data_suite(self, table: str, frame: pa.Table, data_suite: dict) -> None:
        t = time.perf_counter()
        params = _row_params(table, self.era, self.row_bounds, self.n_rows.get("DEMO", 0), self.rows_per_report)
        df = to_pandas(frame, suite_columns(data_suite))
        res = self.gxr.run(data_suite, df, asset=f"raw_{table.lower()}", params=params, run_name=self.scope)
        self._data_checks[table] = checks_from_result(res, layer="raw", table=table, scope=self.scope,
                                                       suite=data_suite)
        self.timings[f"gx_{table.lower()}"] = round(time.perf_counter() - t, 3)

    def finish(self) -> dict:
        """Cross-table checks and the ingest record; write the summary; raise on a critical failure."""
        missing = [tb for tb in TABLES + (DELETED,) if tb not in self.n_rows or tb not in self.file_rows]
        if missing:
            raise PipelineError(f"{self.scope}: raw validation finished before {', '.join(missing)} was added")
        for table in list(self._waiting):
            self._run_data_suite(table, *self._waiting.pop(table))
        t = time.perf_counter()
        demo_ids = self._ids.get("DEMO", pa.array([], pa.int64()))
        checks = coverage_checks(self.scope, demo_ids, {tb: self._ids[tb] for tb in TABLES[1:] if tb in self._ids},
                                  orphan_critical=self.thresholds["orphan_critical"],
                                  orphan_min_count=self.thresholds["orphan_min_count"],
                                  coverage_warn=self.thresholds["coverage_warn"],
                                  coverage_critical=self.thresholds["coverage_critical"])
        self.timings["cross_table"] = round(time.perf_counter() - t, 3)
        for table in TABLES + (DELETED,):
            checks += self._data_checks[table] + self._file_checks[table]
        t = time.perf_counter()
        checks += self._ingest_record_checks()
        self.timings["ingest_record"] = round(time.perf_counter() - t, 3)
        self.timings["validation"] = round(time.perf_counter() - self._t0, 3)
        extra = {"quarter": self.scope, "era": self.era, "rows": self.n_rows, "thresholds": self.thresholds}
        summary = finish("raw", self.scope, checks, self.data_dir.validation / "raw" / f"{self.scope}.json",
                          extra=extra, gxr=self.gxr, timings=self.timings, raise_on_critical=self.raise_on_critical)
        self.timings["total"] = round(time.perf_counter() - self._t0, 3)
        return summary

    def _ingest_record_checks(self) -> list[Check]:
        """Reconciliation, quarantine rate, columns FDA should have shipped."""
        rec_path = self.data_dir.ingest_record(self.quarter)
        try:
            record = json.loads(rec_path.read_text())
        except FileNotFoundError:
            return [named_check("raw", "_ingest", self.scope, "ingest_record_present", CRITICAL, False,
                           details=f"no ingest record {rec_path}")]
        except json.JSONDecodeError as exc:
            return [named_check("raw", "_ingest", self.scope, "ingest_record_present", CRITICAL, False,
                           details=f"ingest record {rec_path} is not valid JSON: {exc}")]
        suite = load_suite("raw_ingest_record")
        df = _ingest_frame(record, self.era, {tb: n or 0 for tb, n in self.file_rows.items()},
                           self.thresholds["quarantine_min_lines"])
        res = self.gxr.run(suite, df, asset="raw_ingest_record",
                           params={"quarantine_warn": self.thresholds["quarantine_warn"],
                                   "quarantine_critical": self.thresholds["quarantine_critical"]},
                           run_name=self.scope, index_columns=["table"])
        return checks_from_result(res, layer="raw", table="_ingest", scope=self.scope, suite=suite)
