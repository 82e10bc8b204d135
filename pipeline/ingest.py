"""Ingest: landing zips -> canonical raw Parquet tables, one file per table per quarter.

Rules:

* Members are matched case-insensitively (``ascii/`` or ``ASCII/``, ``.txt`` or ``.TXT``, ``_new``
  files); any ``.txt`` whose path contains ``delet`` is a deleted-case list; every other member is
  logged as unknown in the ingest record, never silently skipped.
* Every field is text: split on ``$`` with no quoting; BOM and ``\\r`` stripped; columns chosen by
  normalised header name through the documented aliases, never by position.
* FDA ends every line with ``$`` (header included in the FAERS eras, data rows only in LAERS). A line
  is accepted when it has exactly the header's field count, or one more field that is empty at the
  end of a line ending in ``$`` in a file written that way. Anything else - glued records, embedded
  ``$``, whitespace-only lines - goes to quarantine with file, line number and raw bytes.
* Non-UTF-8 bytes: the line is decoded as cp1252 (latin-1 for the 5 undefined bytes) and the count of
  such lines is recorded.
* Reconciliation, the first data-quality check: for every file, data lines = rows written + lines
  quarantined (blank lines are counted apart).
* A quarter is staged completely (all tables, quarantine, validation) before it replaces the
  previous version of that quarter, so a failure leaves earlier data untouched; the ingest record
  ``raw/_ingest/YYYYQn.json`` is written last.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import re
import shutil
import struct
import sys
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.atomic import sha256_file, write_json, write_parquet
from pipeline.errors import IngestError, PipelineError
from pipeline.layout import DELETED, TABLES, DataDir
from pipeline.quarters import Quarter
from pipeline.schemas import (
    HEADER_ALIASES,
    PRECISION_COLUMNS,
    QUARANTINE_SCHEMA,
    REQUIRED_COLUMNS,
    TABLE_ALIASES,
    TEXT_COLUMNS,
    TYPED_COLUMNS,
    raw_schema,
)

log = logging.getLogger(__name__)

ZIP_NAME = re.compile(r"(?i)^(?:f?aers)_ascii_(\d{4})q([1-4])\.zip$")
DATA_MEMBER = re.compile(r"(?i)(?:^|/)(DEMO|DRUG|REAC|OUTC|RPSR|THER|INDI)(\d\d)Q([1-4])(_new)?\.txt$")

#: Refuse archives that would unpack to more than this (a real quarter is ~0.5 GB).
MAX_UNZIPPED_BYTES = int(os.environ.get("FAERS_MAX_UNZIPPED_BYTES", 8 * 1024**3))
#: ... or whose members claim a compression ratio no text file reaches (zip bombs).
MAX_COMPRESSION_RATIO = 200

BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class FileRecord:
    table: str
    member: str
    data_lines: int = 0
    rows_written: int = 0
    quarantined: int = 0
    blank_lines: int = 0
    encoding_fallback_lines: int = 0
    trailing_dollar: bool = False
    columns_missing: list[str] = field(default_factory=list)
    columns_unknown: list[str] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        return self.data_lines == self.rows_written + self.quarantined


@dataclass
class QuarterResult:
    quarter: Quarter
    zip_path: Path
    skipped: bool = False
    files: list[FileRecord] = field(default_factory=list)
    unknown_members: list[str] = field(default_factory=list)
    seconds: float = 0.0
    validation: dict | None = None
    #: why this quarter was not ingested (``ingest(..., keep_going=True)``); earlier data of it is untouched
    error: PipelineError | None = None

    @property
    def rows(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.table] = out.get(f.table, 0) + f.rows_written
        return out

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)

    def summary_line(self) -> str:
        if self.error is not None:
            return f"{self.quarter}: FAILED, not ingested ({self.error})"
        if self.skipped:
            return f"{self.quarter}: unchanged ({self.zip_path.name})"
        rows = ", ".join(f"{t} {n:,}" for t, n in self.rows.items())
        return (f"{self.quarter}: {rows}; quarantined {self.quarantined:,} line(s); "
                f"{self.seconds:.1f}s")


# --------------------------------------------------------------------------------------------
# Zip handling
# --------------------------------------------------------------------------------------------
def quarter_of_zip(path: Path) -> Quarter | None:
    m = ZIP_NAME.match(path.name)
    return Quarter(int(m.group(1)), int(m.group(2))) if m else None


def _check_zip_safety(zf: zipfile.ZipFile, zip_path: Path) -> None:
    total = 0
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise IngestError(f"{zip_path.name}: refusing unsafe member path {name!r}")
        total += info.file_size
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO \
                and info.file_size > 1024**2:
            raise IngestError(f"{zip_path.name}: member {name!r} claims a compression ratio of "
                              f"{info.file_size / info.compress_size:.0f}:1 (zip bomb?)")
    if total > MAX_UNZIPPED_BYTES:
        raise IngestError(f"{zip_path.name}: would unpack to {total / 1024**3:.1f} GiB, over the "
                          f"{MAX_UNZIPPED_BYTES / 1024**3:.1f} GiB cap (FAERS_MAX_UNZIPPED_BYTES)")


def classify_members(names: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Map data members to tables, collect deleted lists and unknown members.

    Returns ``({table: member}, [deleted members], [unknown members])``. When a quarter ships
    both ``DEMO18Q1.txt`` and ``DEMO18Q1_new.txt``, the ``_new`` file wins.
    """
    tables: dict[str, str] = {}
    deleted, unknown = [], []
    for name in sorted(names):
        if name.endswith("/"):
            continue
        m = DATA_MEMBER.search(name)
        if m:
            table = m.group(1).upper()
            if table in tables and not m.group(4):
                continue  # keep the _new variant already found
            tables[table] = name
        elif name.lower().endswith(".txt") and "delet" in name.lower():
            deleted.append(name)
        else:
            unknown.append(name)
    return tables, deleted, unknown


# --------------------------------------------------------------------------------------------
# Parsing one `$`-delimited FDA file
# --------------------------------------------------------------------------------------------
def _normalise_header(tokens: list[str], table: str) -> list[str]:
    names = []
    per_table = TABLE_ALIASES.get(table, {})
    for tok in tokens:
        key = tok.replace("\ufeff", "").strip().lower()
        key = per_table.get(key, HEADER_ALIASES.get(key, key))
        names.append(key)
    return names


def _decode_fallback(line: bytes) -> bytes:
    try:
        return line.decode("cp1252").encode("utf-8")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are undefined in cp1252
        return line.decode("latin-1").encode("utf-8")


@dataclass
class ParsedFile:
    table: pa.Table                      # canonical schema, without provenance
    source_lines: np.ndarray             # int64 line number per row
    record: FileRecord
    quarantine: list[tuple[int, str, int, int, bytes]]  # line, reason, expected, found, raw


def parse_delimited(data: bytes, table: str, member: str) -> ParsedFile:
    """Parse one FDA table file (bytes) into text columns, quarantining malformed lines.

    Two implementations of the same rules: a fast one for the usual file (no blank lines, few bad
    lines, non-UTF-8 bytes only here and there), where Arrow's parser checks the field counts and
    hands over only the bad rows, and an exact line-by-line one (numpy) for everything else. A
    property test checks that both give the same result.
    """
    if data.startswith(BOM):
        data = data[len(BOM):]
    return _parse_fast(data, table, member) or _parse_exact(data, table, member)


def _read_header(data: bytes, table: str, member: str) -> tuple[list[str], bool, int]:
    """(canonical names, header ends in '$', offset of the first data line); a wrong header raises."""
    end = data.find(b"\n")
    first = data[: end if end >= 0 else len(data)].rstrip(b"\r")
    if not first.strip():
        raise IngestError(f"{member}: empty file (no header line)")
    tokens = first.decode("utf-8", errors="replace").split("$")
    header_trailing = len(tokens) > 1 and tokens[-1].strip() == ""
    if header_trailing:
        tokens = tokens[:-1]
    names = _normalise_header(tokens, table)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise IngestError(f"{member}: wrong header: duplicated column(s) {', '.join(dup)}")
    missing_required = [c for c in REQUIRED_COLUMNS[table] if c not in names]
    if missing_required:
        raise IngestError(f"{member}: wrong header: missing column(s) {', '.join(missing_required)} "
                          f"(found: {'$'.join(tokens)[:200]})")
    return names, header_trailing, (end + 1 if end >= 0 else len(data))


_STYLE_SAMPLE = 1000  # data lines that decide a file's trailing-'$' style (both parsers use the same ones)


def _trailing_style(header_trailing: bool, delims: np.ndarray, ends_dollar: np.ndarray, n_cols: int) -> bool:
    """Does the file end data rows with an extra '$' (LAERS)? FAERS-era files do not.

    Decided by which of the two acceptable shapes is more common among the first data lines, so a
    single embedded '$' in a file without the convention is never taken for it.
    """
    plus_one = np.count_nonzero(ends_dollar & (delims == n_cols))
    exact = np.count_nonzero(delims == n_cols - 1)
    return bool(header_trailing or plus_one > exact)


_FAST_MAX_BAD = 10_000  # beyond this many bad rows (a Python call each), the exact path is quicker


def _parse_fast(data: bytes, table: str, member: str) -> ParsedFile | None:
    """Arrow-checked parse; ``None`` when the file needs the exact path."""
    names, header_trailing, body_at = _read_header(data, table, member)
    if data[body_at:body_at + 1] in (b"\n", b"\r"):
        return None  # a blank first line: the exact path counts blank lines apart
    counts = _count_bytes(data, body_at, high_limit=500_000)
    if counts.carriage_returns != counts.crlf:
        return None  # a lone '\r' ends a line for Arrow but not for FDA: the exact path keeps it in the field
    # Without lone '\r', Arrow's lines are the file's lines, and the only ones it drops silently are
    # blank: the count check below (rows + bad rows = lines) sends any blank line to the exact path.
    if counts.high is None:
        return None  # non-ASCII everywhere: too many lines to look at one by one
    data, originals = _transcode_invalid_lines(data, counts.high)
    body = memoryview(data)[body_at:]
    n_cols = len(names)
    chunk = data[body_at:body_at + (1 << 20)]
    sample = chunk.split(b"\n")
    if body_at + len(chunk) < len(data):
        sample.pop()  # cut mid-line
    sample = [ln.rstrip(b"\r") for ln in sample if ln.rstrip(b"\r")][:_STYLE_SAMPLE]
    trailing = _trailing_style(header_trailing, np.array([ln.count(b"$") for ln in sample], dtype=np.int64),
                               np.array([ln.endswith(b"$") for ln in sample], dtype=bool), n_cols)
    parse_names = list(names) + (["__trailing__"] if trailing else [])
    bad_rows: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        # single-threaded parsing numbers the rows (blank lines excepted: the count check sees those)
        bad_rows.append((row.number + 1, row.text))  # the body's row 1 is the file's line 2
        return "skip" if len(bad_rows) <= _FAST_MAX_BAD else "error"

    try:
        tbl = pacsv.read_csv(
            pa.py_buffer(body),
            # one thread per file (the ingest runs files side by side), which gives the row numbers
            read_options=pacsv.ReadOptions(column_names=parse_names, block_size=4 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter="$", quote_char=False, escape_char=False,
                                              newlines_in_values=False, ignore_empty_lines=True,
                                              invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in parse_names},
                                                 strings_can_be_null=False, check_utf8=False),
        ) if len(body) else None
    except pa.ArrowInvalid:
        return None
    data_lines = counts.newlines + (0 if data.endswith(b"\n") or len(data) == body_at else 1)
    n_main = tbl.num_rows if tbl is not None else 0
    if n_main + len(bad_rows) != data_lines:
        return None  # the two counts disagree: let the exact path decide line by line
    lines = np.setdiff1d(np.arange(2, data_lines + 2, dtype=np.int64),
                         np.array([ln for ln, _ in bad_rows], dtype=np.int64), assume_unique=True)
    record = FileRecord(table=table, member=member, data_lines=data_lines, trailing_dollar=trailing)
    record.columns_missing = [c for c in TEXT_COLUMNS[table] if c not in names]
    record.columns_unknown = [n for n in names if n not in TEXT_COLUMNS[table]]
    quarantine: list[tuple[int, str, int, int, bytes]] = []
    cols = {n: (tbl.column(n) if tbl is not None else pa.chunked_array([], pa.string())) for n in names}
    if trailing and n_main:
        # an Arrow-valid row whose extra last field is not empty holds an embedded '$'
        extra = pc.not_equal(tbl.column("__trailing__"), "")
        if pc.any(extra).as_py():
            idx = np.flatnonzero(extra.to_numpy(zero_copy_only=False))
            for k in idx:
                raw = "$".join(tbl.column(n)[int(k)].as_py() for n in parse_names).encode()
                quarantine.append((int(lines[k]), "too many fields (glued records or an embedded '$')",
                                   n_cols, n_cols + 1, originals.get(int(lines[k]), raw)))
            keep = pc.invert(extra)
            cols = {n: c.filter(keep) for n, c in cols.items()}
            lines = np.delete(lines, idx)
    odd_lines, odd_rows = [], []
    for line_no, text in bad_rows:
        fields = text.split("$")
        found = len(fields) - int(trailing and text.endswith("$"))
        if trailing and len(fields) == n_cols:  # a row without the file's trailing '$': complete
            odd_lines.append(line_no)
            odd_rows.append(fields)
            continue
        reason = ("too many fields (glued records or an embedded '$')" if found > n_cols
                  else "too few fields (truncated or split record)")
        quarantine.append((line_no, reason, n_cols, found, originals.get(line_no, text.encode())))
    quarantine.sort()
    # like the exact path, count transcoded lines only among those kept
    record.encoding_fallback_lines = len(set(originals) - {q[0] for q in quarantine})
    if odd_rows:
        odd = {n: pa.chunked_array([pa.array([r[i] for r in odd_rows], pa.string())]) for i, n in enumerate(names)}
        all_lines = np.concatenate((lines, np.array(odd_lines, dtype=np.int64)))
        order = pa.array(np.argsort(all_lines, kind="stable"))
        cols = {n: pa.chunked_array(_chunks(cols[n]) + odd[n].chunks, pa.string()).take(order) for n in names}
        lines = np.sort(all_lines, kind="stable")
    n_rows = len(lines)
    empty = _constant_string("", n_rows)
    out = {c: (cols[c] if c in cols else empty) for c in TEXT_COLUMNS[table]}
    record.rows_written = n_rows
    record.quarantined = len(quarantine)
    return ParsedFile(pa.table(out), lines.astype(np.int64), record, quarantine)


@dataclass
class _ByteCounts:
    newlines: int
    carriage_returns: int
    crlf: int
    high: np.ndarray | None  # positions of bytes >= 0x80, None when over the limit


_SCAN_STEP = 1 << 22


def _count_bytes(data: bytes, start: int, high_limit: int) -> _ByteCounts:
    """Count '\n', '\r' and '\r\n' and find the non-ASCII bytes of ``data[start:]`` in one pass.

    numpy over 4 MiB slices into reused scratch arrays: no GIL held for long, and no buffer the size
    of the file (a fresh one costs more in page faults here than the counting itself).
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    is_nl = np.empty(_SCAN_STEP + 1, dtype=bool)
    is_cr = np.empty(_SCAN_STEP + 1, dtype=bool)
    newlines = crs = crlf = n_high = 0
    high: list[np.ndarray] = []
    look_for_high = not data.isascii()
    for at in range(start, len(buf), _SCAN_STEP):
        piece = buf[at:at + _SCAN_STEP + 1]  # one byte of overlap for the '\r\n' pairs
        own = min(_SCAN_STEP, len(piece))
        nl, cr = is_nl[:len(piece)], is_cr[:len(piece)]
        np.equal(piece, 0x0A, out=nl)
        np.equal(piece, 0x0D, out=cr)
        newlines += int(np.count_nonzero(nl[:own]))
        k = int(np.count_nonzero(cr[:own]))
        if k:
            crs += k
            crlf += int(np.count_nonzero(cr[:own][: len(piece) - 1] & nl[1:own + 1]))
        if look_for_high and n_high <= high_limit and piece[:own].max() >= 0x80:
            found = np.flatnonzero(piece[:own] >= 0x80) + at
            n_high += len(found)
            high.append(found)
    if n_high > high_limit:
        return _ByteCounts(newlines, crs, crlf, None)
    return _ByteCounts(newlines, crs, crlf, np.concatenate(high) if high else np.empty(0, dtype=np.int64))


def _transcode_invalid_lines(data: bytes, high: np.ndarray) -> tuple[bytes, dict[int, bytes]]:
    """Re-encode the (rare) data lines that are not valid UTF-8 from cp1252, splicing them in place.

    ``high`` holds the positions of the bytes >= 0x80. Returns the new buffer (line count unchanged)
    and {line number: original bytes}.
    """
    if len(high) == 0:
        return data, {}
    view = memoryview(data)  # slices of it are joined without copying them first
    pieces, originals, done, last = [], {}, set(), 0
    counted_to, line_of_counted = 0, 1  # newlines are counted incrementally: positions only grow
    for pos in high.tolist():
        start = data.rfind(b"\n", 0, pos) + 1
        if start in done:
            continue
        done.add(start)
        line_of_counted += data.count(b"\n", counted_to, start)
        counted_to = start
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[start:end]
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            originals[line_of_counted] = line.rstrip(b"\r")
            pieces += [view[last:start], _decode_fallback(line)]
            last = end
    if not originals:
        return data, {}
    pieces.append(view[last:])
    return b"".join(pieces), originals


def _chunks(col) -> list[pa.Array]:
    return col.chunks if isinstance(col, pa.ChunkedArray) else [col]


def _constant_string(value: str, n: int) -> pa.Array:
    """A string array of ``n`` copies of ``value`` without building n Python objects."""
    raw = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def _parse_exact(data: bytes, table: str, member: str) -> ParsedFile:
    """Line-by-line parse (numpy over the whole buffer): blank lines, per-line encodings, any number of bad lines."""
    record = FileRecord(table=table, member=member)
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 0x0A)
    # line k spans [starts[k], ends[k]) without its '\n'
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    if len(starts) and starts[-1] == len(buf):  # file ends with '\n': no last partial line
        starts, ends = starts[:-1], ends[:-1]
    if len(starts) == 0:
        raise IngestError(f"{member}: empty file (no header line)")
    # strip '\r' of CRLF endings (and of a lone trailing '\r')
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 0x0D)
    ends = ends - cr

    names, header_trailing, _ = _read_header(data, table, member)
    canonical = TEXT_COLUMNS[table]
    record.columns_missing = [c for c in canonical if c not in names]
    record.columns_unknown = [n for n in names if n not in canonical]
    n_cols = len(names)

    # per data line: delimiter count, ends-with-'$', blank
    s, e = starts[1:], ends[1:]
    line_no = np.arange(2, len(starts) + 1, dtype=np.int64)
    dollar_pos = np.flatnonzero(buf == 0x24)
    delims = (np.searchsorted(dollar_pos, e) - np.searchsorted(dollar_pos, s)).astype(np.int64)
    length = e - s
    blank = length == 0
    ends_dollar = (length > 0) & (buf[np.maximum(e - 1, 0)] == 0x24)
    nonblank = ~blank
    first = np.flatnonzero(nonblank)[:_STYLE_SAMPLE]
    trailing = _trailing_style(header_trailing, delims[first], ends_dollar[first], n_cols)
    record.trailing_dollar = trailing
    exact = nonblank & (delims == n_cols - 1)
    plus_one = nonblank & (delims == n_cols) & ends_dollar & trailing
    ok = exact | plus_one
    bad = nonblank & ~ok
    record.blank_lines = int(np.count_nonzero(blank))
    record.data_lines = int(np.count_nonzero(nonblank))

    quarantine: list[tuple[int, str, int, int, bytes]] = []
    for k in np.flatnonzero(bad):
        found = int(delims[k]) + 1 - int(bool(ends_dollar[k] and trailing))
        reason = ("too many fields (glued records or an embedded '$')" if found > n_cols
                  else "too few fields (truncated or split record)")
        quarantine.append((int(line_no[k]), reason, n_cols, found, data[s[k]:e[k]]))

    # Encoding: only lines containing bytes >= 0x80 can be invalid UTF-8.
    high = np.flatnonzero(buf >= 0x80)
    fallback: dict[int, bytes] = {}
    if len(high):
        cand = np.unique(np.searchsorted(s, high, side="right") - 1)
        for k in cand:
            if k < 0 or not ok[k]:
                continue
            raw = data[s[k]:e[k]]
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                fallback[int(k)] = _decode_fallback(raw)
    record.encoding_fallback_lines = len(fallback)

    # Majority shape goes through pyarrow straight from the bytes; the (rare) minority shape
    # and transcoded lines are rebuilt in Python.
    # Lines with a '\r' inside (Arrow would end the line there) go the Python way too.
    main_mask = (plus_one if trailing else exact).copy()
    cr_pos = np.flatnonzero(buf == 0x0D)
    if len(cr_pos):
        main_mask &= np.searchsorted(cr_pos, e) == np.searchsorted(cr_pos, s)
    if fallback:
        main_mask[np.fromiter(fallback.keys(), dtype=np.int64)] = False
    main_idx = np.flatnonzero(main_mask)
    odd_idx = np.flatnonzero(ok & ~main_mask)

    parse_names = list(names) + (["__trailing__"] if trailing else [])
    if len(main_idx) == record.data_lines and record.blank_lines == 0:
        body = data[s[0]:] if len(s) else b""
    elif len(main_idx):
        # keep exactly the main-shape lines (with their '\n'): a byte mask over the buffer
        keep = np.zeros(len(starts) - 1, dtype=bool)
        keep[main_idx] = True
        seg_start = s
        seg_end = np.minimum(np.concatenate((s[1:], [len(buf)])), len(buf))
        mask = np.repeat(keep, seg_end - seg_start)
        body = buf[s[0]:][mask[: len(buf) - s[0]]].tobytes()
        if body and not body.endswith(b"\n"):
            body += b"\n"
    else:
        body = b""
    cols = {}
    if body:
        tbl = pacsv.read_csv(
            pa.py_buffer(body),
            read_options=pacsv.ReadOptions(column_names=parse_names, block_size=64 << 20),
            parse_options=pacsv.ParseOptions(delimiter="$", quote_char=False, escape_char=False,
                                              newlines_in_values=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in parse_names},
                                                 strings_can_be_null=False, check_utf8=False),
        )
        if tbl.num_rows != len(main_idx):  # a parser disagreement would silently shift line numbers
            raise IngestError(f"{member}: parsed {tbl.num_rows} rows but counted {len(main_idx)} lines")
        for n in names:
            cols[n] = tbl.column(n)
    else:
        cols = {n: pa.array([], pa.string()) for n in names}
    main_lines = line_no[main_idx]

    if len(odd_idx):
        odd_rows = []
        for k in odd_idx:
            raw = fallback.get(int(k)) or data[s[k]:e[k]]
            fields = raw.decode("utf-8", errors="replace").split("$")
            odd_rows.append(fields[:n_cols])
        odd_cols = {n: pa.array([r[i] for r in odd_rows], pa.string()) for i, n in enumerate(names)}
        cols = {n: pa.chunked_array([*_chunks(cols[n]), odd_cols[n]], pa.string()) for n in names}
        all_lines = np.concatenate((main_lines, line_no[odd_idx]))
        order = np.argsort(all_lines, kind="stable")
        cols = {n: cols[n].take(pa.array(order)) for n in names}
        main_lines = all_lines[order]

    n_rows = len(main_lines)
    empty = _constant_string("", n_rows)
    out = {c: (cols[c] if c in cols else empty) for c in canonical}
    record.rows_written = n_rows
    record.quarantined = len(quarantine)
    return ParsedFile(pa.table(out), main_lines.astype(np.int64), record, quarantine)


def parse_deleted(data: bytes, member: str) -> ParsedFile:
    """Deleted-case lists: one caseid per line; a header line is tolerated, junk is quarantined."""
    record = FileRecord(table=DELETED, member=member)
    if data.startswith(BOM):
        data = data[len(BOM):]
    text_lines = data.split(b"\n")
    if text_lines and text_lines[-1] == b"":
        text_lines.pop()
    ids, lines, quarantine = [], [], []
    for i, raw in enumerate(text_lines, start=1):
        line = raw.rstrip(b"\r").strip().rstrip(b"$").strip()
        if not line:
            record.blank_lines += 1
            continue
        if line.isdigit():
            record.data_lines += 1
            ids.append(line.decode("ascii"))
            lines.append(i)
        elif i == 1 and re.match(rb"(?i)^[a-z_ ]+$", line):
            continue  # a header such as "caseid"
        else:
            record.data_lines += 1
            quarantine.append((i, "not a case number", 1, 1, raw))
    record.rows_written = len(ids)
    record.quarantined = len(quarantine)
    return ParsedFile(pa.table({"caseid": pa.array(ids, pa.string())}), np.array(lines, dtype=np.int64),
                      record, quarantine)


# --------------------------------------------------------------------------------------------
# Typed copies and provenance
# --------------------------------------------------------------------------------------------
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
    cols["quarter"] = _constant_string(str(quarter), n)
    cols["era"] = _constant_string(quarter.era, n)
    cols["source_file"] = _constant_string(member, n)
    cols["source_line"] = pa.array(parsed.source_lines, pa.int64())
    schema = raw_schema(table)
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


# --------------------------------------------------------------------------------------------
# One quarter
# --------------------------------------------------------------------------------------------
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (fixed fields), name length, extra length


def _raw_member_bytes(zip_path: Path, info: zipfile.ZipInfo) -> bytes:
    """The compressed bytes of one member, located through its local header (checked like zipfile does)."""
    with open(zip_path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise zipfile.BadZipFile(f"member {info.filename!r}: truncated local header")
        signature, name_len, extra_len = _LOCAL_HEADER.unpack(head)
        if signature != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"member {info.filename!r}: bad local header signature")
        name = fh.read(name_len)
        if name.decode("utf-8" if info.flag_bits & 0x800 else "cp437") != info.orig_filename:
            raise zipfile.BadZipFile(f"member {info.filename!r}: local header names {name!r}")
        fh.seek(extra_len, os.SEEK_CUR)
        raw = fh.read(info.compress_size)
    if len(raw) != info.compress_size:
        raise zipfile.BadZipFile(f"member {info.filename!r} is truncated")
    return raw


def _read_member(zip_path: Path, member: str, expected_size: int) -> bytes:
    """The member's bytes, CRC-checked and capped at its declared size.

    Deflated members are inflated in one call from their raw bytes: ``zipfile``'s streaming reader
    costs twice the CPU here (chunked reads, CRC per chunk, joins) for the same checks.
    """
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 0x1:
            with zf.open(info) as fh:  # stored, other methods, encrypted: zipfile checks and refuses
                data = fh.read(expected_size + 1)
        else:
            raw = _raw_member_bytes(zip_path, info)
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(raw, expected_size + 1)  # the cap defeats a lying size field
            del raw
            if len(data) <= expected_size and not inflater.eof:
                raise zipfile.BadZipFile(f"member {member!r} ends before its deflate stream does")
            if len(data) == info.file_size and zlib.crc32(data) != info.CRC:
                raise zipfile.BadZipFile(f"bad CRC-32 for member {member!r}")
    if len(data) > expected_size:
        raise IngestError(f"{zip_path.name}: member {member!r} is larger than its declared size")
    if len(data) != info.file_size:
        raise IngestError(f"{zip_path.name}: member {member!r} is {len(data)} bytes, not the declared {info.file_size}")
    return data


_DICTIONARY_SAMPLE = 65_536
_DICTIONARY_MAX_SHARE = 0.05


def write_raw_parquet(table: pa.Table, target: Path, quarter: Quarter, zip_path: Path) -> Path:
    """Write one raw table: dictionary pages only for repetitive text, statistics only for typed columns.

    A text column gets a dictionary when its first 65,536 values hold at most 5 % distinct ones (codes,
    PTs, units, provenance); identifiers and free text are written plain, where building a dictionary
    Arrow then abandons costs time and saves nothing. Min/max statistics on free text cost a third of the
    write and serve no query (readers filter on the typed ``*_int`` / ``*_date`` copies).
    """
    sample = table.slice(0, _DICTIONARY_SAMPLE)
    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    dictionary = [c for c in text if sample.num_rows == 0 or
                  pc.count_distinct(sample.column(c)).as_py() <= _DICTIONARY_MAX_SHARE * sample.num_rows]
    typed = [f.name for f in table.schema if not pa.types.is_string(f.type)]
    return write_parquet(table, target, metadata={"quarter": str(quarter), "source_zip": zip_path.name},
                         use_dictionary=dictionary, write_statistics=typed + ["quarter"])


def _parse_member(zip_path: Path, member: str, size: int, table: str, quarter: Quarter,
                  write_to: Path | None = None, on_rows=None):
    try:
        data = _read_member(zip_path, member, size)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise IngestError(f"{zip_path.name}: cannot read {member!r}: {exc}") from None
    parsed = parse_deleted(data, member) if table == DELETED else parse_delimited(data, table, member)
    del data
    tbl = finish_table(parsed, table, quarter, member)
    if on_rows is not None:  # validation of the rows can start while they are being written
        on_rows(table, tbl)
    if write_to is not None:  # in the worker: the write overlaps with parsing the next member
        write_raw_parquet(tbl, write_to, quarter, zip_path)
    return parsed, tbl


def ingest_zip(data_dir: DataDir, zip_path: Path, quarter: Quarter, *, progress: bool = True,
               validate: bool = True, zip_sha256: str | None = None) -> QuarterResult:
    """Ingest one landing zip as ``quarter``: stage everything, validate, then swap it in."""
    t0 = time.perf_counter()
    result = QuarterResult(quarter=quarter, zip_path=zip_path)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            _check_zip_safety(zf, zip_path)
            infos = {i.filename: i for i in zf.infolist()}
    except zipfile.BadZipFile as exc:
        raise IngestError(f"{zip_path.name} is not a valid zip (truncated or corrupt?): {exc}") from None
    tables, deleted, unknown = classify_members(list(infos))
    result.unknown_members = unknown
    for name in unknown:
        log.info("%s: member %s is not a FAERS table; recorded, not ingested", zip_path.name, name)
    missing = [t for t in TABLES if t not in tables]
    if missing:
        raise IngestError(f"{zip_path.name}: missing table file(s) {', '.join(missing)} "
                          f"(members: {', '.join(sorted(infos))[:300]})")
    jobs = [(t, m) for t, m in tables.items()] + [(DELETED, m) for m in deleted]
    jobs.sort(key=lambda j: -infos[j[1]].file_size)  # biggest first balances the two workers

    # slow imports (pandas, which pyarrow.compute loads on first use, ~0.5 s; GX ~2 s) overlap with
    # inflating and parsing, which mostly run without the GIL
    _warm_imports(validate)
    staging = data_dir.root / ".staging" / str(quarter)
    shutil.rmtree(staging, ignore_errors=True)
    stage = DataDir(staging)
    total_bytes = sum(infos[m].file_size for _, m in jobs)
    bar = _progress_bar(total_bytes, f"ingest {quarter}", progress)
    parts: dict[str, list[tuple[str, pa.Table]]] = {}  # table -> (member, rows)
    quarantine_rows: list[tuple[str, str, int, str, int, int, bytes]] = []
    validation = None
    try:
        workers = min(2, os.cpu_count() or 1)
        # Workers post two events per member: its rows (before the Parquet write) and its end. This thread,
        # which would otherwise only wait, runs the GX suites on the rows while the workers parse and write.
        events: queue.SimpleQueue = queue.SimpleQueue()
        on_rows = (lambda table, tbl: events.put(("rows", table, tbl))) if validate else None
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {}
            for t, m in jobs:
                fut = pool.submit(_parse_member, zip_path, m, infos[m].file_size, t, quarter,
                                  None if t == DELETED else stage.raw_part(t, quarter),
                                  None if t == DELETED else on_rows)
                futures[fut] = (t, m)
                fut.add_done_callback(lambda f: events.put(("done", f, None)))
            done = 0
            while done < len(futures):
                kind, item, rows = events.get()
                if kind == "rows":
                    validation = validation or _start_validation(stage, quarter)
                    validation.add_rows(item, rows)
                    continue
                done += 1
                table, member = futures[item]
                parsed, tbl = item.result()
                parts.setdefault(table, []).append((member, tbl))
                result.files.append(parsed.record)
                for line, reason, exp, found, raw in parsed.quarantine:
                    quarantine_rows.append((table, member, line, reason, exp, found, raw))
                bar.update(infos[member].file_size)
                log.info("%s %s: %s data lines, %s rows, %s quarantined", quarter, member,
                         f"{parsed.record.data_lines:,}", f"{parsed.record.rows_written:,}",
                         f"{parsed.record.quarantined:,}")
                if validate and table != DELETED:
                    validation.add_file(table)
        bar.close()
        held: dict[str, pa.Table] = {t: parts.pop(t)[0][1] for t in TABLES}  # one member each, written
        deleted_parts = [tbl for _, tbl in sorted(parts.pop(DELETED, []), key=lambda p: p[0])]
        held[DELETED] = pa.concat_tables(deleted_parts or [raw_schema(DELETED).empty_table()])
        write_raw_parquet(held[DELETED], stage.raw_part(DELETED, quarter), quarter, zip_path)
        order = TABLES + (DELETED,)
        quarantine_rows.sort(key=lambda r: (order.index(r[0]), r[1], r[2]))  # completion order varies
        qtab = pa.table({
            "quarter": [str(quarter)] * len(quarantine_rows),
            "table": [r[0] for r in quarantine_rows],
            "source_file": [r[1] for r in quarantine_rows],
            "line_number": [r[2] for r in quarantine_rows],
            "reason": [r[3] for r in quarantine_rows],
            "expected_fields": [r[4] for r in quarantine_rows],
            "found_fields": [r[5] for r in quarantine_rows],
            "raw": [r[6] for r in quarantine_rows],
        }, schema=QUARANTINE_SCHEMA)
        write_parquet(qtab, stage.quarantine_part(quarter))
        result.files.sort(key=lambda f: ((TABLES + (DELETED,)).index(f.table), f.member))
        record = _ingest_record(result, zip_path, zip_sha256 or sha256_file(zip_path))
        write_json(record, stage.ingest_record(quarter))
        unreconciled = [f for f in result.files if not f.reconciled]
        if unreconciled:  # cannot happen unless the parser is wrong; never publish such a quarter
            f = unreconciled[0]
            raise IngestError(f"{quarter} {f.member}: {f.data_lines} data lines but {f.rows_written} rows "
                              f"+ {f.quarantined} quarantined")
        if validate:
            from pipeline import quality

            validation = validation or _start_validation(stage, quarter)
            try:
                validation.add(DELETED, held[DELETED])  # several lists in one table, written just above
                result.validation = validation.finish()
            except quality.ValidationFailed as exc:
                # the quarter is not published, but the operator gets the full result to read
                write_json(exc.summary, data_dir.validation / "raw" / f"{quarter}.failed.json")
                raise
        del held
        _commit_stage(stage, data_dir, quarter)
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        try:
            (data_dir.root / ".staging").rmdir()
        except OSError:
            pass
    result.seconds = time.perf_counter() - t0
    return result


_WARMING: threading.Thread | None = None


def _start_validation(stage: DataDir, quarter: Quarter):
    _WARMING.join()
    from pipeline import quality

    return quality.RawQuarterValidation(stage, quarter)


def _warm_imports(validate: bool) -> None:
    global _WARMING

    if _WARMING is None or (validate and "great_expectations" not in sys.modules and not _WARMING.is_alive()):
        _WARMING = threading.Thread(target=_import_slow_modules, args=(validate,), name="warm-imports", daemon=True)
        _WARMING.start()


def _import_slow_modules(validate: bool) -> None:
    import pandas  # noqa: F401

    if validate:
        import great_expectations  # noqa: F401  (the slow part)

        import pipeline.quality  # noqa: F401


def _ingest_record(result: QuarterResult, zip_path: Path, sha: str) -> dict:
    return {
        "quarter": str(result.quarter),
        "era": result.quarter.era,
        "zip": zip_path.name,
        "zip_sha256": sha,
        "ingested_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "files": [{**f.__dict__, "reconciled": f.reconciled} for f in result.files],
        "unknown_members": result.unknown_members,
        "reconciled": all(f.reconciled for f in result.files),
        "rows": result.rows,
        "quarantined": result.quarantined,
    }


def _commit_stage(stage: DataDir, data_dir: DataDir, quarter: Quarter) -> None:
    """Move the staged quarter into place; the ingest record goes last (it marks completion)."""
    moves = [(stage.raw_part(t, quarter), data_dir.raw_part(t, quarter)) for t in TABLES + (DELETED,)]
    moves.append((stage.quarantine_part(quarter), data_dir.quarantine_part(quarter)))
    staged_validation = stage.validation / "raw"
    if staged_validation.is_dir():
        for p in staged_validation.iterdir():
            moves.append((p, data_dir.validation / "raw" / p.name))
    for src, dst in moves:
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    (data_dir.validation / "raw" / f"{quarter}.failed.json").unlink(missing_ok=True)
    dst = data_dir.ingest_record(quarter)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage.ingest_record(quarter), dst)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=None if enabled else True, leave=False)


# --------------------------------------------------------------------------------------------
# All landing zips
# --------------------------------------------------------------------------------------------
def landing_zips(data_dir: DataDir) -> dict[Quarter, Path]:
    """Quarter -> landing zip (ASCII extracts only, named as FDA names them)."""
    found: dict[Quarter, Path] = {}
    if not data_dir.landing.is_dir():
        return found
    for p in sorted(data_dir.landing.iterdir()):
        q = quarter_of_zip(p)
        if q is not None and p.is_file():
            found[q] = p
    return found


def _recorded_sha(data_dir: DataDir, quarter: Quarter) -> str | None:
    path = data_dir.ingest_record(quarter)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get("zip_sha256")
    except (OSError, ValueError):
        return None


def _landing_sha(data_dir: DataDir, zip_path: Path) -> str:
    """sha256 of a landing zip, from the landing manifest when it matches the file's size."""
    try:
        manifest = json.loads(data_dir.landing_manifest.read_text())
        entry = manifest.get("files", {}).get(zip_path.name)
        if entry and entry.get("size") == zip_path.stat().st_size and entry.get("mtime_ns") == zip_path.stat().st_mtime_ns:
            return entry["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    return sha256_file(zip_path)


def is_ingested(data_dir: DataDir, quarter: Quarter, zip_path: Path) -> bool:
    """True when ``zip_path`` (its sha256) is what quarter ``quarter`` was last ingested from."""
    return zip_path.exists() and _landing_sha(data_dir, zip_path) == _recorded_sha(data_dir, quarter)


def ingest(data_dir: DataDir, quarters: list[Quarter] | None = None, *, force: bool = False,
           progress: bool = True, validate: bool = True, keep_going: bool = False) -> list[QuarterResult]:
    """Ingest every landing quarter (or the ones asked for) whose zip is new or changed.

    With ``keep_going`` a quarter that cannot be ingested (bad zip, failed validation) is recorded in its
    result's ``error`` and the others go on; without it the first one raises. Operating-system errors (disk full)
    always stop at once: the next quarter would meet the same disk.
    """
    available = landing_zips(data_dir)
    if quarters is not None:
        absent = [str(q) for q in quarters if q not in available]
        if absent:
            raise IngestError(f"no landing zip for {', '.join(absent)} in {data_dir.landing} "
                              f"(run `pipeline fetch` first)")
        selected = {q: available[q] for q in quarters}
    else:
        if not available:
            raise IngestError(f"no FAERS ASCII zips in {data_dir.landing} (run `pipeline fetch` first)")
        selected = available
    results = []
    todo = []
    for quarter, path in sorted(selected.items()):
        sha = _landing_sha(data_dir, path)
        if not force and sha == _recorded_sha(data_dir, quarter):
            results.append(QuarterResult(quarter=quarter, zip_path=path, skipped=True))
        else:
            todo.append((quarter, path, sha))
    if len(todo) > 1:
        log.info("ingest: %d quarter(s) to ingest (%.0f MB of zips), %d unchanged", len(todo),
                 sum(p.stat().st_size for _, p, _ in todo) / 1e6, len(results))
    # a first load is ~90 quarters: one bar over the quarters above each quarter's own bar
    outer = _quarters_bar(len(todo), progress and len(todo) > 1)
    t0 = time.perf_counter()
    try:
        for i, (quarter, path, sha) in enumerate(todo, 1):
            outer.set_postfix_str(str(quarter))
            try:
                res = ingest_zip(data_dir, path, quarter, progress=progress, validate=validate, zip_sha256=sha)
            except PipelineError as exc:
                if not keep_going:
                    raise
                log.info("%s: not ingested: %s", quarter, exc)  # the caller reports it
                res = QuarterResult(quarter=quarter, zip_path=path, error=exc)
            else:
                log.info("ingested %d/%d %s (%.0f s so far)", i, len(todo), res.summary_line(),
                         time.perf_counter() - t0)
            outer.update()
            results.append(res)
    finally:
        outer.close()
    results.sort(key=lambda r: r.quarter)
    return results


def _quarters_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="ingest", unit="quarter", disable=None if enabled else True)
