"""Typed copies and provenance: the parsed text columns become a table of exactly ``raw_schema(table)``."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.lines import constant_string
from pipeline.ingest.records import ParsedFile
from pipeline.quarters import Quarter
from pipeline.schemas import PRECISION_COLUMNS, TEXT_COLUMNS, TYPED_COLUMNS, raw_schema


def finish_table(parsed: ParsedFile, table: str, quarter: Quarter, member: str) -> pa.Table:
    """Add typed copies and provenance; return a table with exactly ``raw_schema(table)``."""
    t = parsed.table
    n = t.num_rows
    cols = {c: t.column(c) for c in TEXT_COLUMNS[table]}
    laers = quarter.era == "laers"
    for name, (src, typ) in TYPED_COLUMNS[table].items():
        arr = t.column(src)
        if typ == pa.date32():
            cols[name] = _to_date(arr)
        elif name == "caseversion_int" and laers:
            # LAERS foll_seq: blank = initial report (0); junk such as '#' or '1A' -> 0 as well.
            cols[name] = _to_int(arr, blank_as=0, junk_as=0)
        else:
            cols[name] = _to_int(arr)
    for src in PRECISION_COLUMNS.get(table, ()):
        cols[f"{src}_precision"] = _precision(t.column(src))
    cols["quarter"] = constant_string(str(quarter), n)
    cols["era"] = constant_string(quarter.era, n)
    cols["source_file"] = constant_string(member, n)
    cols["source_line"] = pa.array(parsed.source_lines, pa.int64())
    schema = raw_schema(table)
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


def _digits(arr, max_len: int | None = None):
    """True where the text is only ASCII digits (non-empty), optionally at most ``max_len`` long."""
    ok = pc.ascii_is_decimal(arr)
    return pc.and_(ok, pc.less_equal(pc.binary_length(arr), max_len)) if max_len else ok


def _to_int(arr, *, blank_as: int | None = None, junk_as: int | None = None):
    # int64 holds 18 digits safely; FDA ids are 7-12 digits. Padded values (' 12') are not plain numbers.
    plain = _digits(arr, 18)
    if pc.all(plain).as_py():  # the usual column: cast directly, no masked copy of the text
        vals = pc.cast(arr, pa.int64())
    else:
        vals = pc.cast(pc.if_else(plain, arr, pa.scalar(None, pa.string())), pa.int64())
    if blank_as is not None:
        vals = pc.if_else(pc.equal(arr, ""), pa.scalar(blank_as, pa.int64()), vals)
    if junk_as is not None:
        vals = pc.fill_null(vals, junk_as)
    return vals


def _to_date(arr):
    full = pc.and_(_digits(arr), pc.equal(pc.binary_length(arr), 8))
    ts = pc.strptime(arr, format="%Y%m%d", unit="s", error_is_null=True)
    # strptime rolls impossible days over (20150230 -> 2015-03-02): keep only dates whose parts
    # give back the digits (arithmetic, not strftime, which costs ten times more)
    as_number = pc.cast(pc.if_else(full, arr, pa.scalar(None, pa.string())), pa.int64())
    parts = pc.add(pc.add(pc.multiply(pc.year(ts), 10000), pc.multiply(pc.month(ts), 100)), pc.day(ts))
    exact = pc.fill_null(pc.equal(parts, as_number), False)
    return pc.cast(pc.if_else(exact, ts, pa.scalar(None, ts.type)), pa.date32())


def _precision(arr):
    n = pc.binary_length(arr)
    digits = _digits(arr)
    null = pa.scalar(None, pa.string())
    return pc.case_when(
        pc.make_struct(pc.and_(digits, pc.equal(n, 8)), pc.and_(digits, pc.equal(n, 6)),
                       pc.and_(digits, pc.equal(n, 4))),
        "day", "month", "year", null)
