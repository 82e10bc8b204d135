"""Data quality (pipeline/quality/, expectations/*.json): deliberately broken tables are caught with the right
message and severity; clean data and the real FDA samples pass.

The generator below (`make_raw_quarter`, `write_raw_quarter`) writes FDA-like raw Parquet following
`raw_schema`; the benchmark of the validation overhead uses it at real scale (450 k DEMO rows).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import quality
from pipeline.atomic import write_json, write_parquet
from pipeline.errors import PipelineError
from pipeline.layout import TABLES, DataDir
from pipeline.quality import CRITICAL, WARNING, ValidationFailed
from pipeline.quality.gx import GxRun, checks_from_result
from pipeline.quality.outputs import outputs_frame
from pipeline.quarters import Quarter
from pipeline.schemas import TEXT_COLUMNS, raw_schema

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


# =============================================================================================
# Generator of clean raw quarters
# =============================================================================================
PER_REPORT = {"DRUG": 4.2, "REAC": 3.3, "OUTC": 0.8, "RPSR": 0.04, "THER": 1.5, "INDI": 2.9}


def _pick(rng, values, p, n):
    idx = rng.choice(len(values), size=n, p=np.asarray(p, float) / np.sum(p))
    return pa.array(np.asarray(values, dtype=object)[idx], pa.string())


def _dates(rng, n, lens=(8,), p=(1.0,)):
    y = rng.integers(2005, 2024, n)
    m = rng.integers(1, 13, n)
    d = rng.integers(1, 29, n)
    full = np.char.add(np.char.add(y.astype(str), np.char.zfill(m.astype(str), 2)), np.char.zfill(d.astype(str), 2))
    k = rng.choice(len(lens), size=n, p=p)
    cut = np.asarray(lens)[k]
    out = np.array([s[:c] for s, c in zip(full.tolist(), cut.tolist())], dtype=object)
    return pa.array(out, pa.string())


def _to_int(arr):
    ok = pc.match_substring_regex(arr, r"^\d+$")
    return pc.cast(pc.if_else(ok, arr, pa.scalar(None, pa.string())), pa.int64())


def _to_date(arr):
    full = pc.match_substring_regex(arr, r"^\d{8}$")
    txt = pc.if_else(full, arr, pa.scalar(None, pa.string()))
    return pc.cast(pc.strptime(txt, format="%Y%m%d", unit="s", error_is_null=True), pa.date32())


def _finish(table, cols, n, quarter, member):
    era = quarter.era
    if table == "DEMO" and era == "laers":  # LAERS foll_seq: blank = initial version 0 (as ingest does)
        cols["caseversion_int"] = pc.fill_null(_to_int(cols["caseversion"]), 0)
    for c in TEXT_COLUMNS[table]:
        cols.setdefault(c, pa.array(np.full(n, "", dtype=object), pa.string()))
    schema = raw_schema(table)
    for f in schema:
        name = f.name
        if name in cols:
            continue
        if name.endswith("_int"):
            cols[name] = _to_int(cols[name[:-4]])
        elif name.endswith("_date"):
            cols[name] = _to_date(cols[name[:-5]])
        elif name == "event_dt_precision":
            ln = pc.utf8_length(cols["event_dt"])
            cols[name] = pc.case_when(pc.make_struct(pc.equal(ln, 8), pc.equal(ln, 6), pc.equal(ln, 4)),
                                      "day", "month", "year", pa.scalar(None, pa.string()))
    cols["quarter"] = pa.array(np.full(n, str(quarter), dtype=object), pa.string())
    cols["era"] = pa.array(np.full(n, era, dtype=object), pa.string())
    cols["source_file"] = pa.array(np.full(n, member, dtype=object), pa.string())
    cols["source_line"] = pa.array(np.arange(2, n + 2, dtype=np.int64))
    return pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema)


def make_raw_quarter(quarter="2024Q1", n_demo=2000, seed=1):
    """Clean, FDA-like raw tables for one quarter: {TABLE: pa.Table}."""
    quarter = Quarter.parse(str(quarter))
    rng = np.random.default_rng(seed)
    era = quarter.era
    laers = era == "laers"
    yy = quarter.yyqq
    n = n_demo
    caseid = 10_000_000 + rng.permutation(n * 3)[:n].astype(np.int64)
    version = rng.integers(1, 12, n)
    pid = caseid * 100 + version
    pid_s = pa.array(pid.astype(str).astype(object), pa.string())
    demo = {
        "primaryid": pid_s,
        "caseid": pa.array(caseid.astype(str).astype(object), pa.string()),
        "caseversion": pa.array(version.astype(str).astype(object), pa.string()),
        "i_f_code": _pick(rng, ["I", "F"], [0.6, 0.4], n),
        "event_dt": _dates(rng, n, (8, 6, 4, 0), (0.57, 0.14, 0.09, 0.20)),
        "mfr_dt": _dates(rng, n, (8, 0), (0.8, 0.2)),
        "init_fda_dt": _dates(rng, n),
        "fda_dt": _dates(rng, n),
        "rept_cod": _pick(rng, ["EXP", "PER", "DIR", "30DAY", "5DAY"], [0.7, 0.2, 0.096, 0.003, 0.001], n),
        "age": _pick(rng, ["", "45", "68", "25155", "3"], [0.4, 0.2, 0.2, 0.1, 0.1], n),
        "age_cod": _pick(rng, ["", "YR", "DY", "MON", "DEC"], [0.4, 0.5, 0.05, 0.04, 0.01], n),
        "sex": _pick(rng, ["F", "M", "", "UNK"], [0.55, 0.38, 0.06, 0.01], n),
        "wt": _pick(rng, ["", "70", "82.5"], [0.7, 0.2, 0.1], n),
        "wt_cod": _pick(rng, ["", "KG", "LBS"], [0.7, 0.25, 0.05], n),
        "rept_dt": _dates(rng, n),
        "occp_cod": _pick(rng, ["MD", "CN", "HP", "PH", "OT", "LW", ""], [0.3, 0.35, 0.2, 0.05, 0.05, 0.01, 0.04], n),
        "reporter_country": _pick(rng, ["US", "FR", "JP", "GB"], [0.6, 0.1, 0.2, 0.1], n),
        "occr_country": _pick(rng, ["US", "FR", "JP", "GB"], [0.6, 0.1, 0.2, 0.1], n),
        "e_sub": _pick(rng, ["Y", "N"], [0.9, 0.1], n),
    }
    if era == "faers_b":
        demo["age_grp"] = _pick(rng, ["", "A", "E", "C"], [0.63, 0.2, 0.12, 0.05], n)
    if laers:
        demo["caseversion"] = _pick(rng, ["", "1", "2"], [0.87, 0.1, 0.03], n)
        demo.pop("init_fda_dt")
    out = {"DEMO": _finish("DEMO", demo, n, quarter, f"ASCII/DEMO{yy}.txt")}

    def child(table, rate):
        k = rng.poisson(rate - 1, n) + 1 if rate >= 1 else rng.binomial(1, rate, n)
        idx = np.repeat(np.arange(n), k)
        m = len(idx)
        seq = (np.arange(m) - np.repeat(np.cumsum(k) - k, k) + 1).astype(np.int64)
        cols = {"primaryid": pa.array(pid[idx].astype(str).astype(object), pa.string())}
        if not laers:
            cols["caseid"] = pa.array(caseid[idx].astype(str).astype(object), pa.string())
        return cols, m, seq

    cols, m, seq = child("DRUG", PER_REPORT["DRUG"])
    cols["drug_seq"] = pa.array(seq.astype(str).astype(object), pa.string())
    cols["role_cod"] = _pick(rng, ["PS", "SS", "C", "I"], [0.2, 0.35, 0.43, 0.02], m)
    cols["drugname"] = _pick(rng, ["KETAMINE", "SPRAVATO", "ASPIRIN", "HUMIRA", "KETAMINE HYDROCHLORIDE."],
                             [0.01, 0.01, 0.4, 0.4, 0.18], m)
    if era == "faers_b":
        cols["prod_ai"] = _pick(rng, ["KETAMINE", "ESKETAMINE", "ASPIRIN", "ADALIMUMAB", ""],
                                [0.01, 0.01, 0.4, 0.4, 0.18], m)
    cols["val_vbm"] = _pick(rng, ["1", "2"], [0.8, 0.2], m)
    cols["route"] = _pick(rng, ["ORAL", "INTRAVENOUS", ""], [0.5, 0.2, 0.3], m)
    cols["dechal"] = _pick(rng, ["Y", "N", "U", "D", ""], [0.1, 0.1, 0.2, 0.1, 0.5], m)
    cols["rechal"] = _pick(rng, ["Y", "N", "U", "D", ""], [0.05, 0.05, 0.2, 0.1, 0.6], m)
    out["DRUG"] = _finish("DRUG", cols, m, quarter, f"ASCII/DRUG{yy}.txt")

    cols, m, _ = child("REAC", PER_REPORT["REAC"])
    cols["pt"] = _pick(rng, ["Dissociation", "Nausea", "Drug ineffective", "Tachycardia", "Hypertension"],
                       [0.05, 0.4, 0.4, 0.1, 0.05], m)
    out["REAC"] = _finish("REAC", cols, m, quarter, f"ASCII/REAC{yy}.txt")

    cols, m, _ = child("OUTC", PER_REPORT["OUTC"])
    cols["outc_cod"] = _pick(rng, ["DE", "LT", "HO", "DS", "CA", "RI", "OT"], [0.1, 0.05, 0.4, 0.05, 0.01, 0.04, 0.35], m)
    out["OUTC"] = _finish("OUTC", cols, m, quarter, f"ASCII/OUTC{yy}.txt")

    cols, m, _ = child("RPSR", PER_REPORT["RPSR"])
    cols["rpsr_cod"] = _pick(rng, ["FGN", "SDY", "LIT", "CSM", "HP", "UF", "CR", "DT", "OTH"], [1] * 9, m)
    out["RPSR"] = _finish("RPSR", cols, m, quarter, f"ASCII/RPSR{yy}.txt")

    cols, m, seq = child("THER", PER_REPORT["THER"])
    cols["dsg_drug_seq"] = pa.array(seq.astype(str).astype(object), pa.string())
    cols["start_dt"] = _dates(rng, m, (8, 6, 4, 0), (0.5, 0.1, 0.1, 0.3))
    cols["end_dt"] = _dates(rng, m, (8, 6, 4, 0), (0.3, 0.1, 0.1, 0.5))
    cols["dur_cod"] = _pick(rng, ["", "DAY", "MON", "YR"], [0.8, 0.1, 0.05, 0.05], m)
    out["THER"] = _finish("THER", cols, m, quarter, f"ASCII/THER{yy}.txt")

    cols, m, seq = child("INDI", PER_REPORT["INDI"])
    cols["indi_drug_seq"] = pa.array(seq.astype(str).astype(object), pa.string())
    cols["indi_pt"] = _pick(rng, ["Depression", "Pain", "Anaesthesia"], [0.4, 0.4, 0.2], m)
    out["INDI"] = _finish("INDI", cols, m, quarter, f"ASCII/INDI{yy}.txt")

    nd = max(1, n // 200) if quarter >= Quarter(2019, 1) else 0
    dels = pa.array((20_000_000 + rng.permutation(nd * 2)[:nd]).astype(str).astype(object), pa.string())
    out["DELETED"] = _finish("DELETED", {"caseid": dels}, nd, quarter, f"Deleted/DELETE{yy}.txt")
    return out


def ingest_record_for(tables, quarter, quarantined=None):
    quarter = Quarter.parse(str(quarter))
    quarantined = quarantined or {}
    files = []
    for t, tab in tables.items():
        if t == "DELETED" and tab.num_rows == 0:
            continue
        q = quarantined.get(t, 0)
        member = tab.column("source_file")[0].as_py() if tab.num_rows else f"ASCII/{t}{quarter.yyqq}.txt"
        files.append({"table": t, "member": member, "data_lines": tab.num_rows + q, "rows_written": tab.num_rows,
                      "quarantined": q, "blank_lines": 0, "encoding_fallback_lines": 0,
                      "trailing_dollar": quarter.era == "laers", "columns_missing": [], "columns_unknown": [],
                      "reconciled": True})
    return {"quarter": str(quarter), "era": quarter.era, "zip": f"faers_ascii_{str(quarter).lower()}.zip",
            "zip_sha256": "0" * 64, "ingested_at": "2026-01-01T00:00:00+00:00", "files": files,
            "unknown_members": [], "reconciled": True,
            "rows": {t: tab.num_rows for t, tab in tables.items()}, "quarantined": sum(quarantined.values())}


def write_raw_quarter(data_dir, quarter="2024Q1", n_demo=2000, seed=1, tables=None, record=None):
    data_dir = DataDir.of(data_dir) if not isinstance(data_dir, DataDir) else data_dir
    quarter = Quarter.parse(str(quarter))
    tables = tables if tables is not None else make_raw_quarter(quarter, n_demo, seed)
    for t, tab in tables.items():
        write_parquet(tab, data_dir.raw_part(t, quarter))
    write_json(record if record is not None else ingest_record_for(tables, quarter), data_dir.ingest_record(quarter))
    return tables


# =============================================================================================
# Helpers
# =============================================================================================
@pytest.fixture(scope="module")
def clean_2024q1():
    return make_raw_quarter("2024Q1", n_demo=1500, seed=3)


def set_col(tab: pa.Table, col: str, values) -> pa.Table:
    """Replace ``col`` (list/array, or a function of the current pylist) and refresh its typed copy."""
    if callable(values):
        values = values(tab.column(col).to_pylist())
    typ = tab.schema.field(col).type
    tab = tab.set_column(tab.schema.get_field_index(col), tab.schema.field(col), pa.array(values, typ))
    typed = f"{col}_int"
    if typed in tab.column_names:
        ok = pc.match_substring_regex(tab.column(col), r"^\d+$")
        arr = pc.cast(pc.if_else(ok, tab.column(col), pa.scalar(None, pa.string())), pa.int64())
        tab = tab.set_column(tab.schema.get_field_index(typed), tab.schema.field(typed), arr)
    return tab


def spoil(values: list, every: int, bad):
    """Every ``every``-th value replaced by ``bad`` (a value or a list cycled through)."""
    bads = bad if isinstance(bad, list) else [bad]
    out = list(values)
    for k, i in enumerate(range(0, len(out), every)):
        out[i] = bads[k % len(bads)]
    return out


def run_raw(tmp_path: Path, tables: dict, quarter="2024Q1", record=None, **kw) -> dict:
    data_dir = DataDir(tmp_path / "data")
    write_raw_quarter(data_dir, quarter, tables=tables, record=record)
    kw.setdefault("data_docs", False)
    return quality.validate_raw_quarter(data_dir, quarter, **kw)


def expect_critical(tmp_path, tables, *fragments, **kw) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        run_raw(tmp_path, tables, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    assert info.value.summary["success"] is False
    return info.value


def warnings_of(summary: dict, *fragments) -> list[str]:
    return [w for w in summary["warnings"] if all(f in w for f in fragments)]


def failed(summary: dict, expectation: str, table: str | None = None, column: str | None = None) -> list[dict]:
    return [c for c in summary["checks"] if not c["success"] and c["expectation"] == expectation
            and (table is None or c["table"] == table) and (column is None or column in c["columns"])]


# =============================================================================================
# Suites
# =============================================================================================
def all_suites() -> list[str]:
    return sorted(p.stem for p in quality.EXPECTATIONS_DIR.glob("*.json"))


def test_suites_are_gx_json_with_severities_and_match_the_schemas():
    import great_expectations as gx

    names = all_suites()
    for t in TABLES:
        for era in ("laers", "faers_a", "faers_b"):
            assert quality.raw_suite_name(t, era) in names
    ctx = gx.get_context(mode="ephemeral")
    for name in names:
        suite = quality.load_suite(name)
        assert suite["name"] == name
        ctx.suites.add(gx.ExpectationSuite(**suite))  # GX accepts the file as it is
        assert {e["severity"] for e in suite["expectations"]} <= {CRITICAL, WARNING}
        if name.startswith("raw_") and name != "raw_ingest_record":
            table = suite["meta"]["table"]
            schema_cols = raw_schema(table).names
            assert set(quality.suite_columns(suite)) <= set(schema_cols), name
            [colset] = [e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
            assert colset["kwargs"]["column_set"] == schema_cols, f"{name} is out of date with raw_schema"
            for era, cols in suite["meta"]["expected_columns_by_era"].items():
                assert set(cols) <= set(TEXT_COLUMNS[table]), (name, era)


_MUTATIONS = {
    "expect_column_values_to_not_be_null": lambda s: pd.Series([None] * len(s), dtype=object),
    "expect_column_values_to_be_unique": lambda s: pd.Series([s.iloc[0]] * len(s), dtype=s.dtype),
    "expect_column_values_to_be_in_set": lambda s: pd.Series(["\x00BAD"] * len(s), dtype=object),
    "expect_column_values_to_match_regex": lambda s: pd.Series(["BAD"] * len(s), dtype=object),
    "expect_column_value_lengths_to_be_between": lambda s: pd.Series([""] * len(s), dtype=object),
}


@pytest.mark.parametrize("quarter", ["2024Q1", "2013Q1", "2008Q2"])
def test_every_raw_expectation_can_fail(quarter):
    """No decorative expectations: each one of every raw suite fails on data built to violate it."""
    q = Quarter.parse(quarter)
    tables = make_raw_quarter(q, n_demo=60, seed=5)
    gxr = GxRun(None)
    for table in TABLES + ("DELETED",):
        name = quality.raw_suite_name(table, q.era)
        if quarter == "2013Q1" and name in {quality.raw_suite_name(t, "faers_b") for t in TABLES + ("DELETED",)}:
            continue  # shared with 2024Q1
        suite = quality.load_suite(name)
        base = tables[table].to_pandas()
        for k, e in enumerate(suite["expectations"]):
            one = {**suite, "name": f"{suite['name']}_{k}", "expectations": [e]}
            df, params = base.copy(), {}
            if e["type"] in _MUTATIONS:
                col = e["kwargs"]["column"]
                df[col] = _MUTATIONS[e["type"]](df[col] if len(df) else pd.Series(["x"]))
                if not len(base):
                    df = pd.DataFrame({col: _MUTATIONS[e["type"]](pd.Series(["x", "x"]))})
            elif e["type"] == "expect_table_row_count_to_be_between":
                params = {p: len(df) + 1 for p in ("rows_floor", "rows_typical_min", "rows_rel_min")}
                params.update({p: len(df) + 10 for p in ("rows_ceiling", "rows_typical_max", "rows_rel_max")})
            elif e["type"] == "expect_table_columns_to_match_set":
                df = df.drop(columns=[df.columns[0]])
            else:
                pytest.fail(f"no mutation for {e['type']} in {suite['name']}")
            res = gxr.run(one, df, asset="mut", params=params, run_name=quarter)
            [check] = checks_from_result(res, layer="raw", table=table, scope=quarter, suite=one)
            assert not check.success, f"{suite['name']}: {e['type']}({e['kwargs'].get('column')}) cannot fail"


# =============================================================================================
# Raw: clean data
# =============================================================================================
def test_clean_quarter_passes_writes_json_and_data_docs(tmp_path, clean_2024q1):
    summary = run_raw(tmp_path, clean_2024q1, data_docs=True)
    assert summary["success"] and summary["critical_failures"] == []
    # a small synthetic quarter is far below FDA's typical counts: warned, never raised
    assert len(warnings_of(summary, "expect_table_row_count_to_be_between")) == 7
    assert all("expect_table_row_count_to_be_between" in w for w in summary["warnings"])
    data = tmp_path / "data"
    on_disk = json.loads((data / "validation" / "raw" / "2024Q1.json").read_text())
    assert on_disk["quarter"] == "2024Q1" and on_disk["statistics"] == summary["statistics"]
    named = {c["expectation"]: c for c in on_disk["checks"] if c["engine"] != "great_expectations"}
    assert {"primaryid_in_demo", "demo_has_drug", "demo_has_reac"} <= set(named)
    assert named["primaryid_in_demo"]["severity"] in (CRITICAL, WARNING) and named["primaryid_in_demo"]["notes"]
    index = data / "validation" / "data_docs" / "index.html"
    assert index.exists() and summary["data_docs"] == str(index)
    assert "raw_drug_faers_b" in index.read_text()
    # a second run replaces the quarter's GX results (no pile-up of old runs)
    run_raw(tmp_path, clean_2024q1, data_docs=True)
    assert len(list((data / "validation" / "gx_results" / "raw_drug_faers_b" / "2024Q1").iterdir())) == 1


@pytest.mark.parametrize("quarter", ["2013Q1", "2008Q2"])
def test_clean_older_eras_pass(tmp_path, quarter):
    summary = run_raw(tmp_path, make_raw_quarter(quarter, n_demo=800, seed=4), quarter=quarter)
    assert summary["success"] and summary["era"] == Quarter.parse(quarter).era
    assert all("expect_table_row_count_to_be_between" in w for w in summary["warnings"])


# =============================================================================================
# Raw: broken tables
# =============================================================================================
def test_bad_role_codes(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DRUG"] = set_col(t["DRUG"], "role_cod", lambda v: spoil(v, 3000, ["XX", "P S"]))
    exc = expect_critical(tmp_path, t, "raw DRUG 2024Q1: expect_column_values_to_be_in_set(role_cod) failed: 3 rows",
                          "'XX'", "'P S'")
    [c] = failed(exc.summary, "expect_column_values_to_be_in_set", "DRUG", "role_cod")
    assert c["severity"] == CRITICAL and c["unexpected_count"] == 3


def test_null_and_non_numeric_keys(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DEMO"] = set_col(t["DEMO"], "primaryid", lambda v: spoil(v, 700, ["12A4", ""]))
    exc = expect_critical(tmp_path, t, "raw DEMO 2024Q1: expect_column_values_to_not_be_null(primaryid_int) failed: 3 rows")
    assert failed(exc.summary, "expect_column_values_to_not_be_null", "DEMO", "primaryid_int")[0]["severity"] == CRITICAL


def test_null_caseid_in_faers_child_table(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["REAC"] = set_col(t["REAC"], "caseid", lambda v: spoil(v, 1000, ""))
    expect_critical(tmp_path, t, "raw REAC 2024Q1: expect_column_values_to_not_be_null(caseid_int) failed")


def test_laers_child_tables_have_no_caseid_by_design(tmp_path):
    tables = make_raw_quarter("2008Q2", n_demo=300, seed=8)
    assert pc.all(pc.equal(tables["DRUG"].column("caseid"), "")).as_py()
    assert run_raw(tmp_path, tables, quarter="2008Q2")["success"]


def test_duplicated_primaryids_in_demo(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    ids = t["DEMO"].column("primaryid").to_pylist()
    t["DEMO"] = set_col(t["DEMO"], "primaryid", [ids[0]] + ids[:-1])  # ids[0] twice, last one gone
    exc = expect_critical(tmp_path, t, "raw DEMO 2024Q1: expect_column_values_to_be_unique(primaryid_int) failed: 2 rows",
                          ids[0])
    # the report that lost its DEMO row leaves a few orphan child rows: a warning, below the critical share
    assert exc.summary["warnings"] and any("primaryid_in_demo" in w for w in exc.summary["warnings"])


def test_missing_column_in_parquet(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DRUG"] = t["DRUG"].drop_columns(["prod_ai"])
    exc = expect_critical(tmp_path, t, "raw DRUG 2024Q1: expect_table_columns_to_match_set failed: missing ['prod_ai']")
    assert len(exc.summary["critical_failures"]) == 1


def test_wrong_header_reported_by_ingest(tmp_path, clean_2024q1):
    """FDA renamed/dropped a column: the ingest record lists it missing -> critical (era-aware)."""
    rec = ingest_record_for(clean_2024q1, "2024Q1")
    for f in rec["files"]:
        if f["table"] == "DRUG":
            f["columns_missing"] = ["prod_ai"]
        if f["table"] == "DEMO":
            f["columns_missing"] = ["image", "death_dt", "confid"]  # LAERS-only: expected to be missing
    exc = expect_critical(tmp_path, clean_2024q1, "raw _ingest 2024Q1: expect_column_values_to_be_in_set"
                          "(expected_columns_missing) failed: 1 rows", "'prod_ai'", "'DRUG'", record=rec)
    assert len(exc.summary["critical_failures"]) == 1


def test_faers_a_does_not_expect_prod_ai(tmp_path):
    tables = make_raw_quarter("2013Q1", n_demo=400, seed=2)
    rec = ingest_record_for(tables, "2013Q1")
    for f in rec["files"]:
        f["columns_missing"] = {"DRUG": ["prod_ai"], "REAC": ["drug_rec_act"],
                                "DEMO": ["auth_num", "lit_ref", "age_grp", "image", "death_dt", "confid"]
                                }.get(f["table"], [])
    assert run_raw(tmp_path, tables, quarter="2013Q1", record=rec)["success"]


def test_column_silently_empty(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DRUG"] = set_col(t["DRUG"], "prod_ai", [""] * t["DRUG"].num_rows)
    t["DEMO"] = set_col(t["DEMO"], "fda_dt", [""] * t["DEMO"].num_rows)
    exc = expect_critical(tmp_path, t)
    lines = " | ".join(exc.summary["critical_failures"])
    assert "raw DRUG 2024Q1: expect_column_value_lengths_to_be_between(prod_ai) failed" in lines
    assert "raw DEMO 2024Q1: expect_column_values_to_match_regex(fda_dt) failed: 1,500 rows (100 %)" in lines


def test_reconciliation_mismatch_in_ingest_record(tmp_path, clean_2024q1):
    rec = ingest_record_for(clean_2024q1, "2024Q1")
    for f in rec["files"]:
        if f["table"] == "DRUG":
            f["data_lines"] += 2
    exc = expect_critical(tmp_path, clean_2024q1, "raw _ingest 2024Q1: expect_column_pair_values_to_be_equal"
                          "(data_lines, rows_accounted) failed: 1 rows", "table='DRUG'", record=rec)
    [c] = failed(exc.summary, "expect_column_pair_values_to_be_equal", "_ingest", "data_lines")
    assert c["severity"] == CRITICAL


def test_parquet_rows_differ_from_ingest_record(tmp_path, clean_2024q1):
    rec = ingest_record_for(clean_2024q1, "2024Q1")
    t = dict(clean_2024q1)
    t["REAC"] = t["REAC"].slice(0, t["REAC"].num_rows - 5)
    expect_critical(tmp_path, t, "expect_column_pair_values_to_be_equal(table_rows_written, parquet_rows)",
                    "table='REAC'", record=rec)


def test_quarantine_rate_warning_then_critical(tmp_path, clean_2024q1):
    n_drug = clean_2024q1["DRUG"].num_rows
    rec = ingest_record_for(clean_2024q1, "2024Q1", quarantined={"DRUG": max(1, n_drug // 2000)})  # ~0.05 %
    summary = run_raw(tmp_path, clean_2024q1, record=rec)
    [w] = warnings_of(summary, "quarantine_rate")
    assert w.startswith("raw _ingest 2024Q1: expect_column_values_to_be_between(quarantine_rate) failed: 1 rows")
    rec = ingest_record_for(clean_2024q1, "2024Q1", quarantined={"DRUG": n_drug // 50})  # ~2 %
    # a small file (6 k lines) never fails on its rate alone ...
    assert run_raw(tmp_path, clean_2024q1, record=rec)["success"]
    # ... a real-size one does (quarantine_min_lines, default 10,000)
    exc = expect_critical(tmp_path, clean_2024q1, "raw _ingest 2024Q1: expect_column_values_to_be_between"
                          "(quarantine_rate_large) failed: 1 rows", "table='DRUG'", record=rec,
                          quarantine_min_lines=1000)
    both = failed(exc.summary, "expect_column_values_to_be_between", "_ingest")
    assert sorted(c["severity"] for c in both) == [CRITICAL, WARNING]
    assert [c["kwargs"]["max_value"] for c in both if c["severity"] == CRITICAL] == [pytest.approx(1e-3)]
    # both thresholds are parameters
    assert run_raw(tmp_path, clean_2024q1, record=rec, quarantine_warn=0.05, quarantine_critical=0.1,
                   quarantine_min_lines=1000)["warnings"] == [w for w in summary["warnings"] if "quarantine" not in w]


def test_empty_demo_fails(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DEMO"] = t["DEMO"].slice(0, 0)
    exc = expect_critical(tmp_path, t)
    lines = " | ".join(exc.summary["critical_failures"])
    assert "raw DEMO 2024Q1: expect_table_row_count_to_be_between failed: observed 0 rows, expected 1.." in lines
    assert "primaryid_in_demo" in lines


def test_truncated_drug_file_fails(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DRUG"] = t["DRUG"].slice(0, t["DRUG"].num_rows // 5)
    exc = expect_critical(tmp_path, t, "raw DRUG 2024Q1: expect_table_row_count_to_be_between failed: observed 1,232 "
                          "rows, expected 1,500..22,500")  # fewer DRUG rows than DEMO rows
    lines = " | ".join(exc.summary["critical_failures"])
    assert "raw DEMO 2024Q1: demo_has_drug(primaryid_int) failed: only " in lines
    assert "of 1,500 reports have a DRUG row (limit 90 %)" in lines


def test_missing_table_file_fails(tmp_path, clean_2024q1):
    t = {k: v for k, v in clean_2024q1.items() if k != "INDI"}
    rec = ingest_record_for(t, "2024Q1")
    exc = expect_critical(tmp_path, t, record=rec)
    lines = " | ".join(exc.summary["critical_failures"])
    assert "raw INDI 2024Q1: expect_table_row_count_to_be_between failed: observed 0 rows" in lines
    assert "expect_column_distinct_values_to_contain_set(table) failed: missing ['INDI']" in lines


def test_orphan_child_rows(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["REAC"] = set_col(t["REAC"], "primaryid", lambda v: spoil(v, 20, "999999999"))  # 5 %
    expect_critical(tmp_path, t, "raw REAC 2024Q1: primaryid_in_demo(primaryid_int) failed:", "999999999",
                    "limit 0.1 %")
    t["REAC"] = set_col(clean_2024q1["REAC"], "primaryid", lambda v: spoil(v, 10**9, "999999999"))  # 1 row
    summary = run_raw(tmp_path, t)
    [w] = warnings_of(summary, "primaryid_in_demo")
    assert w.startswith("raw REAC 2024Q1: primaryid_in_demo(primaryid_int) failed: 1 of")


def test_a_few_orphans_in_a_small_quarter_warn(tmp_path, clean_2024q1):
    # 5 orphans are above 0.1 % of a small quarter's REAC rows, but fewer than orphan_min_count (50): a warning
    t = dict(clean_2024q1)
    n = t["REAC"].num_rows
    assert 5 / n > 1e-3
    t["REAC"] = set_col(t["REAC"], "primaryid", lambda v: spoil(v, n // 5, "999999999"))
    summary = run_raw(tmp_path, t)
    [w] = warnings_of(summary, "primaryid_in_demo")
    assert "999999999" in w and not summary["critical_failures"]


def test_code_lists_real_world_extras_warn_garbage_fails(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DEMO"] = set_col(t["DEMO"], "rept_cod", lambda v: spoil(v, 25, "30DAY"))   # 4 % of a real-world extra
    summary = run_raw(tmp_path, t)
    [w] = warnings_of(summary, "expect_column_values_to_be_in_set(rept_cod)")
    assert "more than mostly=0.99 allows" in w and "'30DAY'" in w
    t["DEMO"] = set_col(t["DEMO"], "sex", lambda v: spoil(v, 100, "X"))            # 1 % garbage
    expect_critical(tmp_path, t, "raw DEMO 2024Q1: expect_column_values_to_be_in_set(sex) failed: 15 rows", "'X'")


def test_outcome_codes_are_strict(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["OUTC"] = set_col(t["OUTC"], "outc_cod", lambda v: spoil(v, 10**9, "XX"))  # one row
    expect_critical(tmp_path, t, "raw OUTC 2024Q1: expect_column_values_to_be_in_set(outc_cod) failed: 1 rows", "'XX'")


def test_date_formats(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DEMO"] = set_col(t["DEMO"], "event_dt", lambda v: spoil(v, 20, "2024-01-05"))
    summary = run_raw(tmp_path, t)
    [w] = warnings_of(summary, "expect_column_values_to_match_regex(event_dt)")
    assert "'2024-01-05'" in w


def test_row_bounds_parameter(tmp_path, clean_2024q1):
    exc = expect_critical(tmp_path, clean_2024q1, "raw DEMO 2024Q1: expect_table_row_count_to_be_between failed: "
                          "observed 1,500 rows, expected 150,000..800,000", row_bounds="fda")
    assert len(exc.summary["critical_failures"]) == 7
    expect_critical(tmp_path, clean_2024q1, "expected 2,000..3,000", row_bounds={"DEMO": (2000, 3000)})
    assert run_raw(tmp_path, clean_2024q1, row_bounds={"DEMO": (1000, 3000)})["success"]
    with pytest.raises(PipelineError, match="row_bounds"):
        run_raw(tmp_path, clean_2024q1, row_bounds="huge")


def test_missing_ingest_record(tmp_path, clean_2024q1):
    data_dir = DataDir(tmp_path / "data")
    write_raw_quarter(data_dir, "2024Q1", tables=clean_2024q1)
    data_dir.ingest_record(Quarter.parse("2024Q1")).unlink()
    with pytest.raises(ValidationFailed, match=r"^raw _ingest 2024Q1: ingest_record_present failed: no ingest record"):
        quality.validate_raw_quarter(data_dir, "2024Q1", data_docs=False)


def test_validation_failed_is_a_one_line_pipeline_error(tmp_path, clean_2024q1):
    t = dict(clean_2024q1)
    t["DRUG"] = set_col(t["DRUG"], "role_cod", lambda v: spoil(v, 500, "P\nS"))
    t["OUTC"] = set_col(t["OUTC"], "outc_cod", lambda v: spoil(v, 500, "ZZ"))
    exc = expect_critical(tmp_path, t, "(+1 more critical: OUTC expect_column_values_to_be_in_set(outc_cod))")
    assert isinstance(exc, PipelineError) and exc.exit_code != 0
    on_disk = json.loads((tmp_path / "data" / "validation" / "raw" / "2024Q1.json").read_text())
    assert on_disk["success"] is False and len(on_disk["critical_failures"]) == 2  # written before raising


# =============================================================================================
# Curated tables (hand-made, following docs/CONTRACTS.md)
# =============================================================================================
def make_curated(root: Path, n_demo: int = 200) -> tuple[DataDir, dict]:
    """A raw quarter plus curated tables consistent with it (every DEMO row kept; a few without PT)."""
    dd = DataDir(root / "data")
    raw = write_raw_quarter(dd, "2024Q1", n_demo=n_demo, seed=11)
    demo, drug, reac = (raw[t].to_pandas() for t in ("DEMO", "DRUG", "REAC"))
    no_pt = set(demo["caseid_int"].iloc[:5])  # five kept reports lose their PTs -> not in analysis
    reports = pd.DataFrame({
        "report_id": demo["caseid_int"], "primaryid": demo["primaryid_int"], "caseversion": demo["caseversion_int"],
        "quarter": "2024Q1", "era": "faers_b", "fda_dt": demo["fda_dt_date"], "init_fda_dt": demo["init_fda_dt_date"],
        "event_dt": demo["event_dt"], "age_years": 45.0, "age_band": "45-64", "sex": demo["sex"],
        "reporter_country": demo["reporter_country"], "occp_cod": demo["occp_cod"], "receipt_year": np.int32(2023),
        "has_drug": True, "has_pt": ~demo["caseid_int"].isin(no_pt), "dup_group_id": None, "dup_rule": None, "dup_score": None,
        "is_dup_kept": True})
    reports["in_analysis"] = reports["has_drug"] & reports["has_pt"]
    reports["first_quarter"] = "2024Q1"
    case_of = dict(zip(demo["primaryid_int"], demo["caseid_int"]))
    ing = pd.DataFrame({"report_id": drug["primaryid_int"].map(case_of), "ingredient": drug["drugname"].str.rstrip("."),
                        "role_cod": drug["role_cod"]}).drop_duplicates()
    ing["substance"] = np.where(ing["ingredient"].str.startswith("KETAMINE"), "ketamine", None)
    ing["matched_by"] = "drugname"
    ing["is_exposure"] = ing["role_cod"].isin(["PS", "SS"])
    pts = pd.DataFrame({"report_id": reac["primaryid_int"].map(case_of), "pt": reac["pt"]}).drop_duplicates()
    pts = pts[~pts["report_id"].isin(no_pt)]
    pts["pt_key"] = pts["pt"].str.casefold()
    pts["is_indication"] = False
    n, n_both = len(reports), int(reports["in_analysis"].sum())
    n_ket = int(ing.loc[ing["substance"].notna() & ing["is_exposure"], "report_id"].nunique())
    funnel = pd.DataFrame([
        (1, "raw DEMO rows", n, n, "every DEMO row"), (2, "deleted caseids removed", n, n, "deleted lists"),
        (3, "older versions removed", n, n, "latest version"), (4, "reports without any drug or any PT", n, n_both, "x"),
        (5, "duplicate-flag exclusions", n_both, n_both, "flags"), (6, "analysis population", n_both, n_both, "in"),
        (7, "ketamine-family exposure", n_both, n_ket, "PS+SS")],
        columns=["step", "name", "reports_in", "reports_out", "reason"])
    unmapped = pd.DataFrame({"drugname": ["XYZ TABS", "FOO"], "n_rows": [9, 3], "n_reports": [7, 3]})
    first = reports.iloc[:2]
    conflicts = pd.DataFrame({
        "report_id": first["report_id"].to_numpy(), "primaryid": first["primaryid"].to_numpy(),
        "quarter": "2024Q1", "drug_seq": [1, 2], "role_cod": ["PS", "SS"], "drugname": ["SPRAVATO", "KETAMINE"],
        "prod_ai": ["KETAMINE", "MIDAZOLAM"], "substance_from_drugname": ["esketamine", "ketamine"],
        "substance_from_prod_ai": ["ketamine", None], "chosen": ["esketamine", None],
        "chosen_from": ["drugname", None], "reason": ["drugname more specific", "prod_ai kept"]})
    frames = {"reports": reports, "report_ingredients": ing, "report_pts": pts, "funnel": funnel,
              "unmapped_drugs": unmapped, "name_conflicts": conflicts}
    write_curated(dd, frames, unmapped_share=0.01)
    return dd, frames


def write_curated(dd: DataDir, frames: dict, unmapped_share: float | None = 0.01) -> None:
    from pipeline.curate.tables import CURATED

    for name, df in frames.items():
        schema = CURATED[name]
        write_parquet(pa.Table.from_pandas(df[[f.name for f in schema]], schema=schema, preserve_index=False),
                      dd.curated / f"{name}.parquet")
    if unmapped_share is not None:
        write_json({"summary": {"drugs": {"unmapped_share": unmapped_share}}}, dd.curated / "manifest.json")


def curated_critical(dd: DataDir, *fragments) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        quality.validate_curated(dd, None, data_docs=False)
    msg = str(info.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return info.value


def test_curated_clean_passes(tmp_path):
    dd, _ = make_curated(tmp_path)
    s = quality.validate_curated(dd, None, data_docs=False)
    assert s["success"] and s["warnings"] == [] and s["rows"]["reports"] == 200
    assert json.loads((dd.validation / "curated" / "curated.json").read_text())["success"] is True
    assert {c["expectation"] for c in s["checks"] if c["engine"] != "great_expectations"} >= {
        "no_deleted_caseid", "report_id_in_reports", "funnel_starts_with_raw_demo_rows",
        "funnel_ends_at_analysis_population"}


def test_curated_one_row_per_report_id(tmp_path):
    dd, f = make_curated(tmp_path)
    rep = f["reports"].copy()
    rep.loc[1, "report_id"] = rep.loc[0, "report_id"]
    write_curated(dd, {**f, "reports": rep})
    curated_critical(dd, "curated reports: expect_column_values_to_be_unique(report_id) failed: 2 rows",
                     str(rep.loc[0, "report_id"]))


def test_curated_one_row_per_report_and_pt(tmp_path):
    # the report's counting reads report_pts as distinct (report, PT) rows: a PT twice in a report is critical,
    # also when the two rows differ only in is_indication
    dd, f = make_curated(tmp_path)
    pts = f["report_pts"]
    twice = pts.iloc[[0]].assign(is_indication=True)
    write_curated(dd, {**f, "report_pts": pd.concat([pts, twice], ignore_index=True)})
    curated_critical(dd, "curated report_pts: expect_compound_columns_to_be_unique", "failed: 2 rows")


def test_curated_deleted_caseid_left(tmp_path):
    dd, f = make_curated(tmp_path)
    deleted = pq.read_table(dd.raw_part("DELETED", Quarter.parse("2024Q1"))).column("caseid_int")[0].as_py()
    rep = f["reports"].copy()
    rep.loc[3, "report_id"] = deleted
    ing = f["report_ingredients"].replace({"report_id": {f["reports"].loc[3, "report_id"]: deleted}})
    pts = f["report_pts"].replace({"report_id": {f["reports"].loc[3, "report_id"]: deleted}})
    write_curated(dd, {**f, "reports": rep, "report_ingredients": ing, "report_pts": pts})
    curated_critical(dd, f"curated reports: no_deleted_caseid(report_id) failed: 1 deleted caseid(s) still in "
                         f"reports, e.g. {deleted}")


def test_curated_in_analysis_report_without_pt(tmp_path):
    dd, f = make_curated(tmp_path)
    rep = f["reports"].copy()
    rep.loc[0, "in_analysis"] = True  # report 0 has no PT rows (see make_curated)
    write_curated(dd, {**f, "reports": rep})
    exc = curated_critical(dd, "curated analysis_population: expect_column_values_to_be_in_set(has_pt) failed: 1 rows")
    lines = " | ".join(exc.summary["critical_failures"])
    assert "expect_column_values_to_be_between(n_pt_rows) failed: 1 rows" in lines
    assert f"report_id={rep.loc[0, 'report_id']}" in lines


def test_curated_broken_funnel(tmp_path):
    dd, f = make_curated(tmp_path)
    fun = f["funnel"].copy()
    fun.loc[2, "reports_in"] += 7       # step 3 does not start where step 2 ended
    write_curated(dd, {**f, "funnel": fun})
    exc = curated_critical(dd, "curated funnel: expect_column_pair_values_to_be_equal(reports_in, prev_reports_out) "
                               "failed: 1 rows", "step=3")
    assert all("expect_column_pair_values_a_to_be_greater_than_b(reports_in, reports_out)" not in x
               for x in exc.summary["critical_failures"])
    fun = f["funnel"].copy()
    fun.loc[4, "reports_out"] += 1      # a step that adds a report; the chain then breaks at step 6 as well
    fun.loc[5, ["reports_in", "reports_out"]] += 1
    fun.loc[6, "reports_in"] += 1
    write_curated(dd, {**f, "funnel": fun})
    exc = curated_critical(dd, "curated funnel: expect_column_pair_values_a_to_be_greater_than_b(reports_in, "
                               "reports_out) failed: 1 rows", "step=5")
    assert any("funnel_ends_at_analysis_population" in x for x in exc.summary["critical_failures"])
    fun = f["funnel"].copy()
    fun.loc[0, ["reports_in", "reports_out"]] -= 1  # the funnel does not start with every raw DEMO row
    fun.loc[1, "reports_in"] -= 1
    write_curated(dd, {**f, "funnel": fun})
    exc = curated_critical(dd)
    assert ("curated funnel: funnel_starts_with_raw_demo_rows(reports_in) failed: step 1 reports_in is 199, raw DEMO "
            "has 200 rows") in exc.summary["critical_failures"]


def test_curated_unmapped_share_warns(tmp_path):
    dd, f = make_curated(tmp_path)
    write_curated(dd, f, unmapped_share=0.2)
    s = quality.validate_curated(dd, None, data_docs=False)
    assert s["success"] and s["warnings"] == [
        "curated drug_mapping: expect_column_values_to_be_between(unmapped_share) failed: 1 rows (100 %), e.g. 0.2"]
    assert quality.validate_curated(dd, {"thresholds": {"unmapped_share_max": 0.3}}, data_docs=False)["warnings"] == []


def test_curated_orphan_ingredient_rows_and_bad_role(tmp_path):
    dd, f = make_curated(tmp_path)
    ing = f["report_ingredients"].copy()
    ing.loc[ing.index[0], "report_id"] = 424242
    ing.loc[ing.index[1], "role_cod"] = "XX"
    write_curated(dd, {**f, "report_ingredients": ing})
    exc = curated_critical(dd, "report_id_in_reports(report_id) failed: 1 report_id(s) not in reports, e.g. 424242")
    # an unknown role code is raw data as given (never an exposure role): a warning, not a failed run
    assert not any("(role_cod)" in x for x in exc.summary["critical_failures"])
    assert any("expect_column_values_to_be_in_set(role_cod) failed: 1 rows" in w and "'XX'" in w
               for w in exc.summary["warnings"])


def test_curated_name_conflicts_checked(tmp_path):
    """A listed conflict belongs to a kept report and counts one family substance per drug row."""
    dd, f = make_curated(tmp_path)
    nc = f["name_conflicts"].copy()
    nc.loc[0, "report_id"] = 434343
    nc.loc[1, "chosen"] = "esketamine+ketamine"
    write_curated(dd, {**f, "name_conflicts": nc})
    exc = curated_critical(dd, "curated name_conflicts: expect_column_values_to_be_in_set(chosen) failed: 1 rows")
    assert any("curated name_conflicts: report_id_in_reports(report_id) failed: 1 report_id(s) not in reports, "
               "e.g. 434343" in x for x in exc.summary["critical_failures"])


# =============================================================================================
# Outputs (statistics of a report)
# =============================================================================================
@pytest.fixture(scope="module")
def scored():
    """Report-style statistics (pipeline.reports.build.score) of the PVDA reference data with a fixed prior."""
    from pipeline.reports.build import score
    from pipeline.settings import load_config
    from pipeline.stats import count_pairs
    from pipeline.stats.mgps import MgpsFit

    df = pd.read_csv(FIXTURES / "reference" / "pvda_drug_event_df.csv")
    counts = count_pairs(df[["report_id", "drug"]], df[["report_id", "event"]])
    fit = MgpsFit(theta=(0.2, 0.1, 2.0, 4.0, 1 / 3), loglik=-1234.5, converged=True)
    res = score(counts.to_pandas(), load_config(), fit)
    assert np.isfinite(res["ebgm"]).all() and res["signal_prr"].any() and (res["eb05"] >= 1.0).any()
    signals = res.rename(columns={"drug": "substance", "event": "pt"}).assign(pt_group=None)
    return signals, res, fit.as_dict()


def outputs_critical(tmp_path, signals, all_pairs, mgps, *fragments, **kw) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        quality.validate_outputs(tmp_path / "reports" / "run1", signals, all_pairs, mgps, None, data_docs=False, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return info.value


def test_outputs_clean_pass_nan_and_inf_are_legitimate(tmp_path, scored):
    signals, all_pairs, mgps = scored
    sig = signals.copy()
    sig.loc[0, ["prr", "prr_hi"]] = [np.inf, np.inf]        # c = 0: PRR undefined upwards
    sig.loc[1, ["ror", "ror_lo", "ror_hi"]] = np.nan        # undefined ROR
    s = quality.validate_outputs(tmp_path / "reports" / "run1", sig, all_pairs, mgps, None, data_docs=True)
    assert s["success"] and s["warnings"] == []
    assert (tmp_path / "reports" / "run1" / "validation.json").exists()
    assert (tmp_path / "validation" / "outputs" / "run1.json").exists()
    assert (tmp_path / "validation" / "data_docs" / "index.html").exists()


def test_outputs_counts_do_not_add_up(tmp_path, scored):
    signals, all_pairs, mgps = scored
    sig = signals.copy()
    sig.loc[7, "d"] += 1
    exc = outputs_critical(tmp_path, sig, all_pairs, mgps, "outputs signals run1: expect_column_pair_values_to_be_equal"
                           "(abcd_sum, n_total) failed: 1 rows", f"substance='{sig.loc[7, 'substance']}'")
    assert exc.summary["critical_failures"][0].startswith("outputs signals run1")


def test_outputs_negative_count_and_a_above_margin(tmp_path, scored):
    signals, all_pairs, mgps = scored
    pairs = all_pairs.copy()
    pairs.loc[3, "b"] = -1
    pairs.loc[3, "d"] += 1  # keeps a+b+c+d = n_total
    exc = outputs_critical(tmp_path, signals, pairs, mgps, "outputs all_pairs run1:")
    lines = " | ".join(exc.summary["critical_failures"])
    assert "expect_column_values_to_be_between(b) failed: 1 rows" in lines
    assert "expect_column_pair_values_a_to_be_greater_than_b(a_max, a) failed: 1 rows" in lines


def test_outputs_eb05_above_eb95_and_ci_order(tmp_path, scored):
    signals, all_pairs, mgps = scored
    sig = signals.copy()
    sig.loc[2, "eb05"] = sig.loc[2, "eb95"] * 1.5
    sig.loc[4, "prr_lo"] = sig.loc[4, "prr"] + 1
    exc = outputs_critical(tmp_path, sig, all_pairs, mgps, "outputs signals run1:",
                           thresholds={"eb05_min": 1e9, "prr_min": 1e9, "ror_lo_min": 1e9, "ic025_min": 1e9})
    lines = " | ".join(exc.summary["critical_failures"])
    assert "expect_column_values_to_be_between(eb95_minus_eb05) failed: 1 rows" in lines
    assert "expect_column_values_to_be_between(prr_minus_prr_lo) failed: 1 rows" in lines
    assert "ebgm_minus_eb05" not in lines  # EB05 > EBGM is a warning (below)


def test_outputs_ebgm_outside_eb05_eb95_is_a_counted_warning(tmp_path, scored):
    """EBGM of a mixture posterior can lie outside [EB05, EB95] (tests/stats/test_mgps.py proves it): a warning
    with the number of rows, never a failed run."""
    signals, all_pairs, mgps = scored
    sig = signals.copy()
    sig.loc[[1, 3], "ebgm"] = sig.loc[[1, 3], "eb95"] * 1.1
    s = quality.validate_outputs(tmp_path / "reports" / "run1", sig, all_pairs, mgps, None, data_docs=False)
    assert s["success"] and s["warnings"] == [
        "outputs signals run1: expect_column_values_to_be_between(eb95_minus_ebgm) failed: 2 rows (" + 
        s["warnings"][0].split("failed: 2 rows (", 1)[1]]


def test_outputs_flag_inconsistent_with_threshold(tmp_path, scored):
    signals, all_pairs, mgps = scored
    sig = signals.copy()
    k = int(np.flatnonzero(~sig["signal_prr"].to_numpy())[0])
    sig.loc[k, "signal_prr"] = True
    outputs_critical(tmp_path, sig, all_pairs, mgps, "outputs signals run1: expect_column_pair_values_to_be_equal"
                     "(signal_prr, signal_prr_expected) failed: 1 rows", "signal_prr=True, signal_prr_expected=False")
    # the rule comes from the thresholds: the engine output itself fails against other thresholds
    outputs_critical(tmp_path, signals, all_pairs, mgps, "(signal_ebgm, signal_ebgm_expected)",
                     "signal_ebgm=False, signal_ebgm_expected=True", thresholds={"eb05_min": 1.0})


def test_outputs_mgps_hyperparameters(tmp_path, scored):
    signals, all_pairs, mgps = scored
    bad = {**mgps, "theta": {**mgps["theta"], "alpha1": float("inf"), "p": 1.5}}
    exc = outputs_critical(tmp_path, signals, all_pairs, bad, "outputs mgps run1: expect_column_values_to_be_between")
    lines = " | ".join(exc.summary["critical_failures"])
    assert "(alpha1)" in lines and "(p)" in lines
    s = quality.validate_outputs(tmp_path / "reports" / "run1", signals, all_pairs, {**mgps, "converged": False},
                                 None, data_docs=False)
    assert s["success"] and s["warnings"] == [
        "outputs mgps run1: expect_column_values_to_be_in_set(converged) failed: 1 rows (100 %), e.g. False"]


# =============================================================================================
# Integration: real FDA samples through ingest (which calls validate_raw_quarter) and curate
# =============================================================================================
@pytest.fixture(scope="module")
def ingested_samples(tmp_path_factory):
    from pipeline.ingest import ingest

    dd = DataDir(tmp_path_factory.mktemp("samples") / "data")
    dd.landing.mkdir(parents=True)
    for z in ("faers_ascii_2017q2.zip", "aers_ascii_2004q1.zip"):
        shutil.copy(FIXTURES / "Yunuuuu_faers" / z, dd.landing / z)
    results = ingest(dd, progress=False)  # validate=True: a critical failure would raise here
    return dd, results


def test_real_sample_zips_pass_validation_inside_ingest(ingested_samples):
    dd, results = ingested_samples
    assert sorted(str(r.quarter) for r in results) == ["2004Q1", "2017Q2"]
    for r in results:
        v = r.validation
        assert v["success"] and v["critical_failures"] == []
        # 100 sampled reports: only FDA's typical quarter sizes are (rightly) warned about
        assert v["warnings"] and all("expect_table_row_count_to_be_between" in w for w in v["warnings"])
        assert (dd.validation / "raw" / f"{r.quarter}.json").exists()
    assert not (dd.root / ".staging").exists()
    # GX results are published from ingest's staging area into the real tree; Data Docs render on demand
    assert (dd.validation / "gx_results" / "raw_demo_laers" / "2004Q1").is_dir()
    index = quality.build_data_docs(dd)
    assert index == str(dd.validation / "data_docs" / "index.html")
    html = Path(index).read_text()
    assert "raw_demo_laers" in html and "raw_drug_faers_b" in html


def test_real_file_heads_fail_only_on_their_partial_joins(tmp_path):
    """The 2012Q4/2020Q3 samples are the first rows of each file, so most reports lack DRUG/REAC rows: the
    coverage check catches exactly that; everything else on these real rows passes."""
    from pipeline.ingest import ingest
    from tests.support.fda import faers12_zip, faers20_zip

    dd = DataDir(tmp_path / "data")
    faers12_zip(dd.landing / "faers_ascii_2012q4.zip")
    faers20_zip(dd.landing / "faers_ascii_2020q3.zip")
    ingest(dd, progress=False, validate=False)
    for q in ("2012Q4", "2020Q3"):
        with pytest.raises(ValidationFailed, match=rf"^raw DEMO {q}: demo_has_drug\(primaryid_int\) failed: only"):
            quality.validate_raw_quarter(dd, q, data_docs=False)
        s = quality.validate_raw_quarter(dd, q, data_docs=False, coverage_critical=0.0)
        assert s["success"]


def test_curate_output_of_real_samples_passes(ingested_samples):
    from pipeline.curate import curate
    from pipeline.settings import load_config

    dd, _ = ingested_samples
    config = load_config()
    curate(dd, config, progress=False)
    s = quality.validate_curated(dd, config, data_docs=False)
    assert s["success"], s["critical_failures"]
    assert s["rows"]["reports"] > 150


def test_in_memory_tables_are_checked_against_the_files_on_disk(tmp_path, clean_2024q1):
    """ingest may hand over the rows it holds (``tables=``): values are validated from memory, while the
    column set and row counts still come from the Parquet footers."""
    rec = ingest_record_for(clean_2024q1, "2024Q1")
    dd = DataDir(tmp_path / "data")
    t = dict(clean_2024q1)
    t["REAC"] = t["REAC"].slice(0, t["REAC"].num_rows - 3)  # what reached the disk is short
    write_raw_quarter(dd, "2024Q1", tables=t, record=rec)
    with pytest.raises(ValidationFailed, match=r"\(table_rows_written, parquet_rows\) failed: 1 rows"):
        quality.validate_raw_quarter(dd, "2024Q1", data_docs=False, tables=clean_2024q1)
    write_raw_quarter(dd, "2024Q1", tables=clean_2024q1, record=rec)
    assert quality.validate_raw_quarter(dd, "2024Q1", data_docs=False, tables=clean_2024q1)["success"]


# =============================================================================================
# Curated and output suites: every expectation can fail too
# =============================================================================================
def _mutate(e: dict, df: pd.DataFrame, params: dict) -> pd.DataFrame:
    """``df`` changed so that expectation ``e`` must fail."""
    kw, t, df = e["kwargs"], e["type"], df.copy()
    resolve = lambda v: params[v["$PARAMETER"]] if isinstance(v, dict) else v  # noqa: E731
    if t in _MUTATIONS:
        df[kw["column"]] = _MUTATIONS[t](df[kw["column"]])
    elif t == "expect_column_values_to_be_between":
        lo, hi = resolve(kw.get("min_value")), resolve(kw.get("max_value"))
        df[kw["column"]] = (lo - max(1.0, abs(lo))) if lo is not None else (hi + max(1.0, abs(hi)))
    elif t == "expect_column_pair_values_to_be_equal":
        b = df[kw["column_B"]]
        df[kw["column_A"]] = ~b.astype(bool) if b.dtype == bool else b + 1
    elif t == "expect_column_pair_values_a_to_be_greater_than_b":
        df[kw["column_A"]] = df[kw["column_B"]] - 1
    elif t == "expect_compound_columns_to_be_unique":
        for c in kw["column_list"]:
            df[c] = df[c].iloc[0]
    elif t == "expect_column_values_to_be_increasing":
        df[kw["column"]] = df[kw["column"]].to_numpy()[::-1]
    elif t == "expect_table_row_count_to_be_between":
        df = df.head(0)
    elif t == "expect_table_columns_to_match_set":
        df = df.drop(columns=[kw["column_set"][0]])
    else:
        raise AssertionError(f"no mutation for {t}")
    return df


def test_every_curated_and_output_expectation_can_fail(tmp_path, scored):
    dd, f = make_curated(tmp_path)
    reports = f["reports"]
    pop = reports.loc[reports["in_analysis"], ["report_id", "has_drug", "has_pt"]].assign(n_drug_rows=2, n_pt_rows=1)
    funnel = f["funnel"].assign(prev_reports_out=lambda x: x["reports_out"].shift(1).fillna(x["reports_in"]).astype(int))
    signals, all_pairs, mgps = scored
    rules = quality.signal_rules(None)
    mg = pd.DataFrame([{**mgps["theta"], "neg_loglik": mgps["neg_loglik"], "converged": True, "published": True,
                        "agreement": True}])
    bases = {
        "curated_reports": reports, "curated_report_ingredients": f["report_ingredients"],
        "curated_report_pts": f["report_pts"], "curated_funnel": funnel, "curated_unmapped_drugs": f["unmapped_drugs"],
        "curated_name_conflicts": f["name_conflicts"], "curated_analysis_population": pop, "curated_drug_mapping": pd.DataFrame({"unmapped_share": [0.01]}),
        "outputs_signals": outputs_frame(signals, ["substance", "pt", "pt_group"], rules),
        "outputs_all_pairs": outputs_frame(all_pairs, ["drug", "event"], rules),
        "outputs_mgps": mg,
        # the analyses' curated tables (OUTC, family drug rows, INDI, THER of the kept version)
        "curated_report_outcomes": pd.DataFrame({"report_id": [1, 1, 2], "outc_cod": ["DE", "HO", "OT"]}),
        "curated_report_substance_drugs": pd.DataFrame({
            "report_id": [1, 2], "drug_seq": [1, 3], "substance": ["esketamine", "ketamine"], "role_cod": ["PS", "C"],
            "route": ["Nasal", None]}),
        "curated_report_indications": pd.DataFrame({"report_id": [1, 2], "drug_seq": [1, 3],
                                                    "pt": ["Depression", "Anaesthesia"],
                                                    "pt_key": ["depression", "anaesthesia"]}),
        "curated_report_therapies": pd.DataFrame({"report_id": [1, 2], "drug_seq": [1, 3],
                                                  "start_dt": ["20230105", "2023"],
                                                  "start_date": [pd.Timestamp("2023-01-05"), None]}),
    }
    params = {"unmapped_share_max": 0.05, "ci_tolerance": -1e-9}
    assert set(bases) == {n for n in all_suites() if not n.startswith("raw_")}
    gxr = GxRun(None)
    for name, base in bases.items():
        suite = quality.load_suite(name)
        clean = gxr.run(suite, base, asset="clean", params=params, run_name="t")
        assert clean.success, (name, [r.expectation_config.type for r in clean.results if not r.success])
        for k, e in enumerate(suite["expectations"]):
            one = {**suite, "name": f"{name}_{k}", "expectations": [e]}
            res = gxr.run(one, _mutate(e, base, params), asset="mut", params=params, run_name="t")
            assert not res.success, f"{name}: {e['type']}({e['kwargs']}) cannot fail"


def test_a_handful_of_repeated_demo_primaryids_only_warns(tmp_path):
    """Real FAERS 2012Q4 ships 4 primaryids with two conflicting DEMO rows: a handful in a big
    quarter is a warning (curation keeps one), more than 0.01 % of rows stays critical (test above)."""
    t = make_raw_quarter("2024Q1", n_demo=25_000, seed=5)
    ids = t["DEMO"].column("primaryid").to_pylist()
    t["DEMO"] = set_col(t["DEMO"], "primaryid", [ids[0]] + ids[:-1])
    summary = run_raw(tmp_path, t)
    assert summary["success"] and not summary["critical_failures"]
    assert any("expect_column_values_to_be_unique(primaryid_int)" in w for w in summary["warnings"])


def test_table_by_table_validation_in_any_order_equals_the_whole_quarter(tmp_path, clean_2024q1):
    """Ingest hands rows over as members finish (any order, rows before their file is written): the checks
    are the same as validating the finished quarter in one go, DRUG/REAC waiting for DEMO's row count."""
    from pipeline.layout import DELETED, TABLES

    spoiled = dict(clean_2024q1)
    spoiled["DRUG"] = set_col(spoiled["DRUG"], "role_cod", lambda v: spoil(v, 50, "XX"))
    rec = ingest_record_for(spoiled, "2024Q1")
    whole = DataDir(tmp_path / "whole")
    write_raw_quarter(whole, "2024Q1", tables=spoiled, record=rec)
    expected = quality.validate_raw_quarter(whole, "2024Q1", data_docs=False, tables=spoiled,
                                            raise_on_critical=False)

    stepwise = DataDir(tmp_path / "stepwise")
    v = quality.RawQuarterValidation(stepwise, "2024Q1", data_docs=False, raise_on_critical=False)
    for table in reversed(TABLES + (DELETED,)):  # DRUG and REAC arrive before DEMO
        v.add_rows(table, spoiled[table])
        assert ("DRUG" in v._data_checks) == ("DEMO" in v.n_rows)
        write_parquet(spoiled[table], stepwise.raw_part(table, Quarter.parse("2024Q1")))
        v.add_file(table)
    write_json(rec, stepwise.ingest_record(Quarter.parse("2024Q1")))
    got = v.finish()

    def key(s):
        return [(c["table"], c["expectation"], c["severity"], c["success"], c.get("unexpected_count"))
                for c in s["checks"]]

    assert key(got) == key(expected)
    assert not got["success"] and any("role_cod" in str(c) for c in got["critical_failures"])


def test_validation_cannot_finish_with_a_table_missing(tmp_path, clean_2024q1):
    v = quality.RawQuarterValidation(DataDir(tmp_path / "d"), "2024Q1", data_docs=False)
    v.add_rows("DEMO", clean_2024q1["DEMO"])
    with pytest.raises(PipelineError, match="before .*DRUG"):
        v.finish()


def test_curated_validation_in_parts_equals_whole(tmp_path):
    """Big tables are validated in parts of whole reports: the same checks, counts and verdicts as in one piece,
    including a duplicate report_id, a null report_id, a blank PT and an empty table's row count."""
    dd, f = make_curated(tmp_path, n_demo=300)
    rep = f["reports"].copy()
    rep.loc[1, "report_id"] = rep.loc[0, "report_id"]           # a duplicate: both rows fall in one part
    pts = f["report_pts"].copy()
    pts.iloc[[3, 60, 120, 180, 240], pts.columns.get_loc("pt")] = ""  # blank PTs of several reports and parts
    ing = f["report_ingredients"].copy()
    ing.loc[ing.index[5], "report_id"] = None                    # a row of no report: held by no part
    write_curated(dd, {**f, "reports": rep, "report_pts": pts, "report_ingredients": ing})

    def checks(**kw):
        s = quality.validate_curated(dd, None, data_docs=False, raise_on_critical=False, workers=0, **kw)
        return sorted((c["table"], c["expectation"], tuple(c["columns"]), c["success"], c.get("unexpected_count"),
                       c.get("element_count")) for c in s["checks"])

    whole = checks()
    parts = checks(chunk_rows=50)                                # every big table in 8-32 parts
    assert parts == whole
    assert ("reports", "expect_column_values_to_be_unique", ("report_id",), False, 2, 300) in whole
    assert any(c[0] == "report_pts" and c[1] == "expect_column_value_lengths_to_be_between" and c[4] == 5
               for c in parts)
    assert any(c[0] == "report_ingredients" and c[1] == "expect_column_values_to_not_be_null" and c[2] == ("report_id",)
               and c[3] is False and c[4] == 1 for c in parts)


@pytest.mark.slow
def test_curated_validation_in_worker_processes_equals_one_process(tmp_path):
    """The tables' suites in two worker processes give the summary of one process: every check, in the same
    order, with the same counts, examples and details, a critical failure among them; the same Data Docs pages."""
    dd, f = make_curated(tmp_path, n_demo=300)
    rep = f["reports"].copy()
    rep.loc[1, "report_id"] = rep.loc[0, "report_id"]           # a critical failure inside a worker's table
    pts = f["report_pts"].copy()
    pts.iloc[[3, 60], pts.columns.get_loc("pt")] = ""
    write_curated(dd, {**f, "reports": rep, "report_pts": pts})

    def summary(workers):
        return quality.validate_curated(dd, None, data_docs=True, docs_dir=tmp_path / f"docs{workers}",
                                        raise_on_critical=False, workers=workers, chunk_rows=64)

    def pages(workers):
        return sorted(p.name for p in (tmp_path / f"docs{workers}" / "expectations").glob("*.html"))

    one, two = summary(0), summary(2)
    assert pages(2) == pages(0) and "curated_report_pts.html" in pages(0)
    assert (one["workers"], two["workers"]) == (0, 2)
    assert two["checks"] == one["checks"]
    assert two["critical_failures"] == one["critical_failures"] != []
    assert two["warnings"] == one["warnings"]
    assert {c["table"] for c in two["checks"]} >= {"reports", "report_pts", "report_ingredients", "funnel"}


def _workers_in_daemon(q):
    from pipeline.quality.curated_tables import workers_for

    q.put(workers_for(10**9))


def test_validation_workers_only_for_big_folders_and_never_inside_a_daemon(monkeypatch):
    """Worker processes only from PARALLEL_MIN_ROWS rows, never inside a daemonic process (a Celery pool
    process may not start children), and FAERS_VALIDATION_WORKERS overrides."""
    import multiprocessing

    from pipeline.quality.curated_tables import PARALLEL_MIN_ROWS, workers_for

    monkeypatch.delenv("FAERS_VALIDATION_WORKERS", raising=False)
    assert workers_for(PARALLEL_MIN_ROWS - 1) == 0
    assert workers_for(PARALLEL_MIN_ROWS) == min(2, os.cpu_count() or 1)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_workers_in_daemon, args=(q,), daemon=True)
    p.start()
    assert q.get(timeout=60) == 0
    p.join(60)
    monkeypatch.setenv("FAERS_VALIDATION_WORKERS", "0")
    assert workers_for(10**9) == 0
    monkeypatch.setenv("FAERS_VALIDATION_WORKERS", "two")
    with pytest.raises(PipelineError, match="FAERS_VALIDATION_WORKERS must be a whole number"):
        workers_for(0)


def test_orphan_lookup_by_binary_search_equals_a_set_difference():
    """The orphan check's lookup (sorted report ids, binary search) against a brute-force set difference: ids
    below, between and above the reference, duplicates, nulls, an empty reference."""
    from pipeline.quality.curated import _not_in, _sorted_unique

    rng = np.random.default_rng(5)
    reports = pa.array(rng.choice(10_000, 3_000, replace=False).tolist() + [None], pa.int64())
    ref = _sorted_unique(reports)
    assert ref.tolist() == sorted(set(reports.drop_null().to_pylist()))
    for ids in (pa.array(rng.integers(-50, 10_050, 5_000).tolist() + [None, None], pa.int64()),
                pa.array([], pa.int64()), pa.array([ref[0], ref[-1]], pa.int64())):
        got = _not_in(ids, ref).to_pylist()
        want = [x for x in ids.to_pylist() if x is None or x not in set(ref.tolist())]
        assert sorted(got, key=lambda x: (x is None, x)) == sorted(want, key=lambda x: (x is None, x))
    assert _not_in(pa.array([1, None], pa.int64()), _sorted_unique(pa.array([], pa.int64()))).to_pylist() == [1, None]
