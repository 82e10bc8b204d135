"""Ingest: every era and documented quirk, reconciliation, quarantine, zip safety, atomic replace."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.errors import IngestError
import numpy as np
import pandas as pd

from pipeline.ingest import classify_members, finish_table, ingest, parse_delimited
from pipeline.layout import DELETED, TABLES, DataDir
from pipeline.quarters import Quarter
from pipeline.schemas import raw_schema
from tests.support.fda import (
    FIXTURES,
    HEADERS_B,
    demo_row,
    faers12_zip,
    faers20_zip,
    minimal_quarter,
    write_zip,
)


def _data_dir(tmp_path: Path) -> DataDir:
    dd = DataDir(tmp_path / "data")
    dd.landing.mkdir(parents=True)
    return dd


def _read(dd: DataDir, table: str, q: str):
    return pq.read_table(dd.raw_part(table, Quarter.parse(q)))


def _record(dd: DataDir, q: str) -> dict:
    return json.loads(dd.ingest_record(Quarter.parse(q)).read_text())


def _nonblank_lines(data: bytes) -> int:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return sum(1 for line in data.split(b"\n")[1:] if line.strip(b"\r"))


# ---------------------------------------------------------------------------------------------
# Real samples, one per era
# ---------------------------------------------------------------------------------------------
def test_real_samples_every_era_reconcile(tmp_path):
    dd = _data_dir(tmp_path)
    for z in (FIXTURES / "Yunuuuu_faers").glob("*.zip"):
        (dd.landing / z.name).write_bytes(z.read_bytes())
    faers12_zip(dd.landing / "faers_ascii_2012q4.zip")
    faers20_zip(dd.landing / "faers_ascii_2020Q3.zip")
    results = ingest(dd, progress=False, validate=False)
    assert [str(r.quarter) for r in results] == ["2004Q1", "2012Q4", "2017Q2", "2020Q3"]
    for r in results:
        rec = _record(dd, str(r.quarter))
        assert rec["reconciled"]
        with zipfile.ZipFile(r.zip_path) as zf:
            for f in rec["files"]:
                if f["table"] == DELETED:
                    continue
                # independent count: non-blank lines after the header in the member itself
                assert f["data_lines"] == _nonblank_lines(zf.read(f["member"])), f["member"]
                assert f["rows_written"] + f["quarantined"] == f["data_lines"]
                assert _read(dd, f["table"], str(r.quarter)).num_rows == f["rows_written"]
        for t in TABLES + (DELETED,):
            assert _read(dd, t, str(r.quarter)).schema.equals(raw_schema(t), check_metadata=False)


def test_laers_2004q1(tmp_path):
    dd = _data_dir(tmp_path)
    src = FIXTURES / "Yunuuuu_faers" / "aers_ascii_2004q1.zip"
    (dd.landing / src.name).write_bytes(src.read_bytes())
    ingest(dd, progress=False, validate=False)
    demo = _read(dd, "DEMO", "2004Q1").to_pandas()
    assert set(demo["era"]) == {"laers"}
    # isr -> primaryid, case -> caseid; blank foll_seq is the initial version 0, never null
    assert demo.loc[0, "primaryid"] == "4263742" and demo.loc[0, "caseid"] == "4061110"
    assert demo["caseversion_int"].notna().all()
    assert (demo.loc[demo["caseversion"] == "", "caseversion_int"] == 0).all()
    assert demo.loc[0, "sex"] == "F"  # gndr_cod alias
    assert demo.loc[0, "i_f_code"] == "I"  # i_f_cod alias
    drug = _read(dd, "DRUG", "2004Q1").to_pandas()
    assert (drug["caseid"] == "").all()  # LAERS child tables carry only the ISR
    assert drug.loc[0, "drug_seq"] == "1004492716"
    ther = _read(dd, "THER", "2004Q1").to_pandas()
    assert ther["dsg_drug_seq"].str.len().gt(0).all()  # drug_seq -> dsg_drug_seq in LAERS THER
    rec = _record(dd, "2004Q1")
    assert "v23" in rec["files"][0]["columns_unknown"]  # the re-writer's name for the trailing field


def test_faers_a_2012q4_aliases_bom_lowercase_names(tmp_path):
    dd = _data_dir(tmp_path)
    faers12_zip(dd.landing / "faers_ascii_2012q4.zip")
    ingest(dd, progress=False, validate=False)
    demo = _read(dd, "DEMO", "2012Q4").to_pandas()
    assert demo.loc[0, "primaryid"] == "34483284"
    assert demo.loc[0, "sex"] == "F"                # gndr_cod
    assert demo.loc[0, "rept_dt"] == "20121128"     # " rept_dt" with its leading space
    assert demo.loc[0, "caseversion_int"] == 4
    drug = _read(dd, "DRUG", "2012Q4").to_pandas()
    assert drug.loc[0, "primaryid"] == "34483284"   # the BOM did not glue onto the first header
    assert (drug["prod_ai"] == "").all()             # FAERS-A has no prod_ai
    assert drug.loc[0, "nda_num"] == "020972"        # leading zero kept
    outc = _read(dd, "OUTC", "2012Q4").to_pandas()
    assert outc.loc[0, "outc_cod"] == "OT"           # outc_code


def test_faers_b_2020q3_crlf_cut_last_line_and_deleted(tmp_path):
    dd = _data_dir(tmp_path)
    faers20_zip(dd.landing / "faers_ascii_2020Q3.zip")
    ingest(dd, progress=False, validate=False)
    demo = _read(dd, "DEMO", "2020Q3").to_pandas()
    assert len(demo) == 9999
    assert not demo["occr_country"].str.contains("\r").any()
    assert demo.iloc[-1]["occr_country"] == "U"  # legal last line without newline, kept as found
    assert demo.iloc[-1]["source_line"] == 10000
    prec = demo.set_index("event_dt")["event_dt_precision"]
    assert set(prec[prec.index.str.len() == 8]) == {"day"}
    assert set(prec[prec.index.str.len() == 6]) == {"month"}
    assert set(prec[prec.index.str.len() == 4]) == {"year"}
    assert prec[prec.index == ""].isna().all()
    deleted = _read(dd, "DELETED", "2020Q3").to_pandas()
    assert deleted["caseid_int"].tolist() == [10004694, 10035487]
    drug = _read(dd, "DRUG", "2020Q3").to_pandas()
    assert "NA" in set(drug["cum_dose_chr"])  # re-serialised sample: 'NA' is data, kept verbatim


def test_ludev_drug12q4_bom_crlf_duplicate_pair():
    data = (FIXTURES / "ludev" / "drug.txt").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    parsed = parse_delimited(data, "DRUG", "drug.txt")
    df = parsed.table.to_pandas()
    assert parsed.record.data_lines == 99 == len(df)
    assert not df["dose_freq"].str.contains("\r").any()
    assert ((df["primaryid"] == "40223752") & (df["drug_seq"] == "1")).sum() == 2  # kept; dedup is curation's
    assert "LIDOCAINE\\PRILOCAINE" in set(df["drugname"]) | set(df["dose_vbm"]) or \
        df.apply(lambda r: "LIDOCAINE\\PRILOCAINE" in "$".join(r), axis=1).any()


# ---------------------------------------------------------------------------------------------
# Hand-made quirks
# ---------------------------------------------------------------------------------------------
def test_glued_embedded_dollar_nonutf8_blank_lines_quarantined_with_line_numbers(tmp_path):
    dd = _data_dir(tmp_path)
    good1 = demo_row(1001, 100, 1)
    good2 = demo_row(2001, 200, 1, mfr_sndr="LABORATORIOS SOLUCI\xd3N")  # a cp1252 byte once encoded
    glued = demo_row(3001, 300, 1) + demo_row(4001, 400, 1)               # missing newline
    embedded = demo_row(5001, 500, 1, mfr_num="JP-CUBIST-$E2B0000000182")  # embedded '$'
    lines = [HEADERS_B["DEMO"], good1, good2, glued, "", embedded, "   "]
    demo = ("\r\n".join(lines) + "\r\n").encode("cp1252")
    dd_zip = write_zip(dd.landing / "faers_ascii_2024q1.zip",
                       minimal_quarter(extra={"ASCII/DEMO24Q1.txt": demo}))
    [res] = ingest(dd, progress=False, validate=False)
    rec = _record(dd, "2024Q1")
    f = next(x for x in rec["files"] if x["table"] == "DEMO")
    assert (f["data_lines"], f["rows_written"], f["quarantined"], f["blank_lines"]) == (5, 2, 3, 1)
    assert f["encoding_fallback_lines"] == 1
    q = pq.read_table(dd.quarantine_part(Quarter(2024, 1))).to_pandas()
    assert q["line_number"].tolist() == [4, 6, 7]
    assert q["source_file"].unique().tolist() == ["ASCII/DEMO24Q1.txt"]
    assert q.loc[0, "raw"] == glued.encode("cp1252")  # raw bytes exactly as in the file
    assert "too many fields" in q.loc[0, "reason"] and "too few fields" in q.loc[2, "reason"]
    demo_t = _read(dd, "DEMO", "2024Q1").to_pandas()
    assert demo_t["source_line"].tolist() == [2, 3]
    assert demo_t.loc[1, "mfr_sndr"] == "LABORATORIOS SOLUCIÓN"
    assert dd_zip.exists()


def test_laers_trailing_dollar_rule():
    header = "ISR$CASE$I_F_COD$FOLL_SEQ$IMAGE$EVENT_DT$MFR_DT$FDA_DT$REPT_COD$MFR_NUM$MFR_SNDR$AGE$AGE_COD$" \
             "GNDR_COD$E_SUB$WT$WT_COD$REPT_DT$OCCP_COD$DEATH_DT$TO_MFR$CONFID"
    n = len(header.split("$"))
    ok = "$".join(["4263742", "4061110", "I", "", "x"] + [""] * 2 + ["20040102"] + [""] * (n - 8)) + "$"
    extra_nonempty = ok[:-1] + "$JUNK"            # header+1 fields, last one not empty
    two_extra = ok + "$"                           # header+2 fields
    data = "\r\n".join([header, ok, extra_nonempty, two_extra]).encode() + b"\r\n"
    parsed = parse_delimited(data, "DEMO", "DEMO04Q1.TXT")
    assert parsed.record.trailing_dollar
    assert parsed.record.rows_written == 1
    assert [q[0] for q in parsed.quarantine] == [3, 4]
    assert parsed.table.column("primaryid")[0].as_py() == "4263742"
    assert parsed.table.column("caseversion")[0].as_py() == ""


def test_faers_row_with_one_extra_field_is_quarantined_not_realigned():
    """Without the LAERS trailing-'$' convention, one extra empty field means an embedded '$'."""
    row = "1$2$x"
    data = f"primaryid$caseid$pt\n{row}\n1$2$a$\n".encode()
    parsed = parse_delimited(data, "REAC", "REAC24Q1.txt")
    assert parsed.record.rows_written == 1 and [q[0] for q in parsed.quarantine] == [3]


def test_member_names_case_variants_new_and_unknown():
    names = ["ascii/DEMO18Q1.txt", "ASCII/DEMO18Q1_new.txt", "Ascii/drug18q1.TXT", "ASCII/STAT18Q1.TXT",
             "Deleted/ADR19Q1DeletedCases.txt", "deleted/AllDeletedCases.txt", "ASCII/ASC_NTS.pdf", "ASCII/"]
    tables, deleted, unknown = classify_members(names)
    assert tables == {"DEMO": "ASCII/DEMO18Q1_new.txt", "DRUG": "Ascii/drug18q1.TXT"}
    assert deleted == ["Deleted/ADR19Q1DeletedCases.txt", "deleted/AllDeletedCases.txt"]
    assert unknown == ["ASCII/ASC_NTS.pdf", "ASCII/STAT18Q1.TXT"]


def test_deleted_lists_header_space_and_junk(tmp_path):
    dd = _data_dir(tmp_path)
    write_zip(dd.landing / "faers_ascii_2024q4.zip", minimal_quarter("24Q4", extra={
        "Deleted/DELETE24Q4.txt": b" 101\r\n102\r\n\r\n1x3\r\n",
        "DELETED/AllDeletedCases.txt": b"caseid\n104\n",
    }))
    ingest(dd, progress=False, validate=False)
    deleted = _read(dd, "DELETED", "2024Q4").to_pandas()
    assert sorted(deleted["caseid_int"]) == [101, 102, 104]
    q = pq.read_table(dd.quarantine_part(Quarter(2024, 4))).to_pandas()
    assert q[["table", "line_number"]].values.tolist() == [["DELETED", 4]]


# ---------------------------------------------------------------------------------------------
# Bad input: one line, earlier quarters untouched
# ---------------------------------------------------------------------------------------------
def _snapshot(dd: DataDir) -> dict[str, bytes]:
    return {str(p.relative_to(dd.root)): p.read_bytes() for p in sorted(dd.raw.rglob("*")) if p.is_file()}


@pytest.fixture
def ingested_2024q1(tmp_path):
    dd = _data_dir(tmp_path)
    write_zip(dd.landing / "faers_ascii_2024q1.zip", minimal_quarter("24Q1"))
    ingest(dd, progress=False, validate=False)
    return dd


def test_wrong_header_refused_and_earlier_data_intact(ingested_2024q1):
    dd = ingested_2024q1
    before = _snapshot(dd)
    bad_drug = b"primaryid$caseid$drug_seq$role$drugname\r\n1001$100$1$PS$X\r\n"
    write_zip(dd.landing / "faers_ascii_2024q2.zip", minimal_quarter("24Q2", extra={"ASCII/DRUG24Q2.txt": bad_drug}))
    with pytest.raises(IngestError, match=r"DRUG24Q2.txt: wrong header: missing column\(s\) role_cod"):
        ingest(dd, progress=False, validate=False)
    assert _snapshot(dd) == before
    assert not (dd.root / ".staging").exists()


def test_truncated_zip_refused(ingested_2024q1):
    dd = ingested_2024q1
    before = _snapshot(dd)
    good = write_zip(dd.root / "tmp.zip", minimal_quarter("24Q2"))
    (dd.landing / "faers_ascii_2024q2.zip").write_bytes(good.read_bytes()[:-40])
    with pytest.raises(IngestError, match="not a valid zip"):
        ingest(dd, progress=False, validate=False)
    assert _snapshot(dd) == before


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/DEMO24Q2.txt", "ASCII/../../x.txt"])
def test_traversal_member_refused(ingested_2024q1, member):
    dd = ingested_2024q1
    before = _snapshot(dd)
    write_zip(dd.landing / "faers_ascii_2024q2.zip", minimal_quarter("24Q2", extra={member: b"x"}))
    with pytest.raises(IngestError, match="unsafe member path"):
        ingest(dd, progress=False, validate=False)
    assert _snapshot(dd) == before


def test_zip_bomb_ratio_refused(tmp_path):
    dd = _data_dir(tmp_path)
    write_zip(dd.landing / "faers_ascii_2024q1.zip", minimal_quarter(extra={"ASCII/STAT24Q1.TXT": b"0" * (50 << 20)}))
    with pytest.raises(IngestError, match="compression ratio"):
        ingest(dd, progress=False, validate=False)


def test_missing_table_refused(tmp_path):
    dd = _data_dir(tmp_path)
    members = minimal_quarter()
    del members["ASCII/THER24Q1.txt"]
    write_zip(dd.landing / "faers_ascii_2024q1.zip", members)
    with pytest.raises(IngestError, match="missing table file"):
        ingest(dd, progress=False, validate=False)


def test_rerun_replaces_exactly_and_skips_unchanged(ingested_2024q1):
    dd = ingested_2024q1
    first = _read(dd, "DEMO", "2024Q1")
    [again] = ingest(dd, progress=False, validate=False)
    assert again.skipped
    [forced] = ingest(dd, progress=False, validate=False, force=True)
    assert not forced.skipped
    assert _read(dd, "DEMO", "2024Q1").equals(first)
    # a changed zip for the same quarter replaces the quarter: no rows of the old file survive
    write_zip(dd.landing / "faers_ascii_2024q1.zip",
              minimal_quarter(demo_rows=[demo_row(1002, 100, 2), demo_row(7001, 700, 1)]))
    [changed] = ingest(dd, progress=False, validate=False)
    assert not changed.skipped
    assert _read(dd, "DEMO", "2024Q1").column("primaryid").to_pylist() == ["1002", "7001"]


def test_lf_only_quarter_same_result_as_crlf(tmp_path):
    a = parse_delimited(("\r\n".join([HEADERS_B["REAC"], "1$2$Nausea$", "3$4$Dissociation$"]) + "\r\n").encode(),
                        "REAC", "r")
    b = parse_delimited(("\n".join([HEADERS_B["REAC"], "1$2$Nausea$", "3$4$Dissociation$"])).encode(), "REAC", "r")
    assert a.table.equals(b.table)
    assert a.table.column("pt").to_pylist() == ["Nausea", "Dissociation"]


def test_typed_copies_null_not_garbage():
    data = "\n".join([HEADERS_B["DEMO"], demo_row("12A", "x", "", fda_dt="2015"),
                      demo_row(1000591924, 10005919, 24, fda_dt="20150230")]).encode()
    parsed = parse_delimited(data, "DEMO", "d")
    out = finish_table(parsed, "DEMO", Quarter(2024, 1), "d").to_pandas()
    assert out["primaryid_int"].isna().tolist() == [True, False]
    assert out.loc[1, "primaryid_int"] == 1000591924 and out.loc[1, "caseversion_int"] == 24
    assert out.loc[0, "caseversion_int"] is None or np.isnan(out.loc[0, "caseversion_int"])  # FAERS blank stays null
    assert out["fda_dt_date"].isna().all()  # '2015' is partial, 20150230 is no date
    assert pd.isna(out.loc[1, "event_dt_precision"])  # demo_row leaves event_dt empty


# ---------------------------------------------------------------------------------------------
# Synthetic mirror (every era): ingest agrees line for line with what the generator wrote
# ---------------------------------------------------------------------------------------------
def test_synthetic_mirror_every_era_matches_truth(tmp_path):
    from pipeline.synthetic import write_mirror

    quarters = [Quarter.parse(q) for q in ("2012Q3", "2012Q4", "2017Q4", "2018Q1", "2019Q1")]
    mirror = tmp_path / "mirror"
    write_mirror(mirror, quarters, reports_per_quarter=3000, seed=11, progress=False)
    truth = json.loads((mirror / "truth.json").read_text())
    dd = _data_dir(tmp_path)
    for z in mirror.glob("*.zip"):
        (dd.landing / z.name).write_bytes(z.read_bytes())
    results = ingest(dd, progress=False, validate=False)
    assert len(results) == len(quarters)
    for q in quarters:
        rec = _record(dd, str(q))
        assert rec["reconciled"] and rec["era"] == q.era
        by_member = {f["member"]: f for f in rec["files"]}
        quarantine = pq.read_table(dd.quarantine_part(q)).to_pandas()
        for table, expected in truth["files"][str(q)].items():
            got = by_member[expected["member"]]
            assert got["data_lines"] == expected["data_lines"], (q, table)
            assert got["trailing_dollar"] == expected["trailing_dollar"], (q, table)
            assert got["encoding_fallback_lines"] == len(expected["encoding_fallback_lines"]), (q, table)
            lines = sorted(quarantine.loc[quarantine["source_file"] == expected["member"], "line_number"])
            assert lines == sorted(expected["malformed_lines"]), (q, table)


def test_failed_validation_publishes_nothing_and_keeps_the_result(ingested_2024q1):
    from pipeline.quality import ValidationFailed

    dd = ingested_2024q1
    write_zip(dd.landing / "faers_ascii_2024q1.zip", minimal_quarter(extra={"ASCII/DRUG24Q1.txt": (
        HEADERS_B["DRUG"] + "\r\n1001$100$1$XX$SPRAVATO$ESKETAMINE$1$Nasal$$$$U$$$$211243$56$MG$SPRAY$\r\n").encode()}))
    before = _snapshot(dd)
    with pytest.raises(ValidationFailed) as exc:
        ingest(dd, progress=False, validate=True)
    msg = str(exc.value)
    assert "\n" not in msg and "DRUG" in msg and "2024Q1" in msg and "role_cod" in msg and "XX" in msg
    assert _snapshot(dd) == before  # the previously ingested 2024Q1 is still what readers see
    failed = json.loads((dd.validation / "raw" / "2024Q1.failed.json").read_text())
    assert failed["success"] is False
    # a good zip for that quarter publishes and clears the failure record
    write_zip(dd.landing / "faers_ascii_2024q1.zip", minimal_quarter(extra={"ASCII/README.txt": b"re-release"}))
    [res] = ingest(dd, progress=False, validate=True)
    assert not res.skipped and res.validation["success"] and res.validation["critical_failures"] == []
    assert any("row_count" in w for w in res.validation["warnings"])  # a tiny quarter is only warned about
    assert not (dd.validation / "raw" / "2024Q1.failed.json").exists()
    assert (dd.validation / "raw" / "2024Q1.json").exists()


# ---------------------------------------------------------------------------------------------
# The fast (Arrow-checked) and exact (line-by-line) parsers implement the same rules
# ---------------------------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline.ingest.exact import parse_exact  # noqa: E402
from pipeline.ingest.fast import parse_fast  # noqa: E402

_FIELD = st.text(alphabet="abcXYZ 09.-'#\"~é", max_size=6)  # '~' becomes a cp1252 byte (invalid UTF-8)
_LINE_KIND = st.sampled_from(["ok", "ok", "ok", "ok", "glued", "embedded", "short", "no_trailing", "trailing_junk",
                              "blank", "lone_cr"])


@settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.lists(_FIELD, min_size=4, max_size=4), _LINE_KIND), min_size=0, max_size=40),
       trailing=st.booleans(), crlf=st.booleans(), final_newline=st.booleans())
def test_fast_and_exact_parsers_agree(rows, trailing, crlf, final_newline):
    header = "primaryid$caseid$pt$drug_rec_act"
    eol = "\r\n" if crlf else "\n"
    end = "$" if trailing else ""
    lines = [header]
    for fields, kind in rows:
        line = "$".join(fields)
        if kind == "glued":
            line = line + end + "$".join(fields)
        elif kind == "embedded":
            line = "$".join(fields[:2] + ["A$B"] + fields[3:])
        elif kind == "short":
            line = "$".join(fields[:2])
        elif kind == "trailing_junk":
            line = line + "$JUNK"
        elif kind == "blank":
            line = ""
        elif kind == "lone_cr":  # a carriage return inside a field: Arrow would end the line there
            line = "$".join(fields[:2] + ["A\rB"] + fields[3:])
        if kind not in ("no_trailing", "blank"):
            line += end
        lines.append(line)
    data = (eol.join(lines) + (eol if final_newline else "")).encode().replace(b"~", b"\xd3")
    fast = parse_fast(data, "REAC", "REAC24Q1.txt")
    exact = parse_exact(data, "REAC", "REAC24Q1.txt")
    if fast is None:  # the fast path may decline (e.g. many bad rows); never disagree
        return
    assert fast.table.equals(exact.table)
    assert fast.source_lines.tolist() == exact.source_lines.tolist()
    assert [q[:4] for q in fast.quarantine] == [q[:4] for q in exact.quarantine]
    assert [q[4] for q in fast.quarantine] == [q[4] for q in exact.quarantine]
    for attr in ("data_lines", "rows_written", "quarantined", "trailing_dollar", "encoding_fallback_lines"):
        assert getattr(fast.record, attr) == getattr(exact.record, attr), attr


def test_fast_path_is_taken_on_clean_ascii_and_declines_otherwise():
    clean = ("\n".join([HEADERS_B["REAC"], "1$2$Nausea$", "3$4$Dissociation$"]) + "\n").encode()
    assert parse_fast(clean, "REAC", "r") is not None
    assert parse_fast(clean.replace(b"Nausea", b"N\xe1usea"), "REAC", "r").record.encoding_fallback_lines == 1
    assert parse_fast(clean + b"\n", "REAC", "r") is None  # blank line


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.sampled_from([b"a", b"$", b"\n", b"\r", b"\xe9", b"\x80"]), max_size=60).map(b"".join),
       start=st.integers(0, 5), step=st.integers(1, 17))
def test_byte_counts_match_a_plain_count_whatever_the_slice_size(data, start, step):
    """The sliced numpy scan counts like ``bytes.count``, '\\r\\n' pairs across slice edges included."""
    from unittest import mock

    from pipeline.ingest import bytescan

    body = data[start:]
    high = [start + i for i, b in enumerate(body) if b >= 0x80]
    with mock.patch.object(bytescan, "SCAN_STEP", step):
        counts = bytescan.count_bytes(data, start, high_limit=1_000)
        capped = bytescan.count_bytes(data, start, high_limit=0)
    assert counts.newlines == body.count(b"\n")
    assert counts.carriage_returns == body.count(b"\r")
    assert counts.crlf == body.count(b"\r\n")
    assert counts.high.tolist() == high
    assert (capped.high is None) == bool(high)


def test_carriage_return_inside_a_field_stays_in_the_field():
    """FDA ends lines with '\\n' (or '\\r\\n'); a lone '\\r' inside a field is text, not a line end."""
    data = ("\n".join([HEADERS_B["REAC"], "1$2$Naus\rea$", "3$4$Dissociation$"]) + "\n").encode()
    assert parse_fast(data, "REAC", "r") is None  # Arrow would split the line: the exact path decides
    parsed = parse_delimited(data, "REAC", "r")
    assert parsed.table.column("pt").to_pylist() == ["Naus\rea", "Dissociation"]
    assert parsed.source_lines.tolist() == [2, 3]
    assert parsed.record.reconciled and parsed.record.quarantined == 0


# ---------------------------------------------------------------------------------------------
# Reading members: raw inflate with zipfile's checks; raw Parquet layout
# ---------------------------------------------------------------------------------------------
def _one_member_zip(path: Path, data: bytes, method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        zf.writestr("ASCII/REAC24Q1.txt", data)
    return path


def _corrupt(path: Path, mutate) -> None:
    """Apply ``mutate(raw bytearray, info)`` to the archive bytes in place."""
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[0]
    raw = bytearray(path.read_bytes())
    mutate(raw, info)
    path.write_bytes(bytes(raw))


def test_member_reader_matches_zipfile_for_deflated_and_stored(tmp_path):
    from pipeline.ingest import read_member

    data = ("\n".join([HEADERS_B["REAC"]] + [f"{i}$1$Nausea" for i in range(5000)]) + "\n").encode()
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        zp = _one_member_zip(tmp_path / f"m{method}.zip", data, method)
        assert read_member(zp, "ASCII/REAC24Q1.txt", len(data)) == data


def test_member_reader_refuses_a_bad_crc(tmp_path):
    """A byte changed in the stored CRC (the data inflate fine): refused, like zipfile does."""
    from pipeline.ingest import parse_member

    data = ("\n".join([HEADERS_B["REAC"], "1$2$Nausea"]) + "\n").encode()
    zp = _one_member_zip(tmp_path / "faers_ascii_2024q1.zip", data)

    def flip_crc(raw, info):  # the CRC in the central directory (what ZipInfo reads)
        at = raw.rfind(b"PK\x01\x02") + 16
        raw[at] ^= 0xFF

    _corrupt(zp, flip_crc)
    with pytest.raises(IngestError, match="CRC"):
        parse_member(zp, "ASCII/REAC24Q1.txt", len(data), "REAC", Quarter.parse("2024Q1"))


def test_member_reader_refuses_more_bytes_than_declared(tmp_path):
    """A member whose deflate stream holds more than its declared size (a lying header) is cut at the cap."""
    from pipeline.ingest import parse_member

    data = ("\n".join([HEADERS_B["REAC"]] + ["1$2$Nausea"] * 1000) + "\n").encode()
    zp = _one_member_zip(tmp_path / "faers_ascii_2024q1.zip", data)

    def shrink_size(raw, info):  # uncompressed size in the central directory
        at = raw.rfind(b"PK\x01\x02") + 24
        raw[at:at + 4] = (100).to_bytes(4, "little")

    _corrupt(zp, shrink_size)
    with pytest.raises(IngestError, match="larger than its declared size"):
        parse_member(zp, "ASCII/REAC24Q1.txt", 100, "REAC", Quarter.parse("2024Q1"))


def test_member_reader_refuses_corrupt_deflate_data(tmp_path):
    from pipeline.ingest import parse_member

    data = ("\n".join([HEADERS_B["REAC"]] + [f"{i}$2$Nausea" for i in range(3000)]) + "\n").encode()
    zp = _one_member_zip(tmp_path / "faers_ascii_2024q1.zip", data)

    def scramble(raw, info):  # the middle of the compressed stream
        start = info.header_offset + 30 + len(info.filename)
        for k in range(start + 20, start + 60):
            raw[k] ^= 0x5A

    _corrupt(zp, scramble)
    with pytest.raises(IngestError, match="cannot read"):
        parse_member(zp, "ASCII/REAC24Q1.txt", len(data), "REAC", Quarter.parse("2024Q1"))


def test_raw_parquet_dictionary_only_for_repetitive_text_statistics_only_for_typed(tmp_path):
    from pipeline.ingest import write_raw_parquet

    q = Quarter.parse("2024Q1")
    rows = "\n".join([HEADERS_B["REAC"]] + [f"{100 + i}$1{i}$PT {i % 7}$" for i in range(20_000)]) + "\n"
    parsed = parse_delimited(rows.encode(), "REAC", "REAC24Q1.txt")
    path = write_raw_parquet(finish_table(parsed, "REAC", q, "REAC24Q1.txt"), tmp_path / "r.parquet", q,
                             Path("faers_ascii_2024q1.zip"))
    meta = pq.ParquetFile(path).metadata.row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in cols["pt"].encodings  # 7 distinct PTs
    assert "RLE_DICTIONARY" not in cols["primaryid"].encodings  # every value distinct
    assert not cols["primaryid"].is_stats_set and cols["primaryid_int"].is_stats_set
    assert cols["primaryid_int"].statistics.min == 100
    assert pq.read_table(path).equals(finish_table(parsed, "REAC", q, "REAC24Q1.txt")
                                      .replace_schema_metadata(pq.read_table(path).schema.metadata))
